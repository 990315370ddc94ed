"""Text to model inputs, shared by editing and evaluation so both see the same token sequences."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch

from .chat import check_messages, is_chat
from .errors import MeloEditError


def tokenize(tokenizer: Any, texts: Sequence[str], padding_side: str = "right") -> dict[str, torch.Tensor]:
    enc = tokenizer(list(texts), padding=True, truncation=True, padding_side=padding_side, return_tensors="pt")
    return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


def target_ids(tokenizer: Any, texts: Sequence[str], append_eos: bool = True) -> list[list[int]]:
    """Token ids of target texts without special tokens, ending with EOS."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    out = []
    for text, row in zip(texts, ids):
        row = list(row)
        if append_eos and eos is not None and (not row or row[-1] != eos):
            row.append(eos)
        if not row:
            raise MeloEditError(f"target {text!r} tokenizes to no tokens")
        out.append(row)
    return out


def pad_rows(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    out = torch.full((len(rows), max(map(len, rows))), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
    return out


def seq2seq_batch(tokenizer: Any, prompts: Sequence[str],
                  targets: Sequence[str]) -> tuple[dict[str, torch.Tensor], list[list[int]]]:
    batch = tokenize(tokenizer, prompts)
    rows = target_ids(tokenizer, targets)
    batch["labels"] = pad_rows(rows, -100)
    return batch, rows


def _prefixed(targets: Sequence[str], prefix: str | Sequence[str]) -> list[str]:
    prefixes = [prefix] * len(targets) if isinstance(prefix, str) else list(prefix)
    return [p + t for p, t in zip(prefixes, targets)]


def causal_lm_batch(
    tokenizer: Any, prompts: Sequence[str], targets: Sequence[str], prefix: str | Sequence[str] = " "
) -> tuple[dict[str, torch.Tensor], list[list[int]]]:
    """prompt + prefix + target + EOS, right-padded; labels only on the target tokens. ``prefix``
    is one string or one per edit (a chat prompt's target follows the assistant marker as it is)."""
    prompt_ids = tokenizer(list(prompts))["input_ids"]
    rows = target_ids(tokenizer, _prefixed(targets, prefix))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    seqs = [list(p) + t for p, t in zip(prompt_ids, rows)]
    input_ids = pad_rows(seqs, pad)
    mask = pad_rows([[1] * len(s) for s in seqs], 0)
    labels = pad_rows([[-100] * len(p) + t for p, t in zip(prompt_ids, rows)], -100)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}, rows


def pad_with_eos(tokenizer: Any) -> Any:
    """A tokenizer that can pad: GPT-2 style ones (no pad token) get EOS as pad on a copy."""
    if tokenizer is not None and tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer = copy.deepcopy(tokenizer)  # leave the caller's as is
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def check_edit_batch(task: str, prompts: Sequence[str], targets: Sequence[Any], num_labels: int | None = None) -> None:
    """Raise MeloEditError unless ``prompts`` / ``targets`` are one well-formed edit batch for ``task``."""
    problems = edit_problems(task, prompts, targets, num_labels)
    if problems:
        raise MeloEditError(problems[0][1])


def edit_problems(task: str, prompts: Sequence[Any], targets: Sequence[Any],
                  num_labels: int | None = None) -> list[tuple[int, str]]:
    """(index, reason) of every malformed edit of a batch (the prompts', then the targets'); a batch
    that is not two lists of the same non-zero length is a MeloEditError."""
    if isinstance(prompts, str) or isinstance(targets, (str, int)):
        raise MeloEditError("prompts and targets must be lists (one batch), not a single string or id")
    if len(prompts) == 0:
        raise MeloEditError("empty edit batch: prompts is empty")
    if len(prompts) != len(targets):
        raise MeloEditError(f"prompts has {len(prompts)} entries but targets has {len(targets)}")
    problems = [(i, reason) for i, p in enumerate(prompts) if (reason := _prompt_problem(task, i, p))]
    problems += [(i, reason) for i, t in enumerate(targets) if (reason := _target_problem(task, i, t, num_labels))]
    return problems


def _prompt_problem(task: str, i: int, p: Any) -> str | None:
    if is_chat(p) and task == "causal_lm":
        try:
            check_messages(p, f"prompts[{i}]")
        except MeloEditError as err:
            return str(err)
        return None
    if not isinstance(p, str) or not p.strip():
        return f"prompts[{i}] is {p!r}: prompts must be non-empty strings"
    return None


def _target_problem(task: str, i: int, t: Any, num_labels: int | None) -> str | None:
    if task == "classification":
        if isinstance(t, bool) or not isinstance(t, int):
            return f"targets[{i}] is {t!r}: classification targets must be class ids (int)"
        if num_labels is not None and not 0 <= t < num_labels:
            return f"targets[{i}] is {t}: not a class id of a {num_labels}-label model"
    elif not isinstance(t, str) or not t.strip():
        return f"targets[{i}] is {t!r}: {task} targets must be non-empty strings"
    return None


# RoBERTa-style models number positions from pad_token_id + 1
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "longformer")


def max_positions(model_config: Any) -> int | None:
    """Longest token sequence the model accepts (learned absolute positions), or None without such a
    limit (T5's relative positions). Encoder-decoder configs: the smaller of both sides' limits."""
    parts = [getattr(model_config, side, None) for side in ("encoder", "decoder")]
    parts = [part for part in parts if part is not None and hasattr(part, "to_dict")]
    if parts:
        limits = [limit for limit in map(max_positions, parts) if limit is not None]
        return min(limits) if limits else None
    for name in ("n_positions", "max_position_embeddings"):
        limit = getattr(model_config, name, None)
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            if getattr(model_config, "model_type", None) in _OFFSET_POSITIONS:
                limit -= (getattr(model_config, "pad_token_id", None) or 0) + 1
            return limit
    return None


def sequence_lengths(task: str, tokenizer: Any, prompts: Sequence[str], targets: Sequence[Any],
                     prefix: str | Sequence[str] = " ") -> list[tuple[str, int, int]]:
    """(what, edit index, tokens) of each sequence edit_batch builds that meets position embeddings:
    prompt + prefix + target + EOS for a causal LM; the prompt, and the target for seq2seq; the prompt
    for classification. Counted without truncation."""
    prompt_ids = tokenizer(list(prompts))["input_ids"]
    if task == "classification":
        return [("prompt", i, len(ids)) for i, ids in enumerate(prompt_ids)]
    if task == "causal_lm":
        rows = target_ids(tokenizer, _prefixed(targets, prefix))
        return [("prompt + target", i, len(p) + len(t)) for i, (p, t) in enumerate(zip(prompt_ids, rows))]
    rows = target_ids(tokenizer, targets)
    return ([("prompt", i, len(ids)) for i, ids in enumerate(prompt_ids)]
            + [("target", i, len(row)) for i, row in enumerate(rows)])


def check_lengths(task: str, tokenizer: Any, prompts: Sequence[str], targets: Sequence[Any],
                  max_length: int | None, prefix: str | Sequence[str] = " ") -> None:
    """Raise MeloEditError if an edit's token sequence is longer than ``max_length`` (None: no limit)."""
    problems = length_problems(task, tokenizer, prompts, targets, max_length, prefix)
    if problems:
        raise MeloEditError(problems[0][1])


def length_problems(task: str, tokenizer: Any, prompts: Sequence[str], targets: Sequence[Any],
                    max_length: int | None, prefix: str | Sequence[str] = " ",
                    numbers: Sequence[int] | None = None) -> list[tuple[int, str]]:
    """(index, reason) of every edit with a token sequence longer than ``max_length``; ``numbers``
    gives each edit's index as reported (default: its position)."""
    if max_length is None or not prompts:
        return []
    numbers = range(len(prompts)) if numbers is None else numbers
    return [(numbers[i], f"edit {numbers[i]}: {what} is {length} tokens, longer than the model's {max_length} "
                         "positions; shorten it")
            for what, i, length in sequence_lengths(task, tokenizer, prompts, targets, prefix) if length > max_length]


def edit_batch(task: str, tokenizer: Any, prompts: Sequence[str], targets: Sequence[Any],
               prefix: str | Sequence[str] = " ") -> tuple[dict[str, torch.Tensor], list[tuple]]:
    """Model inputs with labels for the edit loss, and the exact label of each edit (token ids of
    the target, or the class id) as a tuple, as routers compare them (lengths: ``check_lengths``)."""
    if task == "classification":
        batch = tokenize(tokenizer, prompts)
        batch["labels"] = torch.tensor(list(targets), dtype=torch.long)
        return batch, [(int(t),) for t in targets]
    if task == "seq2seq":
        batch, rows = seq2seq_batch(tokenizer, prompts, targets)
    else:
        batch, rows = causal_lm_batch(tokenizer, prompts, targets, prefix)
    return batch, [tuple(r) for r in rows]
