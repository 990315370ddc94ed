"""Asking the edited model: answers to many prompts at once, the control questions, and edit success,
generality and locality measured on them."""

from __future__ import annotations

from typing import Any, Sequence

from .subjects import Subject
from .world import EditCase, World


class Asker:
    """Answers (text, or class ids for classifiers) to many prompts at once; for a chat subject each
    prompt is a user turn asked through the chat template. Base-model answers are kept (``before``)."""

    def __init__(self, subject: Subject, max_new_tokens: int = 12):
        from ..evaluation.metrics import exact_match

        self.subject, self.max_new_tokens, self._exact = subject, max_new_tokens, exact_match
        self._before: dict[str, Any] = {}

    def __call__(self, model: Any, prompts: Sequence[str]) -> list[Any]:
        from ..evaluation.predict import generate_answers, predict_labels
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


def mean_or_none(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def controls_of(world: World | None, cases: Sequence[EditCase]) -> tuple[list[str], list[bool]]:
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


def fact_controls(cases: Sequence[EditCase]) -> tuple[list[str], list[bool]]:
    """Locality prompts of the built-in facts: each fact's same-subject question (flagged True),
    then each unrelated question."""
    edited = {p for c in cases for p in (c.prompt, *c.rephrases)}
    flagged = {c.locality[0]: True for c in cases}
    flagged.update({c.locality[1]: False for c in cases if c.locality[1] not in flagged})
    kept = [p for p in flagged if p not in edited]
    return kept, [flagged[p] for p in kept]


def measure(model: Any, ask: Asker, cases: Sequence[EditCase], controls: Sequence[str], same_entity: Sequence[bool],
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
        "edit_success": mean_or_none([float(ask.hit(a, c)) for a, c in zip(edit_answers, cases)]),
        "generality": mean_or_none([float(ask.hit(a, cases[i])) for a, (i, _) in zip(rephrase_answers, rephrases)]),
        "locality": mean_or_none(kept),
    }
    if any(same_entity) and not all(same_entity):
        metrics["locality_same_entity"] = mean_or_none([k for k, s in zip(kept, same_entity) if s])
        metrics["locality_other"] = mean_or_none([k for k, s in zip(kept, same_entity) if not s])
    metrics["routed_controls"] = len(after)
    return metrics, {"edits": edit_answers, "rephrases": rephrase_answers, "controls": after}
