"""Where the benchmark data lives, and what to say when a file is missing.

The data directory is ``--data-dir`` / ``resolve_data_dir(path)``, else ``$MELO_DATA_DIR``, else
``../shared/data`` (see :func:`resolve_data_dir`). Its layout::

    zsre/zsre_mend_edit.json                      (or zsre/structured_zeroshot-dev-new_annotated_final.jsonl)
    nq/NQ-open.dev.jsonl                          (or nq/nq_train.json)
    classification/scotus_summaries.json
    hallucination/wiki_bio_gpt3_hallucination.json
    hallucination/wiki_bio_concepts.txt
    webtext/webtext.test.jsonl
    counterfact/counterfact-train.json
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import MeloDataError

ZSRE_FILES = ("zsre/zsre_mend_edit.json", "zsre/structured_zeroshot-dev-new_annotated_final.jsonl")
NQ_FILES = ("nq/NQ-open.dev.jsonl", "nq/nq_train.json")
SCOTUS_FILE = "classification/scotus_summaries.json"
HALLUCINATION_FILE = "hallucination/wiki_bio_gpt3_hallucination.json"
CONCEPTS_FILE = "hallucination/wiki_bio_concepts.txt"
WEBTEXT_FILE = "webtext/webtext.test.jsonl"
COUNTERFACT_FILE = "counterfact/counterfact-train.json"
SCOTUS_HUB = "tomh/grace-scotus"
_LAYOUT = (ZSRE_FILES[0], NQ_FILES[0], SCOTUS_FILE, HALLUCINATION_FILE, CONCEPTS_FILE, WEBTEXT_FILE, COUNTERFACT_FILE)

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
    "counterfact-train.json": (
        COUNTERFACT_FILE,
        "CounterFact (kmeng01/rome) in EasyEdit's flat format (fields case_id, prompt, subject, target_new, "
        "ground_truth, rephrase_prompt, locality_prompt, locality_ground_truth) as a JSON list, e.g. the "
        "training split of EasyEdit's CounterFact release",
    ),
    "webtext.test.jsonl": (
        WEBTEXT_FILE,
        'GPT-2 WebText excerpts as JSON lines {"text"} (webtext.test.jsonl of openai/gpt-2-output-dataset, '
        "or the Hugging Face dataset 'stas/openwebtext-10k' written as {\"text\"} lines)",
    ),
}



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


def missing_file(path: Path) -> MeloDataError:
    rel, description = _SOURCES.get(path.name, (path.name, None))
    if description is None:
        return MeloDataError(f"data file {str(path)!r} does not exist")
    return MeloDataError(
        f"data file {str(path)!r} does not exist. Download {description}, and put it at {rel} "
        "under the data directory (chosen with --data-dir or MELO_DATA_DIR, default ../shared/data)"
    )


def require_file(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise missing_file(path)
    return path


def first_file(data_dir: Path, candidates: tuple[str, ...]) -> Path:
    for rel in candidates:
        if (data_dir / rel).is_file():
            return data_dir / rel
    raise missing_file(data_dir / candidates[0])

