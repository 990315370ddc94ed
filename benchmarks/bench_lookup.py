"""Router lookup time vs number of stored keys.

One cluster per key (radius 0.5), 384-dim keys (MiniLM's) and, with ``--dims 384 3072``, hidden-state
sized keys too; each lookup is a batch of 32 queries, half of them stored keys plus tiny noise (they
route to their block), half random points (they route nowhere). Reported per lookup and per query
row, with the database's bytes and the lookup index's (built on the first lookup after an edit).
Also times the original MELO search (a Python loop calling torch.cdist once per cluster, then a
loop over queries) at the smallest size, alternated with melo's lookup.

    python benchmarks/bench_lookup.py [--sizes 1000 10000 100000] [--dims 384 3072] [--out lookup.json]
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import alternate, fill_db, median_ms, report, wait_quiet

from melo.memory import tensor_bytes
from melo.router import VectorDatabase


def original_lookup(table: list[dict], queries: torch.Tensor) -> list[int]:
    """The original MELO VecDB: search_database + search_cluster."""
    def euc(a, b):
        return torch.cdist(a, b.view(1, -1) if b.dim() < 2 else b, p=2, compute_mode="donot_use_mm_for_euclid_dist")

    dists = torch.stack([euc(queries, c["cluster_center"]).view(-1, 1) for c in table]).view(-1, len(queries))
    smallest, nearest = dists.min(0)
    blocks = []
    for q, d, j in zip(queries, smallest, nearest):
        cluster = table[j]
        if d > cluster["radius"]:
            blocks.append(-1)
            continue
        keys = torch.stack([k for k, _ in cluster["points"]])
        blocks.append(cluster["points"][int(euc(keys, q).view(-1).argmin())][1])
    return blocks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--dims", type=int, nargs="+", default=[384])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=15, help="samples of ~50 ms of lookups each")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--wait-quiet", type=float, default=120, help="seconds to wait for other processes to finish")
    ap.add_argument("--out", default=None, help="write results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    busy = wait_quiet(args.wait_quiet)
    g = torch.Generator().manual_seed(0)

    rows = []
    for dim, n in [(d, n) for d in args.dims for n in args.sizes]:
        keys = torch.randn(n, dim, generator=g)
        db = VectorDatabase(dim, init_radius=0.5)
        fill_db(db, keys)
        half = args.batch // 2
        hit = torch.randperm(n, generator=g)[:half]
        queries = torch.cat([keys[hit] + 1e-4 * torch.randn(half, dim, generator=g),
                             torch.randn(args.batch - half, dim, generator=g)])
        expected = torch.cat([hit, torch.full((args.batch - half,), -1)])

        t0 = time.perf_counter()
        got = db.lookup(queries)  # first call builds the lookup index
        build_ms = 1e3 * (time.perf_counter() - t0)
        assert torch.equal(got, expected), "melo lookup routed wrongly"

        t0 = time.perf_counter()
        db.lookup(queries)
        per = max(1, round(0.05 / (time.perf_counter() - t0)))  # lookups per ~50 ms sample
        fns = {"melo": lambda: [db.lookup(queries) for _ in range(per)]}
        first = (dim, n) == (args.dims[0], args.sizes[0])
        if first:  # the original loop is O(clusters) Python calls: only at the smallest size
            table = [{"cluster_center": keys[j], "radius": 0.5, "points": [(keys[j], j)]} for j in range(n)]
            assert original_lookup(table, queries) == expected.tolist(), "original lookup routed wrongly"
            fns["original"] = lambda: original_lookup(table, queries)
        samples = alternate(fns, args.repeats, args.warmup)
        melo_ms = median_ms(samples["melo"]) / per
        orig_ms = median_ms(samples["original"]) if first else None
        index_mb = sum(t.numel() * t.element_size() for t in db._lookup_index().values()) / 2**20
        db_mb = tensor_bytes(db.tensors().values()) / 2**20
        rows.append([dim, n, args.batch, melo_ms, melo_ms / args.batch, db_mb, index_mb, build_ms,
                     orig_ms or "-", 1e3 * orig_ms / n if orig_ms else "-", orig_ms / melo_ms if orig_ms else "-",
                     "{}/{}".format(*samples["_rounds"])])
        print(f"  {dim}-d, {n} keys: melo {melo_ms:.3f} ms", flush=True)

    report(f"Router lookup (batch {args.batch}, {args.threads} threads, median of "
           f"{args.repeats} samples; other load at start {100 * busy:.0f}%)",
           ["key dim", "keys", "batch", "melo ms / lookup", "ms / query row", "database MB", "index MB",
            "index build ms (first lookup after an edit)", "original MELO ms", "original µs / cluster", "speed-up",
            "clean rounds"], rows, args.out)


if __name__ == "__main__":
    main()
