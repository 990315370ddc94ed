"""The router: pooling hidden states into keys, and the vector database of edit clusters.

A cluster has a centre, a radius, the exact label (token ids or class id) of its edits, and member
keys, each mapped to the block that learned it. Rules, applied key by key when a batch is edited:

* add:      empty database, or nearest centre farther than ``radius_j + init_radius``;
* expand:   nearest cluster has the same label: centre = mean of members, radius =
            max(member distance to centre + eps, init_radius) (eps keeps the farthest member off
            the boundary, where float noise from batch padding would flip it in and out);
* conflict: different label: new cluster at the key with radius ``d/2 + eps``, old radius
            ``d/2 - eps``; old members now outside it are forgotten (kept in the edit list).

After a batch, a ball that holds a live key of another cluster whose own centre is farther is shrunk
to exclude it (members pushed out are forgotten as "displaced"; the paper's rules alone let an
expanding ball capture other edits), and an older key identical to a newer one in the same cluster
is "superseded". With the lookup below, every live edit key then routes to its own block.

Lookup: among clusters whose ball contains the query, the one with the nearest centre (the paper's
"nearest centre, if within its radius" whenever the nearest ball contains the query, which is the
usual case); then the block of the nearest member key of that cluster (ties: the newest key).
Distances are Euclidean; decisions use exact float64 differences, the candidate search one
float32 matrix product.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

EPS = 1e-5
CANDIDATES = 8

Label = tuple[int, ...]


def pool_hidden(hidden: torch.Tensor, mask: torch.Tensor | None, pooling: str, normalize: bool) -> torch.Tensor:
    """Pool [batch, seq, dim] hidden states over the non-padding tokens given by ``mask``."""
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


def _exact_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances [len(a), len(b)] from float64 differences (no cancellation)."""
    return torch.cdist(a.double(), b.double(), compute_mode="donot_use_mm_for_euclid_dist")


@dataclass
class UpdateReport:
    added: int = 0
    expanded: int = 0
    conflicts: int = 0
    forgotten: dict[int, str] = field(default_factory=dict)  # edit id -> reason


class VectorDatabase:
    """Clusters of edit keys. Key ``i`` belongs to edit ``i``; forgotten keys have cluster -1."""

    def __init__(self, dim: int, init_radius: float):
        self.dim = dim
        self.init_radius = float(init_radius)
        self.keys = torch.empty(0, dim)
        self.key_block = torch.empty(0, dtype=torch.long)
        self.key_cluster = torch.empty(0, dtype=torch.long)
        self.centres = torch.empty(0, dim, dtype=torch.float64)
        self.radii = torch.empty(0, dtype=torch.float64)
        self.labels: list[Label] = []
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

    def live(self) -> torch.Tensor:
        return self.key_cluster >= 0

    def clone(self) -> "VectorDatabase":
        other = VectorDatabase(self.dim, self.init_radius)
        for name in ("keys", "key_block", "key_cluster", "centres", "radii"):
            setattr(other, name, getattr(self, name).clone())
        other.labels = list(self.labels)
        other.forgotten = dict(self.forgotten)
        other.n_conflicts = self.n_conflicts
        return other

    def to(self, device: torch.device | str) -> "VectorDatabase":
        for name in ("keys", "key_block", "key_cluster", "centres", "radii"):
            setattr(self, name, getattr(self, name).to(device))
        self._index = None
        return self

    # ---- lookup -----------------------------------------------------------------------------
    def _lookup_index(self) -> dict[str, torch.Tensor]:
        if self._index is None:
            centres32 = self.centres.float()
            live = torch.nonzero(self.live()).squeeze(1)
            order = live[torch.argsort(self.key_cluster[live], stable=True)]
            counts = torch.bincount(self.key_cluster[live], minlength=self.n_clusters)
            self._index = {
                "centres32": centres32,
                "bias": (centres32 * centres32).sum(1) - self.radii.clamp_min(0).square().float(),
                "members": order,
                "member_ptr": torch.cumsum(counts, 0) - counts,
                "member_count": counts,
            }
        return self._index

    def lookup(self, queries: torch.Tensor) -> torch.Tensor:
        """Block id for each query row, or -1 where no cluster's ball contains it."""
        n = queries.shape[0]
        blocks = torch.full((n,), -1, dtype=torch.long, device=queries.device)
        if self.n_clusters == 0 or n == 0:
            return blocks
        ix = self._lookup_index()
        q = queries.float().to(self.centres.device)
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
        blocks[rows] = self.key_block[newest].to(blocks.device)
        return blocks

    # ---- update -----------------------------------------------------------------------------
    def updated(self, keys: torch.Tensor, labels: list[Label], block: int) -> tuple["VectorDatabase", UpdateReport]:
        """A new database with one edit batch applied (this one is left unchanged)."""
        db = self.clone()
        report = db._apply(keys.detach().float().to(self.keys.device), [tuple(l) for l in labels], block)
        return db, report

    def _apply(self, keys: torch.Tensor, labels: list[Label], block: int) -> UpdateReport:
        report = UpdateReport()
        start = self.n_keys
        self.keys = torch.cat([self.keys, keys])
        self.key_block = torch.cat([self.key_block, torch.full((len(keys),), block, dtype=torch.long)])
        self.key_cluster = torch.cat([self.key_cluster, torch.full((len(keys),), -1, dtype=torch.long)])
        changed: set[int] = set()
        for i, label in enumerate(labels):
            idx = start + i
            key = self.keys[idx].double()
            if self.n_clusters == 0:
                changed.add(self._add_cluster(idx, self.init_radius, label))
                report.added += 1
                continue
            dist = _exact_dist(key.unsqueeze(0), self.centres)[0]
            j = int(dist.argmin())
            d = float(dist[j])
            if d > float(self.radii[j]) + self.init_radius:
                changed.add(self._add_cluster(idx, self.init_radius, label))
                report.added += 1
            elif self.labels[j] == label:
                self.key_cluster[idx] = j
                self._refit(j)
                changed.add(j)
                report.expanded += 1
            else:
                self.radii[j] = min(float(self.radii[j]), d / 2 - EPS)
                changed.add(j)
                changed.add(self._add_cluster(idx, d / 2 + EPS, label))
                self.n_conflicts += 1
                report.conflicts += 1
                self._drop_outside([j], "conflict", report)
        self._separate(sorted(changed), torch.arange(start, self.n_keys), report)
        self._remove_empty_clusters()
        self._index = None
        return report

    def _add_cluster(self, idx: int, radius: float, label: Label) -> int:
        self.centres = torch.cat([self.centres, self.keys[idx].double().unsqueeze(0)])
        self.radii = torch.cat([self.radii, torch.tensor([radius], dtype=torch.float64)])
        self.labels.append(label)
        self.key_cluster[idx] = self.n_clusters - 1
        return self.n_clusters - 1

    def _refit(self, j: int) -> None:
        members = self.keys[self.key_cluster == j].double()
        self.centres[j] = members.mean(0)
        spread = float((members - self.centres[j]).norm(dim=1).max())
        self.radii[j] = max(spread + EPS, self.init_radius)  # EPS: the farthest member is not on the edge

    def _forget(self, idx: torch.Tensor, reason: str, report: UpdateReport) -> None:
        self.key_cluster[idx] = -1
        for i in idx.tolist():
            self.forgotten[i] = reason
            report.forgotten[i] = reason

    def _drop_outside(self, clusters: list[int], reason: str, report: UpdateReport) -> None:
        members = torch.nonzero(torch.isin(self.key_cluster, torch.tensor(clusters, dtype=torch.long))).squeeze(1)
        if len(members) == 0:
            return
        own = self.key_cluster[members]
        dist = (self.keys[members].double() - self.centres[own]).norm(dim=1)
        self._forget(members[dist > self.radii[own]], reason, report)

    def _separate(self, changed: list[int], new: torch.Tensor, report: UpdateReport) -> None:
        """Shrink every ball that holds a live key of another cluster nearer than that key's own centre.

        Checked pairs: keys that are new or belong to a changed cluster against every cluster, and
        every live key against the changed clusters. Shrinking drops members but never moves a
        centre, so one pass leaves every live key routed to its own cluster.
        """
        live = torch.nonzero(self.live()).squeeze(1)
        if len(live) == 0:
            return
        ch = torch.tensor(changed, dtype=torch.long)
        moved = live[torch.isin(self.key_cluster[live], ch)]
        check = torch.unique(torch.cat([new[self.key_cluster[new] >= 0], moved]))
        limit = self.radii.clone()
        for keys, clusters in ((check, torch.arange(self.n_clusters)), (live, ch)):
            dist = _exact_dist(self.keys[keys], self.centres[clusters])
            own = self.key_cluster[keys]
            own_dist = (self.keys[keys].double() - self.centres[own]).norm(dim=1, keepdim=True)
            foreign = own.unsqueeze(1) != clusters.unsqueeze(0)
            steals = foreign & (dist <= self.radii[clusters].unsqueeze(0)) & (dist <= own_dist)
            bound = torch.where(steals, dist - EPS, torch.inf).min(0).values
            limit[clusters] = torch.minimum(limit[clusters], bound)
        shrunk = torch.nonzero(limit < self.radii).squeeze(1).tolist()
        self.radii = limit
        self._drop_outside(shrunk, "displaced", report)
        self._retire_duplicates(new, report)

    def _retire_duplicates(self, new: torch.Tensor, report: UpdateReport) -> None:
        new = new[self.key_cluster[new] >= 0]
        if len(new) == 0:
            return
        older = torch.nonzero(torch.isin(self.key_cluster, self.key_cluster[new])).squeeze(1)
        same = (_exact_dist(self.keys[new], self.keys[older]) == 0) & (
            self.key_cluster[new].unsqueeze(1) == self.key_cluster[older].unsqueeze(0)
        )
        same &= self.key_block[older].unsqueeze(0) < self.key_block[new].unsqueeze(1)
        stale = older[same.any(0)]
        if len(stale):
            self._forget(stale, "superseded", report)

    def _remove_empty_clusters(self) -> None:
        counts = torch.bincount(self.key_cluster[self.live()], minlength=self.n_clusters)
        keep = counts > 0
        if bool(keep.all()):
            return
        remap = torch.cumsum(keep.long(), 0) - 1
        live = self.live()
        self.key_cluster[live] = remap[self.key_cluster[live]]
        self.centres, self.radii = self.centres[keep], self.radii[keep]
        self.labels = [label for label, k in zip(self.labels, keep.tolist()) if k]

    # ---- persistence ------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            "router.keys": self.keys,
            "router.key_block": self.key_block,
            "router.key_cluster": self.key_cluster,
            "router.centres": self.centres,
            "router.radii": self.radii,
        }

    def meta(self) -> dict:
        return {
            "labels": [list(label) for label in self.labels],
            "forgotten": {str(k): v for k, v in self.forgotten.items()},
            "n_conflicts": self.n_conflicts,
        }

    @classmethod
    def restore(cls, dim: int, init_radius: float, tensors: dict[str, torch.Tensor], meta: dict) -> "VectorDatabase":
        db = cls(dim, init_radius)
        db.keys = tensors["router.keys"].float()
        db.key_block = tensors["router.key_block"].long()
        db.key_cluster = tensors["router.key_cluster"].long()
        db.centres = tensors["router.centres"].double()
        db.radii = tensors["router.radii"].double()
        db.labels = [tuple(label) for label in meta["labels"]]
        db.forgotten = {int(k): v for k, v in meta["forgotten"].items()}
        db.n_conflicts = int(meta["n_conflicts"])
        return db
