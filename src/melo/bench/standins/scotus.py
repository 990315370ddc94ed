"""``minilm-scotus``: all-MiniLM-L6-v2 fine-tuned on the early-term SCOTUS summaries.

Stands in for GRACE/MELO's ``tomh/scotus-bert`` (BERT-base fine-tuned on the SCOTUS train years,
edited on the later years) when the hub is out of reach.

Architecture: ``BertForSequenceClassification`` on the MiniLM weights (6 layers, hidden 384,
``[CLS]`` pooler + a 5-way head). Training: the embeddings and layers 0-3 stay as pretrained
(their outputs are computed once and cached), layers 4-5, the pooler and the head are trained
SETTINGS["epochs"] epochs with AdamW on the de-duplicated summaries of terms <= 2009
(``melo.bench.data.load_scotus``: 705 texts), truncated to 256 tokens, in length-sorted batches.
Frozen lower layers keep MiniLM's sentence-level states for the router; training only the
top keeps the run within a few minutes on 2 CPU cores.

MELO settings (``MELO_SETTINGS``). Router: layer 3, the last frozen layer, so keys are MiniLM's
own sentence states (training moved only layers 4-5); targets: the FFN outputs of layers 4-5.
Key pooling and radius from ``scripts/sweep_settings.py --preset minilm-scotus --blocks 2
--controls 200 --threads 1 --grid 'init_radius=0.05;0.1;0.2;0.4'`` (and ``--variant
'{"key_pooling": "first"}'``): the first 100 shifted-term errors in blocks of 50, TRR on the first
200 early-term summaries (pre-edit accuracy 1.0 on them), L2-normalised keys, other settings as
in MELO_SETTINGS; 1 thread beside other runs.

| pooling | init_radius | ES | ERR | TRR change | TRR routed | conflicts | forgotten | s / block |
|---|---|---|---|---|---|---|---|---|
| mean | 0.05 | 1.00 | 1.00 | 0 | 0 | 0 | 0 | 58 |
| **mean** | **0.1** | **1.00** | **1.00** | **0** | **0** | **0** | **0** | **54** |
| mean | 0.2 | 0.92 | 0.89 | 0 | 0 | 21 | 11 | 54 |
| mean | 0.4 | 0.84 | 0.80 | -0.01 | 0.01 | 72 | 27 | 77 |
| first ([CLS]) | 0.1 | 0.99 | 0.81 | -0.45 | 1.00 | 68 | 33 | 79 |

From 0.2 on, conflicts appear (a key within two radii of a centre of another label: some
summaries of different labels lie within 0.4 of each other); conflicts halve radii and forget
edits. Layer 3's [CLS] state is nearly the same for every summary (every control prompt routed). The largest radius without conflicts, 0.1, is
kept: SCOTUS has no rephrasings, and the room it leaves is for near-duplicate summaries.
"""

from __future__ import annotations

import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..cache import INFO_FILE  # noqa: F401 (re-exported)
from ..cache import base_model_path, cache_dir, load_cached, quiet_transformers, save_cached
from ..cache import cached_info as _info_in

NAME = "minilm-scotus"
VERSION = 1  # bump to retrain cached models

SETTINGS: dict[str, Any] = dict(
    seed=0, max_length=256, frozen_layers=4, epochs=6, lr=5e-4, batch_size=32, weight_decay=0.01, warmup=0.1,
)

MELO_SETTINGS: dict[str, Any] = dict(
    task="classification",
    router_layer="bert.encoder.layer.3",
    target_modules=["bert.encoder.layer.4.output.dense", "bert.encoder.layer.5.output.dense"],
    key_pooling="mean",
    normalize_keys=True,
    init_radius=0.1,
    block_rank=4,
    edit_lr=1e-2,
    num_iter=25,
    lr_step=20,
    lr_gamma=0.5,
)


# --------------------------------------------------------------------------------------------
# shared with lm.py: base weights, frozen-prefix training, cache


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (little padding), in length order."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@contextmanager
def top_layers_only(bert: nn.Module, n_frozen: int, feed: dict[str, torch.Tensor]):
    """Run ``bert`` from cached outputs of its first ``n_frozen`` layers.

    Inside, ``bert.encoder.layer`` holds only the upper layers and the embeddings' output is
    replaced by ``feed["hidden"]`` (the cached output of layer ``n_frozen - 1``). Masks, the
    pooler and the heads work as usual, so the loss is the model's own.
    """
    layers = bert.encoder.layer
    bert.encoder.layer = nn.ModuleList(list(layers)[n_frozen:])
    handle = bert.embeddings.register_forward_hook(lambda module, args, output: feed["hidden"])
    try:
        yield
    finally:
        handle.remove()
        bert.encoder.layer = layers


@torch.no_grad()
def frozen_prefix_states(bert: nn.Module, n_frozen: int, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Output of the first ``n_frozen`` layers (eval mode) for one batch."""
    layers = bert.encoder.layer
    was_training = bert.training
    bert.encoder.layer = nn.ModuleList(list(layers)[:n_frozen])
    bert.eval()
    try:
        return bert(**inputs, use_cache=False).last_hidden_state
    finally:
        bert.encoder.layer = layers
        bert.train(was_training)


def freeze_prefix(model: nn.Module, bert: nn.Module, n_frozen: int) -> list[nn.Parameter]:
    """Freeze the embeddings and the first ``n_frozen`` layers; return the parameters left to train."""
    frozen = {id(p) for p in bert.embeddings.parameters()}
    for layer in list(bert.encoder.layer)[:n_frozen]:
        frozen.update(id(p) for p in layer.parameters())
    for p in model.parameters():
        p.requires_grad_(id(p) not in frozen)
    return [p for p in model.parameters() if p.requires_grad]


def train_top_layers(
    model: nn.Module,
    bert: nn.Module,
    batches: list[dict[str, torch.Tensor]],
    settings: dict[str, Any],
    progress: bool = True,
    desc: str = "train",
) -> dict[str, Any]:
    """Train everything above the first ``settings["frozen_layers"]`` layers on ready batches.

    Each batch is a dict of model inputs with ``labels``. The frozen prefix runs once per batch;
    then ``settings["epochs"]`` epochs of AdamW with linear warm-up and decay, batch order
    shuffled per epoch with ``settings["seed"]``. Returns the mean loss of each epoch and the time.
    """
    start = time.perf_counter()
    n_frozen = int(settings["frozen_layers"])
    params = freeze_prefix(model, bert, n_frozen)
    cache = []
    for batch in tqdm(batches, desc=f"{desc}: frozen layers", disable=not progress, leave=False):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        cache.append(frozen_prefix_states(bert, n_frozen, inputs))
    epochs = int(settings["epochs"])
    total = max(1, epochs * len(batches))
    warmup = max(1, int(settings.get("warmup", 0.1) * total))
    optimizer = torch.optim.AdamW(params, lr=float(settings["lr"]), weight_decay=float(settings.get("weight_decay", 0.0)))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (total - s) / total)
    )
    rng = random.Random(int(settings["seed"]))
    feed: dict[str, torch.Tensor] = {}
    epoch_losses: list[float] = []
    model.train()
    bar = tqdm(total=total, desc=desc, disable=not progress)
    try:
        with top_layers_only(bert, n_frozen, feed):
            for _ in range(epochs):
                order = list(range(len(batches)))
                rng.shuffle(order)
                total_loss, count = 0.0, 0
                for i in order:
                    feed["hidden"] = cache[i]
                    loss = model(**batches[i], use_cache=False).loss if _is_decoder(model) else model(**batches[i]).loss
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                    total_loss += loss.item()
                    count += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss.item():.3f}")
                epoch_losses.append(total_loss / max(1, count))
    finally:
        bar.close()
        model.eval()
        for p in model.parameters():
            p.requires_grad_(True)
    return {"epoch_losses": epoch_losses, "train_seconds": round(time.perf_counter() - start, 1)}


def _is_decoder(model: nn.Module) -> bool:
    return bool(getattr(model.config, "is_decoder", False))


def environment() -> dict[str, str]:
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}


# --------------------------------------------------------------------------------------------
# minilm-scotus


def cache_path() -> Path:
    return cache_dir("standins", NAME)


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
    lengths = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=settings["max_length"])["input_ids"]]
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


def _load_saved(directory: Path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.model_max_length = int(SETTINGS["max_length"])
    return model, tokenizer


def cached_info() -> dict[str, Any] | None:
    """The JSON saved with the cached model (settings, seed, figures, time), or None."""
    return _info_in(cache_path())


def _load_data(data_dir):
    from ..data import load_scotus

    return load_scotus(data_dir)


def load_or_train(data_dir=None, progress: bool = True):
    """(model, tokenizer): the cached stand-in, trained first (once, a few minutes on 2 cores) if needed."""
    directory = cache_path()
    cached = load_cached(directory, VERSION, SETTINGS, _load_saved)
    if cached is not None:
        return cached[0], cached[1]
    task = _load_data(data_dir)
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
    return model.eval(), tokenizer
