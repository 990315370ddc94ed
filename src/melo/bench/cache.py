"""Where trained stand-in models are cached (outside the repository)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """``$MELO_CACHE`` or ``~/.cache/melo``, joined with ``parts`` and created."""
    root = Path(os.environ.get("MELO_CACHE") or Path.home() / ".cache" / "melo")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
