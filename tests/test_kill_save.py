"""Saves survive SIGKILL at any moment and concurrent savers: a load gives exactly one complete save."""

import json
import multiprocessing
import os
import random
import signal
import time

import pytest
import torch
from conftest import EDIT_PROMPTS, MODEL_FACTORIES, UNRELATED, melo_config

import melo
from melo.persistence import META_FILE, read_adapter

KILLS = 60
CONCURRENT_TRIALS = 20
FORK = multiprocessing.get_context("fork")


def probe_logits(model, tok):
    enc = tok(EDIT_PROMPTS + UNRELATED, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits


pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]  # kill loops


@pytest.fixture(scope="module")
def states(one_torch_thread, word_tokenizer):
    """Two complete models: 2 edits in 2 blocks, and 3 edits in 3 blocks."""
    made = []
    for prompts in (EDIT_PROMPTS, EDIT_PROMPTS + ["what color is the sky"]):
        model = melo.get_melo_model(MODEL_FACTORIES["gpt2"](), melo_config("gpt2", num_iter=2),
                                    tokenizer=word_tokenizer)
        for prompt, target in zip(prompts, ["rome", "tolstoy", "green"]):
            model.edit([prompt], [target])
        made.append(model)
    return made


def which_state(directory, states, tok):
    """Index of the state ``from_pretrained`` gives, compared bit for bit; fails on anything else."""
    loaded = melo.MeloModel.from_pretrained(MODEL_FACTORIES["gpt2"](), directory, tokenizer=tok)
    matches = [i for i, state in enumerate(states)
               if loaded.stats() == state.stats() and loaded.records == state.records
               and torch.equal(probe_logits(loaded, tok), probe_logits(state, tok))]
    assert len(matches) == 1, f"loaded {loaded.stats()}: not exactly one saved state"
    return matches[0]


def committed_files(directory):
    """The two files a finished save leaves: the JSON and the tensors file it names."""
    return sorted([META_FILE, json.loads((directory / META_FILE).read_text())["storage"]["tensors_file"]])


def save_in_a_loop(models, directory, started):
    started.set()
    while True:
        for model in models:
            model.save_pretrained(directory)


def test_sigkill_during_saves_never_leaves_a_mixture(tmp_path, states, word_tokenizer):
    directory = tmp_path / "adapter"
    start = time.perf_counter()
    for _ in range(3):
        for state in states:
            state.save_pretrained(directory)
    save_seconds = (time.perf_counter() - start) / 6
    rng = random.Random(0)
    seen, untidy = [0, 0], 0
    for kill in range(KILLS):
        started = FORK.Event()
        child = FORK.Process(target=save_in_a_loop, args=(states[kill % 2:] + states[:kill % 2], directory, started))
        child.start()
        assert started.wait(30)
        time.sleep(rng.uniform(0, 3 * save_seconds))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        assert child.exitcode == -signal.SIGKILL
        untidy += sorted(os.listdir(directory)) != committed_files(directory)
        seen[which_state(directory, states, word_tokenizer)] += 1
        states[kill % 2].save_pretrained(directory)  # a save over a killed one cleans up after it
        assert sorted(os.listdir(directory)) == committed_files(directory)
    assert sum(seen) == KILLS and min(seen) > 0, (seen, untidy)
    print(f"{KILLS} kills, {sum(seen)} loads checked: state with 2 edits {seen[0]}, with 3 edits {seen[1]}; "
          f"{untidy} kills left files of an unfinished save; save {save_seconds * 1e3:.1f} ms")


def save_repeatedly(model, directory, barrier, times):
    barrier.wait(30)
    for _ in range(times):
        model.save_pretrained(directory)


def test_concurrent_savers_never_interleave(tmp_path, states, word_tokenizer):
    expected = []
    for i, state in enumerate(states):
        state.save_pretrained(tmp_path / f"reference{i}")
        expected.append(read_adapter(tmp_path / f"reference{i}"))
    seen, reads = [0, 0], 0
    for trial in range(CONCURRENT_TRIALS):
        directory = tmp_path / f"trial{trial}"
        states[trial % 2].save_pretrained(directory)
        barrier = FORK.Barrier(2)
        savers = [FORK.Process(target=save_repeatedly, args=(state, directory, barrier, 3)) for state in states]
        for saver in savers:
            saver.start()
        while any(saver.is_alive() for saver in savers):  # loads during the saves see complete saves too
            tensors, meta = read_adapter(directory)
            assert any(meta == m and tensors.keys() == t.keys() and all(torch.equal(tensors[k], t[k]) for k in t)
                       for t, m in expected)
            reads += 1
        for saver in savers:
            saver.join()
            assert saver.exitcode == 0
        seen[which_state(directory, states, word_tokenizer)] += 1
        assert sorted(os.listdir(directory)) == committed_files(directory)
    assert sum(seen) == CONCURRENT_TRIALS
    print(f"{CONCURRENT_TRIALS} trials of 2 concurrent savers: last save 2 edits {seen[0]}, 3 edits {seen[1]}; "
          f"{reads} loads during the saves, all complete")
