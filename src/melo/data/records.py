"""The records every loader returns: one example (:class:`Record`) and one task (:class:`TaskData`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
    locality_answer: str | None = None  # the locality prompt's answer (WISE's teacher-forced locality)
    subject: str | None = None  # the entity the prompt is about (CounterFact, zsRE): MELO's subject scope
    truth: str | None = None  # CounterFact: the true object the edit replaces


@dataclass
class TaskData:
    """The data of one benchmark task.

    ``edits`` are the edit requests; ``upstream`` is the TRR set: NQ questions with their
    answers (QA), early-term texts with labels (classification) or WebText texts as records
    with an empty prompt and the whole text as target (hallucination: perplexity of the text).
    ``accurate`` is the hallucination ARR set and ``originals`` the GPT-3 sentences that the
    hallucination edits replace (GRACE fine-tunes its GPT2-XL on accurate + originals + WebText
    so that the model makes those errors). ``label_names[i]`` names class ``i``.

    Provenance (not compared by ``==``): ``files`` maps a role (``"edits"``, ``"upstream"``,
    ``"data"``, ...) to the path of each file the records were read from, and ``options`` holds the
    loader settings that shaped them (fields, split); a stand-in's cache key and a run's config
    are built from both. ``skipped`` lists the records of the user's file that ``skip_invalid`` left out.
    """

    name: str
    kind: str
    edits: list[Record]
    upstream: list[Record]
    accurate: list[Record] = field(default_factory=list)
    label_names: list[str] | None = None
    originals: list[Record] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict, compare=False)
    options: dict[str, Any] = field(default_factory=dict, compare=False)
    skipped: list[dict[str, str]] = field(default_factory=list, compare=False)  # --skip-invalid: {record, reason}


def latest_targets(records: list[Record], rows: list[int], done: int) -> dict[int, Any]:
    """Row -> the target of the last of the first ``done`` records that states the row's fact, for the
    rows whose fact a later record re-edited to another target (zsRE's sibling records)."""
    last: dict[str, int] = {}
    for j, record in enumerate(records[:done]):
        if record.fact is not None:
            last[record.fact] = j
    out = {}
    for i in rows:
        fact = records[i].fact
        if fact is not None and records[last[fact]].target != records[i].target:
            out[i] = records[last[fact]].target
    return out


def one_target_rows(records: list[Record], rows: list[int], done: int) -> list[int]:
    """The rows whose fact no other of the first ``done`` records gives another target (a paraphrase a router
    can serve without telling sibling questions apart; a record without a fact counts as its own)."""
    targets: dict[str, set] = {}
    for record in records[:done]:
        if record.fact is not None:
            targets.setdefault(record.fact, set()).add(record.target)
    return [i for i in rows if records[i].fact is None or len(targets[records[i].fact]) == 1]
