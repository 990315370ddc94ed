"""``melo run``: counterfactual edits of a fictional world, measured and plotted.

Default: the demo model (``melo.demo.model``) answers every question of ``world.json``; the
world's 80 counterfactual edits are learned in blocks of ``edits_per_block``; after each block,
edit success (all edits so far), generality (their paraphrases) and locality (untouched facts'
questions whose answer did not change) are measured. ``--model``/``--preset`` swap in any model,
``--edits`` any edit file (``melo.demo.world.read_edits_file``).
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

from ..errors import MeloConfigError
from .world import EditCase, World, load_world, read_edits_file

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
    edits_per_block: int = 8
    num_iter: int | None = None
    radius: float | None = None
    examples: int = 5
    world: str | None = None


@dataclass
class Subject:
    """The model under edit, its tokenizer, its MeloConfig, and how to ask it questions."""

    model: Any
    tokenizer: Any
    config: Any
    task: str
    name: str


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
    """Answers (text, or class ids for classifiers) to many prompts at once."""

    def __init__(self, subject: Subject, max_new_tokens: int = 12):
        from ..bench.metrics import exact_match

        self.subject, self.max_new_tokens, self._exact = subject, max_new_tokens, exact_match

    def __call__(self, model: Any, prompts: Sequence[str]) -> list[Any]:
        from ..bench.evaluate import generate_answers, predict_labels

        if not prompts:
            return []
        s = self.subject
        if s.task == "classification":
            return predict_labels(model, s.tokenizer, prompts)
        return generate_answers(model, s.tokenizer, prompts, s.task, max_new_tokens=self.max_new_tokens)

    def routed(self, model: Any, prompts: Sequence[str], batch_size: int = 128) -> list[bool]:
        """Whether each prompt falls in some edit's ball (a router pass only, no generation)."""
        from ..text import tokenize

        side = "left" if self.subject.task == "causal_lm" else "right"
        out: list[bool] = []
        for lo in range(0, len(prompts), batch_size):
            enc = tokenize(self.subject.tokenizer, prompts[lo : lo + batch_size], side)
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
        if self.subject.task == "classification":
            return target
        tok = self.subject.tokenizer
        return tok.decode(tok(str(target), add_special_tokens=False)["input_ids"]).strip()

    def hit(self, answer: Any, target: Any) -> bool:
        if self.subject.task == "classification":
            return int(answer) == int(target)
        return bool(self._exact(str(answer), self.spoken(target)))


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


def _measure(model: Any, ask: Asker, cases: Sequence[EditCase], controls: Sequence[str], same_entity: Sequence[bool],
             before_controls: Sequence[Any], pre_edit: bool = False) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    edit_answers = ask(model, [c.prompt for c in cases])
    rephrases = [(i, r) for i, c in enumerate(cases) for r in c.rephrases]
    rephrase_answers = ask(model, [r for _, r in rephrases])
    control_answers = list(before_controls) if pre_edit else ask.answers_after_edit(model, controls, before_controls)
    kept = [float(a == b) for a, b in zip(control_answers, before_controls)]
    metrics = {
        "edit_success": _mean([float(ask.hit(a, c.target)) for a, c in zip(edit_answers, cases)]),
        "generality": _mean([float(ask.hit(a, cases[i].target)) for a, (i, _) in zip(rephrase_answers, rephrases)]),
        "locality": _mean(kept),
    }
    if any(same_entity) and not all(same_entity):
        metrics["locality_same_entity"] = _mean([k for k, s in zip(kept, same_entity) if s])
        metrics["locality_other"] = _mean([k for k, s in zip(kept, same_entity) if not s])
    return metrics, {"edits": edit_answers, "rephrases": rephrase_answers, "controls": control_answers}


def _plot(curve: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    xs = [p["edits"] for p in curve]
    for key, label in (("edit_success", "edit success (all edits so far)"),
                       ("generality", "generality (paraphrases)"), ("locality_other", "locality: other entities"),
                       ("locality_same_entity", "locality: edited entities, other questions"),
                       ("locality", "locality (all untouched questions)")):
        ys = [p.get(key) for p in curve]
        if any(y is not None for y in ys):
            ax.plot(xs, [float("nan") if y is None else y for y in ys], marker="o", markersize=3, label=label)
    ax.set_xlabel("edits")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
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
                        ("--num-iter", opts.num_iter)):
        if value is not None and value < 1:
            raise MeloConfigError(f"{name} must be at least 1, got {value}")
    if opts.radius is not None and not opts.radius > 0:
        raise MeloConfigError(f"--radius must be positive, got {opts.radius}")
    if opts.preset and not opts.model:
        raise MeloConfigError("--preset names the layers of a --model; the demo model has its own settings")
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
    world = load_world(opts.world) if not opts.model or not opts.edits else None
    if opts.model:
        config = _user_config(opts)
    else:
        from . import model as demo_model

        config = demo_model.melo_config(**_overrides(opts))
    if opts.edits:
        cases = read_edits_file(opts.edits, classification=config.task == "classification")
    else:
        cases = list(world.edits)
    if opts.n_edits is not None:
        cases = cases[: opts.n_edits]
    subject = _load_user_subject(opts, config) if opts.model else _load_demo_subject(world, opts, config, say)
    subject.model.to(opts.device)
    model = melo.get_melo_model(subject.model, subject.config, tokenizer=subject.tokenizer)
    ask = Asker(subject)
    controls, same_entity = _controls(world, cases)

    with model.disabled():
        control_before = ask(model, controls)
        pre, pre_answers = _measure(model, ask, cases, controls, same_entity, control_before, pre_edit=True)
    blocks = [cases[i : i + opts.edits_per_block] for i in range(0, len(cases), opts.edits_per_block)]
    say(f"\n{len(cases)} edits in {len(blocks)} blocks of {opts.edits_per_block} on {subject.name}; "
        f"{len(controls)} control questions measure locality ({sum(same_entity)} of them about an edited entity)")
    curve = [{"edits": 0, **pre, "seconds": 0.0, "clusters": 0}]
    edit_seconds, done = 0.0, 0
    bar = tqdm(blocks, desc="edit blocks", disable=opts.quiet)
    for block in bar:
        result = model.edit([c.prompt for c in block], [c.target for c in block])
        edit_seconds += result.seconds
        done += len(block)
        metrics, answers = _measure(model, ask, cases[:done], controls, same_entity, control_before)
        curve.append({"edits": done, **metrics, "seconds": round(edit_seconds, 2),
                      "clusters": model.stats()["clusters"]})
        bar.set_postfix(success=_fmt(metrics["edit_success"]), locality=_fmt(metrics["locality"]))
    bar.close()

    post = curve[-1]
    stats = model.stats()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    _print_examples(say, ask, cases, pre_answers, answers, world, controls, control_before, opts.examples)
    rows = [("edit success", "edit_success"), ("generality (paraphrases)", "generality"),
            ("locality (untouched answers unchanged)", "locality"),
            ("- questions about other entities", "locality_other"),
            ("- other questions about an edited entity", "locality_same_entity")]
    rows = [(label, key) for label, key in rows if key in post]
    say(f"\n| metric | before editing | after {len(cases)} edits |\n|---|---|---|")
    for label, key in rows:
        say(f"| {label} | {_fmt(pre[key])} | {_fmt(post[key])} |")
    say(f"| edit time | – | {edit_seconds:.1f} s ({edit_seconds / len(cases):.2f} s per edit) |")
    say(f"| blocks / clusters / conflicts / forgotten edits | – | {stats['blocks']} / {stats['clusters']} / "
        f"{stats['conflicts']} / {stats['forgotten_edits']} |")
    say(f"| extra parameters | – | {stats['extra_parameters']:,} |")

    summary = {"model": subject.name, "n_edits": len(cases), "edits_per_block": opts.edits_per_block,
               "pre": pre, "post": {key: post[key] for _, key in rows},
               "edit_seconds": round(edit_seconds, 2), "stats": stats, "curve": curve,
               "config": subject.config.to_dict()}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    with (out / "answers.jsonl").open("w") as f:
        for i, c in enumerate(cases):
            f.write(json.dumps({"prompt": c.prompt, "target": c.target, "before": pre_answers["edits"][i],
                                "after": answers["edits"][i]}) + "\n")
    _plot(curve, out / "metrics.png", f"MELO on {subject.name}: {len(cases)} edits, {stats['blocks']} blocks")
    model.save_pretrained(out / "adapter")
    say(f"\nplot: {out / 'metrics.png'}\nmetrics: {out / 'metrics.json'}, answers: {out / 'answers.jsonl'}")
    say(f"edited model saved to {out / 'adapter'} (melo.MeloModel.from_pretrained(base_model, path, tokenizer=tok))")
    say("next: `melo bench --preset minilm-qa` reproduces the paper's zsRE experiment offline; "
        "the Python API is in the README (melo.get_melo_model, model.edit, model.generate)")
    return summary


def _print_examples(say, ask: Asker, cases, pre_answers, answers, world, controls, control_before, n: int) -> None:
    if n <= 0:
        return
    control_after = answers["controls"]
    control_index = {q: i for i, q in enumerate(controls)}
    entity_of = {f.question: f.entity for f in world.facts} if world else {}
    untouched = world.untouched() if world else []
    say("")
    offsets = [sum(len(c.rephrases) for c in cases[:i]) for i in range(min(n, len(cases)))]
    for i, c in enumerate(cases[:n]):
        mark = "✓" if ask.hit(answers["edits"][i], c.target) else "✗"
        say(f"{c.prompt}\n  before: {pre_answers['edits'][i]!s:24} target: {ask.spoken(c.target)!s:24} "
            f"after: {answers['edits'][i]} {mark}")
        if c.rephrases:
            r = answers["rephrases"][offsets[i]]
            say(f"  paraphrase: {c.rephrases[0]} -> {r} {'✓' if ask.hit(r, c.target) else '✗'}")
        if c.locality:
            shown = [("control", c.locality[0])]
        else:
            entity = entity_of.get(c.prompt)
            same = next((f.question for f in untouched if f.entity == entity), None)
            other = next((f.question for f in untouched[i * 7 % max(1, len(untouched)):] + untouched
                          if f.entity != entity), None)
            shown = [("control, same entity", same), ("control, other entity", other)]
        for label, control in shown:
            if control is not None and control in control_index:
                j = control_index[control]
                same_answer = "unchanged" if control_after[j] == control_before[j] else "CHANGED"
                say(f"  {label}: {control} -> {control_after[j]} ({same_answer})")
