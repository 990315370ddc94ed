"""Edit management shared by a live MeloModel and a saved adapter: the rows ``edits()`` lists."""

from __future__ import annotations

from typing import Any


def edit_rows(records: list[dict[str, Any]], db) -> list[dict[str, Any]]:
    """Every edit record with its status ("live", "forgotten" or "revoked") and the reason it is
    not live, from the router's database ``db`` (key ``i`` is edit ``i``)."""
    rows = []
    for i, (record, is_live) in enumerate(zip(records, db.live().tolist())):
        reason = None if is_live else db.forgotten.get(i, "forgotten")
        status = "live" if is_live else ("revoked" if reason == "revoked" else "forgotten")
        rows.append({**record, "status": status, "reason": reason})
    return rows
