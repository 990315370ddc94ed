"""Training-time augmentation (melo.augment): context prefixes written by the model, seeded, saved."""

import pytest
import torch
from conftest import MODEL_FACTORIES, make_word_tokenizer, melo_config

import melo
from melo.augment import augmented, in_context
from melo.errors import MeloConfigError, MeloLoadError

PROMPTS = ["the capital of france is", "who wrote hamlet"]
TARGETS = ["paris", "shakespeare"]


def load(directory):
    return melo.MeloModel.from_pretrained(MODEL_FACTORIES["llama"](), directory, tokenizer=make_word_tokenizer())


def fresh(**overrides):
    config = melo_config("llama", num_iter=5, **overrides)
    return melo.get_melo_model(MODEL_FACTORIES["llama"](), config, tokenizer=make_word_tokenizer())


def test_variants_follow_the_prompts_in_order():
    prompts, targets = augmented(PROMPTS, TARGETS, ["a b", "c"])
    assert prompts == PROMPTS + ["a b. " + p for p in PROMPTS] + ["c. " + p for p in PROMPTS]
    assert targets == TARGETS * 3
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "who wrote hamlet"}]
    assert in_context(chat, "x") == [chat[0], {"role": "user", "content": "x. who wrote hamlet"}]
    assert chat[1]["content"] == "who wrote hamlet"  # the caller's messages are left alone


def test_prefixes_are_deterministic_for_a_seed_and_differ_across_seeds():
    a, b, c = fresh(context_prefixes=4), fresh(context_prefixes=4), fresh(context_prefixes=4, seed=1)
    for m in (a, b, c):
        m.edit(PROMPTS, TARGETS)
    assert len(a.contexts) == 4 and all(isinstance(x, str) and x for x in a.contexts)
    assert a.contexts == b.contexts != c.contexts
    for la, lb in zip(a.lora.values(), b.lora.values()):  # the same training, bit for bit
        assert all(torch.equal(x, y) for x, y in zip(la.blocks_state().values(), lb.blocks_state().values()))


def test_augmented_edit_trains_on_every_variant_and_keys_only_the_prompts():
    plain, aug = fresh(), fresh(context_prefixes=3)
    plain.edit(PROMPTS, TARGETS)
    aug.edit(PROMPTS, TARGETS)
    assert torch.equal(plain.db.keys, aug.db.keys)  # keys from the prompts as given
    assert [r["prompt"] for r in aug.edits()] == PROMPTS
    batch, labels = aug._training_batch(*augmented(PROMPTS, TARGETS, aug.contexts))
    assert batch["input_ids"].shape[0] == len(PROMPTS) * 4 and len(labels) == len(PROMPTS) * 4


def test_contexts_save_and_load_and_a_bad_save_is_refused(tmp_path):
    model = fresh(context_prefixes=2)
    model.edit(PROMPTS, TARGETS)
    model.save_pretrained(tmp_path / "a")
    loaded = load(tmp_path / "a")
    assert loaded.contexts == model.contexts
    model2 = fresh(context_prefixes=2)
    model2.edit(PROMPTS, TARGETS)
    model2.contexts = ["only one"]
    model2.save_pretrained(tmp_path / "b")
    with pytest.raises(MeloLoadError, match="context prefixes"):
        load(tmp_path / "b")


def test_bad_counts_and_tasks_are_refused():
    for bad in (-1, 33, 1.5, True):
        with pytest.raises(MeloConfigError, match="context_prefixes"):
            melo_config("llama", context_prefixes=bad)
    with pytest.raises(MeloConfigError, match="context_prefixes"):
        melo_config("t5", context_prefixes=2, task="seq2seq")
