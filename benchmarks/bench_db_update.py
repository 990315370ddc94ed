"""Seconds of one edit's database update (``VectorDatabase.updated``) as the database grows.

A lifelong stream of single-key edits: 384-dim unit keys (MiniLM's) drawn around n/3 topics, so
later keys land near earlier ones (expansions under the same label, conflicts under another), each
with a subject row as the CounterFact preset stores. Reported: the median update in each window of
``--window`` edits, and the database's bytes at the end. Flat lifelong editing needs this to stay a
small share of an edit's 0.4-1 s.

    python benchmarks/bench_db_update.py [--edits 10000] [--window 1000] [--out db_update.json]
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import median_ms, report, wait_quiet

from melo.memory import tensor_bytes
from melo.router import VectorDatabase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=10000)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    wait_quiet(30)
    g = torch.Generator().manual_seed(0)
    topics = torch.nn.functional.normalize(torch.randn(max(1, args.edits // 3), args.dim, generator=g), dim=-1)
    db = VectorDatabase(args.dim, 0.6, "cpu", "nearest")
    windows: dict[int, list[float]] = {}
    for i in range(args.edits):
        noise = 0.04 * torch.randn(args.dim, generator=g)
        key = torch.nn.functional.normalize(topics[i % len(topics)] + noise, dim=-1).unsqueeze(0)
        subject = torch.randint(1000, 30000, (1, 3), generator=g)
        start = time.perf_counter()
        db, _ = db.updated(key, [(i % 7,)], i, subject)
        windows.setdefault(i // args.window, []).append(time.perf_counter() - start)
    rows = [[f"{w * args.window + 1}-{(w + 1) * args.window}", round(median_ms(t), 2)] for w, t in windows.items()]
    first, last = median_ms(windows[0]), median_ms(windows[max(windows)])
    print(f"last window / first: {last / first:.2f}x; database {tensor_bytes(db.tensors().values()) / 1e6:.1f} MB, "
          f"{db.n_clusters} clusters, {len(db.forgotten)} forgotten")
    report(f"database update per edit ({args.dim}-d keys, {args.threads} thread)", ["edits", "median ms"], rows,
           args.out, {"edits": args.edits, "clusters": db.n_clusters})


if __name__ == "__main__":
    main()
