"""What the baselines add to the shared editor surface: edit batches counted as blocks, and their records."""

from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from ..config import MeloConfig
from ..editor import Editor


class BaselineEditor(Editor):
    """A baseline editor: its edit batches play the part of MELO's blocks (``max_blocks`` caps them)."""

    def __init__(self, base_model: nn.Module, config: MeloConfig, tokenizer: Any = None):
        super().__init__(base_model, config, tokenizer)
        self.n_batches = 0

    @property
    def n_blocks(self) -> int:
        """Edit batches so far; ``melo_config.max_blocks`` caps them as it caps MELO's blocks."""
        return self.n_batches

    def _record(self, prompts: Sequence[str], targets: Sequence[Any]) -> int:
        batch = self.n_batches
        self.records.extend({"prompt": p, "target": t, "block": batch} for p, t in zip(prompts, targets))
        self.n_batches += 1
        return batch

    def stats(self) -> dict[str, int]:
        return {"edits": len(self.records), "batches": self.n_batches}

    def _meta(self, **extra: Any) -> dict[str, Any]:
        return super()._meta(batches=self.n_batches, **extra)

    @classmethod
    def _saved_options(cls, meta: dict[str, Any]) -> dict[str, Any]:
        return dict(meta.get("options") or {})

    def _restore_records(self, meta: dict[str, Any]) -> None:
        self.records = meta["edits"]
        self.n_batches = int(meta["batches"])
