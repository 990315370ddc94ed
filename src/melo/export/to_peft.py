"""Export a saved MELO adapter for serving engines with per-request LoRA (PEFT, vLLM).

``export_peft(ADAPTER_DIR, OUT)`` writes::

    OUT/block-<t>/adapter_config.json          block t as a standard PEFT LoRA adapter
    OUT/block-<t>/adapter_model.safetensors    (r = block_rank, alpha = lora_alpha: the same scale)
    OUT/router.safetensors                     live keys, their blocks and clusters; cluster centres, radii
    OUT/router.json                            router layer, key pooling, block -> adapter name, ...
    OUT/melo_router.py                         standalone load_router() / route() (no melo import)

A routed row in melo computes ``base(x) + (alpha / r) * B_t A_t x``, which is PEFT's LoRA forward
with ``lora_A.weight = A_t [r, in]`` and ``lora_B.weight = B_t [out, r]`` (for transformers' Conv1D
too: PEFT's ``fan_in_fan_out`` only transposes the base weight when merging). Blocks no live edit
routes to are not exported (router.json: ``skipped_blocks``). The whole folder appears at once.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as save_safetensors

from ..errors import MeloError, MeloLoadError
from ..manage import SavedAdapter
from ..persistence import fsync_dir, fsync_tree
from ..router import CANDIDATES

ROUTER_FORMAT = "melo-router"  # keep in step with melo_router.py (its own copy: it runs without melo)
ROUTER_FORMAT_VERSION = 1
ROUTER_SOURCE = Path(__file__).with_name("melo_router.py")
PEFT_TASK_TYPES = {"causal_lm": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM", "classification": None}
# model classes whose Linear-like layers are transformers' Conv1D (weights stored [in, out])
CONV1D_MODEL_PREFIXES = ("GPT2", "OpenAIGPT", "ImageGPT", "DecisionTransformer")


class MeloExportError(MeloError):
    """An export that cannot be written (the output folder exists, nothing to export)."""


def adapter_name(block: int) -> str:
    return f"block-{block}"


def peft_config(adapter: SavedAdapter, fan_in_fan_out: bool) -> dict[str, Any]:
    cfg = adapter.config
    return {
        "peft_type": "LORA",
        "task_type": PEFT_TASK_TYPES[cfg.task],
        "base_model_name_or_path": None,
        "r": cfg.block_rank,
        "lora_alpha": cfg.lora_alpha,
        "target_modules": list(cfg.target_modules),
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": fan_in_fan_out,
        "modules_to_save": None,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
    }


def _uses_conv1d(adapter: SavedAdapter, base_model: torch.nn.Module | None) -> bool:
    if base_model is not None:
        from transformers.pytorch_utils import Conv1D

        return any(isinstance(base_model.get_submodule(name), Conv1D) for name in adapter.lora_names)
    return str(adapter.meta["model"].get("model_class", "")).startswith(CONV1D_MODEL_PREFIXES)


def export_files(adapter: SavedAdapter, base_model: torch.nn.Module | None = None) -> tuple[dict[str, bytes], dict]:
    """The export's files (relative path -> bytes) and its manifest (router.json)."""
    db, cfg = adapter.db, adapter.config
    if sorted(cfg.target_modules) != adapter.lora_names:
        raise MeloLoadError(f"adapter {os.fspath(adapter.directory)!r}: its config names target modules "
                            f"{cfg.target_modules}, its tensors hold blocks of {adapter.lora_names}")
    live = db.live()
    live_blocks = sorted(set(db.key_block[live].tolist()))
    config_text = json.dumps(peft_config(adapter, _uses_conv1d(adapter, base_model)), indent=1)
    files: dict[str, bytes] = {}
    for t in live_blocks:
        weights = {}
        for name in cfg.target_modules:
            A, B = adapter.lora(name)
            weights[f"base_model.model.{name}.lora_A.weight"] = A[t].contiguous()
            weights[f"base_model.model.{name}.lora_B.weight"] = B[t].contiguous()
        files[f"{adapter_name(t)}/adapter_config.json"] = config_text.encode("utf-8")
        files[f"{adapter_name(t)}/adapter_model.safetensors"] = save_safetensors(weights, metadata={"format": "pt"})
    tables = {"keys": db.keys[live], "key_block": db.key_block[live], "key_cluster": db.key_cluster[live],
              "centres": db.centres, "radii": db.radii}
    files["router.safetensors"] = save_safetensors({k: v.detach().cpu().contiguous() for k, v in tables.items()})
    manifest = {
        "format": ROUTER_FORMAT,
        "format_version": ROUTER_FORMAT_VERSION,
        "task": cfg.task,
        "model_class": adapter.meta["model"].get("model_class"),
        "router_layer": cfg.router_layer,
        "key_pooling": cfg.key_pooling,
        "normalize_keys": cfg.normalize_keys,
        "key_dim": db.dim,
        "candidates": CANDIDATES,
        "adapters": {str(t): adapter_name(t) for t in live_blocks},
        "skipped_blocks": {str(t): "no live edit" for t in range(adapter.n_blocks) if t not in live_blocks},
        "lora": {"r": cfg.block_rank, "lora_alpha": cfg.lora_alpha, "target_modules": list(cfg.target_modules)},
        "live_edits": int(db.live_edits().sum()),
        "live_keys": int(live.sum()),
        "clusters": db.n_clusters,
    }
    files["router.json"] = json.dumps(manifest, indent=1).encode("utf-8")
    files["melo_router.py"] = ROUTER_SOURCE.read_bytes()
    return files, manifest


def _write_tree(out: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` into a hidden folder next to ``out``, fsync everything, rename it to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{secrets.token_hex(8)}"
    tmp.mkdir()
    try:
        for rel, data in files.items():
            path = tmp / rel
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(data)
        fsync_tree(tmp)
        if out.exists():  # checked again: another process may have made it meanwhile
            raise MeloExportError(f"{os.fspath(out)!r} already exists: export writes a new folder")
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp)
        raise
    fsync_dir(out.parent)


def export_peft(directory: str | os.PathLike, out: str | os.PathLike,
                base_model: torch.nn.Module | None = None) -> dict[str, Any]:
    """Export the adapter saved in ``directory`` to the new folder ``out``; returns router.json's content.

    ``base_model`` (optional) is used only to tell Conv1D targets (PEFT ``fan_in_fan_out``) exactly;
    without it they are told from the saved model class.
    """
    out = Path(out)
    if out.exists():
        raise MeloExportError(f"{os.fspath(out)!r} already exists: export writes a new folder")
    adapter = SavedAdapter(directory)
    unsupported = [f"{name}={value!r}" for name, value in (("key_encoder", adapter.config.key_encoder),
                                                         ("key_sink_ratio", adapter.config.key_sink_ratio))
                   if value is not None]
    if unsupported:
        raise MeloExportError(f"the exported router computes hidden-state keys without sink rule; this adapter "
                              f"has {', '.join(unsupported)}, which the export does not support yet")
    files, manifest = export_files(adapter, base_model)
    _write_tree(out, files)
    return manifest
