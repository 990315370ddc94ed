"""Dynamic LoRA: per-module blocks of LoRA factors, switched on per row by the routing state.

A ``DynamicLoraLayer`` is attached to a target module by a forward hook (the module itself is not
replaced). Frozen blocks live in stacked buffers ``A [n, r, in]`` and ``B [n, out, r]``; the block
being learned lives in two parameters of one block only. Each row of a batch gathers its own
block, so a mixed batch needs no loop over rows, and rows routed nowhere are returned untouched.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from .errors import MeloConfigError, MeloRoutingError

SUPPORTED = (nn.Linear, Conv1D)


@dataclass
class RoutingState:
    """Routing decision of the current call, owned by one MeloModel.

    ``mode``: "idle" (no MeloModel call: base behaviour), "route" (the router hook will set
    ``blocks`` from this batch's keys), "fixed" (``blocks`` already decided, e.g. for every
    generation step), "train" (every row uses the block being learned), "keys" (collect keys and
    stop at the router), "off" (adapter disabled).
    """

    mode: str = "idle"
    blocks: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    keys: torch.Tensor | None = None

    @contextmanager
    def use(self, mode: str, blocks: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None):
        saved = (self.mode, self.blocks, self.attention_mask, self.keys)
        self.mode, self.blocks, self.attention_mask, self.keys = mode, blocks, attention_mask, None
        try:
            yield self
        finally:
            self.mode, self.blocks, self.attention_mask, self.keys = saved


def module_features(module: nn.Module, name: str) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):
        return module.weight.shape[0], module.weight.shape[1]
    raise MeloConfigError(
        f"target module {name!r} is a {type(module).__name__}; supported: nn.Linear, transformers Conv1D"
    )


class DynamicLoraLayer(nn.Module):
    def __init__(self, name: str, in_features: int, out_features: int, block_rank: int, scale: float):
        super().__init__()
        self.name = name
        self.in_features, self.out_features = in_features, out_features
        self.block_rank, self.scale = block_rank, scale
        self.n_blocks = 0
        self.register_buffer("A", torch.zeros(0, block_rank, in_features))
        self.register_buffer("B", torch.zeros(0, out_features, block_rank))
        self.active_A: nn.Parameter | None = None
        self.active_B: nn.Parameter | None = None

    # ---- blocks -----------------------------------------------------------------------------
    def start_block(self, generator: torch.Generator) -> list[nn.Parameter]:
        """Fresh trainable block: A Kaiming-uniform (as in LoRA / PEFT), B zeros."""
        a = torch.empty(self.block_rank, self.in_features)
        bound = math.sqrt(6 / ((1 + 5) * self.in_features))  # kaiming_uniform_(a=sqrt(5))
        a.uniform_(-bound, bound, generator=generator)
        device = self.A.device
        self.active_A = nn.Parameter(a.to(device))
        self.active_B = nn.Parameter(torch.zeros(self.out_features, self.block_rank, device=device))
        return [self.active_A, self.active_B]

    def discard_block(self) -> None:
        self.active_A = self.active_B = None

    def commit_block(self) -> int:
        """Freeze the active block as block ``n_blocks``; storage grows by doubling."""
        assert self.active_A is not None and self.active_B is not None
        if self.n_blocks == self.A.shape[0]:
            cap = max(4, 2 * self.A.shape[0])
            self.A = torch.cat([self.A, self.A.new_zeros(cap - self.A.shape[0], *self.A.shape[1:])])
            self.B = torch.cat([self.B, self.B.new_zeros(cap - self.B.shape[0], *self.B.shape[1:])])
        self.A[self.n_blocks] = self.active_A.detach()
        self.B[self.n_blocks] = self.active_B.detach()
        self.n_blocks += 1
        self.discard_block()
        return self.n_blocks - 1

    def blocks_state(self) -> dict[str, torch.Tensor]:
        return {"A": self.A[: self.n_blocks].contiguous(), "B": self.B[: self.n_blocks].contiguous()}

    def load_blocks(self, A: torch.Tensor, B: torch.Tensor) -> None:
        self.A, self.B = A.to(self.A), B.to(self.B)
        self.n_blocks = A.shape[0]

    def extra_parameters(self) -> int:
        return self.n_blocks * self.block_rank * (self.in_features + self.out_features)

    # ---- forward ----------------------------------------------------------------------------
    def delta_all(self, x: torch.Tensor) -> torch.Tensor:
        h = x.to(self.active_A.dtype) @ self.active_A.t()
        return (h @ self.active_B.t()) * self.scale

    def hook(self, state: RoutingState):
        def forward_hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            if state.mode in ("idle", "off", "keys"):
                return output
            if state.mode == "route":
                raise MeloRoutingError(
                    f"target module {self.name!r} ran before the router layer routed this batch; "
                    "pass input_ids (not precomputed hidden states) or use MeloModel.generate"
                )
            x = args[0]
            if state.mode == "train":
                return output + self.delta_all(x).to(output.dtype)
            blocks = state.blocks
            if blocks is None:
                return output
            if blocks.shape[0] != x.shape[0]:  # generate() expands rows (beams, num_return_sequences)
                blocks = blocks.repeat_interleave(x.shape[0] // blocks.shape[0])
            rows = torch.nonzero(blocks >= 0).squeeze(1)
            if rows.numel() == 0:
                return output
            ids = blocks[rows]
            xr = x[rows].to(self.A.dtype)
            squeeze = xr.dim() == 2
            if squeeze:
                xr = xr.unsqueeze(1)
            delta = torch.bmm(torch.bmm(xr, self.A[ids].transpose(1, 2)), self.B[ids].transpose(1, 2)) * self.scale
            if squeeze:
                delta = delta.squeeze(1)
            return output.index_add(0, rows, delta.to(output.dtype))

        return forward_hook
