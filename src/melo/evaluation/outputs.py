"""Where runs write: output folders checked before any work, and figures drawn without touching
matplotlib's global backend (``Figure`` objects draw with their own Agg canvas)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import MeloConfigError


def check_out_dir(path: str | Path) -> Path:
    """``path`` as a folder to write into; a MeloConfigError now, before any work, if it or a parent is a file."""
    path = Path(path)
    for existing in (path, *path.parents):
        if existing.exists():
            if not existing.is_dir():
                raise MeloConfigError(f"output folder {str(path)!r}: {str(existing)!r} is a file, not a folder")
            break
    return path


def figure(rows: int, cols: int, figsize: tuple[float, float]) -> tuple[Any, Any]:
    """(figure, axes[rows][cols]) of a new matplotlib Figure; save it with ``fig.savefig``."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("plots need matplotlib: pip install 'melo[plot]'") from err
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(rows, cols, squeeze=False)
