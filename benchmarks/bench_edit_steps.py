"""Fixed and per-step seconds of a single edit on SmolLM2-135M-Instruct, for several target layouts.

Each layout (MeloConfig overrides of the ``smollm2-zsre`` preset, no stop loss) edits with 1 and with
11 training steps, the layouts and step counts alternated in one process so that other load hits all
alike; per step = (t11 - t1) / 10, fixed = t1 - per step (medians over ``--rounds``).

    python benchmarks/bench_edit_steps.py [--threads 2] [--rounds 6]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from melo.bench.presets import bench_preset
from melo.config import MeloConfig
from melo.data import load_task
from melo.model import get_melo_model

LAYOUTS = {
    "layers 20-21, rank 4": {"target_modules": ["model.layers.20.mlp.down_proj", "model.layers.21.mlp.down_proj"],
                             "block_rank": 4},
    "layer 24, rank 2": {"target_modules": ["model.layers.24.mlp.down_proj"], "block_rank": 2},
    "layer 27, rank 2": {"target_modules": ["model.layers.27.mlp.down_proj"], "block_rank": 2},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    preset = bench_preset("smollm2-zsre")
    records = load_task("zsre", args.data_dir, n_edits=args.rounds, target="alt").edits
    models = {}
    for name, overrides in LAYOUTS.items():
        base, tok = preset.load_model(None)
        models[name] = get_melo_model(base, MeloConfig(**{**preset.melo(), **overrides, "stop_loss": None}),
                                      tokenizer=tok)
    times = {(name, n): [] for name in LAYOUTS for n in (1, 11)}
    for record in records:
        for name, model in models.items():
            for n in (1, 11):
                model.melo_config.num_iter = n
                start = time.perf_counter()
                model.edit([record.prompt], [record.target])
                times[(name, n)].append(time.perf_counter() - start)
    print("| layout | fixed s | s / step | threads |\n|---|---|---|---|")
    for name in LAYOUTS:
        one, eleven = statistics.median(times[(name, 1)]), statistics.median(times[(name, 11)])
        step = (eleven - one) / 10
        print(f"| {name} | {one - step:.3f} | {step:.3f} | {args.threads} |")


if __name__ == "__main__":
    main()
