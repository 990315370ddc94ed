"""Settings of ``melo run`` (``melo.demo``); the sweeps behind them: ``docs/demo.md``."""

from __future__ import annotations

from typing import Any

from .llm import SMOLLM2_ZSRE
from .standins import MINILM_QA

PRESETS: dict[str, dict[str, Any]] = {
    # the world demo model (melo run --world): minilm-qa's layers, a smaller radius
    "world-qa": {**MINILM_QA, "init_radius": 0.2},
    # the built-in facts asked as chat questions: smollm2-zsre with radius 0.6, early stop at loss 0.15
    "smollm2-facts": {**SMOLLM2_ZSRE, "init_radius": 0.6, "stop_loss": 0.15},
}
