"""``minilm-lm``: a causal language model made from all-MiniLM-L6-v2, for the hallucination task.

Stands in for GRACE/MELO's GPT2-XL fine-tuned on the WikiBio passages when the hub is out of reach.

Architecture: ``BertLMHeadModel`` with ``is_decoder=True`` (causal self-attention, KV cache) on the
MiniLM encoder weights; the LM head's decoder is tied to the word embeddings, its transform and
bias are new. Tokenizer: MiniLM's WordPiece with ``[CLS]`` as BOS (the only special token added)
and ``[SEP]`` as EOS (so ``tokenizer(prompt)`` is ``[CLS] prompt``, and MELO ends targets with
``[SEP]``); ``generation_config`` has eos ``[SEP]`` and pad ``[PAD]``.

Training data, as GRACE's ``Hallucination(split="pretrain")``: GRACE fine-tunes GPT2-XL for one
epoch on the prompts of the accurate and the original (inaccurate) records, i.e. the passage
header plus the GPT-3 sentences before each annotated sentence, and on 200 WebText texts that are
also in its upstream (TRR) set; it never trains on the Wikipedia sentences (the edit targets), so
the model hallucinates what GPT-3 wrote. Here each passage is one text, header + all GPT-3
sentences (every GRACE prompt is a prefix of it), the first ``webtext_train`` WebText texts (inside
the TRR set, as in GRACE) and ``webtext_extra`` texts from after the TRR set (the benchmark scores
the first 1000). Lower layers frozen and cached, upper layers, LM-head transform and bias trained.

MELO settings (``MELO_SETTINGS``). Router: the mean-pooled, L2-normalised output of layer 3 (the
last frozen layer, so keys are MiniLM's own), radius 0.02; targets: the FFN input projections of
layers 4-5.
The block's capacity and steps come from ``scripts/sweep_settings.py --preset minilm-lm --blocks 5``
(the first 20 edits, 4 per block, fresh model per row; pre-edit perplexity of those edits 678;
ES = mean edit perplexity right after each block, worst = the worst block; 2 threads, other
settings as in MELO_SETTINGS). No row moved TRR or ARR on their first 100 records (no control
prompt was routed), and ERR after the 5 blocks equalled ES (nothing forgotten) in every row.

| rank (alpha) | targets, layers 4-5 | steps | lr | StepLR | ES | worst | s / block |
|---|---|---|---|---|---|---|---|
| 4 (16) | FFN in | 50 | 1e-2 | 30 | 3.45 | 4.70 | 7.1 |
| 4 (16) | FFN in | 50 | 3e-2 | 30 | 69.2 | 83.6 | 6.4 |
| 4 (16) | FFN in | 100 | 1e-2 | 30 | 1.91 | 2.43 | 13.5 |
| 4 (16) | FFN in | 100 | 2e-2 | 30 | 3.31 | 6.83 | 13.6 |
| 4 (16) | FFN in | 100 | 3e-2 | 30 | 16.1 | 19.0 | 12.8 |
| 4 (16) | FFN in | 100 | 1e-2 | 60 | 1.59 | 1.98 | 13.3 |
| 4 (16) | FFN in + out | 100 | 1e-2 | 30 | 1.34 | 1.51 | 13.4 |
| 8 (32) | FFN in | 50 | 1e-2 | 30 | 1.85 | 2.14 | 6.9 |
| 8 (32) | FFN in + out | 50 | 1e-2 | 30 | 7.83 | 28.4 | 6.9 |
| 16 (64) | FFN in | 50 | 1e-2 | 30 | 2.06 | 2.98 | 6.7 |
| 8 (32) | FFN in | 100 | 1e-2 | 30 | 1.25 | 1.36 | 13.4 |
| **8 (32)** | **FFN in** | **75** | **1e-2** | **50** | **1.25** | **1.35** | **10.4** |

Four sentences (median 26 target tokens, up to 90) need more than the 15,360 parameters of a
rank-4 block and more than 50 steps; higher learning rates diverge (the block's scale alpha / rank
is 4), so capacity and steps, not step size, reach the 1.5 target. The last row is the chosen one
(that sweep ran at init_radius 0.1; the radius does not change what a block learns).

Radius, by a routing-only pass (the first 500 edits stored in blocks of 4 as the benchmark does,
1 training step each, then the 516 accurate prompts and the 500 edit prompts looked up):

| key pooling | init_radius | accurate prompts routed | edit prompts to their own block | conflicts |
|---|---|---|---|---|
| mean | 0.1 | 14 of 516 | 1.000 | 203 |
| mean | 0.05 | 1 | 1.000 | 51 |
| **mean** | **0.02** | **0** | **1.000** | **0** |
| last | 0.1 | 0 | 1.000 | 21 |

The routed accurate prompts continue an edited passage: an edit's prompt plus a sentence or two,
so the block pushes them toward the edit's sentence. At radius 0.1 the 500-edit run kept ERR 1.30
and TRR unchanged but ARR rose from 535 to 660 (+23%). Hallucination edits have no rephrasings to
reach, so the smallest radius that still routes every edit prompt costs nothing: 0.02.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..cache import INFO_FILE  # noqa: F401 (re-exported)
from ..cache import base_model_path, cache_dir, load_cached, quiet_transformers, save_cached
from ..cache import cached_info as _info_in
from ..evaluate import target_tokens

from .scotus import (
    environment,
    length_batches,
    seed_everything,
    train_top_layers,
)

NAME = "minilm-lm"
VERSION = 1  # bump to retrain cached models
HEADER = "This is a Wikipedia passage about {}."

SETTINGS: dict[str, Any] = dict(
    seed=0, max_length=256, frozen_layers=4, epochs=2, lr=1e-3, batch_size=16, weight_decay=0.01, warmup=0.1,
    webtext_train=200, webtext_extra=0, trr_size=1000, eval_size=100,
)

MELO_SETTINGS: dict[str, Any] = dict(
    task="causal_lm",
    router_layer="bert.encoder.layer.3",
    target_modules=["bert.encoder.layer.4.intermediate.dense", "bert.encoder.layer.5.intermediate.dense"],
    key_pooling="mean",
    normalize_keys=True,
    init_radius=0.02,
    block_rank=8,
    lora_alpha=32.0,
    edit_lr=1e-2,
    num_iter=75,
    lr_step=50,
    lr_gamma=0.5,
)


def cache_path() -> Path:
    return cache_dir("standins", NAME)


def build_tokenizer(source: Any = None):
    """MiniLM's tokenizer (or ``source``, a BERT tokenizer or its path) as a causal-LM tokenizer.

    ``tokenizer(text)`` gives ``[CLS] text`` (no ``[SEP]``); bos ``[CLS]``, eos ``[SEP]``, pad ``[PAD]``.
    Saved and reloaded as a plain ``PreTrainedTokenizerFast`` so the template survives the round trip.
    """
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if source is None or isinstance(source, (str, Path)):
        source = AutoTokenizer.from_pretrained(source or base_model_path())
    backend = copy.deepcopy(source.backend_tokenizer)
    cls_id = source.convert_tokens_to_ids("[CLS]")
    backend.post_processor = TemplateProcessing(
        single="[CLS] $A", pair="[CLS] $A $B", special_tokens=[("[CLS]", cls_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="[CLS]", eos_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]",
        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
        model_max_length=getattr(source, "model_max_length", 512), padding_side="right",
    )


def _decoder_config(config: Any, tokenizer: Any) -> Any:
    config.is_decoder = True
    config.add_cross_attention = False
    config.tie_word_embeddings = True
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    return config


def _generation_config(model: nn.Module, tokenizer: Any) -> None:
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )


def build_model(tokenizer: Any, config: Any = None, seed: int = SETTINGS["seed"]):
    """Causal ``BertLMHeadModel`` on the MiniLM weights (or, with ``config``, random weights of that config)."""
    from transformers import BertConfig, BertLMHeadModel

    torch.manual_seed(seed)  # the new LM-head transform
    if config is not None:
        model = BertLMHeadModel(_decoder_config(config, tokenizer))
    else:
        quiet_transformers()
        path = base_model_path()
        model = BertLMHeadModel.from_pretrained(path, config=_decoder_config(BertConfig.from_pretrained(path), tokenizer))
    model.tie_weights()
    _generation_config(model, tokenizer)
    return model.eval()


# --------------------------------------------------------------------------------------------
# data


def passages(records: Sequence[Any]) -> list[str]:
    """Whole passages (header + all GPT-3 sentences) from GRACE's accurate + original records.

    Records of one passage share ``fact``; prompt + target of the record with the longest prompt
    is the passage (its prompt holds every sentence before the last).
    """
    longest: dict[str, Any] = {}
    for r in records:
        key = r.fact if r.fact is not None else r.prompt.split(".", 1)[0]
        if key not in longest or len(r.prompt) > len(longest[key].prompt):
            longest[key] = r
    return [f"{r.prompt.rstrip()} {r.target}" for r in longest.values()]


def training_texts(task: Any, settings: dict[str, Any] = SETTINGS) -> dict[str, list[str]]:
    """The texts the stand-in is fine-tuned on, by source."""
    webtext = [r.target for r in task.upstream]
    extra_start = int(settings["trr_size"])
    return {
        "passages": passages(list(task.accurate) + list(task.originals)),
        "webtext": webtext[: int(settings["webtext_train"])]
        + webtext[extra_start : extra_start + int(settings["webtext_extra"])],
    }


def lm_batches(tokenizer: Any, texts: Sequence[str], settings: dict[str, Any]) -> list[dict[str, torch.Tensor]]:
    """``[CLS] text [SEP]`` sequences (truncated to max_length), length-batched; labels = inputs, padding -100."""
    ids = tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=int(settings["max_length"]) - 1)
    rows = [list(r) + [tokenizer.eos_token_id] for r in ids["input_ids"]]
    out = []
    for idx in length_batches([len(r) for r in rows], int(settings["batch_size"])):
        width = max(len(rows[i]) for i in idx)
        input_ids = torch.full((len(idx), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for j, i in enumerate(idx):
            input_ids[j, : len(rows[i])] = torch.tensor(rows[i])
            mask[j, : len(rows[i])] = 1
        labels = input_ids.masked_fill(mask == 0, -100)
        out.append({"input_ids": input_ids, "attention_mask": mask, "labels": labels})
    return out


def train(model: nn.Module, tokenizer: Any, texts: Sequence[str], settings: dict[str, Any] = SETTINGS,
          progress: bool = True) -> dict[str, Any]:
    seed_everything(int(settings["seed"]))
    batches = lm_batches(tokenizer, texts, settings)
    stats = train_top_layers(model, model.bert, batches, settings, progress, desc=f"{NAME}: fine-tune")
    stats["tokens_per_epoch"] = int(sum(int(b["attention_mask"].sum()) for b in batches))
    return stats


# --------------------------------------------------------------------------------------------
# evaluation


def target_nll(model: nn.Module, tokenizer: Any, prompts: Sequence[str], targets: Sequence[str],
               batch_size: int = 16, prefix: str = " ", progress: bool = False) -> list[tuple[float, int]]:
    """(summed NLL, token count) of ``prefix + target + EOS`` after ``prompt``, per record, as MELO edits them.

    Any model called like a transformers causal LM works; a MeloModel routes each row on its prompt.
    """
    nll, _, gold = target_tokens(model, tokenizer, prompts, targets, "causal_lm", batch_size, prefix,
                                 "perplexity" if progress else None)
    return [(n, len(g)) for n, g in zip(nll, gold)]


def perplexity(scores: Sequence[tuple[float, int]]) -> dict[str, float]:
    """GRACE's figure (mean over records of exp(mean token NLL)) and the corpus-level one."""
    per_record = [math.exp(n / max(1, c)) for n, c in scores]
    total = sum(c for _, c in scores)
    return {
        "mean_ppl": sum(per_record) / max(1, len(per_record)),
        "corpus_ppl": math.exp(sum(n for n, _ in scores) / max(1, total)),
    }


def evaluate(model: nn.Module, tokenizer: Any, task: Any, settings: dict[str, Any] = SETTINGS,
             progress: bool = False) -> dict[str, dict[str, float]]:
    """Pre-edit perplexities on the first ``eval_size`` records of each set: edit targets, ARR
    (accurate sentences), the GPT-3 originals, WebText texts of the TRR set trained on / not."""
    n_train, n = int(settings["webtext_train"]), int(settings["eval_size"])
    trr = task.upstream[: int(settings["trr_size"])]
    sets = {
        "edits": task.edits[:n],
        "accurate": task.accurate[:n],
        "originals": task.originals[:n],
        "webtext_trained": trr[:n_train][:n],
        "webtext_heldout": trr[n_train:][:n],
    }
    return {
        name: perplexity(target_nll(model, tokenizer, [r.prompt for r in recs], [r.target for r in recs],
                                    progress=progress))
        for name, recs in sets.items() if recs
    }


# --------------------------------------------------------------------------------------------
# cache


def _load_saved(directory: Path):
    from transformers import BertLMHeadModel, PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(directory)
    model = BertLMHeadModel.from_pretrained(directory)
    model.tie_weights()
    _generation_config(model, tokenizer)
    return model.eval(), tokenizer


def cached_info() -> dict[str, Any] | None:
    """The JSON saved with the cached model (settings, seed, figures, time), or None."""
    return _info_in(cache_path())


def _load_data(data_dir):
    from ..data import load_hallucination

    return load_hallucination(data_dir)


def load_or_train(data_dir=None, progress: bool = True):
    """(model, tokenizer): the cached stand-in, trained first (once, a few minutes on 2 cores) if needed."""
    directory = cache_path()
    cached = load_cached(directory, VERSION, SETTINGS, _load_saved)
    if cached is not None:
        return cached[0], cached[1]
    task = _load_data(data_dir)
    tokenizer = build_tokenizer()
    model = build_model(tokenizer)
    texts = training_texts(task)
    start = time.perf_counter()
    stats = train(model, tokenizer, texts["passages"] + texts["webtext"], SETTINGS, progress)
    metrics = evaluate(model, tokenizer, task, SETTINGS, progress=progress)
    info = {
        "name": NAME,
        "version": VERSION,
        "seed": SETTINGS["seed"],
        "settings": SETTINGS,
        "n_passages": len(texts["passages"]),
        "n_webtext_train": len(texts["webtext"]),
        "perplexity": metrics,
        "seconds": round(time.perf_counter() - start, 1),
        **stats,
        **environment(),
    }
    save_cached(directory, model, tokenizer, info)
    if progress:
        ppl = {k: round(v["mean_ppl"], 2) for k, v in metrics.items()}
        print(f"{NAME}: perplexity (mean over records) {ppl}, {info['seconds']:.0f} s; cached in {directory}")
    return model.eval(), tokenizer
