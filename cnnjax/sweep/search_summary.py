"""Summary of a search root: a table of its trials, the best trial's command and Optuna's plots.

Writes ROOT/summary.md and ROOT/summary.csv (one row per trial: number, state, parameters,
objective value, steps run, failure reason) and, with matplotlib through
`optuna.visualization.matplotlib`, ROOT/optimization_history.png, intermediate_values.png,
parallel_coordinate.png and param_importances.png.
"""

from __future__ import annotations

import pathlib
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from cnnjax.sweep import study as study_lib
from cnnjax.sweep.summary import write_tables
from cnnjax.train.metrics import read_jsonl

PLOTS = ("optimization_history", "intermediate_values", "parallel_coordinate",
         "param_importances")


def steps_run(workdir: pathlib.Path) -> int:
    """The last training step a trial's workdir logged (0 before its first log line)."""
    steps = [r["step"] for r in read_jsonl(workdir / "metrics.jsonl") if "step" in r]
    return max(steps, default=0)


def trial_rows(root: pathlib.Path, study: optuna.Study) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({"trial": t.number, "state": t.state.name, **t.params, "value": t.value,
                     "steps": steps_run(study_lib.trial_workdir(root, t.number)),
                     "worker": t.user_attrs.get("worker"),
                     "fail_reason": t.user_attrs.get("fail_reason", "")})
    return rows


def plot(study: optuna.Study, root: pathlib.Path) -> list[pathlib.Path]:
    """Optuna's matplotlib plots of the study as PNGs; a plot Optuna cannot draw yet (e.g.
    importances before two trials completed) is left out with a printed reason. Importances
    are PED-ANOVA's: the default fANOVA fits a random forest, a minute on 2 busy cores."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    # Optuna marks its matplotlib plots experimental; the warning says nothing about this study.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    options = {"param_importances": {"evaluator": optuna.importance.PedAnovaImportanceEvaluator()}}
    written = []
    for name in PLOTS:
        try:
            ax = getattr(vis, f"plot_{name}")(study, **options.get(name, {}))
        except (ValueError, RuntimeError) as e:  # Optuna's own refusals (too few trials)
            print(f"{name}.png not drawn: {e}")
            continue
        fig = (ax.flat[0] if hasattr(ax, "flat") else ax).get_figure()
        fig.set_size_inches(9, 5)
        fig.tight_layout()
        path = root / f"{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def summarize_search(root: pathlib.Path) -> str:
    """Writes the tables and plots of the search under `root`; returns the text to print: the
    table, the counts by state and the best trial's launch command."""
    study, rec = study_lib.load(root)
    rows = trial_rows(root, study)
    if not rows:
        raise ValueError(f"the search in {str(root)!r} has no trial yet")
    params = list(dict.fromkeys(k for r in rows for k in r
                                if k not in ("trial", "state", "value", "steps", "worker",
                                             "fail_reason")))
    write_tables(rows, root, ["trial", "state", *params, "value", "steps", "worker",
                              "fail_reason"])
    counts = {s.name: sum(r["state"] == s.name for r in rows) for s in TrialState
              if any(r["state"] == s.name for r in rows)}
    lines = [(root / "summary.md").read_text(),
             f"{len(rows)} trials: " + ", ".join(f"{n} {s.lower()}" for s, n in counts.items())]
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if complete:
        best = study.best_trial
        lines += [f"best trial {best.number}: value {best.value:.4f}, params {best.params}",
                  "its launch command (an ordinary run):",
                  study_lib.trial_command(root, rec, best.number, best.params)]
    plots = plot(study, root)
    lines.append(f"wrote {root}/summary.md, summary.csv" +
                 "".join(f", {p.name}" for p in plots))
    return "\n".join(lines)
