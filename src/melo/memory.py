"""Byte counts of what an editor stores, and the process's peak resident memory."""

from __future__ import annotations

import sys
from typing import Iterable

import torch


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def peak_rss_bytes() -> int | None:
    """Peak resident set size of this process so far (None where the platform does not tell)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux
