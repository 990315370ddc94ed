"""Completions of ``melo serve``: one routed generate call per request, its text handed out as it is made.

Streamed and whole answers come from the same code: :class:`Completion` runs ``MeloModel.generate_text``
(routed on the prompt, the block chosen there held for every step) with a stopping criterion that, after
each step, takes every row's new token, decodes the row, cuts it at a stop string and hands the new text
to ``emit(row, text)``. It ends a row at EOS, a stop string or ``max_tokens``, and the whole call when the
request is cancelled (the client went away), so a cancelled stream frees its thread within one step.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from ..chat import Prompt

log = logging.getLogger("melo.serve")

Emit = Callable[[int, str, "str | None"], None]  # (row, new text, finish reason once the row is done)


@dataclass
class Choice:
    """One row of a completion: its text so far, tokens generated, and why it ended (None: not yet)."""

    tokens: list[int] = field(default_factory=list)
    text: str = ""  # handed out so far
    finish_reason: str | None = None


def stop_cut(text: str, stops: Sequence[str]) -> tuple[int | None, int]:
    """(cut, hold) for a row's text: ``cut`` is where the earliest stop string starts, once no stop string
    still being written could start before it (None: no cut yet); text from ``hold`` on may still become
    part of a stop string, so it is held back."""
    hold = len(text)
    longest = max(map(len, stops), default=0)
    for j in range(max(0, len(text) - longest + 1), len(text)):
        tail = text[j:]
        if any(len(s) > len(tail) and s.startswith(tail) for s in stops):
            hold = j
            break
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    cut = min(found, default=None)
    if cut is not None and cut > hold:
        return None, hold
    return cut, hold if cut is None else cut


class Completion(StoppingCriteria):
    """A completion of ``n`` rows of one prompt; ``run()`` generates and returns the choices.

    ``emit`` (streaming) gets each row's new text as soon as it is settled: decoded without the
    tokenizer's space clean-up (so text only ever grows), a trailing replacement character (a
    character whose bytes are not all generated yet) and a possible start of a stop string held back.
    """

    def __init__(self, model: Any, prompt: Prompt, n: int, max_tokens: int, sampling: dict[str, Any],
                 stops: Sequence[str] = (), emit: Emit | None = None, cancel: threading.Event | None = None):
        self.model, self.prompt, self.n, self.max_tokens = model, prompt, n, max_tokens
        self.sampling, self.stops, self.emit = sampling, list(stops), emit
        self.cancel = cancel if cancel is not None else threading.Event()
        self.tokenizer = model.tokenizer
        eos = model.base_model.generation_config.eos_token_id
        self.eos = set() if eos is None else {eos} if isinstance(eos, int) else set(eos)
        self.choices = [Choice() for _ in range(n)]
        self.cancelled = False

    @property
    def n_completion_tokens(self) -> int:
        return sum(len(c.tokens) for c in self.choices)

    def run(self) -> list[Choice]:
        """Generate (greedy unless ``sampling`` says ``do_sample``); returns when every row is done or
        the call was cancelled (``self.cancelled``)."""
        self.model.generate_text([self.prompt] * self.n, max_new_tokens=self.max_tokens,
                                 stopping_criteria=StoppingCriteriaList([self]), **self.sampling)
        for row, choice in enumerate(self.choices):
            if choice.finish_reason is None and not self.cancelled:  # generate ended the row (max length)
                self._finish(row, "length")
        return self.choices

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        new = input_ids[:, -1].tolist()
        for row, choice in enumerate(self.choices):
            if choice.finish_reason is None:
                self._step(row, choice, new[row])
        if self.cancel.is_set():
            self.cancelled = True
            return torch.ones(len(new), dtype=torch.bool, device=input_ids.device)
        return torch.tensor([c.finish_reason is not None for c in self.choices], device=input_ids.device)

    def _step(self, row: int, choice: Choice, token: int) -> None:
        choice.tokens.append(token)
        if token in self.eos:
            return self._finish(row, "stop")
        if len(choice.tokens) >= self.max_tokens:
            return self._finish(row, "length")
        if self.emit is None and not self.stops:
            return  # nothing to hand out before the row ends
        text = self._decode(choice.tokens)
        settled = len(text.rstrip("\ufffd"))
        cut, hold = stop_cut(text[:settled], self.stops)
        if cut is not None:
            return self._finish(row, "stop", text[:cut])
        self._hand_out(row, choice, text[: min(settled, hold)], None)

    def _finish(self, row: int, reason: str, text: str | None = None) -> None:
        choice = self.choices[row]
        if text is None:
            text = self._decode(choice.tokens)
            cut = stop_cut(text, self.stops)[0] if self.stops else None
            text = text if cut is None else text[:cut]
        if not text.startswith(choice.text):  # a tokenizer whose decoding of more tokens rewrites earlier text
            log.warning("row %d: decoded text %r does not extend the text sent %r", row, text, choice.text)
            text = choice.text + text[len(os.path.commonprefix([text, choice.text])):]
        choice.finish_reason = reason
        self._hand_out(row, choice, text, reason)

    def _hand_out(self, row: int, choice: Choice, text: str, reason: str | None) -> None:
        delta = text[len(choice.text):]
        choice.text += delta
        if self.emit is not None and (delta or reason is not None):
            self.emit(row, delta, reason)

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)


class Counters:
    """Completions running now, and those cancelled by their client, for ``/v1/stats``."""

    def __init__(self):
        self._lock = threading.Lock()
        self.running = self.cancelled = 0

    def run(self, completion: Completion) -> list[Choice]:
        with self._lock:
            self.running += 1
        try:
            return completion.run()
        finally:
            with self._lock:
                self.running -= 1
                self.cancelled += completion.cancelled

    def stats(self) -> dict[str, int]:
        return {"completions_running": self.running, "completions_cancelled": self.cancelled}
