"""The model holder behind ``melo serve``: one MeloModel, an edit worker and the durable journal.

Edits, revocations and rollbacks run one at a time, in order, on a single worker thread; each is
applied to the model, then appended to the journal and fsynced, and only then acknowledged.
Completions run on any thread meanwhile (MeloModel is thread-safe).
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MeloConfigError, MeloError, MeloLoadError
from ..model import MeloModel, get_melo_model
from ..persistence import META_FILE
from ..presets import model_config
from ..text import max_positions
from .journal import Journal, latest_checkpoint, write_checkpoint

log = logging.getLogger("melo.serve")


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1_000_000
    max_tokens: int = 512
    max_n: int = 8
    max_stop: int = 4
    max_edits_per_batch: int = 64
    max_queued_ops: int = 16


class QueueFullError(MeloError):
    """Too many edit operations are waiting."""


class ServiceFailedError(MeloError):
    """A journal write failed: the model may hold an unrecorded op, so no further op is accepted."""


class EditService:
    """Owns the model; ``submit(op, args)`` queues an edit / revoke / rollback and returns a Future."""

    def __init__(self, model: MeloModel, name: str, state_dir: str | Path | None = None,
                 checkpoint_every: int = 20, limits: Limits = Limits()):
        if model.task != "causal_lm":
            raise MeloConfigError(f"melo serve serves causal language models; this adapter's task is {model.task!r}")
        self.model, self.name, self.limits = model, name, limits
        self.tokenizer = model.tokenizer
        self.max_positions = max_positions(model.base_model.config)
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.checkpoint_every = checkpoint_every
        self.journal: Journal | None = None
        self.seq = self.checkpoint_seq = 0
        self.replayed = 0
        self.failure: str | None = None
        self._queue: queue.Queue = queue.Queue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._worker: threading.Thread | None = None

    # ---- start: checkpoint + journal replay -------------------------------------------------------
    @classmethod
    def open(cls, base_model: Any, tokenizer: Any, name: str, state_dir: str | Path | None, preset: str | None = None,
             checkpoint_every: int = 20, limits: Limits = Limits()) -> "EditService":
        """The adapter of ``state_dir`` (its newest checkpoint, else the adapter saved there, else a new
        one from ``preset``) with the journal replayed on top."""
        state = Path(state_dir) if state_dir is not None else None
        found = latest_checkpoint(state) if state is not None else None
        if found is not None:
            checkpoint_seq, folder = found
            model = MeloModel.from_pretrained(base_model, folder, tokenizer=tokenizer)
        else:
            checkpoint_seq = 0
            if state is not None and (state / META_FILE).is_file():
                model = MeloModel.from_pretrained(base_model, state, tokenizer=tokenizer)
            elif preset is not None:
                model = get_melo_model(base_model, model_config(preset, base_model, tokenizer, say=print),
                                       tokenizer=tokenizer)
            else:
                where = f"{state}" if state is not None else "no --adapter folder"
                raise MeloConfigError(f"no saved adapter in {where} and no --preset to start a new one")
        service = cls(model, name, state, checkpoint_every, limits)
        service.seq = service.checkpoint_seq = checkpoint_seq
        if state is not None:
            state.mkdir(parents=True, exist_ok=True)
            service.journal = Journal(state)
            for entry in service.journal.entries:
                if entry["seq"] > checkpoint_seq:
                    service._apply(entry["op"], entry["args"], replay=True)
                    service.seq = entry["seq"]
                    service.replayed += 1
            service.seq = max(service.seq, service.journal.last_seq)
        return service

    def start(self) -> None:
        self._worker = threading.Thread(target=self._work, name="melo-edit-worker", daemon=True)
        self._worker.start()

    def close(self) -> None:
        """Finish queued ops, stop the worker, write a final checkpoint."""
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join()
            self._worker = None
        if self.journal is not None:
            if self.failure is None and self.seq > self.checkpoint_seq:
                self._checkpoint()
            self.journal.close()
            self.journal = None

    # ---- ops --------------------------------------------------------------------------------------
    def submit(self, op: str, args: dict[str, Any]) -> Future:
        if self.failure is not None:
            raise ServiceFailedError(self.failure)
        with self._pending_lock:
            if self._pending >= self.limits.max_queued_ops:
                raise QueueFullError(f"{self._pending} edit operations are queued (limit "
                                     f"{self.limits.max_queued_ops}); retry later")
            self._pending += 1
        future: Future = Future()
        self._queue.put((op, args, future))
        return future

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            op, args, future = item
            try:
                if self.failure is not None:
                    raise ServiceFailedError(self.failure)
                result = self._apply(op, args, replay=False)
            except BaseException as err:  # handed to the waiting request
                future.set_exception(err)
            else:
                self._record(op, args, result, future)
            finally:
                with self._pending_lock:
                    self._pending -= 1

    def _record(self, op: str, args: dict[str, Any], result: dict[str, Any], future: Future) -> None:
        """Journal an applied op, acknowledge it, checkpoint when due."""
        try:
            self.journal_append(op, {**args, **result.pop("_journal", {})})
        except OSError as err:
            self.failure = f"journal write failed ({err}); restart the server"
            log.error(self.failure)
            future.set_exception(ServiceFailedError(self.failure))
            return
        future.set_result(result)
        if self.journal is not None and self.seq - self.checkpoint_seq >= self.checkpoint_every:
            try:
                self._checkpoint()
            except (OSError, MeloError) as err:  # the journal still holds every op: log and go on
                log.error("checkpoint %d failed: %s", self.seq, err)

    def journal_append(self, op: str, args: dict[str, Any]) -> None:
        self.seq += 1
        if self.journal is not None:
            try:
                self.journal.append(self.seq, op, args)
            except OSError:
                self.seq -= 1
                raise

    def _checkpoint(self) -> None:
        write_checkpoint(self.model, self.state_dir, self.seq)
        self.checkpoint_seq = self.seq
        self.journal.compact(self.seq)

    def _apply(self, op: str, args: dict[str, Any], replay: bool) -> dict[str, Any]:
        model = self.model
        if op == "edit":
            first = len(model.records)
            result = model.edit(list(args["prompts"]), list(args["targets"]), subjects=args.get("subjects"))
            if replay:
                if result.block != args["block"]:
                    raise MeloLoadError(f"journal replay: edit went to block {result.block}, "
                                        f"the journal says {args['block']}")
                for record in model.records[first:]:
                    record["created"] = args["created"]
            created = model.records[first]["created"]
            return {"ids": list(range(first, first + result.n_edits)), "block": result.block,
                    "added": result.added, "expanded": result.expanded, "conflicts": result.conflicts,
                    "forgotten": [row["edit"] for row in result.forgotten],
                    "_journal": {"block": result.block, "created": created}}
        if op == "revoke":
            model.revoke(list(args["ids"]))
            return {"revoked": list(args["ids"])}
        if op == "rollback":
            model.rollback(args["n_blocks"])
            return {"blocks": model.n_blocks}
        raise MeloLoadError(f"unknown journal op {op!r}")

    # ---- reads ------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {**self.model.stats(), "queued_ops": self._pending, "journal_seq": self.seq,
                "checkpoint_seq": self.checkpoint_seq, "durable": self.journal is not None,
                "failure": self.failure}
