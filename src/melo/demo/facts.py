"""The built-in real-world edits of ``melo run``: counterfactuals about facts SmolLM2 knows (``facts.json``).

``facts.json`` is written by ``scripts/make_facts.py``, which asks SmolLM2-135M-Instruct every
candidate's question, paraphrase and two control questions through its chat template (greedy) and
keeps the facts it answers all four correctly. Each fact is one edit: the question as a chat user
message, ``reply`` (which states ``target``) as the assistant's answer. It is measured on the
question (edit success), the paraphrase (generality), a question about the same subject with
another relation (same-subject locality) and a question about nothing edited (unrelated locality).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..data.readers import get_field, string_list
from ..errors import MeloDataError
from .world import EditCase, read_demo_json

FACTS_MODEL = "smollm2-135m-instruct"  # the model facts.json was screened on
FACTS_PRESET = "smollm2-facts"  # melo.presets: smollm2-zsre with the radius and early stop measured for these facts
DEFAULT_FACTS = 40  # `melo run` edits the first 40 (about 2 minutes on one CPU thread); --n-edits 60 takes all
MAX_NEW_TOKENS = 24  # answer length for screening and for `melo run` (the answer must appear within it)


@dataclass(frozen=True)
class ChatFact:
    id: str
    subject: str
    relation: str
    question: str
    paraphrase: str
    answer: str  # the true answer (what SmolLM2 says before editing)
    aliases: tuple[str, ...]  # other spellings of the true answer
    target: str  # the counterfactual answer an edit teaches
    reply: str  # the assistant reply an edit trains: a sentence stating ``target``
    subject_control: str  # same subject, another relation
    subject_answers: tuple[str, ...]
    unrelated_control: str  # about nothing any fact edits
    unrelated_answers: tuple[str, ...]
    screened: tuple[str, ...] = ()  # the model's answers at screening: question, paraphrase, both controls

    def answers(self) -> tuple[str, ...]:
        return (self.answer, *self.aliases)


def contains_answer(text: str, answers: str | Sequence[str]) -> bool:
    """Whether ``text`` contains one of ``answers`` as whole words, ignoring case ("Paris." and
    "paris" count for Paris; "Parisian" does not), except for answers of one or two characters
    (chemical symbols: "He" is helium, "he" is not)."""
    for answer in [answers] if isinstance(answers, str) else answers:
        answer = answer.strip()
        flags = 0 if len(answer) <= 2 else re.IGNORECASE
        if answer and re.search(r"(?<![^\W_])" + re.escape(answer) + r"(?![^\W_])", text, flags):
            return True
    return False


def chat(question: str) -> list[dict[str, str]]:
    """A question as a one-turn chat (the model's chat template adds its default system prompt)."""
    return [{"role": "user", "content": question}]


def load_facts(path: str | Path | None = None) -> list[ChatFact]:
    """The shipped facts (or a file of the same shape); a malformed file is a MeloDataError naming the field."""
    where, data = read_demo_json("facts", path)
    if not isinstance(data, dict) or not isinstance(data.get("facts"), list):
        raise MeloDataError(f"{where}: expected an object with a 'facts' list, shaped like melo/demo/facts.json")
    facts = [_fact(where, f"fact {i}", f) for i, f in enumerate(data["facts"])]
    if not facts:
        raise MeloDataError(f"{where}: no facts")
    return facts


def _fact(where: str, at: str, f: Any) -> ChatFact:
    if not isinstance(f, dict):
        raise MeloDataError(f"{where}: {at}: expected an object, got {type(f).__name__}")
    text = {name: get_field(where, at, f, name, str).strip()
            for name in ("id", "subject", "relation", "question", "paraphrase", "answer", "target", "reply")}
    for name, value in text.items():
        if not value:
            raise MeloDataError(f"{where}: {at}: field {name!r} is empty")
    aliases = string_list(where, at, "aliases", f.get("aliases", []))
    controls = {}
    for name in ("subject_control", "unrelated_control"):
        control = get_field(where, at, f, name, dict)
        question = get_field(where, f"{at}: {name}", control, "question", str)
        answers = string_list(where, f"{at}: {name}", "answers", get_field(where, f"{at}: {name}", control,
                                                                              "answers", list))
        if not question.strip() or not answers:
            raise MeloDataError(f"{where}: {at}: {name} needs a question and at least one answer")
        controls[name] = (question, tuple(answers))
    reply, target = text["reply"], text["target"]
    if contains_answer(reply, (text["answer"], *aliases)) or not contains_answer(reply, target):
        raise MeloDataError(f"{where}: {at}: 'reply' must state the target {target!r} "
                            f"and not the true answer {text['answer']!r}")
    screened = f.get("screened", {})
    if not isinstance(screened, dict):
        raise MeloDataError(f"{where}: {at}: field 'screened' should be an object")
    keys = ("question", "paraphrase", "subject_control", "unrelated_control")
    recorded = tuple(screened[k] for k in keys) if all(isinstance(screened.get(k), str) for k in keys) else ()
    return ChatFact(text["id"], text["subject"], text["relation"], text["question"], text["paraphrase"],
                    text["answer"], tuple(aliases), target, reply,
                    controls["subject_control"][0], controls["subject_control"][1],
                    controls["unrelated_control"][0], controls["unrelated_control"][1], recorded)


def edit_cases(facts: Sequence[ChatFact]) -> list[EditCase]:
    """One edit per fact: the question, the reply as target (``match``: the counterfactual answer),
    the paraphrase, and both controls (same subject first)."""
    return [EditCase(f.question, f.reply, (f.paraphrase,), (f.subject_control, f.unrelated_control), f.answer, f.id,
                     match=(f.target,)) for f in facts]


def chat_answers(model: Any, tokenizer: Any, questions: Sequence[str], max_new_tokens: int = MAX_NEW_TOKENS,
                 batch_size: int = 32) -> list[str]:
    """Greedy chat answers (each question as a user turn through the chat template). ``model`` is a
    MeloModel (routed on the user's text) or a plain causal LM."""
    import torch

    from ..text import tokenize

    out: list[str] = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for lo in range(0, len(questions), batch_size):
        chunk = [chat(q) for q in questions[lo : lo + batch_size]]
        if hasattr(model, "generate_text"):
            out.extend(a.strip() for a in model.generate_text(chunk, max_new_tokens=max_new_tokens))
            continue
        texts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chunk]
        enc = tokenize(tokenizer, texts, "left")
        with torch.no_grad():
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
        new = ids[:, enc["input_ids"].shape[1]:]
        out.extend(a.strip() for a in tokenizer.batch_decode(new, skip_special_tokens=True))
    return out
