"""MELO's rules for adding one edit batch's keys to the vector database (``melo.router``).

Applied key by key, in order (nearest centre ``j`` at distance ``d``):

* add:      empty database, or nearest centre farther than ``radius_j + init_radius`` (rule
            "nearest": farther than ``radius_j``);
* expand:   nearest cluster has the same label: centre = mean of members, radius =
            max(member distance to centre + eps, init_radius) (eps keeps the farthest member off
            the boundary, where float noise from batch padding would flip it in and out);
* conflict: different label. Rule "split" (the paper): new cluster at the key with radius
            ``d/2 + eps``, old radius ``d/2 - eps``; old members now outside it are forgotten (kept
            in the edit list). Rule "nearest": new cluster at the key with ``init_radius``, the old
            one unchanged. The lookup already sends a query inside several balls to the nearest
            centre, so overlapping balls are not ambiguous; the split only shrinks both balls on
            their far sides too, which loses paraphrases and, through forgotten members, edits
            (docs/smollm2-routing.md). A key on the old centre is split as by the paper. Under
            "nearest" only a key inside a ball joins it: two prompts with the same target text
            are not one region, and a ball grown over both captures what lies between them
            (CounterFact's neighbourhood prompts: docs/counterfact.md).

Only clusters with live members are candidates. A key identical to a later key of the same batch
with another label is "superseded" before the rules run: the last edit of a prompt wins. After a batch, a ball that
holds a live key of another cluster whose own centre is farther is shrunk to exclude it (members
pushed out are forgotten as "displaced"; the paper's rules alone let an expanding ball capture
other edits). Before that pass, an older live key identical to a new one is "superseded", whatever the
labels, so the newer edit of a prompt is the one kept. With
the router's lookup, every live edit key then routes to its own block.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

EPS = 1e-5

Label = tuple[int, ...]


@dataclass
class UpdateReport:
    added: int = 0
    expanded: int = 0
    conflicts: int = 0
    forgotten: dict[int, str] = field(default_factory=dict)  # key id -> reason (VectorDatabase.updated: edit id)


def exact_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances [len(a), len(b)] from float64 differences (no cancellation)."""
    return torch.cdist(a.double(), b.double(), compute_mode="donot_use_mm_for_euclid_dist")


def maybe_within(a: torch.Tensor, b: torch.Tensor, limit: torch.Tensor) -> torch.Tensor:
    """[len(a), len(b)] bool, true wherever ``exact_dist(a, b) <= limit`` ([len(b)]) and a few more:
    one float32 product, with a margin far wider than its rounding, picks the pairs worth the exact check."""
    a32, b32 = a.float(), b.float()
    na, nb = (a32 * a32).sum(1, keepdim=True), (b32 * b32).sum(1).unsqueeze(0)
    d2 = torch.addmm(na + nb, a32, b32.t(), alpha=-2.0)
    return d2 <= limit.float().clamp_min(0).square().unsqueeze(0) + 1e-4 * (na + nb) + 1e-6


def apply_batch(db, keys: torch.Tensor, labels: list[Label], block: int) -> UpdateReport:
    """Add one batch's keys (edits ``db.n_keys ...``) to ``db`` in place; what happened, by rule."""
    report = UpdateReport()
    dev = db.device
    start = db.n_keys
    n = len(keys)
    db.append("keys", keys)
    db.append("key_block", torch.full((n,), block, dtype=torch.long, device=dev))
    db.key_cluster = torch.cat([db.key_cluster, torch.full((n,), -1, dtype=torch.long, device=dev)])
    db.key_labels.extend(labels)
    same = torch.triu((keys.unsqueeze(1) == keys.unsqueeze(0)).all(-1), diagonal=1)
    superseded = {i for i, j in torch.nonzero(same).tolist() if labels[i] != labels[j]}
    changed: set[int] = set()
    for i, label in enumerate(labels):
        idx = start + i
        if i in superseded:  # the same key with another label comes later in the batch
            _forget(db, torch.tensor([idx], device=dev), "superseded", report)
            continue
        populated = _populated(db)
        if not bool(populated.any()):
            changed.add(_add_cluster(db, idx, db.init_radius, label))
            report.added += 1
            continue
        dist = exact_dist(db.keys[idx].unsqueeze(0), db.centres)[0].masked_fill(~populated, torch.inf)
        j = int(dist.argmin())  # the first of equal minima, as over the populated clusters alone
        d = float(dist[j])
        reach = 0.0 if db.conflict_rule == "nearest" else db.init_radius
        if d > float(db.radii[j]) + reach:
            changed.add(_add_cluster(db, idx, db.init_radius, label))
            report.added += 1
        elif db.labels[j] == label:
            db.key_cluster[idx] = j
            _refit(db, j)
            changed.add(j)
            report.expanded += 1
        else:
            db.n_conflicts += 1
            report.conflicts += 1
            if db.conflict_rule == "nearest" and d > 2 * EPS:  # a key on the old centre: split
                changed.add(_add_cluster(db, idx, db.init_radius, label))
                continue
            db.radii[j] = min(float(db.radii[j]), d / 2 - EPS)
            changed.add(j)
            changed.add(_add_cluster(db, idx, d / 2 + EPS, label))
            _drop_outside(db, [j], "conflict", report)
    _supersede_identical(db, start, report)
    _separate(db, sorted(changed), torch.arange(start, db.n_keys, device=dev), report)
    _remove_empty_clusters(db)
    return report


def _populated(db) -> torch.Tensor:
    """[n_clusters] bool: the cluster still has a live member."""
    return torch.bincount(db.key_cluster[db.live()], minlength=db.n_clusters) > 0


def _add_cluster(db, idx: int, radius: float, label: Label) -> int:
    db.append("centres", db.keys[idx].double().unsqueeze(0))
    db.radii = torch.cat([db.radii, torch.tensor([radius], dtype=torch.float64, device=db.device)])
    db.labels.append(label)
    db.key_cluster[idx] = db.n_clusters - 1
    return db.n_clusters - 1


def _refit(db, j: int) -> None:
    members = db.keys[db.key_cluster == j].double()
    db.centres = db.centres.clone()  # earlier versions share the table
    db.centres[j] = members.mean(0)
    spread = float((members - db.centres[j]).norm(dim=1).max())
    db.radii[j] = max(spread + EPS, db.init_radius)  # EPS: the farthest member is not on the edge


def _forget(db, idx: torch.Tensor, reason: str, report: UpdateReport) -> None:
    db.key_cluster[idx] = -1
    for i in idx.tolist():
        db.forgotten[i] = reason
        report.forgotten[i] = reason


def _drop_outside(db, cluster_ids: list[int], reason: str, report: UpdateReport) -> None:
    ids = torch.tensor(cluster_ids, dtype=torch.long, device=db.device)
    members = torch.nonzero(torch.isin(db.key_cluster, ids)).squeeze(1)
    if len(members) == 0:
        return
    own = db.key_cluster[members]
    dist = (db.keys[members].double() - db.centres[own]).norm(dim=1)
    _forget(db, members[dist > db.radii[own]], reason, report)


def _separate(db, changed: list[int], new: torch.Tensor, report: UpdateReport) -> None:
    """Shrink every ball that holds a live key of another cluster nearer than that key's own centre.

    Checked pairs: keys that are new or belong to a changed cluster against every cluster, and
    every live key against the changed clusters. Shrinking drops members but never moves a
    centre, so one pass leaves every live key routed to its own cluster.
    """
    live_mask = db.live()
    live = torch.nonzero(live_mask).squeeze(1)
    if len(live) == 0:
        return
    ch = torch.tensor(changed, dtype=torch.long, device=db.device)
    moved = live[torch.isin(db.key_cluster[live], ch)]
    check = torch.unique(torch.cat([new[db.key_cluster[new] >= 0], moved]))
    limit = db.radii.clone()
    changed_centres = db.centres[ch]
    # live keys against the changed clusters: only keys that may lie in one of their balls can be stolen
    near = torch.nonzero((maybe_within(db.keys, changed_centres, db.radii[ch]) & live_mask.unsqueeze(1)).any(1))
    every = torch.arange(db.n_clusters, device=db.device)
    for keys, cluster_ids, centres in ((check, every, db.centres), (near.squeeze(1), ch, changed_centres)):
        if len(keys) == 0 or len(cluster_ids) == 0:
            continue
        dist = exact_dist(db.keys[keys], centres)
        own = db.key_cluster[keys]
        own_dist = (db.keys[keys].double() - db.centres[own]).norm(dim=1, keepdim=True)
        foreign = own.unsqueeze(1) != cluster_ids.unsqueeze(0)
        steals = foreign & (dist <= db.radii[cluster_ids].unsqueeze(0)) & (dist <= own_dist)
        bound = torch.where(steals, dist - EPS, torch.inf).min(0).values
        limit[cluster_ids] = torch.minimum(limit[cluster_ids], bound)
    shrunk = torch.nonzero(limit < db.radii).squeeze(1).tolist()
    db.radii = limit
    _drop_outside(db, shrunk, "displaced", report)


def _supersede_identical(db, start: int, report: UpdateReport) -> None:
    """An older live key identical to a new live key is superseded (the later edit of a prompt wins, whatever
    its label), before the separation pass could push the new key out in its favour."""
    new = start + torch.nonzero(db.key_cluster[start:] >= 0).squeeze(1)
    older = torch.nonzero(db.key_cluster[:start] >= 0).squeeze(1)
    if len(new) == 0 or len(older) == 0:
        return
    maybe = db.keys[older, 0].unsqueeze(0) == db.keys[new, 0].unsqueeze(1)  # one coordinate, then whole rows
    pairs = torch.nonzero(maybe)
    if len(pairs) == 0:
        return
    a, b = new[pairs[:, 0]], older[pairs[:, 1]]
    stale = torch.unique(b[(db.keys[a] == db.keys[b]).all(1)])
    if len(stale):
        _forget(db, stale, "superseded", report)


def _remove_empty_clusters(db) -> None:
    counts = torch.bincount(db.key_cluster[db.live()], minlength=db.n_clusters)
    keep = counts > 0
    if bool(keep.all()):
        return
    remap = torch.cumsum(keep.long(), 0) - 1
    live = db.live()
    db.key_cluster[live] = remap[db.key_cluster[live]]
    db.centres, db.radii = db.centres[keep], db.radii[keep]
    db.labels = [label for label, k in zip(db.labels, keep.tolist()) if k]


def revoke_keys(db, ids: list[int]) -> None:
    """Take edits ``ids`` out of ``db`` in place. A cluster left empty is removed; one that keeps
    members is refit by the expand rule (centre = mean, radius = max(spread + eps, init_radius))
    unless the refit ball would hold another cluster's live key, in which case it stays as it was.
    So every other live edit stays live and routed to its own block."""
    idx = torch.tensor(sorted(set(ids)), dtype=torch.long, device=db.device)
    touched = torch.unique(db.key_cluster[idx][db.key_cluster[idx] >= 0]).tolist()
    db.key_cluster[idx] = -1
    for i in idx.tolist():
        db.forgotten.pop(i, None)  # re-inserted last: forgotten lists keys in the order they left
        db.forgotten[i] = "revoked"
    for j in touched:
        members = db.keys[db.key_cluster == j].double()
        if len(members) == 0:
            continue
        centre = members.mean(0)
        radius = max(float((members - centre).norm(dim=1).max()) + EPS, db.init_radius)
        others = db.live() & (db.key_cluster != j)
        if not bool(((db.keys[others].double() - centre).norm(dim=1) <= radius).any()):
            db.centres = db.centres.clone()  # earlier versions share the table
            db.centres[j], db.radii[j] = centre, radius
    _remove_empty_clusters(db)

