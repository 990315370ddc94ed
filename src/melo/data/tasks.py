"""The paper's tasks by name, or the user's own files for them: :func:`load_task`."""

from __future__ import annotations

import os

from ..errors import MeloDataError
from .classification import ClassificationFields, classification_task, load_scotus
from .counterfact import load_counterfact
from .hallucination import load_hallucination
from .locate import COUNTERFACT_FILE, NQ_FILES, ZSRE_FILES, first_file, resolve_data_dir
from .records import TaskData
from .zsre import load_nq, load_zsre

TASKS = ("zsre", "counterfact", "scotus", "hallucination")
QA_TASKS = ("zsre", "counterfact")
EDITS_FILE_TASKS = QA_TASKS + ("hallucination",)  # tasks whose edits a user's file can replace
DATA_FILE_TASKS = ("scotus",)  # tasks read whole from a user's file of labelled texts


def misfit_file(name: str, edits_file: object = None, data_file: object = None, fields: object = None) -> str | None:
    """The one rule of which task takes which file: the first of ``"data_file"`` (only scotus reads one),
    ``"fields"`` (only with a data file) and ``"edits_file"`` (zsre, counterfact, hallucination) given
    where it does not fit task ``name``, or None. Callers word the error for their own options."""
    if data_file is not None and name not in DATA_FILE_TASKS:
        return "data_file"
    if fields is not None and data_file is None:
        return "fields"
    if edits_file is not None and name not in EDITS_FILE_TASKS:
        return "edits_file"
    return None


def check_task_files(name: str, edits_file: object = None, data_file: object = None,
                     fields: ClassificationFields | None = None) -> None:
    """That the user's files fit task ``name`` (no file read): :func:`misfit_file` as a MeloDataError."""
    if name not in TASKS:
        raise MeloDataError(f"unknown task {name!r}; the tasks are {', '.join(TASKS)}")
    problem = misfit_file(name, edits_file, data_file, fields)
    if problem == "edits_file":
        raise MeloDataError(f"an edits file replaces the edits of zsre, counterfact or hallucination; task {name!r} "
                            "takes a data file (data_file) of labelled texts with a split field instead")
    if problem == "data_file":
        raise MeloDataError(f"a data file of labelled texts is for classification (task 'scotus'); task {name!r} "
                            "takes its edits from an edits file (edits_file)")
    if problem == "fields":
        raise MeloDataError("classification fields only apply to a data file (data_file)")


def load_task(
    name: str, data_dir: str | os.PathLike | None = None, n_edits: int | None = None, target: str = "answer",
    edits_file: str | os.PathLike | None = None, data_file: str | os.PathLike | None = None,
    fields: ClassificationFields | None = None, skip_invalid: bool = False,
) -> TaskData:
    """One of the paper's tasks by name, with at most ``n_edits`` edits (the first ones, file order).

    ``"zsre"``: edits from ``zsre/zsre_mend_edit.json`` (or GRACE's jsonl), upstream from
    ``nq/NQ-open.dev.jsonl`` (or ``nq/nq_train.json``), all questions (GRACE uses the first
    1000); ``target`` is ``"answer"`` or ``"alt"`` (zsRE; the other tasks have one target and
    ignore it); ``edits_file`` reads the edits from a zsRE-format file of the user's instead.
    ``"counterfact"``: edits from ``counterfact/counterfact-train.json`` (or ``edits_file``, same
    format) towards ``target_new``; upstream NQ as for zsRE.
    ``"scotus"``: :func:`load_scotus`; or, with ``data_file``, the user's labelled texts
    (:func:`classification_task` with ``fields``; no data directory needed).
    ``"hallucination"``: :func:`load_hallucination`; ``edits_file`` reads edits and ARR from the
    user's ``{prompt, target, accurate}`` rows instead.
    ``TaskData.files`` names every file read. ``skip_invalid``: a bad record of ``edits_file`` or
    ``data_file`` is left out and listed in ``TaskData.skipped`` instead of stopping the load.
    """
    check_task_files(name, edits_file, data_file, fields)
    if target not in ("answer", "alt"):
        raise MeloDataError(f"target {target!r} is neither 'answer' (MELO/GRACE) nor 'alt' (WISE)")
    if skip_invalid and edits_file is None and data_file is None:
        raise MeloDataError("skip_invalid skips bad records of your edits_file or data_file; give one")
    skipped: list[dict[str, str]] | None = [] if skip_invalid else None
    if name in QA_TASKS:
        root = resolve_data_dir(data_dir)
        if name == "zsre":
            edits_path = edits_file or first_file(root, ZSRE_FILES)
            edits = load_zsre(edits_path, target=target, limit=n_edits, skipped=skipped)
        else:
            edits_path = edits_file or root / COUNTERFACT_FILE
            edits = load_counterfact(edits_path, limit=n_edits, skipped=skipped)
        upstream_path = first_file(root, NQ_FILES)
        task = TaskData(name, "qa", edits, load_nq(upstream_path), files={
            "edits": str(edits_path), "upstream": str(upstream_path)})
    elif name == "scotus":
        task = classification_task(data_file, fields, skipped=skipped) if data_file is not None \
            else load_scotus(data_dir)
        if n_edits is not None:
            task.edits = task.edits[:n_edits]
    else:
        task = load_hallucination(data_dir, limit=n_edits, edits_file=edits_file, skipped=skipped)
    task.skipped = skipped or []
    return task
