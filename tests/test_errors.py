"""Every user error raises a specific exception naming what is wrong; failed edits change nothing."""

import pytest
import torch
from conftest import EDIT_PROMPTS, MODEL_FACTORIES, UNRELATED, melo_config

import melo


def wrap(family, tok, **overrides):
    return melo.get_melo_model(MODEL_FACTORIES[family](), melo_config(family, **overrides), tokenizer=tok)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"target_modules": ["transformer.h.9.mlp.c_fc"]}, "unknown target module 'transformer.h.9.mlp.c_fc'"),
        ({"target_modules": r"transformer\.h\.\d+\.mlp\.nothing"}, "matches no module"),
        ({"router_layer": "transformer.h.1.nope"}, "unknown router layer 'transformer.h.1.nope'"),
        ({"target_modules": ["transformer.h.0.mlp.c_fc"]}, "'transformer.h.0.mlp.c_fc' runs before the router"),
        ({"target_modules": ["transformer.h.3.ln_2"]}, "'transformer.h.3.ln_2' is a LayerNorm"),
        ({"router_layer": "transformer.h.1.mlp.dropout", "target_modules": ["transformer.h.1.mlp.c_fc"]},
         "'transformer.h.1.mlp.c_fc' runs before the router"),
    ],
)
def test_bad_module_names_and_types(word_tokenizer, overrides, message):
    with pytest.raises(melo.MeloConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        wrap("gpt2", word_tokenizer, **overrides)


def test_router_may_give_pooled_states_or_model_outputs(word_tokenizer):
    pooled = wrap("bert", word_tokenizer, router_layer="bert.pooler.activation", target_modules=["classifier"])
    assert pooled.encode_keys(EDIT_PROMPTS).shape == (2, 32)
    whole = wrap("bert", word_tokenizer, router_layer="bert.encoder", target_modules=["classifier"])
    assert whole.encode_keys(EDIT_PROMPTS).shape == (2, 32)


def test_seq2seq_router_must_be_in_the_encoder(word_tokenizer):
    message = "'decoder.block.1.layer.2.DenseReluDense.wo' is not in the encoder"
    with pytest.raises(melo.MeloConfigError, match=message):
        wrap("t5", word_tokenizer, router_layer="decoder.block.1.layer.2.DenseReluDense.wo",
             target_modules=["decoder.block.2.layer.2.DenseReluDense.wo"])


def test_regex_targets(word_tokenizer):
    model = wrap("gpt2", word_tokenizer, target_modules=r"transformer\.h\.[23]\.mlp\.c_fc")
    names = sorted(layer.name for layer in model.lora.values())
    assert names == ["transformer.h.2.mlp.c_fc", "transformer.h.3.mlp.c_fc"]


@pytest.mark.parametrize(
    "family, prompts, targets, message",
    [
        ("gpt2", [], [], "empty edit batch"),
        ("gpt2", ["the dog"], ["a", "b"], "prompts has 1 entries but targets has 2"),
        ("gpt2", ["the dog", "  "], ["a", "b"], r"prompts\[1\] is '  '"),
        ("gpt2", ["the dog"], [""], r"targets\[0\] is ''"),
        ("gpt2", ["the dog"], [3], r"targets\[0\] is 3: causal_lm targets must be non-empty strings"),
        ("t5", ["the dog"], [None], r"targets\[0\] is None"),
        ("bert", ["the dog"], ["cat"], r"targets\[0\] is 'cat': classification targets must be class ids"),
        ("bert", ["the dog"], [7], r"targets\[0\] is 7: not a class id of a 3-label model"),
        ("bert", ["the dog"], [True], r"targets\[0\] is True"),
        ("gpt2", "the dog", "rome", "must be lists"),
    ],
)
def test_bad_edit_batches(word_tokenizer, family, prompts, targets, message):
    model = wrap(family, word_tokenizer)
    with pytest.raises(melo.MeloEditError, match=message):
        model.edit(prompts, targets)
    assert model.stats()["edits"] == 0 and model.n_blocks == 0


def snapshot(model, tok):
    enc = tok(EDIT_PROMPTS + UNRELATED, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    db = {k: v.clone() for k, v in model.db.tensors().items()}
    layers = {n: {k: v.clone() for k, v in layer.blocks_state().items()} for n, layer in model.lora.items()}
    return logits, db, layers, list(model.records), model.db.meta()


def assert_same(a, b):
    assert torch.equal(a[0], b[0])
    assert a[1].keys() == b[1].keys() and all(torch.equal(a[1][k], b[1][k]) for k in a[1])
    assert all(torch.equal(a[2][n][k], b[2][n][k]) for n in a[2] for k in a[2][n])
    assert a[3] == b[3] and a[4] == b[4]


def test_max_blocks_raises_and_changes_nothing(word_tokenizer):
    model = wrap("gpt2", word_tokenizer, max_blocks=1, num_iter=2)
    model.edit(EDIT_PROMPTS[:1], ["rome"])
    before = snapshot(model, word_tokenizer)
    with pytest.raises(melo.MeloCapacityError, match="max_blocks=1"):
        model.edit(EDIT_PROMPTS[1:], ["tolstoy"])
    assert_same(before, snapshot(model, word_tokenizer))


def test_a_failed_edit_leaves_the_model_as_before(word_tokenizer, monkeypatch):
    model = wrap("gpt2", word_tokenizer, num_iter=6)
    model.edit(EDIT_PROMPTS[:1], ["rome"])
    before = snapshot(model, word_tokenizer)
    calls = {"n": 0}
    real_step = torch.optim.Adam.step

    def failing_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", failing_step)
    with pytest.raises(KeyboardInterrupt):
        model.edit(["what color is the sky", EDIT_PROMPTS[0]], ["green", "paris"])
    assert_same(before, snapshot(model, word_tokenizer))
    assert all(p.requires_grad for p in model.base_model.parameters())
    assert all(layer.active_A is None for layer in model.lora.values())
    monkeypatch.undo()
    assert model.edit(["what color is the sky"], ["green"]).block == 1


def test_diverging_loss_is_reported(word_tokenizer):
    model = wrap("gpt2", word_tokenizer, edit_lr=1e30, num_iter=3)
    with pytest.raises(melo.MeloEditError, match="diverged"):
        model.edit(EDIT_PROMPTS[:1], ["rome"])
    assert model.n_blocks == 0 and model.db.n_keys == 0


def test_target_before_routing_is_an_error(word_tokenizer):
    model = wrap("t5", word_tokenizer)
    enc = word_tokenizer(EDIT_PROMPTS, padding=True, return_tensors="pt")
    encoder_outputs = model.base_model.get_encoder()(**enc)
    with pytest.raises(melo.MeloRoutingError, match="'decoder.block.2.layer.2.DenseReluDense.wi'"):
        model(encoder_outputs=encoder_outputs, attention_mask=enc["attention_mask"],
              decoder_input_ids=torch.zeros(2, 1, dtype=torch.long))


def test_the_tokenizer_is_required_at_construction(tmp_path, word_tokenizer):
    with pytest.raises(melo.MeloConfigError, match="MeloModel needs the model's tokenizer"):
        melo.get_melo_model(MODEL_FACTORIES["gpt2"](), melo_config("gpt2"))
    model = melo.get_melo_model(MODEL_FACTORIES["gpt2"](), melo_config("gpt2"), tokenizer=word_tokenizer)
    model.save_pretrained(tmp_path)
    with pytest.raises(melo.MeloConfigError, match="from_pretrained needs the model's tokenizer"):
        melo.MeloModel.from_pretrained(MODEL_FACTORIES["gpt2"](), tmp_path)


def test_bad_config_values():
    with pytest.raises(melo.MeloConfigError, match="task 'regression'"):
        melo.MeloConfig(task="regression", target_modules=["a"], router_layer="b")
    with pytest.raises(melo.MeloConfigError, match="key_pooling 'max'"):
        melo.MeloConfig(task="causal_lm", target_modules=["a"], router_layer="b", key_pooling="max")
    with pytest.raises(melo.MeloConfigError, match="block_rank"):
        melo.MeloConfig(task="causal_lm", target_modules=["a"], router_layer="b", block_rank=0)
    with pytest.raises(melo.MeloConfigError, match="unknown MeloConfig fields"):
        melo.MeloConfig.from_dict({"task": "causal_lm", "target_modules": ["a"], "router_layer": "b", "rank": 3})
