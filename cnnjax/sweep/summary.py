"""Gathers the runs of a sweep root into a Markdown and CSV table and a learning-curve plot.

Reads every `ROOT/<name>/metrics.jsonl` (one JSON object per line with `step`, `split` and
metrics) and `sweep_point.json` (the point's overrides, which become the table's columns).
"""

from __future__ import annotations

import csv
import json
import pathlib
from typing import Any

import numpy as np

from cnnjax.sweep.launchers import POINT_FILE, run_status
from cnnjax.train.metrics import read_jsonl

METRIC_COLUMNS = ("final_accuracy", "best_accuracy", "best_step", "final_loss", "final_step")


def run_row(workdir: pathlib.Path) -> dict[str, Any] | None:
    """One table row for a run directory; None if it has no eval line yet and has not failed.
    A run that failed before its first evaluation (e.g. a diverged loss) gets a row with empty
    metrics, so the table shows it rather than leaving it out."""
    status = run_status(workdir)
    metrics = workdir / "metrics.jsonl"
    evals = [r for r in read_jsonl(metrics) if r.get("split") == "eval" and "accuracy" in r]
    if not evals and not status.startswith("failed"):
        return None
    point = workdir / POINT_FILE
    overrides = json.loads(point.read_text())["overrides"] if point.is_file() else {}
    row = {"run": workdir.name, **overrides, "status": status}
    if evals:
        best = max(evals, key=lambda r: r["accuracy"])
        row.update({"final_accuracy": evals[-1]["accuracy"], "best_accuracy": best["accuracy"],
                    "best_step": best["step"], "final_loss": evals[-1].get("loss"),
                    "final_step": evals[-1]["step"]})
    return row


def collect(root: pathlib.Path) -> list[dict[str, Any]]:
    """Rows for every run under `root` with an eval line or a failed status, sorted by name."""
    if not root.is_dir():
        raise ValueError(f"sweep root {str(root)!r} does not exist")
    rows = [run_row(d) for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    return [r for r in rows if r is not None]


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    hyper = [k for r in rows for k in r if k not in METRIC_COLUMNS + ("run", "status")]
    return ["run", *dict.fromkeys(hyper), *METRIC_COLUMNS, "status"]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def write_tables(rows: list[dict[str, Any]], root: pathlib.Path, columns: list[str] | None = None,
                 stem: str = "summary") -> tuple[pathlib.Path, pathlib.Path]:
    """Writes ROOT/<stem>.md and ROOT/<stem>.csv (columns: a sweep's by default); returns their
    paths."""
    columns = columns or _columns(rows)
    md = root / f"{stem}.md"
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    md.write_text("\n".join(lines) + "\n")
    path_csv = root / f"{stem}.csv"
    with open(path_csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({c: r.get(c) for c in columns} for r in rows)
    return md, path_csv


def plot_curves(root: pathlib.Path, names: list[str]) -> pathlib.Path:
    """Train and eval error against step for every run on one figure: ROOT/curves.png."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_train, ax_eval) = plt.subplots(1, 2, figsize=(11, 4))
    for name in names:
        records = read_jsonl(root / name / "metrics.jsonl")
        for ax, split in ((ax_train, "train"), (ax_eval, "eval")):
            points = [(r["step"], 100 * (1 - r["accuracy"])) for r in records
                      if r.get("split") == split and "accuracy" in r]
            if points:
                ax.plot(*zip(*points), label=name, marker="." if split == "eval" else None)
    for ax, title in ((ax_train, "train error (%)"), (ax_eval, "eval error (%)")):
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ax_eval.legend(fontsize=7)
    fig.tight_layout()
    out = root / "curves.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def over_seeds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per point of the grid without its `seed` axis: the mean, sample standard
    deviation (ddof 1; empty for one run) and count of final and best accuracy over the seeds
    that have an eval line. Runs are grouped by their overrides other than `seed`."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        key = tuple((k, json.dumps(v)) for k, v in row.items()
                    if k not in METRIC_COLUMNS + ("run", "status", "seed"))
        groups.setdefault(key, []).append(row)
    out = []
    for key, members in groups.items():
        point = {k: json.loads(v) for k, v in key}
        seeds = [r for r in members if r.get("final_accuracy") is not None]
        point["seeds"] = ",".join(str(r.get("seed")) for r in seeds)
        for metric in ("final_accuracy", "best_accuracy"):
            values = np.array([r[metric] for r in seeds], dtype=np.float64)
            point[f"{metric}_mean"] = float(values.mean()) if len(values) else None
            point[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else None
        point["count"] = len(seeds)
        out.append(point)
    return out


def summarize(root: pathlib.Path) -> list[dict[str, Any]]:
    """Writes summary.md, summary.csv and curves.png under `root`, and for a grid with a `seed`
    axis summary_over_seeds.{md,csv}; returns the rows."""
    rows = collect(root)
    if not rows:
        raise ValueError(f"no run under {str(root)!r} has an eval line in metrics.jsonl or has "
                         f"failed yet")
    write_tables(rows, root)
    if any("seed" in r for r in rows):
        points = over_seeds(rows)
        write_tables(points, root, list(dict.fromkeys(k for p in points for k in p)),
                     stem="summary_over_seeds")
    plot_curves(root, [r["run"] for r in rows])
    return rows
