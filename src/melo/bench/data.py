"""Benchmark data: loaders for the MELO/GRACE tasks (zsRE + NQ, SCOTUS, hallucination) and the user's own.

Every loader is pure (no model), deterministic (file order, no shuffling) and fails with a
:class:`MeloDataError` that names the file, the line (JSONL/CSV) or record (JSON) and the field.

The data directory is ``--data-dir`` / ``resolve_data_dir(path)``, else ``$MELO_DATA_DIR``, else
``../shared/data`` (see :func:`resolve_data_dir`). Its layout::

    zsre/zsre_mend_edit.json                      (or zsre/structured_zeroshot-dev-new_annotated_final.jsonl)
    nq/NQ-open.dev.jsonl                          (or nq/nq_train.json)
    classification/scotus_summaries.json
    hallucination/wiki_bio_gpt3_hallucination.json
    hallucination/wiki_bio_concepts.txt
    webtext/webtext.test.jsonl

How each task is built, and where it follows or departs from GRACE (Hartvigsen et al. 2023,
whose data code MELO reuses):

* **zsRE** (:func:`load_zsre`): one :class:`Record` per zsRE record; the edit label is the true
  answer ``answers[0]`` (MELO/GRACE) or the counterfactual ``alt`` (WISE/EasyEdit). GRACE
  flattens each question and its first 10 ``filtered_rephrases`` into separate edits and splits
  them 50/50 into edits and held-out rephrasings with a seeded shuffle; here the rephrasings stay
  on their record (``Record.rephrases``) and the protocol decides how to use them.
* **NQ** (:func:`load_nq`): the upstream (TRR) set. GRACE uses the first 1000 questions of its
  ``nq_train.json`` with their single answer string; NQ-open lists several answers per question,
  so the target is the shortest one (the one the offline stand-in is trained on) and all are kept
  for F1/EM.
* **SCOTUS** (:func:`load_scotus`): ``tomh/grace-scotus`` train = upstream, test = edits when
  online; offline the stand-in file split by term (<= 2009 upstream), de-duplicated.
* **Hallucination** (:func:`load_hallucination`): exactly GRACE's ``Hallucination.get_edits``:
  prompt ``"This is a Wikipedia passage about {concept}. " + " ".join(gpt3_sentences[:j])``;
  for an inaccurate sentence ``j`` the target is Wikipedia sentence ``min(j, n - 1)`` of the
  first ``len(annotation)`` sentences of ``wiki_bio_text`` split as ``nltk.sent_tokenize`` does,
  and the GPT-3 sentence goes to ``originals``; accurate sentences (with their GPT-3 sentence as
  target) form the ARR set. Upstream (TRR) is WebText, one record per text with an empty prompt.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MeloDataError

__all__ = [
    "MeloDataError",
    "Record",
    "TaskData",
    "resolve_data_dir",
    "load_zsre",
    "load_nq",
    "load_classification",
    "load_scotus",
    "load_hallucination",
    "load_webtext",
    "load_task",
    "split_sentences",
    "TASKS",
]

_LOG = logging.getLogger(__name__)

TASKS = ("zsre", "scotus", "hallucination")

ZSRE_FILES = ("zsre/zsre_mend_edit.json", "zsre/structured_zeroshot-dev-new_annotated_final.jsonl")
NQ_FILES = ("nq/NQ-open.dev.jsonl", "nq/nq_train.json")
SCOTUS_FILE = "classification/scotus_summaries.json"
HALLUCINATION_FILE = "hallucination/wiki_bio_gpt3_hallucination.json"
CONCEPTS_FILE = "hallucination/wiki_bio_concepts.txt"
WEBTEXT_FILE = "webtext/webtext.test.jsonl"
SCOTUS_HUB = "tomh/grace-scotus"
_LAYOUT = (ZSRE_FILES[0], NQ_FILES[0], SCOTUS_FILE, HALLUCINATION_FILE, CONCEPTS_FILE, WEBTEXT_FILE)

# what each file is and where it comes from, for the message of a missing file
_SOURCES = {
    "zsre_mend_edit.json": (
        ZSRE_FILES[0],
        "the zsRE edit set in the MEND format (fields src, rephrase, answers, alt, loc, loc_ans, subject) "
        "as distributed with the MEND, ROME and EasyEdit/WISE data releases; GRACE/MELO's "
        "structured_zeroshot-dev-new_annotated_final.jsonl (fields input, output, filtered_rephrases) "
        f"also works, put at {ZSRE_FILES[1]}",
    ),
    "structured_zeroshot-dev-new_annotated_final.jsonl": (
        ZSRE_FILES[1],
        "GRACE/MELO's zsRE dev file with filtered_rephrases (from the MEND data release); "
        f"the MEND-format zsre_mend_edit.json also works, put at {ZSRE_FILES[0]}",
    ),
    "NQ-open.dev.jsonl": (
        NQ_FILES[0],
        'the NQ-open dev split as JSON lines {"question", "answer": [...]} '
        "(google-research-datasets/natural-questions, NQ-open; Hugging Face dataset 'nq_open', split "
        f"'validation'); GRACE's nq_train.json (\"questions\", \"answers\") also works, put at {NQ_FILES[1]}",
    ),
    "nq_train.json": (
        NQ_FILES[1],
        'GRACE\'s NQ upstream file {"questions": [...], "answers": [...]}; the NQ-open dev split '
        f"(Hugging Face dataset 'nq_open') also works, put at {NQ_FILES[0]}",
    ),
    "scotus_summaries.json": (
        SCOTUS_FILE,
        "the SCOTUS stand-in (FindLaw opinion summaries labelled with Supreme Court Database issue areas "
        "and terms) from the public repository of Bleiweiss (ICAART 2022); online, "
        f"load_scotus(source='hub') loads the Hugging Face dataset '{SCOTUS_HUB}' instead",
    ),
    "wiki_bio_gpt3_hallucination.json": (
        HALLUCINATION_FILE,
        "the SelfCheckGPT WikiBio hallucination set (Hugging Face dataset "
        "'potsawee/wiki_bio_gpt3_hallucination', split 'evaluation') saved as a JSON list or JSON lines",
    ),
    "wiki_bio_concepts.txt": (
        CONCEPTS_FILE,
        "wiki_bio_concepts.txt of the GRACE (Thartvigsen/GRACE) or MELO code: one concept name per "
        "passage, in dataset order",
    ),
    "webtext.test.jsonl": (
        WEBTEXT_FILE,
        'GPT-2 WebText excerpts as JSON lines {"text"} (webtext.test.jsonl of openai/gpt-2-output-dataset, '
        "or the Hugging Face dataset 'stas/openwebtext-10k' written as {\"text\"} lines)",
    ),
}


@dataclass
class Record:
    """One example: a prompt and its target.

    ``target`` is the answer text (QA), the class id (classification) or the target sentence
    (hallucination). ``rephrases`` are held-out paraphrases of the prompt (generality),
    ``fact`` groups records that state the same fact (zsRE: ``subject || answers[0]``;
    hallucination: the passage's concept), ``answers`` are all acceptable answers (F1/EM) and
    ``locality_prompt`` is the unrelated prompt the WISE protocol pairs with an edit.
    """

    prompt: str
    target: str | int
    rephrases: list[str] = field(default_factory=list)
    fact: str | None = None
    answers: list[str] = field(default_factory=list)
    locality_prompt: str | None = None


@dataclass
class TaskData:
    """The data of one benchmark task.

    ``edits`` are the edit requests; ``upstream`` is the TRR set: NQ questions with their
    answers (QA), early-term texts with labels (classification) or WebText texts as records
    with an empty prompt and the whole text as target (hallucination: perplexity of the text).
    ``accurate`` is the hallucination ARR set and ``originals`` the GPT-3 sentences that the
    hallucination edits replace (GRACE fine-tunes its GPT2-XL on accurate + originals + WebText
    so that the model makes those errors). ``label_names[i]`` names class ``i``.
    """

    name: str
    kind: str
    edits: list[Record]
    upstream: list[Record]
    accurate: list[Record] = field(default_factory=list)
    label_names: list[str] | None = None
    originals: list[Record] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# files


def _repo_root() -> Path | None:
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    return None


def resolve_data_dir(path: str | os.PathLike | None = None) -> Path:
    """The benchmark data directory: ``path``, else ``$MELO_DATA_DIR``, else ``../shared/data``.

    ``../shared/data`` is looked for relative to the working directory, then relative to the
    repository root (the first parent of this file that holds ``pyproject.toml``). A given
    ``path`` or ``$MELO_DATA_DIR`` that is not a directory is an error, not skipped.
    """
    if path is not None:
        return _existing_dir(Path(path), "the data directory given")
    env = os.environ.get("MELO_DATA_DIR")
    if env:
        return _existing_dir(Path(env), "MELO_DATA_DIR")
    tried = [Path.cwd() / ".." / "shared" / "data"]
    root = _repo_root()
    if root is not None:
        tried.append(root.parent / "shared" / "data")
    for candidate in tried:
        if candidate.is_dir():
            return candidate.resolve()
    raise MeloDataError(
        "no benchmark data directory: pass --data-dir DIR (or data_dir=...) or set MELO_DATA_DIR; "
        f"the default ../shared/data does not exist (tried {', '.join(str(p) for p in tried)}). "
        f"It should hold {', '.join(_LAYOUT)}"
    )


def _existing_dir(path: Path, what: str) -> Path:
    path = path.expanduser()
    if not path.is_dir():
        raise MeloDataError(f"{what} {str(path)!r} is not a directory")
    return path.resolve()


def _missing(path: Path) -> MeloDataError:
    rel, description = _SOURCES.get(path.name, (path.name, None))
    if description is None:
        return MeloDataError(f"data file {str(path)!r} does not exist")
    return MeloDataError(
        f"data file {str(path)!r} does not exist. Download {description}, and put it at {rel} "
        "under the data directory (chosen with --data-dir or MELO_DATA_DIR, default ../shared/data)"
    )


def _require(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise _missing(path)
    return path


def _first(data_dir: Path, candidates: tuple[str, ...]) -> Path:
    for rel in candidates:
        if (data_dir / rel).is_file():
            return data_dir / rel
    raise _missing(data_dir / candidates[0])


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise MeloDataError(f"{path}: not UTF-8 text ({exc})") from None


def _records(path: str | os.PathLike) -> Iterator[tuple[str, Any]]:
    """(where, record) for a JSON list, a JSON object or JSON lines; ``where`` is 'line N' or 'record N'."""
    path = _require(path)
    text = _read_text(path)
    stripped = text.lstrip()
    if stripped.startswith("[") or (stripped.startswith("{") and path.suffix == ".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            if stripped.startswith("["):
                raise MeloDataError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
            data = None  # JSON lines in a .json file
        if isinstance(data, list):
            for i, item in enumerate(data):
                yield f"record {i}", item
            return
        if isinstance(data, dict):
            yield "the top-level object", data
            return
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"line {number}", json.loads(line)
        except json.JSONDecodeError as exc:
            raise MeloDataError(f"{path}: line {number}: invalid JSON ({exc.msg})") from None


def _field(path: Path | str, where: str, record: Any, name: str, kind: type | tuple[type, ...] | None = None) -> Any:
    if not isinstance(record, dict):
        raise MeloDataError(f"{path}: {where}: expected a JSON object with field {name!r}, got {type(record).__name__}")
    if name not in record or record[name] is None:
        raise MeloDataError(f"{path}: {where}: missing field {name!r} (fields: {', '.join(map(str, record))})")
    value = record[name]
    if isinstance(value, str) and not value.strip():
        raise MeloDataError(f"{path}: {where}: field {name!r} is empty")
    if kind is not None and not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise MeloDataError(f"{path}: {where}: field {name!r} should be a {names}, got {value!r:.80}")
    return value


def _strings(path: Path | str, where: str, name: str, values: Any, strip: bool = True) -> list[str]:
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise MeloDataError(f"{path}: {where}: field {name!r} should be a string or a list of strings")
    return [v.strip() for v in values] if strip else list(values)


# --------------------------------------------------------------------------------------------
# zsRE and NQ


def load_zsre(path: str | os.PathLike, target: str = "answer", limit: int | None = None) -> list[Record]:
    """zsRE edit records from the MEND-format JSON or GRACE's ``filtered_rephrases`` JSONL (auto-detected).

    ``target="answer"`` (MELO/GRACE) edits towards the true answer ``answers[0]`` and keeps all
    answers for F1/EM; ``target="alt"`` (WISE/EasyEdit) edits towards the counterfactual ``alt``
    (GRACE format: ``alternatives[0]``), the only acceptable answer. ``fact`` is
    ``subject || answers[0]`` (GRACE format, which has no subject: ``input || answer``), so
    records that restate one fact share it. MEND ``loc`` (prefix ``nq question: `` removed) is
    the record's ``locality_prompt``. Texts are stripped of surrounding whitespace. The first
    ``limit`` records in file order.
    """
    if target not in ("answer", "alt"):
        raise MeloDataError(f"zsRE target {target!r} is neither 'answer' (MELO/GRACE) nor 'alt' (WISE)")
    path = _require(path)
    out: list[Record] = []
    for where, rec in _records(path):
        if limit is not None and len(out) >= limit:
            break
        if isinstance(rec, dict) and "src" in rec:
            out.append(_mend_record(path, where, rec, target))
        elif isinstance(rec, dict) and "input" in rec:
            out.append(_grace_zsre_record(path, where, rec, target))
        else:
            fields = ", ".join(map(str, rec)) if isinstance(rec, dict) else type(rec).__name__
            raise MeloDataError(
                f"{path}: {where}: not a zsRE record: needs field 'src' (MEND format: src, answers, rephrase, "
                f"alt, loc) or 'input' (GRACE format: input, output, filtered_rephrases); has {fields}"
            )
    return out


def _mend_record(path: Path, where: str, rec: dict, target: str) -> Record:
    prompt = _field(path, where, rec, "src", str).strip()
    answers = _strings(path, where, "answers", _field(path, where, rec, "answers"))
    if not answers:
        raise MeloDataError(f"{path}: {where}: field 'answers' is empty")
    rephrases = _strings(path, where, "rephrase", rec["rephrase"]) if rec.get("rephrase") else []
    subject = rec.get("subject")
    fact = f"{subject.strip() if isinstance(subject, str) else prompt}||{answers[0]}"
    loc = rec.get("loc")
    locality = None
    if isinstance(loc, str) and loc.strip():
        locality = loc.strip()
        if locality.startswith("nq question:"):
            locality = locality[len("nq question:"):].strip()
    if target == "alt":
        alt = _field(path, where, rec, "alt", str).strip()
        return Record(prompt, alt, rephrases, fact, [alt], locality)
    return Record(prompt, answers[0], rephrases, fact, answers, locality)


def _grace_zsre_record(path: Path, where: str, rec: dict, target: str) -> Record:
    prompt = _field(path, where, rec, "input", str).strip()
    output = _field(path, where, rec, "output", list)
    answers = [o["answer"].strip() for o in output if isinstance(o, dict) and isinstance(o.get("answer"), str)]
    if not answers:
        raise MeloDataError(f"{path}: {where}: field 'output' has no {{'answer': ...}} entry")
    rephrases = _strings(path, where, "filtered_rephrases", rec.get("filtered_rephrases") or [])
    subject = rec.get("subject")
    fact = f"{subject.strip() if isinstance(subject, str) else prompt}||{answers[0]}"
    if target == "alt":
        alts = _strings(path, where, "alternatives", _field(path, where, rec, "alternatives"))
        if not alts:
            raise MeloDataError(f"{path}: {where}: field 'alternatives' is empty (needed for target='alt')")
        return Record(prompt, alts[0], rephrases, fact, [alts[0]])
    return Record(prompt, answers[0], rephrases, fact, answers)


def load_nq(path: str | os.PathLike, limit: int | None = None) -> list[Record]:
    """NQ question/answer records: NQ-open JSON lines ``{"question", "answer": [...]}`` or GRACE's
    ``nq_train.json`` ``{"questions": [...], "answers": [...]}`` (a JSON list of NQ-open records works too).

    The target is the answer string (GRACE's file has one per question); of a list of answers the
    shortest (the first among equally short ones), and ``answers`` keeps them all. The first
    ``limit`` questions in file order (GRACE uses 1000).
    """
    path = _require(path)
    out: list[Record] = []
    for where, rec in _records(path):
        if isinstance(rec, dict) and "questions" in rec:
            questions = _field(path, where, rec, "questions", list)
            answers = _field(path, where, rec, "answers", list)
            if len(questions) != len(answers):
                raise MeloDataError(
                    f"{path}: fields 'questions' ({len(questions)}) and 'answers' ({len(answers)}) differ in length"
                )
            pairs = ((f"question {i}", q, a) for i, (q, a) in enumerate(zip(questions, answers)))
        else:
            pairs = iter([(where, _field(path, where, rec, "question", str), _field(path, where, rec, "answer"))])
        for at, question, answer in pairs:
            if limit is not None and len(out) >= limit:
                return out
            if not isinstance(question, str):
                raise MeloDataError(f"{path}: {at}: the question should be a string, got {question!r:.80}")
            answers_ = [a for a in _strings(path, at, "answer", answer) if a]
            if not answers_:
                raise MeloDataError(f"{path}: {at}: field 'answer' is empty")
            out.append(Record(question.strip(), min(answers_, key=len), answers=answers_))
    return out


# --------------------------------------------------------------------------------------------
# classification


def _rows(path: Path) -> Iterator[tuple[str, Any]]:
    if path.suffix.lower() in (".csv", ".tsv"):
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        reader = csv.DictReader(io.StringIO(_read_text(path), newline=""), delimiter=delimiter)
        for row in reader:
            yield f"line {reader.line_num}", row
    else:
        yield from _records(path)


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
    path = _require(path)
    rows = []
    for where, row in _rows(path):
        text = _field(path, where, row, text_field)
        if not isinstance(text, str):
            raise MeloDataError(f"{path}: {where}: field {text_field!r} should be text, got {text!r:.80}")
        label = _field(path, where, row, label_field)
        if isinstance(label, (dict, list, float, bool)):
            raise MeloDataError(
                f"{path}: {where}: field {label_field!r} should be a class name or id, got {label!r:.80}"
            )
        rows.append((where, text, label, _field(path, where, row, split_field)))
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
            local_error = _missing(path)
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


# --------------------------------------------------------------------------------------------
# hallucination


def load_webtext(path: str | os.PathLike, limit: int | None = None) -> list[str]:
    """WebText texts from JSON lines ``{"text"}`` (or a JSON list of such objects or of strings), file order."""
    path = _require(path)
    out: list[str] = []
    for where, rec in _records(path):
        if limit is not None and len(out) >= limit:
            break
        out.append(rec if isinstance(rec, str) else _field(path, where, rec, "text", str))
    return out


def load_hallucination(data_dir: str | os.PathLike | None = None, limit: int | None = None) -> TaskData:
    """The hallucination task exactly as GRACE builds it (see the module docstring).

    Edits (inaccurate GPT-3 sentences -> Wikipedia sentence), ``originals`` (the same prompts
    with the GPT-3 sentence, in the same order), ``accurate`` (the ARR set) from
    ``hallucination/*``; upstream from ``webtext/webtext.test.jsonl`` as records with an empty
    prompt and the text as target (GRACE scores the whole text; it uses 1000 texts of
    openwebtext-10k). ``limit`` keeps the first edits (and originals); ARR and upstream stay whole.
    """
    root = resolve_data_dir(data_dir)
    data_path = _require(root / HALLUCINATION_FILE)
    concepts_path = _require(root / CONCEPTS_FILE)
    passages = [(where, rec) for where, rec in _records(data_path)]
    concepts = [line.strip() for line in _read_text(concepts_path).splitlines()]
    while concepts and not concepts[-1]:
        concepts.pop()
    if len(concepts) != len(passages):
        raise MeloDataError(
            f"{concepts_path} has {len(concepts)} concepts but {data_path} has {len(passages)} passages; "
            "the concepts file must name one concept per passage, in the same order"
        )
    edits: list[Record] = []
    originals: list[Record] = []
    accurate: list[Record] = []
    for (where, rec), concept in zip(passages, concepts):
        annotations = _strings(data_path, where, "annotation", _field(data_path, where, rec, "annotation", list))
        sentences = _strings(
            data_path, where, "gpt3_sentences", _field(data_path, where, rec, "gpt3_sentences", list), strip=False
        )
        wiki = _field(data_path, where, rec, "wiki_bio_text", str)
        if len(sentences) < len(annotations):
            raise MeloDataError(
                f"{data_path}: {where}: {len(annotations)} annotations but only {len(sentences)} gpt3_sentences"
            )
        correct = split_sentences(wiki)[: len(annotations)]
        header = f"This is a Wikipedia passage about {concept}."
        for j, annotation in enumerate(annotations):
            prompt = f"{header} {' '.join(sentences[:j])}"
            if "inaccurate" in annotation:
                if not correct:
                    raise MeloDataError(f"{data_path}: {where}: field 'wiki_bio_text' has no sentence")
                edits.append(Record(prompt, correct[min(j, len(correct) - 1)], fact=concept))
                originals.append(Record(prompt, sentences[j], fact=concept))
            else:
                accurate.append(Record(prompt, sentences[j], fact=concept))
    if limit is not None:
        edits, originals = edits[:limit], originals[:limit]
    upstream = [Record("", text) for text in load_webtext(_require(root / WEBTEXT_FILE))]
    return TaskData("hallucination", "hallucination", edits, upstream, accurate, None, originals)


# --------------------------------------------------------------------------------------------
# tasks


def load_task(
    name: str, data_dir: str | os.PathLike | None = None, n_edits: int | None = None, target: str = "answer"
) -> TaskData:
    """One of the paper's tasks by name, with at most ``n_edits`` edits (the first ones, file order).

    ``"zsre"``: edits from ``zsre/zsre_mend_edit.json`` (or GRACE's jsonl), upstream from
    ``nq/NQ-open.dev.jsonl`` (or ``nq/nq_train.json``), all questions (GRACE uses the first
    1000); ``target`` is ``"answer"`` or ``"alt"`` (zsRE; the other tasks have one target and
    ignore it). ``"scotus"``: :func:`load_scotus`.
    ``"hallucination"``: :func:`load_hallucination`.
    """
    if name not in TASKS:
        raise MeloDataError(f"unknown task {name!r}; the tasks are {', '.join(TASKS)}")
    if target not in ("answer", "alt"):
        raise MeloDataError(f"target {target!r} is neither 'answer' (MELO/GRACE) nor 'alt' (WISE)")
    if name == "zsre":
        root = resolve_data_dir(data_dir)
        edits = load_zsre(_first(root, ZSRE_FILES), target=target, limit=n_edits)
        upstream = load_nq(_first(root, NQ_FILES))
        return TaskData("zsre", "qa", edits, upstream)
    if name == "scotus":
        task = load_scotus(data_dir)
        if n_edits is not None:
            task.edits = task.edits[:n_edits]
        return task
    return load_hallucination(data_dir, limit=n_edits)


# --------------------------------------------------------------------------------------------
# sentence splitting as nltk.sent_tokenize (Punkt, English model) does it

# Abbreviation types of NLTK's English Punkt model: a period after one of these ends no sentence
# unless the next word starts one (see _breaks).
_ABBREVIATIONS = frozenset(
    """
    a.a a.c a.d a.g a.h a.m a.m.e a.s a.t b.f b.v c.i.t c.o.m.b c.v d.c d.h d.w e.f e.h e.l e.m f.g f.j g.d g.f
    g.k h.c h.f h.m i.m.s j.b j.c j.j j.k j.p j.r l.a l.f l.p m.b.a m.d.c m.j n.c n.d n.h n.j n.m n.v n.y p.a.m
    p.m r.a r.h r.i r.j r.k r.t s.a s.a.y s.c s.g s.p.a s.s t.j u.k u.n u.s u.s.a u.s.s.r w.c w.r w.va w.w ph.d
    adm ala ariz aug ave bros c calif chg cie co col colo conn corp cos ct d dec dr e f feb fla fri ft g ga gen h ill
    inc jan jr k kan ky l lt ltd m maj messrs mg mich minn mr mrs ms n nev nov oct ok okla ore p pa prof r rep reps s
    sen sep sept sr st sw t tenn tues v va vs vt w wash wed wis yr
    """.split()
)
# Words the English model learned as sentence starters.
_SENT_STARTERS = frozenset(
    """
    according although among both but despite even he however i if in indeed instead it many meanwhile moreover most
    nevertheless nonetheless nor separately similarly since so some sales the there these they this though thus
    under when while yet
    """.split()
)
# Orthographic context (which cases a word was seen in) of the English model, for the words that
# decide a boundary: common words; the model never saw a word missing here, which it treats like a
# proper name (no break after an initial or abbreviation). 'field', 'wild' and 'bees' are the
# words of the WikiBio passages whose model flags split "J. Field", "J. Wild", "St. Bees".
_BEG_UC, _MID_UC, _UNK_UC, _BEG_LC, _MID_LC, _UNK_LC = 2, 4, 8, 16, 32, 64
_UC, _LC = _BEG_UC | _MID_UC | _UNK_UC, _BEG_LC | _MID_LC | _UNK_LC
_ORTHO = {
    word: _BEG_UC | _MID_UC | _UNK_UC | _MID_LC
    for word in _SENT_STARTERS
    | set("a an as at by for from his her its of on our she their to we with you after during".split())
}
_ORTHO.update(field=_MID_UC | _MID_LC, wild=_MID_UC | _UNK_UC | _MID_LC, bees=_MID_LC)
_NON_WORD = r"""[)";}\]*:@'({\[!?]"""
_MULTI_CHAR = r"(?:-{2,}|\.{2,}|(?:\.\s){2,}\.)"
_WORD_RE = re.compile(
    rf"""{_MULTI_CHAR}|(?=[^("`{{\[:;&#*@)}}\]\-,])\S+?"""
    rf"""(?=\s|$|{_NON_WORD}|{_MULTI_CHAR}|,(?=$|\s|{_NON_WORD}|{_MULTI_CHAR}))|\S"""
)
_END_RE = re.compile(rf"[.?!](?=(?P<after>{_NON_WORD}|\s+(?P<next>\S+)))")
_NUMBER_RE = re.compile(r"^-?[.,]?\d[\d,.-]*\.?$")
_INITIAL_RE = re.compile(r"[^\W\d]\.$")
_ELLIPSIS_RE = re.compile(r"\.\.+$")
_REALIGN_RE = re.compile(r"""["')\]}]+?(?:\s+|(?=--)|$)""", re.MULTILINE)


class _Token:
    __slots__ = ("text", "type", "sentbreak", "abbr", "ellipsis")

    def __init__(self, text: str) -> None:
        self.text = text
        self.type = _NUMBER_RE.sub("##number##", text.lower())
        self.sentbreak = self.abbr = self.ellipsis = False

    @property
    def bare_type(self) -> str:  # type without a final period
        return self.type[:-1] if len(self.type) > 1 and self.type.endswith(".") else self.type

    @property
    def lookup_type(self) -> str:  # the period is dropped only where it ends a sentence
        return self.bare_type if self.sentbreak else self.type


def _starts_sentence(tok: _Token) -> bool | None:
    """Orthographic evidence that ``tok`` starts a sentence: True, False or None (unknown)."""
    if tok.text in (";", ":", ",", ".", "!", "?"):
        return False
    flags = _ORTHO.get(tok.lookup_type, 0)
    if tok.text[0].isupper() and flags & _LC and not flags & _MID_UC:
        return True
    if tok.text[0].islower() and (flags & _UC or not flags & _BEG_LC):
        return False
    return None


def _breaks(context: str) -> bool:
    """Whether a sentence ends inside ``context`` (the word before a candidate end, the end, what follows)."""
    toks = [_Token(t) for t in _WORD_RE.findall(context)]
    for tok in toks:
        if tok.text in (".", "?", "!"):
            tok.sentbreak = True
        elif _ELLIPSIS_RE.match(tok.text):
            tok.ellipsis = True
        elif tok.text.endswith(".") and not tok.text.endswith(".."):
            low = tok.text[:-1].lower()
            if low in _ABBREVIATIONS or low.split("-")[-1] in _ABBREVIATIONS:
                tok.abbr = True
            else:
                tok.sentbreak = True
    for tok, nxt in zip(toks, toks[1:]):
        if not tok.text.endswith("."):
            continue
        initial = bool(_INITIAL_RE.match(tok.text))
        if (tok.abbr or tok.ellipsis) and not initial:
            if _starts_sentence(nxt) is True or (nxt.text[0].isupper() and nxt.lookup_type in _SENT_STARTERS):
                tok.sentbreak = True
                continue
        if initial or tok.bare_type == "##number##":
            start = _starts_sentence(nxt)
            if start is False or (
                start is None and initial and nxt.text[0].isupper() and not _ORTHO.get(nxt.lookup_type, 0) & _LC
            ):
                tok.sentbreak, tok.abbr = False, True
    return any(tok.sentbreak for tok in toks[:-1])


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences as ``nltk.sent_tokenize`` (Punkt, English) does, without nltk.

    A re-implementation of Punkt's decision rules with the English model's abbreviation and
    sentence-starter lists and a small orthographic table (see ``_ORTHO``); it gives nltk's
    sentences on every ``wiki_bio_text`` of the SelfCheckGPT WikiBio set (checked against
    nltk 3.10 with the English model's flags for the deciding words) and has the same rules
    elsewhere, with unseen words treated as proper names. Closing quotes and brackets stay
    with the sentence they close.
    """
    candidates: list[tuple[re.Match, int]] = []
    previous: re.Match | None = None
    previous_start = previous_stop = 0
    for match in _END_RE.finditer(text):
        before = text[previous_stop : match.start()]
        space = max(before.rfind(c) for c in " \t\n\r\x0b\x0c")
        start = previous_stop + space + 1 if space > 0 else previous_start
        if previous is not None and previous_stop <= start:
            candidates.append((previous, previous_start))
        previous, previous_start, previous_stop = match, start, match.start()
    if previous is not None:
        candidates.append((previous, previous_start))
    spans: list[list[int]] = []
    last = 0
    for match, start in candidates:
        if _breaks(text[start : match.start()] + match.group() + match.group("after")):
            spans.append([last, match.end()])
            last = match.start("next") if match.group("next") else match.end()
    spans.append([last, len(text.rstrip())])
    out: list[str] = []
    for k, (a, b) in enumerate(spans):
        if k + 1 < len(spans):
            following = text[spans[k + 1][0] : spans[k + 1][1]]
            realign = _REALIGN_RE.match(following)
            if realign:
                b = spans[k + 1][0] + len(realign.group().rstrip())
                spans[k + 1][0] += realign.end()
        if text[a:b]:
            out.append(text[a:b])
    return out
