"""Named MeloConfig settings, one table: ``PRESETS[name]`` and ``preset_config(name, **overrides)``.

Each owner keeps its settings in its own file: the paper's (``paper``), the offline stand-ins'
(``standins``), the real LLMs' (``llm``) and the demo's (``demo``). The files hold data only and
import nothing but each other, so the core never depends on an app; why each value is what it is:
``docs/presets.md``.
"""

from __future__ import annotations

from typing import Any

from ..config import MeloConfig
from ..errors import MeloConfigError
from . import demo, llm, paper, standins


def _merged(*owners: Any) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for owner in owners:
        clash = sorted(set(table) & set(owner.PRESETS))
        if clash:
            raise MeloConfigError(f"preset {clash[0]!r} is defined twice (again in {owner.__name__})")
        table.update(owner.PRESETS)
    return table


PRESETS: dict[str, dict[str, Any]] = _merged(paper, standins, llm, demo)


def preset_config(name: str, **overrides: Any) -> MeloConfig:
    """MeloConfig of a named preset, with any field overridden.

    Args:
        name: a key of ``PRESETS``.
        **overrides: MeloConfig fields that replace the preset's.

    Returns:
        A new, validated MeloConfig (MeloConfigError for an unknown name or a bad field).
    """
    if name not in PRESETS:
        raise MeloConfigError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return MeloConfig(**{**PRESETS[name], **overrides})
