"""Stored blocks in a narrower dtype: exact save / load, the dtype kept across casts, bytes halved."""

import pytest
import torch
from conftest import EDIT_PROMPTS, MODEL_FACTORIES, UNRELATED, edit_targets, melo_config

import melo
from melo.errors import MeloConfigError, MeloLoadError
from melo.persistence import read_adapter, write_adapter


def logits(model, tok, prompts=EDIT_PROMPTS + UNRELATED):
    enc = tok(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits


@pytest.fixture(scope="module")
def edited(word_tokenizer):
    made = {}
    for dtype in (None, "bfloat16", "float16"):
        base = MODEL_FACTORIES["gpt2"]()
        model = melo.get_melo_model(base, melo_config("gpt2", num_iter=8, block_dtype=dtype), tokenizer=word_tokenizer)
        for prompt, target in zip(EDIT_PROMPTS, edit_targets("gpt2", base, word_tokenizer)):
            model.edit([prompt], [target])
        made[dtype] = model
    return made


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_reduced_precision_blocks_save_and_load_bit_exactly(tmp_path, word_tokenizer, edited, dtype):
    model = edited[dtype]
    layer = next(iter(model.lora.values()))
    assert layer.A.dtype == layer.B.dtype == getattr(torch, dtype)
    model.save_pretrained(tmp_path)
    tensors, _ = read_adapter(tmp_path)
    assert tensors[f"lora.{layer.name}.A"].dtype == getattr(torch, dtype)
    loaded = melo.MeloModel.from_pretrained(MODEL_FACTORIES["gpt2"](), tmp_path, tokenizer=word_tokenizer)
    for a, b in zip(model.lora.values(), loaded.lora.values()):
        assert a.A.dtype == b.A.dtype and torch.equal(a.blocks_state()["A"], b.blocks_state()["A"])
        assert torch.equal(a.blocks_state()["B"], b.blocks_state()["B"])
    assert torch.equal(logits(model, word_tokenizer), logits(loaded, word_tokenizer))
    assert loaded.melo_config.block_dtype == dtype


def test_edits_hold_and_bytes_halve_in_bfloat16(word_tokenizer, edited):
    full, half = edited[None], edited["bfloat16"]
    assert half.stats()["adapter_bytes"] * 2 == full.stats()["adapter_bytes"]
    assert half.stats()["adapter_bytes_per_edit"] == half.stats()["adapter_bytes"] / 2
    routed = half.route(**{k: v for k, v in word_tokenizer(EDIT_PROMPTS + UNRELATED, padding=True,
                                                             return_tensors="pt").items() if k != "token_type_ids"})
    assert routed.tolist() == [0, 1, -1, -1, -1, -1]
    # unrouted rows are the base model bit for bit; routed rows carry the edit
    with half.disabled():
        base = logits(half, word_tokenizer)
    assert torch.equal(logits(half, word_tokenizer)[2:], base[2:])


def test_the_stored_dtype_survives_casts_and_follows_them_when_unset(word_tokenizer, edited):
    fixed, follows = edited["bfloat16"], edited[None]
    fixed.double(), follows.double()
    try:
        assert next(iter(fixed.lora.values())).A.dtype == torch.bfloat16
        assert next(iter(follows.lora.values())).A.dtype == torch.float64
        name = next(iter(fixed.lora.values())).name
        assert fixed.router.version.weights[name][0].dtype == torch.bfloat16
        assert logits(fixed, word_tokenizer).dtype == torch.float64
    finally:
        fixed.float(), follows.float()


def test_a_save_in_another_dtype_than_the_config_is_refused(tmp_path, word_tokenizer, edited):
    edited["bfloat16"].save_pretrained(tmp_path)
    tensors, meta = read_adapter(tmp_path)
    tensors = {k: v.float() if k.startswith("lora.") else v for k, v in tensors.items()}
    write_adapter(tmp_path, tensors, {k: v for k, v in meta.items() if k not in ("format_version", "storage")})
    with pytest.raises(MeloLoadError, match="config stores bfloat16"):
        melo.MeloModel.from_pretrained(MODEL_FACTORIES["gpt2"](), tmp_path, tokenizer=word_tokenizer)


def test_unknown_block_dtype_is_a_config_error():
    with pytest.raises(MeloConfigError, match="block_dtype 'int8'"):
        melo_config("gpt2", block_dtype="int8")
