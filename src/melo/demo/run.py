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
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from ..data.readers import describe_skipped
from .facts import chat
from .measure import Asker, controls_of, fact_controls, measure
from .report import LOCALITY_LABELS, fmt, plot, print_chat_examples, print_examples
from .subjects import (
    DemoOptions,
    check_options,
    choose_demo,
    load_demo_subject,
    load_facts_subject,
    load_user_subject,
    overrides,
    task_of,
    user_config,
)
from .world import load_world, read_edits_file

FACTS_EDITS_PER_BLOCK = 1  # SmolLM2 facts: one edit per block generalises best, in the same time (docs/demo.md)


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
        config = user_config(opts)
    elif demo == "world":
        from . import model as demo_model

        config = demo_model.melo_config(**overrides(opts))
    else:
        from ..presets import preset_config
        from .facts import FACTS_PRESET

        config = preset_config(FACTS_PRESET, **overrides(opts))
    skipped: list[dict[str, str]] = []
    if opts.edits:
        cases = read_edits_file(opts.edits, classification=task_of(config) == "classification",
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
        subject = load_user_subject(opts, config, say)
    elif demo == "world":
        subject = load_demo_subject(world, opts, config, say)
    else:
        subject = load_facts_subject(config, opts, say)
    subject.model.to(opts.device)
    model = melo.get_melo_model(subject.model, subject.config, tokenizer=subject.tokenizer)
    if subject.chat:
        from .facts import MAX_NEW_TOKENS

        ask = Asker(subject, max_new_tokens=MAX_NEW_TOKENS)
    else:
        ask = Asker(subject)
    controls, same_entity = fact_controls(cases) if facts else controls_of(world, cases)
    recorded = None
    if facts:  # the base model's answers were recorded by scripts/make_facts.py (SmolLM2, the same code path)
        recorded = {q: a for f in facts
                    for q, a in zip((f.question, f.paraphrase, f.subject_control, f.unrelated_control), f.screened)}
        if recorded:
            say("before editing: SmolLM2's answers recorded when the facts were screened (scripts/make_facts.py)")
    else:  # every control's base answer, in one pass (locality compares the routed ones' answers with them)
        ask.before(model, controls)
    pre, pre_answers = measure(model, ask, cases, controls, same_entity, pre_edit=True, recorded=recorded)
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
        metrics, answers = measure(model, ask, cases[:done], controls, same_entity)
        curve.append({"edits": done, **metrics, "seconds": round(edit_seconds, 2), "steps": steps,
                      "clusters": model.stats()["clusters"]})
        bar.set_postfix(success=fmt(metrics["edit_success"]), locality=fmt(metrics["locality"]))
    bar.close()

    post = curve[-1]
    stats = model.stats()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    if subject.chat:
        print_chat_examples(say, model, ask, cases, answers, recorded, opts.examples)
    else:
        print_examples(say, model, ask, cases, pre_answers, answers, world, opts.examples)
    same, other = LOCALITY_LABELS["facts" if demo == "facts" else "world"]
    rows = [("edit success", "edit_success"), ("generality (paraphrases)", "generality"),
            ("locality (control answers unchanged)", "locality"),
            (f"- {other}", "locality_other"), (f"- {same}", "locality_same_entity")]
    rows = [(label, key) for label, key in rows if key in post]
    say(f"\n| metric | before editing | after {len(cases)} edits |\n|---|---|---|")
    for label, key in rows:
        say(f"| {label} | {fmt(pre[key])} | {fmt(post[key])} |")
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
    plot(curve, out / "metrics.png", f"MELO on {subject.name}: {len(cases)} edits, {stats['blocks']} blocks", demo)
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
