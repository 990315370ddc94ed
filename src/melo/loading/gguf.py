"""GGUF checkpoints dequantised once into a safetensors folder of the model cache, keyed by their digest.

A build goes to a temporary folder beside its place and is renamed into place once complete, with the
info JSON written last; a folder without it is never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import MeloLoadError
from ..persistence import fsync_dir, fsync_tree, write_durably
from .hf import auto_class, transformers_bars, transformers_version

INFO_FILE = "melo_model.json"
FORMAT_VERSION = 1
_BLOCK = 1 << 20
_HASH_BAR_BYTES = 32 << 20  # files smaller than this are hashed without a bar


def file_sha256(paths: Sequence[Path], progress: bool = True, label: str = "") -> str:
    """Hex sha256 of the concatenation of ``paths``, streamed (a bar for large files when ``progress``)."""
    from tqdm.auto import tqdm

    total = sum(p.stat().st_size for p in paths)
    digest = hashlib.sha256()
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"sha256 {label}".strip(),
              disable=not progress or total < _HASH_BAR_BYTES, file=sys.stderr) as bar:
        for chunk in _read_blocks(paths):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _read_blocks(paths: Sequence[Path]) -> Iterator[bytes]:
    for path in paths:
        with path.open("rb") as handle:
            while block := handle.read(_BLOCK):
                yield block


def converted(name: str, sources: list[Path], gguf_name: str, expected: str | None, root: Path, task: str,
              progress: bool, seconds: int | None) -> Path:
    """The safetensors folder of this GGUF (``sources`` concatenated), converted first if not cached."""
    digest = file_sha256(sources, progress, gguf_name)
    if expected is not None and digest != expected:
        raise MeloLoadError(f"{gguf_name} assembled from {[str(p) for p in sources]} has sha256 {digest}, "
                            f"expected {expected}; reinstall the package")
    folder = root / f"{name}-{digest[:16]}"
    if (folder / INFO_FILE).is_file():
        return folder
    if progress:
        estimate = f", ~{seconds} s" if seconds else ""
        print(f"melo: converting {gguf_name} to safetensors (once{estimate}) into {folder}",
              file=sys.stderr, flush=True)
    build = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=root))
    try:
        build.chmod(0o755)  # mkdtemp makes it private; the finished folder is an ordinary cache folder
        start = time.perf_counter()
        convert_gguf(sources, gguf_name, digest, build, task, progress)
        info = {
            "format": FORMAT_VERSION, "name": name, "gguf": gguf_name, "sha256": digest, "task": task,
            "sources": [str(p) for p in sources], "convert_seconds": round(time.perf_counter() - start, 1),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "transformers": transformers_version(),
        }
        write_durably(build / INFO_FILE, (json.dumps(info, indent=2, sort_keys=True) + "\n").encode("utf-8"))
        fsync_tree(build)
        if (folder / INFO_FILE).is_file():  # another process finished the same build meanwhile
            return folder
        if folder.exists():  # not made by this module (its folders appear complete): replace it
            shutil.rmtree(folder)
        try:
            os.replace(build, folder)
        except OSError:
            if (folder / INFO_FILE).is_file():  # lost the race to another process: its copy is as good
                return folder
            raise
        fsync_dir(root)
    finally:
        if build.exists():
            shutil.rmtree(build)
    return folder


def convert_gguf(sources: list[Path], gguf_name: str, digest: str, build: Path, task: str, progress: bool) -> None:
    """Dequantise the GGUF into ``build`` with ``save_pretrained`` (model and tokenizer)."""
    import transformers
    from transformers import AutoTokenizer

    if len(sources) == 1:
        gguf_path = sources[0]
    else:
        gguf_path = build / gguf_name
        _concatenate(sources, gguf_path, digest)
    auto = auto_class("seq2seq" if task == "seq2seq" else "causal_lm")  # a head is added on load, not stored
    extra = {}
    if hasattr(transformers, "GgufConfig"):  # transformers 5 keeps blocks packed when `kernels` is installed
        extra["quantization_config"] = transformers.GgufConfig(dequantize=True)
    with transformers_bars(progress):
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, trust_remote_code=False)
        model = auto.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32,
                                     trust_remote_code=False, **extra)
    if getattr(model, "hf_quantizer", None) is not None:
        raise MeloLoadError(f"transformers kept {gguf_name} quantized; cannot save it as safetensors")
    if getattr(model.config, "quantization_config", None) is not None:
        model.config.quantization_config = None  # the weights are dequantised now
    model.save_pretrained(build)
    tokenizer.save_pretrained(build)
    if gguf_path.parent == build:
        gguf_path.unlink()


def _concatenate(sources: list[Path], target: Path, digest: str) -> None:
    """The chunks into one file (fsynced with the rest of the build), checked against ``digest``."""
    check = hashlib.sha256()
    with target.open("wb") as out:
        for block in _read_blocks(sources):
            check.update(block)
            out.write(block)
    if check.hexdigest() != digest:
        raise MeloLoadError(f"the chunks of {target.name} changed while being concatenated; try again")


def cached_info(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The info JSON of a converted model folder (source, sha256, conversion time), or None if unfinished."""
    path = Path(folder) / INFO_FILE
    return json.loads(path.read_text()) if path.is_file() else None
