"""The fused head loss: the same loss and gradient as cross-entropy over the head's logits."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from melo.prefix import HeadCrossEntropy, head_loss_at


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 5), vocab=st.integers(2, 300), chunk=st.integers(1, 64), bias=st.booleans(),
       seed=st.integers(0, 2**16))
def test_fused_loss_and_gradient_equal_cross_entropy(n, vocab, chunk, bias, seed):
    g = torch.Generator().manual_seed(seed)
    d = 8
    weight = torch.randn(vocab, d, generator=g) * 3  # large logits: the online max must hold
    b = torch.randn(vocab, generator=g) if bias else None
    gold = torch.randint(0, vocab, (n,), generator=g)
    hidden = torch.randn(n, d, generator=g, requires_grad=True)
    expected = nn.functional.cross_entropy(nn.functional.linear(hidden, weight, b), gold)
    (expected_grad,) = torch.autograd.grad(expected, hidden)
    fused = HeadCrossEntropy.apply(hidden, weight, b, gold, chunk)
    (fused_grad,) = torch.autograd.grad(2 * fused, hidden)  # the upstream gradient is applied
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused_grad, 2 * expected_grad, rtol=1e-4, atol=1e-5)


def test_fused_loss_in_bfloat16_computes_in_float32():
    weight = torch.randn(50, 8).bfloat16()
    hidden = torch.randn(3, 8).bfloat16().requires_grad_(True)
    gold = torch.tensor([1, 7, 49])
    expected = nn.functional.cross_entropy(hidden.float() @ weight.float().T, gold)
    fused = HeadCrossEntropy.apply(hidden, weight, None, gold, 16)
    fused.backward()
    torch.testing.assert_close(fused, expected)
    assert hidden.grad.dtype == torch.bfloat16


class Model(nn.Module):
    """A causal-LM shape: hidden states -> head -> output.logits (scaled after the head on request)."""

    def __init__(self, scale: float | None = None):
        super().__init__()
        self.body, self.head, self.scale = nn.Linear(4, 4), nn.Linear(4, 20, bias=False), scale
        self.head.weight.requires_grad_(False)

    def forward(self, x):
        logits = self.head(self.body(x))
        return type("Out", (), {"logits": logits * self.scale if self.scale else logits})()


@pytest.mark.parametrize("scale", [None, 0.5])
def test_head_loss_fuses_only_when_the_model_returns_the_heads_output(scale):
    model, x = Model(scale), torch.randn(2, 3, 4)
    positions = torch.tensor([[False, True, True], [True, False, False]])
    gold = torch.tensor([3, 5, 19])
    expected = nn.functional.cross_entropy(model(x).logits[positions], gold)
    calls = []
    with head_loss_at(model.head, positions, gold, lambda: True) as loss_of:
        for _ in range(3):
            out = model(x)
            calls.append(out.logits.dim())
            torch.testing.assert_close(loss_of(out), expected)
    assert calls == ([2, 0, 0] if scale is None else [2, 2, 2])  # fused: the head returns the loss itself
    assert "forward" not in model.head.__dict__ and not model.head._forward_pre_hooks


def test_head_loss_leaves_other_calls_alone():
    model, x = Model(), torch.randn(1, 3, 4)
    positions, gold = torch.tensor([[True, False, True]]), torch.tensor([1, 2])
    whole = model(x).logits
    with head_loss_at(model.head, positions, gold, lambda: False):
        assert torch.equal(model(x).logits, whole)
