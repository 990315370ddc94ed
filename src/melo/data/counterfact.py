"""CounterFact edits (Meng et al. 2022, ROME) in EasyEdit's flat format.

One :class:`Record` per case: ``prompt`` (subject + relation, object left out) edited towards
``target_new``; ``rephrase_prompt`` is the paraphrase (generalization); ``locality_prompt`` /
``locality_ground_truth`` is a *neighbourhood* prompt (another subject, the same relation, the
same true object), so a router that matches the relation alone captures it. ``fact`` is
``subject || ground_truth``. Prompts are completions, not questions.
"""

from __future__ import annotations

import os

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
                      text["locality_prompt"], text["locality_ground_truth"])

    return parse_records(path, json_records(path, skipped), parse, skipped, limit)
