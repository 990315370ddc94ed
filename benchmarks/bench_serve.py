"""Completion latency and throughput of ``melo serve`` over HTTP on 127.0.0.1.

Rows: the base model served the same way (same app, melo's routing switched off), a MeloModel with
0 / 1,000 / 10,000 stored edits, and the 1,000-edit model while a real edit trains. Stored edits are
keys of synthetic prompts put straight into the router (benchmarks/_common.py fill_db, 4 edits per
block, random blocks), not trained. Half the requests use an edited prompt (routed to its block),
half a fresh one. Client threads and the server share one process (and its GIL).

Model: a random-weight GPT-2 (default 6 layers x 256, 128 positions) with a word-level tokenizer,
router transformer.h.3.mlp.c_fc, LoRA on h.4 / h.5 mlp.c_fc.

    python benchmarks/bench_serve.py [--edits 0 1000 10000] [--requests 96] [--clients 4] [--out f.json]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import httpx
import torch
import uvicorn
from _common import WORDS, fill_blocks, fill_db, report, sentences, separated_radii, wait_quiet
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

import melo
from melo.serve import EditService, Limits, create_app


class BaseOnly(melo.MeloModel):
    """Generates with melo's routing off: the base model behind the same app."""

    def generate(self, input_ids=None, attention_mask=None, **kwargs):
        with self.disabled():
            return super().generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


def word_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(["[PAD]", "[EOS]", "[UNK]", *dict.fromkeys(WORDS)])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", eos_token="[EOS]", unk_token="[UNK]")


def build(args, tok, cls=melo.MeloModel) -> melo.MeloModel:
    config = GPT2Config(vocab_size=len(tok), n_embd=args.width, n_layer=6, n_head=4, n_positions=128,
                        bos_token_id=1, eos_token_id=1, pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0)
    torch.manual_seed(0)
    base = GPT2LMHeadModel(config).eval()
    cfg = melo.MeloConfig(task="causal_lm", router_layer="transformer.h.3.mlp.c_fc",
                          target_modules=["transformer.h.4.mlp.c_fc", "transformer.h.5.mlp.c_fc"],
                          block_rank=2, init_radius=0.5, key_pooling="mean", normalize_keys=True,
                          num_iter=args.edit_steps, edit_lr=1e-2)
    return cls(base, cfg, tokenizer=tok)


def store_edits(model: melo.MeloModel, prompts: list[str], fresh: list[str]) -> None:
    """``prompts`` as stored edits (4 a block), straight into the router and LoRA blocks."""
    keys = torch.cat([model.encode_keys(prompts[i : i + 256]) for i in range(0, len(prompts), 256)])
    blocks = torch.arange(len(prompts)) // 4
    others, radius = model.encode_keys(fresh), model.melo_config.init_radius
    radii = torch.cat([separated_radii(keys[i : i + 1000], radius, torch.cat([keys[:i], keys[i + 1000:], others]))
                       for i in range(0, len(keys), 1000)])  # in chunks: 10,000^2 distances would not fit
    fill_db(model.db, keys, blocks, radii)
    fill_blocks(model, int(blocks[-1]) + 1)
    model.records = [{"id": i, "prompt": p, "target": "blue", "block": int(b), "created": 0.0}
                     for i, (p, b) in enumerate(zip(prompts, blocks.tolist()))]
    model._publish(model.db)  # publish the filled database and blocks, as edit() does


class Served:
    """The app of ``model`` under uvicorn on a free 127.0.0.1 port, in a thread of this process."""

    def __init__(self, model: melo.MeloModel):
        self.service = EditService(model, "bench", limits=Limits())
        config = uvicorn.Config(create_app(self.service), host="127.0.0.1", port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join()


def load(url: str, prompts: list[str], args, until: threading.Event | None = None) -> tuple[list[float], float]:
    """Latencies (ms) of ``args.requests`` completions from ``args.clients`` threads, and requests/s."""
    latencies: list[float] = []
    per_client = args.requests // args.clients

    def client(k: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            for i in range(per_client):
                body = {"prompt": prompts[(k * per_client + i) % len(prompts)], "max_tokens": args.max_tokens}
                start = time.perf_counter()
                r = http.post("/v1/completions", json=body)
                latencies.append(1000 * (time.perf_counter() - start))
                assert r.status_code == 200, r.text

    threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if until is not None and until.is_set():
        print("  WARNING: the edit finished before the load did; raise --edit-steps")
    return latencies, len(latencies) / wall


def row(name: str, n_edits: int, latencies: list[float], throughput: float) -> list:
    q = statistics.quantiles(latencies, n=20)
    return [name, n_edits, len(latencies), statistics.median(latencies), q[18], throughput]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edits", type=int, nargs="+", default=[0, 1000, 10000])
    ap.add_argument("--requests", type=int, default=96, help="completions per row")
    ap.add_argument("--clients", type=int, default=4, help="concurrent client threads")
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--width", type=int, default=256, help="GPT-2 hidden size")
    ap.add_argument("--edit-steps", type=int, default=2000, help="steps of the edit trained during the last row")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--wait-quiet", type=float, default=60)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tok = word_tokenizer()
    pool = sentences(max(args.edits) + args.requests, 8)
    fresh = pool[-args.requests // 2:]
    busy = wait_quiet(args.wait_quiet)
    rows = []

    with Served(build(args, tok, BaseOnly)) as url:
        rows.append(row("base model", 0, *load(url, pool[: args.requests], args)))
        print(rows[-1], flush=True)
    for n in args.edits:
        model = build(args, tok)
        if n:
            store_edits(model, pool[:n], fresh)
        edited = pool[: min(n, args.requests // 2)] if n else pool[: args.requests // 2]
        prompts = [p for pair in zip(edited * 2, fresh) for p in pair]
        with Served(model) as url:
            rows.append(row("melo", n, *load(url, prompts, args)))
            print(rows[-1], flush=True)
            if n == sorted(args.edits)[len(args.edits) // 2]:
                done = threading.Event()

                def train() -> None:
                    body = {"edits": [{"prompt": "the king of the city", "target": "blue"}]}
                    assert httpx.post(url + "/v1/edits", json=body, timeout=600).status_code == 200
                    done.set()

                edit = threading.Thread(target=train)
                edit.start()
                while httpx.get(url + "/v1/stats").json()["queued_ops"] == 0 and edit.is_alive():
                    time.sleep(0.01)
                time.sleep(0.2)  # into the edit's training
                rows.append(row("melo, edit training", n, *load(url, prompts, args, until=done)))
                print(rows[-1], flush=True)
                edit.join()
    report(f"melo serve completions over HTTP ({args.clients} clients, max_tokens {args.max_tokens}, "
           f"GPT-2 6x{args.width}, {args.threads} torch threads; other load at start {100 * busy:.0f}%)",
           ["served", "stored edits", "requests", "p50 ms", "p95 ms", "requests/s"], rows, args.out)


if __name__ == "__main__":
    main()
