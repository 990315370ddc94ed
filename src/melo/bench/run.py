"""One benchmark run: load model and data, wrap the editor, run a protocol, write the run directory."""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..baselines import BASELINES, make_baseline
from ..config import MeloConfig
from ..model import get_melo_model
from ..data import load_task, resolve_data_dir
from .presets import bench_preset
from .protocols import Settings, run_lifelong, run_sequential
from .report import RunWriter

METHODS = ("melo",) + BASELINES


def make_editor(method: str, model: Any, config: MeloConfig, tokenizer: Any, **options: Any) -> Any:
    """MELO itself, or a baseline (melo.baselines) on the same targets and edit schedule."""
    if method == "melo":
        if options:
            raise ValueError(f"melo takes its settings from the MeloConfig, not options {sorted(options)}")
        return get_melo_model(model, config, tokenizer=tokenizer)
    if method in BASELINES:
        return make_baseline(method, model, config, tokenizer, **options)
    raise ValueError(f"unknown method {method!r}; known: {METHODS}")


def run_bench(preset: str, protocol: str = "sequential", method: str = "melo", n_edits: int | None = None,
              data_dir: str | Path | None = None, out: str | Path | None = None,
              edits_per_block: int | None = None, metric_period: int | None = None,
              progress: bool = True, melo_overrides: dict[str, Any] | None = None,
              method_options: dict[str, Any] | None = None) -> Path:
    p = bench_preset(preset)
    data_path = resolve_data_dir(data_dir)
    data = load_task(p.data, data_path, target="alt" if protocol == "lifelong" else "answer")
    model, tokenizer = p.load_model(data_path)
    config = MeloConfig(**{**p.melo(), **(melo_overrides or {})})
    settings = Settings(
        edits_per_block=edits_per_block or (1 if protocol == "lifelong" else p.edits_per_block),
        metric_period=metric_period or p.metric_period,
        n_edits=n_edits if n_edits is not None else p.n_edits,
        max_new_tokens=p.max_new_tokens,
        upstream_limit=p.upstream_limit,
    )
    options = {**p.baseline_options.get(method, {}), **(method_options or {})}
    if method == "lora" and "r" not in options and "expected_blocks" not in options:
        # MELO's capacity at the end of the run (an upper bound: only errors are edited)
        n = len(data.edits) if settings.n_edits is None else min(settings.n_edits, len(data.edits))
        options["expected_blocks"] = max(1, math.ceil(n / settings.edits_per_block))
    editor = make_editor(method, model, config, tokenizer, **options)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = Path(out) if out else Path("runs") / f"{preset}-{method}-{protocol}-{stamp}"
    writer = RunWriter(out_dir, {
        "preset": preset, "method": method, "protocol": protocol, "data_dir": str(data_path),
        "melo": config.to_dict(), "method_options": options, "settings": asdict(settings), "notes": p.notes,
    })
    runner = run_lifelong if protocol == "lifelong" else run_sequential
    with warnings.catch_warnings():
        # EncoderDecoderModel warns on every forward that gets labels and decoder ids (a v4.12 note)
        warnings.filterwarnings("ignore", message="Version v4.12.0 introduces", category=FutureWarning)
        summary = runner(editor, data, config.task, settings, writer.log, progress)
    summary.update(method=method, preset=preset, protocol=protocol)
    writer.finish(summary)
    return out_dir
