"""MeloConfig: every hyper-parameter of MELO editing, as one serialisable dataclass."""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import MeloConfigError

TASKS = ("causal_lm", "seq2seq", "classification")
POOLINGS = ("last", "mean", "first")
CONFLICT_RULES = ("split", "nearest")  # melo.clusters
BLOCK_DTYPES = ("float32", "bfloat16", "float16")
MAX_SEED = 2**32  # block_seed(t) = seed * 1_000_003 + t stays within 64 bits


def _checked_int(name: str, value: Any, low: int, below: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise MeloConfigError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < low or (below is not None and value >= below):
        bound = f"at least {low}" if below is None else f"in [{low}, {below})"
        raise MeloConfigError(f"{name} must be {bound}, got {value!r}")
    return value


def _checked_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise MeloConfigError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise MeloConfigError(f"{name} must be finite, got {value!r}")
    return value


def _checked_targets(targets: Any) -> list[str] | str:
    if isinstance(targets, str):
        if not targets:
            raise MeloConfigError("target_modules is an empty string: give module names or a regex")
        try:
            re.compile(targets)
        except re.error as err:
            raise MeloConfigError(f"target_modules regex {targets!r} does not compile: {err}") from err
        return targets
    if not isinstance(targets, (list, tuple)):
        raise MeloConfigError(f"target_modules {targets!r} is neither a list of names nor a regex")
    if not targets:
        raise MeloConfigError("target_modules is empty")
    for i, name in enumerate(targets):
        if not isinstance(name, str) or not name:
            raise MeloConfigError(f"target_modules[{i}] is {name!r}: module names must be non-empty strings")
    return list(targets)


def _checked_extra(extra: Any) -> dict[str, Any]:
    """``extra`` must survive a save: a dict that JSON writes and reads back unchanged."""
    if not isinstance(extra, dict):
        raise MeloConfigError(f"extra must be a dict, got {type(extra).__name__}")
    try:
        same = json.loads(json.dumps(extra, allow_nan=False)) == extra
    except (TypeError, ValueError) as err:
        raise MeloConfigError(f"extra is not JSON-serialisable: {err}") from err
    if not same:
        raise MeloConfigError("extra changes in a JSON round trip (keys must be strings, lists not tuples)")
    return extra


@dataclass
class MeloConfig:
    """Hyper-parameters of a MELO adapter; every field is checked when the config is built (MeloConfigError).

    Args:
        target_modules: the modules that get dynamic LoRA: exact names, or one regex matched against
            whole names (``nn.Linear`` or transformers' ``Conv1D``).
        router_layer: the module whose output is the routing key (it must run before every target;
            seq2seq: in the encoder).
        task: ``"causal_lm"``, ``"seq2seq"`` or ``"classification"``; None (keyword only): inferred
            from the model when the adapter is made (``melo.nethook.infer_task``).
        block_rank: rank of each edit batch's LoRA block.
        init_radius: radius of a new cluster's ball around its key.
        conflict_rule: ``"split"`` (the paper: both balls shrink) or ``"nearest"`` (see ``melo.clusters``).
        edit_lr, num_iter, lr_step, lr_gamma: Adam's learning rate, the steps per edit, and the StepLR
            schedule (every ``lr_step`` steps the rate is multiplied by ``lr_gamma``).
        adam_beta1: Adam's first-moment decay in edits (0.9 is Adam's own; lower damps the overshoot of
            a short edit's first steps).
        lora_alpha: the LoRA scale numerator: a routed row gets ``base(x) + s * B_t A_t x`` with
            ``s = lora_alpha / block_rank``.
        key_pooling: ``"last"`` non-padding token (the paper), ``"mean"`` over the prompt, or ``"first"``.
        normalize_keys: L2-normalise keys.
        key_sink_ratio: mean pooling leaves out tokens whose norm exceeds this times the row's median.
        key_encoder: keys from this sentence encoder (``"minilm"`` or a folder) on the prompt text.
        subject_gate: edits given a subject (``edit(..., subjects=...)``) route only prompts that mention
            it as whole words (``melo.scope``; needs a WordPiece ``key_encoder``).
        subject_names: with ``subject_gate``, a subject followed at once by a word that starts with a
            capital letter or a digit is part of a longer name and does not match ("Nintendo" is not
            mentioned in "Nintendo 64 is developed by"); an edit whose own prompt does so is refused.
        context_prefixes: causal_lm: each edit is also trained after this many short context texts the
            model writes once from neutral seeds (``melo.augment``); 0: the prompt alone.
        key_variants: causal_lm: each edit also stores the keys of its prompt after this many of those
            context texts, so it owns several keys (all leave together when it is revoked); 0: one key.
        stop_loss: an edit ends early once its training loss is below this.
        max_blocks: at most this many blocks (MeloCapacityError beyond); None: storage grows.
        target_prefix: causal_lm: the text between a prompt and its target.
        seed: seeds each block's initialisation (``block_seed``).
        extra: free-form JSON-serialisable notes saved with the adapter.

    Scale: ``s`` does not depend on how many blocks exist, so the step size of edit ``t`` is the
    same whether it is the first block or the thousandth (the original code scaled each factor by
    ``sqrt(total_rank / block_rank)``, so its effective learning rate grew with the adapter's
    capacity). The default ``lora_alpha=16`` (s = 8 at block rank 2) lets the paper's learning
    rates (1e-3 to 1e-2, 50 steps) move a block far enough to flip an answer; with s = 1 a MiniLM
    classifier learned half as many edits at 1e-3.
    """

    task: str | None = field(default=None, kw_only=True)
    target_modules: list[str] | str
    router_layer: str
    block_rank: int = 2
    init_radius: float = 0.5
    conflict_rule: str = "split"  # "split" (the paper) or "nearest": see melo.clusters
    edit_lr: float = 1e-3
    num_iter: int = 50
    lr_step: int = 30
    lr_gamma: float = 0.5
    adam_beta1: float = 0.9
    lora_alpha: float = 16.0
    key_pooling: str = "last"
    normalize_keys: bool = False
    key_sink_ratio: float | None = None  # mean pooling: leave out tokens whose norm exceeds ratio x the median
    key_encoder: str | None = None  # keys from this sentence encoder ("minilm" or a folder) on the prompt text
    subject_gate: bool = False  # edits with a subject route only prompts that mention it (melo.scope)
    subject_names: bool = False  # subject_gate: a subject followed by a capitalised word or a number does not match
    context_prefixes: int = 0  # causal_lm: also train each edit after this many model-written contexts
    key_variants: int = 0  # causal_lm: also key each edit's prompt after this many of those contexts
    stop_loss: float | None = None  # end an edit early once its training loss is below this
    max_blocks: int | None = None
    block_dtype: str | None = None  # stored blocks: None follows the model's dtype; "bfloat16" halves bytes per edit
    target_prefix: str = " "  # causal_lm: put between prompt and target text
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task is not None and (not isinstance(self.task, str) or self.task not in TASKS):
            raise MeloConfigError(f"task {self.task!r} is not one of {TASKS} (or None: inferred from the model)")
        if not isinstance(self.key_pooling, str) or self.key_pooling not in POOLINGS:
            raise MeloConfigError(f"key_pooling {self.key_pooling!r} is not one of {POOLINGS}")
        self.target_modules = _checked_targets(self.target_modules)
        if not isinstance(self.router_layer, str) or not self.router_layer:
            raise MeloConfigError(f"router_layer {self.router_layer!r} is not a module name")
        for name in ("block_rank", "num_iter", "lr_step"):
            setattr(self, name, _checked_int(name, getattr(self, name), low=1))
        self.seed = _checked_int("seed", self.seed, low=0, below=MAX_SEED)
        self.context_prefixes = _checked_int("context_prefixes", self.context_prefixes, low=0, below=33)
        self.key_variants = _checked_int("key_variants", self.key_variants, low=0, below=33)
        for name in ("context_prefixes", "key_variants"):
            if getattr(self, name) and self.task not in (None, "causal_lm"):
                raise MeloConfigError(f"{name} works on causal LMs' prompts, not task {self.task!r}")
        if self.max_blocks is not None:
            self.max_blocks = _checked_int("max_blocks", self.max_blocks, low=1)
        for name in ("init_radius", "edit_lr", "lora_alpha"):
            value = _checked_float(name, getattr(self, name))
            if not value > 0:
                raise MeloConfigError(f"{name} must be positive, got {value!r}")
            setattr(self, name, value)
        self.lr_gamma = _checked_float("lr_gamma", self.lr_gamma)
        self.adam_beta1 = _checked_float("adam_beta1", self.adam_beta1)
        if not 0 <= self.adam_beta1 < 1:
            raise MeloConfigError(f"adam_beta1 must be in [0, 1), got {self.adam_beta1!r}")
        if not 0 < self.lr_gamma <= 1:
            raise MeloConfigError(f"lr_gamma must be in (0, 1], got {self.lr_gamma!r}")
        if not isinstance(self.conflict_rule, str) or self.conflict_rule not in CONFLICT_RULES:
            raise MeloConfigError(f"conflict_rule {self.conflict_rule!r} is not one of {CONFLICT_RULES}")
        for name in ("normalize_keys", "subject_gate", "subject_names"):
            if not isinstance(getattr(self, name), bool):
                raise MeloConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("key_sink_ratio", "stop_loss"):
            value = getattr(self, name)
            if value is not None:
                value = _checked_float(name, value)
                if not value > 0:
                    raise MeloConfigError(f"{name} must be positive or None, got {value!r}")
                setattr(self, name, value)
        if self.key_encoder is not None and (not isinstance(self.key_encoder, str) or not self.key_encoder):
            raise MeloConfigError(f"key_encoder must be None, 'minilm' or a model folder, got {self.key_encoder!r}")
        if self.subject_gate and self.key_encoder is None:
            raise MeloConfigError("subject_gate matches the key encoder's tokens: set key_encoder (e.g. 'minilm')")
        if self.subject_names and not self.subject_gate:
            raise MeloConfigError("subject_names refines subject_gate's matching: set subject_gate=True too")
        if self.block_dtype is not None and self.block_dtype not in BLOCK_DTYPES:
            raise MeloConfigError(f"block_dtype {self.block_dtype!r} is not None or one of {BLOCK_DTYPES}")
        if not isinstance(self.target_prefix, str):
            raise MeloConfigError(f"target_prefix must be a string, got {self.target_prefix!r}")
        self.extra = _checked_extra(self.extra)

    @property
    def n_contexts(self) -> int:
        """Context texts an edit needs (``melo.augment``): for training and for extra keys."""
        return max(self.context_prefixes, self.key_variants)

    @property
    def scale(self) -> float:
        return float(self.lora_alpha) / self.block_rank

    def block_seed(self, block: int) -> int:
        """The seed block ``block`` (or a baseline's batch ``block``) is initialised from."""
        return self.seed * 1_000_003 + block

    @property
    def storage_dtype(self):
        """The torch dtype stored blocks are kept in, or None (they follow the model's casts)."""
        return None if self.block_dtype is None else getattr(torch, self.block_dtype)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MeloConfig:
        if not isinstance(data, dict):
            raise MeloConfigError(f"a MeloConfig is read from a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MeloConfigError(f"unknown MeloConfig fields {unknown}")
        return cls(**data)
