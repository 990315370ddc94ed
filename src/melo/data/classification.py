"""Labelled texts split by a field (:func:`load_classification`) and the SCOTUS task built from them.

**SCOTUS** (:func:`load_scotus`): ``tomh/grace-scotus`` train = upstream, test = edits when
online; offline the stand-in file split by term (<= 2009 upstream), de-duplicated.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ..errors import MeloDataError
from .locate import SCOTUS_FILE, SCOTUS_HUB, missing_file, require_file, resolve_data_dir
from .readers import get_field, table_rows
from .records import Record, TaskData

_LOG = logging.getLogger(__name__)


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


def load_classification(
    path: str | os.PathLike,
    text_field: str,
    label_field: str,
    split_field: str,
    split_at: Any,
    dedupe: bool = True,
) -> tuple[list[Record], list[Record], list[str]]:
    """(upstream, edits, label_names) from a JSON list, JSON lines or CSV file of labelled texts.

    Rows whose ``split_field`` is ``<= split_at`` (numerically when both are numbers, else as
    strings) are upstream, the others edits; file order is kept. Integer labels (or, in a CSV,
    decimal strings) are kept as class ids and ``label_names`` are ``"0" .. str(max)``; other
    labels become ids by sorted name. With ``dedupe`` a text that occurs more than once keeps its
    first occurrence, and a text that occurs with different labels is dropped everywhere; both
    counts are logged as a warning.
    """
    path = require_file(path)
    rows = []
    for where, row in table_rows(path):
        text = get_field(path, where, row, text_field)
        if not isinstance(text, str):
            raise MeloDataError(f"{path}: {where}: field {text_field!r} should be text, got {text!r:.80}")
        label = get_field(path, where, row, label_field)
        if isinstance(label, (dict, list, float, bool)):
            raise MeloDataError(
                f"{path}: {where}: field {label_field!r} should be a class name or id, got {label!r:.80}"
            )
        rows.append((where, text, label, get_field(path, where, row, split_field)))
    if not rows:
        raise MeloDataError(f"{path}: no rows")
    return _split_classification(path, rows, text_field, split_at, dedupe)


def _split_classification(
    path: Path, rows: list[tuple[str, str, Any, Any]], text_field: str, split_at: Any, dedupe: bool
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
            (upstream if _at_most(split, split_at) else edits).append(Record(text, ids[i]))
    return upstream, edits, names


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
                upstream, edits, names = load_classification(path, "opinion_summary", "issue", "term", 2009)
                return TaskData("scotus", "classification", edits, upstream, label_names=names)
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
    return TaskData("scotus", "classification", edits, upstream, label_names=names)

