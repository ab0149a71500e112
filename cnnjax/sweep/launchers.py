"""Runs the points of a sweep, each as `launch.py --workdir=ROOT/<name> --config.KEY=VALUE ...`.

`run_local(..., parallel=k)` gives each of its k workers its own share of the cores this process
may use (pinned with `os.sched_setaffinity`), so k points neither oversubscribe the cores with k
full-size thread pools nor leave cores idle: XLA's thread pool, oneDNN's OpenMP team and grain's
workers each size themselves from the share (`cnnjax.cores.usable_cores`).

A point is finished when its workdir holds `sweep_status.json` with status "done", written only
after `launch.py` exited 0; a relaunch skips finished points and reruns the others, which resume
from their own checkpoints (`launch.py` restores the latest one in its workdir).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Sequence

from cnnjax.sweep.grid import Point
from cnnjax.train.metrics import read_jsonl

STATUS_FILE = "sweep_status.json"
POINT_FILE = "sweep_point.json"
LAUNCH_PY = pathlib.Path(__file__).resolve().parents[2] / "launch.py"


def run_status(workdir: pathlib.Path) -> str:
    """"done", "failed (exit N)" (from the sweep's status file) or "unfinished" (no status yet:
    running, interrupted, or launched outside a sweep)."""
    path = workdir / STATUS_FILE
    if not path.is_file():
        return "unfinished"
    status = json.loads(path.read_text())
    if status.get("status") == "done":
        return "done"
    return f"failed (exit {status.get('returncode')})"


def is_finished(workdir: pathlib.Path) -> bool:
    """True when the run in `workdir` completed successfully under a sweep."""
    return run_status(workdir) == "done"


def write_json(path: pathlib.Path, payload: dict) -> None:
    # Write-then-rename: a reader never sees a half-written status.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def point_command(config_spec: str, root: pathlib.Path, point: Point,
                  extra_flags: Sequence[str]) -> list[str]:
    """The full command line running one point."""
    return [sys.executable, str(LAUNCH_PY), f"--config={config_spec}",
            f"--workdir={root / point.name}", *extra_flags, *point.flags()]


def prepare_point(root: pathlib.Path, point: Point) -> pathlib.Path:
    """Creates the point's workdir and records its overrides (read back by the summary)."""
    workdir = root / point.name
    workdir.mkdir(parents=True, exist_ok=True)
    write_json(workdir / POINT_FILE, {"name": point.name, "overrides": point.overrides})
    return workdir


def core_shares(parallel: int, cores: Sequence[int] | None = None) -> list[list[int]]:
    """`parallel` shares of `cores` (default: this process's CPU affinity), as equal as they can
    be and disjoint where there are at least as many cores as shares (else one core each, in
    turn)."""
    cores = sorted(os.sched_getaffinity(0) if cores is None else cores)
    if parallel >= len(cores):
        return [[cores[i % len(cores)]] for i in range(parallel)]
    bounds = [len(cores) * i // parallel for i in range(parallel + 1)]
    return [cores[lo:hi] for lo, hi in zip(bounds, bounds[1:])]


def run_point(command: Sequence[str], workdir: str, cpus: Sequence[int] | None = None) -> int:
    """Runs one point to completion and marks it done on success. Also the SLURM job body.

    `cpus`: pin the point to these cores (a local sweep worker's share; SLURM_CPUS_PER_TASK, if
    set, then says the share's size too). In a multi-task SLURM job every task runs this; only
    task 0 writes the status.
    """
    path = pathlib.Path(workdir)
    env, pin = None, None
    if cpus:
        pin = lambda: os.sched_setaffinity(0, cpus)  # in the point's process, before it starts
        if "SLURM_CPUS_PER_TASK" in os.environ:
            env = {**os.environ, "SLURM_CPUS_PER_TASK": str(len(set(cpus)))}
    with open(path / f"launch.{os.environ.get('SLURM_PROCID', '0')}.log", "ab") as log:
        returncode = subprocess.call(list(command), stdout=log, stderr=subprocess.STDOUT, env=env,
                                     preexec_fn=pin)
    if os.environ.get("SLURM_PROCID", "0") == "0":
        write_json(path / STATUS_FILE, {"status": "done" if returncode == 0 else "failed",
                                          "returncode": returncode, "time": time.time()})
    return returncode


def point_result(workdir: pathlib.Path) -> str:
    """A point's outcome in a few words: its status, last eval accuracy and step, or the last
    line of its log when it failed."""
    status = run_status(workdir)
    evals = [r for r in read_jsonl(workdir / "metrics.jsonl")
             if r.get("split") == "eval" and "accuracy" in r]
    result = status
    if evals:
        result += f", test accuracy {evals[-1]['accuracy']:.4f} at step {evals[-1]['step']}"
    if status.startswith("failed"):
        logs = sorted(workdir.glob("launch.*.log"))
        lines = logs[0].read_text(errors="replace").strip().splitlines() if logs else []
        result += f": {lines[-1][:200] if lines else 'no log'} (log {logs[0] if logs else '-'})"
    return result


def unfinished(root: pathlib.Path, points: Sequence[Point]) -> list[Point]:
    """The points not done yet; prints the names of those skipped as done."""
    done = [p.name for p in points if is_finished(root / p.name)]
    if done:
        print(f"skipping {len(done)} points already done: {', '.join(done)}", flush=True)
    return [p for p in points if p.name not in done]


def run_local(config_spec: str, root: pathlib.Path, points: Sequence[Point],
              extra_flags: Sequence[str] = (), parallel: int = 1) -> dict[str, int]:
    """Runs the unfinished points as local processes, `parallel` at a time; returns exit codes.

    Prints which points are skipped as done, and each point's start and end with its result."""
    if parallel < 1:
        raise ValueError(f"--parallel must be >= 1, got {parallel}")
    todo = unfinished(root, points)
    running: dict[str, tuple[subprocess.Popen, float, int]] = {}
    codes: dict[str, int] = {}
    helper = [sys.executable, "-c",
              "import sys, json; from cnnjax.sweep.launchers import run_point; "
              "sys.exit(run_point(json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])))"]
    # One share of the cores per worker slot; parallel=1 leaves the point all of them.
    shares = core_shares(parallel) if parallel > 1 else [[]]
    total = len(todo)
    while todo or running:
        while todo and len(running) < parallel:
            point = todo.pop(0)
            workdir = prepare_point(root, point)
            command = point_command(config_spec, root, point, extra_flags)
            slot = min(set(range(len(shares))) - {s for *_, s in running.values()})
            print(f"[{total - len(todo)}/{total}] start {point.name} (log {workdir}/launch.0.log"
                  f"{f', cores {shares[slot]}' if shares[slot] else ''})", flush=True)
            running[point.name] = (subprocess.Popen(helper + [json.dumps(command), str(workdir),
                                                              json.dumps(shares[slot])]),
                                   time.time(), slot)
        for name, (proc, start, _) in list(running.items()):
            if proc.poll() is not None:
                codes[name] = proc.returncode
                del running[name]
                print(f"[{len(codes)}/{total} ended] {name}: {point_result(root / name)} "
                      f"({time.time() - start:.0f} s)", flush=True)
        time.sleep(0.2)
    return codes


@dataclasses.dataclass
class SlurmOptions:
    """Resources of each job of the array (one job per sweep point)."""

    partition: str | None = None
    account: str | None = None
    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    time_minutes: int = 60
    max_parallel: int = 0  # 0: no limit on simultaneously running array tasks


def slurm_executor(root: pathlib.Path, name: str, options: SlurmOptions, **params):
    """A submitit SLURM executor logging under ROOT/.submitit, with `options`' cpus, time, GPUs,
    partition and account, and the job-specific `params` (nodes, tasks_per_node, ...)."""
    import submitit  # Only SLURM sweeps and searches need it.

    executor = submitit.AutoExecutor(folder=str(root / ".submitit" / "%j"), cluster="slurm")
    params.update(cpus_per_task=options.cpus_per_task, timeout_min=options.time_minutes,
                  name=name)
    if options.gpus_per_node:
        params["gpus_per_node"] = options.gpus_per_node
    if options.partition:
        params["slurm_partition"] = options.partition
    if options.account:
        params["slurm_account"] = options.account
    executor.update_parameters(**params)
    return executor


def submit_slurm(config_spec: str, root: pathlib.Path, points: Sequence[Point],
                 extra_flags: Sequence[str], options: SlurmOptions, wait: bool = False) -> list:
    """Submits the unfinished points as one SLURM job array through submitit.

    Each job runs `tasks_per_node * nodes` tasks (one per GPU); every task starts `launch.py`,
    whose `jax.distributed.initialize()` reads the cluster from SLURM's environment.
    Returns the submitit jobs; with `wait`, blocks until they end and raises if any failed.
    """
    todo = unfinished(root, points)
    if not todo:
        return []
    params = {"slurm_array_parallelism": options.max_parallel} if options.max_parallel else {}
    executor = slurm_executor(root, f"cnnjax-sweep-{root.name}", options, nodes=options.nodes,
                              tasks_per_node=options.tasks_per_node, **params)
    commands = [point_command(config_spec, root, p, extra_flags) for p in todo]
    workdirs = [str(prepare_point(root, p)) for p in todo]
    try:
        jobs = executor.map_array(run_point, commands, workdirs)
    except Exception as e:  # submitit raises its own types for sbatch failures
        raise RuntimeError(f"SLURM submission of {len(todo)} sweep points failed: {e}") from e
    for point, job in zip(todo, jobs):
        print(f"submitted {point.name} as SLURM job {job.job_id}", flush=True)
    if wait:
        failed = [(p.name, j.job_id) for p, j in zip(todo, jobs) if _job_code(j) != 0]
        if failed:
            raise RuntimeError(f"sweep points failed: {failed}; logs in {root}/<name>/launch.*.log")
    return jobs


def _job_code(job) -> int:
    try:
        codes = job.results()
    except Exception:  # the job itself failed (cancelled, node failure): not a finished point
        return 1
    return max(int(c) for c in codes)
