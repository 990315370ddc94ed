"""`melo` command line: every user error exits with status 2 and one line naming the problem,
before any model loads."""

from __future__ import annotations

import pytest
from conftest import make_word_tokenizer
from transformers import BertConfig, BertForSequenceClassification

import melo.demo.model
import melo.standins
from melo import MeloDataError
from melo.cli import main
from melo.demo.world import read_edits_file


@pytest.fixture
def no_models(monkeypatch):
    """Loading or training any model (demo, SmolLM2, stand-in) or any benchmark data fails the test."""
    monkeypatch.setattr(melo.demo.model, "load_or_train", lambda *a, **k: pytest.fail("loaded the demo model"))
    monkeypatch.setattr("melo.loading.load_model", lambda *a, **k: pytest.fail("loaded a model by name"))
    monkeypatch.setattr(melo.standins, "load_standin", lambda *a, **k: pytest.fail("loaded a stand-in"))
    monkeypatch.setattr("melo.bench.run.load_task", lambda *a, **k: pytest.fail("loaded benchmark data"))


def fails(argv: list[str], capsys, *needles: str) -> str:
    """The one stderr line of ``melo argv``, which must exit with status 2 and name every needle."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"melo {argv[0]}: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def tiny_classifier(path):
    """A 2-layer BERT classifier with its tokenizer, saved in ``path``."""
    config = BertConfig(vocab_size=len(make_word_tokenizer()), hidden_size=16, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=32, num_labels=3)
    BertForSequenceClassification(config).save_pretrained(path)
    make_word_tokenizer().save_pretrained(path)
    return path


def test_latin1_edits_file(tmp_path, capsys, no_models):
    path = tmp_path / "edits.csv"
    path.write_bytes("prompt,target\nWho founded Caf\xe9 Noir?,Ren\xe9e\n".encode("latin-1"))
    fails(["run", "--edits", str(path), "--out", str(tmp_path / "out")], capsys, str(path), "not UTF-8")


def test_missing_edits_file(tmp_path, capsys, no_models):
    fails(["run", "--edits", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "out")], capsys,
          "nope.csv", "does not exist")


def test_missing_model_path(tmp_path, capsys, no_models):
    fails(["run", "--model", str(tmp_path / "no-model"), "--preset", "minilm-classifier"], capsys,
          "--model", "no-model", "no such folder")


@pytest.mark.parametrize("preset,needles", [
    ("t5small-zsre", ("does not load as a seq2seq model", "'t5small-zsre'")),  # a classifier is no seq2seq model
    ("bert-scotus", ("bert.encoder.layer.9.output.dense",)),  # layers the 2-layer model does not have
])
def test_preset_that_does_not_fit_the_model(tmp_path, capsys, preset, needles):
    model = tiny_classifier(tmp_path / "model")
    capsys.readouterr()  # the save's progress bar
    edits = tmp_path / "edits.jsonl"
    edits.write_text('{"prompt": "the dog is big", "target": "1"}\n')
    fails(["run", "--model", str(model), "--preset", preset, "--edits", str(edits), "--out", str(tmp_path / "o")],
          capsys, *needles)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("text,needles", [
    ('{"facts": [', ("line 1", "not valid JSON")),
    ('[1, 2]', ("'facts'", "'edits'")),
    ('{"facts": [{"id": "a", "entity": "A"}], "edits": []}', ("fact 0", "'relation'")),
    ('{"facts": [{"id": "a", "entity": "A", "relation": "r", "question": "q?", "paraphrases": [], "answer": "x"}],'
     ' "edits": [{"fact": "b", "new_answer": "y"}]}', ("edit 0", "'fact'", "'b'")),
])
def test_malformed_world_file(tmp_path, capsys, no_models, text, needles):
    path = tmp_path / "world.json"
    path.write_text(text)
    fails(["run", "--world", str(path), "--out", str(tmp_path / "out")], capsys, str(path), *needles)


@pytest.mark.parametrize("command", ["compare", "plot"])
def test_compare_and_plot_need_run_directories(tmp_path, capsys, command):
    (tmp_path / "notes").mkdir()
    line = fails([command, str(tmp_path / "notes"), "--out", str(tmp_path / "out")], capsys,
                 "notes", "not a run directory", "summary.json")
    assert "melo bench" in line and not (tmp_path / "out").exists()


def test_lifelong_protocol_needs_a_zsre_preset(tmp_path, capsys, no_models):
    fails(["bench", "--preset", "minilm-scotus", "--protocol", "lifelong", "--data-dir", str(tmp_path)], capsys,
          "--protocol lifelong", "'minilm-scotus'", "minilm-qa")
    fails(["bench", "--preset", "minilm-scotus", "--protocol", "lifelong", "--method", "all"], capsys,
          "--protocol lifelong")


@pytest.mark.parametrize("command", ["run", "bench", "compare"])
def test_out_that_is_a_file_fails_before_any_work(tmp_path, capsys, no_models, command):
    out = tmp_path / "taken.txt"
    out.write_text("not a folder")
    argv = {"run": ["run"], "bench": ["bench", "--preset", "minilm-qa"],
            "compare": ["compare", str(tmp_path)]}[command]
    fails(argv + ["--out", str(out / "sub" if command == "compare" else out)], capsys, "taken.txt", "is a file")
    assert out.read_text() == "not a folder"


@pytest.mark.parametrize("argv,needles", [
    (["run", "--num-iter", "0"], ("--num-iter", "at least 1", "0")),
    (["run", "--num-iter", "ten"], ("--num-iter", "whole number", "'ten'")),
    (["run", "--n-edits", "-3"], ("--n-edits", "at least 1", "-3")),
    (["run", "--edits-per-block", "0"], ("--edits-per-block", "at least 1")),
    (["run", "--radius", "0"], ("--radius", "positive")),
    (["run", "--radius", "nan"], ("--radius", "positive")),
    (["bench", "--preset", "minilm-qa", "--metric-period", "0"], ("--metric-period", "at least 1")),
    (["bench", "--preset", "minilm-qa", "--n-edits", "-1"], ("--n-edits", "at least 1")),
    (["bench", "--preset", "minilm-qa", "--edits-per-block", "0"], ("--edits-per-block", "at least 1")),
    (["bench", "--preset", "no-such-preset"], ("--preset", "no-such-preset")),
])
def test_bad_numbers_and_choices_are_rejected(capsys, no_models, argv, needles):
    fails(argv, capsys, *needles)


@pytest.mark.parametrize("target", ["1.7", "true", "-1", '"1.0"'])
def test_classification_labels_must_be_class_ids(tmp_path, capsys, target):
    path = tmp_path / "edits.jsonl"
    path.write_text(f'{{"prompt": "the dog is big", "target": {target}}}\n')
    with pytest.raises(MeloDataError, match="class id"):
        read_edits_file(path, classification=True)
    (tmp_path / "model").mkdir()  # the edits fail before the model is looked at
    fails(["run", "--model", str(tmp_path / "model"), "--preset", "minilm-classifier", "--edits", str(path),
           "--out", str(tmp_path / "out")], capsys, str(path), "line 1", "'target'", "class id")


def test_csv_that_is_not_csv(tmp_path, capsys, no_models):
    path = tmp_path / "edits.csv"
    path.write_text("prompt,target\n" + "a" * 200_000 + ",b\n")  # a field over the csv module's limit
    fails(["run", "--edits", str(path), "--out", str(tmp_path / "out")], capsys, str(path), "not valid CSV")


def test_bench_edits_file_must_exist(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--preset", "minilm-qa", "--edits-file", str(tmp_path / "none.json")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--edits-file" in err[0] and "is not a file" in err[0]
