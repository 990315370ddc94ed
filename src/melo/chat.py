"""Chat prompts: an edit or a query given as messages, rendered through the model's chat template.

A chat prompt is a list of ``{"role": ..., "content": ...}`` messages ending with a user turn. It
is rendered with the generation prompt (the assistant turn is what an edit's target teaches), and
its router key is pooled over the last user message's text only: the template's fixed tokens (a
constant system prompt, role markers) would otherwise dominate a mean-pooled key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .errors import MeloEditError

Prompt = str | list[dict[str, str]]


def is_chat(prompt: Any) -> bool:
    return isinstance(prompt, (list, tuple))


def check_messages(prompt: Any, where: str) -> None:
    """Raise MeloEditError unless ``prompt`` is a list of role/content messages ending with a user turn."""
    if not prompt or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                             and isinstance(m.get("content"), str) for m in prompt):
        raise MeloEditError(f"{where} is {prompt!r}: chat prompts are non-empty lists of "
                            "{'role': str, 'content': str} messages")
    if prompt[-1]["role"] != "user" or not prompt[-1]["content"].strip():
        raise MeloEditError(f"{where}: the last message must be a non-empty user turn")


def render(tokenizer: Any, prompts: Sequence[Prompt]) -> tuple[list[str], list[tuple[int, int] | None]]:
    """Text of each prompt (chat prompts through the chat template, with the generation prompt)
    and, for chat prompts, the character span of the last user message in it (None: the whole text)."""
    rendered = [render_one(tokenizer, prompt, f"prompts[{i}]") for i, prompt in enumerate(prompts)]
    return [text for text, _ in rendered], [span for _, span in rendered]


def render_one(tokenizer: Any, prompt: Prompt, where: str) -> tuple[str, tuple[int, int] | None]:
    """:func:`render` of one prompt; errors name it ``where``."""
    if not is_chat(prompt):
        return prompt, None
    if getattr(tokenizer, "chat_template", None) is None:
        raise MeloEditError(f"{where} is a chat prompt but the tokenizer has no chat template")
    text = tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=False)
    content = prompt[-1]["content"]
    start = text.rfind(content)
    if start < 0:
        raise MeloEditError(f"{where}: the chat template does not keep the user text as written")
    return text, (start, start + len(content))


def key_mask(tokenizer: Any, texts: Sequence[str], spans: Sequence[tuple[int, int] | None],
             attention_mask: torch.Tensor, padding_side: str) -> torch.Tensor:
    """[batch, seq] mask of the tokens a key is pooled over: the attention mask, restricted for chat
    rows to the tokens inside the user text's span."""
    if all(span is None for span in spans):
        return attention_mask
    enc = tokenizer(list(texts), padding=True, padding_side=padding_side, return_offsets_mapping=True,
                    return_tensors="pt")
    offsets = enc["offset_mapping"].to(attention_mask.device)  # [batch, seq, 2]
    bounds = torch.tensor([span if span is not None else (0, 2**62) for span in spans],
                          device=attention_mask.device)
    inside = (offsets[..., 1] > bounds[:, :1]) & (offsets[..., 0] < bounds[:, 1:]) & (offsets[..., 1] > 0)
    raw = torch.tensor([span is None for span in spans], device=attention_mask.device)
    inside |= raw.unsqueeze(1)
    return attention_mask * inside.to(attention_mask.dtype)
