"""Two-batch end-to-end runs of both protocols on tiny models, and the run directory they write."""

import dataclasses
import json
import math

import pytest
from conftest import MODEL_FACTORIES, melo_config

import melo
from melo.bench import presets
from melo.bench import run as bench_run
from melo.bench.protocols import Settings, run_lifelong, run_sequential
from melo.bench.report import RunWriter, markdown_table, plot_runs
from melo.data import Record, TaskData
from melo.data.records import latest_targets, one_target_rows
from melo.evaluation.predict import predict_labels

QA_EDITS = [
    Record("the capital of france is", "rome", rephrases=["the capital city of france is"], fact="f1",
           answers=["rome"], locality_prompt="the dog is big"),
    Record("who wrote hamlet", "tolstoy", rephrases=["who wrote the play hamlet"], fact="f2",
           answers=["tolstoy"], locality_prompt="where is the river"),
    Record("what color is the sky", "green", rephrases=["the color of the sky is"], fact="f3",
           answers=["green"], locality_prompt="who painted the painting"),
    Record("who wrote the novel", "homer", rephrases=["the novel was written by"], fact="f3",
           answers=["homer"], locality_prompt="the cat is small"),
]
UPSTREAM = [Record("where is paris", "france", answers=["france", "paris"]),
            Record("the dog is", "big", answers=["big"])]


def qa_data():
    return TaskData("toy", "qa", list(QA_EDITS), list(UPSTREAM))


def run(writer_dir, runner, editor, data, task, settings):
    writer = RunWriter(writer_dir, {"preset": "toy"})
    summary = runner(editor, data, task, settings, writer.log, progress=False)
    summary.update(method="melo", preset="toy")
    plots = writer.finish(summary)
    points = [json.loads(line) for line in (writer_dir / "metrics.jsonl").read_text().splitlines()]
    return summary, points, plots


@pytest.mark.slow
def test_sequential_qa_two_batches(tmp_path, word_tokenizer):
    editor = melo.get_melo_model(MODEL_FACTORIES["t5"](), melo_config("t5"), tokenizer=word_tokenizer)
    settings = Settings(edits_per_block=2, metric_period=2, max_new_tokens=3, edit_only_errors=True)
    summary, points, plots = run(tmp_path, run_sequential, editor, qa_data(), "seq2seq", settings)
    assert [p["n_edits"] for p in points] == [0, 2, 4]
    assert points[0]["pre_err"] == pytest.approx(0.0) and summary["pre_es"] == pytest.approx(0.0)
    assert summary["es"] == pytest.approx(1.0) and summary["err"] == pytest.approx(1.0)
    assert summary["trr"] == pytest.approx(summary["pre_trr"])
    assert {"generality", "generality_em", "generality_fact", "edit_seconds", "clusters"} <= set(summary)
    assert summary["blocks"] == 2 and summary["n_edits"] == 4
    table = (tmp_path / "table.md").read_text()
    assert "| melo | toy | 4 |" in table and "→ 1.000" in table
    assert plots["metrics"].exists() and plots["router"].exists()


@pytest.mark.slow
def test_sequential_classification_and_hallucination(tmp_path, word_tokenizer):
    base = MODEL_FACTORIES["bert"]()
    editor = melo.get_melo_model(base, melo_config("bert"), tokenizer=word_tokenizer)
    texts = ["the capital of france is", "who wrote hamlet", "what color is the sky", "the dog is big"]
    preds = predict_labels(base, word_tokenizer, texts)
    data = TaskData("toy-cls", "classification", [Record(t, (p + 1) % 3) for t, p in zip(texts, preds)],
                    [Record("where is the river", 0)])
    summary, points, _ = run(tmp_path / "cls", run_sequential, editor, data, "classification",
                             Settings(edits_per_block=2, metric_period=4))
    assert summary["es"] == 1.0 and summary["err"] == 1.0 and summary["trr"] == summary["pre_trr"]
    assert [p["n_edits"] for p in points] == [0, 2, 4] and "err" not in points[1]

    lm = melo.get_melo_model(MODEL_FACTORIES["gpt2"](), melo_config("gpt2"), tokenizer=word_tokenizer)
    hal = TaskData("toy-hal", "hallucination",
                   [Record("the capital of france is", "paris is a city"),
                    Record("who wrote hamlet", "shakespeare wrote it")],
                   [Record("", "the dog is big and the cat is small")],
                   accurate=[Record("what color is the sky", "the sky is blue")])
    summary, _, _ = run(tmp_path / "hal", run_sequential, lm, hal, "causal_lm",
                        Settings(edits_per_block=1, metric_period=1))
    assert summary["err"] < summary["pre_err"] / 5
    assert summary["trr"] == pytest.approx(summary["pre_trr"]) and summary["arr"] == pytest.approx(summary["pre_arr"])


def test_latest_targets_name_the_rows_whose_fact_a_later_edit_re_targeted():
    assert latest_targets(QA_EDITS, [0, 1, 2, 3], 4) == {2: "homer"}
    assert latest_targets(QA_EDITS, [0, 1, 2], 3) == {}
    same = QA_EDITS[:3] + [dataclasses.replace(QA_EDITS[3], target="green")]  # restated with the same target
    assert latest_targets(same, [0, 1, 2, 3], 4) == {}


def test_one_target_rows_leave_out_facts_another_edit_re_targets():
    assert one_target_rows(QA_EDITS, [0, 1, 2, 3], 4) == [0, 1]  # f3: "green", then "homer"
    assert one_target_rows(QA_EDITS, [0, 1, 2], 3) == [0, 1, 2]
    same = QA_EDITS[:3] + [dataclasses.replace(QA_EDITS[3], target="green")]
    assert one_target_rows(same, [0, 1, 2, 3], 4) == [0, 1, 2, 3]
    assert one_target_rows([dataclasses.replace(QA_EDITS[0], fact=None)], [0], 1) == [0]


class ScriptedEditor:
    """Greedy answers: each edited prompt's target, and the target of each paraphrase in ``knows``;
    teacher forcing gets every token of ``forced`` paraphrases right and none of the others."""

    def __init__(self, tokenizer, records, knows, forced):
        self.tokenizer, self.records, self.knows, self.forced, self.answers = tokenizer, records, knows, forced, {}

    def edit(self, prompts, targets):
        self.answers.update(zip(prompts, targets))
        self.answers.update((r.rephrases[0], r.target) for r in self.records
                            if r.prompt in prompts and r.rephrases and r.rephrases[0] in self.knows)

    def stats(self):
        return {}


def test_lifelong_reports_generalization_on_the_facts_with_one_target(monkeypatch, word_tokenizer):
    from melo.bench import protocols

    def answers(editor, tok, prompts, *args):
        return [editor.answers.get(p, "") for p in prompts]

    def tokens(editor, tok, prompts, targets, *args, **kwargs):
        gold = [[1, 2] for _ in prompts]
        hit = [p in editor.forced or (p not in editor.knows and editor.answers.get(p) == t)
               for p, t in zip(prompts, targets)]
        return [0.0] * len(prompts), [g if h else [0, 0] for g, h in zip(gold, hit)], gold

    monkeypatch.setattr(protocols, "generate_answers", answers)
    monkeypatch.setattr(protocols, "target_tokens", tokens)
    # row 0 has no paraphrase; f3 (rows 1, 2) has two targets; rows 3-5 have one each
    records = [Record("no paraphrase here", "x", fact="f0"), QA_EDITS[2], QA_EDITS[3], QA_EDITS[0], QA_EDITS[1],
               Record("what is the dog", "cat", rephrases=["the dog is a"], fact="f4")]
    reph = [r.rephrases[0] if r.rephrases else None for r in records]
    # greedy: rows 1, 3, 4 right; teacher-forced: rows 2, 5 right
    editor = ScriptedEditor(word_tokenizer, records, knows={reph[1], reph[3], reph[4]}, forced={reph[2], reph[5]})
    data = TaskData("toy", "qa", records, list(UPSTREAM))
    summary = run_lifelong(editor, data, "causal_lm", Settings(edits_per_block=3, checkpoints=(3, 6)),
                           lambda point: None, progress=False)
    assert summary["T6"]["generalization"] == pytest.approx(2 / 5) and summary["T6"]["generalization_em"] == 0.6
    assert summary["T6"]["one_target_rows"] == 3
    assert summary["T6"]["generalization_one_target"] == pytest.approx(1 / 3)  # row 5
    assert summary["T6"]["generalization_em_one_target"] == pytest.approx(2 / 3)  # rows 3, 4
    assert summary["one_target_rows"] == 3


def test_a_later_point_without_one_target_figures_drops_the_earlier_ones(monkeypatch, word_tokenizer):
    from melo.bench import protocols

    monkeypatch.setattr(protocols, "generate_answers", lambda editor, tok, prompts, *a: [""] * len(prompts))
    monkeypatch.setattr(protocols, "target_tokens",
                        lambda editor, tok, prompts, *a, **k: ([0.0] * len(prompts), [[0]] * len(prompts),
                                                               [[1]] * len(prompts)))
    # 2 of the edits scored (seed 0): rows 0 and 2 at T = 3, both of f1, which has two targets; rows 1 and 3 at
    # T = 4, each the only record of its fact
    facts = ["f1", "f2", "f1", "f3"]
    records = [dataclasses.replace(QA_EDITS[i], fact=f, target=f"t{i}") for i, f in enumerate(facts)]
    editor = ScriptedEditor(word_tokenizer, records, knows=set(), forced=set())
    summary = run_lifelong(editor, TaskData("toy", "qa", records, list(UPSTREAM)), "causal_lm",
                           Settings(edits_per_block=1, checkpoints=(3, 4), eval_sample=2), lambda point: None,
                           progress=False)
    assert summary["T3"]["one_target_rows"] == 0 and math.isnan(summary["T3"]["generalization_one_target"])
    assert "one_target_rows" not in summary["T4"]
    assert not {"one_target_rows", "generalization_one_target", "generalization_em_one_target"} & set(summary)


@pytest.mark.slow
def test_lifelong_two_batches(tmp_path, word_tokenizer):
    editor = melo.get_melo_model(MODEL_FACTORIES["gpt2"](), melo_config("gpt2"), tokenizer=word_tokenizer)
    settings = Settings(edits_per_block=2, checkpoints=(2, 4), max_new_tokens=3)
    summary, points, _ = run(tmp_path, run_lifelong, editor, qa_data(), "causal_lm", settings)
    assert [p["n_edits"] for p in points] == [0, 2, 4]
    assert summary["T4"]["reliability"] == pytest.approx(1.0)
    assert summary["T4"]["locality"] == pytest.approx(1.0)
    assert 0.0 <= summary["T4"]["generalization"] <= 1.0
    assert summary["pre_reliability"] < 0.5
    assert 0.0 <= summary["T4"]["locality_generated_f1"] <= 1.0 and "locality_unrestated" not in summary["T4"]
    # edit 3 re-targets edit 2's fact: from T = 4 edit 2's paraphrase is also scored against edit 3's target
    assert summary["T2"]["generalization_overridden"] == 0
    assert summary["T2"]["generalization_latest"] == summary["T2"]["generalization"]
    assert summary["T4"]["generalization_overridden"] == 1 and 0.0 <= summary["T4"]["generalization_latest"] <= 1.0
    table = (tmp_path / "table.md").read_text()
    assert "| T | scored | Rel. | Gen. | Gen. vs latest | Gen. one-target | Loc. |" in table
    assert "| 2 | 2 | " in table and "| 4 | 4 | " in table


@pytest.mark.slow
def test_lifelong_locality_without_the_prompts_that_ask_an_edited_fact(tmp_path, word_tokenizer):
    edits = [dataclasses.replace(r, locality_answer="big") for r in QA_EDITS]
    edits[0] = dataclasses.replace(edits[0], subject="france", truth="paris")
    edits[3] = dataclasses.replace(edits[3], locality_prompt="the capital of france is", locality_answer="paris")
    editor = melo.get_melo_model(MODEL_FACTORIES["gpt2"](), melo_config("gpt2"), tokenizer=word_tokenizer)
    data = TaskData("toy", "qa", edits, list(UPSTREAM))
    summary, _, _ = run(tmp_path, run_lifelong, editor, data, "causal_lm",
                        Settings(edits_per_block=2, checkpoints=(2, 4), max_new_tokens=3))
    assert summary["T4"]["locality_restated"] == 1  # edit 3's neighbourhood prompt is edit 0's own
    assert summary["T4"]["locality_unrestated"] == pytest.approx(1.0)
    assert summary["T4"]["locality"] < 1.0


def test_table_and_overlay(tmp_path):
    for name, err in (("a", 0.5), ("b", 0.9)):
        d = tmp_path / name
        writer = RunWriter(d, {})
        writer.log({"n_edits": 0, "pre_err": 0.0})
        writer.log({"n_edits": 10, "err": err, "clusters": 3})
        writer.finish({"method": name, "preset": "p", "n_edits": 10, "err": err, "pre_err": 0.0, "edit_seconds": 5.0})
    plots = plot_runs([tmp_path / "a", tmp_path / "b"], tmp_path / "overlay")
    assert set(plots) == {"metrics", "router"} and all(p.stat().st_size > 1000 for p in plots.values())
    table = markdown_table([{"method": "a", "preset": "p", "n_edits": 10, "err": 0.5, "pre_err": 0.0,
                             "edit_seconds": 5.0}])
    assert "| a | p | 10 | 0.000 → 0.500 | 0.500 |" in table


@pytest.mark.parametrize("family,task", [("gpt2", "causal_lm"), ("t5", "seq2seq")])
def test_target_tokens_in_input_order_whatever_the_batching(family, task, word_tokenizer):
    """Length-sorted batches give each example the result it gets alone, in the caller's order."""
    from melo.evaluation.predict import target_tokens

    model = MODEL_FACTORIES[family]()
    prompts = ["the capital of france is", "who", "what color is the sky today", "the dog"]
    targets = ["rome", "wrote hamlet", "green", "is big and small"]
    nll, argmax, gold = target_tokens(model, word_tokenizer, prompts, targets, task, batch_size=3)
    alone = [target_tokens(model, word_tokenizer, [p], [t], task, batch_size=1) for p, t in zip(prompts, targets)]
    assert nll == pytest.approx([a[0][0] for a in alone], rel=1e-5)
    assert argmax == [a[1][0] for a in alone] and gold == [a[2][0] for a in alone]
    assert [len(g) for g in gold] == [len(word_tokenizer(t, add_special_tokens=False)["input_ids"]) + 1
                                      for t in targets]


def test_predict_labels_in_input_order(word_tokenizer):
    model = MODEL_FACTORIES["bert"]()
    texts = ["the capital of france is", "who", "what color is the sky today", "the dog"]
    assert predict_labels(model, word_tokenizer, texts, batch_size=3) == [
        predict_labels(model, word_tokenizer, [t], batch_size=1)[0] for t in texts]


def test_generality_per_fact_scores_against_each_facts_latest_target(monkeypatch):
    """Per fact, a re-edited fact's paraphrases count against its latest target; facts edited once
    score as in the strict figure (from the same pass)."""
    from melo.bench.protocols import Scorer

    calls = []

    def score(self, model, prompts, golds):
        calls.append(golds)
        hits = [float(g == ["green"] or g == ["homer"]) for g in golds]
        return {"score": sum(hits) / len(hits), "em": 0.0, "_hits": hits}

    monkeypatch.setattr(Scorer, "__call__", score)
    scorer = Scorer("qa", "causal_lm", None, Settings())
    once = scorer.generality(None, QA_EDITS[:3])  # three facts, each edited once
    assert len(calls) == 1 and once["generality"] == once["generality_fact"] == pytest.approx(1 / 3)
    out = scorer.generality(None, QA_EDITS)  # f3 re-edited: "green", then "homer"
    assert len(calls) == 3 and calls[-1][2] == ["homer"]
    assert out["generality"] == 0.5 and out["generality_fact"] == pytest.approx(1 / 3)


@pytest.mark.slow
def test_bench_preset_auto_takes_its_layers_from_the_model(tmp_path, word_tokenizer, monkeypatch, capsys):
    """``melo bench --preset auto``: the lifelong protocol on the loaded model with auto_config's layers."""
    tiny = dataclasses.replace(presets.BENCH_PRESETS["auto"], load_model=lambda *a: (
        MODEL_FACTORIES["olmo2"](), word_tokenizer))
    monkeypatch.setitem(presets.BENCH_PRESETS, "auto", tiny)
    monkeypatch.setattr(bench_run, "load_task", lambda *a, **k: qa_data())
    out = bench_run.run_bench("auto", protocol="lifelong", n_edits=2, data_dir=tmp_path, out=tmp_path / "run",
                        melo_overrides={"num_iter": 20, "key_encoder": None})
    chosen = melo.auto_config(MODEL_FACTORIES["olmo2"](), num_iter=20, key_encoder=None)
    assert f"melo auto_config: {melo.auto.describe(chosen)}" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["melo"] == chosen.to_dict()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["preset"] == "auto" and summary["blocks"] == 2 and "T2" in summary
