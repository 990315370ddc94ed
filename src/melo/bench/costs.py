"""What a benchmark run costs: seconds per edit, the adapter's and database's bytes, peak memory."""

from __future__ import annotations

import statistics
from typing import Any

from ..memory import peak_rss_bytes


def window_medians(block_seconds: list[float], block_steps: list[int]) -> dict[str, float]:
    """Median seconds and training steps per block over the whole run, and seconds over its first and
    last windows (flatness)."""
    if not block_seconds:
        return {}
    window = min(1000, max(1, len(block_seconds) // 10))
    return {"block_seconds_median": statistics.median(block_seconds), "block_seconds_window": window,
            "block_steps_median": statistics.median(block_steps) if block_steps else None,
            "block_seconds_median_first": statistics.median(block_seconds[:window]),
            "block_seconds_median_last": statistics.median(block_seconds[-window:])}


def cost_point(editor: Any, done: int, block_seconds: list[float], edits_per_block: int) -> dict[str, Any]:
    """What the run costs so far: seconds per edit over the last blocks, adapter and database size."""
    stats = editor.stats()
    recent = block_seconds[-max(1, 100 // edits_per_block):]
    point = {"n_edits": done, "edit_seconds": sum(block_seconds),
             "seconds_per_edit": statistics.median(recent) / edits_per_block, **stats,
             "peak_rss_bytes": peak_rss_bytes()}
    if stats.get("adapter_bytes") is not None:
        point["adapter_mb"] = stats["adapter_bytes"] / 2**20
    return point
