"""Checkpoints of a benchmark run, so a run killed at any moment continues where it was.

``DIR/checkpoint/`` holds the editor's adapter (a crash-safe save) and ``state.json``: the protocol's
loop state and how many blocks and metric lines it covers, written durably after the adapter. A
crash between the two leaves an adapter ahead of the state; resuming rolls it back to the state's
block count, which gives, bit for bit, the model that made only those blocks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from ..data.readers import read_text
from ..errors import MeloConfigError, MeloLoadError
from ..persistence import write_durably
from .report import RunWriter

STATE_FILE = "state.json"
STATE_VERSION = 1


class Checkpoints:
    """Saves and restores one run's state under ``run_dir/checkpoint``; ``every`` edits between saves."""

    def __init__(self, run_dir: str | Path, every: int = 100, lines: Callable[[], int] = lambda: 0):
        self.dir = Path(run_dir) / "checkpoint"
        self.every = every
        self.lines = lines  # how many metric lines the run has written so far
        self.state: dict[str, Any] | None = None

    @property
    def adapter_dir(self) -> Path:
        return self.dir / "adapter"

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when the run has no checkpoint yet."""
        path = self.dir / STATE_FILE
        if not path.is_file():
            return None
        try:
            state = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise MeloLoadError(f"{path}: not valid JSON ({err.msg})") from None
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise MeloLoadError(f"{path}: not a melo run checkpoint of version {STATE_VERSION}")
        for key, kind in (("blocks", int), ("metric_lines", int), ("loop", dict)):
            if not isinstance(state.get(key), kind):
                raise MeloLoadError(f"{path}: field {key!r} is missing or not {kind.__name__}")
        self.state = state
        return state

    def restore_editor(self, load: Callable[[Path], Any]) -> Any:
        """The editor as checkpointed: ``load(adapter_dir)``, rolled back to the state's blocks."""
        assert self.state is not None
        editor = load(self.adapter_dir)
        blocks = self.state["blocks"]
        if editor.n_blocks < blocks:
            raise MeloLoadError(f"checkpoint adapter {self.adapter_dir} has {editor.n_blocks} blocks, "
                                f"its state {blocks}")
        if editor.n_blocks > blocks:
            if not hasattr(editor, "rollback"):
                raise MeloLoadError(f"checkpoint adapter is ahead of its state and {type(editor).__name__} "
                                    "cannot roll back")
            editor.rollback(blocks)
        return editor

    def save(self, editor: Any, loop: dict[str, Any], adapter: bool = True) -> None:
        """Commit the run's state: the adapter first (unless unchanged since the last save), then state.json."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if adapter:
            editor.save_pretrained(self.adapter_dir)
        state = {"version": STATE_VERSION, "blocks": editor.n_blocks, "metric_lines": self.lines(), "loop": loop}
        write_durably(self.dir / STATE_FILE, json.dumps(state).encode())
        self.state = state


def check_same_run(stored: dict[str, Any], requested: dict[str, Any], where: Path) -> None:
    """A resumed run must be the run it continues: same preset, method, protocol, data, settings."""
    keys = ("preset", "method", "protocol", "model", "edits_file", "data_file", "melo", "method_options",
            "settings")
    differ = [k for k in keys if json.loads(json.dumps(stored.get(k), default=str))
              != json.loads(json.dumps(requested.get(k), default=str))]
    files = lambda c: {role: f.get("sha256") for role, f in c.get("data", {}).get("files", {}).items()}  # noqa: E731
    if files(stored) != files(requested):
        differ.append("data files (sha256)")
    if differ:
        raise MeloConfigError(f"--resume {str(where)!r}: this command differs from the run's config.json in "
                              f"{', '.join(differ)}; give the command the run was started with")


def open_run(out_dir: Path, run_config: dict[str, Any], make_editor: Callable[[], Any],
             load_editor: Callable[[Path], Any], every: int, resume: bool) -> tuple[Any, RunWriter, Checkpoints]:
    """The editor, metric writer and checkpoints of a run: new, or (``resume``) continued from the last
    checkpoint in ``out_dir``, whose config.json must describe the same run (a run killed before its
    first checkpoint starts again)."""
    saver = Checkpoints(out_dir, every, lines=lambda: writer.lines)
    state = None
    if resume:
        check_same_run(json.loads(read_text(out_dir / "config.json")), run_config, out_dir)
        state = saver.load()
    editor = make_editor() if state is None else saver.restore_editor(load_editor)
    writer = RunWriter(out_dir, run_config, keep_lines=None if state is None else state["metric_lines"])
    return editor, writer, saver
