"""Batched predictions of an edited model: answers, labels, target likelihoods, output tokens.

``model`` is anything called like a transformers model that also has ``generate`` (a MeloModel,
a baseline editor, or a plain model). ``task`` is the MeloConfig task: "seq2seq", "causal_lm" or
"classification".
"""

from __future__ import annotations

import threading
from typing import Any, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from ..nethook import execution_device
from ..prefix import head_at, next_token_targets
from ..text import causal_lm_batch, seq2seq_batch, tokenize


def _device(model: Any) -> torch.device:
    """Where inputs go: an editor's ``device``, a plain model's input embeddings' execution device."""
    return execution_device(getattr(model, "base_model", model))


def _this_thread():
    me = threading.get_ident()
    return lambda: threading.get_ident() == me


def _chunks(items: Sequence[Any], size: int, desc: str | None = None):
    for start in tqdm(range(0, len(items), size), desc=desc, disable=desc is None, leave=False):
        yield items[start : start + size]


def _by_length(texts: Sequence[str], size: int, desc: str | None = None) -> Iterator[list[int]]:
    """Indices in batches of similar text length (less padding); callers put results back in order."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    yield from _chunks(order, size, desc)


@torch.no_grad()
def generate_answers(model: Any, tokenizer: Any, prompts: Sequence[str], task: str,
                     batch_size: int = 64, max_new_tokens: int = 16, desc: str | None = None) -> list[str]:
    """Greedy answers; for causal LMs only the continuation after the prompt.

    Batches follow the input order, so the same prompts give the same batches and, for rows no
    edit touches, the same outputs bit for bit (locality compares them across states)."""
    out: list[str] = []
    device = _device(model)
    side = "left" if task == "causal_lm" else "right"
    for chunk in _chunks(list(prompts), batch_size, desc):
        enc = {k: v.to(device) for k, v in tokenize(tokenizer, chunk, side).items() if k != "token_type_ids"}
        ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        if task == "causal_lm":
            ids = ids[:, enc["input_ids"].shape[1] :]
        out.extend(t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True))
    return out


@torch.no_grad()
def predict_labels(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 64,
                   desc: str | None = None) -> list[int]:
    out = [0] * len(texts)
    device = _device(model)
    for idx in _by_length(texts, batch_size, desc):
        enc = {k: v.to(device) for k, v in tokenize(tokenizer, [texts[i] for i in idx]).items()}
        for i, label in zip(idx, model(**enc).logits.argmax(-1).tolist()):
            out[i] = label
    return out


@torch.no_grad()
def target_tokens(model: Any, tokenizer: Any, prompts: Sequence[str], targets: Sequence[str], task: str,
                  batch_size: int = 32, prefix: str = " ", desc: str | None = None,
                  ) -> tuple[list[float], list[list[int]], list[list[int]]]:
    """Teacher-forced pass over prompt + target: per example the summed NLL of the target tokens,
    the argmax token at each target position, and the target token ids themselves."""
    n = len(prompts)
    nll: list[float] = [0.0] * n
    argmax: list[list[int]] = [[] for _ in range(n)]
    gold: list[list[int]] = [[] for _ in range(n)]
    device = _device(model)
    for idx in _by_length([p + t for p, t in zip(prompts, targets)], batch_size, desc):
        p, t = [prompts[i] for i in idx], [targets[i] for i in idx]
        if task == "seq2seq":
            batch, _ = seq2seq_batch(tokenizer, p, t)
        else:
            batch, _ = causal_lm_batch(tokenizer, p, t, prefix)
        batch = {k: v.to(device) for k, v in batch.items()}
        labels = batch.pop("labels")
        if task == "seq2seq":
            logits = model(**batch, labels=labels).logits
            mask = labels != -100
            at_targets, wanted = logits[mask].float(), labels[mask]
        else:
            if hasattr(model, "route"):  # a router pools the prompt only, as at edit time
                batch["melo_key_mask"] = batch["attention_mask"] * (labels == -100)
            positions, wanted = next_token_targets(labels)
            mask = labels[:, 1:] != -100
            with head_at(model.get_output_embeddings(), positions, _this_thread()):  # the head only where it is scored
                logits = model(**batch).logits
            at_targets = (logits[:, :-1][mask] if logits.dim() == 3 else logits).float()  # 3-d: head not hooked
        picked = torch.log_softmax(at_targets, -1).gather(-1, wanted.unsqueeze(-1)).squeeze(-1)
        counts = mask.sum(1).tolist()
        for i, row_logp, row_best, row_gold in zip(idx, picked.split(counts), at_targets.argmax(-1).split(counts),
                                                    wanted.split(counts)):
            nll[i] = -float(row_logp.sum())
            argmax[i] = row_best.tolist()
            gold[i] = row_gold.tolist()
    return nll, argmax, gold
