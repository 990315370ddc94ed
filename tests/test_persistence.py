"""save_pretrained / from_pretrained: bit-exact round trips, atomic files, continued editing."""

import os

import pytest
import torch
from conftest import EDIT_PROMPTS, MODEL_FACTORIES, UNRELATED, edit_targets, melo_config
from transformers import GPT2Config, GPT2LMHeadModel

import melo
from melo.persistence import META_FILE, TENSORS_FILE


def outputs(model, tok, family):
    enc = tok(EDIT_PROMPTS + UNRELATED, padding=True, return_tensors="pt")
    if family == "t5":
        enc["decoder_input_ids"] = torch.zeros(len(EDIT_PROMPTS + UNRELATED), 2, dtype=torch.long)
    with torch.no_grad():
        return model(**enc).logits, model.route(enc["input_ids"], enc["attention_mask"])


@pytest.mark.parametrize("family", ["bert", "t5", "gpt2", "llama"])
def test_round_trip_is_bit_exact_and_editing_continues(tmp_path, word_tokenizer, family):
    config = melo_config(family, num_iter=5)
    base = MODEL_FACTORIES[family]()
    targets = edit_targets(family, base, word_tokenizer)
    model = melo.get_melo_model(base, config, tokenizer=word_tokenizer)
    model.edit(EDIT_PROMPTS[:1], targets[:1])
    model.edit(EDIT_PROMPTS[1:], targets[1:])
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted([META_FILE, TENSORS_FILE])

    loaded = melo.MeloModel.from_pretrained(MODEL_FACTORIES[family](), tmp_path, tokenizer=word_tokenizer)
    before, after = outputs(model, word_tokenizer, family), outputs(loaded, word_tokenizer, family)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    assert before[1].tolist() == [0, 1, -1, -1, -1, -1]
    assert loaded.stats() == model.stats() and loaded.records == model.records
    assert loaded.melo_config == model.melo_config

    more = ["what color is the sky"]
    more_targets = edit_targets(family, MODEL_FACTORIES[family](), word_tokenizer, more)
    for m in (model, loaded):
        assert m.edit(more, more_targets).block == 2
    assert torch.equal(outputs(model, word_tokenizer, family)[0], outputs(loaded, word_tokenizer, family)[0])


def test_saving_again_replaces_files_atomically(tmp_path, word_tokenizer):
    model = melo.get_melo_model(MODEL_FACTORIES["gpt2"](), melo_config("gpt2", num_iter=2), tokenizer=word_tokenizer)
    model.save_pretrained(tmp_path)
    empty = melo.MeloModel.from_pretrained(MODEL_FACTORIES["gpt2"](), tmp_path, tokenizer=word_tokenizer)
    assert empty.stats()["edits"] == 0
    model.edit(EDIT_PROMPTS, ["rome", "tolstoy"])
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted([META_FILE, TENSORS_FILE])
    assert melo.MeloModel.from_pretrained(MODEL_FACTORIES["gpt2"](), tmp_path).stats()["edits"] == 2


def test_loading_onto_another_shape_names_the_module(tmp_path, word_tokenizer):
    model = melo.get_melo_model(MODEL_FACTORIES["gpt2"](), melo_config("gpt2", num_iter=2), tokenizer=word_tokenizer)
    model.edit(EDIT_PROMPTS[:1], ["rome"])
    model.save_pretrained(tmp_path)
    wider = GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=48, n_layer=4, n_head=2, n_positions=64, bos_token_id=3, eos_token_id=1))
    with pytest.raises(melo.MeloLoadError, match="transformer.h.2.mlp.c_fc"):
        melo.MeloModel.from_pretrained(wider, tmp_path)
    with pytest.raises(melo.MeloLoadError, match="transformer.h.2.mlp.c_fc"):
        melo.MeloModel.from_pretrained(MODEL_FACTORIES["llama"](), tmp_path)
    with pytest.raises(melo.MeloLoadError, match="no MELO adapter"):
        melo.MeloModel.from_pretrained(MODEL_FACTORIES["gpt2"](), tmp_path / "missing")
