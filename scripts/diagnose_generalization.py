"""Where a lifelong run's paraphrases go, and what generalization would be if each reached its own block.

    python scripts/diagnose_generalization.py runs/zsre-T1000 [--data-dir ../shared/data] [--json out.json]

Loads the run's checkpoint (a `melo bench --protocol lifelong` run of melo), routes every edited record's
paraphrase and sorts it: its own block; a block of another record of the same fact (zsRE's sibling
questions, CounterFact's restated facts) with the same target or another; another fact's block; none. Then it
scores the paraphrases teacher-forced twice: as routed, and with each row forced into its own block (the
figure perfect routing would give), and scores the records whose fact has one target alone (teacher-forced
and by greedy exact match). It also counts the paraphrases that are, word for word, another record's
edited prompt with another target: no router can serve both. Findings: docs/smollm2-routing.md.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import torch

from melo.bench.presets import bench_preset
from melo.bench.protocols import token_accuracy
from melo.bench.resume import Checkpoints
from melo.data import load_task
from melo.data.records import one_target_rows
from melo.evaluation.metrics import exact_match
from melo.evaluation.predict import generate_answers, target_tokens
from melo.loading import load_model
from melo.model import MeloModel
from melo.text import causal_lm_batch


class OwnBlocks:
    """A MeloModel whose every row (paraphrase + target, as teacher forcing feeds it) runs through the block
    of the record it is the paraphrase of."""

    def __init__(self, model: MeloModel, blocks: dict[tuple[int, ...], int]):
        self.model, self.blocks = model, blocks

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, input_ids, attention_mask, **kwargs):
        rows = [tuple(ids[keep.bool()].tolist()) for ids, keep in zip(input_ids, attention_mask)]
        fixed = torch.tensor([self.blocks[r] for r in rows])
        kwargs.pop("melo_key_mask", None)
        return self.model(input_ids=input_ids, attention_mask=attention_mask, melo_blocks=fixed, **kwargs)


def words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a lifelong melo run directory (with checkpoint/)")
    ap.add_argument("--data-dir", help="default: the run's own data directory")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    run = json.loads((args.run / "config.json").read_text())
    if run["method"] != "melo" or run["protocol"] != "lifelong":
        raise SystemExit(f"{args.run}: a lifelong run of melo is needed, this is {run['method']} {run['protocol']}")
    preset = bench_preset(run["preset"])
    data = load_task(run["data"]["task"], args.data_dir or run["data_dir"], target="alt",
                     edits_file=run["edits_file"])
    if run["model"] is not None:  # the run's --model
        base, tok = load_model(run["model"], task="causal_lm")
        base.eval()
    else:
        base, tok = preset.load_model(args.data_dir or run["data_dir"], data)
    saver = Checkpoints(args.run)
    if saver.load() is None:
        raise SystemExit(f"{args.run}: no checkpoint")
    model = saver.restore_editor(lambda d: MeloModel.from_pretrained(base, d, tokenizer=tok))
    edits = model.edits()
    block_of = [r["block"] for r in edits]
    records = data.edits[: len(block_of)]
    if any((r.prompt, r.target) != (e["prompt"], e["target"]) for r, e in zip(records, edits)):
        raise SystemExit(f"{args.run}: the checkpoint's edits are not the data's first {len(edits)} records")
    keep = [i for i, r in enumerate(records) if r.rephrases]
    prompts, targets = [records[i].rephrases[0] for i in keep], [records[i].target for i in keep]

    routed = []
    for lo in range(0, len(prompts), 64):
        enc = model.prompt_inputs(prompts[lo : lo + 64])
        routed += model.route(enc["input_ids"], enc["attention_mask"], enc["melo_key_mask"]).tolist()
    edits_in = defaultdict(list)
    for e, b in enumerate(block_of):
        edits_in[b].append(e)

    def kind(i: int, block: int) -> str:
        if block < 0:
            return "no block"
        if block == block_of[i]:
            return "own block"
        others = [records[e] for e in edits_in[block]]
        if not any(o.fact == records[i].fact for o in others):
            return "another fact's block"
        same = any(o.fact == records[i].fact and o.target == records[i].target for o in others)
        return "same fact, same target" if same else "same fact, another target"

    kinds = [kind(i, b) for i, b in zip(keep, routed)]

    def scored(editor) -> list[float]:
        _, argmax, gold = target_tokens(editor, tok, prompts, targets, "causal_lm", 32, desc="teacher-forced")
        return token_accuracy(argmax, gold, tok.eos_token_id)

    as_routed = scored(model)
    batch, _ = causal_lm_batch(tok, prompts, targets)  # the rows target_tokens builds
    own: dict[tuple[int, ...], int] = {}
    for i, ids, keep_ids in zip(keep, batch["input_ids"], batch["attention_mask"]):
        own.setdefault(tuple(ids[keep_ids.bool()].tolist()), block_of[i])  # a shared row: one block, one target
    forced = scored(OwnBlocks(model, own))

    n = len(keep)
    prompt_targets = defaultdict(set)
    for r in records:
        prompt_targets[words(r.prompt)].add(r.target)
    fact_size = Counter(r.fact for r in records)
    same_target = Counter((r.fact, r.target) for r in records)
    one_target = set(one_target_rows(records, keep, len(records)))
    ambiguous = [j for j, i in enumerate(keep) if i not in one_target]
    single = [j for j, i in enumerate(keep) if i in one_target]
    right = sum(kinds[j] in ("own block", "same fact, same target") for j in ambiguous)
    chance = sum(same_target[records[keep[j]].fact, records[keep[j]].target] / fact_size[records[keep[j]].fact]
                 for j in ambiguous)
    answers = generate_answers(model, tok, [prompts[j] for j in single], "causal_lm", 64, 12)
    single_em = sum(exact_match(a, targets[j]) for a, j in zip(answers, single)) / max(1, len(single))
    paraphrase_targets = defaultdict(set)
    for p, t in zip(prompts, targets):
        paraphrase_targets[words(p)].add(t)
    shared = sum(len(paraphrase_targets[words(p)]) > 1 for p in prompts)
    collisions = sum(bool(prompt_targets.get(words(p))) and t not in prompt_targets[words(p)]
                     for p, t in zip(prompts, targets))
    rows = []
    for k, count in Counter(kinds).most_common():
        hits = [h for h, kk in zip(as_routed, kinds) if kk == k]
        rows.append({"route": k, "paraphrases": count, "share": count / n, "generalization": sum(hits) / count,
                     "lost": sum(1 - h for h in hits) / n})
    out = {"run": str(args.run), "paraphrases": n, "generalization": sum(as_routed) / n,
           "generalization_own_block": sum(forced) / n, "routes": rows,
           "records_whose_fact_has_several_targets": len(ambiguous),
           "their_paraphrases_routed_to_their_target": right / max(1, len(ambiguous)),
           "same_if_routed_to_a_random_record_of_the_fact": chance / max(1, len(ambiguous)),
           "paraphrase_is_another_records_prompt": collisions,
           "paraphrase_shared_with_a_record_of_another_target": shared,
           "generalization_one_target_facts": sum(as_routed[j] for j in single) / max(1, len(single)),
           "generalization_em_one_target_facts": single_em}
    print(f"{n} paraphrases: generalization {out['generalization']:.3f} as routed, "
          f"{out['generalization_own_block']:.3f} with each in its own block")
    print("| route | paraphrases | share | Gen. there | Gen. lost |\n|---|---|---|---|---|")
    for r in rows:
        cells = [r["route"], str(r["paraphrases"])] + [f"{r[k]:.3f}" for k in ("share", "generalization", "lost")]
        print("| " + " | ".join(cells) + " |")
    print(f"records whose fact has more than one target: {len(ambiguous)}; their paraphrases reach a block of "
          f"their own target {out['their_paraphrases_routed_to_their_target']:.3f} of the time, a random record of "
          f"the fact would {out['same_if_routed_to_a_random_record_of_the_fact']:.3f}")
    print(f"paraphrases that are word for word another record's prompt with another target: {collisions}; "
          f"shared word for word by records of different targets: {shared}")
    print(f"the {len(single)} records whose fact has one target: generalization "
          f"{out['generalization_one_target_facts']:.3f} teacher-forced, {single_em:.3f} greedy exact match")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
