"""Gathers the runs of a sweep root into a Markdown and CSV table and a learning-curve plot.

Reads every `ROOT/<name>/metrics.jsonl` (one JSON object per line with `step`, `split` and
metrics) and `sweep_point.json` (the point's overrides, which become the table's columns).
"""

from __future__ import annotations

import csv
import json
import pathlib
from typing import Any

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


def write_tables(rows: list[dict[str, Any]], root: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """Writes ROOT/summary.md and ROOT/summary.csv; returns their paths."""
    columns = _columns(rows)
    md = root / "summary.md"
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    md.write_text("\n".join(lines) + "\n")
    path_csv = root / "summary.csv"
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


def summarize(root: pathlib.Path) -> list[dict[str, Any]]:
    """Writes summary.md, summary.csv and curves.png under `root`; returns the rows."""
    rows = collect(root)
    if not rows:
        raise ValueError(f"no run under {str(root)!r} has an eval line in metrics.jsonl or has "
                         f"failed yet")
    write_tables(rows, root)
    plot_curves(root, [r["run"] for r in rows])
    return rows
