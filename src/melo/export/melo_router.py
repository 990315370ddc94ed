"""Route prompts to the LoRA adapters of a MELO export (``melo export ADAPTER_DIR --peft OUT``).

This file is copied into every export and imports no melo: it needs torch, safetensors and the
user's transformers model (the base model the adapter was made on, in eval mode). Usage::

    import melo_router
    router = melo_router.load_router("OUT")
    names = melo_router.route(router, model, tokenizer, ["the capital of france is"])
    # names[i] == "block-3": serve prompt i with the PEFT LoRA in OUT/block-3
    # names[i] is None:      serve prompt i with the base model

The key of a prompt is the output of the router layer (router.json: ``router_layer``) pooled over
the prompt's tokens (``key_pooling``: "mean", "first" or "last" token; L2-normalised when
``normalize_keys``), with the prompts of one call tokenised together, right-padded. Lookup: among
the clusters whose ball (centre, radius) contains the key, the one with the nearest centre (ties:
lowest cluster id); the answer is the block of that cluster's nearest live key (ties: newest key).
Candidates come from one float32 matrix product (the ``candidates`` nearest balls), decisions from
float64 distances: as melo does, so the decisions are the same.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any, Sequence

import torch
from safetensors.torch import load_file

FORMAT = "melo-router"
FORMAT_VERSION = 1
TENSORS = ("keys", "key_block", "key_cluster", "centres", "radii")


class _Stop(Exception):
    """Raised by the router layer's hook: the rest of the model need not run."""


def load_router(folder: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The router of an export folder: its settings (router.json) and lookup tables (router.safetensors)."""
    with open(os.path.join(folder, "router.json"), encoding="utf-8") as f:
        config = json.load(f)
    if config.get("format") != FORMAT or config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{folder!r}: router.json is not a {FORMAT} file of version {FORMAT_VERSION}")
    tables = load_file(os.path.join(folder, "router.safetensors"), device=str(device))
    missing = [name for name in TENSORS if name not in tables]
    if missing:
        raise ValueError(f"{folder!r}: router.safetensors has no tensor {missing[0]!r}")
    router: dict[str, Any] = {"config": config, **{name: tables[name] for name in TENSORS}}
    n_clusters = router["centres"].shape[0]
    centres32 = router["centres"].float()
    order = torch.argsort(router["key_cluster"], stable=True)  # keys grouped by cluster, in id order
    counts = torch.bincount(router["key_cluster"], minlength=n_clusters)
    router.update(centres32=centres32, members=order, member_count=counts, member_ptr=torch.cumsum(counts, 0) - counts,
                  bias=(centres32 * centres32).sum(1) - router["radii"].clamp_min(0).square().float())
    return router


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str, normalize: bool) -> torch.Tensor:
    """Pool [batch, seq, dim] hidden states over the tokens ``mask`` marks."""
    hidden = hidden.detach().float()
    if hidden.dim() == 2:
        keys = hidden
    else:
        if mask is None or mask.shape != hidden.shape[:2]:
            mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        mask = mask.to(hidden.device)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        if pooling == "mean":
            m = mask.to(hidden.dtype).unsqueeze(-1)
            keys = (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
        elif pooling == "first":
            keys = hidden[rows, mask.long().argmax(1)]
        else:
            last = mask.shape[1] - 1 - mask.long().flip(1).argmax(1)
            keys = hidden[rows, last]
    if normalize:
        keys = torch.nn.functional.normalize(keys, dim=-1)
    return keys


@torch.no_grad()
def keys(router: dict[str, Any], model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str]) -> torch.Tensor:
    """Router keys of ``prompts``: the model runs up to the router layer only."""
    config = router["config"]
    if tokenizer.pad_token is None:  # GPT-2 style tokenizers pad with EOS (on a copy)
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.pad_token = tokenizer.eos_token
    enc = tokenizer(list(prompts), padding=True, truncation=True, padding_side="right", return_tensors="pt")
    device = next(model.parameters()).device
    inputs = {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}
    mask = inputs["attention_mask"]
    run = model
    if config["task"] == "seq2seq":
        run = model.get_encoder()
    elif config["task"] == "causal_lm":
        inputs["use_cache"] = False
        if bool((mask[:, 0] == 0).any()):
            inputs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp_min(0)
    found: list[torch.Tensor] = []

    def hook(module: torch.nn.Module, args: tuple, output: Any) -> None:
        if hasattr(output, "to_tuple"):
            output = output.to_tuple()
        hidden = output if isinstance(output, torch.Tensor) else output[0]
        found.append(pool(hidden, mask, config["key_pooling"], config["normalize_keys"]))
        raise _Stop

    handle = model.get_submodule(config["router_layer"]).register_forward_hook(hook)
    try:
        run(**inputs)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not found:
        raise RuntimeError(f"router layer {config['router_layer']!r} did not run")
    return found[0]


def lookup(router: dict[str, Any], queries: torch.Tensor) -> torch.Tensor:
    """Block id for each key, or -1 where no ball contains it (serve the base model)."""
    n, n_clusters = queries.shape[0], router["centres"].shape[0]
    device = router["centres"].device
    blocks = torch.full((n,), -1, dtype=torch.long, device=device)
    if n_clusters == 0 or n == 0:
        return blocks
    q = queries.float().to(device)
    # |q - c|^2 - r^2 without |q|^2 (the same along a row): < 0 inside the ball
    score = torch.addmm(router["bias"].unsqueeze(1), router["centres32"], q.t(), alpha=-2.0)
    cand = score.topk(min(router["config"]["candidates"], n_clusters), dim=0, largest=False).indices.t()
    exact = (q.double().unsqueeze(1) - router["centres"][cand]).norm(dim=-1)
    inside = exact <= router["radii"][cand]
    routed = inside.any(1)
    if not bool(routed.any()):
        return blocks
    rows = torch.nonzero(routed).squeeze(1)
    exact = torch.where(inside[rows], exact[rows], torch.inf)
    nearest = exact == exact.min(1, keepdim=True).values
    cluster = torch.where(nearest, cand[rows], n_clusters).min(1).values  # ties: lowest cluster id
    count = router["member_count"][cluster]
    slot = torch.arange(int(count.max()), device=device).unsqueeze(0)
    valid = slot < count.unsqueeze(1)
    pos = (router["member_ptr"][cluster].unsqueeze(1) + slot).clamp_max(len(router["members"]) - 1)
    member = router["members"][pos]
    dist = (q[rows].double().unsqueeze(1) - router["keys"][member].double()).norm(dim=-1)
    dist = torch.where(valid, dist, torch.inf)
    is_min = dist == dist.min(1, keepdim=True).values
    newest = torch.where(is_min & valid, member, -1).max(1).values  # ties: the newest key
    blocks[rows] = router["key_block"][newest]
    return blocks


def route(router: dict[str, Any], model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str]) -> list[str | None]:
    """For each prompt, the name of the adapter to serve it with (a folder of the export), or None."""
    adapters = router["config"]["adapters"]
    names = []
    for block in lookup(router, keys(router, model, tokenizer, prompts)).tolist():
        if block >= 0 and str(block) not in adapters:
            raise ValueError(f"block {block} was routed to but not exported")
        names.append(adapters[str(block)] if block >= 0 else None)
    return names
