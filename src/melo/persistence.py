"""Atomic writes of the adapter: safetensors for tensors, JSON for everything else."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

FORMAT_VERSION = 1
TENSORS_FILE = "melo_adapter.safetensors"
META_FILE = "melo_adapter.json"


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_adapter(directory: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    _atomic(path / TENSORS_FILE, lambda tmp: save_file(cpu, tmp))
    text = json.dumps({"format_version": FORMAT_VERSION, **meta}, indent=1)
    _atomic(path / META_FILE, lambda tmp: Path(tmp).write_text(text))


def read_adapter(directory: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path = Path(directory)
    meta = json.loads((path / META_FILE).read_text())
    return load_file(path / TENSORS_FILE), meta
