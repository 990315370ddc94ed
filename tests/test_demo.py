"""`melo run`: the fictional world, user edit files, and the demo end to end on a shrunken world."""

from __future__ import annotations

import json
from importlib import resources

import pytest
import torch

from melo import MeloDataError
from melo.cli import main
from melo.demo import model as demo_model
from melo.demo.world import load_world, read_edits_file


def test_shipped_world_is_well_formed():
    world = load_world()
    assert 200 <= len(world.facts) <= 300
    assert 60 <= len(world.edits) <= 100
    questions = [q for f in world.facts for q in (f.question, *f.paraphrases)]
    assert len(questions) == len(set(questions))
    assert all(1 <= len(f.paraphrases) <= 2 for f in world.facts)
    by_id = {f.id: f for f in world.facts}
    for e in world.edits:
        fact = by_id[e.source]
        assert e.prompt == fact.question and e.before == fact.answer and e.target != fact.answer
        assert e.target in {f.answer for f in world.facts if f.relation == fact.relation}
    assert len(world.untouched()) == len(world.facts) - len(world.edits)


@pytest.mark.parametrize("name,text,where", [
    ("e.jsonl", '{"prompt": "a?", "target": "b"}\n{"prompt": "c?"}\n', "line 2"),
    ("e.jsonl", '{"prompt": "a?", "target": "b"}\n{"prompt": "c?", "target": \n', "line 2"),
    ("e.csv", "prompt,target\na?,b\n,d\n", "line 3"),
    ("e.json", '[{"prompt": "a?", "target": "b"}, {"target": "d"}]', "item 1"),
    ("e.json", '[{"prompt": "a?", "target": "b"},\n {"prompt": "x", "rephrase": 3, "target": "y"}]', "item 1"),
])
def test_edit_file_errors_name_line_and_field(tmp_path, name, text, where):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(MeloDataError) as err:
        read_edits_file(path)
    assert where in str(err.value) and str(path) in str(err.value)
    assert "'target'" in str(err.value) or "'prompt'" in str(err.value) or "'rephrase'" in str(err.value) \
        or "JSON" in str(err.value)


def test_edit_files_in_three_formats_agree(tmp_path):
    rows = [{"prompt": "Who wrote it?", "target": "Ann", "rephrase": ["Its author?", "Writer?"], "locality": "Sky?"}]
    (tmp_path / "e.json").write_text(json.dumps(rows))
    (tmp_path / "e.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "e.csv").write_text("prompt,target,rephrase,locality\nWho wrote it?,Ann,Its author?|Writer?,Sky?\n")
    for name in ("e.json", "e.jsonl", "e.csv"):
        assert [(c.prompt, c.target, c.rephrases, c.locality) for c in read_edits_file(tmp_path / name)] == \
            [("Who wrote it?", "Ann", ("Its author?", "Writer?"), ("Sky?",))]
    with pytest.raises(MeloDataError, match="class id"):
        read_edits_file(tmp_path / "e.json", classification=True)


def test_class_ids_as_numbers_or_digits(tmp_path):
    path = tmp_path / "edits.jsonl"
    path.write_text('{"prompt": "a", "target": 2}\n{"prompt": "b", "target": " 0 "}\n')
    assert [c.target for c in read_edits_file(path, classification=True)] == [2, 0]


def _small_world(tmp_path):
    data = json.loads(resources.files("melo.demo").joinpath("world.json").read_text())
    keep = [f for f in data["facts"] if f["relation"].startswith("country.")][:16]
    ids = {f["id"] for f in keep}
    edits = [e for e in data["edits"] if e["fact"] in ids][:2]
    assert len(edits) == 2
    path = tmp_path / "world.json"
    path.write_text(json.dumps({"facts": keep, "edits": edits}))
    return path


@pytest.mark.slow
def test_melo_run_end_to_end_on_a_small_world(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MELO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(demo_model.SETTINGS, "epochs", 30)
    world_path = _small_world(tmp_path)
    world = load_world(world_path)
    out = tmp_path / "run"
    main(["run", "--world", str(world_path), "--edits-per-block", "1", "--num-iter", "20", "--out", str(out)])
    text = capsys.readouterr().out
    summary = json.loads((out / "metrics.json").read_text())
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert [a["prompt"] for a in answers] == [e.prompt for e in world.edits]
    for a, e in zip(answers, world.edits):
        assert a["before"] == e.before.lower()
        assert a["after"] == e.target.lower()
        assert f"before: {a['before']}" in text and f"after: {a['after']} ✓" in text
    assert summary["pre"]["edit_success"] == 0.0 and summary["post"]["edit_success"] == 1.0
    assert summary["post"]["locality"] == 1.0
    assert [p["edits"] for p in summary["curve"]] == [0, 1, 2]
    assert (out / "metrics.png").stat().st_size > 1000
    assert "| edit success | 0.00 | 1.00 |" in text

    from melo import MeloModel
    from melo.demo.measure import Asker
    from melo.demo.subjects import Subject

    base, tok, _ = demo_model.load_or_train(world, progress=False)
    loaded = MeloModel.from_pretrained(base, out / "adapter", tokenizer=tok)
    ask = Asker(Subject(loaded, tok, loaded.melo_config, "seq2seq", "t"))
    assert ask(loaded, [e.prompt for e in world.edits]) == [a["after"] for a in answers]
    controls = [q for f in world.untouched() for q in (f.question, *f.paraphrases)]
    with loaded.disabled():
        before = ask(loaded, controls)
    routed = ask.routed(loaded, controls)
    after = ask(loaded, controls)  # unrouted controls answer as the base model: measure() asks only the rest
    assert [a for a, r in zip(after, routed) if not r] == [b for b, r in zip(before, routed) if not r]


def test_melo_run_reports_bad_options(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--preset", "bert-scotus", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "--preset names the layers of a --model" in capsys.readouterr().err


def test_help_of_every_command(capsys):
    for argv in (["--help"], ["run", "--help"], ["bench", "--help"], ["compare", "--help"], ["plot", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ("--model", "--preset", "--edits", "--out", "--device", "--seed", "--quiet", "--radius",
                   "--protocol", "--method", "--n-edits", "--data-dir", "examples:"):
        assert option in text


@pytest.mark.slow  # an end-to-end run
def test_melo_run_skip_invalid_runs_the_file_without_its_bad_edits(tmp_path, capsys):
    """--skip-invalid on --edits: the run of the file with its bad rows removed by hand, the rows listed."""
    from conftest import make_word_tokenizer
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=len(make_word_tokenizer()), hidden_size=32, num_hidden_layers=6,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64, pad_token_id=0,
                        num_labels=3)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(tmp_path / "bert")
    make_word_tokenizer().save_pretrained(tmp_path / "bert")
    good = [("the dog is big", "2", "the dog is large"), ("the sky is blue", "1", "the sky is very blue"),
            ("the cat is small", "0", "the cat is little"), ("who wrote hamlet", "2", "who wrote the play hamlet")]
    rows = ["prompt,target,rephrase", *(",".join(r) for r in good)]
    dirty = rows[:2] + ["the sun is hot,,x", "the moon is white,1.5,y"] + rows[2:]  # lines 3 and 4: bad
    (tmp_path / "dirty.csv").write_text("\n".join(dirty) + "\n")
    (tmp_path / "clean.csv").write_text("\n".join(rows) + "\n")
    base = ["run", "--model", str(tmp_path / "bert"), "--preset", "minilm-scotus", "--num-iter", "5",
            "--edits-per-block", "2"]
    with pytest.raises(SystemExit):
        main([*base, "--edits", str(tmp_path / "dirty.csv"), "--out", str(tmp_path / "no")])
    assert "line 3: missing or empty field 'target'" in capsys.readouterr().err
    main([*base, "--edits", str(tmp_path / "dirty.csv"), "--skip-invalid", "--out", str(tmp_path / "skip")])
    said = capsys.readouterr().out
    assert "--skip-invalid: 2 invalid records of" in said and "  line 4: field 'target' must be a class id" in said
    main([*base, "--edits", str(tmp_path / "clean.csv"), "--out", str(tmp_path / "clean")])
    skip, clean = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("skip", "clean"))
    assert [s["record"] for s in skip.pop("skipped")] == ["line 3", "line 4"] and skip.pop("n_skipped") == 2
    for summary in (skip, clean):
        summary.pop("edit_seconds")
        for point in summary["curve"]:
            point.pop("seconds")
    assert skip == clean and skip["n_edits"] == 4
    assert (tmp_path / "skip" / "answers.jsonl").read_text() == (tmp_path / "clean" / "answers.jsonl").read_text()
