"""Edit management shared by a live MeloModel and a saved adapter: the rows ``edits()`` lists, the
checks of revoke / rollback arguments, and revoke / rollback applied to an adapter on disk (no base
model needed: the router's database and the LoRA blocks are all a save holds)."""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch

from .config import MeloConfig
from .errors import MeloConfigError, MeloEditError, MeloLoadError
from .persistence import read_adapter, write_adapter
from .router import VectorDatabase

SAVED_META = {"config": dict, "model": dict, "router": dict, "edits": list}  # as MeloModel.required_meta


def edit_rows(records: list[dict[str, Any]], db) -> list[dict[str, Any]]:
    """Every edit record with its status ("live", "forgotten" or "revoked") and the reason it is
    not live, from the router's database ``db`` (key ``i`` is edit ``i``)."""
    rows = []
    for i, (record, is_live) in enumerate(zip(records, db.live().tolist())):
        reason = None if is_live else db.forgotten.get(i, "forgotten")
        status = "live" if is_live else ("revoked" if reason == "revoked" else "forgotten")
        rows.append({**record, "status": status, "reason": reason})
    return rows


def check_edit_ids(edit_ids: Sequence[int], n_edits: int) -> list[int]:
    """``edit_ids`` as a list, or MeloEditError unless it is a non-empty list of known ids."""
    if isinstance(edit_ids, (int, str)) or not edit_ids:
        raise MeloEditError(f"edit ids must be a non-empty list of ints, got {edit_ids!r}")
    bad = [i for i in edit_ids if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n_edits]
    if bad:
        raise MeloEditError(f"unknown edit id {bad[0]!r} (ids run from 0 to {n_edits - 1})")
    return list(edit_ids)


def check_rollback(n_blocks: int, current: int) -> int:
    if isinstance(n_blocks, bool) or not isinstance(n_blocks, int) or not 0 <= n_blocks <= current:
        raise MeloEditError(f"rollback to {n_blocks!r} blocks: expected an int from 0 to {current}")
    return n_blocks


# ---- a saved adapter ----------------------------------------------------------------------------
class SavedAdapter:
    """A MELO adapter read from disk: its tensors, meta, database and edit records."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = directory
        where = os.fspath(directory)
        tensors, meta = read_adapter(directory, required=SAVED_META)
        if meta.get("method", "melo") != "melo":
            raise MeloLoadError(f"adapter {where!r} was saved by method {meta['method']!r}, not 'melo'")
        try:
            config = MeloConfig.from_dict(meta["config"])
        except MeloConfigError as err:
            raise MeloLoadError(f"adapter {where!r} has a malformed config: {err}") from err
        self.config = config
        self.lora_names = sorted({k[len("lora."): -len(".A")] for k in tensors if k.startswith("lora.")
                                  and k.endswith(".A")})
        if not self.lora_names:
            raise MeloLoadError(f"adapter {where!r} holds no LoRA blocks")
        counts = set()
        for name in self.lora_names:
            A, B = tensors[f"lora.{name}.A"], tensors.get(f"lora.{name}.B")
            if B is None or A.dim() != 3 or B.dim() != 3 or A.shape[0] != B.shape[0]:
                raise MeloLoadError(f"adapter {where!r}: LoRA blocks of {name!r} are missing or malformed")
            counts.add(A.shape[0])
        if len(counts) != 1:
            raise MeloLoadError(f"adapter {where!r}: target modules hold different numbers of blocks {sorted(counts)}")
        self.n_blocks = counts.pop()
        keys = tensors.get("router.keys")
        if keys is None or keys.dim() != 2:
            raise MeloLoadError(f"adapter {where!r}: tensor router.keys is missing or not [n, dim]")
        try:
            self.db = VectorDatabase.restore(keys.shape[1], config.init_radius, tensors, meta["router"], self.n_blocks,
                                             conflict_rule=config.conflict_rule)
        except MeloLoadError as err:
            raise MeloLoadError(f"adapter {where!r}: {err}") from err
        self.records = list(meta["edits"])
        n_keys = self.db.n_keys
        if len(self.records) != n_keys or not all(isinstance(r, dict) for r in self.records):
            raise MeloLoadError(f"adapter {where!r}: {len(self.records)} edit records for {n_keys} router keys")
        if not all(r.get("block") == b for r, b in zip(self.records, self.db.key_block.tolist())):
            raise MeloLoadError(f"adapter {where!r}: edit records and router keys disagree on blocks")
        self.tensors, self.meta = tensors, meta

    def lora(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tensors[f"lora.{name}.A"], self.tensors[f"lora.{name}.B"]

    def edits(self) -> list[dict[str, Any]]:
        return edit_rows(self.records, self.db)

    def save(self, db: VectorDatabase, n_blocks: int) -> None:
        """Write this adapter back with ``db`` and the first ``n_blocks`` blocks, laid out as
        MeloModel.save_pretrained lays it out (atomically: see melo.persistence)."""
        tensors = {k: v for k, v in self.tensors.items() if not k.startswith("router.")}
        tensors.update(db.tensors())
        for name in self.lora_names:
            for part in ("A", "B"):
                key = f"lora.{name}.{part}"
                tensors[key] = tensors[key][:n_blocks].contiguous()
        meta = {k: v for k, v in self.meta.items() if k != "format_version"}
        meta["edits"] = self.records[: db.n_keys]
        meta["router"] = db.meta()
        write_adapter(self.directory, tensors, meta)


def list_saved_edits(directory: str | os.PathLike) -> list[dict[str, Any]]:
    """``MeloModel.edits()`` of the adapter saved in ``directory``."""
    return SavedAdapter(directory).edits()


def revoke_saved(directory: str | os.PathLike, ids: Sequence[int]) -> None:
    """``MeloModel.revoke(ids)`` applied to the adapter in ``directory``; bad ids change nothing."""
    adapter = SavedAdapter(directory)
    checked = check_edit_ids(ids, len(adapter.records))
    adapter.save(adapter.db.revoked(checked), adapter.n_blocks)


def rollback_saved(directory: str | os.PathLike, n_blocks: int) -> None:
    """``MeloModel.rollback(n_blocks)`` applied to the adapter in ``directory``."""
    adapter = SavedAdapter(directory)
    n = check_rollback(n_blocks, adapter.n_blocks)
    adapter.save(adapter.db.rolled_back(n), n)
