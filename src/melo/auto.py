"""auto_config: MELO settings for a transformers model from its own structure, with no layer names.

The rule (every constant in the block below; ``docs/auto.md`` has the sweep behind them):

* the layer stack is the longest ``nn.ModuleList`` of blocks of one class (seq2seq: the encoder's
  for the router, the decoder's for the targets); never a family's module names;
* the router is the block at ``ROUTER_DEPTH`` of its stack, the targets the ``N_TARGETS``
  consecutive blocks from ``TARGET_DEPTH`` on (block ``floor(depth * n_blocks)``, moved up so that
  they fit, and after the router);
* in each target block, the LoRA target is its MLP output projection: the last module holding a
  weight matrix that the block runs (norms after it hold vectors), which must be an ``nn.Linear``
  / ``Conv1D`` from a wider input (the intermediate size) to the block's hidden size (Llama
  ``down_proj``, GPT-2 ``c_proj``, GPT-NeoX ``dense_4h_to_h``, BERT ``output.dense``, T5 ``wo``);
  mixture-of-experts blocks, whose experts are fused tensors, are refused with that reason;
* keys from MiniLM on the prompt text when its package is installed, else the router block's own
  hidden states (mean over the tokens left by the attention-sink rule, normalised) with a radius
  for those keys;
* every other setting is ``SETTINGS`` (SmolLM2's zsRE preset), replaced by ``base`` and ``overrides``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from torch import nn

from .config import TASKS, MeloConfig
from .encoders import MINILM, minilm_installed
from .errors import MeloConfigError
from .nethook import first_tensor, infer_task, supported_features, trace

# ---- the rule's constants (docs/auto.md: the sweep on SmolLM2-135M and Gemma-3-270M) -----------
ROUTER_DEPTH = 0.4  # SmolLM2's 12 of 30 (only its own-keys router; MiniLM keys read the text)
TARGET_DEPTH = 5 / 6  # SmolLM2-135M: blocks 25-26 of 30; Gemma-3-270M: 15-16 of 18
N_TARGETS = 2  # consecutive blocks from TARGET_DEPTH, moved up to fit in the stack
SETTINGS: dict[str, Any] = dict(  # SmolLM2's zsRE preset without its layers (melo.presets "smollm2-zsre")
    block_rank=4, init_radius=0.8, conflict_rule="nearest", edit_lr=1e-2, num_iter=30, lr_step=20, lr_gamma=0.5,
    stop_loss=0.02,
)
KEY_SETTINGS: dict[str, dict[str, Any]] = {
    "minilm": dict(key_encoder=MINILM, key_pooling="mean", normalize_keys=True, key_sink_ratio=8.0),
    # the router block's own states; radius of smollm2-zsre-own (docs/smollm2-routing.md)
    "own": dict(key_encoder=None, key_pooling="mean", normalize_keys=True, key_sink_ratio=8.0, init_radius=0.31),
}

log = logging.getLogger(__name__)


def layer_at(depth: float, n_blocks: int) -> int:
    """Index of the block at relative ``depth`` of a stack of ``n_blocks``."""
    return min(n_blocks - 1, math.floor(depth * n_blocks))


@dataclass(frozen=True)
class Stack:
    """A layer stack: the ModuleList's name and its blocks' names, in order."""

    name: str
    blocks: tuple[str, ...]


def layer_stacks(model: nn.Module, within: nn.Module | None = None) -> list[Stack]:
    """ModuleLists (inside ``within``, default anywhere) of two or more blocks of one class holding
    parameters, longest first (ties: the first in the module tree)."""
    inside = {id(m) for m in (within or model).modules()}
    stacks = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or id(module) not in inside or len(module) < 2:
            continue
        kinds = {type(block) for block in module}
        if len(kinds) == 1 and all(any(True for _ in block.parameters()) for block in module):
            stacks.append(Stack(name, tuple(f"{name}.{i}" for i in range(len(module)))))
    return sorted(stacks, key=lambda s: -len(s.blocks))


def _stacks(model: nn.Module, task: str) -> tuple[Stack, Stack]:
    """(router stack, target stack)."""
    if task == "seq2seq":
        encoder = model.get_encoder()
        router, rest = layer_stacks(model, encoder), layer_stacks(model)
        inner = {id(m) for m in encoder.modules()}
        modules = dict(model.named_modules())
        rest = [s for s in rest if id(modules[s.name]) not in inner]
        if not router or not rest:
            raise MeloConfigError(f"{type(model).__name__}: no stack of identical blocks found in the "
                                  f"{'encoder' if not router else 'decoder'}; pass router_layer and target_modules")
        return router[0], rest[0]
    stacks = layer_stacks(model)
    if not stacks:
        raise MeloConfigError(f"{type(model).__name__} has no nn.ModuleList of two or more identical blocks; "
                              "pass router_layer and target_modules")
    return stacks[0], stacks[0]


def mlp_outputs(model: nn.Module, task: str, blocks: list[str]) -> list[str]:
    """The MLP output projection of each block: the last module with a weight matrix that the block
    runs in a forward pass (norms after it hold vectors only), which must be an nn.Linear / Conv1D
    from a wider input (the intermediate size) to the block's hidden size."""
    modules = dict(model.named_modules())
    watched: dict[str, nn.Module] = {}
    for block in blocks:
        watched[block] = modules[block]
        for name, module in modules[block].named_modules():
            if name and any(p.dim() >= 2 for p in module.parameters(recurse=False)):
                watched[f"{block}.{name}"] = module
    seen = trace(model, task, watched)
    found = []
    for block in blocks:
        outputs = [first_tensor(out) for name, _, _, out in seen if name == block]
        if not outputs or outputs[0] is None:
            raise MeloConfigError(f"block {block!r} did not run (or returned no hidden states) in a forward pass")
        hidden = outputs[0].shape[-1]
        ran = [name for name, *_ in seen if name.startswith(block + ".")]
        if not ran:
            raise MeloConfigError(f"block {block!r} runs no module with a weight matrix")
        last = ran[-1]
        shape = _features(watched[last])
        if shape is None or shape[1] != hidden or shape[0] <= hidden:
            what = type(watched[last]).__name__ if shape is None else f"{shape[0]} -> {shape[1]} features"
            raise MeloConfigError(
                f"the last weight matrix block {block!r} runs, {last!r} ({what}), is not an nn.Linear / Conv1D "
                f"from a wider input to the hidden size {hidden} (an MLP output projection; mixture-of-experts "
                "blocks keep their experts in fused tensors), so melo has no module to put LoRA blocks on: "
                "pass target_modules")
        found.append(last)
    return found


def _features(module: nn.Module) -> tuple[int, int] | None:
    try:
        return supported_features(module, "")
    except MeloConfigError:
        return None


def auto_config(model: nn.Module, tokenizer: Any = None, task: str | None = None, *,
                base: dict[str, Any] | None = None, **overrides: Any) -> MeloConfig:
    """A MeloConfig for ``model`` chosen from its structure (the module docstring has the rule).

    ``task`` defaults to ``melo.nethook.infer_task``; ``base`` replaces settings of ``SETTINGS`` (an app's
    preset), ``overrides`` replace anything, including the chosen ``router_layer`` / ``target_modules``.
    ``key_encoder`` in ``overrides`` picks the key source (None: the model's own states). ``tokenizer``
    is accepted for symmetry with ``get_melo_model``; the choice does not depend on it.
    """
    task = task or infer_task(model)
    if task not in TASKS:
        raise MeloConfigError(f"task {task!r} is not one of {TASKS}")
    router_stack, target_stack = _stacks(model, task)
    n = len(target_stack.blocks)
    router = router_stack.blocks[layer_at(ROUTER_DEPTH, len(router_stack.blocks))]
    first = max(0, min(layer_at(TARGET_DEPTH, n), n - N_TARGETS))
    if router_stack is target_stack:
        first = max(first, router_stack.blocks.index(router) + 1)
    picked = list(target_stack.blocks[first: first + N_TARGETS])
    if not picked:
        raise MeloConfigError(f"{type(model).__name__}: stack {target_stack.name!r} has {n} blocks, too few for a "
                              f"router block and a target block after it; pass router_layer and target_modules")
    own = "key_encoder" in overrides and overrides["key_encoder"] is None
    keys = "own" if own or ("key_encoder" not in overrides and not minilm_installed()) else "minilm"
    settings = {"task": task, **SETTINGS, **KEY_SETTINGS[keys], **(base or {}),
                "router_layer": router, "target_modules": mlp_outputs(model, task, picked), **overrides}
    config = MeloConfig(**settings)
    log.info("melo auto_config: %s", describe(config))
    return config


def describe(config: MeloConfig) -> str:
    """One line: the task, router layer, targets and key source of a config."""
    targets = config.target_modules if isinstance(config.target_modules, str) else ", ".join(config.target_modules)
    keys = (f"key encoder {config.key_encoder}" if config.key_encoder is not None
            else f"router-layer states ({config.key_pooling} pooling"
                 + (f", sink ratio {config.key_sink_ratio:g}" if config.key_sink_ratio else "") + ")")
    return (f"{config.task}: router {config.router_layer}, LoRA on {targets} (rank {config.block_rank}); "
            f"keys from {keys}, radius {config.init_radius:g}")

