"""Sweeps and multi-process training on a REAL single-node SLURM cluster (.ci/slurm_up.sh).

Marked `cluster`: `make test-cluster` runs them; .ci/run does when it runs as root.
"""

import csv
import json
import shutil
import subprocess
import sys
import time

import pytest

import train_helpers as th
from cnnjax.sweep import __main__ as cli
from conftest import REPO_ROOT

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module", autouse=True)
def cluster():
    if shutil.which("sinfo") is None or subprocess.run(["sinfo"], capture_output=True).returncode:
        pytest.fail("no SLURM cluster: run `sudo .ci/slurm_up.sh` first")


def _launch(*flags, timeout=900):
    return subprocess.run([sys.executable, str(REPO_ROOT / "launch.py"), *flags], env=th.env(),
                          capture_output=True, text=True, timeout=timeout)


def test_slurm_sweep_of_the_default_experiment(tmp_path):
    proc = _launch(f"--config={th.SMOKE}", "--sweep", "--launcher=slurm", "--wait",
                   f"--workdir={tmp_path}", "--config.num_epochs=1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("as SLURM job") == 4
    assert cli.main(["summarize", str(tmp_path)]) == 0
    with open(tmp_path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(float(r["final_accuracy"]) > 0.2 for r in rows)
    assert all(r["status"] == "done" for r in rows)


def test_two_slurm_tasks_train_as_one_multi_process_run(tmp_path):
    cmd = ["srun", "--ntasks=2", "--cpus-per-task=1", "--kill-on-bad-exit=1",
           *th.launch_cmd(tmp_path, "--config.num_train_steps=12", "--config.eval_every_steps=12",
                          "--config.checkpoint_every_steps=12")]
    proc = subprocess.run(cmd, env=th.env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    prints = th.fingerprints(proc.stdout)
    assert len(prints) == 2 and prints[0] == prints[1], proc.stdout


def test_scancel_then_resubmit_resumes_from_the_checkpoint(tmp_path):
    flags = (f"--config={th.SMOKE}", "--sweep", "--launcher=slurm", f"--workdir={tmp_path}",
             "--config.num_epochs=30", "--config.checkpoint_every_steps=22",
             "--config.eval_every_steps=220")
    # Cancel every job of the array once one point has a checkpoint; check that point.
    proc = _launch(*flags)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job_ids = sorted({line.rsplit(" ", 1)[-1].split("_")[0] for line in proc.stdout.splitlines()
                      if "as SLURM job" in line})
    point = tmp_path / "learning_rate=0.02,seed=0"
    th.wait_for_checkpoint(point)
    subprocess.run(["scancel", *job_ids], check=True)
    deadline = time.time() + 300
    while subprocess.run(["squeue", "-h", "-j", ",".join(job_ids)], capture_output=True,
                         text=True).stdout.strip():
        assert time.time() < deadline, "jobs did not end after scancel"
        time.sleep(0.5)
    status = json.loads((point / "sweep_status.json").read_text())
    assert status["status"] == "failed" and status["returncode"] == 143  # SIGTERM save, resumable
    saved = max(int(p.name) for p in (point / "checkpoints").iterdir() if p.name.isdigit())

    proc = _launch(*flags, "--wait", timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = (point / "launch.0.log").read_text()
    assert f"resuming at step {saved}" in log
    assert json.loads((point / "sweep_status.json").read_text())["status"] == "done"


def test_search_as_a_job_array_with_a_requeued_worker(tmp_path):
    """A search of 3 trials as an array of 2 workers; the worker holding a trial with a
    checkpoint is requeued (`scontrol requeue`): it comes back as the same array task, resumes
    that trial from its checkpoint, and the study ends with 3 complete trials, none run twice.

    A trial is 1,000 steps (several seconds even at the digits' ~20k images/s) so that the requeue
    lands while the trial that wrote the first checkpoint is still running."""
    search, steps = REPO_ROOT / "tests" / "digits_search.py", 1000
    proc = _launch(f"--config={search}:none:0.05,0.1,0.2", "--search", "--launcher=slurm",
                   "--parallel=2", f"--workdir={tmp_path}", f"--config.num_train_steps={steps}",
                   "--config.checkpoint_every_steps=50", "--config.eval_every_steps=500",
                   "--config.log_every_steps=50")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = [line.split("as SLURM job ")[1].split()[0] for line in proc.stdout.splitlines()
            if "as SLURM job" in line]
    assert len(jobs) == 2
    first = th.wait_for_checkpoint(tmp_path, "trial_*/checkpoints/*")
    trial = first.parents[1]
    worker = next(i for i in range(2) if f"in {trial}\n" in
                  (tmp_path / "workers" / f"worker_{i}.log").read_text())
    subprocess.run(["scontrol", "requeue", jobs[worker]], check=True)
    deadline = time.time() + 1500
    while subprocess.run(["squeue", "-h", "-j", ",".join(jobs)], capture_output=True,
                         text=True).stdout.strip():
        assert time.time() < deadline, "the array did not end"
        time.sleep(1)
    log = (tmp_path / "workers" / f"worker_{worker}.log").read_text()
    number = int(trial.name.split("_")[1])
    assert f"worker {worker}: resuming trial {number}" in log
    assert int(log.split("resuming at step ")[1].split(";")[0]) >= int(first.name)
    proc = subprocess.run([sys.executable, "-m", "cnnjax.sweep", "summarize", str(tmp_path)],
                          env=th.env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(tmp_path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(float(r["optimizer.learning_rate"]) for r in rows) == [0.05, 0.1, 0.2]
    assert all(r["state"] == "COMPLETE" and int(r["steps"]) == steps for r in rows), rows
