"""Durable state of an editing service: an append-only journal of operations and checkpoints.

Layout of the state folder::

    journal.jsonl            one JSON object a line, ``{"seq", "op", "args"}``, fsynced before an op is acknowledged
    checkpoints/<seq>/       a saved adapter holding every op up to journal seq ``<seq>``
    checkpoints/.tmp-<seq>/  a checkpoint being written (renamed when complete, removed on start)

A start loads the highest checkpoint and replays the journal entries after it; entries a checkpoint
holds are then dropped from the journal (``compact``). A crash in the middle
of an append leaves a last line without its newline: it was never acknowledged and is cut off.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import MeloLoadError
from ..persistence import fsync_dir, write_durably

JOURNAL_FILE = "journal.jsonl"
CHECKPOINTS_DIR = "checkpoints"
TMP_PREFIX = ".tmp-"
OPS = ("edit", "revoke", "rollback")


class Journal:
    """Append-only JSON-lines log; ``entries`` holds what was on disk when it was opened."""

    def __init__(self, state_dir: str | os.PathLike):
        self.path = Path(state_dir) / JOURNAL_FILE
        created = not self.path.exists()
        self.entries = [] if created else self._read_and_cut_torn_tail()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if created:
            fsync_dir(self.path.parent)

    @property
    def last_seq(self) -> int:
        return self.entries[-1]["seq"] if self.entries else 0

    def _read_and_cut_torn_tail(self) -> list[dict[str, Any]]:
        data = self.path.read_bytes()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):  # torn append: never acknowledged
            with open(self.path, "r+b") as f:
                f.truncate(complete)
                f.flush()
                os.fsync(f.fileno())
        entries: list[dict[str, Any]] = []
        for number, line in enumerate(data[:complete].splitlines(), 1):
            try:
                entry = json.loads(line)
            except ValueError as err:
                raise MeloLoadError(f"{self.path} line {number} is not JSON ({err}); the journal is corrupt") from err
            if not (isinstance(entry, dict) and isinstance(entry.get("seq"), int) and entry.get("op") in OPS
                    and isinstance(entry.get("args"), dict)):
                raise MeloLoadError(f"{self.path} line {number} is not a {{seq, op, args}} entry: {line[:200]!r}")
            if entries and entry["seq"] <= entries[-1]["seq"]:
                raise MeloLoadError(f"{self.path} line {number}: seq {entry['seq']} does not increase")
            entries.append(entry)
        return entries

    def append(self, seq: int, op: str, args: dict[str, Any]) -> None:
        """Write one entry and fsync it: when this returns, the entry survives a crash."""
        entry = {"seq": seq, "op": op, "args": args}
        view = memoryview((json.dumps(entry, ensure_ascii=False, allow_nan=False) + "\n").encode())
        while view:
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)
        self.entries.append(entry)

    def compact(self, through_seq: int) -> None:
        """Drop the entries a checkpoint holds (seq <= ``through_seq``): the rest is written to a temp
        file, fsynced and renamed over the journal; a crash leaves the old journal or the new one."""
        keep = [e for e in self.entries if e["seq"] > through_seq]
        write_durably(self.path, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in keep).encode())
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self.entries = keep

    def close(self) -> None:
        os.close(self._fd)


def latest_checkpoint(state_dir: str | os.PathLike) -> tuple[int, Path] | None:
    """(seq, folder) of the highest complete checkpoint; leftovers of interrupted ones are removed."""
    root = Path(state_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return None
    done = []
    for entry in root.iterdir():
        if entry.name.startswith(TMP_PREFIX):
            shutil.rmtree(entry)
        elif entry.name.isdigit() and entry.is_dir():
            done.append((int(entry.name), entry))
    return max(done) if done else None


def write_checkpoint(model: Any, state_dir: str | os.PathLike, seq: int) -> Path:
    """Save ``model`` as checkpoint ``seq`` (written under a temp name, then renamed); older ones removed."""
    root = Path(state_dir) / CHECKPOINTS_DIR
    final = root / str(seq)
    if not final.is_dir():
        if not root.is_dir():
            root.mkdir()
            fsync_dir(root.parent)
        tmp = root / f"{TMP_PREFIX}{seq}"
        if tmp.exists():
            shutil.rmtree(tmp)
        model.save_pretrained(tmp)
        os.rename(tmp, final)
        fsync_dir(root)
    for old in root.iterdir():
        if old != final and (old.name.startswith(TMP_PREFIX) or (old.name.isdigit() and int(old.name) < seq)):
            shutil.rmtree(old)
    return final
