"""Work an edit's training steps can skip.

* Frozen prefix: transformer layers before the first LoRA target see the same input at every
  step of an edit, so their outputs are recorded on the first step and returned as they are on
  the others (no recomputation, no autograd through them).
* Output head: a causal LM's loss needs logits at the target positions only; with a long prompt
  and a large vocabulary the head over every position costs more than the layers being trained.
* Fused head loss: at a few positions the head is bound by reading its vocabulary matrix (113 MB
  on SmolLM2), once forward and once backward; the fused loss reads it once, chunk by chunk.
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


class HeadCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``hidden @ weight.T + bias`` against ``gold``, and its gradient for
    ``hidden``, in one pass over ``weight``'s rows (an online log-sum-exp, as flash attention's):
    each chunk is read once, for the logits and for the gradient, while it is in cache. No
    gradient for ``weight`` or ``bias`` (a frozen head)."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gold: torch.Tensor,
                chunk: int = 2048) -> torch.Tensor:
        h = hidden.float()
        n = h.shape[0]
        running_max = h.new_full((n,), -torch.inf)
        total = h.new_zeros(n)
        expected_row = torch.zeros_like(h)  # sum over the vocabulary of exp(logit - max) * weight row
        for start in range(0, weight.shape[0], chunk):  # vocabulary chunks, not rows: a blocking loop
            rows = weight[start: start + chunk].float()
            logits = h @ rows.T
            if bias is not None:
                logits += bias[start: start + chunk].float()
            new_max = torch.maximum(running_max, logits.amax(1))
            shrink = torch.exp(running_max - new_max)
            e = torch.exp(logits - new_max[:, None])
            total = total * shrink + e.sum(1)
            expected_row = expected_row * shrink[:, None] + e @ rows
            running_max = new_max
        gold_rows = weight[gold].float()
        gold_logits = (h * gold_rows).sum(1) + (bias[gold].float() if bias is not None else 0)
        loss = (running_max + total.log() - gold_logits).mean()
        ctx.save_for_backward(((expected_row / total[:, None] - gold_rows) / n).to(hidden.dtype))
        return loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        (grad_hidden,) = ctx.saved_tensors
        return grad_loss * grad_hidden, None, None, None, None


def _fusable(head: nn.Module) -> bool:
    """A plain frozen Linear whose weights are here (not offloaded, not wrapped by accelerate)."""
    return (type(head) is nn.Linear and "forward" not in head.__dict__ and not head.weight.requires_grad
            and head.weight.device.type != "meta" and (head.bias is None or not head.bias.requires_grad))


@contextmanager
def head_loss_at(head: nn.Module, positions: torch.Tensor, gold: torch.Tensor,
                 active: Callable[[], bool]) -> Iterator[Callable[[object], torch.Tensor]]:
    """Inside, active calls compute ``head`` at ``positions`` only (``head_at``); yields
    ``loss_of(output)``: the mean cross-entropy of those logits against ``gold``. The first call
    computes the logits and checks that the model returns the head's output untouched (no logit
    scaling or soft-capping after it); if so, and the head is a plain frozen Linear, later calls
    return the fused loss (``HeadCrossEntropy``) from the head in place of its logits."""
    state: dict[str, object] = {"fused": False, "logits": None}
    run = head.forward

    def forward(x: torch.Tensor, *args, **kwargs):
        if not active():
            return run(x, *args, **kwargs)
        if state["fused"]:
            return HeadCrossEntropy.apply(x, head.weight, head.bias, gold.to(head.weight.device))
        state["logits"] = run(x, *args, **kwargs)
        return state["logits"]

    def loss_of(output) -> torch.Tensor:
        if state["fused"]:
            return output.logits
        loss = nn.functional.cross_entropy(output.logits.float(), gold.to(output.logits.device))
        state["fused"] = output.logits is state["logits"] and head.weight.device.type != "meta"
        state["logits"] = None
        return loss

    fusable = _fusable(head)
    if fusable:
        head.forward = forward
    try:
        with head_at(head, positions, active):
            yield loss_of if fusable else (lambda output: nn.functional.cross_entropy(
                output.logits.float(), gold.to(output.logits.device)))
    finally:
        if fusable:
            head.__dict__.pop("forward", None)


def next_token_targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For causal-LM labels [batch, seq] (-100 = ignored): the positions whose logits predict a
    labelled next token, and those tokens (what the model's own shifted loss averages over)."""
    following = labels[:, 1:]
    positions = torch.zeros_like(labels, dtype=torch.bool)
    positions[:, :-1] = following != -100
    return positions, following[following != -100]
