"""The demo's fictional world (``world.json``) and user edit files (JSON, JSONL or CSV).

``world.json`` is written by ``scripts/make_world.py``: facts about invented countries, cities,
people, companies, books, rivers and mountains, each a question, paraphrased questions and a
short answer, plus counterfactual edits (a fact and a new answer of the same relation).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..data.readers import get_field, parse_records, read_text, string_list
from ..errors import MeloDataError

PROMPT_FIELDS = ("prompt", "question", "src")
TARGET_FIELDS = ("target", "answer", "new_answer")
REPHRASE_FIELDS = ("rephrase", "rephrases", "paraphrase", "paraphrases")
LOCALITY_FIELDS = ("locality", "locality_prompt", "loc", "control")


@dataclass(frozen=True)
class Fact:
    id: str
    entity: str
    relation: str
    question: str
    paraphrases: tuple[str, ...]
    answer: str


@dataclass(frozen=True)
class EditCase:
    """One edit: a prompt and its new target, with prompts that should (rephrases) and should not
    (locality) follow it. ``before`` is the answer it replaces, where known; ``match``, where given,
    the words whose presence in a chat answer shows the edit (default: the target itself)."""

    prompt: str
    target: Any
    rephrases: tuple[str, ...] = ()
    locality: tuple[str, ...] = ()
    before: str | None = None
    source: str = ""
    match: tuple[str, ...] = ()


@dataclass(frozen=True)
class World:
    facts: tuple[Fact, ...]
    edits: tuple[EditCase, ...]
    edited_ids: frozenset[str] = field(default_factory=frozenset)

    def training_pairs(self) -> tuple[list[str], list[str]]:
        """Every question and paraphrase of every fact, with its answer (what the demo model learns)."""
        questions, answers = [], []
        for f in self.facts:
            for q in (f.question, *f.paraphrases):
                questions.append(q)
                answers.append(f.answer)
        return questions, answers

    def untouched(self) -> list[Fact]:
        """Facts no edit changes: their questions measure locality."""
        return [f for f in self.facts if f.id not in self.edited_ids]


def read_demo_json(kind: str, path: str | Path | None) -> tuple[str, Any]:
    """(where, parsed JSON) of the shipped ``{kind}.json`` or of the file ``path``; a missing file or
    invalid JSON is a MeloDataError."""
    if path is None:
        where = f"the shipped {kind}.json"
        text = resources.files(__package__).joinpath(f"{kind}.json").read_text(encoding="utf-8")
    else:
        path = Path(path)
        if not path.is_file():
            raise MeloDataError(f"{kind} file {str(path)!r} does not exist")
        where, text = str(path), read_text(path)
    try:
        return where, json.loads(text)
    except json.JSONDecodeError as err:
        raise MeloDataError(f"{where}: line {err.lineno}: not valid JSON ({err.msg})") from None


def load_world(path: str | Path | None = None) -> World:
    """The shipped world (or a file of the same shape); a malformed file is a MeloDataError naming the field."""
    where, data = read_demo_json("world", path)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("facts", "edits")):
        raise MeloDataError(f"{where}: expected an object with a 'facts' and an 'edits' list, "
                            "shaped like melo/demo/world.json")
    facts = tuple(_fact(where, f"fact {i}", f) for i, f in enumerate(data["facts"]))
    by_id = {f.id: f for f in facts}
    edits = []
    for i, e in enumerate(data["edits"]):
        fact_id = get_field(where, f"edit {i}", e, "fact", str)
        if fact_id not in by_id:
            raise MeloDataError(f"{where}: edit {i}: field 'fact' names no fact of the world: {fact_id!r}")
        fact = by_id[fact_id]
        new_answer = get_field(where, f"edit {i}", e, "new_answer", str)
        edits.append(EditCase(fact.question, new_answer, fact.paraphrases, (), fact.answer, fact.id))
    return World(facts, tuple(edits), frozenset(e.source for e in edits))


def _fact(where: str, at: str, f: Any) -> Fact:
    text = {name: get_field(where, at, f, name, str) for name in ("id", "entity", "relation", "question", "answer")}
    paraphrases = string_list(where, at, "paraphrases", get_field(where, at, f, "paraphrases", list), strip=False)
    return Fact(text["id"], text["entity"], text["relation"], text["question"], tuple(paraphrases), text["answer"])


# --------------------------------------------------------------------------------------------
# user edit files


def _pick(row: dict[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        if name in row and row[name] not in (None, ""):
            return row[name]
    return None


def _texts(value: Any, where: str, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v for v in value.split("|") if v.strip()) if "|" in value else (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise MeloDataError(f"{where}: field {name!r} must be a string or a list of strings, got {value!r}")


def _case(row: Any, where: str, classification: bool) -> EditCase:
    if not isinstance(row, dict):
        raise MeloDataError(f"{where}: expected an object with 'prompt' and 'target', got {type(row).__name__}")
    prompt = _pick(row, PROMPT_FIELDS)
    target = _pick(row, TARGET_FIELDS)
    if not isinstance(prompt, str) or not prompt.strip():
        raise MeloDataError(
            f"{where}: missing or empty field 'prompt' (also accepted: {', '.join(PROMPT_FIELDS[1:])})"
        )
    if target is None or (isinstance(target, str) and not target.strip()):
        raise MeloDataError(
            f"{where}: missing or empty field 'target' (also accepted: {', '.join(TARGET_FIELDS[1:])})"
        )
    if classification:
        target = _class_id(target, where)
    elif not isinstance(target, str):
        raise MeloDataError(f"{where}: field 'target' must be text, got {target!r}")
    return EditCase(prompt, target, _texts(_pick(row, REPHRASE_FIELDS), where, "rephrase"),
                    _texts(_pick(row, LOCALITY_FIELDS), where, "locality"), None, where)


def _class_id(target: Any, where: str) -> int:
    """A class id: a whole number >= 0 (in CSV, its digits); 1.7, true or "1.0" are not class ids."""
    if isinstance(target, str) and target.strip().isdigit():
        return int(target.strip())
    if isinstance(target, int) and not isinstance(target, bool) and target >= 0:
        return target
    raise MeloDataError(f"{where}: field 'target' must be a class id (a whole number >= 0) for a classifier, "
                        f"got {target!r}")


def read_edits_file(path: str | Path, classification: bool = False,
                    skipped: list[dict[str, str]] | None = None) -> list[EditCase]:
    """Edits from a JSON list, JSONL or CSV file with ``prompt``, ``target`` and optional
    ``rephrase`` / ``locality`` (a string, a list, or in CSV ``|``-separated strings).

    Errors name the file, the line (JSONL, CSV) or item (JSON) and the field; with ``skipped`` (a
    list, ``--skip-invalid``) a bad edit is listed there as ``{record, reason}`` and left out.
    """
    path = Path(path)
    if not path.is_file():
        raise MeloDataError(f"edits file {str(path)!r} does not exist")
    text = read_text(path)
    suffix = path.suffix.lower()
    rows: list[tuple[str, Any]] = []
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        try:
            if not reader.fieldnames or not set(reader.fieldnames) & set(PROMPT_FIELDS):
                raise MeloDataError(f"{path}: line 1: the CSV header needs a 'prompt' and a 'target' column, "
                                    f"got {reader.fieldnames}")
            for row in reader:
                rows.append((f"line {reader.line_num}", row))
        except csv.Error as err:
            raise MeloDataError(f"{path}: line {reader.line_num}: not valid CSV ({err})") from None
    elif suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append((f"line {n}", json.loads(line)))
            except json.JSONDecodeError as err:
                if skipped is None:
                    raise MeloDataError(f"{path}: line {n}: not valid JSON ({err.msg})") from None
                skipped.append({"record": f"line {n}", "reason": f"not valid JSON ({err.msg})"})
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise MeloDataError(f"{path}: line {err.lineno}: not valid JSON ({err.msg})") from None
        if isinstance(data, dict) and isinstance(data.get("edits"), list):
            data = data["edits"]
        if not isinstance(data, list):
            raise MeloDataError(f"{path}: expected a list of edits (or an object with an 'edits' list)")
        rows = [(f"item {i}", row) for i, row in enumerate(data)]
    else:
        raise MeloDataError(f"{path}: unknown edits file type {suffix!r}; use .json, .jsonl or .csv")
    cases = parse_records(path, rows, lambda where, row: _case(row, f"{path}: {where}", classification), skipped)
    if not cases:
        raise MeloDataError(f"{path}: no edits found" + (f" ({len(skipped)} invalid ones skipped)" if skipped else ""))
    return cases
