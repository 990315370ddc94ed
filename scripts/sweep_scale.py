"""Lifelong-protocol sweep of bytes and seconds per edit: each variant is one `melo bench` run.

Each variant (a JSON object of MeloConfig overrides of the preset, and optionally ``edits_per_block``)
runs the lifelong protocol on the first ``--n-edits`` records in its own run directory under ``--out``;
a variant whose run finished (``summary.json`` there) is not run again,
so the sweep continues where a killed one stopped. The
table printed at the end (and written to ``OUT/sweep.md``) has Rel. / Gen. / Loc. (teacher-forced),
generalization by greedy exact match, median seconds per edit and stored bytes per edit.

    python scripts/sweep_scale.py --preset smollm2-zsre --n-edits 100 --out runs/sweep-scale \\
        --variant today '{}' --variant r2-bf16 '{"block_rank": 2, "block_dtype": "bfloat16"}'
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from melo.bench.run import run_bench


def run_variant(preset: str, n_edits: int, out: Path, name: str, overrides: dict, data_dir: str | None) -> dict:
    directory = out / name
    overrides = dict(overrides)
    edits_per_block = overrides.pop("edits_per_block", None)  # a protocol setting, not a MeloConfig field
    if not (directory / "summary.json").is_file():
        run_bench(preset, protocol="lifelong", n_edits=n_edits, data_dir=data_dir, out=directory,
                  edits_per_block=edits_per_block,
                  melo_overrides=overrides, progress=False,
                  resume=directory if (directory / "config.json").is_file() else None)
    return json.loads((directory / "summary.json").read_text())


def row(name: str, overrides: dict, s: dict) -> str:
    per_edit = (s.get("adapter_bytes") or 0) / max(1, s["n_edits"])
    return (f"| {name} | `{json.dumps(overrides)}` | {s['reliability']:.3f} | {s['generalization']:.3f} | "
            f"{s['locality']:.3f} | {s['generalization_em']:.3f} | {s['block_seconds_median']:.2f} | "
            f"{per_edit / 1024:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="smollm2-zsre")
    ap.add_argument("--n-edits", type=int, default=100)
    ap.add_argument("--out", default="runs/sweep-scale")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "JSON"), required=True)
    args = ap.parse_args()
    out = Path(args.out)
    lines = ["| variant | overrides | Rel. | Gen. | Loc. | Gen. EM | median s / edit | KB / edit |",
             "|---|---|---|---|---|---|---|---|"]
    for name, text in args.variant:
        overrides = json.loads(text)
        summary = run_variant(args.preset, args.n_edits, out, name, overrides, args.data_dir)
        lines.append(row(name, overrides, summary))
        print(lines[-1], flush=True)
    table = "\n".join(lines) + "\n"
    (out / "sweep.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
