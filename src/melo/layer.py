"""Dynamic LoRA: per-module blocks of LoRA factors, switched on per row by the call's routing.

A ``DynamicLoraLayer`` is attached to a target module by a forward hook (the module itself is not
replaced). Frozen blocks live in stacked buffers ``A [n, r, in]`` and ``B [n, out, r]``; the block
being learned lives in two parameters of one block only. Each row of a batch gathers its own
block, so a mixed batch needs no loop over rows, and rows routed nowhere are returned untouched.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from .errors import MeloRoutingError


class DynamicLoraLayer(nn.Module):
    def __init__(self, name: str, in_features: int, out_features: int, block_rank: int, scale: float,
                 storage: torch.dtype | None = None):
        super().__init__()
        self.name = name
        self.in_features, self.out_features = in_features, out_features
        self.block_rank, self.scale = block_rank, scale
        self.storage = storage  # None: stored blocks follow the module's casts (float32 until then)
        self.n_blocks = 0
        dtype = storage or torch.float32
        self.register_buffer("A", torch.zeros(0, block_rank, in_features, dtype=dtype))
        self.register_buffer("B", torch.zeros(0, out_features, block_rank, dtype=dtype))
        self.active_A: nn.Parameter | None = None
        self.active_B: nn.Parameter | None = None

    def _apply(self, fn, recurse: bool = True):
        """``to()`` / ``half()`` move the stored blocks; a fixed storage dtype survives dtype casts."""
        super()._apply(fn, recurse)
        if self.storage is not None and self.A.dtype != self.storage:
            self.A, self.B = self.A.to(self.storage), self.B.to(self.storage)
        return self

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
        self.A[self.n_blocks] = self.active_A.detach().to(self.A.dtype)
        self.B[self.n_blocks] = self.active_B.detach().to(self.B.dtype)
        self.n_blocks += 1
        self.discard_block()
        return self.n_blocks - 1

    def blocks_state(self) -> dict[str, torch.Tensor]:
        return {"A": self.A[: self.n_blocks].contiguous(), "B": self.B[: self.n_blocks].contiguous()}

    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The stored blocks as a call sees them. Commits write only slots no earlier state routes
        to, and ``truncate`` copies, so a call holding these tensors keeps one consistent state."""
        return self.A, self.B

    def truncate(self, n_blocks: int) -> None:
        """Keep the first ``n_blocks`` blocks, in new storage (calls in flight keep the old)."""
        self.A, self.B = self.A.clone(), self.B.clone()
        self.A[n_blocks:] = 0
        self.B[n_blocks:] = 0
        self.n_blocks = n_blocks

    def load_blocks(self, A: torch.Tensor, B: torch.Tensor) -> None:
        self.A, self.B = A.to(self.A), B.to(self.B)
        self.n_blocks = A.shape[0]

    def extra_parameters(self, blocks: int | None = None) -> int:
        """Parameters of ``blocks`` blocks (default: all stored)."""
        return (self.n_blocks if blocks is None else blocks) * self.block_rank * (self.in_features + self.out_features)

    def stored_bytes(self, blocks: int | None = None) -> int:
        """Bytes of ``blocks`` stored blocks (default: all) in their storage dtype."""
        return self.extra_parameters(blocks) * self.A.element_size()

    # ---- forward ----------------------------------------------------------------------------
    def _as_stored(self, w: torch.Tensor) -> torch.Tensor:
        """``w`` rounded to the storage dtype in the forward pass, its gradient passed straight through."""
        if self.A.dtype == w.dtype:
            return w
        return w + (w.detach().to(self.A.dtype).to(w.dtype) - w.detach())

    def delta_all(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self._as_stored(self.active_A), self._as_stored(self.active_B)
        h = x.to(a.dtype) @ a.t()
        return (h @ b.t()) * self.scale

    def hook(self, current: Callable[[], Any]):
        """Forward hook for the target module; ``current()`` gives the routing of the call in
        progress (None outside a MeloModel call: the module runs as it is)."""

        def forward_hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            state = current()
            if state is None or state.mode == "keys":
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
            A, B = state.weights[self.name]
            blocks = blocks.to(A.device)  # routed where the router layer runs; blocks live on this module's device
            if blocks.shape[0] != x.shape[0]:  # generate() expands rows (beams, num_return_sequences)
                blocks = blocks.repeat_interleave(x.shape[0] // blocks.shape[0])
            rows = torch.nonzero(blocks >= 0).squeeze(1)
            if rows.numel() == 0:
                return output
            # every row goes through the product (unrouted ones with block 0, then left out), so a
            # row's result does not depend on which other rows are routed: kernels vary with shape
            ids = blocks.clamp_min(0)
            dtype = torch.promote_types(x.dtype, A.dtype)
            xr = x.to(dtype)
            squeeze = xr.dim() == 2
            if squeeze:
                xr = xr.unsqueeze(1)
            a, b = A[ids].to(dtype).transpose(1, 2), B[ids].to(dtype).transpose(1, 2)
            delta = torch.bmm(torch.bmm(xr, a), b) * self.scale
            if squeeze:
                delta = delta.squeeze(1)
            return output.index_add(0, rows.to(output.device), delta[rows].to(output))

        return forward_hook
