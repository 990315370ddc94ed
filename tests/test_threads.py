"""One MeloModel called from many threads at once: each call gets what it would get alone."""

import random
import threading

import pytest
import torch
from conftest import EDIT_PROMPTS, MODEL_FACTORIES, UNRELATED, melo_config

import melo

PROMPTS = EDIT_PROMPTS + UNRELATED


def _edited(tokenizer):
    model = melo.get_melo_model(MODEL_FACTORIES["gpt2"](), melo_config("gpt2", num_iter=8), tokenizer=tokenizer)
    model.edit(EDIT_PROMPTS[:1], ["rome"])
    model.edit(EDIT_PROMPTS[1:], ["tolstoy"])
    return model


def _batches(tokenizer):
    """A few fixed batches: edited rows, unrelated rows, and mixes."""
    texts = [PROMPTS, PROMPTS[::-1], [EDIT_PROMPTS[0]], UNRELATED, [UNRELATED[0], EDIT_PROMPTS[1]]]
    return [tokenizer(t, padding=True, return_tensors="pt") for t in texts]


def _call(model, kind, enc):
    with torch.no_grad():
        if kind == "forward":
            return model(**enc).logits
        if kind == "disabled":
            with model.disabled():
                return model(**enc).logits
        if kind == "route":
            return model.route(enc["input_ids"], enc["attention_mask"])
        return model.generate(**enc, max_new_tokens=3, do_sample=False)


KINDS = ("forward", "disabled", "route", "generate")


def _hammer(model, jobs, expected, n_calls, seed, errors):
    rng = random.Random(seed)
    mismatches = 0
    try:
        for _ in range(n_calls):
            i, kind = rng.randrange(len(jobs)), rng.choice(KINDS)
            if not torch.equal(_call(model, kind, jobs[i]), expected[kind][i]):
                mismatches += 1
    except BaseException as err:  # reported to the main thread, which fails the test
        errors.append(err)
    errors.append(mismatches)


@pytest.mark.slow
def test_concurrent_inference_matches_single_threaded(word_tokenizer):
    model = _edited(word_tokenizer)
    jobs = _batches(word_tokenizer)
    expected = {kind: [_call(model, kind, enc) for enc in jobs] for kind in KINDS}
    assert (expected["route"][0] >= 0).sum() == len(EDIT_PROMPTS)  # the edits are routed, the others not
    results: list = []
    threads = [threading.Thread(target=_hammer, args=(model, jobs, expected, 400, seed, results)) for seed in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r for r in results if not isinstance(r, int)] == []
    assert sum(results) == 0  # 2,400 calls, every one exactly as alone
    assert model.router.current() is None and not model.router.disabled
    fresh = MODEL_FACTORIES["gpt2"]()
    with torch.no_grad():  # outside a call the base model is the base model
        assert torch.equal(model.base_model(**jobs[0]).logits, fresh(**jobs[0]).logits)


def test_a_failing_call_leaves_no_routing_behind(word_tokenizer):
    model = _edited(word_tokenizer)
    enc = word_tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        before = model(**enc).logits
        with pytest.raises(IndexError):
            model(input_ids=enc["input_ids"] + 10_000, attention_mask=enc["attention_mask"])
        with pytest.raises(IndexError), model.disabled():
            model(input_ids=enc["input_ids"] + 10_000, attention_mask=enc["attention_mask"])
        assert model.router.current() is None and not model.router.disabled
        assert torch.equal(model(**enc).logits, before)
        assert torch.equal(model.base_model(**enc).logits, MODEL_FACTORIES["gpt2"]()(**enc).logits)


@pytest.mark.slow
def test_inference_during_an_edit_sees_before_or_after(word_tokenizer):
    model = melo.get_melo_model(MODEL_FACTORIES["gpt2"](), melo_config("gpt2", num_iter=30), tokenizer=word_tokenizer)
    model.edit(EDIT_PROMPTS[:1], ["rome"])
    enc = word_tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        before = model(**enc).logits
    seen: list = []
    stop = threading.Event()

    def infer():
        with torch.no_grad():
            while not stop.is_set():
                seen.append(model(**enc).logits)

    threads = [threading.Thread(target=infer) for _ in range(2)]
    for t in threads:
        t.start()
    model.edit(EDIT_PROMPTS[1:], ["tolstoy"])
    with torch.no_grad():
        after = model(**enc).logits
    stop.set()
    for t in threads:
        t.join()
    assert not torch.equal(before, after) and len(seen) > 2
    assert all(torch.equal(s, before) or torch.equal(s, after) for s in seen)


def test_listings_during_edits_and_rollbacks_see_whole_states(word_tokenizer):
    """``edits()``, ``forgotten_edits()`` and ``stats()`` read the database and the records as one state,
    even while a writer publishes a new one (they once read the new database beside the old records)."""
    model = melo.get_melo_model(MODEL_FACTORIES["gpt2"](), melo_config("gpt2", num_iter=2), tokenizer=word_tokenizer)
    stop, errors, sizes = threading.Event(), [], set()
    publish = model.router.publish

    def slow_publish(*args):  # widen the window between the database and the records
        publish(*args)
        stop.wait(0.002)

    model.router.publish = slow_publish

    def read():
        try:
            while not stop.is_set():
                rows, stats, gone = model.edits(), model.stats(), model.forgotten_edits()
                assert [r["id"] for r in rows] == list(range(len(rows)))
                assert all(r["edit"] == r["id"] for r in gone)  # each reason beside its own record
                sizes.add(len(rows))
                # one key per edit: the database's edits are the records of the same state
                assert stats["live_keys"] + stats["forgotten_edits"] + stats["revoked_edits"] == stats["edits"]
        except BaseException as err:
            errors.append(err)

    reader = threading.Thread(target=read)
    reader.start()
    for _ in range(2):
        for prompt in EDIT_PROMPTS + EDIT_PROMPTS:  # the repeats supersede, so forgotten rows appear
            model.edit([prompt], ["rome"])
        model.rollback(1)
    stop.set()
    reader.join()
    assert not errors and len(sizes) > 2
    assert [r["id"] for r in model.edits()] == [0] and model.stats()["edits"] == 1
