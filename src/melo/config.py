"""MeloConfig: every hyper-parameter of MELO editing, as one serialisable dataclass."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import MeloConfigError

TASKS = ("causal_lm", "seq2seq", "classification")
POOLINGS = ("last", "mean", "first")


@dataclass
class MeloConfig:
    """Hyper-parameters of a MELO adapter.

    Scale: a routed row gets ``base(x) + s * B_t A_t x`` with ``s = lora_alpha / block_rank``,
    the usual LoRA scale of one block. It does not depend on how many blocks exist, so the
    step size of edit ``t`` is the same whether it is the first block or the thousandth (the
    original code scaled each factor by ``sqrt(total_rank / block_rank)``, so its effective
    learning rate grew with the adapter's capacity). The default ``lora_alpha=16`` (s = 8 at
    block rank 2) lets the paper's learning rates (1e-3 to 1e-2, 50 steps) move a block far
    enough to flip an answer; with s = 1 a MiniLM classifier learned half as many edits at 1e-3.
    """

    task: str
    target_modules: list[str] | str
    router_layer: str
    block_rank: int = 2
    init_radius: float = 0.5
    edit_lr: float = 1e-3
    num_iter: int = 50
    lr_step: int = 30
    lr_gamma: float = 0.5
    lora_alpha: float = 16.0
    key_pooling: str = "last"
    normalize_keys: bool = False
    max_blocks: int | None = None
    target_prefix: str = " "  # causal_lm: put between prompt and target text
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise MeloConfigError(f"task {self.task!r} is not one of {TASKS}")
        if self.key_pooling not in POOLINGS:
            raise MeloConfigError(f"key_pooling {self.key_pooling!r} is not one of {POOLINGS}")
        if isinstance(self.target_modules, (list, tuple)):
            if not self.target_modules:
                raise MeloConfigError("target_modules is empty")
            self.target_modules = list(self.target_modules)
        elif not isinstance(self.target_modules, str) or not self.target_modules:
            raise MeloConfigError(f"target_modules {self.target_modules!r} is neither a list of names nor a regex")
        if not isinstance(self.router_layer, str) or not self.router_layer:
            raise MeloConfigError(f"router_layer {self.router_layer!r} is not a module name")
        for name in ("block_rank", "num_iter", "lr_step"):
            if int(getattr(self, name)) < 1:
                raise MeloConfigError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        for name in ("init_radius", "edit_lr"):
            if not float(getattr(self, name)) > 0:
                raise MeloConfigError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.max_blocks is not None and self.max_blocks < 1:
            raise MeloConfigError(f"max_blocks must be at least 1 or None, got {self.max_blocks!r}")

    @property
    def scale(self) -> float:
        return float(self.lora_alpha) / self.block_rank

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MeloConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MeloConfigError(f"unknown MeloConfig fields {unknown}")
        return cls(**data)
