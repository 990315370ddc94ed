"""Can any router key tell a zsRE paraphrase's own record from its sibling records (same fact, another target)?

    python scripts/sibling_keys.py [--data-dir ../shared/data] [--n 1000]

Stores one key per edit prompt (the first N zsRE records, WISE's `alt` targets) and, for every paraphrase,
asks whether its nearest key is its own record's, or one with its target (over all records, and over the
records whose fact another record gives another target, beside the share a random record of the fact gets).
Key families: MiniLM (the smollm2-zsre preset's), SmolLM2's own layer-12 keys (smollm2-zsre-own, raw and
chat-templated), hashed word and character n-grams, and MiniLM concatenated with each (weight a on the other
part, unit norm). Also the radius at which 1 % of the NQ locality questions reach a key, and the share routed
right within it.
Findings: docs/smollm2-routing.md ("Sibling records").
"""

from __future__ import annotations

import argparse
import re
import zlib
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F

from melo.bench.presets import bench_preset
from melo.config import MeloConfig
from melo.data import load_task
from melo.data.locate import resolve_data_dir
from melo.data.records import one_target_rows
from melo.encoders import SentenceEncoder
from melo.model import MeloModel
from melo.presets.llm import PRESETS


def ngrams(text: str, kind: str, dim: int = 4096) -> torch.Tensor:
    words = re.findall(r"\w+", text.lower())
    if kind == "words":
        grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
    else:
        padded = f" {' '.join(words)} "
        grams = [padded[i : i + 3] for i in range(len(padded) - 2)]
    v = torch.zeros(dim)
    for g in grams:
        v[zlib.crc32(g.encode()) % dim] += 1
    return F.normalize(v, dim=0)


def batched(encode, texts: list[str], size: int = 64) -> torch.Tensor:
    return F.normalize(torch.cat([encode(texts[i : i + size]) for i in range(0, len(texts), size)]), dim=-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir")
    ap.add_argument("--n", type=int, default=1000)
    args = ap.parse_args()
    root = resolve_data_dir(args.data_dir)
    data = load_task("zsre", root, target="alt")
    records = [r for r in data.edits[: args.n] if r.rephrases]
    texts = {"prompt": [r.prompt for r in records], "paraphrase": [r.rephrases[0] for r in records],
             "nq": [r.locality_prompt or "" for r in records]}
    targets = np.array([r.target for r in records], dtype=object)
    one_target = set(one_target_rows(records, list(range(len(records))), len(records)))
    siblings = np.array([i not in one_target for i in range(len(records))])
    size, same = Counter(r.fact for r in records), Counter((r.fact, r.target) for r in records)
    chance = np.mean([same[r.fact, r.target] / size[r.fact] for r, sib in zip(records, siblings) if sib])

    base, tok = bench_preset("smollm2-zsre").load_model(root, data)
    own = MeloModel(base, MeloConfig(**PRESETS["smollm2-zsre-own"]), tokenizer=tok)
    minilm = SentenceEncoder("minilm")
    chat = lambda batch: own.encode_keys([[{"role": "user", "content": t}] for t in batch])  # noqa: E731
    families = {"MiniLM": minilm.encode, "SmolLM2 L12": own.encode_keys, "SmolLM2 L12 chat": chat,
                "word 1-2 grams": lambda b: torch.stack([ngrams(t, "words") for t in b]),
                "char 3-grams": lambda b: torch.stack([ngrams(t, "chars") for t in b])}
    keys = {name: {part: batched(fn, ts) for part, ts in texts.items()} for name, fn in families.items()}
    for other in list(families)[1:]:
        for a in (0.2, 0.5):
            keys[f"MiniLM + {other}, a = {a}"] = {
                part: torch.cat([keys["MiniLM"][part] * (1 - a) ** 0.5, keys[other][part] * a**0.5], 1)
                for part in texts}

    print(f"{len(records)} records, {len(size)} facts; {siblings.sum()} records share their fact with a record of "
          f"another target; a random record of the fact has their target {chance:.3f} of the time\n")
    print("| key | nearest is own | nearest has own target | the same, sibling records only | r (1 % NQ) "
          "| own target within r |")
    print("|---|---|---|---|---|---|")
    for name, k in keys.items():
        d = torch.cdist(k["paraphrase"], k["prompt"])
        nearest = d.argmin(1)
        own_share = (nearest == torch.arange(len(records))).float().mean().item()
        right = targets[nearest.numpy()] == targets
        radius = torch.quantile(torch.cdist(k["nq"], k["prompt"]).min(1).values, 0.01).item()
        within = right & (d.gather(1, nearest[:, None])[:, 0] <= radius).numpy()
        print(f"| {name} | {own_share:.3f} | {right.mean():.3f} | {right[siblings].mean():.3f} | {radius:.3f} "
              f"| {within.mean():.3f} |")


if __name__ == "__main__":
    main()
