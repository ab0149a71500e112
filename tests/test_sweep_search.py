"""Optuna searches through launch.py with real journal storage and real worker processes:
pruning of diverging trials, the study read by Optuna alone, relaunches, a SIGKILLed worker.

The search is tests/digits_search.py: a grid of 12 learning rates on the digits, 24 steps each.
Marked slow (CI runs the file in `make test-slow`): 200 CPU-seconds for the four tests, measured
with /usr/bin/time on 2 cores under a load average of 23-38 (2026-12-06), most of it the
per-trial compilations of 12 + 7 + 2 trials.
"""

import csv
import json
import os
import signal
import subprocess
import sys

import pytest

import train_helpers as th
from cnnjax.sweep import __main__ as cli
from conftest import REPO_ROOT

SEARCH = REPO_ROOT / "tests" / "digits_search.py"
DIVERGING = (1.0, 2.0, 3.0, 5.0, 7.0, 10.0)  # SGD at these rates: chance accuracy (asserted)
TOTAL = 24

pytestmark = pytest.mark.slow


def _search(root, arg, *flags, parallel=2):
    return subprocess.run([sys.executable, str(REPO_ROOT / "launch.py"), f"--config={SEARCH}:{arg}",
                           "--search", f"--workdir={root}", f"--parallel={parallel}", *flags],
                          env=th.env(), capture_output=True, text=True, timeout=2400)


_LOAD = """
import json, sys, optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage
study = optuna.load_study(study_name="cnnjax",
                          storage=JournalStorage(JournalFileBackend(sys.argv[1])))
print(json.dumps({"trials": [[t.number, t.state.name, t.params, t.value,
                              {str(k): v for k, v in t.intermediate_values.items()},
                              t.user_attrs] for t in study.trials],
                  "best": [study.best_trial.number, study.best_value]}))
"""


def _load(root) -> dict:
    """The study as Optuna alone reads it, in another process."""
    proc = subprocess.run([sys.executable, "-c", _LOAD, str(root / "study.journal")],
                          capture_output=True, text=True, timeout=300, check=True)
    return json.loads(proc.stdout)


def _steps(root, number) -> int:
    return max(r["step"] for r in th.eval_lines(root / f"trial_{number:04d}"))


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    proc = _search(root, "successive_halving")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root, proc


def test_pruner_stops_the_diverging_trials_at_their_first_evaluation(pruned, tmp_path):
    root, _ = pruned
    trials = _load(root)["trials"]
    rates = sorted(p["optimizer.learning_rate"] for _, _, p, *_ in trials)
    assert len(trials) == 12 and rates == sorted(set(rates))  # the grid, each point once
    lr = {n: p["optimizer.learning_rate"] for n, _, p, *_ in trials}
    state = {n: s for n, s, *_ in trials}
    for n, rate in lr.items():
        if rate in DIVERGING:  # stopped at step 4, its checkpoint kept
            assert state[n] == "PRUNED" and _steps(root, n) == 4, (rate, state[n])
            assert (root / f"trial_{n:04d}" / "checkpoints" / "4").is_dir()
    pruned_steps = sum(_steps(root, n) for n in lr)

    # The same diverging rates without pruning (and one whose loss overflows): each runs to the
    # end and stays at chance, which is what the pruner saved.
    proc = _search(tmp_path, "none:" + ",".join(map(str, DIVERGING + (1e9,))))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = {p["optimizer.learning_rate"]: (n, s, v, u)
            for n, s, p, v, _, u in _load(tmp_path)["trials"]}
    _, state, _, attrs = runs.pop(1e9)
    assert state == "FAIL" and "FloatingPointError: loss is" in attrs["fail_reason"]
    assert all(s == "COMPLETE" and v < 0.2 for _, s, v, _ in runs.values()), runs
    unpruned_steps = sum(_steps(tmp_path, n) for n, *_ in runs.values())
    assert unpruned_steps == TOTAL * len(DIVERGING)
    saved = (TOTAL - 4) * len(DIVERGING)
    assert pruned_steps <= 12 * TOTAL - saved


def test_optuna_in_another_process_reads_what_summarize_shows(pruned):
    root, proc = pruned
    study = _load(root)
    assert cli.main(["summarize", str(root)]) == 0
    with open(root / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["trial"]), r["state"]) for r in rows] == [(n, s) for n, s, *_ in study["trials"]]
    for row, (_, _, params, value, _, _) in zip(rows, study["trials"]):
        assert float(row["optimizer.learning_rate"]) == params["optimizer.learning_rate"]
        assert (row["value"] == "" if value is None else float(row["value"]) == value)
    best, best_value = study["best"]
    rate = study["trials"][best][2]["optimizer.learning_rate"]
    assert f"best trial {best}: value {best_value:.4f}" in proc.stdout
    command = [line for line in proc.stdout.splitlines() if "launch.py" in line][-1]
    assert f"--workdir={root}/trial_{best:04d}" in command
    assert f"--config.optimizer.learning_rate={rate}" in command
    for name in ("optimization_history", "intermediate_values", "parallel_coordinate"):
        assert (root / f"{name}.png").stat().st_size > 10_000


def test_relaunch_reruns_nothing_and_another_command_is_refused(pruned):
    root, _ = pruned
    before = _load(root)["trials"]
    mtimes = {p: p.stat().st_mtime for p in root.glob("trial_*/metrics.jsonl")}
    proc = _search(root, "successive_halving")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _load(root)["trials"] == before
    assert {p: p.stat().st_mtime for p in root.glob("trial_*/metrics.jsonl")} == mtimes
    for i in range(2):
        assert (root / "workers" / f"worker_{i}.log").read_text().count(
            "the study has its 12 trials; done") == 2
    proc = _search(root, "successive_halving", "--config.seed=3")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "was launched with another command (overrides: [] then, ['--config.seed=3'] now)" \
        in proc.stderr


def test_sigkilled_worker_resumes_its_trial_from_the_checkpoint(tmp_path):
    flags = ("--config.num_train_steps=400", "--config.checkpoint_every_steps=20",
             "--config.eval_every_steps=100", "--config.log_every_steps=20")
    search = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "launch.py"), f"--config={SEARCH}:none:0.05", "--search",
         f"--workdir={tmp_path}", "--parallel=1", *flags], env=th.env(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    trial = tmp_path / "trial_0000"
    th.wait_for_checkpoint(trial, at_least=20, procs=[search])
    os.kill(int((tmp_path / "workers" / "worker_0.pid").read_text()), signal.SIGKILL)
    out, _ = search.communicate(timeout=2400)
    assert search.returncode == 0, out
    assert "worker 0 ended with status -9; restarting it (1/3)" in out
    log = (tmp_path / "workers" / "worker_0.log").read_text()
    resumed = int(log.split("resuming at step ")[1].split(";")[0])
    assert resumed >= 20 and "worker 0: resuming trial 0" in log
    (number, state, _, value, _, _), = _load(tmp_path)["trials"]
    assert (number, state) == (0, "COMPLETE")
    # The resumed trial ends where an uninterrupted ordinary run of its command ends.
    run = th.run(tmp_path / "plain", *flags, "--config.optimizer.learning_rate=0.05",
                 config=f"{SEARCH}:none")
    assert th.eval_lines(tmp_path / "plain") == th.eval_lines(trial)
    assert th.eval_lines(trial)[-1]["accuracy"] == value
    assert run.returncode == 0
