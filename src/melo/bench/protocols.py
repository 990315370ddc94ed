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

import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from ..data import Record, TaskData
from ..data.counterfact import restated_by
from ..data.records import latest_targets, one_target_rows
from ..errors import MeloConfigError, MeloDataError
from ..evaluation import metrics
from ..evaluation.predict import generate_answers, predict_labels, target_tokens
from ..memory import peak_rss_bytes
from .costs import cost_point, window_medians
from .resume import Checkpoints

LOWER_IS_BETTER = {"hallucination"}
ONE_TARGET = ("generalization_one_target", "generalization_em_one_target", "one_target_rows")


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
    eval_sample: int | None = None  # lifelong: beyond this many edits, score a seeded sample of this size
    eval_seed: int = 0
    cost_period: int = 100  # lifelong: log seconds per edit and adapter size every this many edits


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


def _timed_edit(editor: Any, batch: Sequence[Record], state: dict[str, Any]) -> None:
    """One block of edits; its wall seconds and training steps appended to the loop state's lists."""
    start = time.perf_counter()
    scoped = getattr(getattr(editor, "melo_config", None), "subject_gate", False)
    subjects = {"subjects": [r.subject for r in batch]} if scoped else {}
    result = editor.edit([r.prompt for r in batch], [r.target for r in batch], **subjects)
    state["block_seconds"].append(time.perf_counter() - start)
    state.setdefault("block_steps", []).append(len(getattr(result, "losses", ())))


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
                   log: Callable[[dict[str, Any]], None], progress: bool = True,
                   saver: Checkpoints | None = None) -> dict[str, Any]:
    """MELO/GRACE protocol: batches of edits; ES after each batch, the rest every metric_period. With
    ``saver`` the run's state is saved every ``saver.every`` edits and after each evaluation, and a
    saved state is resumed."""
    prefix = getattr(getattr(editor, "melo_config", None), "target_prefix", " ")
    scorer = Scorer(data.kind, task, editor.tokenizer, settings, prefix, progress)
    upstream = data.upstream[: settings.upstream_limit]
    state = saver.state["loop"] if saver is not None and saver.state else None
    if state is None:
        position = {id(r): i for i, r in enumerate(data.edits)}
        edits = select_edits(scorer, editor, data, settings)
        if not edits:
            raise MeloDataError(f"no edits to make on {data.name}: the unedited model gets every candidate right")
        pre = evaluate_state(scorer, editor, edits, data, upstream, prefix="pre_")
        pre.update({"pre_es" + key[len("pre_err"):]: value for key, value in pre.items()
                    if key.startswith("pre_err")})
        log({"n_edits": 0, **pre, **editor.stats()})
        state = {"edits": [position[id(r)] for r in edits], "pre": pre, "done": 0, "es_sum": 0.0, "last_eval": 0,
                 "block_seconds": [], "point": {}}
        if saver is not None:
            saver.save(editor, state)
    edits = [data.edits[i] for i in state["edits"]]
    block_seconds: list[float] = state["block_seconds"]

    def finish(point: dict[str, Any], evaluated: bool) -> None:
        if evaluated:
            point.update(evaluate_state(scorer, editor, edits[: point["n_edits"]], data, upstream))
            state["last_eval"] = point["n_edits"]
        point.update(editor.stats())
        log(point)
        state["point"], state["pending"] = point, None

    if saver is not None and state.get("pending"):  # killed during an evaluation: do it again
        finish(state["pending"], True)
        saver.save(editor, state, adapter=False)
    bar = tqdm(total=len(edits), initial=state["done"], desc=f"{data.name}: editing", disable=not progress,
               unit="edit")
    for lo in range(state["done"], len(edits), settings.edits_per_block):
        batch = edits[lo : lo + settings.edits_per_block]
        _timed_edit(editor, batch, state)
        done = state["done"] = lo + len(batch)
        es = _public(scorer.records(editor, batch), "es")
        state["es_sum"] += es["es"] * len(batch)
        point = {"n_edits": done, **es, "edit_seconds": sum(block_seconds)}
        evaluated = done - state["last_eval"] >= settings.metric_period or done == len(edits)
        if evaluated and saver is not None:  # the edits are safe before a long evaluation
            state["pending"] = point
            saver.save(editor, state)
        finish(point, evaluated)
        bar.update(len(batch))
        bar.set_postfix({k: round(v, 3) for k, v in point.items() if k in ("es", "err", "trr")})
        if saver is not None and (evaluated or done // saver.every > lo // saver.every):
            saver.save(editor, state, adapter=not evaluated)
    bar.close()
    summary = {k: v for k, v in state["point"].items() if k != "es" and not k.startswith("es_")}
    summary.update(state["pre"])
    summary["es"] = state["es_sum"] / state["done"]
    summary["n_edits"] = state["done"]
    summary["edit_seconds"] = sum(block_seconds)
    summary["peak_rss_bytes"] = peak_rss_bytes()
    summary.update(window_medians(block_seconds, state.get("block_steps", [])))
    return summary


def token_accuracy(argmax: list[list[int]], gold: list[list[int]], eos: int | None) -> list[float]:
    """Per row, the share of target tokens predicted teacher-forced (a trailing end-of-sequence left out)."""
    out = []
    for pred, ref in zip(argmax, gold):
        if len(ref) > 1 and ref[-1] == eos:
            pred, ref = pred[:-1], ref[:-1]
        out.append(sum(p == r for p, r in zip(pred, ref)) / max(1, len(ref)))
    return out


def eval_rows(done: int, sample: int | None, seed: int) -> list[int]:
    """Indices of the edits scored after ``done`` edits: all of them, or a seeded sample of ``sample``."""
    if sample is None or done <= sample:
        return list(range(done))
    return sorted(random.Random(seed * 1_000_003 + done).sample(range(done), sample))


def run_lifelong(editor: Any, data: TaskData, task: str, settings: Settings,
                 log: Callable[[dict[str, Any]], None], progress: bool = True,
                 saver: Checkpoints | None = None) -> dict[str, Any]:
    """WISE/EasyEdit protocol: after T edits, Reliability, Generalization and Locality of those T (or
    of a seeded sample of ``settings.eval_sample`` of them). With ``saver`` the run's state is
    saved every ``saver.every`` edits and around each evaluation, and a saved state is resumed."""
    if data.kind != "qa":
        raise MeloConfigError(f"the lifelong protocol is defined for QA editing, not {data.kind!r}")
    tok = editor.tokenizer
    s = settings
    total = max(s.checkpoints) if s.n_edits is None else s.n_edits
    edits = list(data.edits[:total])
    # evaluated after the block that reaches each checkpoint T
    points = sorted({min(len(edits), -(-t // s.edits_per_block) * s.edits_per_block)
                     for t in s.checkpoints if t <= len(edits)} | {len(edits)})
    rows_at = {t: eval_rows(t, s.eval_sample, s.eval_seed) for t in points}
    needed = sorted(set().union(*rows_at.values()))
    loc_prompts = [r.locality_prompt or "" for r in edits]
    loc_targets = [r.locality_answer or "" for r in edits]
    has_loc_answer = [bool(r.locality_prompt and r.locality_answer) for r in edits]
    restated = restated_by(edits) if any(r.truth for r in edits) else None  # CounterFact's own conflicts

    def desc(what: str, n: int) -> str | None:
        return f"{what} ({n} prompts)" if progress else None

    def outputs(prompts: Sequence[str]) -> list[str]:
        return generate_answers(editor, tok, prompts, task, s.batch_size, s.max_new_tokens,
                                desc("answers", len(prompts)))

    def predicted(prompts: Sequence[str], targets: Sequence[str]) -> tuple[list[float], list[list[int]]]:
        _, argmax, gold = target_tokens(editor, tok, prompts, targets, task, s.batch_size,
                                        desc=desc("teacher-forced", len(prompts)))
        return token_accuracy(argmax, gold, tok.eos_token_id), argmax

    def reliability(records: Sequence[Record], rephrased: bool = False) -> float:
        prompts = [r.rephrases[0] if rephrased else r.prompt for r in records]
        return metrics.mean(predicted(prompts, [r.target for r in records])[0])

    def generated(prompts: Sequence[str], targets: Sequence[str]) -> tuple[list[float], list[float]]:
        """Per prompt, exact match and token F1 of its greedy answer against its target."""
        answers = outputs(prompts)
        return ([metrics.exact_match(a, t) for a, t in zip(answers, targets)],
                [metrics.token_f1(a, t) for a, t in zip(answers, targets)])

    state = saver.state["loop"] if saver is not None and saver.state else None
    if state is None:
        # WISE / EasyEdit locality: the share of the locality answer's tokens predicted as before
        teacher = [i for i in needed if has_loc_answer[i]]
        final = [edits[i] for i in rows_at[points[-1]]]
        pre = {"pre_reliability": reliability(final),
               "pre_generalization": reliability([r for r in final if r.rephrases], rephrased=True)}
        state = {"done": 0, "block_seconds": [], "summary": dict(pre),
                 "before_tokens": predicted([loc_prompts[i] for i in teacher], [loc_targets[i] for i in teacher])[1],
                 "before_answers": outputs([loc_prompts[i] for i in needed])}
        log({"n_edits": 0, **pre, **editor.stats()})
        if saver is not None:
            saver.save(editor, state)
    teacher = [i for i in needed if has_loc_answer[i]]
    before_tokens = dict(zip(teacher, state["before_tokens"]))
    before_answers = dict(zip(needed, state["before_answers"]))
    block_seconds: list[float] = state["block_seconds"]
    summary: dict[str, Any] = state["summary"]
    def evaluate(done: int) -> None:
        rows = rows_at[done]
        seen = [edits[i] for i in rows]
        after_answers = outputs([loc_prompts[i] for i in rows])
        loc_rows = [i for i in rows if has_loc_answer[i]]
        after_tokens = predicted([loc_prompts[i] for i in loc_rows], [loc_targets[i] for i in loc_rows])[1]
        same_tokens = [sum(a == b for a, b in zip(after, before_tokens[i])) / max(1, len(before_tokens[i]))
                       for i, after in zip(loc_rows, after_tokens)]
        unchanged = metrics.mean([float(a == before_answers[i]) for i, a in zip(rows, after_answers)])
        unchanged_f1 = metrics.mean([metrics.token_f1(a, before_answers[i]) for i, a in zip(rows, after_answers)])
        asks_edited = [restated is not None and restated[i] is not None and restated[i] < done for i in loc_rows]
        clean = [v for v, hit in zip(same_tokens, asks_edited) if not hit]
        rel_em, rel_f1 = map(metrics.mean, generated([r.prompt for r in seen], [r.target for r in seen]))
        rephrased = [i for i in rows if edits[i].rephrases]
        paraphrases, gen_targets = [edits[i].rephrases[0] for i in rephrased], [edits[i].target for i in rephrased]
        gen_hits = dict(zip(rephrased, predicted(paraphrases, gen_targets)[0]))
        moved = latest_targets(edits, rephrased, done)  # facts a later edit re-targeted: their latest target
        latest = {**gen_hits, **dict(zip(moved, predicted([edits[i].rephrases[0] for i in moved],
                                                           list(moved.values()))[0]))} if moved else gen_hits
        gen_em_rows, gen_f1_rows = generated(paraphrases, gen_targets)
        gen_em = dict(zip(rephrased, gen_em_rows))
        single = one_target_rows(edits, rephrased, done)  # rows whose fact has one target in the first `done`
        point = {
            "n_edits": done,
            "scored_edits": len(rows),
            "reliability": reliability(seen),
            "generalization": metrics.mean(list(gen_hits.values())),
            **({"generalization_latest": metrics.mean(list(latest.values())), "generalization_overridden": len(moved)}
               if any(r.fact is not None for r in edits) else {}),
            # teacher-forced (WISE) where locality answers exist, else whether generation is unchanged
            "locality": metrics.mean(same_tokens) if loc_rows else unchanged,
            "locality_generated": unchanged, "locality_generated_f1": unchanged_f1,
            # neighbourhood prompts that ask a fact an edit so far rewrote (restated_by) left out
            **({"locality_unrestated": metrics.mean(clean), "locality_restated": sum(asks_edited)}
               if restated is not None and loc_rows else {}),
            "reliability_em": rel_em, "reliability_f1": rel_f1,
            "generalization_em": metrics.mean(gen_em_rows), "generalization_f1": metrics.mean(gen_f1_rows),
            # where some scored fact has several targets: the paraphrases of the facts with one (NaN if none)
            **({"generalization_one_target": metrics.mean([gen_hits[i] for i in single]),
                "generalization_em_one_target": metrics.mean([gen_em[i] for i in single]),
                "one_target_rows": len(single)} if len(single) < len(rephrased) else {}),
            **cost_point(editor, done, block_seconds, s.edits_per_block),
        }
        log(point)
        summary[f"T{done}"] = {k: point[k] for k in (
            "scored_edits", "reliability", "generalization", "locality", "locality_generated", "locality_generated_f1",
            "locality_unrestated", "locality_restated", "generalization_latest", "generalization_overridden",
            *ONE_TARGET, "reliability_em", "reliability_f1", "generalization_em",
            "generalization_f1", "edit_seconds") if k in point}
        for key in ONE_TARGET:  # a later point without them must not keep an earlier point's
            summary.pop(key, None)
        summary.update(point)
        state["pending"] = None
        if saver is not None:
            saver.save(editor, state, adapter=False)

    if state.get("pending"):  # killed during an evaluation: do it again
        evaluate(state["pending"])
    bar = tqdm(total=len(edits), initial=state["done"], desc=f"{data.name}: lifelong editing",
               disable=not progress, unit="edit")
    for lo in range(state["done"], len(edits), s.edits_per_block):
        batch = edits[lo : lo + s.edits_per_block]
        _timed_edit(editor, batch, state)
        done = state["done"] = lo + len(batch)
        bar.update(len(batch))
        if done // s.cost_period > lo // s.cost_period:
            log(cost_point(editor, done, block_seconds, s.edits_per_block))
        if done in rows_at:
            state["pending"] = done
            if saver is not None:  # the edits are safe before a long evaluation
                saver.save(editor, state)
            evaluate(done)
        elif saver is not None and done // saver.every > lo // saver.every:
            saver.save(editor, state)
    bar.close()
    summary["n_edits"] = state["done"]
    summary["edit_seconds"] = sum(block_seconds)
    summary["peak_rss_bytes"] = peak_rss_bytes()
    summary.update(window_medians(block_seconds, state.get("block_steps", [])))
    return summary
