"""Launches an experiment: `python launch.py --config=configs/NAME.py[:ARG] --workdir=DIR`.

    python launch.py --config=configs/default.py --workdir=runs/default
    python launch.py --config=configs/default.py --workdir=runs/lr --config.optimizer.learning_rate=0.1
    python launch.py --config=configs/default.py --workdir=runs/default --mode=eval
    python launch.py --config=configs/default.py --sweep --workdir=sweeps/default [--launcher=slurm]

A run resumes automatically from the latest checkpoint in its workdir. SIGTERM saves a checkpoint
at the next step boundary and exits with status 143 (resumable); a finished run exits 0.
"""

from __future__ import annotations

import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:arg].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (or sweep root with --sweep).")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"], "Train (resuming) or evaluate.")
_SWEEP = flags.DEFINE_bool("sweep", False, "Run every point of the config's get_sweep().")
_LAUNCHER = flags.DEFINE_enum("launcher", "local", ["local", "slurm"], "Where sweep points run.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Local sweep: points run at once.")
_WAIT = flags.DEFINE_bool("wait", False, "SLURM sweep: block until every job has ended.")
_PARTITION = flags.DEFINE_string("slurm_partition", None, "SLURM partition.")
_ACCOUNT = flags.DEFINE_string("slurm_account", None, "SLURM account.")
_NODES = flags.DEFINE_integer("slurm_nodes", 1, "Nodes per sweep point.")
_TASKS = flags.DEFINE_integer("slurm_tasks_per_node", 1, "Processes per node (one per GPU).")
_GPUS = flags.DEFINE_integer("slurm_gpus_per_node", 0, "GPUs per node.")
_CPUS = flags.DEFINE_integer("slurm_cpus_per_task", 1, "CPUs per task.")
_TIME = flags.DEFINE_integer("slurm_time_minutes", 60, "Time limit of each job.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", "", "host:port of process 0, for a "
                                   "multi-process run outside SLURM.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Processes of a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "This process's index in a multi-process run.")

flags.mark_flags_as_required(["config", "workdir"])


def _config_spec() -> str:
    """The --config value as given (path[:arg]), to hand on to the sweep's runs."""
    for arg in sys.argv[1:]:
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    raise app.UsageError("--config=PATH[:ARG] must be given with '='")


def _run_sweep() -> int:
    from cnnjax.sweep.config_file import load_sweep
    from cnnjax.sweep.grid import resolve_points
    from cnnjax.sweep.launchers import SlurmOptions, run_local, submit_slurm

    spec = _config_spec()
    points = resolve_points(_CONFIG.value, load_sweep(spec))
    root = pathlib.Path(_WORKDIR.value)
    root.mkdir(parents=True, exist_ok=True)
    # Overrides given on this command line apply to every point.
    extra = [a for a in sys.argv[1:] if a.startswith("--config.")]
    print(f"sweep of {len(points)} points under {root}: " + ", ".join(p.name for p in points))
    if _LAUNCHER.value == "local":
        codes = run_local(spec, root, points, extra, parallel=_PARALLEL.value)
        failed = {k: v for k, v in codes.items() if v != 0}
        if failed:
            print(f"failed points (exit codes): {failed}; logs in {root}/<name>/launch.0.log")
        return 1 if failed else 0
    options = SlurmOptions(partition=_PARTITION.value, account=_ACCOUNT.value, nodes=_NODES.value,
                           tasks_per_node=_TASKS.value, gpus_per_node=_GPUS.value,
                           cpus_per_task=_CPUS.value, time_minutes=_TIME.value)
    submit_slurm(spec, root, points, extra, options, wait=_WAIT.value)
    return 0


def main(argv: list[str]) -> int:
    # Orbax logs every checkpoint operation at INFO; the progress lines are what a person reads.
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _SWEEP.value:
        return _run_sweep()
    from cnnjax.train import distributed

    distributed.maybe_initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    from cnnjax.train.trainer import EXIT_PREEMPTED, Preempted, evaluate_workdir, train

    try:
        if _MODE.value == "eval":
            evaluate_workdir(_CONFIG.value, _WORKDIR.value)
        else:
            train(_CONFIG.value, _WORKDIR.value)
    except Preempted as e:
        print(e, flush=True)
        return EXIT_PREEMPTED
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
