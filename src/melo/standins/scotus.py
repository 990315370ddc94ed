"""``minilm-scotus``: all-MiniLM-L6-v2 fine-tuned on the early-term SCOTUS summaries.

Stands in for GRACE/MELO's ``tomh/scotus-bert`` when the hub is out of reach: MiniLM with a 5-way
head, layers 4-5, pooler and head trained on the terms <= 2009 above a frozen, cached prefix.
MELO settings: ``PRESETS["minilm-scotus"]`` (``melo.presets``). Architecture, training and the
sweep behind the settings: ``docs/standins/scotus.md``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..persistence import cache_dir
from ..presets import PRESETS
from .cache import base_model_path, keyed_dir, quiet_transformers, save_cached
from .cache import cached_info as cached_info_in
from .cache import load_or_train as load_or_train_cached
from .cache import task_sources as training_sources  # the task's files and options (fields, split)
from .training import environment, length_batches, seed_everything, train_top_layers

NAME = "minilm-scotus"
VERSION = 1  # bump to retrain cached models

SETTINGS: dict[str, Any] = dict(
    seed=0, max_length=256, frozen_layers=4, epochs=6, lr=5e-4, batch_size=32, weight_decay=0.01, warmup=0.1,
)

MELO_SETTINGS: dict[str, Any] = PRESETS[NAME]  # read-only view; the values live in melo.presets


def cache_path(data_dir: Any = None, data: Any = None) -> Path:
    """The cache folder of the stand-in trained on ``data`` (else the data dir's SCOTUS task), keyed by its sources."""
    task = data if data is not None else load_data(data_dir)
    return keyed_dir(cache_dir("standins", NAME), VERSION, SETTINGS, training_sources(task))


def build_tokenizer(path: str | None = None):
    """MiniLM's tokenizer, truncating to ``SETTINGS["max_length"]`` tokens as in training."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path or base_model_path())
    tokenizer.model_max_length = int(SETTINGS["max_length"])
    return tokenizer


def build_model(num_labels: int = 5, config: Any = None, seed: int = SETTINGS["seed"]):
    """MiniLM (or, with ``config``, a random BERT of that config) with a fresh ``num_labels``-way head."""
    from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

    torch.manual_seed(seed)  # the head's initialisation
    if config is not None:
        config.num_labels = num_labels
        return BertForSequenceClassification(config)
    quiet_transformers()
    return AutoModelForSequenceClassification.from_pretrained(base_model_path(), num_labels=num_labels)


def _encode(tokenizer: Any, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    return dict(tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"))


def classification_batches(tokenizer: Any, texts: Sequence[str], labels: Sequence[int], settings: dict[str, Any]):
    ids = tokenizer(list(texts), truncation=True, max_length=settings["max_length"])["input_ids"]
    lengths = [len(row) for row in ids]
    out = []
    for idx in length_batches(lengths, int(settings["batch_size"])):
        batch = _encode(tokenizer, [texts[i] for i in idx], settings["max_length"])
        batch["labels"] = torch.tensor([int(labels[i]) for i in idx], dtype=torch.long)
        out.append(batch)
    return out


def train(model: nn.Module, tokenizer: Any, texts: Sequence[str], labels: Sequence[int],
          settings: dict[str, Any] = SETTINGS, progress: bool = True) -> dict[str, Any]:
    seed_everything(int(settings["seed"]))
    batches = classification_batches(tokenizer, texts, labels, settings)
    return train_top_layers(model, model.bert, batches, settings, progress, desc=f"{NAME}: fine-tune")


@torch.no_grad()
def predict(model: nn.Module, tokenizer: Any, texts: Sequence[str], max_length: int = SETTINGS["max_length"],
            batch_size: int = 32, progress: bool = False) -> list[int]:
    lengths = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]
    preds = [0] * len(texts)
    model.eval()
    for idx in tqdm(length_batches(lengths, batch_size), desc="predict", disable=not progress, leave=False):
        logits = model(**_encode(tokenizer, [texts[i] for i in idx], max_length)).logits
        for i, p in zip(idx, logits.argmax(-1).tolist()):
            preds[i] = p
    return preds


def load_saved(directory: Path):
    """(model, tokenizer) saved in ``directory`` by :func:`train_and_save`."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.model_max_length = int(SETTINGS["max_length"])
    return model, tokenizer


def cached_info(data_dir: Any = None, data: Any = None) -> dict[str, Any] | None:
    """The JSON saved with the model cached for this data (settings, data, seed, figures, time), or None."""
    return cached_info_in(cache_path(data_dir, data))


def load_data(data_dir: Any = None):
    """The SCOTUS task the stand-in is trained (upstream) and measured (edits) on."""
    from ..data import load_scotus

    return load_scotus(data_dir)


def load_or_train(data_dir: Any = None, progress: bool = True, data: Any = None):
    """(model, tokenizer): the cached stand-in, trained first (once, a few minutes on 2 cores) if needed.

    Trained on the upstream rows of ``data`` (a classification TaskData, e.g. the user's file of
    ``melo bench --data-file``), else of the data dir's SCOTUS task; one cache folder per sources.
    """
    task = data if data is not None else load_data(data_dir)
    model, tokenizer, _ = load_or_train_cached(cache_dir("standins", NAME), VERSION, SETTINGS, load_saved,
                                              lambda directory: train_and_save(directory, data_dir, progress, task),
                                              training_sources(task))
    return model, tokenizer


def train_and_save(directory: Path, data_dir: Any = None, progress: bool = True, task: Any = None) -> dict[str, Any]:
    """Train the stand-in on the upstream set of ``task`` (default: the data dir's SCOTUS), measure it, save it
    in ``directory``; returns its info."""
    task = task if task is not None else load_data(data_dir)
    texts = [r.prompt for r in task.upstream]
    labels = [int(r.target) for r in task.upstream]
    n_labels = len(task.label_names) if task.label_names else max(labels + [int(r.target) for r in task.edits]) + 1
    tokenizer = build_tokenizer()
    model = build_model(n_labels)
    start = time.perf_counter()
    stats = train(model, tokenizer, texts, labels, SETTINGS, progress)
    train_pred = predict(model, tokenizer, texts, progress=progress)
    edit_texts = [r.prompt for r in task.edits]
    edit_labels = [int(r.target) for r in task.edits]
    edit_pred = predict(model, tokenizer, edit_texts, progress=progress)
    wrong = sum(p != y for p, y in zip(edit_pred, edit_labels))
    info = {
        "name": NAME,
        "version": VERSION,
        "seed": SETTINGS["seed"],
        "settings": SETTINGS,
        "label_names": task.label_names,
        "n_upstream": len(texts),
        "n_edits": len(edit_texts),
        "upstream_accuracy": sum(p == y for p, y in zip(train_pred, labels)) / max(1, len(labels)),
        "edit_accuracy": 1 - wrong / max(1, len(edit_labels)),
        "edit_errors": wrong,
        "seconds": round(time.perf_counter() - start, 1),
        **stats,
        **environment(),
    }
    save_cached(directory, model, tokenizer, info)
    if progress:
        print(f"{NAME}: upstream accuracy {info['upstream_accuracy']:.3f}, edit-set accuracy "
              f"{info['edit_accuracy']:.3f} ({wrong} errors), {info['seconds']:.0f} s; cached in {directory}")
    return info
