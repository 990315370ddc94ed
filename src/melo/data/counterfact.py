"""CounterFact edits (Meng et al. 2022, ROME) in EasyEdit's flat format.

One :class:`Record` per case: ``prompt`` (subject + relation, object left out) edited towards
``target_new``; ``rephrase_prompt`` is the paraphrase (generalization); ``locality_prompt`` /
``locality_ground_truth`` is a *neighbourhood* prompt (another subject, the same relation, the
same true object), so a router that matches the relation alone captures it. ``fact`` is
``subject || ground_truth``. Prompts are completions, not questions.
"""

from __future__ import annotations

import os
import re

from .locate import require_file
from .readers import get_field, json_records, parse_records
from .records import Record

FIELDS = ("prompt", "subject", "target_new", "ground_truth", "rephrase_prompt", "locality_prompt",
          "locality_ground_truth")


def load_counterfact(path: str | os.PathLike, limit: int | None = None,
                     skipped: list[dict[str, str]] | None = None) -> list[Record]:
    """The first ``limit`` CounterFact cases of a JSON list or JSON lines file, in file order; with
    ``skipped`` a bad case is listed there and left out (``--skip-invalid``)."""
    path = require_file(path)

    def parse(where: str, rec: object) -> Record:
        text = {name: get_field(path, where, rec, name, str).strip() for name in FIELDS}
        return Record(text["prompt"], text["target_new"], [text["rephrase_prompt"]],
                      f"{text['subject']}||{text['ground_truth']}", [text["target_new"]],
                      text["locality_prompt"], text["locality_ground_truth"], text["subject"] or None,
                      text["ground_truth"] or None)

    return parse_records(path, json_records(path, skipped), parse, skipped, limit)


def restated_by(records: list[Record]) -> list[int | None]:
    """For each record's locality prompt, the first record whose edit rewrites the very fact it asks,
    or None. An edit rewrites it when the prompt names that record's subject as whole words and its
    answer is that record's true object, or when the prompt is, word for word (case and outer spaces
    aside), that record's prompt or paraphrase (CounterFact asks "Istanbul is a twin city of" under
    several true objects). Beyond a few thousand CounterFact edits, neighbourhood prompts of one case
    ask facts another case edits ("Alistair Cooke works for" is both), so an editor that generalises
    must change those answers; locality is also reported without them."""
    by_truth: dict[str, list[tuple[int, re.Pattern]]] = {}
    by_text: dict[str, int] = {}
    for j, r in enumerate(records):
        if r.subject and r.truth:
            pattern = re.compile(r"(?<!\w)" + re.escape(r.subject.lower()) + r"(?!\w)")
            by_truth.setdefault(r.truth.strip().lower(), []).append((j, pattern))
        for text in (r.prompt, *r.rephrases):
            by_text.setdefault(text.strip().lower(), j)
    out: list[int | None] = []
    for r in records:
        prompt, answer = (r.locality_prompt or "").lower(), (r.locality_answer or "").strip().lower()
        named = next((j for j, pattern in by_truth.get(answer, []) if pattern.search(prompt)), None)
        same = by_text.get(prompt.strip()) if r.locality_prompt else None
        out.append(min((j for j in (named, same) if j is not None), default=None))
    return out
