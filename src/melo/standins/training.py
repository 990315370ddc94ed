"""Training shared by the stand-ins: seeding, length-sorted batches, and training only the layers
above a frozen, cached prefix (``minilm-scotus``, ``minilm-lm``)."""

from __future__ import annotations

import random
import time
from contextlib import contextmanager
from typing import Any, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm


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
    optimizer = torch.optim.AdamW(params, lr=float(settings["lr"]),
                                  weight_decay=float(settings.get("weight_decay", 0.0)))
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
                    extra = {"use_cache": False} if _is_decoder(model) else {}
                    loss = model(**batches[i], **extra).loss
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
