"""Settings of `melo run`'s default (SmolLM2 + the built-in facts): each one end to end, timed.

Runs ``melo.demo.run.run_demo`` once per setting (quiet, its own output folder) and prints a
markdown table: edit success, generality, locality (same subject / unrelated), edit seconds and
wall seconds (model load, edits, measurement and saving). One torch thread unless --threads.

Usage: MELO_CACHE=... python scripts/sweep_facts.py [--n-edits 40] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

# name: (DemoOptions fields, preset overrides)
SETTINGS = {
    "default": ({}, {}),
    "4 per block": ({"edits_per_block": 4}, {}),
    "8 per block": ({"edits_per_block": 8}, {}),
    "radius 0.8 (smollm2-zsre's)": ({"radius": 0.8}, {}),
    "stop 0.02 (smollm2-zsre's)": ({}, {"stop_loss": 0.02}),
    "stop 0.1": ({}, {"stop_loss": 0.1}),
    "stop 0.2": ({}, {"stop_loss": 0.2}),
    "60 facts": ({"n_edits": 60}, {}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-edits", type=int, default=None, help="facts to edit (default: melo run's)")
    ap.add_argument("--only", nargs="*", default=None, choices=sorted(SETTINGS), help="these settings only")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="JSON of every run's summary and wall time")
    args = ap.parse_args()
    import torch

    from melo.demo.facts import FACTS_PRESET
    from melo.demo.run import DemoOptions, run_demo
    from melo.presets import PRESETS

    torch.set_num_threads(args.threads)
    base = dict(PRESETS[FACTS_PRESET])
    rows, results = [], {}
    print("| setting | edit success | generality | locality: same subject | locality: unrelated | routed controls "
          "| loss evaluations per edit | edit s | wall s |\n|---|---|---|---|---|---|---|---|---|", flush=True)
    for name in args.only or SETTINGS:
        options, overrides = SETTINGS[name]
        PRESETS[FACTS_PRESET] = {**base, **overrides}
        try:
            with tempfile.TemporaryDirectory() as out:
                start = time.perf_counter()
                summary = run_demo(DemoOptions(out=out, quiet=True, **{"n_edits": args.n_edits, **options}))
                wall = time.perf_counter() - start
        finally:
            PRESETS[FACTS_PRESET] = base
        post, last = summary["post"], summary["curve"][-1]
        results[name] = {"summary": summary, "wall_seconds": round(wall, 1)}
        rows.append(f"| {name} | {post['edit_success']:.2f} | {post['generality']:.2f} | "
                    f"{post['locality_same_entity']:.2f} | {post['locality_other']:.2f} | "
                    f"{last['routed_controls']} | {last['steps'] / summary['n_edits']:.1f} | "
                    f"{summary['edit_seconds']:.0f} | {wall:.0f} |")
        print(rows[-1], flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
