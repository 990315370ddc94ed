"""The user's own data files for `melo bench`: classification rows with a split field, hallucination edit rows,
option checks, and what a run's config.json records of them."""

import csv
import dataclasses
import hashlib
import json

import pytest
from conftest import make_word_tokenizer
from transformers import BertConfig

from melo import MeloConfigError, MeloDataError
from melo.bench import presets
from melo.bench.run import run_bench
from melo.cli import main
from melo.data import ClassificationFields, Record, classification_task, load_hallucination_edits, load_task
from melo.standins import scotus

ROWS = [
    {"opinion": "the dog is big", "issue": "Tax", "term": 2001, "split": "train"},
    {"opinion": "the cat is small", "issue": "Crime", "term": 2005, "split": "train"},
    {"opinion": "the sky is blue", "issue": "Speech", "term": 2009, "split": "train"},
    {"opinion": "the sun is hot", "issue": "Crime", "term": 2011, "split": "edit"},
    {"opinion": "the moon is white", "issue": "Speech", "term": 2012, "split": "edit"},
    {"opinion": "the king of england", "issue": "Tax", "term": 2015, "split": "edit"},
]
FIELDS = ClassificationFields("opinion", "issue", "split")


def write(path, rows):
    if path.suffix == ".csv":
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(json.dumps(rows))
    return path


def fails(argv, capsys, *needles):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


# ------------------------------------------------------------------------------ classification


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv"])
def test_classification_file_round_trip(tmp_path, suffix):
    path = write(tmp_path / f"cases{suffix}", ROWS)
    task = classification_task(path, FIELDS)
    assert task.label_names == ["Crime", "Speech", "Tax"]  # sorted names -> ids 0, 1, 2
    assert task.upstream == [Record("the dog is big", 2), Record("the cat is small", 0), Record("the sky is blue", 1)]
    assert task.edits == [Record("the sun is hot", 0), Record("the moon is white", 1),
                          Record("the king of england", 2)]
    assert (task.name, task.kind, task.files) == (path.name, "classification", {"data": str(path)})
    assert task.options == {"text_field": "opinion", "label_field": "issue", "split_field": "split",
                            "edit_split": "edit", "edit_after": None, "dedupe": True}


def test_classification_split_by_threshold_and_integer_labels(tmp_path):
    rows = [dict(r, issue=i % 2) for i, r in enumerate(ROWS)]
    path = write(tmp_path / "cases.csv", rows)  # CSV: the term and the labels are text
    task = load_task("scotus", data_file=path, fields=ClassificationFields("opinion", "issue", "term",
                                                                           edit_after="2010"), n_edits=2)
    assert task.label_names == ["0", "1"] and [r.target for r in task.upstream] == [0, 1, 0]
    assert [r.prompt for r in task.edits] == ["the sun is hot", "the moon is white"]  # n_edits: the first two
    assert task.options["edit_after"] == "2010"


def test_default_fields(tmp_path):
    rows = [{"text": "a", "label": "x", "split": "upstream"}, {"text": "b", "label": "x", "split": "edit"}]
    task = classification_task(write(tmp_path / "plain.jsonl", rows))
    assert task.upstream == [Record("a", 0)] and task.edits == [Record("b", 0)]


@pytest.mark.parametrize("fields,rows,needles", [
    (ClassificationFields("text", "issue", "split"), ROWS, ("record 0", "missing field 'text'", "opinion")),
    (ClassificationFields("opinion", "issue", "split", edit_split="test"), ROWS,
     ("no row is an edit", "'split' equal to 'test'", "'edit', 'train'")),
    (ClassificationFields("opinion", "issue", "term", edit_after=1999), ROWS,
     ("every row is an edit", "greater than 1999", "none is left upstream")),
    (FIELDS, [dict(r, issue="Speach") if r["term"] == 2012 else r for r in ROWS],
     ("label 'Speach' of 'issue' occurs in edit rows but in no upstream row", "spelling")),
    (FIELDS, ROWS[:3] + [dict(ROWS[0], split="edit")], ("all 1 edit rows", "repeated or conflicting")),
])
def test_classification_file_errors(tmp_path, fields, rows, needles):
    path = write(tmp_path / "cases.json", rows)
    with pytest.raises(MeloDataError) as info:
        classification_task(path, fields)
    assert str(path) in str(info.value)
    for needle in needles:
        assert needle in str(info.value), str(info.value)


def test_classification_fields_are_checked():
    with pytest.raises(MeloDataError, match="edit_split .* or edit_after .*not both"):
        ClassificationFields(edit_split="edit", edit_after=2009)
    with pytest.raises(MeloDataError, match="text_field should name a field"):
        ClassificationFields(text_field=" ")


# ------------------------------------------------------------------------------- hallucination


def test_hallucination_edits_file(tmp_path):
    (tmp_path / "webtext").mkdir()
    (tmp_path / "webtext" / "webtext.test.jsonl").write_text('{"text": "the dog is big"}\n')
    rows = [{"prompt": "This is about Ada.", "target": "Ada was a mathematician."},
            {"prompt": "This is about Ada. Ada was a poet.", "target": "She lived in London.", "accurate": True},
            {"prompt": "This is about Alan.", "target": "Alan was born in 1912.", "accurate": False}]
    path = write(tmp_path / "mine.jsonl", rows)
    task = load_task("hallucination", tmp_path, edits_file=path)
    assert [r.target for r in task.edits] == ["Ada was a mathematician.", "Alan was born in 1912."]
    assert task.accurate == [Record("This is about Ada. Ada was a poet.", "She lived in London.")]
    assert task.upstream == [Record("", "the dog is big")] and task.originals == []
    assert task.files == {"edits": str(path), "upstream": str(tmp_path / "webtext" / "webtext.test.jsonl")}
    csv_path = write(tmp_path / "mine.csv", [dict(r, accurate=str(r.get("accurate", ""))) for r in rows])
    assert load_hallucination_edits(csv_path) == (task.edits, task.accurate)


@pytest.mark.parametrize("rows,needles", [
    ([{"prompt": "p", "target": "t", "accurate": "maybe"}], ("line 1", "'accurate'", "true or false")),
    ([{"prompt": "p"}], ("line 1", "missing field 'target'")),
    ([{"prompt": "p", "target": "t", "accurate": True}], ("no edits",)),
])
def test_hallucination_edits_file_errors(tmp_path, rows, needles):
    path = write(tmp_path / "mine.jsonl", rows)
    with pytest.raises(MeloDataError) as info:
        load_hallucination_edits(path)
    for needle in needles:
        assert needle in str(info.value), str(info.value)


def test_files_that_do_not_fit_the_task(tmp_path):
    path = write(tmp_path / "cases.json", ROWS)
    with pytest.raises(MeloDataError, match="an edits file replaces the edits of zsre, counterfact or hallucination"):
        load_task("scotus", tmp_path, edits_file=path)
    with pytest.raises(MeloDataError, match="data file of labelled texts is for classification"):
        load_task("zsre", tmp_path, data_file=path)
    with pytest.raises(MeloDataError, match="fields only apply to a data file"):
        load_task("scotus", tmp_path, fields=FIELDS)


def test_load_task_reads_a_users_zsre_file(tmp_path):
    record = {"src": "Who wrote Hamlet?", "answers": ["Shakespeare"], "alt": "Tolstoy", "rephrase": "Hamlet's author?",
              "loc": "nq question: where is paris", "loc_ans": "France", "subject": "Hamlet"}
    path = tmp_path / "mine.json"
    path.write_text(json.dumps([record]))
    (tmp_path / "nq").mkdir()
    (tmp_path / "nq" / "NQ-open.dev.jsonl").write_text(json.dumps({"question": "who is it", "answer": ["me"]}) + "\n")
    task = load_task("zsre", tmp_path, target="alt", edits_file=path)  # upstream NQ from the data dir
    rows = [(r.prompt, r.target, r.locality_answer) for r in task.edits]
    assert rows == [("Who wrote Hamlet?", "Tolstoy", "France")]


# ------------------------------------------------------------------------------- command line


@pytest.mark.parametrize("argv,needles", [
    (["--preset", "minilm-qa", "--data-file", "F"], ("--data-file", "classification presets", "minilm-scotus",
                                                     "'minilm-qa' is a zsre preset", "--edits-file")),
    (["--preset", "minilm-scotus", "--text-field", "opinion"], ("--text-field", "give the file")),
    (["--preset", "minilm-scotus", "--edits-file", "F"], ("--edits-file", "'minilm-scotus'", "--data-file")),
    (["--preset", "minilm-scotus", "--data-file", "F", "--edit-split", "x", "--edit-after", "1"],
     ("--edit-after", "not allowed with", "--edit-split")),
    (["--preset", "minilm-scotus", "--data-file", "missing.csv"], ("--data-file", "missing.csv", "is not a file")),
])
def test_bad_data_options_exit_2_before_any_work(tmp_path, monkeypatch, capsys, argv, needles):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "F").write_text("[]")
    monkeypatch.setattr("melo.bench.run.load_task", lambda *a, **k: pytest.fail("loaded benchmark data"))
    fails(["bench", *argv, "--out", str(tmp_path / "out")], capsys, *needles)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ run_bench end to end


def tiny_config() -> BertConfig:
    return BertConfig(vocab_size=len(make_word_tokenizer()), hidden_size=32, num_hidden_layers=6,
                      num_attention_heads=2, intermediate_size=64, max_position_embeddings=64, pad_token_id=0)


@pytest.fixture
def tiny_scotus_preset(monkeypatch):
    """minilm-scotus with a tiny 6-layer BERT built for the task's labels instead of the stand-in."""
    seen = {}

    def load(data_dir, data, n_labels=None):
        seen.update(data_dir=data_dir, data=data)
        model = scotus.build_model(n_labels or len(data.label_names), config=tiny_config())
        return model.eval(), make_word_tokenizer()

    preset = presets.BENCH_PRESETS["minilm-scotus"]
    monkeypatch.setitem(presets.BENCH_PRESETS, "minilm-scotus", dataclasses.replace(preset, load_model=load))
    return seen, load


def test_run_bench_with_a_classification_file(tmp_path, tiny_scotus_preset, monkeypatch):
    seen, _ = tiny_scotus_preset
    monkeypatch.delenv("MELO_DATA_DIR", raising=False)
    path = write(tmp_path / "cases.csv", ROWS)
    out = run_bench("minilm-scotus", data_file=path, fields=FIELDS, out=tmp_path / "run", progress=False,
                    melo_overrides={"num_iter": 2})
    assert seen["data_dir"] is None and seen["data"].label_names == ["Crime", "Speech", "Tax"]  # no data dir needed
    config = json.loads((out / "config.json").read_text())
    assert config["data_file"] == str(path) and config["data_dir"] is None
    assert config["data"]["files"] == {"data": {"path": str(path), "bytes": path.stat().st_size,
                                                "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}}
    assert config["data"]["label_names"] == ["Crime", "Speech", "Tax"]
    assert config["data"]["options"]["text_field"] == "opinion" and config["data"]["n_upstream"] == 3
    assert json.loads((out / "summary.json").read_text())["preset"] == "minilm-scotus"


def test_run_bench_model_with_too_few_classes(tmp_path, tiny_scotus_preset, monkeypatch):
    seen, load = tiny_scotus_preset
    preset = presets.BENCH_PRESETS["minilm-scotus"]
    two = dataclasses.replace(preset, load_model=lambda data_dir, data: load(data_dir, data, n_labels=2))
    monkeypatch.setitem(presets.BENCH_PRESETS, "minilm-scotus", two)
    with pytest.raises(MeloConfigError, match="the model has 2 classes but the data has 3 labels"):
        run_bench("minilm-scotus", data_file=write(tmp_path / "cases.json", ROWS), fields=FIELDS,
                  out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------ --skip-invalid
GOOD_ZSRE = [{"src": f"who wrote {book}", "answers": [author], "alt": "tolstoy",
              "rephrase": f"who is the author of {book}", "loc": "nq question: where is paris", "loc_ans": "france"}
             for book, author in [("hamlet", "homer"), ("the novel", "dickens"), ("the poem", "austen"),
                                  ("the play", "orwell"), ("the story", "homer"), ("the song", "dickens")]]
BAD_ZSRE = {1: {"src": "who wrote the book", "answers": []},  # record 1
            3: ["not", "an", "object"],  # record 3 (after the first insertion)
            6: {"answers": ["homer"], "alt": "rome"}}  # record 6


def with_bad_records(good: list, bad: dict) -> list:
    rows = list(good)
    for at, row in sorted(bad.items()):
        rows.insert(at, row)
    return rows


def test_skipped_records_are_listed_and_the_rest_loaded_as_if_removed_by_hand(tmp_path):
    data_dir_with_nq(tmp_path)
    dirty = write(tmp_path / "dirty.json", with_bad_records(GOOD_ZSRE, BAD_ZSRE))
    with pytest.raises(MeloDataError, match=r"record 1: field 'answers' is empty"):
        load_task("zsre", tmp_path, edits_file=dirty)
    clean = write(tmp_path / "clean.json", GOOD_ZSRE)
    skipped = load_task("zsre", tmp_path, edits_file=dirty, skip_invalid=True)
    assert skipped == load_task("zsre", tmp_path, edits_file=clean) and len(skipped.edits) == 6
    assert [s["record"] for s in skipped.skipped] == ["record 1", "record 3", "record 6"]
    assert skipped.skipped[0]["reason"] == "field 'answers' is empty"
    assert [s["reason"].split(";")[-1] for s in skipped.skipped[1:]] == [" has list", " has answers, alt"]
    assert len(load_task("zsre", tmp_path, n_edits=2, edits_file=dirty, skip_invalid=True).edits) == 2
    lines = tmp_path / "dirty.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in GOOD_ZSRE[:2]) + "{not json\n" + json.dumps(GOOD_ZSRE[2]))
    task = load_task("zsre", tmp_path, edits_file=lines, skip_invalid=True)
    assert task.edits == load_task("zsre", tmp_path, edits_file=clean, n_edits=3).edits
    assert [s["record"] for s in task.skipped] == ["line 3"] and "invalid JSON" in task.skipped[0]["reason"]
    rows = [{"prompt": "p", "target": "t", "accurate": False}, {"prompt": "q", "target": "u", "accurate": "maybe"},
            {"prompt": "r", "target": "", "accurate": False}, {"prompt": "s", "target": "v", "accurate": True}]
    for suffix in (".csv", ".jsonl"):
        skipped = []
        edits, accurate = load_hallucination_edits(write(tmp_path / f"h{suffix}", rows), skipped)
        assert (edits, accurate) == ([Record("p", "t")], [Record("s", "v", [])])
        assert [s["record"] for s in skipped] == (["line 3", "line 4"] if suffix == ".csv" else ["line 2", "line 3"])
    with pytest.raises(MeloDataError, match="give one"):
        load_task("zsre", tmp_path, skip_invalid=True)


def data_dir_with_nq(root):
    (root / "nq").mkdir(parents=True, exist_ok=True)
    (root / "nq" / "NQ-open.dev.jsonl").write_text(
        "".join(json.dumps({"question": q, "answer": [a]}) + "\n"
                for q, a in [("where is paris", "france"), ("what color is the sky", "blue")]))
    return root


@pytest.fixture
def tiny_zsre_preset(monkeypatch):
    """smollm2-zsre on the tiny word-level GPT-2 (its layers, few steps) instead of SmolLM2."""
    from conftest import make_gpt2, melo_config

    preset = presets.BENCH_PRESETS["smollm2-zsre"]
    tiny = dataclasses.replace(preset, load_model=lambda data_dir, data: (make_gpt2(), make_word_tokenizer()),
                               melo=lambda: melo_config("gpt2", num_iter=8).to_dict(),
                               edits_per_block=2, metric_period=2, upstream_limit=None, max_new_tokens=3)
    monkeypatch.setitem(presets.BENCH_PRESETS, "smollm2-zsre", tiny)


@pytest.mark.slow  # an end-to-end run
def test_bench_skip_invalid_gives_the_figures_of_the_file_without_the_bad_records(tmp_path, tiny_zsre_preset,
                                                                                   capsys):
    root = data_dir_with_nq(tmp_path / "data")
    dirty = write(tmp_path / "dirty.json", with_bad_records(GOOD_ZSRE, BAD_ZSRE))
    clean = write(tmp_path / "clean.json", GOOD_ZSRE)
    base = ["bench", "--preset", "smollm2-zsre", "--data-dir", str(root), "--quiet"]
    fails([*base, "--edits-file", str(dirty), "--out", str(tmp_path / "no")], capsys,
          "record 1: field 'answers' is empty")
    main([*base, "--edits-file", str(dirty), "--skip-invalid", "--out", str(tmp_path / "skip")])
    said = capsys.readouterr().out
    assert f"--skip-invalid: 3 invalid records of {dirty} skipped" in said
    assert "  record 1: field 'answers' is empty" in said and "  record 6: missing field 'src'" not in said
    assert "  record 6: not a zsRE record" in said
    main([*base, "--edits-file", str(clean), "--out", str(tmp_path / "clean")])
    config = json.loads((tmp_path / "skip" / "config.json").read_text())["data"]
    assert (config["skip_invalid"], config["n_skipped"], config["n_edits"]) == (True, 3, 6)
    assert [s["record"] for s in config["skipped"]] == ["record 1", "record 3", "record 6"]
    assert json.loads((tmp_path / "clean" / "config.json").read_text())["data"]["skipped"] == []

    def figures(run: str) -> list[dict]:
        rows = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in row.items() if "seconds" not in k and "time" not in k} for row in rows]

    assert figures("skip") == figures("clean") and len(figures("clean")) >= 3
