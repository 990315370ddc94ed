"""Benchmark data loaders on small files written here (never the shared data)."""

import csv
import json
import logging
import sys

import pytest

from melo import data
from melo.data import MeloDataError, Record, TaskData, locate
from melo.errors import MeloError

MEND = [
    {
        "subject": "Toodyay Fire Station",
        "src": "What architect designed Toodyay Fire Station?",
        "pred": "Frank",
        "rephrase": "Who's the architect at Toodyay Fire Station?",
        "alt": "Wyndham Lewis",
        "answers": ["Ken Duncan"],
        "loc": "nq question: who sang the song in the movie",
        "loc_ans": "Somebody",
        "cond": "x",
        "portability": {},
    },
    {
        "subject": "Toodyay Fire Station",
        "src": "Who is the architect of Toodyay Fire Station?",
        "rephrase": "Who was behind the establishment of Toodyay Fire Station?",
        "alt": " Kohn Pedersen Fox",
        "answers": ["Ken Duncan", "K. Duncan"],
        "loc": "nq question: where is the eiffel tower",
        "loc_ans": "Paris",
    },
    {
        "subject": "Lola Beeth",
        "src": "What voice type is Lola Beeth?",
        "rephrase": "What sort of voice is Lola Beeth?",
        "alt": "mezzo-soprano",
        "answers": ["soprano"],
        "loc": "nq question: when did the moon landing happen",
        "loc_ans": "1969",
    },
]

GRACE_ZSRE = [
    {
        "input": "Which country is Bolton Wanderers F.C. in?",
        "prediction": "France",
        "alternatives": ["Spain", "Italy"],
        "filtered_rephrases": ["In which country is Bolton Wanderers F.C.?",
                               "Bolton Wanderers F.C. is in which country?"],
        "output": [{"answer": "England", "provenance": []}, {"answer": "United Kingdom"}],
    },
    {
        "input": "What is the native language of Ada?",
        "prediction": "German",
        "alternatives": ["Dutch"],
        "filtered_rephrases": [],
        "output": [{"answer": "English"}],
    },
]


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------- zsRE


def test_mend_zsre_answer_targets(tmp_path):
    records = data.load_zsre(write_json(tmp_path / "zsre.json", MEND))
    assert records[0] == Record(
        prompt="What architect designed Toodyay Fire Station?",
        target="Ken Duncan",
        rephrases=["Who's the architect at Toodyay Fire Station?"],
        fact="Toodyay Fire Station||Ken Duncan",
        answers=["Ken Duncan"],
        locality_prompt="who sang the song in the movie",
        locality_answer="Somebody",
        subject="Toodyay Fire Station",
    )
    assert records[1].answers == ["Ken Duncan", "K. Duncan"]
    assert records[1].locality_prompt == "where is the eiffel tower"
    assert [r.fact for r in records] == ["Toodyay Fire Station||Ken Duncan"] * 2 + ["Lola Beeth||soprano"]


def test_mend_zsre_alt_targets_keep_the_fact(tmp_path):
    records = data.load_zsre(write_json(tmp_path / "zsre.json", MEND), target="alt")
    assert [r.target for r in records] == ["Wyndham Lewis", "Kohn Pedersen Fox", "mezzo-soprano"]  # stripped
    assert [r.answers for r in records] == [["Wyndham Lewis"], ["Kohn Pedersen Fox"], ["mezzo-soprano"]]
    assert records[0].fact == records[1].fact == "Toodyay Fire Station||Ken Duncan"


def test_zsre_limit_and_bad_target(tmp_path):
    path = write_json(tmp_path / "zsre.json", MEND)
    assert [r.prompt for r in data.load_zsre(path, limit=2)] == [MEND[0]["src"], MEND[1]["src"]]
    with pytest.raises(MeloDataError, match="'counterfactual' is neither 'answer'"):
        data.load_zsre(path, target="counterfactual")


def test_grace_zsre_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "structured_zeroshot-dev-new_annotated_final.jsonl", GRACE_ZSRE)
    first, second = data.load_zsre(path)
    assert first == Record(
        prompt="Which country is Bolton Wanderers F.C. in?",
        target="England",
        rephrases=GRACE_ZSRE[0]["filtered_rephrases"],
        fact="Which country is Bolton Wanderers F.C. in?||England",
        answers=["England", "United Kingdom"],
    )
    assert second.rephrases == [] and second.target == "English"
    alt = data.load_zsre(path, target="alt")
    assert [r.target for r in alt] == ["Spain", "Dutch"]
    assert alt[0].answers == ["Spain"]


def test_zsre_record_of_neither_format(tmp_path):
    path = write_jsonl(tmp_path / "z.jsonl", [GRACE_ZSRE[0], {"question": "q", "answer": ["a"]}])
    with pytest.raises(MeloDataError,
                       match=r"z\.jsonl: line 2: not a zsRE record: needs field 'src'.*has question, answer"):
        data.load_zsre(path)


def test_zsre_missing_field_names_file_record_and_field(tmp_path):
    broken = [dict(MEND[0]), dict(MEND[1])]
    del broken[1]["answers"]
    with pytest.raises(MeloDataError, match=r"zsre\.json: record 1: missing field 'answers'"):
        data.load_zsre(write_json(tmp_path / "zsre.json", broken))
    no_alt = [{k: v for k, v in MEND[0].items() if k != "alt"}]
    with pytest.raises(MeloDataError, match="record 0: missing field 'alt'"):
        data.load_zsre(write_json(tmp_path / "z2.json", no_alt), target="alt")


# ------------------------------------------------------------------------------------------ NQ


def test_nq_open_jsonl_shortest_answer(tmp_path):
    path = write_jsonl(
        tmp_path / "NQ-open.dev.jsonl",
        [
            {"question": "when was the last time anyone was on the moon",
             "answer": ["14 December 1972 UTC", "December 1972"]},
            {"question": "who wrote the lyrics", "answer": ["Bob", "Tom", "Bobby Scott"]},
            {"question": "how many seasons", "answer": "one"},
        ],
    )
    records = data.load_nq(path)
    assert [r.target for r in records] == ["December 1972", "Bob", "one"]  # shortest, first of equals
    assert records[0].answers == ["14 December 1972 UTC", "December 1972"]
    assert records[1].prompt == "who wrote the lyrics" and records[1].rephrases == [] and records[1].fact is None
    assert len(data.load_nq(path, limit=2)) == 2


def test_grace_nq_json(tmp_path):
    path = write_json(
        tmp_path / "nq_train.json",
        {"questions": ["who is the president", "where is rome"], "answers": ["Joe", ["Italy", "Lazio, Italy"]]},
    )
    records = data.load_nq(path)
    assert [(r.prompt, r.target, r.answers) for r in records] == [
        ("who is the president", "Joe", ["Joe"]),
        ("where is rome", "Italy", ["Italy", "Lazio, Italy"]),
    ]
    assert len(data.load_nq(path, limit=1)) == 1
    bad = write_json(tmp_path / "bad.json", {"questions": ["a", "b"], "answers": ["x"]})
    with pytest.raises(MeloDataError, match=r"'questions' \(2\) and 'answers' \(1\) differ"):
        data.load_nq(bad)


def test_nq_missing_field_has_line_number(tmp_path):
    path = tmp_path / "nq.jsonl"
    path.write_text('{"question": "a", "answer": ["b"]}\n\n{"query": "c", "answer": ["d"]}\n')
    with pytest.raises(MeloDataError, match=r"nq\.jsonl: line 3: missing field 'question' \(fields: query, answer\)"):
        data.load_nq(path)
    path.write_text('{"question": "a", "answer": ["b"]}\n{"question": "c", "answer": [\n')
    with pytest.raises(MeloDataError, match=r"nq\.jsonl: line 2: invalid JSON"):
        data.load_nq(path)


# ------------------------------------------------------------------------------ classification

ROWS = [
    {"text": "alpha case", "label": "Crime", "term": 2001},
    {"text": "beta case", "label": "Civil", "term": 2002},
    {"text": "alpha case", "label": "Crime", "term": 2003},  # repeat: dropped, first kept
    {"text": "gamma case", "label": "Other", "term": 2010},
    {"text": "delta case", "label": "Crime", "term": 2008},  # conflicting label below: dropped everywhere
    {"text": "delta case", "label": "Civil", "term": 2008},
    {"text": "epsilon case", "label": "Civil", "term": 2012},
]
EXPECTED_UPSTREAM = [Record("alpha case", 1), Record("beta case", 0)]
EXPECTED_EDITS = [Record("gamma case", 2), Record("epsilon case", 0)]


def write_csv(path, rows):
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_classification_formats_split_and_dedupe(tmp_path, fmt, caplog):
    path = tmp_path / f"cases.{fmt}"
    {"json": write_json, "jsonl": write_jsonl, "csv": write_csv}[fmt](path, ROWS)
    with caplog.at_level(logging.WARNING, logger="melo.data.classification"):
        upstream, edits, names = data.load_classification(path, "text", "label", "term", 2009)
    assert names == ["Civil", "Crime", "Other"]
    assert upstream == EXPECTED_UPSTREAM
    assert edits == EXPECTED_EDITS
    assert "removed 1 rows whose 'text' repeats an earlier row" in caplog.text
    assert "dropped 1 texts (2 rows) that occur with conflicting labels" in caplog.text


def test_classification_without_dedupe_and_int_labels(tmp_path):
    rows = [{"t": "x", "y": 2, "s": "a"}, {"t": "x", "y": 0, "s": "b"}, {"t": "z", "y": 0, "s": "c"}]
    upstream, edits, names = data.load_classification(write_json(tmp_path / "c.json", rows), "t", "y", "s", "b",
                                                      dedupe=False)
    assert upstream == [Record("x", 2), Record("x", 0)]  # string split values compare as strings
    assert edits == [Record("z", 0)]
    assert names == ["0", "1", "2"]


def test_classification_csv_digit_labels_are_ids(tmp_path):
    path = write_csv(tmp_path / "c.csv", [{"t": "a", "y": "3", "s": "1999"}, {"t": "b", "y": "1", "s": "2011"}])
    upstream, edits, names = data.load_classification(path, "t", "y", "s", 2000)
    assert upstream == [Record("a", 3)] and edits == [Record("b", 1)]
    assert names == ["0", "1", "2", "3"]


def test_classification_missing_fields(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("t,y,s\na,Crime,2001\nb,,2002\n")
    with pytest.raises(MeloDataError, match=r"c\.csv: line 3: field 'y' is empty"):
        data.load_classification(path, "t", "y", "s", 2009)
    with pytest.raises(MeloDataError, match=r"c\.csv: line 2: missing field 'term' \(fields: t, y, s\)"):
        data.load_classification(path, "t", "y", "term", 2009)
    rows = [{"text": "a", "label": "x", "term": 1}, {"text": "b", "term": 2}]
    with pytest.raises(MeloDataError, match=r"c\.jsonl: line 2: missing field 'label'"):
        data.load_classification(write_jsonl(tmp_path / "c.jsonl", rows), "text", "label", "term", 1)


SCOTUS_ROWS = [
    {"opinion_summary": "a habeas case", "issue": "CriminalProcedure", "issue_id": 1, "term": 2000},
    {"opinion_summary": "a tax case", "issue": "EconomicActivity", "issue_id": 3, "term": 2009},
    {"opinion_summary": "a speech case", "issue": "CivilRights", "issue_id": 2, "term": 2010},
    {"opinion_summary": "a speech case", "issue": "CivilRights", "issue_id": 2, "term": 2010},
]


def test_scotus_local_stand_in(tmp_path):
    write_json(tmp_path / "classification" / "scotus_summaries.json", SCOTUS_ROWS)
    task = data.load_scotus(tmp_path)
    assert task == TaskData(
        name="scotus",
        kind="classification",
        edits=[Record("a speech case", 0)],
        upstream=[Record("a habeas case", 1), Record("a tax case", 2)],
        label_names=["CivilRights", "CriminalProcedure", "EconomicActivity"],
    )


def test_scotus_hub_needs_datasets(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(MeloDataError, match="scotus_summaries.json' does not exist.*'datasets' package"):
        data.load_scotus(tmp_path)  # auto: no local file, then the hub
    with pytest.raises(MeloDataError, match="tomh/grace-scotus' needs the 'datasets' package"):
        data.load_scotus(tmp_path, source="hub")
    with pytest.raises(MeloDataError, match="classification/scotus_summaries.json under the data directory"):
        data.load_scotus(tmp_path, source="local")


# ------------------------------------------------------------------------------- hallucination

PASSAGES = [
    {
        "gpt3_text": "unused",
        "wiki_bio_text": "Ada Lovelace was an English mathematician. She worked with Dr. Babbage on the engine.",
        "gpt3_sentences": ["Ada was a poet.", "She lived in Paris.", "She died in 1852."],
        "annotation": ["major_inaccurate", "accurate", "minor_inaccurate"],
        "wiki_bio_test_idx": 1,
        "question": "This is a passage from Wikipedia about ada lovelace",
    },
    {
        "gpt3_text": "unused",
        "wiki_bio_text": "Alan Turing (born 23 June 1912) was a British mathematician. He studied at "
        "King's College, Cambridge. He died in 1954.",
        "gpt3_sentences": ["Turing was born in 1912.", "He studied at Oxford."],
        "annotation": ["accurate", "major_inaccurate"],
        "wiki_bio_test_idx": 2,
        "question": "This is a passage from Wikipedia about alan turing",
    },
]
WEBTEXT = [{"text": "First web text."}, {"text": "Second web text."}, {"text": "Third."}]


def hallucination_dir(tmp_path, jsonl=False):
    if jsonl:
        write_jsonl(tmp_path / "hallucination" / "wiki_bio_gpt3_hallucination.json", PASSAGES)
    else:
        write_json(tmp_path / "hallucination" / "wiki_bio_gpt3_hallucination.json", PASSAGES)
    (tmp_path / "hallucination" / "wiki_bio_concepts.txt").write_text("ada lovelace\nalan turing\n")
    write_jsonl(tmp_path / "webtext" / "webtext.test.jsonl", WEBTEXT)
    return tmp_path


@pytest.mark.parametrize("jsonl", [False, True])
def test_hallucination_as_grace_builds_it(tmp_path, jsonl):
    task = data.load_hallucination(hallucination_dir(tmp_path, jsonl))
    ada, alan = "This is a Wikipedia passage about ada lovelace.", "This is a Wikipedia passage about alan turing."
    assert task.name == task.kind == "hallucination"
    assert task.edits == [
        Record(f"{ada} ", "Ada Lovelace was an English mathematician.", fact="ada lovelace"),
        # index 2 clipped to the last of the two Wikipedia sentences; 'Dr.' does not end a sentence
        Record(f"{ada} Ada was a poet. She lived in Paris.", "She worked with Dr. Babbage on the engine.",
               fact="ada lovelace"),
        Record(f"{alan} Turing was born in 1912.", "He studied at King's College, Cambridge.", fact="alan turing"),
    ]
    assert task.originals == [
        Record(f"{ada} ", "Ada was a poet.", fact="ada lovelace"),
        Record(f"{ada} Ada was a poet. She lived in Paris.", "She died in 1852.", fact="ada lovelace"),
        Record(f"{alan} Turing was born in 1912.", "He studied at Oxford.", fact="alan turing"),
    ]
    assert task.accurate == [
        Record(f"{ada} Ada was a poet.", "She lived in Paris.", fact="ada lovelace"),
        Record(f"{alan} ", "Turing was born in 1912.", fact="alan turing"),
    ]
    assert task.upstream == [Record("", t["text"]) for t in WEBTEXT]
    assert task.label_names is None
    limited = data.load_hallucination(tmp_path, limit=1)
    assert limited.edits == task.edits[:1] and limited.originals == task.originals[:1]
    assert limited.accurate == task.accurate


def test_hallucination_concepts_must_match_passages(tmp_path):
    hallucination_dir(tmp_path)
    (tmp_path / "hallucination" / "wiki_bio_concepts.txt").write_text("ada lovelace\n")
    with pytest.raises(MeloDataError, match="has 1 concepts but .* has 2 passages"):
        data.load_hallucination(tmp_path)


def test_hallucination_missing_files(tmp_path):
    hallucination_dir(tmp_path)
    (tmp_path / "hallucination" / "wiki_bio_concepts.txt").unlink()
    with pytest.raises(MeloDataError) as info:
        data.load_hallucination(tmp_path)
    message = str(info.value)
    assert "wiki_bio_concepts.txt' does not exist" in message
    assert "GRACE" in message and "put it at hallucination/wiki_bio_concepts.txt under the data directory" in message
    (tmp_path / "hallucination" / "wiki_bio_gpt3_hallucination.json").unlink()
    with pytest.raises(MeloDataError, match="potsawee/wiki_bio_gpt3_hallucination"):
        data.load_hallucination(tmp_path)


def test_hallucination_missing_field(tmp_path):
    hallucination_dir(tmp_path)
    broken = [PASSAGES[0], {k: v for k, v in PASSAGES[1].items() if k != "wiki_bio_text"}]
    write_json(tmp_path / "hallucination" / "wiki_bio_gpt3_hallucination.json", broken)
    with pytest.raises(MeloDataError,
                       match=r"wiki_bio_gpt3_hallucination\.json: record 1: missing field 'wiki_bio_text'"):
        data.load_hallucination(tmp_path)


def test_webtext(tmp_path):
    path = write_jsonl(tmp_path / "w.jsonl", WEBTEXT)
    assert data.load_webtext(path) == ["First web text.", "Second web text.", "Third."]
    assert data.load_webtext(path, limit=2) == ["First web text.", "Second web text."]
    write_jsonl(path, [{"text": "a"}, {"body": "b"}])
    with pytest.raises(MeloDataError, match=r"w\.jsonl: line 2: missing field 'text'"):
        data.load_webtext(path)


@pytest.mark.parametrize(
    "text, sentences",
    [
        ("Dr. Smith went home. He slept.", ["Dr. Smith went home.", "He slept."]),
        ("He moved to St. Louis in 1990. He died there.", ["He moved to St. Louis in 1990.", "He died there."]),
        ("He served in the U.S. Army for two years.", ["He served in the U.S. Army for two years."]),
        ("Written by J. R. R. Tolkien. It sold well.", ["Written by J. R. R. Tolkien.", "It sold well."]),
        ("He fought in World War I. He survived.", ["He fought in World War I.", "He survived."]),
        ('She said "Go home." Then she left.', ['She said "Go home."', "Then she left."]),
        ("It was born in 1975. it rained.", ["It was born in 1975. it rained."]),  # number, lower case: no break
        ("Is it? Yes! Sure.", ["Is it?", "Yes!", "Sure."]),
        ("Wait... Then go.", ["Wait... Then go."]),
        ("Lucy (b. 1975) acts.", ["Lucy (b.", "1975) acts."]),  # nltk splits here too
        ("He attended St. Bees School.", ["He attended St.", "Bees School."]),  # as nltk's English model
        ("Ends without a stop", ["Ends without a stop"]),
        ("", []),
    ],
)
def test_split_sentences_as_nltk(text, sentences):
    assert data.split_sentences(text) == sentences


# ------------------------------------------------------------------------------ data directory


def test_resolve_data_dir_precedence(tmp_path, monkeypatch):
    given, env, shared = tmp_path / "given", tmp_path / "env", tmp_path / "shared" / "data"
    for d in (given, env, shared, tmp_path / "work"):
        d.mkdir(parents=True)
    monkeypatch.setattr(locate, "_repo_root", lambda: None)
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("MELO_DATA_DIR", str(env))
    assert data.resolve_data_dir(given) == given.resolve()
    assert data.resolve_data_dir(str(given)) == given.resolve()
    assert data.resolve_data_dir() == env.resolve()
    monkeypatch.delenv("MELO_DATA_DIR")
    assert data.resolve_data_dir() == shared.resolve()  # ../shared/data from the working directory
    monkeypatch.setenv("MELO_DATA_DIR", "")  # empty means unset
    assert data.resolve_data_dir() == shared.resolve()


def test_resolve_data_dir_falls_back_to_the_repository(tmp_path, monkeypatch):
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "repo").mkdir()
    (tmp_path / "elsewhere" / "deep").mkdir(parents=True)
    monkeypatch.delenv("MELO_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path / "elsewhere" / "deep")
    monkeypatch.setattr(locate, "_repo_root", lambda: tmp_path / "repo")
    assert data.resolve_data_dir() == (tmp_path / "shared" / "data").resolve()


def test_resolve_data_dir_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(locate, "_repo_root", lambda: tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MELO_DATA_DIR", raising=False)
    with pytest.raises(MeloDataError, match="pass --data-dir DIR .* or set MELO_DATA_DIR.*tried") as info:
        data.resolve_data_dir()
    assert isinstance(info.value, MeloError)
    monkeypatch.setenv("MELO_DATA_DIR", str(tmp_path / "nope"))
    with pytest.raises(MeloDataError, match="MELO_DATA_DIR .*nope' is not a directory"):
        data.resolve_data_dir()
    with pytest.raises(MeloDataError, match="the data directory given .*missing' is not a directory"):
        data.resolve_data_dir(tmp_path / "missing")


# ------------------------------------------------------------------------------------ load_task


def full_data_dir(tmp_path):
    write_json(tmp_path / "zsre" / "zsre_mend_edit.json", MEND)
    write_jsonl(tmp_path / "nq" / "NQ-open.dev.jsonl",
                [{"question": "q1", "answer": ["a1"]}, {"question": "q2", "answer": ["a2"]}])
    write_json(tmp_path / "classification" / "scotus_summaries.json", SCOTUS_ROWS)
    return hallucination_dir(tmp_path)


def test_load_task_each_task(tmp_path):
    root = full_data_dir(tmp_path)
    zsre = data.load_task("zsre", root, n_edits=2)
    assert (zsre.name, zsre.kind, len(zsre.edits), len(zsre.upstream)) == ("zsre", "qa", 2, 2)
    assert zsre.upstream[1] == Record("q2", "a2", answers=["a2"])
    assert [r.target for r in data.load_task("zsre", root, target="alt").edits] == [
        "Wyndham Lewis", "Kohn Pedersen Fox", "mezzo-soprano"]
    assert data.load_task("scotus", root, target="alt") == data.load_task("scotus", root)  # one target only
    scotus = data.load_task("scotus", root, n_edits=0)
    assert (scotus.kind, scotus.edits, len(scotus.upstream)) == ("classification", [], 2)
    hall = data.load_task("hallucination", root, n_edits=2)
    assert (hall.kind, len(hall.edits), len(hall.accurate), len(hall.upstream)) == ("hallucination", 2, 2, 3)


def test_load_task_grace_files_and_errors(tmp_path, monkeypatch):
    write_jsonl(tmp_path / "zsre" / "structured_zeroshot-dev-new_annotated_final.jsonl", GRACE_ZSRE)
    with pytest.raises(MeloDataError) as info:
        data.load_task("zsre", tmp_path)
    message = str(info.value)
    assert "NQ-open.dev.jsonl' does not exist" in message and "nq_open" in message
    assert "put it at nq/NQ-open.dev.jsonl under the data directory" in message
    write_json(tmp_path / "nq" / "nq_train.json", {"questions": ["q"], "answers": ["a"]})
    task = data.load_task("zsre", tmp_path)
    assert [r.target for r in task.edits] == ["England", "English"] \
        and task.upstream == [Record("q", "a", answers=["a"])]
    with pytest.raises(MeloDataError, match="unknown task 'mnist'; the tasks are zsre, counterfact, scotus, halluc"):
        data.load_task("mnist", tmp_path)
    with pytest.raises(MeloDataError, match="target 'wrong' is neither 'answer'"):
        data.load_task("scotus", tmp_path, target="wrong")


def test_missing_zsre_file_says_what_to_download(tmp_path):
    with pytest.raises(MeloDataError) as info:
        data.load_task("zsre", tmp_path)
    message = str(info.value)
    assert "zsre_mend_edit.json' does not exist" in message
    assert "MEND format" in message and "put it at zsre/zsre_mend_edit.json under the data directory" in message
    assert "MELO_DATA_DIR" in message
    with pytest.raises(MeloDataError, match="other.json' does not exist"):
        data.load_zsre(tmp_path / "other.json")


# ------------------------------------------------------------------------------------ CounterFact

COUNTERFACT = [
    {"case_id": 2, "prompt": "Toko Yasuda, the", "target_new": "piano", "subject": "Toko Yasuda",
     "ground_truth": "guitar", "rephrase_prompt": "Toko Yasuda is incredible at",
     "locality_prompt": "John Lennon performs on the", "locality_ground_truth": "guitar"},
    {"case_id": 3, "prompt": " Autonomous University of Madrid, which is located in ", "target_new": "Sweden",
     "subject": "Autonomous University of Madrid", "ground_truth": "Spain",
     "rephrase_prompt": "Autonomous University of Madrid is located in",
     "locality_prompt": "Biure, which is located in", "locality_ground_truth": "Spain"},
]


def test_counterfact_records(tmp_path):
    path = write_json(tmp_path / "cf.json", COUNTERFACT)
    records = data.load_counterfact(path)
    assert records[0] == Record("Toko Yasuda, the", "piano", ["Toko Yasuda is incredible at"], "Toko Yasuda||guitar",
                                ["piano"], "John Lennon performs on the", "guitar", "Toko Yasuda", "guitar")
    assert records[1].prompt == "Autonomous University of Madrid, which is located in"
    assert len(data.load_counterfact(path, limit=1)) == 1
    no_subject = {k: v for k, v in COUNTERFACT[1].items() if k != "subject"}
    bad = write_json(tmp_path / "bad.json", [COUNTERFACT[0], no_subject])
    with pytest.raises(MeloDataError, match=r"bad\.json: record 1: missing field 'subject'"):
        data.load_counterfact(bad)


def test_restated_neighbourhood_prompts_name_an_edited_subject_and_its_true_object():
    def case(subject, truth, loc, loc_answer):
        return Record(f"{subject} works for", "IBM", subject=subject, truth=truth, locality_prompt=loc,
                      locality_answer=loc_answer)

    records = [case("Alistair Cooke", "BBC", "Jim Lehrer works for", "PBS"),
               case("Jim Lehrer", "PBS", "alistair cooke works for", "BBC"),  # case 0 rewrote that fact
               case("Ann Cooke", "CNN", "Alistair Cookes works for", "BBC"),  # not the whole name
               case("Mo Li", "ABC", "Jim Lehrer, who works for", "NBC"),  # names case 1, another object
               case("Ed Roe", "CBS", " ann cooke works for ", "NBC"),  # word for word case 2's prompt
               case("Al Fox", "NPR", "Al Fox works for", "NBC")]  # its own prompt
    records[3].rephrases = ["Mo Li is employed by"]
    records[0].locality_prompt = "MO LI IS EMPLOYED BY"  # case 3's paraphrase
    assert data.counterfact.restated_by(records) == [3, 0, None, None, 2, 5]


def test_load_task_counterfact_from_the_data_dir_or_a_file(tmp_path):
    root = full_data_dir(tmp_path)
    with pytest.raises(MeloDataError, match="counterfact-train.json' does not exist.*kmeng01/rome"):
        data.load_task("counterfact", root)
    write_json(root / "counterfact" / "counterfact-train.json", COUNTERFACT)
    task = data.load_task("counterfact", root, n_edits=1)
    assert (task.name, task.kind, len(task.upstream)) == ("counterfact", "qa", 2)
    assert [r.target for r in task.edits] == ["piano"]
    own = write_json(tmp_path / "mine.json", COUNTERFACT[1:])
    assert [r.target for r in data.load_task("counterfact", root, edits_file=own).edits] == ["Sweden"]
