"""Target-layer depth sweep behind melo.auto: zsRE lifelong (WISE) runs of a bench preset with its
LoRA targets moved to other layers, one run after another, then a table of Rel. / Gen. / Loc.

    python scripts/sweep_depth.py --preset smollm2-zsre --n-edits 100 --out runs/sweep-depth \
        --module 'model.layers.{}.mlp.down_proj' --layers 15,16 --layers 25,26
    python scripts/sweep_depth.py --preset gemma3-270m-zsre --layers preset --layers 12,13

``--layers preset`` keeps the preset's own targets. Each run writes a bench run directory under
``--out`` (skipped when its summary.json exists, so an interrupted sweep resumes).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from melo.bench.presets import bench_preset
from melo.bench.run import run_bench


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", required=True)
    ap.add_argument("--module", default="model.layers.{}.mlp.down_proj", help="target name, {} = layer index")
    ap.add_argument("--layers", action="append", required=True, help="comma-separated layer indices, or 'preset'")
    ap.add_argument("--n-edits", type=int, default=100)
    ap.add_argument("--out", default="runs/sweep-depth")
    args = ap.parse_args()
    rows = []
    for layers in args.layers:
        overrides = {}
        if layers != "preset":
            overrides["target_modules"] = [args.module.format(int(i)) for i in layers.split(",")]
        out = Path(args.out) / f"{args.preset}-{layers.replace(',', '-')}"
        if not (out / "summary.json").is_file():
            run_bench(args.preset, protocol="lifelong", n_edits=args.n_edits, out=out, progress=False,
                      melo_overrides=overrides)
        summary = json.loads((out / "summary.json").read_text())
        point = summary[f"T{args.n_edits}"]
        targets = overrides.get("target_modules", bench_preset(args.preset).melo()["target_modules"])
        rows.append((layers, targets, point, summary.get("edit_seconds")))
        print(json.dumps({"preset": args.preset, "layers": layers, **point}), flush=True)
    print(f"\n| {args.preset} targets | Rel. | Gen. | Loc. | Rel. / Gen. EM | edit s |\n|---|---|---|---|---|---|")
    for layers, targets, p, seconds in rows:
        sec = f"{seconds:.0f}" if isinstance(seconds, (int, float)) else "-"
        print(f"| {', '.join(targets)} | {p['reliability']:.3f} | {p['generalization']:.3f} | {p['locality']:.3f} "
              f"| {p['reliability_em']:.2f} / {p['generalization_em']:.2f} | {sec} |")


if __name__ == "__main__":
    main()
