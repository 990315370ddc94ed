"""The router: from a hidden state (or the prompt's text) to the block each input row uses.

Keys are pooled hidden states of the router layer (or a sentence encoder's keys of the prompt's
text); ``melo.database`` maps them to blocks. The routing decision belongs to one call:
``Router.call`` opens it, the router layer's hook fills it in, and the target layers read it
through ``Router.current``. Threads never see each other's.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn

from .clusters import EPS  # noqa: F401  (part of this module's API)
from .config import MeloConfig
from .database import CANDIDATES, Label, VectorDatabase  # noqa: F401  (re-exported)
from .errors import MeloConfigError
from .nethook import CallContext, StopForward, execution_device, first_tensor, run_prompt
from .scope import subject_hashes, subject_matches, window_hashes


def pool_hidden(hidden: torch.Tensor, mask: torch.Tensor | None, pooling: str, normalize: bool,
                sink_ratio: float | None = None) -> torch.Tensor:
    """Pool [batch, seq, dim] hidden states over the non-padding tokens given by ``mask``. With
    ``sink_ratio``, mean pooling leaves out attention sinks: tokens whose hidden-state norm exceeds
    ``sink_ratio`` times the median norm of the row's tokens (Llama-family models put a norm of
    ~20,000 on the first position against ~150 elsewhere, which would make every key alike)."""
    hidden = hidden.detach().float()
    if hidden.dim() == 2:
        keys = hidden
    else:
        if mask is None or mask.shape != hidden.shape[:2]:
            mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        mask = mask.to(hidden.device)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        if pooling == "mean":
            if sink_ratio is not None:
                norms = hidden.norm(dim=-1).masked_fill(mask == 0, float("nan"))
                median = norms.nanmedian(dim=1, keepdim=True).values
                mask = mask * ~(norms > sink_ratio * median)
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


@dataclass(frozen=True)
class Version:
    """One whole state of the adapter: the database and each target layer's stored blocks."""

    db: VectorDatabase
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]]


@dataclass
class RoutingCall:
    """The routing of one call, made against one ``Version``. ``mode``: "route" (the router layer
    will set ``blocks`` from this call's keys), "fixed" (``blocks`` decided: every generation step),
    "train" (every row uses the block being learned), "keys" (collect keys, stop at the router)."""

    mode: str
    version: Version
    key_mask: torch.Tensor | None = None
    blocks: torch.Tensor | None = None
    keys: torch.Tensor | None = None

    @property
    def weights(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return self.version.weights


class Router:
    """Owns the key source (the router layer's pooled hidden state), the vector database, and the
    routing decision of each call; target layers read ``current()``.

    A call sees the ``Version`` published when it started, whatever is published meanwhile.
    """

    def __init__(self, base_model: nn.Module, config: MeloConfig, module: nn.Module, key_dim: int,
                 encoder: Any = None, tokenizer: Any = None):
        """``module`` is ``config.router_layer`` resolved; ``encoder`` (optional) keys the prompt's text instead."""
        self.base_model, self.task, self.layer = base_model, config.task, config.router_layer
        self.pooling, self.normalize = config.key_pooling, config.normalize_keys
        self.sink_ratio = config.key_sink_ratio
        self.subject_names = config.subject_names
        self.encoder, self.tokenizer = encoder, tokenizer
        device = execution_device(base_model, module)  # keys live where the router layer computes
        self.version = Version(VectorDatabase(key_dim, config.init_radius, device, config.conflict_rule), {})
        self._calls: CallContext[RoutingCall] = CallContext("melo_routing")
        self._off: CallContext[bool] = CallContext("melo_disabled")
        self._handle = module.register_forward_hook(self._hook)

    @property
    def db(self) -> VectorDatabase:
        return self.version.db

    def publish(self, db: VectorDatabase, weights: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Make a new state current, in one assignment: later calls see it, calls in flight keep theirs."""
        self.version = Version(db, weights)

    def current(self) -> RoutingCall | None:
        return self._calls.get()

    @contextmanager
    def call(self, mode: str, key_mask: torch.Tensor | None = None,
             blocks: torch.Tensor | None = None) -> Iterator[RoutingCall]:
        with self._calls.use(RoutingCall(mode, self.version, key_mask, blocks)) as call:
            yield call

    @contextmanager
    def routed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
               key_mask: torch.Tensor | None = None) -> Iterator[RoutingCall]:
        """A call whose blocks are chosen on the prompt first (keys pass), then fixed: generation."""
        attention_mask = self._mask(input_ids, attention_mask)
        with self.call("keys", key_mask=attention_mask if key_mask is None else key_mask) as call:
            call.mode, call.blocks, call.key_mask = "fixed", self._blocks(call, input_ids, attention_mask), None
            yield call

    @property
    def disabled(self) -> bool:
        return bool(self._off.get())

    @contextmanager
    def disable(self) -> Iterator[None]:
        with self._off.use(True):
            yield

    def remove(self) -> None:
        self._handle.remove()

    def _hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        call = self._calls.get()
        if call is None or call.mode not in ("route", "keys"):
            return
        keys = pool_hidden(first_tensor(output), call.key_mask, self.pooling, self.normalize, self.sink_ratio)
        if call.mode == "keys":
            call.keys = keys
            raise StopForward
        call.blocks = call.version.db.lookup(keys)
        call.mode = "fixed"

    @staticmethod
    def _mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return torch.ones_like(input_ids) if attention_mask is None else attention_mask

    def _keys_in(self, call: RoutingCall, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 ) -> tuple[torch.Tensor, Callable[[int], torch.Tensor] | None]:
        """The rows' keys, and (with a key encoder) their token-run hashes for subject scope."""
        if self.encoder is not None:  # the text of the key tokens, through the sentence encoder
            ids = [row[mask.bool()].tolist() for row, mask in zip(input_ids, call.key_mask)]
            texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
            keys, tokens, mask, starts = self.encoder.encode_tokens(texts, name_starts=self.subject_names)
            continuation = self.encoder.continuation
            return keys.to(input_ids.device), lambda n: window_hashes(tokens, mask, continuation, n, starts)
        run_prompt(self.base_model, self.task, input_ids, attention_mask)
        if call.keys is None:
            raise MeloConfigError(f"router layer {self.layer!r} did not run")
        return call.keys, None

    def keys(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
             key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Router keys of prompts (pooled over ``key_mask``, default the attention mask): the model
        runs only up to the router layer."""
        return self.keys_and_mentions(input_ids, attention_mask, key_mask)[0]

    def keys_and_mentions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                          key_mask: torch.Tensor | None = None, subjects: torch.Tensor | None = None,
                          ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Keys of prompts, and whether each prompt mentions its own subject (``subjects``: [n, width]
        token rows from the key encoder, ``melo.scope``; None: not asked)."""
        attention_mask = self._mask(input_ids, attention_mask)
        with self.call("keys", key_mask=attention_mask if key_mask is None else key_mask) as call:
            keys, windows = self._keys_in(call, input_ids, attention_mask)
        if subjects is None:
            return keys, None
        if windows is None:
            raise MeloConfigError("subject scope needs a key encoder (its tokens are matched)")
        if subjects.shape[1] == 0:
            return keys, torch.zeros(len(keys), dtype=torch.bool, device=keys.device)
        return keys, subject_matches(windows(subjects.shape[1]), subject_hashes(subjects.to(keys.device))).diagonal()

    def route(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Block id chosen for each row (-1: no block, the base model)."""
        attention_mask = self._mask(input_ids, attention_mask)
        with self.call("keys", key_mask=attention_mask if key_mask is None else key_mask) as call:
            return self._blocks(call, input_ids, attention_mask)

    def _blocks(self, call: RoutingCall, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Each row's block; no keys pass while there is no cluster to route to (no edit, or all revoked)."""
        if call.version.db.n_clusters == 0:
            return torch.full((input_ids.shape[0],), -1, dtype=torch.long, device=input_ids.device)
        return call.version.db.lookup(*self._keys_in(call, input_ids, attention_mask))
