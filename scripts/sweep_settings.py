"""Short sweep of a bench preset's MELO settings on its first few edit blocks.

Every variant edits the same first ``--blocks`` blocks of the preset's edit stream on a fresh copy
of the model, then prints: ES right after each block (mean and worst), ERR on all of them at the
end, the relative change in TRR and ARR on the first ``--controls`` records of each and the fraction
of those control prompts routed to a block, and seconds a block.

    python scripts/sweep_settings.py --preset minilm-lm --blocks 5 \
        --grid 'num_iter=50;100' 'block_rank=4;8' 'edit_lr=1e-2;2e-2'
    python scripts/sweep_settings.py --preset minilm-lm --variant '{"block_rank": 8, "lora_alpha": 32}' \
        --variant '{"target_modules": ["bert.encoder.layer.5.output.dense"]}' --grid 'num_iter=100'

Grid values (separated by ``;``) are parsed as JSON where they can be (numbers, lists), else kept as strings.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import time
from typing import Any

import torch

from melo import MeloConfig, get_melo_model
from melo.bench.presets import bench_preset
from melo.bench.protocols import LOWER_IS_BETTER, Scorer, Settings, select_edits
from melo.data import load_task, resolve_data_dir


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``NAME=V1;V2;...``: each value JSON (numbers, lists) or else a plain string."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        name, _, values = item.partition("=")
        if not values:
            raise SystemExit(f"grid item {item!r} is not NAME=V1;V2;...")
        grid[name] = [_value(v) for v in values.split(";")]
    return grid


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def routed_fraction(model: Any, prompts: list[str], chunk: int = 64) -> float:
    """Fraction of prompts the router sends to some block."""
    with torch.no_grad():
        hits = [model.db.lookup(model.encode_keys(prompts[i : i + chunk])) >= 0 for i in range(0, len(prompts), chunk)]
    return float(torch.cat(hits).float().mean())


def variants(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", required=True)
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--edits-per-block", type=int, default=None)
    ap.add_argument("--controls", type=int, default=100, help="TRR / ARR records scored before and after")
    ap.add_argument("--grid", nargs="*", default=[], help="NAME=V1;V2 ... (MeloConfig fields)")
    ap.add_argument("--variant", action="append", default=[],
                    help="a JSON object of MeloConfig fields; repeatable; each is crossed with --grid")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    preset = bench_preset(args.preset)
    data_dir = resolve_data_dir(args.data_dir)
    data = load_task(preset.data, data_dir, target="answer")
    base, tokenizer = preset.load_model(data_dir)
    per_block = args.edits_per_block or preset.edits_per_block
    settings = Settings(edits_per_block=per_block, n_edits=args.blocks * per_block,
                        max_new_tokens=preset.max_new_tokens)
    scorer = Scorer(data.kind, preset.melo()["task"], tokenizer, settings)
    edits = select_edits(scorer, base, data, settings)
    controls = {k: list(v)[: args.controls] for k, v in (("trr", data.upstream), ("arr", data.accurate)) if v}

    def score_controls(model: Any) -> dict[str, float]:
        return {k: scorer.records(model, v, gold="answers" if k == "trr" else "target")["score"]
                for k, v in controls.items()}

    pre = score_controls(base)
    pre["err"] = scorer.records(base, edits)["score"]
    print(f"{args.preset}: {len(edits)} edits in blocks of {per_block}; pre-edit "
          + ", ".join(f"{k} {v:.4g}" for k, v in pre.items()), flush=True)

    singles = [json.loads(v) for v in args.variant] or [{}]
    for change in [{**one, **combo} for one in singles for combo in variants(parse_grid(args.grid))]:
        config = MeloConfig(**{**preset.melo(), **change})
        model = get_melo_model(copy.deepcopy(base), config, tokenizer=tokenizer)
        es, seconds, final_loss = [], [], []
        for lo in range(0, len(edits), per_block):
            batch = edits[lo : lo + per_block]
            start = time.perf_counter()
            result = model.edit([r.prompt for r in batch], [r.target for r in batch])
            seconds.append(time.perf_counter() - start)
            final_loss.append(result.final_loss)
            es.append(scorer.records(model, batch)["score"])
        post = score_controls(model)
        err = scorer.records(model, edits)["score"]
        worst = max(es) if scorer.kind in LOWER_IS_BETTER else min(es)
        print(json.dumps({
            **change, "es": round(sum(es) / len(es), 4), "es_worst": round(worst, 4), "err": round(err, 4),
            **{f"{k}_change": round(post[k] / pre[k] - 1, 5) for k in post},
            **{f"{k}_routed": round(routed_fraction(model, [r.prompt for r in v]), 3) for k, v in controls.items()},
            "final_loss": round(sum(final_loss) / len(final_loss), 4),
            "s_per_block": round(sum(seconds) / len(seconds), 2), **model.stats(),
        }), flush=True)


if __name__ == "__main__":
    main()
