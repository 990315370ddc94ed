"""Batched predictions of an edited model: answers, labels, target likelihoods, output tokens.

``model`` is anything called like a transformers model that also has ``generate`` (a MeloModel,
a baseline editor, or a plain model). ``task`` is the MeloConfig task: "seq2seq", "causal_lm" or
"classification".
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..text import causal_lm_batch, seq2seq_batch, tokenize


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _chunks(items: Sequence[Any], size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.no_grad()
def generate_answers(model: Any, tokenizer: Any, prompts: Sequence[str], task: str,
                     batch_size: int = 64, max_new_tokens: int = 16) -> list[str]:
    """Greedy answers; for causal LMs only the continuation after the prompt."""
    out: list[str] = []
    device = _device(model)
    side = "left" if task == "causal_lm" else "right"
    for chunk in _chunks(list(prompts), batch_size):
        enc = {k: v.to(device) for k, v in tokenize(tokenizer, chunk, side).items() if k != "token_type_ids"}
        ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        if task == "causal_lm":
            ids = ids[:, enc["input_ids"].shape[1] :]
        out.extend(t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True))
    return out


@torch.no_grad()
def predict_labels(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 64) -> list[int]:
    out: list[int] = []
    device = _device(model)
    for chunk in _chunks(list(texts), batch_size):
        enc = {k: v.to(device) for k, v in tokenize(tokenizer, chunk).items()}
        out.extend(model(**enc).logits.argmax(-1).tolist())
    return out


@torch.no_grad()
def target_tokens(model: Any, tokenizer: Any, prompts: Sequence[str], targets: Sequence[str], task: str,
                  batch_size: int = 32, prefix: str = " ") -> tuple[list[float], list[list[int]], list[list[int]]]:
    """Teacher-forced pass over prompt + target: per example the summed NLL of the target tokens,
    the argmax token at each target position, and the target token ids themselves."""
    nll: list[float] = []
    argmax: list[list[int]] = []
    gold: list[list[int]] = []
    device = _device(model)
    for lo in range(0, len(prompts), batch_size):
        p, t = list(prompts[lo : lo + batch_size]), list(targets[lo : lo + batch_size])
        if task == "seq2seq":
            batch, rows = seq2seq_batch(tokenizer, p, t)
        else:
            batch, rows = causal_lm_batch(tokenizer, p, t, prefix)
        batch = {k: v.to(device) for k, v in batch.items()}
        labels = batch.pop("labels")
        if task == "seq2seq":
            logits = model(**batch, labels=labels).logits
        else:
            if hasattr(model, "route"):  # a router pools the prompt only, as at edit time
                batch["melo_key_mask"] = batch["attention_mask"] * (labels == -100)
            logits = model(**batch).logits[:, :-1]
            labels = labels[:, 1:]
        logp = torch.log_softmax(logits.float(), -1)
        mask = labels != -100
        picked = logp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
        nll.extend((-(picked * mask)).sum(1).tolist())
        best = logits.argmax(-1)
        for i in range(len(rows)):
            argmax.append(best[i][mask[i]].tolist())
            gold.append(labels[i][mask[i]].tolist())
    return nll, argmax, gold
