"""One benchmark run: load model and data, wrap the editor, run a protocol, write the run directory."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..config import MeloConfig
from ..model import get_melo_model
from .data import load_task, resolve_data_dir
from .presets import bench_preset
from .protocols import Settings, run_lifelong, run_sequential
from .report import RunWriter

METHODS = ("melo",)


def make_editor(method: str, model: Any, config: MeloConfig, tokenizer: Any) -> Any:
    if method == "melo":
        return get_melo_model(model, config, tokenizer=tokenizer)
    raise ValueError(f"unknown method {method!r}; known: {METHODS}")


def run_bench(preset: str, protocol: str = "sequential", method: str = "melo", n_edits: int | None = None,
              data_dir: str | Path | None = None, out: str | Path | None = None,
              edits_per_block: int | None = None, metric_period: int | None = None,
              progress: bool = True, melo_overrides: dict[str, Any] | None = None) -> Path:
    p = bench_preset(preset)
    data_path = resolve_data_dir(data_dir)
    data = load_task(p.data, data_path, target="alt" if protocol == "lifelong" else "answer")
    model, tokenizer = p.load_model(data_path)
    config = MeloConfig(**{**p.melo(), **(melo_overrides or {})})
    editor = make_editor(method, model, config, tokenizer)
    settings = Settings(
        edits_per_block=edits_per_block or (1 if protocol == "lifelong" else p.edits_per_block),
        metric_period=metric_period or p.metric_period,
        n_edits=n_edits if n_edits is not None else p.n_edits,
        max_new_tokens=p.max_new_tokens,
        upstream_limit=p.upstream_limit,
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = Path(out) if out else Path("runs") / f"{preset}-{method}-{protocol}-{stamp}"
    writer = RunWriter(out_dir, {
        "preset": preset, "method": method, "protocol": protocol, "data_dir": str(data_path),
        "melo": config.to_dict(), "settings": asdict(settings), "notes": p.notes,
    })
    runner = run_lifelong if protocol == "lifelong" else run_sequential
    summary = runner(editor, data, config.task, settings, writer.log, progress)
    summary.update(method=method, preset=preset, protocol=protocol)
    writer.finish(summary)
    return out_dir
