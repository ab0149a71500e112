"""The sweep summary on run directories written by the test (hand-computed expectations)."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from cnnjax.sweep import __main__ as cli
from cnnjax.sweep import summary
from cnnjax.sweep.launchers import POINT_FILE, STATUS_FILE, point_result


def _write_run(root, name, overrides, evals, done=True):
    d = root / name
    d.mkdir(parents=True)
    lines = []
    for step, acc in evals:
        lines.append({"step": step, "split": "train", "loss": 1.0, "accuracy": acc - 0.05})
        lines.append({"step": step, "split": "eval", "loss": 1.0 - acc, "accuracy": acc})
    text = "\n".join(json.dumps(r) for r in lines) + "\n{\"step\": 9"  # torn last line
    (d / "metrics.jsonl").write_text(text)
    (d / POINT_FILE).write_text(json.dumps({"name": name, "overrides": overrides}))
    if done:
        (d / STATUS_FILE).write_text(json.dumps({"status": "done"}))


def test_summary_tables_and_plot(tmp_path):
    _write_run(tmp_path, "lr=0.1", {"optimizer.learning_rate": 0.1}, [(10, 0.5), (20, 0.9), (30, 0.8)])
    _write_run(tmp_path, "lr=0.01", {"optimizer.learning_rate": 0.01}, [(10, 0.3), (20, 0.6)], done=False)
    (tmp_path / "no_eval_yet").mkdir()
    diverged = tmp_path / "lr=10"  # failed before its first evaluation: listed, metrics empty
    diverged.mkdir()
    (diverged / POINT_FILE).write_text(json.dumps({"name": "lr=10",
                                                   "overrides": {"optimizer.learning_rate": 10}}))
    (diverged / STATUS_FILE).write_text(json.dumps({"status": "failed", "returncode": 3}))
    assert cli.main(["summarize", str(tmp_path)]) == 0

    with open(tmp_path / "summary.csv") as f:
        rows = {r["run"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"lr=0.1", "lr=0.01", "lr=10"}
    assert float(rows["lr=0.1"]["final_accuracy"]) == 0.8
    assert float(rows["lr=0.1"]["best_accuracy"]) == 0.9 and rows["lr=0.1"]["best_step"] == "20"
    assert rows["lr=0.1"]["status"] == "done" and rows["lr=0.01"]["status"] == "unfinished"
    assert rows["lr=10"]["status"] == "failed (exit 3)" and rows["lr=10"]["final_accuracy"] == ""
    assert rows["lr=0.01"]["optimizer.learning_rate"] == "0.01"
    md = (tmp_path / "summary.md").read_text().splitlines()
    assert len(md) == 5 and "optimizer.learning_rate" in md[0]

    png = np.asarray(Image.open(tmp_path / "curves.png").convert("L"), dtype=float)
    assert png.shape[0] > 100 and png.std() > 5  # a drawn figure, not a blank canvas


def test_summary_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        summary.summarize(tmp_path / "missing")
    with pytest.raises(ValueError, match="no run"):
        summary.summarize(tmp_path)


def test_point_end_line_has_its_status_accuracy_and_the_error_of_a_failed_point(tmp_path):
    _write_run(tmp_path, "lr=0.1", {"optimizer.learning_rate": 0.1}, [(10, 0.5), (20, 0.9), (30, 0.8)])
    assert point_result(tmp_path / "lr=0.1") == "done, test accuracy 0.8000 at step 30"
    diverged = tmp_path / "lr=10"
    diverged.mkdir()
    (diverged / STATUS_FILE).write_text(json.dumps({"status": "failed", "returncode": 3}))
    error = "error: loss is nan at step 3; stopping; no checkpoint was saved before it"
    (diverged / "launch.0.log").write_text(f"simple_cnn on digits ...\n{error}\n")
    assert point_result(diverged) == f"failed (exit 3): {error} (log {diverged / 'launch.0.log'})"


def test_summary_over_seeds_gives_mean_std_and_count_per_point(tmp_path, capsys):
    accs = {(0.1, 0): 0.80, (0.1, 1): 0.90, (0.1, 2): 0.70, (0.5, 0): 0.40, (0.5, 1): 0.60}
    for (lr, seed), acc in accs.items():
        _write_run(tmp_path, f"lr={lr},seed={seed}",
                   {"optimizer.learning_rate": lr, "seed": seed}, [(10, acc - 0.1), (20, acc)])
    _write_run(tmp_path, "lr=1.0,seed=0", {"optimizer.learning_rate": 1.0, "seed": 0}, [(10, 0.1)])
    assert cli.main(["summarize", str(tmp_path)]) == 0
    assert "over seeds (mean, standard deviation, count)" in capsys.readouterr().out
    with open(tmp_path / "summary_over_seeds.csv") as f:
        rows = {float(r["optimizer.learning_rate"]): r for r in csv.DictReader(f)}
    # Hand-computed: mean and sample standard deviation (n - 1) of 0.8, 0.9, 0.7 and of 0.4, 0.6.
    expected = {0.1: (0.8, 0.1, 3, "0,1,2"), 0.5: (0.5, 0.1414213562373095, 2, "0,1"),
                1.0: (0.1, None, 1, "0")}
    assert sorted(rows) == sorted(expected)
    for lr, (mean, std, count, seeds) in expected.items():
        row = rows[lr]
        assert float(row["final_accuracy_mean"]) == pytest.approx(mean, abs=1e-12)
        assert (row["final_accuracy_std"] == "" if std is None
                else float(row["final_accuracy_std"]) == pytest.approx(std, abs=1e-12))
        assert int(row["count"]) == count and row["seeds"] == seeds
