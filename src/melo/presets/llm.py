"""Settings of the real instruct LLMs (``melo.loading``'s offline models) used by ``melo bench`` and ``melo serve``.

Why each value: ``docs/presets.md`` (the sweeps are in ``docs/smollm2-routing.md``, ``docs/counterfact.md``
and ``docs/hallucination.md``).
"""

from __future__ import annotations

from typing import Any

# SmolLM2-135M-Instruct (30 Llama layers): rank-4 blocks on the FFN outputs of layers 20-21, keys from MiniLM
# on the prompt text
SMOLLM2_ZSRE: dict[str, Any] = dict(
    task="causal_lm", router_layer="model.layers.12",
    target_modules=["model.layers.20.mlp.down_proj", "model.layers.21.mlp.down_proj"],
    key_encoder="minilm", key_pooling="mean", normalize_keys=True, key_sink_ratio=8.0,
    block_rank=4, init_radius=0.8, conflict_rule="nearest", edit_lr=1e-2, num_iter=30, lr_step=20, lr_gamma=0.5,
    stop_loss=0.02,
)

# Lifelong editing at scale: one rank-2 bfloat16 block on layer 27's FFN output (8.4 KB per edit; a training step
# runs 3 of the 30 layers), learning rate 3e-2 for up to 40 steps (docs/scale.md: the sweep). The demo and the
# hallucination preset keep the first layout above.
SMOLLM2_LIFELONG: dict[str, Any] = {**SMOLLM2_ZSRE, "target_modules": ["model.layers.27.mlp.down_proj"],
                                    "block_rank": 2, "block_dtype": "bfloat16", "edit_lr": 3e-2, "num_iter": 40,
                                    "lr_step": 30}

PRESETS: dict[str, dict[str, Any]] = {
    # Adam's beta1 0.5: zsRE's multi-token answers settle in fewer steps (docs/scale.md)
    "smollm2-zsre": {**SMOLLM2_LIFELONG, "adam_beta1": 0.5},
    # SmolLM2's own keys (layer 12, mean without attention sinks)
    "smollm2-zsre-own": {**SMOLLM2_ZSRE, "key_encoder": None, "init_radius": 0.31},
    # an edit routes only prompts that name its subject, so the ball can reach its paraphrases (docs/counterfact.md)
    # (not inside a longer name: "Nintendo" does not take "Nintendo 64 is developed by"); trained to loss 0.01
    "smollm2-counterfact": {**SMOLLM2_LIFELONG, "init_radius": 1.1, "subject_gate": True, "subject_names": True,
                            "lora_alpha": 32.0, "stop_loss": 0.01},
    # whole Wikipedia sentences, 4 per block of rank 8, on layers 27-28
    "smollm2-hallucination": {**SMOLLM2_ZSRE, "block_rank": 8, "init_radius": 0.05, "num_iter": 60, "lr_step": 40,
                              "edit_lr": 3e-2, "stop_loss": 0.15,
                              "target_modules": ["model.layers.27.mlp.down_proj", "model.layers.28.mlp.down_proj"]},
    # Gemma-3-270M (18 layers): the SmolLM2 layout moved to its last third
    "gemma3-270m-zsre": {**SMOLLM2_ZSRE, "router_layer": "model.layers.9",
                         "target_modules": ["model.layers.13.mlp.down_proj", "model.layers.14.mlp.down_proj"]},
}
