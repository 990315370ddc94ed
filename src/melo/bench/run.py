"""One benchmark run: load model and data, wrap the editor, run a protocol, write the run directory."""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..baselines import BASELINES, load_baseline, make_baseline
from ..config import MeloConfig
from ..data import ClassificationFields, load_task, resolve_data_dir
from ..data.readers import describe_files, describe_skipped
from ..data.tasks import QA_TASKS, misfit_file
from ..errors import MeloConfigError, MeloDataError
from ..evaluation.outputs import check_out_dir
from ..model import MeloModel, get_melo_model
from ..presets import model_config
from .presets import BENCH_PRESETS, BenchPreset, bench_preset
from .protocols import Settings, run_lifelong, run_sequential
from .resume import open_run

METHODS = ("melo",) + BASELINES
PROTOCOLS = ("sequential", "lifelong")


def make_editor(method: str, model: Any, config: MeloConfig, tokenizer: Any, **options: Any) -> Any:
    """MELO itself, or a baseline (melo.baselines) on the same targets and edit schedule."""
    if method == "melo":
        if options:
            raise MeloConfigError(f"melo takes its settings from the MeloConfig, not options {sorted(options)}")
        return get_melo_model(model, config, tokenizer=tokenizer)
    if method in BASELINES:
        return make_baseline(method, model, config, tokenizer, **options)
    raise MeloConfigError(f"unknown method {method!r}; known: {METHODS}")


def check_run(preset: BenchPreset, protocol: str, method: str) -> None:
    """That protocol and method fit the preset's task (no data, no model needed)."""
    if protocol not in PROTOCOLS:
        raise MeloConfigError(f"unknown protocol {protocol!r}; known: {PROTOCOLS}")
    if method not in METHODS:
        raise MeloConfigError(f"unknown method {method!r}; known: {METHODS}")
    if protocol == "lifelong" and preset.data not in QA_TASKS:
        qa = sorted(name for name, p in BENCH_PRESETS.items() if p.data in QA_TASKS)
        raise MeloConfigError(f"--protocol lifelong (WISE) edits generative models on zsRE or CounterFact; preset "
                              f"{preset.name!r} "
                              f"is a {preset.data} preset. Use one of {', '.join(qa)}, or --protocol sequential")


def _presets_of(task: str) -> str:
    return ", ".join(sorted(name for name, p in BENCH_PRESETS.items() if p.data == task))


def check_data(preset: BenchPreset, edits_file: str | Path | None = None, data_file: str | Path | None = None,
               fields: ClassificationFields | None = None, skip_invalid: bool = False) -> None:
    """That the user's data files fit the preset's task (``melo.data.tasks.misfit_file``) and exist (nothing
    read, no model needed)."""
    if skip_invalid and edits_file is None and data_file is None:
        raise MeloConfigError("--skip-invalid skips the bad records of your --edits-file or --data-file; give one")
    problem = misfit_file(preset.data, edits_file, data_file, fields)
    if problem == "data_file":
        raise MeloConfigError(f"--data-file (labelled texts with a split field) is for classification presets "
                              f"({_presets_of('scotus')}); {preset.name!r} is a {preset.data} preset: give your "
                              "edits with --edits-file")
    if problem == "fields":
        raise MeloConfigError("--text-field, --label-field, --split-field, --edit-split and --edit-after describe "
                              "the columns of a --data-file; give the file")
    if problem == "edits_file":
        raise MeloConfigError(f"--edits-file is for zsre, counterfact and hallucination presets; the classification "
                              f"preset {preset.name!r} takes your labelled texts with --data-file (fields: "
                              "--text-field, --label-field, --split-field; edit rows: --edit-split or --edit-after)")
    for option, path in (("--edits-file", edits_file), ("--data-file", data_file)):
        if path is not None and not Path(path).is_file():
            raise MeloDataError(f"{option} {str(path)!r} is not a file")


def _check_labels(model: Any, task: str, label_names: list[str] | None) -> None:
    n = getattr(getattr(model, "config", None), "num_labels", None)
    if task == "classification" and label_names and isinstance(n, int) and n < len(label_names):
        shown = ", ".join(label_names[:8]) + (", ..." if len(label_names) > 8 else "")
        raise MeloConfigError(f"the model has {n} classes but the data has {len(label_names)} labels ({shown}; "
                              "class ids in this order); give a model with a class per label")


def run_bench(preset: str, protocol: str = "sequential", method: str = "melo", n_edits: int | None = None,
              data_dir: str | Path | None = None, out: str | Path | None = None,
              edits_per_block: int | None = None, metric_period: int | None = None,
              progress: bool = True, melo_overrides: dict[str, Any] | None = None,
              method_options: dict[str, Any] | None = None, model: str | None = None,
              edits_file: str | Path | None = None, data_file: str | Path | None = None,
              fields: ClassificationFields | None = None, skip_invalid: bool = False,
              resume: str | Path | None = None, checkpoint_every: int = 100, eval_sample: int | None = None,
              eval_seed: int = 0) -> Path:
    """Run one experiment; ``model`` (a known offline name, .gguf file, folder or hub name; see
    melo.loading) replaces the preset's model, ``edits_file`` its edits (zsRE presets: zsRE format;
    CounterFact presets: EasyEdit's CounterFact format; hallucination: ``{prompt, target, accurate}``
    rows), ``data_file`` with ``fields`` its data
    (classification: labelled texts, edit rows told by a split field; a stand-in is trained on the
    file's upstream rows). config.json records every data file read with its sha256. ``skip_invalid``: bad
    records of the user's file are left out, listed on the terminal and in config.json (``data.skipped``).

    The run is checkpointed every ``checkpoint_every`` edits and around each evaluation;
    ``resume`` (a run directory of the same command) continues a run from its last checkpoint.
    ``eval_sample``: lifelong evaluations beyond that many edits score a seeded sample of them."""
    p = bench_preset(preset)
    check_run(p, protocol, method)
    check_data(p, edits_file, data_file, fields, skip_invalid)
    for name, value in (("n_edits", n_edits), ("edits_per_block", edits_per_block), ("metric_period", metric_period),
                        ("checkpoint_every", checkpoint_every), ("eval_sample", eval_sample)):
        if value is not None and value < 1:
            raise MeloConfigError(f"{name} must be at least 1, got {value}")
    if resume is not None:
        if out is not None and Path(out) != Path(resume):
            raise MeloConfigError(f"--resume {str(resume)!r} continues that run directory; leave out --out {out!r}")
        if not (Path(resume) / "config.json").is_file():
            raise MeloDataError(f"--resume {str(resume)!r} is not a run directory of melo bench (no config.json)")
        out = resume
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = check_out_dir(out if out else Path("runs") / f"{preset}-{method}-{protocol}-{stamp}")
    data_path = resolve_data_dir(data_dir) if data_file is None or data_dir is not None else None
    data = load_task(p.data, data_path, target="alt" if protocol == "lifelong" else "answer",
                     edits_file=edits_file, data_file=data_file, fields=fields, skip_invalid=skip_invalid)
    if data.skipped:
        print(describe_skipped(edits_file or data_file, data.skipped), flush=True)
    config = None if p.melo is None else MeloConfig(**{**p.melo(), **(melo_overrides or {})})
    if model is not None:
        from ..loading import load_model

        base, tokenizer = load_model(model, task="causal_lm" if config is None else config.task)
        base.eval()
    else:
        base, tokenizer = p.load_model(data_path, data)
    if config is None:  # the auto preset: layers from the model's structure
        config = model_config(p.name, base, tokenizer, print, **(melo_overrides or {}))
    _check_labels(base, config.task, data.label_names)
    settings = Settings(
        edits_per_block=edits_per_block or (1 if protocol == "lifelong" else p.edits_per_block),
        metric_period=metric_period or p.metric_period,
        n_edits=n_edits if n_edits is not None else p.n_edits,
        max_new_tokens=p.max_new_tokens,
        upstream_limit=p.upstream_limit,
        eval_sample=eval_sample,
        eval_seed=eval_seed,
    )
    options = {**p.baseline_options.get(method, {}), **(method_options or {})}
    if method == "lora" and "r" not in options and "expected_blocks" not in options:
        # MELO's capacity at the end of the run (an upper bound: only errors are edited)
        n = len(data.edits) if settings.n_edits is None else min(settings.n_edits, len(data.edits))
        options["expected_blocks"] = max(1, math.ceil(n / settings.edits_per_block))
    run_config = {
        "preset": preset, "method": method, "protocol": protocol,
        "data_dir": None if data_path is None else str(data_path), "model": model,
        "edits_file": None if edits_file is None else str(edits_file),
        "data_file": None if data_file is None else str(data_file),
        "data": {"task": data.name, "kind": data.kind, "files": describe_files(data.files), "options": data.options,
                 "label_names": data.label_names, "n_edits": len(data.edits), "n_upstream": len(data.upstream),
                 "n_accurate": len(data.accurate), "skip_invalid": skip_invalid, "n_skipped": len(data.skipped),
                 "skipped": data.skipped},
        "melo": config.to_dict(), "method_options": options, "settings": asdict(settings), "notes": p.notes,
    }
    load = MeloModel.from_pretrained if method == "melo" else load_baseline
    editor, writer, saver = open_run(
        out_dir, run_config, lambda: make_editor(method, base, config, tokenizer, **options),
        lambda adapter: load(base, adapter, tokenizer=tokenizer), checkpoint_every, resume is not None)
    runner = run_lifelong if protocol == "lifelong" else run_sequential
    with warnings.catch_warnings():
        # EncoderDecoderModel warns on every forward that gets labels and decoder ids (a v4.12 note)
        warnings.filterwarnings("ignore", message="Version v4.12.0 introduces", category=FutureWarning)
        summary = runner(editor, data, config.task, settings, writer.log, progress, saver)
    summary.update(method=method, preset=preset, protocol=protocol)
    writer.finish(summary)
    return out_dir
