"""``minilm-lm``: a causal language model made from all-MiniLM-L6-v2, for the hallucination task.

Stands in for GRACE/MELO's GPT2-XL fine-tuned on the WikiBio passages when the hub is out of reach:
a causal ``BertLMHeadModel`` on the MiniLM weights, its upper layers trained (above a frozen,
cached prefix) on the passages and WebText texts GRACE fine-tunes on. MELO settings:
``PRESETS["minilm-lm"]`` (``melo.presets``). Architecture, training data and the sweeps behind
the settings: ``docs/standins/lm.md``.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..evaluation.predict import target_tokens
from ..persistence import cache_dir
from ..presets import PRESETS
from .cache import base_model_path, keyed_dir, quiet_transformers, save_cached
from .cache import cached_info as cached_info_in
from .cache import load_or_train as load_or_train_cached
from .cache import task_sources as training_sources  # the task's files (WikiBio, WebText) and options
from .training import environment, length_batches, seed_everything, train_top_layers

NAME = "minilm-lm"
VERSION = 1  # bump to retrain cached models
HEADER = "This is a Wikipedia passage about {}."

SETTINGS: dict[str, Any] = dict(
    seed=0, max_length=256, frozen_layers=4, epochs=2, lr=1e-3, batch_size=16, weight_decay=0.01, warmup=0.1,
    webtext_train=200, webtext_extra=0, trr_size=1000, eval_size=100,
)

MELO_SETTINGS: dict[str, Any] = PRESETS[NAME]  # read-only view; the values live in melo.presets


def cache_path(data_dir: Any = None) -> Path:
    """The cache folder of the stand-in trained on this data dir's hallucination task, keyed by its files."""
    return keyed_dir(cache_dir("standins", NAME), VERSION, SETTINGS, training_sources(load_data(data_dir)))


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
        config = _decoder_config(BertConfig.from_pretrained(path), tokenizer)
        model = BertLMHeadModel.from_pretrained(path, config=config)
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


def load_saved(directory: Path):
    """(model, tokenizer) saved in ``directory`` by :func:`train_and_save`."""
    from transformers import BertLMHeadModel, PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(directory)
    model = BertLMHeadModel.from_pretrained(directory)
    model.tie_weights()
    _generation_config(model, tokenizer)
    return model.eval(), tokenizer


def cached_info(data_dir: Any = None) -> dict[str, Any] | None:
    """The JSON saved with the model cached for this data dir (settings, data, seed, figures, time), or None."""
    return cached_info_in(cache_path(data_dir))


def load_data(data_dir: Any = None):
    """The hallucination task the stand-in is trained and measured on."""
    from ..data import load_hallucination

    return load_hallucination(data_dir)


def load_or_train(data_dir: Any = None, progress: bool = True, data: Any = None):
    """(model, tokenizer): the cached stand-in, trained first (once, a few minutes on 2 cores) if needed.

    Trained on the data dir's WikiBio passages and WebText whatever the edits; ``data`` (the bench
    task, maybe the user's edits) is not used.
    """
    task = load_data(data_dir)
    model, tokenizer, _ = load_or_train_cached(cache_dir("standins", NAME), VERSION, SETTINGS, load_saved,
                                              lambda directory: train_and_save(directory, data_dir, progress, task),
                                              training_sources(task))
    return model, tokenizer


def train_and_save(directory: Path, data_dir: Any = None, progress: bool = True, task: Any = None) -> dict[str, Any]:
    """Train the stand-in, measure its perplexities, save it in ``directory``; returns its info."""
    task = task if task is not None else load_data(data_dir)
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
    return info
