"""What ``melo run`` shows: the metrics plot and the examples printed before and after editing."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .measure import Asker

LOCALITY_LABELS = {  # (same entity / subject, other) per demo
    "world": ("other questions about an edited entity", "questions about other entities"),
    "facts": ("same subject, another question", "unrelated questions"),
}


def plot(curve: Sequence[dict[str, Any]], path: Path, title: str, demo: str = "world") -> None:
    """The metrics against the number of edits; measured only before and after editing, side by side."""
    from ..evaluation.outputs import figure

    same, other = LOCALITY_LABELS.get(demo, LOCALITY_LABELS["world"])
    series = [(key, label, [p.get(key) for p in curve]) for key, label in (
        ("edit_success", "edit success (all edits so far)"), ("generality", "generality (paraphrases)"),
        ("locality_other", f"locality: {other}"), ("locality_same_entity", f"locality: {same}"),
        ("locality", "locality (all control questions)")) if any(p.get(key) is not None for p in curve)]
    fig, axes = figure(1, 1, figsize=(6.4, 3.8))
    ax = axes[0][0]
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


def fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def print_examples(say, model, ask: Asker, cases, pre_answers, answers, world, n: int) -> None:
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


def print_chat_examples(say, model, ask: Asker, cases, answers, recorded: dict[str, str] | None, n: int) -> None:
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
