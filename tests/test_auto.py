"""melo.auto_config: layers found from the module tree by depth, the MLP output projection found by
shape and position, the key source, and clear refusals."""

import logging

import pytest
import torch
import transformers
from conftest import EDIT_PROMPTS, MODEL_FACTORIES, UNRELATED, VOCAB_SIZE

import melo
from melo import auto
from melo.nethook import supported_features
from melo.presets import PRESETS

MLP_OUTPUT = {"bert": "output.dense", "t5": "layer.2.DenseReluDense.wo", "gpt2": "mlp.c_proj",
              "gptneox": "mlp.dense_4h_to_h"}  # every other family: mlp.down_proj


def tiny_llama(layers):
    config = transformers.LlamaConfig(vocab_size=VOCAB_SIZE, hidden_size=16, intermediate_size=32,
                                      num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2)
    return transformers.LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("family", sorted(MODEL_FACTORIES))
def test_targets_are_the_mlp_output_projections_after_the_router(family):
    model = MODEL_FACTORIES[family]()
    config = melo.auto_config(model)
    modules = dict(model.named_modules())
    hidden = model.get_input_embeddings().embedding_dim
    assert config.task == {"bert": "classification", "t5": "seq2seq"}.get(family, "causal_lm")
    for name in config.target_modules:
        assert name.endswith("." + MLP_OUTPUT.get(family, "mlp.down_proj"))
        fin, fout = supported_features(modules[name], name)
        assert fout == hidden and fin > hidden
    stack, router_block = config.router_layer.rsplit(".", 1)
    if family == "t5":  # the router in the encoder, the targets in the decoder
        assert stack == "encoder.block" and all(n.startswith("decoder.block.") for n in config.target_modules)
        return
    blocks = [int(n.removeprefix(stack + ".").split(".")[0]) for n in config.target_modules]
    assert min(blocks) > int(router_block)


@pytest.mark.parametrize("layers, router, targets", [(30, 12, (25, 26)), (18, 7, (15, 16)), (6, 2, (4, 5)),
                                                     (4, 1, (2, 3)), (2, 0, (1,))])
def test_layers_are_chosen_by_relative_depth(layers, router, targets):
    """SmolLM2-135M's 30 layers: router 12, targets 25-26; Gemma-3-270M's 18: 15-16 (docs/auto.md)."""
    config = melo.auto_config(tiny_llama(layers))
    assert config.router_layer == f"model.layers.{router}"
    assert config.target_modules == [f"model.layers.{i}.mlp.down_proj" for i in targets]


def test_key_source_minilm_when_installed_else_own_states(monkeypatch):
    model = MODEL_FACTORIES["llama"]()
    minilm = melo.auto_config(model)
    assert (minilm.key_encoder, minilm.key_pooling, minilm.normalize_keys, minilm.init_radius) == ("minilm", "mean",
                                                                                                   True, 0.8)
    monkeypatch.setattr(auto, "minilm_installed", lambda: False)
    own = melo.auto_config(model)
    assert (own.key_encoder, own.key_pooling, own.normalize_keys, own.key_sink_ratio, own.init_radius) == (
        None, "mean", True, 8.0, 0.31)
    monkeypatch.undo()
    assert melo.auto_config(model, key_encoder=None) == own  # asked for: the model's own states


def test_base_and_overrides_replace_settings_and_choices():
    model = MODEL_FACTORIES["gpt2"]()
    config = melo.auto_config(model, base={"block_rank": 2, "init_radius": 0.6}, num_iter=7,
                              target_modules=["transformer.h.3.mlp.c_fc"])
    assert (config.block_rank, config.init_radius, config.num_iter) == (2, 0.6, 7)
    assert config.target_modules == ["transformer.h.3.mlp.c_fc"] and config.router_layer == "transformer.h.1"


def test_the_settings_are_the_smollm2_presets_without_their_layers():
    # the first SmolLM2 layout's settings (rank 4, float32), which the depth sweep of docs/auto.md ran with
    from melo.presets.llm import SMOLLM2_ZSRE

    layers = ("router_layer", "target_modules", "task")
    for name, keys in ((SMOLLM2_ZSRE, "minilm"), (PRESETS["smollm2-zsre-own"], "own")):
        preset = {k: v for k, v in name.items() if k not in layers}
        assert {**auto.SETTINGS, **auto.KEY_SETTINGS[keys]} == preset, keys


def test_describe_names_the_choice_and_auto_config_logs_it(caplog):
    with caplog.at_level(logging.INFO, logger="melo.auto"):
        config = melo.auto_config(MODEL_FACTORIES["gptneox"](), key_encoder=None)
    line = auto.describe(config)
    assert line in caplog.text
    assert "router gpt_neox.layers.1" in line and "gpt_neox.layers.3.mlp.dense_4h_to_h" in line
    assert "router-layer states (mean pooling, sink ratio 8)" in line


def test_mixture_of_experts_and_stackless_models_are_refused_with_the_reason():
    config = transformers.MixtralConfig(vocab_size=VOCAB_SIZE, hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, head_dim=32,
                                        num_local_experts=4, num_experts_per_tok=2)
    with pytest.raises(melo.MeloConfigError, match=r"'model.layers.1.mlp.experts' \(MixtralExperts\).*mixture-of"):
        melo.auto_config(transformers.MixtralForCausalLM(config).eval())  # o_proj (64 -> 32) is not taken
    with pytest.raises(melo.MeloConfigError, match="Linear has no nn.ModuleList"):
        melo.auto_config(torch.nn.Linear(2, 2))


def test_with_a_key_encoder_the_router_block_changes_nothing(word_tokenizer):
    """Why auto's router depth only matters for own keys: MiniLM keys read the prompt text."""
    results = []
    for router in ("model.layers.0", "model.layers.1"):
        config = melo.auto_config(MODEL_FACTORIES["qwen2"](), router_layer=router, num_iter=5, stop_loss=None)
        model = melo.get_melo_model(MODEL_FACTORIES["qwen2"](), config, tokenizer=word_tokenizer)
        model.edit(EDIT_PROMPTS[:1], ["rome"])
        enc = word_tokenizer(EDIT_PROMPTS + UNRELATED, padding=True, return_tensors="pt")
        with torch.no_grad():
            results.append((model.lora.state_dict(), model(**enc).logits, model.route(enc["input_ids"])))
    (blocks_a, logits_a, route_a), (blocks_b, logits_b, route_b) = results
    assert all(torch.equal(blocks_a[k], blocks_b[k]) for k in blocks_a)
    assert torch.equal(logits_a, logits_b) and torch.equal(route_a, route_b) and route_a[0] == 0
