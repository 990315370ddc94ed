"""Labelled texts split by a field (:func:`load_classification`), as a task (:func:`classification_task`),
and the SCOTUS task built from them.

**SCOTUS** (:func:`load_scotus`): ``tomh/grace-scotus`` train = upstream, test = edits when
online; offline the stand-in file split by term (<= 2009 upstream), de-duplicated.

**A user's file** (:func:`classification_task`, ``melo bench --data-file``): JSON list, JSON lines or
CSV rows with a text, a label and a split field (:class:`ClassificationFields`); rows whose split
field equals ``edit_split`` (default ``"edit"``), or is greater than ``edit_after``, are edits, the
others upstream.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import MeloDataError
from .locate import SCOTUS_FILE, SCOTUS_HUB, missing_file, require_file, resolve_data_dir
from .readers import get_field, parse_records, table_rows
from .records import Record, TaskData

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassificationFields:
    """Which fields of a classification file hold the text, the label and the split, and which rows are edits.

    Rows whose ``split_field`` equals ``edit_split`` are edits, or, with ``edit_after``, rows whose
    ``split_field`` is greater than it (numerically when both are numbers, else as text); the other
    rows are upstream. Give at most one of the two; with neither, ``edit_split`` is ``"edit"``.
    """

    text_field: str = "text"
    label_field: str = "label"
    split_field: str = "split"
    edit_split: Any = None
    edit_after: Any = None

    def __post_init__(self) -> None:
        for name in ("text_field", "label_field", "split_field"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise MeloDataError(f"{name} should name a field, got {value!r}")
        if self.edit_split is not None and self.edit_after is not None:
            raise MeloDataError(f"give edit_split ({self.edit_split!r}) or edit_after ({self.edit_after!r}), "
                                "not both: rows are edits either by equal value or by greater value")
        if self.edit_split is None and self.edit_after is None:
            object.__setattr__(self, "edit_split", "edit")

    def is_edit(self) -> Callable[[Any], bool]:
        if self.edit_after is not None:
            return _after(self.edit_after)
        return lambda value: _same(value, self.edit_split)

    def edit_rule(self) -> str:
        """Which rows are edits, in words (for messages)."""
        if self.edit_after is not None:
            return f"{self.split_field!r} greater than {self.edit_after!r}"
        return f"{self.split_field!r} equal to {self.edit_split!r}"


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            try:
                return float(value.strip())
            except ValueError:
                return None
    return None


def _at_most(value: Any, split_at: Any) -> bool:
    a, b = _number(value), _number(split_at)
    if a is not None and b is not None:
        return a <= b
    return str(value) <= str(split_at)


def _text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value).strip()


def _same(value: Any, wanted: Any) -> bool:
    a, b = _number(value), _number(wanted)
    if a is not None and b is not None:
        return a == b
    return _text(value) == _text(wanted)


def load_classification(
    path: str | os.PathLike,
    text_field: str,
    label_field: str,
    split_field: str,
    split_at: Any = None,
    dedupe: bool = True,
    *,
    is_edit: Callable[[Any], bool] | None = None,
) -> tuple[list[Record], list[Record], list[str]]:
    """(upstream, edits, label_names) from a JSON list, JSON lines or CSV file of labelled texts.

    Rows whose ``split_field`` is ``<= split_at`` (numerically when both are numbers, else as
    strings) are upstream, the others edits; or, with ``is_edit``, the rows whose split value it
    accepts are edits; file order is kept. Integer labels (or, in a CSV,
    decimal strings) are kept as class ids and ``label_names`` are ``"0" .. str(max)``; other
    labels become ids by sorted name. With ``dedupe`` a text that occurs more than once keeps its
    first occurrence, and a text that occurs with different labels is dropped everywhere; both
    counts are logged as a warning.
    """
    if (split_at is None) == (is_edit is None):
        raise MeloDataError("give split_at or is_edit, exactly one")
    path = require_file(path)
    rows = _read_rows(path, text_field, label_field, split_field)
    return _split_classification(path, rows, text_field, is_edit or _after(split_at), dedupe)


def _after(split_at: Any) -> Callable[[Any], bool]:
    return lambda value: not _at_most(value, split_at)


def _read_rows(path: Path, text_field: str, label_field: str, split_field: str,
               skipped: list[dict[str, str]] | None = None) -> list[tuple[str, str, Any, Any]]:
    def parse(where: str, row: Any) -> tuple[str, str, Any, Any]:
        text = get_field(path, where, row, text_field)
        if not isinstance(text, str):
            raise MeloDataError(f"{path}: {where}: field {text_field!r} should be text, got {text!r:.80}")
        label = get_field(path, where, row, label_field)
        if isinstance(label, (dict, list, float, bool)):
            raise MeloDataError(
                f"{path}: {where}: field {label_field!r} should be a class name or id, got {label!r:.80}"
            )
        return where, text, label, get_field(path, where, row, split_field)

    rows = parse_records(path, table_rows(path, skipped), parse, skipped)
    if not rows:
        raise MeloDataError(f"{path}: no rows")
    return rows


def _split_classification(
    path: Path, rows: list[tuple[str, str, Any, Any]], text_field: str, is_edit: Callable[[Any], bool], dedupe: bool
) -> tuple[list[Record], list[Record], list[str]]:
    labels = [label for _, _, label, _ in rows]
    if all(isinstance(label, int) for label in labels) or all(
        isinstance(label, str) and label.strip().isdigit() for label in labels
    ):
        ids = [int(label) for label in labels]
        if min(ids) < 0:
            raise MeloDataError(f"{path}: negative class id {min(ids)}")
        names = [str(i) for i in range(max(ids) + 1)]
    else:
        names = sorted({str(label) for label in labels})
        index = {name: i for i, name in enumerate(names)}
        ids = [index[str(label)] for label in labels]
    keep = [True] * len(rows)
    if dedupe:
        seen: dict[str, int] = {}
        label_sets: dict[str, set[int]] = {}
        for i, (_, text, _, _) in enumerate(rows):
            label_sets.setdefault(text, set()).add(ids[i])
            if text in seen:
                keep[i] = False
            else:
                seen[text] = i
        conflicting = {text for text, s in label_sets.items() if len(s) > 1}
        dropped_conflicts = 0
        for i, (_, text, _, _) in enumerate(rows):
            if text in conflicting:
                dropped_conflicts += 1
                keep[i] = False
        duplicates = len(rows) - len(seen) - (dropped_conflicts - len(conflicting))
        if duplicates or conflicting:
            _LOG.warning(
                "%s: removed %d rows whose %r repeats an earlier row; dropped %d texts (%d rows) that occur with "
                "conflicting labels",
                path, duplicates, text_field, len(conflicting), dropped_conflicts,
            )
    upstream: list[Record] = []
    edits: list[Record] = []
    for i, (_, text, _, split) in enumerate(rows):
        if keep[i]:
            (edits if is_edit(split) else upstream).append(Record(text, ids[i]))
    return upstream, edits, names


def classification_task(
    path: str | os.PathLike,
    fields: ClassificationFields | None = None,
    name: str | None = None,
    allow_new_labels: bool = False,
    dedupe: bool = True,
    skipped: list[dict[str, str]] | None = None,
) -> TaskData:
    """A classification task from a JSON list, JSON lines or CSV file of labelled texts.

    ``fields`` (:class:`ClassificationFields`, default text / label / split = "edit") name the
    fields and say which rows are edits; labels become ids as in :func:`load_classification`
    (class names in sorted order), duplicates are removed likewise. A :class:`MeloDataError` when
    no row is an edit, no row is upstream, or (unless ``allow_new_labels``) an edit's label occurs
    in no upstream row (the model learns its classes upstream: usually a misspelt label).
    ``files`` is ``{"data": path}`` and ``options`` the fields; ``name`` defaults to the file name.
    With ``skipped`` a bad row is listed there and left out (``--skip-invalid``).
    """
    fields = fields or ClassificationFields()
    path = require_file(path)
    rows = _read_rows(path, fields.text_field, fields.label_field, fields.split_field, skipped)
    is_edit = fields.is_edit()
    upstream, edits, names = _split_classification(path, rows, fields.text_field, is_edit, dedupe)
    n_edit_rows = sum(is_edit(split) for *_, split in rows)
    if not edits or not upstream:
        values = sorted({_text(split) for *_, split in rows})
        shown = ", ".join(repr(v) for v in values[:10]) + (f", ... ({len(values)} values)" if len(values) > 10 else "")
        if not edits and n_edit_rows:
            problem = f"all {n_edit_rows} edit rows ({fields.edit_rule()}) were dropped as repeated or conflicting"
        elif not edits:
            problem = f"no row is an edit: none has {fields.edit_rule()}"
        elif n_edit_rows < len(rows):
            problem = "every upstream row was dropped as repeated or conflicting"
        else:
            problem = f"every row is an edit ({fields.edit_rule()}): none is left upstream to train on and measure TRR"
        raise MeloDataError(f"{path}: {problem}; {fields.split_field!r} takes the values {shown}")
    if not allow_new_labels:
        unseen = sorted({int(r.target) for r in edits} - {int(r.target) for r in upstream})
        if unseen:
            raise MeloDataError(
                f"{path}: label{'s' if len(unseen) > 1 else ''} {', '.join(repr(names[i]) for i in unseen)} of "
                f"{fields.label_field!r} occur{'' if len(unseen) > 1 else 's'} in edit rows but in no upstream row; "
                "the model learns its classes upstream (check the spelling, or move such rows upstream)"
            )
    return TaskData(name or path.name, "classification", edits, upstream, label_names=names,
                    files={"data": str(path)}, options={**asdict(fields), "dedupe": dedupe})


SCOTUS_FIELDS = ClassificationFields("opinion_summary", "issue", "term", edit_after=2009)


def load_scotus(data_dir: str | os.PathLike | None = None, source: str = "auto") -> TaskData:
    """SCOTUS: the offline stand-in ``classification/scotus_summaries.json`` or ``tomh/grace-scotus``.

    Stand-in: text ``opinion_summary``, label ``issue`` (5 issue areas, ids by sorted name),
    upstream = term <= 2009, edits = later terms, de-duplicated. Hub (GRACE): train split =
    upstream, test split = edits, labels as in the dataset; needs the ``datasets`` package and
    network access. ``source="auto"`` uses the stand-in when the file exists and the hub otherwise;
    ``"local"`` / ``"hub"`` force one.
    """
    if source not in ("auto", "local", "hub"):
        raise MeloDataError(f"SCOTUS source {source!r} is not 'auto', 'local' or 'hub'")
    local_error: MeloDataError | None = None
    if source in ("auto", "local"):
        try:
            path = resolve_data_dir(data_dir) / SCOTUS_FILE
            if path.is_file() or source == "local":
                return classification_task(path, SCOTUS_FIELDS, name="scotus", allow_new_labels=True)
            local_error = missing_file(path)
        except MeloDataError as exc:
            if source == "local":
                raise
            local_error = exc
    return _scotus_from_hub(local_error)


def _scotus_from_hub(local_error: MeloDataError | None) -> TaskData:
    try:
        import datasets  # noqa: PLC0415  (optional dependency)
    except ImportError:
        raise MeloDataError(
            f"{local_error}; and the Hugging Face dataset '{SCOTUS_HUB}' needs the 'datasets' package "
            "(pip install datasets) and network access" if local_error else
            f"the Hugging Face dataset '{SCOTUS_HUB}' needs the 'datasets' package (pip install datasets)"
        ) from None
    try:
        data = datasets.load_dataset(SCOTUS_HUB)
        train, test = data["train"], data["test"]
    except Exception as exc:  # network, hub or cache errors all mean the same to the user
        prefix = f"{local_error}; and " if local_error else ""
        raise MeloDataError(f"{prefix}loading the Hugging Face dataset '{SCOTUS_HUB}' failed: {exc}") from exc
    feature = train.features.get("label")
    names = list(feature.names) if hasattr(feature, "names") else None
    upstream = [Record(t, int(y)) for t, y in zip(train["text"], train["label"])]
    edits = [Record(t, int(y)) for t, y in zip(test["text"], test["label"])]
    if names is None:
        names = [str(i) for i in range(max(r.target for r in upstream + edits) + 1)]
    return TaskData("scotus", "classification", edits, upstream, label_names=names, options={"hub": SCOTUS_HUB})

