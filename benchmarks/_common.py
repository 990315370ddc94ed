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


def sentences(n: int, words: int, seed: int = 0, vocab: list[str] | None = None) -> list[str]:
    """``n`` distinct synthetic sentences of ``words`` words drawn from ``vocab`` (default: WORDS)."""
    rng = random.Random(seed)
    vocab = vocab or WORDS
    out: dict[str, None] = {}
    while len(out) < n:
        out[" ".join(rng.choice(vocab) for _ in range(words))] = None
    return list(out)


def cpu_busy(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy over ``seconds`` (other processes inflate timings on 2 cores)."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # total, idle + iowait

    (t0, i0), _ = snap(), time.sleep(seconds)
    t1, i1 = snap()
    return 1 - (i1 - i0) / max(t1 - t0, 1)


def wait_quiet(max_wait: float, threshold: float = 0.15) -> float:
    """Wait up to ``max_wait`` s for the machine to go idle; returns the last busy fraction."""
    deadline = time.time() + max_wait
    busy = cpu_busy()
    while busy > threshold and time.time() < deadline:
        busy = cpu_busy(2.0)
    if busy > threshold:
        print(f"WARNING: {100 * busy:.0f}% of the CPUs are busy with other work; timings will be inflated")
    return busy


def foreign_jiffies() -> int:
    """CPU time (1/100 s ticks) used so far by everything except this process."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:8]]
    with open("/proc/self/stat") as f:
        own = f.read().rsplit(")", 1)[1].split()
    return sum(v) - v[3] - v[4] - int(own[11]) - int(own[12])  # busy - (utime + stime)


def is_clean(jiffies: int, seconds: float) -> bool:
    """True if other processes used at most ~5% of one CPU (plus 2 ticks of noise) meanwhile."""
    return jiffies <= 2 + 5 * seconds


def alternate(fns: dict[str, Callable[[], object]], repeats: int, warmup: int,
              max_rounds: int | None = None) -> dict[str, list[float]]:
    """Seconds per call of each function, calls interleaved (ABBA order) so drift hits all alike.

    A round (each function once) during which other processes used the CPUs is dropped and run
    again (2 cores: one busy neighbour slows 2-thread torch several-fold), up to ``max_rounds``;
    if too few rounds were clean, all are kept. Key "_rounds": [clean rounds, rounds run].
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    clean: dict[str, list[float]] = {name: [] for name in names}
    every: dict[str, list[float]] = {name: [] for name in names}
    rounds, max_rounds = 0, max_rounds or 4 * repeats
    while len(clean[names[0]]) < repeats and rounds < max_rounds:
        order = names if rounds % 2 == 0 else names[::-1]
        rounds += 1
        f0, start, took = foreign_jiffies(), time.perf_counter(), {}
        for name in order:
            t0 = time.perf_counter()
            fns[name]()
            took[name] = time.perf_counter() - t0
        ok = is_clean(foreign_jiffies() - f0, time.perf_counter() - start)
        for name in names:
            every[name].append(took[name])
            if ok:
                clean[name].append(took[name])
    out = clean if len(clean[names[0]]) >= max(3, repeats // 2) else every
    if out is every:
        print(f"WARNING: only {len(clean[names[0]])}/{rounds} rounds ran without other processes; "
              "keeping all (timings inflated)")
    out["_rounds"] = [len(clean[names[0]]), rounds]
    return out


def median_ms(samples: list[float]) -> float:
    return 1e3 * statistics.median(samples)


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median of the per-round ratios (each round ran both, back to back)."""
    return statistics.median(a / b for a, b in zip(num, den))


def separated_radii(keys: torch.Tensor, radius: float, others: torch.Tensor | None = None) -> torch.Tensor:
    """Per-key radius: ``radius``, shrunk below half the distance to the nearest other key (or to
    any row of ``others``), so no ball contains a foreign point (as updated() guarantees)."""
    points = keys.double() if others is None else torch.cat([keys, others]).double()
    dist = torch.cdist(keys.double(), points)
    dist[torch.arange(len(keys)), torch.arange(len(keys))] = torch.inf
    return torch.clamp(dist.min(1).values / 2 - 1e-5, max=radius)


def fill_db(db, keys: torch.Tensor, blocks: torch.Tensor | None = None, radius: float | torch.Tensor = 0.5) -> None:
    """Give ``db`` one cluster per key (centre = key, given radius, distinct labels), bypassing updated()."""
    n = keys.shape[0]
    db.keys = keys.float().contiguous()
    db.key_block = torch.arange(n) if blocks is None else blocks.long()
    db.key_cluster = torch.arange(n)
    db.centres = keys.double().contiguous()
    db.radii = torch.as_tensor(radius, dtype=torch.float64).expand(n).clone()
    db.labels = [(i,) for i in range(n)]
    db.key_labels = [(i,) for i in range(n)]
    db.forgotten = {}
    db._index = None


def fill_blocks(model, n: int, seed: int = 0) -> None:
    """Give every LoRA layer of a MeloModel ``n`` frozen random blocks (as if ``n`` edits were made)."""
    g = torch.Generator().manual_seed(seed)
    for layer in model.lora.values():
        r, fin, fout = layer.block_rank, layer.in_features, layer.out_features
        layer.load_blocks(torch.randn(n, r, fin, generator=g) * fin**-0.5,
                          torch.randn(n, fout, r, generator=g) * 1e-3)
    if hasattr(model, "_publish"):  # calls see the blocks once they are published with the database
        model._publish(model.db)


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
