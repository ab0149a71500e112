"""Starts the k workers of a search: local processes, or a SLURM job array through submitit.

Every worker is `launch.py` itself, run with the search command's own flags plus
`--search_worker=i` (so the config and its command-line overrides are parsed once, the same way
for every worker); its output goes to ROOT/workers/worker_i.log.
"""

from __future__ import annotations

import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from cnnjax.sweep.launchers import LAUNCH_PY, SlurmOptions, slurm_executor

# A worker ended by a signal (or by SIGTERM's clean save, 143) is restarted this many times; it
# resumes its trial from the trial's checkpoint.
MAX_RESTARTS = 3
EXIT_PREEMPTED = 143


def worker_command(argv: Sequence[str], worker: int) -> list[str]:
    """The command of worker `worker`: launch.py with the search command's flags."""
    return [sys.executable, str(LAUNCH_PY), *argv, f"--search_worker={worker}"]


def worker_log(root: pathlib.Path, worker: int) -> pathlib.Path:
    (root / "workers").mkdir(parents=True, exist_ok=True)
    return root / "workers" / f"worker_{worker}.log"


def run_logged(command: Sequence[str], log_path: str) -> int:
    """Runs `command` with its output appended to `log_path`; returns its exit status. Also the
    body of each SLURM array task."""
    with open(log_path, "ab") as log:
        return subprocess.call(list(command), stdout=log, stderr=subprocess.STDOUT)


def run_local(root: pathlib.Path, argv: Sequence[str], parallel: int) -> int:
    """Runs `parallel` workers on this machine until the study is done; returns 0, or 143 when
    this launcher was sent SIGTERM (the workers save their trials and stop), or 1 when a worker
    failed for good. A worker killed by a signal is restarted and resumes its trial."""
    if parallel < 1:
        raise ValueError(f"--parallel must be >= 1, got {parallel}")
    stopping = []
    previous = signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    procs: dict[int, subprocess.Popen] = {}
    logs = {}
    restarts = dict.fromkeys(range(parallel), 0)

    def start(i: int) -> None:
        logs[i] = open(worker_log(root, i), "ab")
        procs[i] = subprocess.Popen(worker_command(argv, i), stdout=logs[i],
                                    stderr=subprocess.STDOUT)
        (root / "workers" / f"worker_{i}.pid").write_text(str(procs[i].pid))
        print(f"worker {i} started, pid {procs[i].pid} (log {worker_log(root, i)})", flush=True)

    for i in range(parallel):
        start(i)
    failed = False
    try:
        while procs:
            if stopping:
                for proc in procs.values():
                    proc.send_signal(signal.SIGTERM)
                for proc in procs.values():
                    proc.wait()
                return EXIT_PREEMPTED
            for i, proc in list(procs.items()):
                code = proc.poll()
                if code is None:
                    continue
                del procs[i]
                logs.pop(i).close()
                if code == 0:
                    print(f"worker {i} finished", flush=True)
                elif (code < 0 or code == EXIT_PREEMPTED) and restarts[i] < MAX_RESTARTS:
                    restarts[i] += 1
                    print(f"worker {i} ended with status {code}; restarting it "
                          f"({restarts[i]}/{MAX_RESTARTS})", flush=True)
                    start(i)
                else:
                    failed = True
                    print(f"worker {i} failed with status {code}; see {worker_log(root, i)}",
                          flush=True)
            time.sleep(0.2)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 1 if failed else 0


def submit_slurm(root: pathlib.Path, argv: Sequence[str], parallel: int,
                 options: SlurmOptions, wait: bool = False) -> list:
    """Submits the `parallel` workers as one SLURM job array (one worker per array task; a
    requeued task restarts its worker, which resumes its trial). With `wait`, blocks until the
    array ends and raises RuntimeError if a worker failed. Returns the submitit jobs."""
    if parallel < 1:
        raise ValueError(f"--parallel must be >= 1, got {parallel}")
    executor = slurm_executor(root, f"cnnjax-search-{root.name}", options, nodes=1,
                              tasks_per_node=1, slurm_additional_parameters={"requeue": True})
    commands = [worker_command(argv, i) for i in range(parallel)]
    logs = [str(worker_log(root, i)) for i in range(parallel)]
    try:
        jobs = executor.map_array(run_logged, commands, logs)
    except Exception as e:  # submitit raises its own types for sbatch failures
        raise RuntimeError(f"SLURM submission of {parallel} search workers failed: {e}") from e
    for i, job in enumerate(jobs):
        print(f"submitted worker {i} as SLURM job {job.job_id} (log {logs[i]})", flush=True)
    if wait:
        codes = []
        for job in jobs:
            try:
                codes.append(job.result())
            except Exception:  # cancelled, node failure
                codes.append(1)
        if any(codes):
            raise RuntimeError(f"search workers ended with statuses {codes}; logs in "
                               f"{root}/workers/")
    return jobs

