"""Offline stand-in models built from all-MiniLM-L6-v2, trained once and cached (:mod:`melo.standins.cache`).

Each module has ``NAME``, ``SETTINGS`` (training), ``load_saved(directory)``, ``train_and_save(directory, ...)``,
``training_sources(...)`` (the data files and options it trains on; they key its cache folder) and
``load_or_train(data_dir=None, progress=True, data=None) -> (model, tokenizer)`` (``data``: the bench
task, used by stand-ins trained on the task itself); its MELO settings are ``melo.presets.PRESETS[NAME]``.
Register a new one with one line below.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ..errors import MeloConfigError
from . import lm, qa, scotus

STANDINS: dict[str, ModuleType] = {module.NAME: module for module in (qa, scotus, lm)}


def load_standin(name: str, data_dir: Any = None, progress: bool = True, data: Any = None) -> tuple[Any, Any]:
    """(model, tokenizer) of stand-in ``name``, trained and cached on first use (one cache folder per data)."""
    if name not in STANDINS:
        raise MeloConfigError(f"unknown stand-in {name!r}; known: {sorted(STANDINS)}")
    return STANDINS[name].load_or_train(data_dir=data_dir, progress=progress, data=data)
