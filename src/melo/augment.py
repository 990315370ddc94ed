"""Training-time augmentation: each edit is also learned under short context prefixes (ROME's context
templates), so its block carries over to prompts that open with other text.

The prefixes are written once by the unedited model itself, sampled (top-k) from neutral seed words
with a seeded generator: the same model, count and seed give the same prefixes.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .chat import Prompt, is_chat

SEED_WORDS = ("The first", "Therefore, the", "Because the", "I think", "You can", "In the", "However, the",
              "It is", "When the", "This is")  # one word alone leaves a small model in lists and dashes
PREFIX_TOKENS = 10
TOP_K = 5


@torch.no_grad()
def context_prefixes(model: Any, tokenizer: Any, n: int, seed: int, device: torch.device) -> list[str]:
    """``n`` short texts continued by ``model`` from SEED_WORDS (one row at a time: no padding)."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        ids = tokenizer(SEED_WORDS[i % len(SEED_WORDS)], return_tensors="pt").input_ids.to(device)
        for _ in range(PREFIX_TOKENS):
            logits = model(input_ids=ids, use_cache=False).logits[0, -1].float().cpu()
            top = logits.topk(TOP_K)
            pick = top.indices[torch.multinomial(top.values.softmax(-1), 1, generator=generator)]
            ids = torch.cat([ids, pick.view(1, 1).to(device)], 1)
        text = " ".join(tokenizer.decode(ids[0], skip_special_tokens=True).split())
        out.append(text.replace("{", "").replace("}", ""))
    return out


def in_context(prompt: Prompt, prefix: str) -> Prompt:
    """``prompt`` after ``prefix`` (a chat prompt: its last user message)."""
    if not is_chat(prompt):
        return f"{prefix}. {prompt}"
    messages = [dict(m) for m in prompt]
    last = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    if last is None:
        return messages
    messages[last]["content"] = f"{prefix}. {messages[last]['content']}"
    return messages


def augmented(prompts: Sequence[Prompt], targets: Sequence[Any], prefixes: Sequence[str],
              ) -> tuple[list[Prompt], list[Any]]:
    """The prompts as given, then each under every prefix (targets repeated to match)."""
    out_prompts, out_targets = list(prompts), list(targets)
    for prefix in prefixes:
        out_prompts += [in_context(p, prefix) for p in prompts]
        out_targets += list(targets)
    return out_prompts, out_targets
