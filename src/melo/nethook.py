"""Small composable helpers for hooking into a transformers model (in the spirit of ROME's nethook).

Finding modules by name, probing which run and in what order, running only the part of a model
that reads a prompt, and per-call state that hooks can read without sharing it between threads.
"""

from __future__ import annotations

import contextvars
import re
from contextlib import contextmanager
from typing import Any, Generic, Iterator, TypeVar

import torch
from torch import nn
from transformers.utils import ModelOutput

from .errors import MeloConfigError

T = TypeVar("T")


class StopForward(Exception):
    """Raised by a hook to end a forward pass once it has what it needs."""


class CallContext(Generic[T]):
    """State of the call in progress in this thread (or task), read by hooks.

    Each call sets its own object for its own duration; other threads see theirs, or None when no
    call is in progress, so one model can serve many threads and a failed call leaves nothing behind.
    """

    def __init__(self, name: str):
        self._var: contextvars.ContextVar[T | None] = contextvars.ContextVar(name, default=None)

    def get(self) -> T | None:
        return self._var.get()

    @contextmanager
    def use(self, state: T) -> Iterator[T]:
        token = self._var.set(state)
        try:
            yield state
        finally:
            self._var.reset(token)


def infer_task(model: nn.Module) -> str:
    """The task a transformers model is built for, told from its structure: an encoder-decoder
    (``config.is_encoder_decoder`` and ``get_encoder``) is seq2seq; a model without an LM head whose class
    transformers registers as a sequence classifier is classification; anything else is causal_lm."""
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False) and callable(getattr(model, "get_encoder", None)):
        return "seq2seq"
    heads = getattr(model, "get_output_embeddings", None)
    if (heads() if callable(heads) else None) is None:
        from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

        if type(model).__name__ in set(MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.values()):
            return "classification"
    return "causal_lm"


def first_tensor(output: Any) -> torch.Tensor | None:
    """The hidden-state tensor a module returned (itself, or the first item of a tuple / output)."""
    if isinstance(output, ModelOutput):
        output = output.to_tuple()
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def _hook_device(module: nn.Module) -> torch.device | None:
    """The execution device of an accelerate hook on ``module`` (one of a SequentialHook's), if any."""
    hook = getattr(module, "_hf_hook", None)
    for h in getattr(hook, "hooks", None) or ([hook] if hook is not None else []):
        device = getattr(h, "execution_device", None)
        if device is not None:
            return torch.device(device)
    return None


def execution_device(model: nn.Module, module: nn.Module | None = None) -> torch.device:
    """The device ``module`` (default: the input embeddings, where inputs go) computes on.

    A model dispatched or offloaded by accelerate keeps offloaded weights on ``meta`` and moves them
    to its hooks' execution device for each forward, so a parameter's device says nothing there.
    In order: the module's own hook, its (non-meta) weights, the hooks inside it (``cpu_offload``
    hooks each module holding weights), the nearest module holding it with a hook (a ``device_map``
    entry), any of the model's weights; with no hook anywhere, ``meta`` weights were moved there.
    """
    if module is None:
        module = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else model
    own = _hook_device(module)
    if own is not None:
        return own
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.device.type != "meta":
            return tensor.device
    for inner in module.modules():
        device = _hook_device(inner)
        if device is not None:
            return device
    modules = dict(model.named_modules())
    names = {id(m): n for n, m in modules.items()}
    parts = names.get(id(module), "").split(".")
    for i in range(len(parts) - 1, -1, -1):
        device = _hook_device(modules[".".join(parts[:i])])
        if device is not None:
            return device
    tensors = [*module.parameters(), *module.buffers(), *model.parameters()]
    found = next((t.device for t in tensors if t.device.type != "meta"), None)
    return found or (tensors[0].device if tensors else torch.device("cpu"))  # no hook: meta means moved there


def dummy_inputs(model: nn.Module, task: str) -> dict[str, torch.Tensor]:
    """A one-row input of four tokens (and a decoder start for seq2seq) to probe a model's layers."""
    device = execution_device(model)
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.full((1, 4), min(5, vocab - 1), dtype=torch.long, device=device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if task == "seq2seq":
        start = getattr(model.config, "decoder_start_token_id", None) or 0
        inputs["decoder_input_ids"] = torch.full((1, 1), start, dtype=torch.long, device=device)
    return inputs


def supported_features(module: nn.Module, name: str) -> tuple[int, int]:
    """(in, out) features of a module dynamic LoRA can wrap: nn.Linear or transformers' Conv1D."""
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):
        return module.weight.shape[0], module.weight.shape[1]
    raise MeloConfigError(
        f"target module {name!r} is a {type(module).__name__}; supported: nn.Linear, transformers Conv1D"
    )


def resolve_targets(model: nn.Module, target_modules: list[str] | str) -> dict[str, nn.Module]:
    """Modules named in ``target_modules`` (exact names, or one regex matched against whole names)."""
    modules = dict(model.named_modules())
    if isinstance(target_modules, str):
        pattern = re.compile(target_modules)
        found = {n: m for n, m in modules.items() if n and pattern.fullmatch(n)}
        if not found:
            raise MeloConfigError(f"target_modules regex {target_modules!r} matches no module of the model")
    else:
        unknown = [n for n in target_modules if n not in modules]
        if unknown:
            raise MeloConfigError(f"unknown target module {unknown[0]!r} (not in model.named_modules())")
        found = {n: modules[n] for n in target_modules}
    for name, module in found.items():
        supported_features(module, name)
    return found


def named_module(model: nn.Module, name: str, what: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        raise MeloConfigError(f"unknown {what} {name!r} (not in model.named_modules())")
    return modules[name]


def check_in_encoder(model: nn.Module, task: str, name: str, what: str) -> str | None:
    """The encoder's module name (seq2seq only), after checking that ``name`` is inside it."""
    if task != "seq2seq":
        return None
    encoder = model.get_encoder()
    prefix = next(n for n, m in model.named_modules() if m is encoder)
    if not name.startswith(prefix + "."):
        raise MeloConfigError(f"{what} {name!r} is not in the encoder ({prefix!r}); "
                              "seq2seq models are routed on the encoder input")
    return prefix


def trace(model: nn.Module, task: str, modules: dict[str, nn.Module]) -> list[tuple[str, tuple, dict, Any]]:
    """(name, args, kwargs, output) of each of ``modules`` in the order they run in one dummy forward."""
    seen: list[tuple[str, tuple, dict, Any]] = []
    handles = [m.register_forward_hook(lambda m, a, kw, o, n=name: seen.append((n, a, kw, o)), with_kwargs=True)
               for name, m in modules.items()]
    try:
        with torch.no_grad():
            model(**dummy_inputs(model, task))
    finally:
        for h in handles:
            h.remove()
    return seen


@torch.no_grad()
def run_prompt(base_model: nn.Module, task: str, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
    """Run the part of the model that reads the prompt (the encoder of a seq2seq model), with the
    positions generate() gives left-padded rows, until a hook raises StopForward (or the end)."""
    inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
    run = base_model
    if task == "seq2seq":
        run = base_model.get_encoder()
    elif task == "causal_lm":
        inputs["use_cache"] = False
        if bool((attention_mask[:, 0] == 0).any()):
            inputs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
    try:
        run(**inputs)
    except StopForward:
        pass


def probe_router(model: nn.Module, task: str, router: str, router_module: nn.Module,
                 targets: dict[str, nn.Module]) -> int:
    """One dummy forward: the router layer must run before every target and give a hidden-state
    tensor; returns its width (the key size)."""
    seen = trace(model, task, {"<router>": router_module, **targets})
    order = [name for name, *_ in seen]
    if "<router>" not in order:
        raise MeloConfigError(f"router layer {router!r} did not run in a forward pass of the model")
    first_router = order.index("<router>")
    for name in targets:
        if name in order and order.index(name) < first_router:
            raise MeloConfigError(f"target module {name!r} runs before the router layer {router!r}")
    output = seen[first_router][3]
    hidden = first_tensor(output)
    if hidden is None or hidden.dim() < 2:
        raise MeloConfigError(f"router layer {router!r} returns {type(output).__name__}, not a hidden-state tensor")
    return hidden.shape[-1]
