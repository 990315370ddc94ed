"""Helpers shared by the benchmark scripts: timing, direct set-up of router/LoRA state, output."""

from __future__ import annotations

import json
import random
import statistics
import time
from typing import Callable

import torch

WORDS = (
    "the a of is was to in on at by for with from and or not it this that he she they we who what "
    "when where city country river mountain capital king queen author book novel song film painter "
    "red blue green black white cat dog horse bird fish sun moon star tree flower sea lake old new "
    "big small first last one two three born died lives near far largest language english french "
    "german music school house road game food bread apple water fire night day year month people"
).split()


def sentences(n: int, words: int, seed: int = 0) -> list[str]:
    """``n`` distinct synthetic sentences of ``words`` words each."""
    rng = random.Random(seed)
    out: dict[str, None] = {}
    while len(out) < n:
        out[" ".join(rng.choice(WORDS) for _ in range(words))] = None
    return list(out)


def alternate(fns: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each function, calls interleaved (ABBA order) so drift hits all alike."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for i in range(repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            fns[name]()
            samples[name].append(time.perf_counter() - t0)
    return samples


def median_ms(samples: list[float]) -> float:
    return 1e3 * statistics.median(samples)


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median of the per-round ratios (each round ran both, back to back)."""
    return statistics.median(a / b for a, b in zip(num, den))


def fill_db(db, keys: torch.Tensor, blocks: torch.Tensor | None = None, radius: float = 0.5) -> None:
    """Give ``db`` one cluster per key (centre = key, fixed radius, distinct labels), bypassing updated()."""
    n = keys.shape[0]
    db.keys = keys.float().contiguous()
    db.key_block = torch.arange(n) if blocks is None else blocks.long()
    db.key_cluster = torch.arange(n)
    db.centres = keys.double().contiguous()
    db.radii = torch.full((n,), float(radius), dtype=torch.float64)
    db.labels = [(i,) for i in range(n)]
    db.forgotten = {}
    db._index = None


def fill_blocks(model, n: int, seed: int = 0) -> None:
    """Give every LoRA layer of a MeloModel ``n`` frozen random blocks (as if ``n`` edits were made)."""
    g = torch.Generator().manual_seed(seed)
    for layer in model.lora.values():
        r, fin, fout = layer.block_rank, layer.in_features, layer.out_features
        layer.load_blocks(torch.randn(n, r, fin, generator=g) * fin**-0.5,
                          torch.randn(n, fout, r, generator=g) * 1e-3)


def report(title: str, headers: list[str], rows: list[list], out: str | None, extra: dict | None = None) -> None:
    """Print a markdown table; write headers/rows (and ``extra``) as JSON to ``out`` if given."""
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) and abs(v) < 1 else (f"{v:,.2f}" if isinstance(v, float) else str(v))

    print(f"\n### {title}\n")
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" for _ in headers) + "|")
    for row in rows:
        print("| " + " | ".join(fmt(v) for v in row) + " |")
    if out:
        with open(out, "w") as f:
            json.dump({"title": title, "columns": headers, "rows": rows, **(extra or {})}, f, indent=2)
        print(f"\nwrote {out}")
