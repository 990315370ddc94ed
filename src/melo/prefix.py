"""Work an edit's training steps can skip.

* Frozen prefix: transformer layers before the first LoRA target see the same input at every
  step of an edit, so their outputs are recorded on the first step and returned as they are on
  the others (no recomputation, no autograd through them).
* Output head: a causal LM's loss needs logits at the target positions only; with a long prompt
  and a large vocabulary the head over every position costs more than the layers being trained.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import torch
from torch import nn


def frozen_prefix(model: nn.Module, target_names: Iterable[str]) -> list[nn.Module]:
    """Layers of the (outermost) layer list holding every target, before the first target's layer.

    Empty when the targets are not all in one ``nn.ModuleList`` (e.g. T5 encoder and decoder).
    """
    modules = dict(model.named_modules())
    lists: dict[str, list[int]] = {}
    for name in target_names:
        parts = name.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if isinstance(modules.get(parent), nn.ModuleList) and parts[i].isdigit():
                lists.setdefault(parent, []).append(int(parts[i]))
                break
        else:
            return []
    if len(lists) != 1:
        return []
    ((parent, indices),) = lists.items()
    return list(modules[parent])[: min(indices)]


@contextmanager
def replay_outputs(layers: list[nn.Module], active: Callable[[], bool]) -> Iterator[Callable[[], None]]:
    """Inside, the first forward of the call for which ``active()`` holds records each layer's
    output; call the yielded function after it and that call's later forwards return the recorded
    outputs without running the layers. Forwards of other calls (other threads) run as usual."""
    outputs: dict[int, object] = {}

    def record(i: int, output: object) -> None:
        if active():
            outputs[i] = output

    handles = [layer.register_forward_hook(lambda m, a, o, i=i: record(i, o)) for i, layer in enumerate(layers)]

    # a forward set on the instance (accelerate's hooks wrap it so) is put back as it was
    missing = object()
    instance_forwards = [layer.__dict__.get("forward", missing) for layer in layers]

    def start_replay() -> None:
        for h in handles:
            h.remove()
        for i, layer in enumerate(layers):
            if i in outputs:
                run = layer.forward
                layer.forward = lambda *args, _out=outputs[i], _run=run, **kwargs: (
                    _out if active() else _run(*args, **kwargs))

    try:
        yield start_replay
    finally:
        for h in handles:
            h.remove()
        for layer, forward in zip(layers, instance_forwards):
            if forward is missing:
                layer.__dict__.pop("forward", None)
            else:
                layer.forward = forward


@contextmanager
def head_at(head: nn.Module, positions: torch.Tensor, active: Callable[[], bool]) -> Iterator[None]:
    """Inside, in calls for which ``active()`` holds, ``head`` (the output embedding) sees only the
    hidden states at ``positions`` (a boolean [batch, seq] mask) and returns logits [n, vocab] for
    them, in row-major order."""
    handle = head.register_forward_pre_hook(
        lambda module, args: (args[0][positions.to(args[0].device)], *args[1:]) if active() else None)
    try:
        yield
    finally:
        handle.remove()


def next_token_targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For causal-LM labels [batch, seq] (-100 = ignored): the positions whose logits predict a
    labelled next token, and those tokens (what the model's own shifted loss averages over)."""
    following = labels[:, 1:]
    positions = torch.zeros_like(labels, dtype=torch.bool)
    positions[:, :-1] = following != -100
    return positions, following[following != -100]
