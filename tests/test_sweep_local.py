"""A real local sweep of the default experiment through launch.py, its relaunch, and its summary."""

import csv
import json
import os
import statistics
import subprocess
import sys

import pytest

import train_helpers as th
from cnnjax.sweep import __main__ as cli
from cnnjax.sweep import launchers
from conftest import REPO_ROOT


def _sweep(root, *flags):
    return subprocess.run([sys.executable, str(REPO_ROOT / "launch.py"), f"--config={th.SMOKE}",
                           "--sweep", f"--workdir={root}", "--parallel=2", "--config.num_epochs=1",
                           *flags], env=th.env(), capture_output=True, text=True, timeout=900)


@pytest.mark.slow  # ~70 CPU-seconds; in make test-slow (CI)
def test_local_sweep_runs_every_point_then_skips_finished_ones(tmp_path):
    proc = _sweep(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert names == ["learning_rate=0.02,seed=0", "learning_rate=0.02,seed=1",
                     "learning_rate=0.05,seed=0", "learning_rate=0.05,seed=1"]
    config = json.loads((tmp_path / "learning_rate=0.05,seed=1" / "config.json").read_text())
    assert config["optimizer"]["learning_rate"] == 0.05 and config["seed"] == 1
    assert config["num_epochs"] == 1  # the sweep command's own override reaches every point
    # Each point's start, and its end with its result (the accuracy of its last eval line).
    for name in names:
        assert f"start {name} (log " in proc.stdout
        final = th.eval_lines(tmp_path / name)[-1]
        assert (f"ended] {name}: done, test accuracy {final['accuracy']:.4f} at step "
                f"{final['step']}") in proc.stdout
    # The final table: a header and one row per point.
    table = proc.stdout[proc.stdout.index("sweep table"):].splitlines()
    assert table[1].startswith("| run |") and "final_accuracy" in table[1]
    assert sorted(line.split(" | ")[0][2:] for line in table[3:7]) == names
    mtimes = {n: (tmp_path / n / "metrics.jsonl").stat().st_mtime for n in names}
    proc = _sweep(tmp_path)
    assert proc.returncode == 0
    assert f"skipping 4 points already done: {', '.join(names)}" in proc.stdout
    assert "start " not in proc.stdout
    assert {n: (tmp_path / n / "metrics.jsonl").stat().st_mtime for n in names} == mtimes
    # Other shared overrides on the same root: refused in one line, nothing run.
    proc = _sweep(tmp_path, "--config.optimizer.momentum=0.5")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert ("was launched with another command (overrides: ['--config.num_epochs=1'] then, "
            "['--config.num_epochs=1', '--config.optimizer.momentum=0.5'] now)") in proc.stderr
    assert "start " not in proc.stdout

    assert cli.main(["summarize", str(tmp_path)]) == 0
    with open(tmp_path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(0.2 < float(r["final_accuracy"]) <= 1.0 for r in rows)  # chance: 0.1
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    with open(tmp_path / "summary_over_seeds.csv") as f:
        points = {float(r["optimizer.learning_rate"]): r for r in csv.DictReader(f)}
    for lr, point in points.items():
        accs = [float(r["final_accuracy"]) for r in rows if float(r["optimizer.learning_rate"]) == lr]
        assert int(point["count"]) == 2 and len(accs) == 2 and point["seeds"] == "0,1"
        assert float(point["final_accuracy_mean"]) == pytest.approx(statistics.mean(accs))
        assert float(point["final_accuracy_std"]) == pytest.approx(statistics.stdev(accs))


def test_sweep_errors_launch_nothing(tmp_path):
    proc = _sweep(tmp_path / "bad", "--parallel=0")
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --parallel must be >= 1, got 0"
    assert not (tmp_path / "bad").exists()  # nothing was written, not even the sweep root


def test_parallel_workers_get_disjoint_shares_of_the_cores():
    assert launchers.core_shares(2, [0, 1, 2, 3, 4]) == [[0, 1], [2, 3, 4]]
    assert launchers.core_shares(2, [3, 1]) == [[1], [3]]
    assert launchers.core_shares(3, [0, 1]) == [[0], [1], [0]]  # more workers than cores
    assert launchers.core_shares(1, [5, 6]) == [[5, 6]]


def test_a_pinned_point_sees_only_its_share(tmp_path, monkeypatch):
    core = min(os.sched_getaffinity(0))
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "8")
    probe = [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)), "
             "os.environ['SLURM_CPUS_PER_TASK'])"]
    assert launchers.run_point(probe, str(tmp_path), cpus=[core]) == 0
    assert (tmp_path / "launch.0.log").read_text().strip() == f"[{core}] 1"
    assert json.loads((tmp_path / launchers.STATUS_FILE).read_text())["status"] == "done"
