"""The vector database: clusters of edit keys, and the lookup from a key to the block that learned it.

A cluster has a centre, a radius, the exact label (token ids or class id) of its edits, and member
keys, each mapped to the block that learned it. An edit has one key or several (its prompt's, then
variants' such as the prompt after context prefixes); it is live while any of its keys is. The
rules applied when a batch is edited (add, expand, conflict; separation of balls; duplicates) are in
``melo.clusters``.

Lookup: among clusters whose ball contains the query, the one with the nearest centre (the paper's
"nearest centre, if within its radius" whenever the nearest ball contains the query, which is the
usual case); then the block of the nearest member key of that cluster (ties: the newest key).
Distances are Euclidean; decisions use exact float64 differences, the candidate search one
float32 matrix product. A key stored with a subject (``melo.scope``) is a candidate only for
prompts that mention that subject.
"""

from __future__ import annotations

import threading
from typing import Callable

import torch

from .clusters import UpdateReport, apply_batch, revoke_keys
from .errors import MeloLoadError
from .scope import NO_TOKEN, subject_hashes, subject_matches

CANDIDATES = 8

Label = tuple[int, ...]


class _Grown:
    """Storage of a table that grows by appending, doubling as it fills. The tables of several
    database versions are views of its first rows; only a version that holds every used row may
    append in place (rows past a version's length are invisible to it), any other copies."""

    def __init__(self, table: torch.Tensor, extra: int):
        n = table.shape[0]
        self.buffer = table.new_empty((max(16, 2 * (n + extra)), *table.shape[1:]))
        self.buffer[:n] = table
        self.used = n + extra  # claimed by the version that made it
        self.lock = threading.Lock()

    def claim(self, table: torch.Tensor, extra: int) -> bool:
        with self.lock:
            ok = (table.data_ptr() == self.buffer.data_ptr() and table.shape[0] == self.used
                  and table.shape[1:] == self.buffer.shape[1:] and self.used + extra <= self.buffer.shape[0])
            if ok:
                self.used += extra
            return ok


def _partly_revoked(db: "VectorDatabase") -> bool:
    """Some edit has a revoked key and a key that is not (revocation takes all of an edit's keys)."""
    revoked = torch.zeros(db.n_keys, dtype=torch.bool)
    revoked[[k for k, r in db.forgotten.items() if r == "revoked" and 0 <= k < db.n_keys]] = True
    per_edit = torch.zeros(db.n_edits, dtype=torch.long).index_add_(0, db.key_edit, revoked.long())
    keys_per_edit = torch.bincount(db.key_edit, minlength=db.n_edits)
    return bool(((per_edit > 0) & (per_edit < keys_per_edit)).any())


class VectorDatabase:
    """Clusters of edit keys. Key ``i`` belongs to edit ``key_edit[i]`` (keys are stored in edit order);
    forgotten keys have cluster -1 and a reason in ``forgotten`` (by key).

    Never changed in place once built: ``updated`` returns a new database, so a lookup running in
    another thread always sees one whole state.
    """

    TENSORS = ("keys", "key_block", "key_cluster", "centres", "radii", "key_subject", "key_edit")
    SHARED = ("keys", "key_block", "key_subject", "key_edit", "centres")  # never written in place (centres:
    # writers copy)

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
        self.key_subject = torch.empty(0, 0, dtype=torch.long, device=device)  # melo.scope: tokens, NO_TOKEN-padded
        self.key_edit = torch.empty(0, dtype=torch.long, device=device)
        self.labels: list[Label] = []
        self.key_labels: list[Label] = []  # label of each key: replays rebuild the database from them
        self.history: list[list] = []  # ["batch", block] and ["revoke", edit ids], in the order applied
        self.forgotten: dict[int, str] = {}  # key id -> reason
        self.n_conflicts = 0
        self._index: dict[str, torch.Tensor] | None = None
        self._grown: dict[str, _Grown] = {}

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

    @property
    def n_edits(self) -> int:
        return int(self.key_edit[-1]) + 1 if self.n_keys else 0

    def live(self) -> torch.Tensor:
        """[n_keys] bool: the key routes (has a cluster)."""
        return self.key_cluster >= 0

    def edit_keys(self, edit_ids: torch.Tensor) -> torch.Tensor:
        """Ids of every key of the edits ``edit_ids``."""
        return torch.nonzero(torch.isin(self.key_edit, edit_ids.to(self.device))).squeeze(1)

    def first_keys(self) -> torch.Tensor:
        """[n_edits]: each edit's first key (its prompt's)."""
        return torch.searchsorted(self.key_edit, torch.arange(self.n_edits, device=self.device))

    def live_edits(self) -> torch.Tensor:
        """[n_edits] bool: some key of the edit is live."""
        return torch.zeros(self.n_edits, dtype=torch.bool, device=self.device).index_put_(
            (self.key_edit[self.live()],), torch.tensor(True, device=self.device))

    def edit_reasons(self, edit_ids: list[int] | None = None) -> dict[int, str]:
        """Why each edit that is not live (of ``edit_ids``, default all) is not: the reason of its key that
        left last ("revoked", "conflict", ...; ``forgotten`` is in the order keys left)."""
        gone = ~self.live_edits()
        if edit_ids is not None:
            gone &= torch.zeros_like(gone).index_fill_(0, torch.tensor(edit_ids, dtype=torch.long,
                                                                         device=self.device), True)
        left = torch.tensor(list(self.forgotten), dtype=torch.long, device=self.device)
        order = torch.full((self.n_edits,), -1, dtype=torch.long, device=self.device)
        order.scatter_reduce_(0, self.key_edit[left], torch.arange(len(left), device=self.device), "amax")
        reasons = list(self.forgotten.values())
        return {e: reasons[int(order[e])] if order[e] >= 0 else "forgotten"
                for e in torch.nonzero(gone).squeeze(1).tolist()}

    def clone(self) -> "VectorDatabase":
        other = VectorDatabase(self.dim, self.init_radius, self.device, self.conflict_rule)
        for name in self.TENSORS:  # tables only ever replaced or appended to are shared, not copied
            value = getattr(self, name)
            setattr(other, name, value if name in self.SHARED else value.clone())
        other.labels = list(self.labels)
        other.key_labels = list(self.key_labels)
        other.history = list(self.history)  # entries are never changed once appended
        other.forgotten = dict(self.forgotten)
        other.n_conflicts = self.n_conflicts
        other._grown = dict(self._grown)
        return other

    def append(self, name: str, rows: torch.Tensor) -> None:
        """Table ``name`` with ``rows`` after it (as ``torch.cat``), written in place into spare storage
        when no other version has appended there: an edit copies no table that only grows."""
        table = getattr(self, name)
        store = self._grown.get(name)
        if store is None or not store.claim(table, len(rows)):
            store = self._grown[name] = _Grown(table, len(rows))
        n = table.shape[0]
        store.buffer[n : n + len(rows)] = rows
        setattr(self, name, store.buffer[: n + len(rows)])

    def moved_to(self, device: torch.device | str) -> "VectorDatabase":
        """A copy on ``device``, each table in its own dtype (keys float32, centres and radii float64)."""
        return self.clone().to(device) if torch.device(device) != self.device else self

    def to(self, device: torch.device | str) -> "VectorDatabase":
        """Move this database's tables to ``device`` in place: only for one no other thread sees yet."""
        for name in self.TENSORS:
            setattr(self, name, getattr(self, name).to(device))
        self._index = None
        self._grown = {}
        return self

    # ---- lookup -----------------------------------------------------------------------------
    def _lookup_index(self) -> dict[str, torch.Tensor]:
        index = self._index
        if index is None:
            centres32 = self.centres.float()
            live = torch.nonzero(self.live()).squeeze(1)
            order = live[torch.argsort(self.key_cluster[live], stable=True)]
            counts = torch.bincount(self.key_cluster[live], minlength=self.n_clusters)
            hashes = subject_hashes(self.key_subject)
            live_mask = self.live()
            index = self._index = {
                "subject_hash": torch.where(live_mask, hashes, torch.zeros_like(hashes)),
                "unscoped": (hashes == 0) & live_mask,  # live keys every row may reach
                "subject_len": int((self.key_subject[live] != NO_TOKEN).sum(1).max()) if len(live) else 0,
                "centres32": centres32,
                "bias": (centres32 * centres32).sum(1) - self.radii.clamp_min(0).square().float(),
                "members": order,
                "member_ptr": torch.cumsum(counts, 0) - counts,
                "member_count": counts,
            }
        return index

    def lookup(self, queries: torch.Tensor, windows: Callable[[int], torch.Tensor] | None = None) -> torch.Tensor:
        """Block id for each query row, or -1 where no cluster's ball contains it.

        ``windows(n)``: the rows' whole-word token-run hashes up to length n (``melo.scope.window_hashes``);
        a key with a subject is only a candidate for rows that mention it (none without ``windows``).
        """
        n = queries.shape[0]
        blocks = torch.full((n,), -1, dtype=torch.long, device=queries.device)
        if self.n_clusters == 0 or n == 0:
            return blocks
        ix = self._lookup_index()
        q = queries.float().to(self.device)
        # candidates: the clusters with the smallest |q - c|^2 - r^2 (< 0 inside the ball), from one
        # matrix product; |q|^2 is the same along a row and left out
        score = torch.addmm(ix["bias"].unsqueeze(1), ix["centres32"], q.t(), alpha=-2.0)  # [clusters, batch]
        key_ok = cluster_ok = None
        if ix["subject_len"] > 0:
            mentioned = (subject_matches(windows(ix["subject_len"]), ix["subject_hash"]) if windows is not None
                         else torch.zeros(n, self.n_keys, dtype=torch.bool, device=self.device))
            key_ok = mentioned | ix["unscoped"]  # mentioned keys are live: dead ones hash to 0
            members = ix["members"]
            cluster_ok = torch.zeros(n, self.n_clusters, dtype=torch.int32, device=self.device).index_add_(
                1, self.key_cluster[members], key_ok[:, members].int()) > 0
            score = score.masked_fill(~cluster_ok.t(), torch.inf)
        k = min(CANDIDATES, self.n_clusters)
        cand = score.topk(k, dim=0, largest=False).indices.t()
        exact = (q.double().unsqueeze(1) - self.centres[cand]).norm(dim=-1)
        inside = exact <= self.radii[cand]
        if cluster_ok is not None:
            inside &= cluster_ok.gather(1, cand)
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
        if key_ok is not None:
            valid &= key_ok[rows.unsqueeze(1), member]
        dist = (q[rows].double().unsqueeze(1) - self.keys[member].double()).norm(dim=-1)
        dist = torch.where(valid, dist, torch.inf)
        is_min = dist == dist.min(1, keepdim=True).values
        newest = torch.where(is_min & valid, member, -1).max(1).values
        blocks[rows.to(blocks.device)] = self.key_block[newest].to(blocks.device)
        return blocks

    # ---- update -----------------------------------------------------------------------------
    def updated(self, keys: torch.Tensor, labels: list[Label], block: int, subjects: torch.Tensor | None = None,
                key_edits: torch.Tensor | None = None) -> tuple["VectorDatabase", UpdateReport]:
        """A new database with one edit batch applied (this one is left unchanged). ``subjects``: each
        key's subject tokens ([n, width], NO_TOKEN-padded; ``melo.scope``), default none. ``key_edits``:
        the edit of each key within the batch (0, 0, 1, ...: in order, none skipped), default one key
        per edit. The report names the edits left with no live key."""
        edits = torch.arange(len(keys)) if key_edits is None else key_edits.long().cpu()
        if len(edits) != len(keys) or (len(edits) and (int(edits[0]) != 0 or bool((edits.diff() < 0).any())
                                                      or bool((edits.diff() > 1).any()))):
            raise ValueError("key_edits must number the batch's edits 0, 1, ... in key order")
        db = self.clone()
        db.append("key_edit", (edits + self.n_edits).to(self.device))
        rows = torch.empty(len(keys), 0, dtype=torch.long) if subjects is None else subjects.long()
        rows = rows[:, : int((rows != NO_TOKEN).sum(1).max()) if rows.numel() else 0]  # no all-padding columns
        width = max(db.key_subject.shape[1], rows.shape[1])
        pad = lambda t: torch.nn.functional.pad(t, (0, width - t.shape[1]), value=NO_TOKEN)  # noqa: E731
        db.key_subject = torch.cat([pad(db.key_subject), pad(rows.to(self.device))])
        report = apply_batch(db, keys.detach().float().to(self.device), [tuple(x) for x in labels], block)
        db.history.append(["batch", block])
        db._index = None
        report.forgotten = db.edit_reasons(db.key_edit[list(report.forgotten)].tolist()) if report.forgotten else {}
        return db, report

    def revoked(self, ids: list[int]) -> "VectorDatabase":
        """A new database without edits ``ids``: all of their keys (see ``clusters.revoke_keys``)."""
        db = self.clone()
        revoke_keys(db, self.edit_keys(torch.tensor(sorted(set(ids)), dtype=torch.long)).tolist())
        db.history.append(["revoke", sorted(set(ids))])
        return db

    def rolled_back(self, n_blocks: int) -> "VectorDatabase":
        """The database made by replaying this one's history up to block ``n_blocks``: the edit
        batches of blocks below it, and the revocations of their edits, in the order they came.
        Without revocations it is, bit for bit, the database of a model that made only those batches."""
        kept = int((self.key_block < n_blocks).sum())  # keys are stored in block order
        n = int(self.key_edit[kept - 1]) + 1 if kept else 0  # edits kept
        db = VectorDatabase(self.dim, self.init_radius, self.device, self.conflict_rule)
        for kind, arg in self.history:
            if kind == "batch" and arg < n_blocks:
                rows = torch.nonzero(self.key_block == arg).squeeze(1)
                edits = self.key_edit[rows]
                db = db.updated(self.keys[rows], [self.key_labels[i] for i in rows.tolist()], arg,
                                self.key_subject[rows], edits - edits[0] if len(rows) else edits)[0]
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
            missing = [n for n in cls.TENSORS if f"router.{n}" not in tensors and n not in ("key_subject", "key_edit")]
            if missing:
                raise ValueError(f"tensor router.{missing[0]} is missing")
            db.keys = tensors["router.keys"].float()
            db.key_block = tensors["router.key_block"].long()
            db.key_cluster = tensors["router.key_cluster"].long()
            db.centres = tensors["router.centres"].double()
            db.radii = tensors["router.radii"].double()
            db.key_subject = tensors.get("router.key_subject", torch.empty(db.n_keys, 0)).long()  # saves before scope
            db.key_edit = tensors.get("router.key_edit", torch.arange(db.n_keys)).long()  # one key per edit before
            db.labels = [tuple(int(t) for t in label) for label in meta["labels"]]
            db.key_labels = [tuple(int(t) for t in label) for label in meta["key_labels"]]
            db.history = [[str(kind), int(arg) if kind == "batch" else [int(i) for i in arg]]
                          for kind, arg in meta["history"]]
            db.forgotten = {int(k): str(v) for k, v in dict(meta["forgotten"]).items()}
            db.n_conflicts = int(meta["n_conflicts"])
        except (KeyError, TypeError, ValueError) as err:
            raise MeloLoadError(f"router state is malformed: {err}") from err
        n, c = db.n_keys, db.n_clusters
        shapes = [
            (db.keys.dim() != 2 or db.keys.shape[1] != dim, f"keys are {list(db.keys.shape)}, expected [n, {dim}]"),
            (db.centres.dim() != 2 or db.centres.shape[1] != dim, f"centres are {list(db.centres.shape)}"),
            (list(db.key_block.shape) != [n] or list(db.key_cluster.shape) != [n] or db.key_subject.dim() != 2
             or db.key_subject.shape[0] != n or list(db.key_edit.shape) != [n], "key tables differ in length"),
        ]
        for bad, message in shapes:
            if bad:
                raise MeloLoadError(f"router state is inconsistent: {message}")
        steps, block_steps = db.key_edit.diff(), db.key_block.diff()
        numbered = not n or (int(db.key_edit[0]) == 0 and bool(((steps >= 0) & (steps <= 1)).all()))
        problems = [
            (not numbered, "key edits are not numbered 0, 1, ... in key order"),
            (n and not bool((block_steps >= 0).all()), "keys are not in block order"),
            (n and bool(((steps == 0) & (block_steps != 0)).any()), "an edit's keys name different blocks"),
            (len(db.key_labels) == n and any(db.key_labels[i] != db.key_labels[i + 1]
                                            for i in torch.nonzero(steps == 0).squeeze(1).tolist()),
             "an edit's keys have different labels"),
            (n and numbered and _partly_revoked(db), "an edit is revoked in part"),
            (bool((db.key_subject < NO_TOKEN).any()), "a subject token id is negative"),
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
