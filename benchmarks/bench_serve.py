"""Latency, throughput and time to first streamed token of ``melo serve`` on a real model, over HTTP on 127.0.0.1.

Servers, all up at once in this process (uvicorn threads, the same app): the bare model (melo's hooks
removed: the Hugging Face model behind the same endpoints), and MeloModels of the preset (default
SmolLM2-135M-Instruct, ``smollm2-facts``: MiniLM keys on the prompt text) with 0, 1,000 and 10,000
stored edits. The latency and first-token rounds are interleaved (each request goes to every server in
turn, in rotating order) so other load on the machine falls on all rows alike; throughput is
``--clients`` client threads per server, in rounds over the servers. Last row: the 1,000-edit server
while real edits train on it, one after the other (``--edit-steps`` steps each, no early stop). Then an
in-process profile of one stored prompt: the MiniLM key pass, the lookup, the LoRA hooks and whole
requests, interleaved with the bare model's same calls.

Stored edits are SYNTHESIZED for latency only (making 10,000 real edits is hours of CPU): real router
keys (MiniLM, through ``MeloModel.encode_keys``) of real prompts (CounterFact ``prompt`` and zsRE ``src``
from the data directory, their ``target_new`` / ``alt`` as labels) inserted through the real update
path (``VectorDatabase.updated``, ``--edits-per-block`` edits a block), and LoRA blocks of the preset's
real shapes with small random weights instead of trained ones. Half the requests are stored prompts
(routed to their block), half NQ questions no edit was made for.

    OMP_NUM_THREADS=1 python benchmarks/bench_serve.py [--model smollm2-135m-instruct --preset smollm2-facts]
        [--edits 1000 10000] [--rounds 40] [--clients 2] [--max-tokens 8] [--out f.json]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import threading
import time
from pathlib import Path

import httpx
import torch
import uvicorn
from _common import alternate, median_ms, paired_ratio, report, wait_quiet

import melo
from melo.data import load_counterfact, load_nq, load_zsre, resolve_data_dir
from melo.data.locate import COUNTERFACT_FILE, NQ_FILES, ZSRE_FILES, first_file
from melo.serve import EditService, Limits, create_app
from melo.text import target_ids


class Bare(melo.MeloModel):
    """The base model behind the same app: hooks removed, generate goes straight to the base model."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.unload()

    def generate(self, input_ids=None, attention_mask=None, melo_key_mask=None, **kwargs):
        return self.base_model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


class Served:
    """The app of ``model`` under uvicorn on a free 127.0.0.1 port, in a thread of this process."""

    def __init__(self, model: melo.MeloModel, name: str):
        self.service = EditService(model, name, limits=Limits(max_tokens=64))
        config = uvicorn.Config(create_app(self.service), host="127.0.0.1", port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join()


def edit_prompts(data_dir: Path, n: int) -> tuple[list[str], list[str]]:
    """``n`` distinct real edit prompts with targets: CounterFact prompts, then zsRE questions."""
    cases = [(r.prompt, r.target) for r in load_counterfact(data_dir / COUNTERFACT_FILE)]
    cases += [(r.prompt, r.target) for r in load_zsre(first_file(data_dir, ZSRE_FILES), target="alt")]
    unique = list(dict.fromkeys(cases))
    seen, out = set(), []
    for prompt, target in unique:
        if prompt not in seen:
            seen.add(prompt)
            out.append((prompt, target))
    if len(out) < n:
        raise SystemExit(f"only {len(out)} distinct edit prompts in {data_dir}; ask for fewer --edits")
    return [p for p, _ in out[:n]], [t for _, t in out[:n]]


def stored_databases(model: melo.MeloModel, prompts: list[str], targets: list[str], per_block: int,
                     sizes: list[int]) -> dict[int, melo.router.VectorDatabase]:
    """The database after the first ``n`` edits, for each ``n`` in ``sizes``: real keys and labels put in
    through ``VectorDatabase.updated``, ``per_block`` edits a block."""
    start = time.perf_counter()
    keys = torch.cat([model.encode_keys(prompts[i : i + 256]) for i in range(0, len(prompts), 256)])
    prefix = model.melo_config.target_prefix
    labels = [tuple(row) for row in target_ids(model.tokenizer, [prefix + t for t in targets])]
    print(f"  {len(prompts)} MiniLM keys in {time.perf_counter() - start:.0f} s", flush=True)
    db, out = model.db, {}
    for block, i in enumerate(range(0, len(prompts), per_block)):
        db = db.updated(keys[i : i + per_block], labels[i : i + per_block], block)[0]
        if i + per_block in sizes:
            out[i + per_block] = db
    print(f"  databases of {sizes} edits in {time.perf_counter() - start:.0f} s", flush=True)
    return out


def store(model: melo.MeloModel, db, prompts: list[str], targets: list[str]) -> None:
    """Give ``model`` the database ``db`` and random blocks of its real shapes, as if its edits were made."""
    n_blocks = int(db.key_block.max()) + 1
    g = torch.Generator().manual_seed(0)
    for layer in model.lora.values():
        r, fin, fout = layer.block_rank, layer.in_features, layer.out_features
        layer.load_blocks(torch.randn(n_blocks, r, fin, generator=g) * fin**-0.5,
                          torch.randn(n_blocks, fout, r, generator=g) * 1e-3)
    model.records = [{"id": i, "prompt": p, "target": t, "block": int(b), "created": 0.0}
                     for i, (p, t, b) in enumerate(zip(prompts, targets, db.key_block.tolist()))]
    model._publish(db)  # database and blocks published together, as edit() does


def complete(http: httpx.Client, prompt: str, args) -> tuple[float, str]:
    start = time.perf_counter()
    r = http.post("/v1/completions", json={"prompt": prompt, "max_tokens": args.max_tokens, "temperature": 0})
    assert r.status_code == 200, r.text
    return 1000 * (time.perf_counter() - start), r.json()["choices"][0]["text"]


def first_token(http: httpx.Client, prompt: str, args) -> float:
    """Milliseconds to the first streamed text chunk."""
    start, first = time.perf_counter(), None
    body = {"prompt": prompt, "max_tokens": args.max_tokens, "temperature": 0, "stream": True}
    with http.stream("POST", "/v1/completions", json=body) as r:
        for line in r.iter_lines():
            if first is None and line.startswith("data: {") and json.loads(line[6:])["choices"][0]["text"]:
                first = 1000 * (time.perf_counter() - start)
    return first


def throughput(urls: dict[str, str], prompts: list[str], args) -> dict[str, float]:
    """Requests per second of each server: ``args.requests`` completions from ``args.clients`` threads,
    in ``args.throughput_rounds`` rounds that visit every server in turn."""
    per_client = max(1, args.requests // args.clients // args.throughput_rounds)
    seconds = dict.fromkeys(urls, 0.0)

    def client(url: str, k: int) -> None:
        with httpx.Client(base_url=url, timeout=300) as http:
            for i in range(per_client):
                complete(http, prompts[(k * per_client + i) % len(prompts)], args)

    for _ in range(args.throughput_rounds):
        for name, url in urls.items():
            threads = [threading.Thread(target=client, args=(url, k)) for k in range(args.clients)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            seconds[name] += time.perf_counter() - start
    return {name: per_client * args.clients * args.throughput_rounds / s for name, s in seconds.items()}


def interleaved(clients: dict[str, httpx.Client], prompts: list[str], measure) -> dict[str, list]:
    """``measure(client, prompt)`` for every prompt on every server, in rotating order."""
    out: dict[str, list] = {name: [] for name in clients}
    names = list(clients)
    for i, prompt in enumerate(prompts):
        for name in names[i % len(names):] + names[: i % len(names)]:
            out[name].append(measure(clients[name], prompt))
    return out


def measured(clients: dict[str, httpx.Client], urls: dict[str, str], requests: list[str], args,
             reference: str) -> tuple[list[list], dict[str, list]]:
    """Table rows of every server (latency, first token and throughput, each interleaved over the servers)
    and the answers of the latency requests."""
    answers = interleaved(clients, requests, lambda c, p: complete(c, p, args))
    ttft = interleaved(clients, requests[: args.ttft], lambda c, p: first_token(c, p, args))
    rates = throughput(urls, requests, args)
    ms = {name: [m for m, _ in answers[name]] for name in clients}
    rows = []
    for name in clients:
        p50, p95 = statistics.median(ms[name]), statistics.quantiles(ms[name], n=20)[18]
        paired = statistics.median(a / b for a, b in zip(ms[name], ms[reference]))
        rows.append([name, p50, p95, p50 / statistics.median(ms[reference]), paired, rates[name],
                     statistics.median(ttft[name])])
    return rows, answers


def profile(models: dict[str, melo.MeloModel], prompt: str, args) -> list[list]:
    """Where a melo request's time goes, in this process (no HTTP), on one stored prompt: the MiniLM key
    pass, the lookup, the LoRA hooks (generation under a fixed routing call, routed and not) and whole
    requests, each call interleaved with the others (ms: median; ratio: median of the per-round ratios
    to the bare model's same call)."""
    bare, largest = models["bare model"], models[f"melo, {max(args.edits):,} edits"]
    enc = largest.prompt_inputs([prompt], padding_side="left")
    inputs = {k: v for k, v in enc.items() if k != "melo_key_mask"}
    key, block = largest.encode_keys([prompt]), largest.route(**enc)
    assert int(block) >= 0, "the profiled prompt is not routed"
    gen = {"max_new_tokens": args.max_tokens, "do_sample": False, "pad_token_id": largest.tokenizer.pad_token_id}

    def under(blocks: torch.Tensor):
        def run() -> None:
            with largest.router.call("fixed", blocks=blocks):
                largest.base_model.generate(**inputs, **gen)
        return torch.no_grad()(run)

    n = f"{max(args.edits):,}"
    raw, whole = "bare: base_model.generate", "bare: generate_text (a whole request)"
    first = "bare: generate_text, 1 token (the first token)"
    steps = [  # (name, call, the bare call it is compared with)
        ("MiniLM key pass (encoder.encode)", lambda: largest.router.encoder.encode([prompt]), None),
        (f"lookup of one key among {n}", lambda: largest.db.lookup(key), None),
        (raw, torch.no_grad()(lambda: bare.base_model.generate(**inputs, **gen)), raw),
        ("hooks, row not routed: base_model.generate in a fixed call", under(torch.tensor([-1])), raw),
        ("hooks, row routed to its block: base_model.generate in a fixed call", under(block), raw),
        (whole, lambda: bare.generate_text([prompt], max_new_tokens=args.max_tokens), whole),
        (f"melo, {n} edits: generate_text", lambda: largest.generate_text([prompt], max_new_tokens=args.max_tokens),
         whole),
        (first, lambda: bare.generate_text([prompt], max_new_tokens=1), first),
        (f"melo, {n} edits: generate_text, 1 token", lambda: largest.generate_text([prompt], max_new_tokens=1),
         first),
    ]
    times = alternate({name: call for name, call, _ in steps}, args.profile, warmup=1, max_rounds=args.profile)
    rows = [[name, median_ms(times[name]), "–" if ref is None else paired_ratio(times[name], times[ref])]
            for name, _, ref in steps]
    return rows


def keep_training(url: str, prompts: list[str], stop: threading.Event, counts: dict[str, int]) -> None:
    """Post one edit after another (each ``--edit-steps`` steps, no early stop) until ``stop`` is set."""
    with httpx.Client(base_url=url, timeout=3600) as http:
        for prompt in prompts:
            if stop.is_set():
                return
            r = http.post("/v1/edits", json={"edits": [{"prompt": prompt, "target": "Rome"}]})
            assert r.status_code == 200, r.text
            counts["edits"] += 1
    raise SystemExit("ran out of prompts to train edits on")


COLUMNS = ["served", "p50 ms", "p95 ms", "p50 / bare p50", "paired ratio (median)", "requests/s",
           "first token p50 ms"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct", help="melo.loading name, .gguf file or folder")
    ap.add_argument("--preset", default="smollm2-facts")
    ap.add_argument("--data-dir", default=None,
                    help="CounterFact, zsRE and NQ (default $MELO_DATA_DIR or ../shared/data)")
    ap.add_argument("--edits", type=int, nargs="+", default=[1000, 10000], help="stored-edit counts besides 0")
    ap.add_argument("--edits-per-block", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=40, help="latency requests per server (half of them edited prompts)")
    ap.add_argument("--ttft", type=int, default=20, help="streamed requests per server")
    ap.add_argument("--requests", type=int, default=16, help="completions per server for throughput")
    ap.add_argument("--throughput-rounds", type=int, default=2)
    ap.add_argument("--clients", type=int, default=2, help="client threads of a throughput measurement")
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--edit-steps", type=int, default=100, help="steps of each edit trained during the last row")
    ap.add_argument("--profile", type=int, default=8, help="rounds of the in-process profile (0: none)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--wait-quiet", type=float, default=60)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from melo.loading import load_model

    data_dir = resolve_data_dir(args.data_dir)
    sizes = sorted(args.edits)
    prompts, targets = edit_prompts(data_dir, sizes[-1])
    questions = [r.prompt for r in load_nq(first_file(data_dir, NQ_FILES))]
    fresh, to_train = questions[: args.rounds // 2], questions[args.rounds // 2 :]
    base, tokenizer = load_model(args.model, progress=False)
    base.eval()
    config = melo.preset_config(args.preset, num_iter=args.edit_steps, stop_loss=None)  # the training row's edits

    def melo_model() -> melo.MeloModel:
        return melo.MeloModel(copy.deepcopy(base), config, tokenizer=copy.deepcopy(tokenizer))

    models = {"bare model": Bare(copy.deepcopy(base), melo.preset_config(args.preset, key_encoder=None),
                                 tokenizer=copy.deepcopy(tokenizer))}
    for n in [0, *sizes]:
        models[f"melo, {n:,} edits"] = melo_model()
    print(f"building {sizes} stored edits ({args.edits_per_block} a block)", flush=True)
    dbs = stored_databases(models[f"melo, {sizes[-1]:,} edits"], prompts, targets, args.edits_per_block, sizes)
    for n in sizes:
        store(models[f"melo, {n:,} edits"], dbs[n], prompts[:n], targets[:n])
    live = dbs[sizes[0]].live()
    edited = [p for p, ok in zip(prompts, live.tolist()) if ok][: args.rounds // 2]  # live in every database
    requests = [p for pair in zip(edited, fresh) for p in pair]
    routed = {n: float((models[f"melo, {n:,} edits"].route(**models["bare model"].prompt_inputs(edited)) >= 0)
                       .float().mean()) for n in sizes}
    print(f"edited request prompts routed to a block: {routed}", flush=True)

    busy = wait_quiet(args.wait_quiet)
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        urls = {name: stack.enter_context(Served(model, args.model)) for name, model in models.items()}
        clients = {name: stack.enter_context(httpx.Client(base_url=url, timeout=300)) for name, url in urls.items()}
        interleaved(clients, requests[:4], lambda c, p: complete(c, p, args))  # warm-up
        rows, answers = measured(clients, urls, requests, args, "bare model")
        unrouted = [i for i, p in enumerate(requests) if p not in edited]
        for name in models:  # what was timed is right: a request no edit routes is answered as by the bare model
            same = sum(answers[name][i][1] == answers["bare model"][i][1] for i in unrouted)
            print(f"{name}: {same}/{len(unrouted)} unedited prompts answered exactly as by the bare model", flush=True)

        name = f"melo, {sizes[0]:,} edits"
        stop, counts = threading.Event(), {"edits": 0}
        trainer = threading.Thread(target=keep_training, args=(urls[name], to_train, stop, counts))
        trainer.start()
        while clients[name].get("/v1/stats").json()["queued_ops"] == 0:
            time.sleep(0.01)
        time.sleep(0.5)  # into the first edit's training
        during = f"{name}, edits training"
        row = measured({during: clients[name]}, {during: urls[name]}, requests, args, during)[0][0]
        stop.set()
        row[3], row[4] = row[1] / rows[0][1], "–"  # against the bare model's p50 measured without training
        rows.append(row)
        print(f"measured in {time.perf_counter() - start:.0f} s ({counts['edits']} edits trained meanwhile); "
              "waiting for the last edit to end", flush=True)
        title = (f"melo serve on {args.model} ({args.preset}): /v1/completions over HTTP, max_tokens "
                 f"{args.max_tokens}, {args.threads} torch thread(s); latency: {len(requests)} requests per server, "
                 f"one at a time, interleaved over the servers, half of them stored prompts; throughput: "
                 f"{args.requests} requests from {args.clients} clients; other load at start {100 * busy:.0f}%")
        report(title, COLUMNS, rows, None)
        trainer.join()
    profiled = profile(models, edited[0], args) if args.profile else []
    if profiled:
        report(f"where the time goes: {edited[0]!r}, in process, {args.profile} interleaved rounds",
               ["step", "ms", "ratio to the bare model's same call"], profiled, None)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"title": title, "columns": COLUMNS, "rows": rows, "profile": profiled, "routed": routed,
                       "edits_per_block": args.edits_per_block, "edits_during_training_row": counts["edits"]},
                      f, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
