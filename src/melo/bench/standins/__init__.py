"""Offline stand-in models built from all-MiniLM-L6-v2, trained once and cached (``melo.bench.cache``).

Each module has ``NAME``, ``MELO_SETTINGS`` (MeloConfig kwargs) and
``load_or_train(data_dir=None, progress=True) -> (model, tokenizer)``; register it with one line below.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType
from typing import Any

from ...errors import MeloConfigError

STANDINS: dict[str, ModuleType] = {
    "minilm-qa": import_module(f"{__name__}.qa"),
    "minilm-scotus": import_module(f"{__name__}.scotus"),
    "minilm-lm": import_module(f"{__name__}.lm"),
}


def load_standin(name: str, data_dir: Any = None, progress: bool = True) -> tuple[Any, Any]:
    """(model, tokenizer) of stand-in ``name``, trained and cached on first use."""
    if name not in STANDINS:
        raise MeloConfigError(f"unknown stand-in {name!r}; known: {sorted(STANDINS)}")
    return STANDINS[name].load_or_train(data_dir=data_dir, progress=progress)
