"""zsRE edits and NQ upstream questions (the QA task).

* **zsRE** (:func:`load_zsre`): one :class:`Record` per zsRE record; the edit label is the true
  answer ``answers[0]`` (MELO/GRACE) or the counterfactual ``alt`` (WISE/EasyEdit). GRACE
  flattens each question and its first 10 ``filtered_rephrases`` into separate edits and splits
  them 50/50 into edits and held-out rephrasings with a seeded shuffle; here the rephrasings stay
  on their record (``Record.rephrases``) and the protocol decides how to use them.
* **NQ** (:func:`load_nq`): the upstream (TRR) set. GRACE uses the first 1000 questions of its
  ``nq_train.json`` with their single answer string; NQ-open lists several answers per question,
  so the target is the shortest one (the one the offline stand-in is trained on) and all are kept
  for F1/EM.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import MeloDataError
from .locate import require_file
from .readers import get_field, json_records, parse_records, string_list
from .records import Record


def load_zsre(path: str | os.PathLike, target: str = "answer", limit: int | None = None,
              skipped: list[dict[str, str]] | None = None) -> list[Record]:
    """zsRE edit records from the MEND-format JSON or GRACE's ``filtered_rephrases`` JSONL (auto-detected).

    ``target="answer"`` (MELO/GRACE) edits towards the true answer ``answers[0]`` and keeps all
    answers for F1/EM; ``target="alt"`` (WISE/EasyEdit) edits towards the counterfactual ``alt``
    (GRACE format: ``alternatives[0]``), the only acceptable answer. ``fact`` is
    ``subject || answers[0]`` (GRACE format, which has no subject: ``input || answer``), so
    records that restate one fact share it. MEND ``loc`` (prefix ``nq question: `` removed) is
    the record's ``locality_prompt``. Texts are stripped of surrounding whitespace. The first
    ``limit`` records in file order. With ``skipped`` (a list) a bad record is listed there and left
    out instead of stopping the load (``--skip-invalid``; :func:`melo.data.readers.parse_records`).
    """
    if target not in ("answer", "alt"):
        raise MeloDataError(f"zsRE target {target!r} is neither 'answer' (MELO/GRACE) nor 'alt' (WISE)")
    path = require_file(path)

    def parse(where: str, rec: object) -> Record:
        if isinstance(rec, dict) and "src" in rec:
            return _mend_record(path, where, rec, target)
        if isinstance(rec, dict) and "input" in rec:
            return _grace_zsre_record(path, where, rec, target)
        fields = ", ".join(map(str, rec)) if isinstance(rec, dict) else type(rec).__name__
        raise MeloDataError(
            f"{path}: {where}: not a zsRE record: needs field 'src' (MEND format: src, answers, rephrase, "
            f"alt, loc) or 'input' (GRACE format: input, output, filtered_rephrases); has {fields}"
        )

    return parse_records(path, json_records(path, skipped), parse, skipped, limit)


def _mend_record(path: Path, where: str, rec: dict, target: str) -> Record:
    prompt = get_field(path, where, rec, "src", str).strip()
    answers = string_list(path, where, "answers", get_field(path, where, rec, "answers"))
    if not answers:
        raise MeloDataError(f"{path}: {where}: field 'answers' is empty")
    rephrases = string_list(path, where, "rephrase", rec["rephrase"]) if rec.get("rephrase") else []
    subject = rec.get("subject")
    fact = f"{subject.strip() if isinstance(subject, str) else prompt}||{answers[0]}"
    named = subject.strip() if isinstance(subject, str) and subject.strip() else None
    loc = rec.get("loc")
    locality = None
    if isinstance(loc, str) and loc.strip():
        locality = loc.strip()
        if locality.startswith("nq question:"):
            locality = locality[len("nq question:"):].strip()
    loc_ans = rec.get("loc_ans")
    loc_answer = loc_ans.strip() if isinstance(loc_ans, str) and loc_ans.strip() else None
    if target == "alt":
        alt = get_field(path, where, rec, "alt", str).strip()
        return Record(prompt, alt, rephrases, fact, [alt], locality, loc_answer, named)
    return Record(prompt, answers[0], rephrases, fact, answers, locality, loc_answer, named)


def _grace_zsre_record(path: Path, where: str, rec: dict, target: str) -> Record:
    prompt = get_field(path, where, rec, "input", str).strip()
    output = get_field(path, where, rec, "output", list)
    answers = [o["answer"].strip() for o in output if isinstance(o, dict) and isinstance(o.get("answer"), str)]
    if not answers:
        raise MeloDataError(f"{path}: {where}: field 'output' has no {{'answer': ...}} entry")
    rephrases = string_list(path, where, "filtered_rephrases", rec.get("filtered_rephrases") or [])
    subject = rec.get("subject")
    fact = f"{subject.strip() if isinstance(subject, str) else prompt}||{answers[0]}"
    if target == "alt":
        alts = string_list(path, where, "alternatives", get_field(path, where, rec, "alternatives"))
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
    path = require_file(path)
    out: list[Record] = []
    for where, rec in json_records(path):
        if isinstance(rec, dict) and "questions" in rec:
            questions = get_field(path, where, rec, "questions", list)
            answers = get_field(path, where, rec, "answers", list)
            if len(questions) != len(answers):
                raise MeloDataError(
                    f"{path}: fields 'questions' ({len(questions)}) and 'answers' ({len(answers)}) differ in length"
                )
            pairs = ((f"question {i}", q, a) for i, (q, a) in enumerate(zip(questions, answers)))
        else:
            question = get_field(path, where, rec, "question", str)
            pairs = iter([(where, question, get_field(path, where, rec, "answer"))])
        for at, question, answer in pairs:
            if limit is not None and len(out) >= limit:
                return out
            if not isinstance(question, str):
                raise MeloDataError(f"{path}: {at}: the question should be a string, got {question!r:.80}")
            answers_ = [a for a in string_list(path, at, "answer", answer) if a]
            if not answers_:
                raise MeloDataError(f"{path}: {at}: field 'answer' is empty")
            out.append(Record(question.strip(), min(answers_, key=len), answers=answers_))
    return out

