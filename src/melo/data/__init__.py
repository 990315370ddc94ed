"""Benchmark data: loaders for the MELO/GRACE tasks (zsRE + NQ, CounterFact, SCOTUS, hallucination) and the user's own.

Every loader is pure (no model), deterministic (file order, no shuffling) and fails with a
:class:`MeloDataError` that names the file, the line (JSONL/CSV) or record (JSON) and the field.
One module per source, as in ROME's ``dsets/``: :mod:`.locate` (the data directory and what a
missing file is), :mod:`.readers` (JSON / JSON lines / CSV records and field checks),
:mod:`.zsre` (zsRE + NQ), :mod:`.counterfact`, :mod:`.classification` (SCOTUS), :mod:`.hallucination` (WikiBio +
WebText), :mod:`.sentences` (the nltk-compatible sentence splitter) and :mod:`.tasks`
(:func:`load_task`). How each task follows or departs from GRACE (Hartvigsen et al. 2023, whose
data code MELO reuses) is in the docstring of its module.
"""

from ..errors import MeloDataError
from .classification import ClassificationFields, classification_task, load_classification, load_scotus
from .counterfact import load_counterfact
from .hallucination import load_hallucination, load_hallucination_edits, load_webtext
from .locate import resolve_data_dir
from .records import Record, TaskData
from .sentences import split_sentences
from .tasks import TASKS, check_task_files, load_task
from .zsre import load_nq, load_zsre

__all__ = [
    "MeloDataError",
    "Record",
    "TaskData",
    "resolve_data_dir",
    "load_zsre",
    "load_nq",
    "load_counterfact",
    "load_classification",
    "ClassificationFields",
    "classification_task",
    "load_scotus",
    "load_hallucination",
    "load_hallucination_edits",
    "load_webtext",
    "load_task",
    "check_task_files",
    "split_sentences",
    "TASKS",
]
