"""The router: from a hidden state (or the prompt's text) to the block each input row uses.

Keys are pooled hidden states of the router layer. The vector database holds clusters of edit
keys: a cluster has a centre, a radius, the exact label (token ids or class id) of its edits, and
member keys, each mapped to the block that learned it. The rules applied when a batch is edited
(add, expand, conflict; separation of balls; duplicates) are in ``melo.clusters``.

Lookup: among clusters whose ball contains the query, the one with the nearest centre (the paper's
"nearest centre, if within its radius" whenever the nearest ball contains the query, which is the
usual case); then the block of the nearest member key of that cluster (ties: the newest key).
Distances are Euclidean; decisions use exact float64 differences, the candidate search one
float32 matrix product.

The routing decision belongs to one call: ``Router.call`` opens it, the router layer's hook fills
it in, and the target layers read it through ``Router.current``. Threads never see each other's.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from .clusters import EPS, UpdateReport, apply_batch, revoke_keys  # noqa: F401  (EPS: part of this module's API)
from .config import MeloConfig
from .errors import MeloConfigError, MeloLoadError
from .nethook import CallContext, StopForward, execution_device, first_tensor, run_prompt

CANDIDATES = 8

Label = tuple[int, ...]


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


class VectorDatabase:
    """Clusters of edit keys. Key ``i`` belongs to edit ``i``; forgotten keys have cluster -1.

    Never changed in place once built: ``updated`` returns a new database, so a lookup running in
    another thread always sees one whole state.
    """

    TENSORS = ("keys", "key_block", "key_cluster", "centres", "radii")

    def __init__(self, dim: int, init_radius: float, device: torch.device | str = "cpu",
                 conflict_rule: str = "split"):
        self.dim = dim
        self.init_radius = float(init_radius)
        self.conflict_rule = conflict_rule  # clusters.CONFLICT_RULES
        self.keys = torch.empty(0, dim, device=device)
        self.key_block = torch.empty(0, dtype=torch.long, device=device)
        self.key_cluster = torch.empty(0, dtype=torch.long, device=device)
        self.centres = torch.empty(0, dim, dtype=torch.float64, device=device)
        self.radii = torch.empty(0, dtype=torch.float64, device=device)
        self.labels: list[Label] = []
        self.key_labels: list[Label] = []  # label of each key: replays rebuild the database from them
        self.history: list[list] = []  # ["batch", block] and ["revoke", ids], in the order applied
        self.forgotten: dict[int, str] = {}
        self.n_conflicts = 0
        self._index: dict[str, torch.Tensor] | None = None

    # ---- inspection -------------------------------------------------------------------------
    @property
    def n_keys(self) -> int:
        return self.keys.shape[0]

    @property
    def n_clusters(self) -> int:
        return self.centres.shape[0]

    @property
    def device(self) -> torch.device:
        return self.keys.device

    def live(self) -> torch.Tensor:
        return self.key_cluster >= 0

    def clone(self) -> "VectorDatabase":
        other = VectorDatabase(self.dim, self.init_radius, self.device, self.conflict_rule)
        for name in self.TENSORS:
            setattr(other, name, getattr(self, name).clone())
        other.labels = list(self.labels)
        other.key_labels = list(self.key_labels)
        other.history = [list(entry) for entry in self.history]
        other.forgotten = dict(self.forgotten)
        other.n_conflicts = self.n_conflicts
        return other

    def moved_to(self, device: torch.device | str) -> "VectorDatabase":
        """A copy on ``device``, each table in its own dtype (keys float32, centres and radii float64)."""
        return self.clone().to(device) if torch.device(device) != self.device else self

    def to(self, device: torch.device | str) -> "VectorDatabase":
        """Move this database's tables to ``device`` in place: only for one no other thread sees yet."""
        for name in self.TENSORS:
            setattr(self, name, getattr(self, name).to(device))
        self._index = None
        return self

    # ---- lookup -----------------------------------------------------------------------------
    def _lookup_index(self) -> dict[str, torch.Tensor]:
        index = self._index
        if index is None:
            centres32 = self.centres.float()
            live = torch.nonzero(self.live()).squeeze(1)
            order = live[torch.argsort(self.key_cluster[live], stable=True)]
            counts = torch.bincount(self.key_cluster[live], minlength=self.n_clusters)
            index = self._index = {
                "centres32": centres32,
                "bias": (centres32 * centres32).sum(1) - self.radii.clamp_min(0).square().float(),
                "members": order,
                "member_ptr": torch.cumsum(counts, 0) - counts,
                "member_count": counts,
            }
        return index

    def lookup(self, queries: torch.Tensor) -> torch.Tensor:
        """Block id for each query row, or -1 where no cluster's ball contains it."""
        n = queries.shape[0]
        blocks = torch.full((n,), -1, dtype=torch.long, device=queries.device)
        if self.n_clusters == 0 or n == 0:
            return blocks
        ix = self._lookup_index()
        q = queries.float().to(self.device)
        # candidates: the clusters with the smallest |q - c|^2 - r^2 (< 0 inside the ball), from one
        # matrix product; |q|^2 is the same along a row and left out
        score = torch.addmm(ix["bias"].unsqueeze(1), ix["centres32"], q.t(), alpha=-2.0)  # [clusters, batch]
        k = min(CANDIDATES, self.n_clusters)
        cand = score.topk(k, dim=0, largest=False).indices.t()
        exact = (q.double().unsqueeze(1) - self.centres[cand]).norm(dim=-1)
        inside = exact <= self.radii[cand]
        routed = inside.any(1)
        if not bool(routed.any()):
            return blocks
        rows = torch.nonzero(routed).squeeze(1)
        exact = torch.where(inside[rows], exact[rows], torch.inf)
        nearest = exact == exact.min(1, keepdim=True).values
        cluster = torch.where(nearest, cand[rows], self.n_clusters).min(1).values  # ties: lowest id
        # nearest member key of the chosen cluster; ties go to the newest key
        count = ix["member_count"][cluster]
        width = int(count.max())
        slot = torch.arange(width, device=q.device).unsqueeze(0)
        valid = slot < count.unsqueeze(1)
        pos = (ix["member_ptr"][cluster].unsqueeze(1) + slot).clamp_max(len(ix["members"]) - 1)
        member = ix["members"][pos]
        dist = (q[rows].double().unsqueeze(1) - self.keys[member].double()).norm(dim=-1)
        dist = torch.where(valid, dist, torch.inf)
        is_min = dist == dist.min(1, keepdim=True).values
        newest = torch.where(is_min & valid, member, -1).max(1).values
        blocks[rows.to(blocks.device)] = self.key_block[newest].to(blocks.device)
        return blocks

    # ---- update -----------------------------------------------------------------------------
    def updated(self, keys: torch.Tensor, labels: list[Label], block: int) -> tuple["VectorDatabase", UpdateReport]:
        """A new database with one edit batch applied (this one is left unchanged)."""
        db = self.clone()
        report = apply_batch(db, keys.detach().float().to(self.device), [tuple(x) for x in labels], block)
        db.history.append(["batch", block])
        db._index = None
        return db, report

    def revoked(self, ids: list[int]) -> "VectorDatabase":
        """A new database without edits ``ids`` (see ``clusters.revoke_keys``)."""
        db = self.clone()
        revoke_keys(db, ids)
        db.history.append(["revoke", sorted(set(ids))])
        return db

    def rolled_back(self, n_blocks: int) -> "VectorDatabase":
        """The database made by replaying this one's history up to block ``n_blocks``: the edit
        batches of blocks below it, and the revocations of their edits, in the order they came.
        Without revocations it is, bit for bit, the database of a model that made only those batches."""
        n = int((self.key_block < n_blocks).sum())  # keys are stored in block order
        db = VectorDatabase(self.dim, self.init_radius, self.device, self.conflict_rule)
        for kind, arg in self.history:
            if kind == "batch" and arg < n_blocks:
                rows = torch.nonzero(self.key_block == arg).squeeze(1)
                db = db.updated(self.keys[rows], [self.key_labels[i] for i in rows.tolist()], arg)[0]
            elif kind == "revoke" and any(i < n for i in arg):
                db = db.revoked([i for i in arg if i < n])
        return db

    # ---- persistence ------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"router.{name}": getattr(self, name) for name in self.TENSORS}

    def meta(self) -> dict:
        return {
            "labels": [list(label) for label in self.labels],
            "key_labels": [list(label) for label in self.key_labels],
            "history": self.history,
            "forgotten": {str(k): v for k, v in self.forgotten.items()},
            "n_conflicts": self.n_conflicts,
        }

    @classmethod
    def restore(cls, dim: int, init_radius: float, tensors: dict[str, torch.Tensor], meta: dict, n_blocks: int,
                device: torch.device | str = "cpu", conflict_rule: str = "split") -> "VectorDatabase":
        """The database saved as ``tensors`` / ``meta``, after checking that it is whole and consistent."""
        db = cls(dim, init_radius, conflict_rule=conflict_rule)
        try:
            missing = [n for n in cls.TENSORS if f"router.{n}" not in tensors]
            if missing:
                raise ValueError(f"tensor router.{missing[0]} is missing")
            db.keys = tensors["router.keys"].float()
            db.key_block = tensors["router.key_block"].long()
            db.key_cluster = tensors["router.key_cluster"].long()
            db.centres = tensors["router.centres"].double()
            db.radii = tensors["router.radii"].double()
            db.labels = [tuple(int(t) for t in label) for label in meta["labels"]]
            db.key_labels = [tuple(int(t) for t in label) for label in meta["key_labels"]]
            db.history = [[str(kind), int(arg) if kind == "batch" else [int(i) for i in arg]]
                          for kind, arg in meta["history"]]
            db.forgotten = {int(k): str(v) for k, v in dict(meta["forgotten"]).items()}
            db.n_conflicts = int(meta["n_conflicts"])
        except (KeyError, TypeError, ValueError) as err:
            raise MeloLoadError(f"router state is malformed: {err}") from err
        n, c = db.n_keys, db.n_clusters
        problems = [
            (db.keys.dim() != 2 or db.keys.shape[1] != dim, f"keys are {list(db.keys.shape)}, expected [n, {dim}]"),
            (db.centres.dim() != 2 or db.centres.shape[1] != dim, f"centres are {list(db.centres.shape)}"),
            (list(db.key_block.shape) != [n] or list(db.key_cluster.shape) != [n], "key tables differ in length"),
            (list(db.radii.shape) != [c] or len(db.labels) != c, "cluster tables differ in length"),
            (len(db.key_labels) != n, f"{len(db.key_labels)} key labels for {n} keys"),
            (any(kind not in ("batch", "revoke") for kind, _ in db.history), "unknown history entry"),
            (n and not bool(((db.key_block >= 0) & (db.key_block < n_blocks)).all()),
             f"a key names a block outside 0..{n_blocks - 1}"),
            (n and not bool(((db.key_cluster >= -1) & (db.key_cluster < c)).all()), "a key names an unknown cluster"),
            (not all(bool(torch.isfinite(t).all()) for t in (db.keys, db.centres, db.radii)),
             "non-finite keys, centres or radii"),
            (any(not 0 <= k < n for k in db.forgotten), "a forgotten edit is not a key"),
            (any(db.key_cluster[k] >= 0 for k in db.forgotten if 0 <= k < n), "a forgotten key is still live"),
            (db.n_conflicts < 0, "negative conflict count"),
        ]
        for bad, message in problems:
            if bad:
                raise MeloLoadError(f"router state is inconsistent: {message}")
        return db.to(device)


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

    def _keys_in(self, call: RoutingCall, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.encoder is not None:  # the text of the key tokens, through the sentence encoder
            ids = [row[mask.bool()].tolist() for row, mask in zip(input_ids, call.key_mask)]
            texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
            return self.encoder.encode(texts).to(input_ids.device)
        run_prompt(self.base_model, self.task, input_ids, attention_mask)
        if call.keys is None:
            raise MeloConfigError(f"router layer {self.layer!r} did not run")
        return call.keys

    def keys(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
             key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Router keys of prompts (pooled over ``key_mask``, default the attention mask): the model
        runs only up to the router layer."""
        attention_mask = self._mask(input_ids, attention_mask)
        with self.call("keys", key_mask=attention_mask if key_mask is None else key_mask) as call:
            return self._keys_in(call, input_ids, attention_mask)

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
        return call.version.db.lookup(self._keys_in(call, input_ids, attention_mask))
