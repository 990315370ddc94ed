"""GRACE's codebook (Hartvigsen et al., NeurIPS 2023): keys, values, deferral radii and labels, with
its add / expand / split rules and nearest-key lookup (see ``melo.baselines.grace`` for the editor)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

SPLIT_EPS = 1e-5  # the reference's margin: the old entry's radius stops just short of d / 2
CANDIDATES = 8  # nearest keys by float32 matrix product, then decided in float64

Label = tuple[int, ...]


@dataclass
class CodebookReport:
    added: int = 0
    expanded: int = 0
    conflicts: int = 0
    assigned: list[int] = field(default_factory=list)  # entry each edit of the batch trains


class Codebook:
    """Keys [n, key_dim] float32, values [n, value_dim] float32, radii [n] float64, labels."""

    def __init__(self, key_dim: int, value_dim: int, eps_init: float, device: torch.device | str = "cpu"):
        self.key_dim, self.value_dim, self.eps_init = key_dim, value_dim, float(eps_init)
        self.keys = torch.empty(0, key_dim, device=device)
        self.values = torch.empty(0, value_dim, device=device)
        self.radii = torch.empty(0, dtype=torch.float64, device=device)
        self.labels: list[Label] = []
        self.n_conflicts = 0

    @property
    def n(self) -> int:
        return self.keys.shape[0]

    def clone(self) -> "Codebook":
        other = Codebook(self.key_dim, self.value_dim, self.eps_init, self.keys.device)
        other.keys, other.values, other.radii = self.keys.clone(), self.values.clone(), self.radii.clone()
        other.labels, other.n_conflicts = list(self.labels), self.n_conflicts
        return other

    def nearest(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Index of the nearest key of each query (ties: the newest) and its exact distance."""
        q = queries.float().to(self.keys.device)
        k = self.keys
        d2 = torch.addmm((k * k).sum(1).unsqueeze(0), q, k.t(), alpha=-2.0).add_((q * q).sum(1, keepdim=True))
        cand = d2.topk(min(CANDIDATES, self.n), dim=1, largest=False).indices
        exact = (q.double().unsqueeze(1) - k[cand].double()).norm(dim=-1)
        best = exact.min(1, keepdim=True).values
        idx = torch.where(exact == best, cand, -1).max(1).values
        return idx, best.squeeze(1)

    def lookup(self, queries: torch.Tensor) -> torch.Tensor:
        """Entry of each query, or -1 where the nearest key is farther than its radius."""
        if self.n == 0 or queries.shape[0] == 0:
            return torch.full((queries.shape[0],), -1, dtype=torch.long, device=queries.device)
        idx, dist = self.nearest(queries)
        return torch.where(dist <= self.radii[idx], idx, -1).to(queries.device)

    def updated(self, keys: torch.Tensor, labels: Sequence[Label]) -> tuple["Codebook", CodebookReport]:
        """A new codebook with one batch of edit keys applied in order (this one is unchanged).

        New entries get zero values; the caller trains and stores them.
        """
        book, report = self.clone(), CodebookReport()
        keys = keys.detach().float().to(book.keys.device)
        for key, label in zip(keys, labels):
            label = tuple(label)
            if book.n == 0:
                report.assigned.append(book._add(key, book.eps_init, label))
                report.added += 1
                continue
            dist = (book.keys.double() - key.double()).norm(dim=1)
            d = float(dist.min())
            j = int(torch.nonzero(dist == d).max())  # ties: the newest entry
            if d > float(book.radii[j]) + book.eps_init:
                report.assigned.append(book._add(key, book.eps_init, label))
                report.added += 1
            elif book.labels[j] != label:
                report.assigned.append(book._add(key, d / 2, label))
                book.radii[j] = d / 2 - SPLIT_EPS
                book.n_conflicts += 1
                report.conflicts += 1
            else:
                if d > float(book.radii[j]):
                    book.radii[j] = d
                report.assigned.append(j)
                report.expanded += 1
        return book, report

    def _add(self, key: torch.Tensor, radius: float, label: Label) -> int:
        self.keys = torch.cat([self.keys, key.unsqueeze(0)])
        self.values = torch.cat([self.values, self.values.new_zeros(1, self.value_dim)])
        self.radii = torch.cat([self.radii, self.radii.new_tensor([radius])])
        self.labels.append(label)
        return self.n - 1

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"grace.keys": self.keys, "grace.values": self.values, "grace.radii": self.radii}

    def load(self, tensors: dict[str, torch.Tensor], labels: list[list[int]], n_conflicts: int) -> None:
        device = self.keys.device
        self.keys = tensors["grace.keys"].float().to(device)
        self.values = tensors["grace.values"].float().to(device)
        self.radii = tensors["grace.radii"].double().to(device)
        self.labels = [tuple(label) for label in labels]
        self.n_conflicts = int(n_conflicts)


