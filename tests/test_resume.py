"""A benchmark run killed with SIGKILL at any moment resumes to the figures of an uninterrupted run."""

import json
import multiprocessing
import os
import random
import signal
import time

import pytest
import torch
from conftest import MODEL_FACTORIES, melo_config

import melo
from melo.bench.protocols import Settings, eval_rows, run_lifelong, run_sequential
from melo.bench.resume import open_run
from melo.data import Record, TaskData
from melo.errors import MeloConfigError

FORK = multiprocessing.get_context("fork")
WORDS = ["rome", "tolstoy", "green", "homer", "paris", "blue", "big", "small"]
PROMPTS = ["the capital of france is", "who wrote hamlet", "what color is the sky", "who wrote the novel",
           "where is the river", "the dog is", "who painted the painting", "the cat is"]
EDITS = [Record(p, WORDS[i], rephrases=[p + " now"], answers=[WORDS[i]], locality_prompt=PROMPTS[(i + 3) % 8],
                locality_answer=WORDS[(i + 5) % 8]) for i, p in enumerate(PROMPTS)]
UPSTREAM = [Record("where is paris", "france", answers=["france"]), Record("the dog is", "big", answers=["big"])]
TIMING = ("edit_seconds", "block_seconds", "seconds_per_edit", "peak_rss_bytes")
RUNNERS = {"lifelong": run_lifelong, "sequential": run_sequential}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def settings(protocol):
    if protocol == "lifelong":
        return Settings(edits_per_block=1, checkpoints=(1, 3, 6, 8), max_new_tokens=3, cost_period=2)
    return Settings(edits_per_block=2, metric_period=4, max_new_tokens=3, edit_only_errors=False)


def run(run_dir, tokenizer, protocol="lifelong", resume=False, hook=None, every=2):
    """The toy run in ``run_dir``; ``hook(editor)`` may wrap the editor's methods (to stop it somewhere)."""
    torch.manual_seed(0)
    config = melo_config("gpt2", num_iter=4)
    make = lambda: melo.get_melo_model(MODEL_FACTORIES["gpt2"](), config, tokenizer=tokenizer)  # noqa: E731
    load = lambda d: melo.MeloModel.from_pretrained(MODEL_FACTORIES["gpt2"](), d, tokenizer=tokenizer)  # noqa: E731
    run_config = {"preset": "toy", "protocol": protocol, "melo": config.to_dict()}
    editor, writer, saver = open_run(run_dir, run_config, make, load, every, resume)
    if hook is not None:
        hook(editor)
    data = TaskData("toy", "qa", list(EDITS), list(UPSTREAM))
    summary = RUNNERS[protocol](editor, data, "causal_lm", settings(protocol), writer.log, False, saver)
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return summary


def figures(summary):
    """The summary without wall-clock figures."""
    return {k: figures(v) if isinstance(v, dict) else v for k, v in summary.items()
            if not k.startswith(TIMING)}


def metric_lines(run_dir):
    return [{k: v for k, v in json.loads(line).items() if not k.startswith(TIMING)}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def stop_at(method, nth, stopped):
    """A hook making the ``nth`` call of ``editor.method`` signal ``stopped`` and hang (to be killed there)."""
    def hook(editor):
        original, calls = getattr(editor, method), [0]

        def wrapped(*args, **kwargs):
            calls[0] += 1
            if calls[0] == nth:
                stopped.set()
                time.sleep(600)
            return original(*args, **kwargs)

        setattr(editor, method, wrapped)
    return hook


def killed_run(run_dir, tokenizer, protocol, resume, hook=None, after=None):
    """Start the run in a child process and SIGKILL it once ``hook`` signals (or after ``after`` seconds)."""
    stopped = FORK.Event()
    child = FORK.Process(target=run, args=(run_dir, tokenizer, protocol, resume,
                                           hook(stopped) if hook else None))
    child.start()
    if after is None:
        assert stopped.wait(timeout=120), "the run did not reach the point it was to be killed at"
    else:
        child.join(after)
    finished = child.exitcode == 0
    if child.is_alive():
        os.kill(child.pid, signal.SIGKILL)
    child.join()
    return finished


@pytest.fixture(scope="module")
def reference(tmp_path_factory, word_tokenizer):
    out = {}
    for protocol in RUNNERS:
        run_dir = tmp_path_factory.mktemp(f"reference-{protocol}")
        start = time.perf_counter()
        out[protocol] = (figures(run(run_dir, word_tokenizer, protocol)), metric_lines(run_dir))
        out[f"{protocol}-seconds"] = time.perf_counter() - start
    return out


@pytest.mark.parametrize("protocol", list(RUNNERS))
@pytest.mark.parametrize("where", ["edit", "evaluation"])
def test_killed_during_an_edit_or_an_evaluation_resumes_to_the_same_figures(tmp_path, word_tokenizer, reference,
                                                                           protocol, where):
    # the 5th edit (between checkpoints: edits redone), or the generation pass of an evaluation after edits
    hook = (lambda ev: stop_at("edit", 5 if protocol == "lifelong" else 3, ev)) if where == "edit" else \
        (lambda ev: stop_at("generate", 9 if protocol == "lifelong" else 6, ev))
    assert not killed_run(tmp_path, word_tokenizer, protocol, False, hook)
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert 0 < state["loop"]["done"] < len(EDITS)
    summary = run(tmp_path, word_tokenizer, protocol, resume=True)
    assert figures(summary) == reference[protocol][0]
    assert metric_lines(tmp_path) == reference[protocol][1]


@pytest.mark.slow
def test_killed_at_random_moments_resumes_to_the_same_figures(tmp_path, word_tokenizer, reference):
    rng = random.Random(0)
    whole = reference["lifelong-seconds"]  # kills at 10-70 % of an uninterrupted run's time: the first always lands
    kills, resume = 0, False
    while not killed_run(tmp_path, word_tokenizer, "lifelong", resume, after=rng.uniform(0.1, 0.7) * whole):
        kills, resume = kills + 1, True
        assert kills < 100
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert kills >= 1
    assert figures(summary) == reference["lifelong"][0]
    assert metric_lines(tmp_path) == reference["lifelong"][1]


def test_resume_refuses_another_run(tmp_path, word_tokenizer):
    run(tmp_path, word_tokenizer, "lifelong")
    config = json.loads((tmp_path / "config.json").read_text())
    config["melo"]["num_iter"] = 5
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(MeloConfigError, match="differs from the run's config.json in melo"):
        run(tmp_path, word_tokenizer, "lifelong", resume=True)


def test_eval_sample_is_seeded_and_all_edits_up_to_its_size():
    assert eval_rows(5, None, 0) == eval_rows(5, 10, 0) == [0, 1, 2, 3, 4]
    sample = eval_rows(10_000, 1000, 3)
    assert sample == eval_rows(10_000, 1000, 3) != eval_rows(10_000, 1000, 4)
    assert len(set(sample)) == 1000 and sample == sorted(sample) and max(sample) < 10_000
