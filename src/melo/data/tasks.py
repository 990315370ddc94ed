"""The paper's tasks by name: :func:`load_task`."""

from __future__ import annotations

import os

from ..errors import MeloDataError
from .classification import load_scotus
from .counterfact import load_counterfact
from .hallucination import load_hallucination
from .locate import COUNTERFACT_FILE, NQ_FILES, ZSRE_FILES, first_file, resolve_data_dir
from .records import TaskData
from .zsre import load_nq, load_zsre

TASKS = ("zsre", "counterfact", "scotus", "hallucination")
QA_TASKS = ("zsre", "counterfact")


def load_task(
    name: str, data_dir: str | os.PathLike | None = None, n_edits: int | None = None, target: str = "answer",
    edits_file: str | os.PathLike | None = None,
) -> TaskData:
    """One of the paper's tasks by name, with at most ``n_edits`` edits (the first ones, file order).

    ``"zsre"``: edits from ``zsre/zsre_mend_edit.json`` (or GRACE's jsonl), upstream from
    ``nq/NQ-open.dev.jsonl`` (or ``nq/nq_train.json``), all questions (GRACE uses the first
    1000); ``target`` is ``"answer"`` or ``"alt"`` (zsRE; the other tasks have one target and
    ignore it); ``edits_file`` reads the edits from a zsRE-format file of the user's instead.
    ``"counterfact"``: edits from ``counterfact/counterfact-train.json`` (or ``edits_file``, same
    format) towards ``target_new``; upstream NQ as for zsRE.
    ``"scotus"``: :func:`load_scotus`.
    ``"hallucination"``: :func:`load_hallucination`.
    """
    if name not in TASKS:
        raise MeloDataError(f"unknown task {name!r}; the tasks are {', '.join(TASKS)}")
    if target not in ("answer", "alt"):
        raise MeloDataError(f"target {target!r} is neither 'answer' (MELO/GRACE) nor 'alt' (WISE)")
    if edits_file is not None and name not in QA_TASKS:
        raise MeloDataError(f"an edits file replaces zsRE or CounterFact edits; task {name!r} reads its own files "
                            "from the data dir")
    if name in QA_TASKS:
        root = resolve_data_dir(data_dir)
        if name == "zsre":
            edits = load_zsre(edits_file or first_file(root, ZSRE_FILES), target=target, limit=n_edits)
        else:
            edits = load_counterfact(edits_file or root / COUNTERFACT_FILE, limit=n_edits)
        return TaskData(name, "qa", edits, load_nq(first_file(root, NQ_FILES)))
    if name == "scotus":
        task = load_scotus(data_dir)
        if n_edits is not None:
            task.edits = task.edits[:n_edits]
        return task
    return load_hallucination(data_dir, limit=n_edits)

