"""Settings of the offline MiniLM stand-ins (``melo.standins``); the sweeps behind them: ``docs/standins/*.md``."""

from __future__ import annotations

from typing import Any

# router in the encoder ([CLS] of layer 5), LoRA on the 4 decoder FFN Linears
MINILM_QA: dict[str, Any] = dict(
    task="seq2seq", router_layer="encoder.encoder.layer.5",
    target_modules=[
        "decoder.bert.encoder.layer.0.intermediate.dense", "decoder.bert.encoder.layer.0.output.dense",
        "decoder.bert.encoder.layer.1.intermediate.dense", "decoder.bert.encoder.layer.1.output.dense",
    ],
    key_pooling="first", normalize_keys=True, init_radius=0.32, block_rank=4,
    edit_lr=1e-2, num_iter=30, lr_step=20, lr_gamma=0.5,
)

PRESETS: dict[str, dict[str, Any]] = {
    "minilm-qa": MINILM_QA,
    # router on layer 3 (the last frozen layer), LoRA on the FFN outputs of layers 4-5
    "minilm-scotus": dict(
        task="classification", router_layer="bert.encoder.layer.3",
        target_modules=["bert.encoder.layer.4.output.dense", "bert.encoder.layer.5.output.dense"],
        key_pooling="mean", normalize_keys=True, init_radius=0.1, block_rank=4,
        edit_lr=1e-2, num_iter=25, lr_step=20, lr_gamma=0.5,
    ),
    # router on layer 3 (mean-pooled), LoRA on the FFN inputs of layers 4-5
    "minilm-lm": dict(
        task="causal_lm", router_layer="bert.encoder.layer.3",
        target_modules=["bert.encoder.layer.4.intermediate.dense", "bert.encoder.layer.5.intermediate.dense"],
        key_pooling="mean", normalize_keys=True, init_radius=0.02, block_rank=8, lora_alpha=32.0,
        edit_lr=1e-2, num_iter=75, lr_step=50, lr_gamma=0.5,
    ),
}
