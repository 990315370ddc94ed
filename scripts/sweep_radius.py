"""Routing-only sweep of MELO's cluster rules and radius with MiniLM keys (no LoRA trained).

The first ``--n`` records of zsRE (``alt`` targets) and CounterFact are stored one edit per block
in a real :class:`melo.VectorDatabase`, as ``melo bench --protocol lifelong`` would, with each
conflict rule (``split``: the paper; ``nearest``) and radius. Then, at T = 100 and T = N:

* rel: share of edit prompts routed to their own block;
* gen: share of paraphrases routed to their own block (the end-to-end routing share of
  generalization); gen_same: routed to a block whose target text equals their own;
* leak: share of the records' locality prompts (zsRE: NQ questions; CounterFact: neighbourhood
  prompts, another subject with the same relation) routed to any block; forgotten: edits lost.

    python scripts/sweep_radius.py --data-dir ../shared/data --n 1000 --radii 0.5 0.6 0.7 0.75 0.8

Output: a markdown table (docs/counterfact.md has the one behind the presets).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from melo import VectorDatabase
from melo.data import load_counterfact, load_zsre, resolve_data_dir
from melo.data.locate import COUNTERFACT_FILE, ZSRE_FILES, first_file
from melo.encoders import MINILM, SentenceEncoder


def encode(encoder: SentenceEncoder, texts: list[str], batch: int = 64) -> torch.Tensor:
    return torch.cat([encoder.encode(texts[i : i + batch]) for i in range(0, len(texts), batch)])


def routing(keys: dict[str, torch.Tensor], targets: list[str], T: int, radius: float, rule: str) -> dict[str, float]:
    label = {t: i for i, t in enumerate(dict.fromkeys(targets))}  # same target text, same label
    db = VectorDatabase(keys["edit"].shape[1], radius, conflict_rule=rule)
    for i in range(T):
        db, _ = db.updated(keys["edit"][i : i + 1], [(label[targets[i]],)], i)
    own = torch.arange(T)
    to = db.lookup(keys["paraphrase"][:T])
    same = [b >= 0 and targets[b] == targets[i] for i, b in enumerate(to.tolist())]
    return {
        "rel": float((db.lookup(keys["edit"][:T]) == own).float().mean()),
        "gen": float((to == own).float().mean()),
        "gen_same": sum(same) / T,
        "leak": float((db.lookup(keys["locality"][:T]) >= 0).float().mean()),
        "forgotten": len(db.forgotten),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--radii", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.75, 0.8])
    args = parser.parse_args()
    root = resolve_data_dir(args.data_dir)
    tasks = {
        "zsre": load_zsre(first_file(root, ZSRE_FILES), target="alt", limit=args.n),
        "counterfact": load_counterfact(Path(root) / COUNTERFACT_FILE, limit=args.n),
    }
    encoder = SentenceEncoder(MINILM)
    print("| task | rule | r | T | rel | gen | gen_same | leak | forgotten |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, records in tasks.items():
        keys = {
            "edit": encode(encoder, [r.prompt for r in records]),
            "paraphrase": encode(encoder, [r.rephrases[0] for r in records]),
            "locality": encode(encoder, [r.locality_prompt or "" for r in records]),
        }
        targets = [str(r.target) for r in records]
        for rule in ("split", "nearest"):
            for radius in args.radii:
                for T in sorted({min(100, len(records)), len(records)}):
                    m = routing(keys, targets, T, radius, rule)
                    print(f"| {name} | {rule} | {radius} | {T} | {m['rel']:.3f} | {m['gen']:.3f} | "
                          f"{m['gen_same']:.3f} | {m['leak']:.3f} | {m['forgotten']} |", flush=True)


if __name__ == "__main__":
    main()
