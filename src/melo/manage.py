"""Edit management shared by a live MeloModel and a saved adapter: the rows ``edits()`` lists, the
checks of revoke / rollback arguments, and revoke / rollback applied to an adapter on disk (no base
model needed: the router's database and the LoRA blocks are all a save holds)."""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

import torch

from .config import MeloConfig
from .database import VectorDatabase
from .errors import MeloConfigError, MeloEditError, MeloLoadError
from .memory import tensor_bytes
from .persistence import read_adapter, write_adapter

SAVED_META = {"config": dict, "model": dict, "router": dict, "edits": list}  # the fields of a MELO save


def edit_rows(records: list[dict[str, Any]], db) -> list[dict[str, Any]]:
    """Every edit record with its status ("live", "forgotten" or "revoked") and the reason it is
    not live, from the router's database ``db``."""
    rows, reasons = [], db.edit_reasons()
    for i, record in enumerate(records):
        reason = reasons.get(i)
        status = "live" if reason is None else ("revoked" if reason == "revoked" else "forgotten")
        rows.append({**record, "status": status, "reason": reason})
    return rows


def new_records(first: int, prompts: Sequence[Any], targets: Sequence[Any], block: int,
                subjects: Sequence[str | None] | None) -> list[dict[str, Any]]:
    """The records of one edit batch, numbered from ``first``, created now."""
    now = time.time()
    return [{"id": first + i, "prompt": p, "target": t, "block": block, "created": now,
             **({"subject": subjects[i]} if subjects is not None else {})}
            for i, (p, t) in enumerate(zip(prompts, targets))]


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


def live_blocks(db: VectorDatabase) -> list[int]:
    return sorted(set(db.key_block[db.live()].tolist()))


def adapter_stats(db: VectorDatabase, layers: Sequence[Any], n_edits: int) -> dict[str, int | None]:
    """MeloModel.stats(): counts of edits, blocks, clusters and keys, and the adapter's and database's bytes."""
    n_live = len(live_blocks(db))
    reasons = list(db.edit_reasons().values())
    adapter_bytes = sum(layer.stored_bytes() for layer in layers)
    return {
        "edits": n_edits,
        "blocks": next(iter(layers)).n_blocks,
        "live_blocks": n_live,
        "clusters": db.n_clusters,
        "live_keys": int(db.live().sum()),
        "conflicts": db.n_conflicts,
        "forgotten_edits": sum(1 for r in reasons if r != "revoked"),
        "revoked_edits": sum(1 for r in reasons if r == "revoked"),
        "extra_parameters": sum(layer.extra_parameters(n_live) for layer in layers),
        "router_floats": db.keys.numel() + db.centres.numel(),
        "adapter_bytes": adapter_bytes,
        "database_bytes": tensor_bytes(db.tensors().values()),
        "adapter_bytes_per_edit": adapter_bytes / n_edits if n_edits else None,
    }


def check_contexts(contexts: Any, n: int) -> list[str]:
    """A save's context prefixes (melo.augment): strings, as many as the config asks (none: made again)."""
    if not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts):
        raise MeloLoadError(f"contexts must be a list of strings, got {contexts!r}")
    if contexts and len(contexts) != n:
        raise MeloLoadError(f"the save has {len(contexts)} context prefixes, its config asks for {n}")
    return contexts


def check_signature(meta: dict, layers: Sequence[Any], encoder: Any, key_dim: int, router_layer: str) -> None:
    """A MELO save's model signature against this model: the target shapes, key encoder and key size."""
    saved = meta["model"]
    try:
        shapes, saved_dim = dict(saved["targets"]), saved["key_dim"]
    except (KeyError, TypeError, ValueError) as err:
        raise MeloLoadError(f"model signature is malformed: {err}") from err
    for layer in layers:
        shape = shapes.get(layer.name)
        if shape != [layer.in_features, layer.out_features]:
            raise MeloLoadError(f"target module {layer.name!r} is {layer.in_features}x{layer.out_features} "
                                f"here, {shape} in the save")
    saved_encoder = meta.get("key_encoder")
    here = None if encoder is None else {"name": encoder.name, "digest": encoder.digest}
    if saved_encoder != here:
        raise MeloLoadError(f"its keys were made by key encoder {saved_encoder}, this model's is {here}")
    if saved_dim != key_dim:
        raise MeloLoadError(f"router layer {router_layer!r} gives keys of size {key_dim}, the save has {saved_dim}")


# ---- checks of a save, shared by MeloModel.from_pretrained and SavedAdapter ---------------------------
def check_lora_blocks(tensors: dict[str, torch.Tensor], layers: dict[str, tuple[int, int, int] | None],
                      storage: torch.dtype | None = None) -> int:
    """The number of blocks the saved LoRA tensors hold, after checking them: for each target ``name``
    (``layers``: name -> (rank, in, out) expected, or None when any fits), ``lora.<name>.A`` [n, r, in]
    and ``lora.<name>.B`` [n, out, r], finite, with the same n for every target, and of dtype ``storage``
    when the config fixes one."""
    n_blocks = None
    for name, shape in layers.items():
        missing = [key for key in (f"lora.{name}.A", f"lora.{name}.B") if key not in tensors]
        if missing:
            raise MeloLoadError(f"the save has no tensor {missing[0]!r}")
        A, B = tensors[f"lora.{name}.A"], tensors[f"lora.{name}.B"]
        well_formed = A.dim() == 3 and B.dim() == 3 and A.shape[0] == B.shape[0] and A.shape[1] == B.shape[2]
        expected = "[n, r, in] / [n, out, r]"
        if shape is not None:
            r, fin, fout = shape
            well_formed = well_formed and list(A.shape[1:]) == [r, fin] and list(B.shape[1:]) == [fout, r]
            expected = f"[n, {r}, {fin}] / [n, {fout}, {r}]"
        if not well_formed:
            raise MeloLoadError(f"LoRA blocks of {name!r} are {list(A.shape)} / {list(B.shape)}, not {expected}")
        if n_blocks is not None and A.shape[0] != n_blocks:
            raise MeloLoadError(f"target modules hold different numbers of blocks ({A.shape[0]} vs {n_blocks})")
        if storage is not None and (A.dtype != storage or B.dtype != storage):
            raise MeloLoadError(f"LoRA blocks of {name!r} are {A.dtype} / {B.dtype}, the config stores "
                                f"{str(storage).removeprefix('torch.')}")
        if not bool(torch.isfinite(A).all() and torch.isfinite(B).all()):
            raise MeloLoadError(f"LoRA blocks of {name!r} hold non-finite values")
        n_blocks = A.shape[0]
    if n_blocks is None:
        raise MeloLoadError("the save holds no LoRA blocks")
    return n_blocks


def check_records(records: list, db: VectorDatabase) -> None:
    """One edit record (a dict) per edit of the router's keys, each naming the block its keys map to."""
    if len(records) != db.n_edits or not all(isinstance(r, dict) for r in records):
        raise MeloLoadError(f"{len(records)} edit records for the router's {db.n_edits} edits")
    if db.n_keys and not all(r.get("block") == b for r, b in zip(records, db.key_block[db.first_keys()].tolist())):
        raise MeloLoadError("edit records and router keys disagree on blocks")


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
        try:
            self.n_blocks = check_lora_blocks(tensors, dict.fromkeys(self.lora_names))
            keys = tensors.get("router.keys")
            if keys is None or keys.dim() != 2:
                raise MeloLoadError("tensor router.keys is missing or not [n, dim]")
            self.db = VectorDatabase.restore(keys.shape[1], config.init_radius, tensors, meta["router"], self.n_blocks,
                                             conflict_rule=config.conflict_rule)
            self.records = list(meta["edits"])
            check_records(self.records, self.db)
        except MeloLoadError as err:
            raise MeloLoadError(f"adapter {where!r}: {err}") from err
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
        meta["edits"] = self.records[: db.n_edits]
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
