"""Seconds per single-edit block on SmolLM2-135M-Instruct: melo (and settings variants) beside GRACE and a peft LoRA.

The first ``--edits`` zsRE records (``alt`` targets, as the lifelong protocol edits them) are
edited one per block by each method with the ``smollm2-zsre`` bench preset's settings (the same
targets, steps, learning rate and stopping rule; GRACE at the preset's GRACE layer), after
``--warmup`` untimed edits. ``--variant NAME JSON`` adds melo with MeloConfig overrides of the preset.
Reported: median and mean wall seconds of ``editor.edit`` per edit, the median training steps, and
the share of the CPUs other processes used meanwhile (timings are only comparable on a quiet machine).

    python benchmarks/bench_edit_real.py [--edits 20] [--threads 2] [--methods melo grace lora] \\
        [--variant L27 '{"target_modules": ["model.layers.27.mlp.down_proj"]}']
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from _common import cpu_busy

from melo.bench.presets import bench_preset
from melo.bench.run import make_editor
from melo.config import MeloConfig
from melo.data import load_task


def time_method(method: str, n: int, warmup: int, data_dir: str | None,
                overrides: dict | None = None) -> dict[str, float]:
    preset = bench_preset("smollm2-zsre")
    records = load_task("zsre", data_dir, n_edits=n + warmup, target="alt").edits
    base, tokenizer = preset.load_model(None)
    options = dict(preset.baseline_options.get(method, {}))
    if method == "lora":
        options["expected_blocks"] = n + warmup
    config = MeloConfig(**{**preset.melo(), **(overrides or {})})
    editor = make_editor(method, base, config, tokenizer, **options)
    seconds, steps = [], []
    busy_before = cpu_busy(0.5)
    for i, record in enumerate(records):
        start = time.perf_counter()
        result = editor.edit([record.prompt], [record.target])
        if i >= warmup:
            seconds.append(time.perf_counter() - start)
            steps.append(len(result.losses))
    return {"median_s": statistics.median(seconds), "mean_s": statistics.mean(seconds), "edits": len(seconds),
            "median_steps": statistics.median(steps), "cpu_busy_before": round(busy_before, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--edits", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", nargs="*", default=["melo", "grace", "lora"])
    ap.add_argument("--variant", nargs=2, action="append", default=[], metavar=("NAME", "JSON"),
                    help="melo with these MeloConfig overrides of the preset")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = {m: time_method(m, args.edits, args.warmup, args.data_dir) for m in args.methods}
    for name, text in args.variant:
        results[f"melo {name}"] = time_method("melo", args.edits, args.warmup, args.data_dir, json.loads(text))
    print("| method | median s / edit | mean s / edit | median steps | edits | threads | other load |")
    print("|---|---|---|---|---|---|---|")
    for m, r in results.items():
        print(f"| {m} | {r['median_s']:.2f} | {r['mean_s']:.2f} | {r['median_steps']:.0f} | {r['edits']} | "
              f"{args.threads} | {100 * r['cpu_busy_before']:.0f}% |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"threads": args.threads, "variants": dict(args.variant), **results}, f, indent=1)


if __name__ == "__main__":
    main()
