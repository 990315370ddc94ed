"""Editing protocols: MELO/GRACE sequential editing and WISE/EasyEdit lifelong editing.

An *editor* is a MeloModel or anything with the same surface: ``edit(prompts, targets)``,
``stats()``, ``tokenizer``, and model-like ``__call__`` / ``generate``.

Metrics (pre-edit figures are measured the same way before the first edit):
* ES: the main metric on each batch right after it is edited (mean over batches).
* ERR: on all edits so far; TRR: on the upstream set (answers / labels / text it was trained on);
  Generality: on held-out rephrasings of the edited prompts (strict: each record against its own
  target; per fact: each distinct fact against its latest target); ARR: on the accurate sentences.
* QA: token F1 (the main metric) and exact match against the answers as the tokenizer writes
  them (decode(encode(answer)): GRACE compares token ids); classification: accuracy; hallucination:
  perplexity of the target tokens given the prompt, averaged over examples as GRACE does (lower
  is better).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from ..data import Record, TaskData
from ..errors import MeloConfigError, MeloDataError
from ..evaluation import metrics
from ..evaluation.predict import generate_answers, predict_labels, target_tokens

LOWER_IS_BETTER = {"hallucination"}


@dataclass
class Settings:
    edits_per_block: int = 10
    metric_period: int = 100
    n_edits: int | None = None
    batch_size: int = 64
    max_new_tokens: int = 16
    edit_only_errors: bool = True  # GRACE/MELO: stream only the edits the model gets wrong
    upstream_limit: int | None = 1000
    checkpoints: tuple[int, ...] = (1, 10, 100, 1000)  # lifelong protocol


class Scorer:
    """The main metric of a task, for any list of prompts with gold answers."""

    def __init__(self, kind: str, task: str, tokenizer: Any, settings: Settings, prefix: str = " ",
                 progress: bool = False):
        self.kind, self.task, self.tokenizer, self.settings, self.prefix = kind, task, tokenizer, settings, prefix
        self.progress = progress

    def __call__(self, model: Any, prompts: Sequence[str], golds: Sequence[Any]) -> dict[str, float]:
        if not prompts:
            return {}
        s = self.settings
        desc = f"scoring {len(prompts)} prompts" if self.progress else None
        if self.kind == "qa":
            preds = generate_answers(model, self.tokenizer, prompts, self.task, s.batch_size, s.max_new_tokens, desc)
            golds = [self.spoken(g) for g in golds]
            f1 = [metrics.token_f1(p, g) for p, g in zip(preds, golds)]
            em = [metrics.exact_match(p, g) for p, g in zip(preds, golds)]
            return {"score": metrics.mean(f1), "em": metrics.mean(em), "_hits": em}
        if self.kind == "classification":
            preds = predict_labels(model, self.tokenizer, prompts, s.batch_size, desc)
            hits = [float(p == int(g)) for p, g in zip(preds, golds)]
            return {"score": metrics.mean(hits), "_hits": hits}
        nll, _, gold = target_tokens(model, self.tokenizer, prompts, [str(g) for g in golds], self.task,
                                     max(1, s.batch_size // 2), self.prefix, desc)
        return {"score": metrics.mean([metrics.perplexity(n, len(g)) for n, g in zip(nll, gold)])}

    def spoken(self, answers: Sequence[str]) -> list[str]:
        """Answers as the model's tokenizer can write them (an uncased WordPiece model cannot
        produce case, accents or glued punctuation): decode(encode(answer)), as GRACE scores ids."""
        ids = self.tokenizer(list(answers), add_special_tokens=False)["input_ids"]
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]

    def records(self, model: Any, records: Sequence[Record], gold: str = "target") -> dict[str, float]:
        if self.kind == "qa":
            golds = [r.answers if gold == "answers" and r.answers else [r.target] for r in records]
        else:
            golds = [r.target for r in records]
        return self(model, [r.prompt for r in records], golds)

    def generality(self, model: Any, records: Sequence[Record]) -> dict[str, float]:
        """Strict (each rephrase vs its record's target) and per distinct fact (latest target)."""
        pairs = [(q, r.target, r.fact or r.prompt) for r in records for q in r.rephrases]
        if not pairs:
            return {}
        latest = {fact: target for _, target, fact in pairs}
        wrap = (lambda t: [t]) if self.kind == "qa" else (lambda t: t)
        questions = [q for q, _, _ in pairs]
        strict = self(model, questions, [wrap(t) for _, t, _ in pairs])
        out = {"generality": strict["score"]}
        if "em" in strict:
            out["generality_em"] = strict["em"]
        if self.kind != "hallucination":
            same = all(latest[f] == t for _, t, f in pairs)  # no fact re-edited to a new target: same scores
            per_fact = strict if same else self(model, questions, [wrap(latest[f]) for _, _, f in pairs])
            by_fact: dict[str, list[float]] = {}
            for (_, _, fact), hit in zip(pairs, per_fact["_hits"]):
                by_fact.setdefault(fact, []).append(hit)
            out["generality_fact"] = metrics.mean([metrics.mean(v) for v in by_fact.values()])
        return out


def select_edits(scorer: Scorer, model: Any, data: TaskData, settings: Settings) -> list[Record]:
    """The edit stream: records the unedited model gets wrong (GRACE/MELO), up to n_edits."""
    candidates = list(data.edits)
    if settings.edit_only_errors and scorer.kind != "hallucination":
        limit = settings.n_edits
        chosen: list[Record] = []
        step = max(256, 2 * (limit or 0))
        for lo in range(0, len(candidates), step):
            chunk = candidates[lo : lo + step]
            hits = scorer.records(model, chunk)["_hits"]
            chosen.extend(r for r, h in zip(chunk, hits) if h < 1.0)
            if limit is not None and len(chosen) >= limit:
                break
        candidates = chosen
    return candidates[: settings.n_edits] if settings.n_edits else candidates


def _public(result: dict[str, float], prefix: str) -> dict[str, float]:
    out = {}
    for key, value in result.items():
        if key.startswith("_"):
            continue
        out[prefix if key == "score" else f"{prefix}_{key}"] = value
    return out


def _timed_edit(editor: Any, batch: Sequence[Record], block_seconds: list[float]) -> None:
    """One block of edits, its wall seconds appended to ``block_seconds``."""
    start = time.perf_counter()
    editor.edit([r.prompt for r in batch], [r.target for r in batch])
    block_seconds.append(time.perf_counter() - start)


def evaluate_state(scorer: Scorer, model: Any, done: Sequence[Record], data: TaskData, upstream: Sequence[Record],
                   prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if done:
        out.update(_public(scorer.records(model, done), f"{prefix}err"))
        out.update({prefix + k: v for k, v in scorer.generality(model, done).items()})
    out.update(_public(scorer.records(model, upstream, gold="answers"), f"{prefix}trr"))
    if data.accurate:
        out.update(_public(scorer.records(model, data.accurate), f"{prefix}arr"))
    return out


def run_sequential(editor: Any, data: TaskData, task: str, settings: Settings,
                   log: Callable[[dict[str, Any]], None], progress: bool = True) -> dict[str, Any]:
    """MELO/GRACE protocol: batches of edits; ES after each batch, the rest every metric_period."""
    prefix = getattr(getattr(editor, "melo_config", None), "target_prefix", " ")
    scorer = Scorer(data.kind, task, editor.tokenizer, settings, prefix, progress)
    edits = select_edits(scorer, editor, data, settings)
    if not edits:
        raise MeloDataError(f"no edits to make on {data.name}: the unedited model gets every candidate right")
    upstream = data.upstream[: settings.upstream_limit]
    pre = evaluate_state(scorer, editor, edits, data, upstream, prefix="pre_")
    pre.update({"pre_es" + key[len("pre_err"):]: value for key, value in pre.items() if key.startswith("pre_err")})
    log({"n_edits": 0, **pre, **editor.stats()})
    done: list[Record] = []
    es_sum, last_eval = 0.0, 0
    block_seconds: list[float] = []
    point: dict[str, Any] = {}
    bar = tqdm(total=len(edits), desc=f"{data.name}: editing", disable=not progress, unit="edit")
    for lo in range(0, len(edits), settings.edits_per_block):
        batch = edits[lo : lo + settings.edits_per_block]
        _timed_edit(editor, batch, block_seconds)
        done.extend(batch)
        es = _public(scorer.records(editor, batch), "es")
        es_sum += es["es"] * len(batch)
        point = {"n_edits": len(done), **es, "edit_seconds": sum(block_seconds)}
        if len(done) - last_eval >= settings.metric_period or len(done) == len(edits):
            point.update(evaluate_state(scorer, editor, done, data, upstream))
            last_eval = len(done)
        point.update(editor.stats())
        log(point)
        bar.update(len(batch))
        bar.set_postfix({k: round(v, 3) for k, v in point.items() if k in ("es", "err", "trr")})
    bar.close()
    summary = {k: v for k, v in point.items() if k != "es" and not k.startswith("es_")}
    summary.update(pre)
    summary["es"] = es_sum / len(done)
    summary["n_edits"] = len(done)
    summary["edit_seconds"] = sum(block_seconds)
    summary["block_seconds_median"] = statistics.median(block_seconds)
    return summary


def _token_accuracy(argmax: list[list[int]], gold: list[list[int]], eos: int | None) -> list[float]:
    out = []
    for pred, ref in zip(argmax, gold):
        if len(ref) > 1 and ref[-1] == eos:
            pred, ref = pred[:-1], ref[:-1]
        out.append(sum(p == r for p, r in zip(pred, ref)) / max(1, len(ref)))
    return out


def run_lifelong(editor: Any, data: TaskData, task: str, settings: Settings,
                 log: Callable[[dict[str, Any]], None], progress: bool = True) -> dict[str, Any]:
    """WISE/EasyEdit protocol: after T edits, Reliability, Generalization and Locality of those T."""
    if data.kind != "qa":
        raise MeloConfigError(f"the lifelong protocol is defined for QA editing, not {data.kind!r}")
    tok = editor.tokenizer
    total = max(settings.checkpoints) if settings.n_edits is None else settings.n_edits
    edits = list(data.edits[:total])
    checkpoints = sorted({t for t in settings.checkpoints if t <= len(edits)} | {len(edits)})
    loc_prompts = [r.locality_prompt or "" for r in edits]
    s = settings

    def desc(what: str, n: int) -> str | None:
        return f"{what} ({n} prompts)" if progress else None

    def outputs(prompts: Sequence[str]) -> list[str]:
        return generate_answers(editor, tok, prompts, task, s.batch_size, s.max_new_tokens,
                                desc("answers", len(prompts)))

    def predicted(prompts: Sequence[str], targets: Sequence[str]) -> tuple[list[list[int]], list[list[int]]]:
        _, argmax, gold = target_tokens(editor, tok, prompts, targets, task, s.batch_size,
                                        desc=desc("teacher-forced", len(prompts)))
        return argmax, gold

    def reliability(prompts: Sequence[str], targets: Sequence[str]) -> float:
        return metrics.mean(_token_accuracy(*predicted(prompts, targets), tok.eos_token_id))

    def generated(prompts: Sequence[str], targets: Sequence[str]) -> tuple[float, float]:
        """Exact match and token F1 of greedy answers against the targets."""
        answers = outputs(prompts)
        return (metrics.mean([metrics.exact_match(a, t) for a, t in zip(answers, targets)]),
                metrics.mean([metrics.token_f1(a, t) for a, t in zip(answers, targets)]))

    # WISE / EasyEdit locality: the share of the locality answer's tokens predicted as before
    loc_targets = [r.locality_answer or "" for r in edits]
    teacher_loc = [i for i, r in enumerate(edits) if r.locality_prompt and r.locality_answer]
    before_loc_tokens = predicted([loc_prompts[i] for i in teacher_loc], [loc_targets[i] for i in teacher_loc])[0]
    before_loc = outputs(loc_prompts)
    pre = {
        "pre_reliability": reliability([r.prompt for r in edits], [r.target for r in edits]),
        "pre_generalization": reliability([r.rephrases[0] for r in edits if r.rephrases],
                                          [r.target for r in edits if r.rephrases]),
    }
    log({"n_edits": 0, **pre, **editor.stats()})
    summary: dict[str, Any] = dict(pre)
    block_seconds: list[float] = []
    bar = tqdm(total=len(edits), desc=f"{data.name}: lifelong editing", disable=not progress, unit="edit")
    done = 0
    for lo in range(0, len(edits), s.edits_per_block):
        batch = edits[lo : lo + s.edits_per_block]
        _timed_edit(editor, batch, block_seconds)
        done += len(batch)
        bar.update(len(batch))
        if any(lo < t <= done for t in checkpoints):
            seen = edits[:done]
            with_rephrase = [r for r in seen if r.rephrases]
            after_loc = outputs(loc_prompts[:done])
            rows = [i for i in teacher_loc if i < done]
            after_tokens = predicted([loc_prompts[i] for i in rows], [loc_targets[i] for i in rows])[0]
            same_tokens = [sum(a == b for a, b in zip(after, before)) / max(1, len(before))
                           for after, before in zip(after_tokens, before_loc_tokens)]
            unchanged = metrics.mean([float(a == b) for a, b in zip(after_loc, before_loc[:done])])
            rel_em, rel_f1 = generated([r.prompt for r in seen], [r.target for r in seen])
            gen_em, gen_f1 = generated([r.rephrases[0] for r in with_rephrase], [r.target for r in with_rephrase])
            point = {
                "n_edits": done,
                "reliability": reliability([r.prompt for r in seen], [r.target for r in seen]),
                "generalization": reliability([r.rephrases[0] for r in with_rephrase],
                                              [r.target for r in with_rephrase]),
                # teacher-forced (WISE) where locality answers exist, else whether generation is unchanged
                "locality": metrics.mean(same_tokens) if rows else unchanged,
                "locality_generated": unchanged,
                "reliability_em": rel_em, "reliability_f1": rel_f1,
                "generalization_em": gen_em, "generalization_f1": gen_f1,
                "edit_seconds": sum(block_seconds),
                **editor.stats(),
            }
            log(point)
            summary[f"T{done}"] = {k: point[k] for k in (
                "reliability", "generalization", "locality", "locality_generated", "reliability_em",
                "reliability_f1", "generalization_em", "generalization_f1")}
            summary.update(point)
    bar.close()
    summary["n_edits"] = done
    summary["edit_seconds"] = sum(block_seconds)
    summary["block_seconds_median"] = statistics.median(block_seconds)
    return summary
