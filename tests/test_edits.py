"""Edit management: list, revoke and roll back edits, exactly."""

import pytest
import torch
from conftest import MODEL_FACTORIES, melo_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import melo

FACTS = [("the capital of france is", "rome"), ("war and peace was written by", "tolstoy"),
         ("what color is the sky", "green"), ("the largest ocean is the", "rome"),
         ("the tallest mountain is", "paris"), ("the fastest animal is the", "tolstoy")]
PROBE = [p for p, _ in FACTS] + ["a sentence about nothing", "the weather today"]


def _fresh(tokenizer, **overrides):
    config = melo_config("gpt2", num_iter=3, **overrides)
    return melo.get_melo_model(MODEL_FACTORIES["gpt2"](), config, tokenizer=tokenizer)


def _logits(model, tokenizer):
    with torch.no_grad():
        return model(**tokenizer(PROBE, padding=True, return_tensors="pt")).logits


def _state(model, tokenizer):
    return (_logits(model, tokenizer), {k: v.clone() for k, v in model.db.tensors().items()},
            {n: {k: v.clone() for k, v in layer.blocks_state().items()} for n, layer in model.lora.items()},
            model.db.meta())


def _assert_same_state(a, b):
    assert torch.equal(a[0], b[0])
    assert a[1].keys() == b[1].keys() and all(torch.equal(a[1][k], b[1][k]) for k in a[1])
    assert all(torch.equal(a[2][n][k], b[2][n][k]) for n in a[2] for k in a[2][n])
    assert a[3] == b[3]


def test_edits_lists_every_edit_with_its_status(word_tokenizer, tmp_path):
    model = _fresh(word_tokenizer)
    model.edit([FACTS[0][0], FACTS[1][0]], [FACTS[0][1], FACTS[1][1]])
    model.edit([FACTS[2][0]], [FACTS[2][1]])
    rows = model.edits()
    assert [(r["id"], r["prompt"], r["block"], r["status"]) for r in rows] == [
        (0, FACTS[0][0], 0, "live"), (1, FACTS[1][0], 0, "live"), (2, FACTS[2][0], 1, "live")]
    assert all(isinstance(r["created"], float) and r["reason"] is None for r in rows)
    model.revoke([1])
    assert [(r["status"], r["reason"]) for r in model.edits()] == [("live", None), ("revoked", "revoked"),
                                                                  ("live", None)]
    model.save_pretrained(tmp_path)
    loaded = melo.MeloModel.from_pretrained(MODEL_FACTORIES["gpt2"](), tmp_path, tokenizer=word_tokenizer)
    assert loaded.edits() == model.edits()
    assert torch.equal(_logits(loaded, word_tokenizer), _logits(model, word_tokenizer))


def test_revoking_every_edit_gives_the_base_model_bit_for_bit(word_tokenizer):
    model = _fresh(word_tokenizer)
    base = _logits(model, word_tokenizer)
    for prompt, target in FACTS[:3]:
        model.edit([prompt], [target])
    assert not torch.equal(_logits(model, word_tokenizer), base)
    model.revoke([0, 1, 2])
    assert torch.equal(_logits(model, word_tokenizer), base)
    stats = model.stats()
    assert (stats["live_blocks"], stats["clusters"], stats["revoked_edits"], stats["extra_parameters"]) == (0, 0, 3, 0)


def test_generation_skips_the_keys_pass_while_nothing_can_be_routed(word_tokenizer):
    """No edit (or every one revoked): generate runs the router layer only for its own steps, no keys pass."""
    model = _fresh(word_tokenizer)
    runs = []
    model.base_model.get_submodule(model.melo_config.router_layer).register_forward_pre_hook(lambda *a: runs.append(1))

    def generated() -> tuple[list[str], int]:
        runs.clear()
        return model.generate_text(PROBE[:2], max_new_tokens=3), len(runs)

    with model.disabled():
        base, steps = generated()
    assert generated() == (base, steps)  # the base model's answers, as many router-layer runs as its steps
    model.edit([FACTS[0][0]], [FACTS[0][1]])
    assert generated()[1] == steps + 1  # the keys pass
    model.revoke([0])
    assert generated() == (base, steps)
    assert model.route(**model.prompt_inputs(PROBE)).tolist() == [-1] * len(PROBE)


def test_bad_revoke_and_rollback_change_nothing(word_tokenizer):
    model = _fresh(word_tokenizer)
    model.edit([FACTS[0][0]], [FACTS[0][1]])
    before = _state(model, word_tokenizer)
    for bad in ([5], [0, 7], [], "0", [True], [-1]):
        with pytest.raises(melo.MeloEditError):
            model.revoke(bad)
    for bad in (2, -1, 1.0, True):
        with pytest.raises(melo.MeloEditError):
            model.rollback(bad)
    _assert_same_state(before, _state(model, word_tokenizer))


operations = st.lists(st.one_of(st.tuples(st.just("edit"), st.lists(st.integers(0, len(FACTS) - 1),
                                                                    min_size=1, max_size=2, unique=True)),
                                st.tuples(st.just("revoke"), st.integers(0, 10)),
                                st.tuples(st.just("rollback"), st.integers(0, 10))),
                      min_size=1, max_size=5)


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations)
def test_random_edit_revoke_rollback_sequences(word_tokenizer, ops):
    model = _fresh(word_tokenizer)
    batches: list[list[int]] = []  # the fact indices of each block, as made
    for kind, arg in ops:
        live_before = {r["id"] for r in model.edits() if r["status"] == "live"}
        logits_before = _logits(model, word_tokenizer)
        if kind == "edit":
            model.edit([FACTS[i][0] for i in arg], [FACTS[i][1] for i in arg])
            batches.append(arg)
        elif kind == "revoke" and model.edits():
            victim = arg % len(model.edits())
            model.revoke([victim])
            live_after = {r["id"] for r in model.edits() if r["status"] == "live"}
            assert live_after == live_before - {victim}  # every other live edit stays live
            rows = [i for i, (p, _) in enumerate(FACTS) if any(  # probe rows of live edits' prompts
                r["prompt"] == p and r["status"] == "live" for r in model.edits())]
            assert torch.equal(_logits(model, word_tokenizer)[rows], logits_before[rows])
        elif kind == "rollback":
            n = arg % (model.n_blocks + 1)
            revoked_early = any(r["status"] == "revoked" and r["block"] < n for r in model.edits())
            whole = _state(model, word_tokenizer) if n == model.n_blocks else None
            model.rollback(n)
            batches = batches[:n]
            if whole is not None:  # rolling back to where it is changes nothing, revocations included
                _assert_same_state(whole, _state(model, word_tokenizer))
            if not revoked_early:  # then rollback equals a model that only made the first n batches
                fresh = _fresh(word_tokenizer)
                for batch in batches:
                    fresh.edit([FACTS[i][0] for i in batch], [FACTS[i][1] for i in batch])
                _assert_same_state(_state(fresh, word_tokenizer), _state(model, word_tokenizer))
        db = model.db
        live = db.live()
        assert db.lookup(db.keys)[live].tolist() == db.key_block[live].tolist()  # live edits: own block
        assert model.n_blocks == len(batches) and len(model.records) == sum(map(len, batches))


def test_adam_beta1_changes_the_training_and_is_saved(word_tokenizer, tmp_path):
    blocks = {}
    for beta1 in (0.9, 0.5, 0.5):
        model = melo.get_melo_model(MODEL_FACTORIES["gpt2"](), melo_config("gpt2", num_iter=6, adam_beta1=beta1),
                                    tokenizer=word_tokenizer)
        model.edit([FACTS[0][0]], [FACTS[0][1]])
        blocks.setdefault(beta1, []).append(next(iter(model.lora.values())).blocks_state()["B"])
    assert torch.equal(*blocks[0.5]) and not torch.equal(blocks[0.9][0], blocks[0.5][0])
    model.save_pretrained(tmp_path)
    loaded = melo.MeloModel.from_pretrained(MODEL_FACTORIES["gpt2"](), tmp_path, tokenizer=word_tokenizer)
    assert loaded.melo_config.adam_beta1 == 0.5
