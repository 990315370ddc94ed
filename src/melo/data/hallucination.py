"""The hallucination task (WikiBio, built exactly as GRACE does) and its WebText upstream set.

**Hallucination** (:func:`load_hallucination`): exactly GRACE's ``Hallucination.get_edits``:
prompt ``"This is a Wikipedia passage about {concept}. " + " ".join(gpt3_sentences[:j])``;
for an inaccurate sentence ``j`` the target is Wikipedia sentence ``min(j, n - 1)`` of the
first ``len(annotation)`` sentences of ``wiki_bio_text`` split as ``nltk.sent_tokenize`` does,
and the GPT-3 sentence goes to ``originals``; accurate sentences (with their GPT-3 sentence as
target) form the ARR set. Upstream (TRR) is WebText, one record per text with an empty prompt.

**A user's edits** (:func:`load_hallucination_edits`, ``melo bench --edits-file``): JSON list, JSON
lines or CSV rows ``{"prompt", "target", "accurate"}``; ``accurate`` (optional, default false) marks a
row whose target the model already gets right (the ARR set); every other row is an edit (the prompt
and the text the model should write instead of its hallucination). Upstream stays WebText.
"""

from __future__ import annotations

import os
from itertools import islice
from pathlib import Path

from ..errors import MeloDataError
from .locate import CONCEPTS_FILE, HALLUCINATION_FILE, WEBTEXT_FILE, require_file, resolve_data_dir
from .readers import get_field, json_records, parse_records, read_text, string_list, table_rows
from .records import Record, TaskData
from .sentences import split_sentences


def load_webtext(path: str | os.PathLike, limit: int | None = None) -> list[str]:
    """WebText texts from JSON lines ``{"text"}`` (or a JSON list of such objects or of strings), file order."""
    path = require_file(path)
    out: list[str] = []
    for where, rec in islice(json_records(path), limit):
        out.append(rec if isinstance(rec, str) else get_field(path, where, rec, "text", str))
    return out


_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0", "")


def _flag(path: object, where: str, row: dict, name: str) -> bool:
    value = row.get(name)
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise MeloDataError(f"{path}: {where}: field {name!r} should be true or false, got {value!r:.80}")


def load_hallucination_edits(path: str | os.PathLike,
                             skipped: list[dict[str, str]] | None = None) -> tuple[list[Record], list[Record]]:
    """(edits, accurate) from a user's rows ``{"prompt", "target", "accurate"}`` (see the module docstring);
    with ``skipped`` a bad row is listed there and left out (``--skip-invalid``)."""
    path = require_file(path)

    def parse(where: str, row: object) -> tuple[bool, Record]:
        prompt = get_field(path, where, row, "prompt", str)
        target = get_field(path, where, row, "target", str)
        return _flag(path, where, row, "accurate"), Record(prompt, target)

    rows = parse_records(path, table_rows(path, skipped), parse, skipped)
    edits = [record for is_accurate, record in rows if not is_accurate]
    accurate = [record for is_accurate, record in rows if is_accurate]
    if not edits:
        raise MeloDataError(f"{path}: no edits: every row is marked accurate (or the file has no rows)")
    return edits, accurate


def _webtext_upstream(root: Path) -> tuple[Path, list[Record]]:
    """The data dir's WebText file and its texts as upstream records (empty prompt, the text as target)."""
    path = require_file(root / WEBTEXT_FILE)
    return path, [Record("", text) for text in load_webtext(path)]


def load_hallucination(data_dir: str | os.PathLike | None = None, limit: int | None = None,
                       edits_file: str | os.PathLike | None = None,
                       skipped: list[dict[str, str]] | None = None) -> TaskData:
    """The hallucination task exactly as GRACE builds it (see the module docstring).

    Edits (inaccurate GPT-3 sentences -> Wikipedia sentence), ``originals`` (the same prompts
    with the GPT-3 sentence, in the same order), ``accurate`` (the ARR set) from
    ``hallucination/*``; upstream from ``webtext/webtext.test.jsonl`` as records with an empty
    prompt and the text as target (GRACE scores the whole text; it uses 1000 texts of
    openwebtext-10k). ``limit`` keeps the first edits (and originals); ARR and upstream stay whole.
    ``edits_file`` takes edits and ARR from the user's rows instead (:func:`load_hallucination_edits`; no originals;
    ``skipped`` as there).
    """
    root = resolve_data_dir(data_dir)
    if edits_file is not None:
        edits, accurate = load_hallucination_edits(edits_file, skipped)
        webtext_path, upstream = _webtext_upstream(root)
        return TaskData("hallucination", "hallucination", edits[:limit] if limit is not None else edits, upstream,
                        accurate, files={"edits": str(require_file(edits_file)), "upstream": str(webtext_path)})
    data_path = require_file(root / HALLUCINATION_FILE)
    concepts_path = require_file(root / CONCEPTS_FILE)
    passages = [(where, rec) for where, rec in json_records(data_path)]
    concepts = [line.strip() for line in read_text(concepts_path).splitlines()]
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
        annotations = string_list(data_path, where, "annotation", get_field(data_path, where, rec, "annotation", list))
        sentences = string_list(
            data_path, where, "gpt3_sentences", get_field(data_path, where, rec, "gpt3_sentences", list), strip=False
        )
        wiki = get_field(data_path, where, rec, "wiki_bio_text", str)
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
    webtext_path, upstream = _webtext_upstream(root)
    files = {"passages": str(data_path), "concepts": str(concepts_path), "upstream": str(webtext_path)}
    return TaskData("hallucination", "hallucination", edits, upstream, accurate, None, originals, files=files)

