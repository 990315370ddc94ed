"""Run directories: resolved config, metrics.jsonl, summary.json, a Table-2-shaped markdown, plots."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..data.readers import read_text
from ..errors import MeloDataError
from ..evaluation.outputs import figure
from ..persistence import write_durably

QUALITY = [("es", "ES"), ("err", "ERR"), ("trr", "TRR"), ("generality", "Generality"), ("arr", "ARR"),
           ("reliability", "Reliability"), ("generalization", "Generalization"), ("locality", "Locality")]
ROUTER = [("clusters", "clusters"), ("conflicts", "conflicts"), ("forgotten_edits", "forgotten edits")]
COST = [("seconds_per_edit", "seconds per edit"), ("adapter_mb", "adapter MB")]


class RunWriter:
    """Appends one JSON line per evaluation point; writes the summary, table and plots at the end."""

    def __init__(self, directory: str | Path, config: dict[str, Any], keep_lines: int | None = None):
        """A new run directory, or (``keep_lines``) a resumed one whose first metric lines are kept."""
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.dir / "metrics.jsonl"
        if keep_lines is None:
            write_durably(self.dir / "config.json", json.dumps(config, indent=1, default=str).encode())
            kept = []
        else:
            kept = read_text(self.metrics_path).splitlines(keepends=True)[:keep_lines] \
                if self.metrics_path.is_file() else []
            if len(kept) < keep_lines:
                raise MeloDataError(f"{self.metrics_path} has {len(kept)} lines, its checkpoint {keep_lines}")
        write_durably(self.metrics_path, "".join(kept).encode())  # a kill while cutting back keeps the old file
        self.lines = len(kept)

    def log(self, point: dict[str, Any]) -> None:
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(point) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.lines += 1

    def finish(self, summary: dict[str, Any]) -> dict[str, Path]:
        (self.dir / "summary.json").write_text(json.dumps(summary, indent=1))
        (self.dir / "table.md").write_text(markdown_table([summary]) + "\n" + lifelong_table(summary))
        return plot_runs([self.dir], self.dir)


def read_run(directory: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(summary, metric points) of a run directory written by ``melo bench``."""
    path = Path(directory)
    missing = [name for name in ("summary.json", "metrics.jsonl") if not (path / name).is_file()]
    if missing:
        raise MeloDataError(f"{str(path)!r} is not a run directory of melo bench (no {' or '.join(missing)})")
    summary = _json(path / "summary.json", read_text(path / "summary.json"))
    lines = read_text(path / "metrics.jsonl").splitlines()
    points = [_json(path / "metrics.jsonl", line, n) for n, line in enumerate(lines, 1) if line.strip()]
    if not isinstance(summary, dict) or not all(isinstance(p, dict) for p in points):
        raise MeloDataError(f"{str(path)!r}: summary.json and each line of metrics.jsonl must be JSON objects")
    return summary, points


def _json(path: Path, text: str, line: int | None = None) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        where = f"line {line}" if line is not None else f"line {err.lineno}"
        raise MeloDataError(f"{path}: {where}: not valid JSON ({err.msg})") from None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.3f}"
    return "–" if value is None else str(value)


def _table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """The lines of a markdown table: header, rule, one line per row of cells."""
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def markdown_table(summaries: Sequence[dict[str, Any]]) -> str:
    """Rows per method and task, pre-edit beside post-edit figures (shaped like MELO's Table 2)."""
    cols = [(k, n) for k, n in QUALITY if any(k in s for s in summaries)]
    head = ["method", "preset", "edits"] + [n for _, n in cols] + ["edit s / edit", "clusters", "conflicts",
                                                                   "forgotten", "extra params"]
    rows = []
    for s in summaries:
        cells = [str(s.get("method", "?")), str(s.get("preset", "?")), str(s.get("n_edits", "?"))]
        for key, _ in cols:
            post, pre = s.get(key), s.get(f"pre_{key}")
            cells.append(f"{_fmt(pre)} → {_fmt(post)}" if pre is not None else _fmt(post))
        n = s.get("n_edits") or 0
        cells.append(_fmt(s["edit_seconds"] / n) if n and "edit_seconds" in s else "–")
        cells += [_fmt(s.get("clusters")), _fmt(s.get("conflicts")), _fmt(s.get("forgotten_edits")),
                  _fmt(s.get("extra_parameters"))]
        rows.append(cells)
    lines = _table(head, rows)
    lines.append("")
    lines.append("Cells show pre-edit → post-edit. QA: token F1; classification: accuracy; "
                 "hallucination: perplexity (lower is better).")
    return "\n".join(lines) + "\n"


LIFELONG = [("reliability", "Rel."), ("generalization", "Gen."), ("generalization_latest", "Gen. vs latest"),
            ("generalization_one_target", "Gen. one-target"), ("locality", "Loc."),
            ("locality_unrestated", "Loc. w/o restated"), ("reliability_em", "Rel. EM"),
            ("generalization_em", "Gen. EM"), ("generalization_f1", "Gen. F1"),
            ("generalization_em_one_target", "Gen. EM one-target"), ("one_target_rows", "one-target rows"),
            ("locality_generated", "Loc. gen EM"), ("locality_generated_f1", "Loc. gen F1")]


def lifelong_table(summary: dict[str, Any]) -> str:
    """One row per lifelong checkpoint T: teacher-forced figures, then greedy-generation ones; '' if none."""
    rows = sorted((int(k[1:]), v) for k, v in summary.items()
                  if k[:1] == "T" and k[1:].isdigit() and isinstance(v, dict))
    if not rows:
        return ""
    cols = [(k, n) for k, n in LIFELONG if any(k in v for _, v in rows)]
    lines = _table(["T", "scored"] + [n for _, n in cols] + ["edit s"],
                   ([str(t), _fmt(v.get("scored_edits"))] + [_fmt(v.get(k)) for k, _ in cols]
                    + [_fmt(v.get("edit_seconds"))] for t, v in rows))
    note = ("Teacher-forced token accuracy (Loc.: agreement with the unedited model; Gen. vs latest: a paraphrase "
            "against its fact's latest target; one-target: the paraphrases of facts with one target among the first "
            "T edits, shown where some scored fact has several); EM / F1: greedy answers against the target (Loc. "
            "gen: against the unedited model's answer).")
    return "\n".join(lines + ["", note]) + "\n"


def plot_runs(directories: Sequence[str | Path], out_dir: str | Path) -> dict[str, Path]:
    """Quality metrics and router counts against the number of edits, one line per run."""
    runs = [(Path(d), *read_run(d)) for d in directories]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, keys in (("metrics", QUALITY + COST), ("router", ROUTER)):
        present = [(k, label) for k, label in keys if any(k in p for _, _, pts in runs for p in pts)]
        if not present:
            continue
        fig, axes = figure(1, len(present), figsize=(3.6 * len(present), 3.2))
        for ax, (key, label) in zip(axes[0], present):
            for path, summary, points in runs:
                xs = [p["n_edits"] for p in points if key in p]
                ys = [p[key] for p in points if key in p]
                run_label = f"{summary.get('method', '?')} · {summary.get('preset', path.name)}"
                ax.plot(xs, ys, marker="o", markersize=2.5, label=run_label)
            ax.set_title(label)
            ax.set_xlabel("edits")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        written[name] = out / f"{name}.png"
        fig.savefig(written[name], dpi=110)
    return written


PAPER_COLUMNS = [("trr", "TRR"), ("err", "ERR"), ("generality", "Gen."), ("arr", "ARR")]


def comparison_table(summaries: Sequence[dict[str, Any]]) -> str:
    """Paper's Table 2 shape: one row per method; per preset TRR, ERR and generality or ARR
    (pre-edit → post-edit); then the cost of each run."""
    presets = list(dict.fromkeys(s.get("preset", "?") for s in summaries))
    methods = list(dict.fromkeys(s.get("method", "?") for s in summaries))
    by = {(s.get("method", "?"), s.get("preset", "?")): s for s in summaries}
    cols = [(p, k, n) for p in presets for k, n in PAPER_COLUMNS if any(k in s for (m, q), s in by.items() if q == p)]
    head = ["method"] + [f"{p} {n}" for p, _, n in cols]
    rows = []
    for m in methods:
        cells = [m]
        for p, k, _ in cols:
            s = by.get((m, p), {})
            cells.append(f"{_fmt(s.get('pre_' + k))} → {_fmt(s.get(k))}" if k in s else "–")
        rows.append(cells)
    cost = []
    for s in summaries:
        n = s.get("n_edits") or 0
        per_edit = _fmt(s["edit_seconds"] / n) if n and "edit_seconds" in s else "–"
        cost.append([str(s.get("method", "?")), str(s.get("preset", "?")), str(n), per_edit,
                     _fmt(s.get("extra_parameters")), _fmt(s.get("clusters")), _fmt(s.get("conflicts")),
                     _fmt(s.get("forgotten_edits"))])
    lines = _table(head, rows) + [""] + _table(["method", "preset", "edits", "edit s / edit", "extra params",
                                                "clusters", "conflicts", "forgotten"], cost)
    lines.append("")
    lines.append("Cells show pre-edit → post-edit. QA: token F1; classification: accuracy; hallucination: "
                 "perplexity (lower is better). TRR: upstream; ERR: all edits; Gen.: held-out rephrasings; "
                 "ARR: accurate sentences.")
    return "\n".join(lines) + "\n"


def write_comparison(directories: Sequence[str | Path], out_dir: str | Path) -> dict[str, Path]:
    """comparison.md, comparison.csv (every summary field) and overlaid plots of several runs."""
    import csv

    summaries = [read_run(d)[0] for d in directories]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"table": out / "comparison.md", "csv": out / "comparison.csv"}
    written["table"].write_text(comparison_table(summaries))
    fields = sorted({k for s in summaries for k, v in s.items() if not isinstance(v, dict)})
    with written["csv"].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(summaries)
    written.update(plot_runs(directories, out))
    return written
