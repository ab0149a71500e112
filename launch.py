"""Launches an experiment: `python launch.py --config=configs/NAME.py[:ARG] --workdir=DIR`.

    python launch.py --config=configs/default.py --workdir=runs/default
    python launch.py --config=configs/default.py --workdir=runs/lr --config.optimizer.learning_rate=0.1
    python launch.py --workdir=runs/default --mode=eval   # the run's own config.json
    python launch.py --config=configs/default.py --sweep --workdir=sweeps/default [--launcher=slurm]
    python launch.py --config=configs/default.py --search --workdir=searches/default --parallel=2

A run resumes automatically from the newest checkpoint in its workdir that reads. SIGTERM saves a
checkpoint at the next step boundary and exits with status 143 (resumable), Ctrl-C (SIGINT) the
same with status 130 (a second Ctrl-C stops at once); a finished run exits 0. --mode=eval without
--config evaluates under the run's own WORKDIR/config.json, with any --config.KEY=VALUE on top. A
relaunch with another num_epochs / num_train_steps is refused unless --extend is given.
Errors are one line on stderr and a non-zero status (2: bad config or input, 3: non-finite loss,
1: anything else); --debug shows the traceback instead.
"""

from __future__ import annotations

import pathlib
import re
import sys
from typing import NoReturn

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:arg].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (or sweep root with --sweep).")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"], "Train (resuming) or evaluate.")
_SWEEP = flags.DEFINE_bool("sweep", False, "Run every point of the config's get_sweep().")
_SEARCH = flags.DEFINE_bool("search", False, "Run the config's get_search() as an Optuna study.")
_STORAGE = flags.DEFINE_string("storage", None, "Search: a database URL for the study (default: "
                               "Optuna's journal file WORKDIR/study.journal).")
_SEARCH_WORKER = flags.DEFINE_integer("search_worker", -1, "Set by the search launcher: run as "
                                      "its worker N.")
_LAUNCHER = flags.DEFINE_enum("launcher", "local", ["local", "slurm"],
                              "Where sweep points or search workers run.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Local sweep: points run at once; search: the "
                                 "number of workers (local processes or SLURM array tasks).")
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

_EXTEND = flags.DEFINE_bool("extend", False, "Continue a run under a new num_epochs / "
                            "num_train_steps, recomputing its learning-rate schedule.")
_DEBUG = flags.DEFINE_bool("debug", False, "Show the traceback of an error.")

flags.mark_flags_as_required(["config", "workdir"])


def _one_line(error: BaseException) -> str:
    """The error's message on one line (whitespace collapsed)."""
    return " ".join(str(error).split()) or type(error).__name__


def _root_cause(error: BaseException) -> BaseException:
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    return error


_NOT_FOUND = ("config file {path!r} not found (expected --config=PATH.py[:ARG], e.g. "
              "--config=configs/default.py:smoke)")


def _fail(message: str, status: int) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def _arg(argv: list[str], name: str) -> str | None:
    """The value of --NAME=VALUE (or --NAME VALUE) in argv, read before a flag parse."""
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _config_path(argv: list[str]) -> str:
    """The file of --config=PATH[:ARG] (or --config PATH[:ARG]) in argv, read before or without
    a successful flag parse."""
    return (_arg(argv, "config") or "").split(":")[0]


def _with_run_config(argv: list[str]) -> list[str]:
    """argv, with --config naming the workdir's own config.json when --mode=eval has none.

    ml_collections reads the --config.KEY overrides from sys.argv itself, so it is changed too."""
    if _arg(argv, "mode") != "eval" or _arg(argv, "config") is not None:
        return argv
    workdir = _arg(argv, "workdir")
    if workdir is None:
        return argv  # absl's required-flag error names --workdir
    from cnnjax.train import run_config

    if not run_config.config_path(workdir).is_file():
        _fail(f"--mode=eval without --config reads the run's {str(run_config.config_path(workdir))!r}, "
              f"which does not exist; give the run's --workdir or --config=PATH.py", 2)
    argv = [argv[0], f"--config={run_config.flag_value(workdir)}", *argv[1:]]
    sys.argv[:] = argv
    return argv


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a config override naming a missing key reported in one line."""
    argv = _with_run_config(argv)
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        # A config file whose get_config raised: absl's message embeds the whole traceback.
        head, _, tail = str(e).partition("Traceback (most recent call last):")
        last = tail.strip().splitlines()[-1] if tail.strip() else ""
        _fail(f"{_one_line(head)} {last}".strip(), 2)
    except Exception as e:  # ml_collections applying --config.KEY=VALUE overrides
        if "--debug" in argv:
            raise
        path = _config_path(argv)
        if not pathlib.Path(path).is_file():
            _fail(_NOT_FOUND.format(path=path), 2)
        cause = _root_cause(e)
        if isinstance(cause, SyntaxError) or not any(a.startswith("--config.") for a in argv):
            # The config file itself failed to load (it runs at parse time), not an override.
            _fail(f"cannot load --config={path}: {type(cause).__name__}: {_one_line(cause)}", 2)
        if not (isinstance(cause, KeyError) and cause.args):
            _fail(f"bad --config override: {type(e).__name__}: {_one_line(e)}", 2)
        key = str(cause.args[0])
        bad = [a.split("=", 1)[0] for a in argv
               if a.startswith("--config.") and key in a.split("=", 1)[0].split(".")]
        hint = re.search(r'Did you mean "([^"]+)"', str(e))
        _fail(f"{bad[0] if bad else '--config.' + key}: the config has no key {key!r}"
              + (f"; did you mean {hint.group(1)!r}?" if hint else ""), 2)


def _config_spec() -> str:
    """The --config value as given (path[:arg]), to hand on to the sweep's runs."""
    for arg in sys.argv[1:]:
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    raise app.UsageError("--config=PATH[:ARG] must be given with '='")


def _load_config():
    """The --config file's config, or a one-line error naming the file and why it failed."""
    path = _config_path(sys.argv)
    if not pathlib.Path(path).is_file() and not _DEBUG.value:
        _fail(_NOT_FOUND.format(path=path), 2)
    config = _CONFIG.value
    try:
        config.keys()  # a file that failed to load stands behind an object raising on first use
    except Exception as e:
        if _DEBUG.value:
            raise
        cause = _root_cause(e)
        _fail(f"cannot load --config={path}: {type(cause).__name__}: {_one_line(cause)}", 2)
    return config


def _slurm_options():
    from cnnjax.sweep.launchers import SlurmOptions

    return SlurmOptions(partition=_PARTITION.value, account=_ACCOUNT.value, nodes=_NODES.value,
                        tasks_per_node=_TASKS.value, gpus_per_node=_GPUS.value,
                        cpus_per_task=_CPUS.value, time_minutes=_TIME.value)


def _run_search(config) -> int:
    from cnnjax.sweep import search_launch, study
    from cnnjax.sweep.config_file import load_search
    from cnnjax.sweep.search_worker import run_worker

    spec = _config_spec()
    search = load_search(spec)
    search.validate(config)
    root = pathlib.Path(_WORKDIR.value)
    if _SEARCH_WORKER.value >= 0:
        run_worker(root, config, search, _SEARCH_WORKER.value, _PARALLEL.value, _STORAGE.value)
        return 0
    study.record(root, spec, [a for a in sys.argv[1:] if a.startswith("--config.")], _STORAGE.value)
    print(f"search of {search.num_trials} trials ({search.sampler} sampler, {search.pruner} "
          f"pruner, {search.direction} {search.objective}) under {root}", flush=True)
    if _LAUNCHER.value == "slurm":
        search_launch.submit_slurm(root, sys.argv[1:], _PARALLEL.value, _slurm_options(),
                                   wait=_WAIT.value)
        return 0
    code = search_launch.run_local(root, sys.argv[1:], _PARALLEL.value)
    if code == 0:
        from cnnjax.sweep.search_summary import summarize_search

        print(summarize_search(root), flush=True)
    return code


def _run_sweep(config) -> int:
    from cnnjax.sweep import root_record
    from cnnjax.sweep.config_file import load_sweep
    from cnnjax.sweep.grid import resolve_points
    from cnnjax.sweep.launchers import run_local, submit_slurm
    from cnnjax.sweep.summary import collect, write_tables

    spec = _config_spec()
    points = resolve_points(config, load_sweep(spec))
    root = pathlib.Path(_WORKDIR.value)
    # Overrides given on this command line apply to every point.
    extra = [a for a in sys.argv[1:] if a.startswith("--config.")]
    root_record.check_or_write(root, root_record.SWEEP_FILE, {"config": spec, "overrides": extra})
    print(f"sweep of {len(points)} points under {root}: " + ", ".join(p.name for p in points))
    if _LAUNCHER.value == "local":
        codes = run_local(spec, root, points, extra, parallel=_PARALLEL.value)
        rows = collect(root)
        if rows:
            write_tables(rows, root)
            print(f"sweep table ({root / 'summary.md'}):\n" + (root / "summary.md").read_text(),
                  end="", flush=True)
        failed = {k: v for k, v in codes.items() if v != 0}
        if failed:
            print(f"failed points (exit codes): {failed}; logs in {root}/<name>/launch.0.log")
        return 1 if failed else 0
    submit_slurm(spec, root, points, extra, _slurm_options(), wait=_WAIT.value)
    return 0


def _run(config) -> int:
    if (_SEARCH.value or _SWEEP.value) and _PARALLEL.value < 1:
        raise ValueError(f"--parallel must be >= 1, got {_PARALLEL.value}")
    if _SEARCH.value:
        return _run_search(config)
    if _SWEEP.value:
        return _run_sweep(config)
    from cnnjax.train import distributed

    distributed.maybe_initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    from cnnjax.train.trainer import evaluate_workdir, train

    if _MODE.value == "eval":
        evaluate_workdir(config, _WORKDIR.value)
    else:
        train(config, _WORKDIR.value, extend=_EXTEND.value)
    return 0


def main(argv: list[str]) -> int:
    # Orbax logs every checkpoint operation at INFO; the progress lines are what a person reads.
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _load_config()
    from cnnjax.train.trainer import EXIT_INTERRUPTED, Preempted

    try:
        return _run(config)
    except Preempted as e:
        print(e, flush=True)
        return e.status
    except KeyboardInterrupt:
        # Ctrl-C outside the training steps (set-up, compilation, evaluation), or a second one.
        print("interrupted (Ctrl-C): stopped at once; nothing was saved after the last checkpoint",
              file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except Exception as e:
        if _DEBUG.value:
            raise
        from cnnjax.data.tfds_store import MissingDataset

        bad_input = isinstance(e, (ValueError, MissingDataset))  # a dataset not prepared too
        status = 2 if bad_input else 3 if isinstance(e, FloatingPointError) else 1
        # A missing dataset or an unwritable workdir is the user's to fix; anything else may be a
        # bug, whose traceback --debug shows.
        known = isinstance(e, (ValueError, FloatingPointError, OSError))
        message = _one_line(e) if known else f"{type(e).__name__}: {_one_line(e)}"
        workdir = str(pathlib.Path(_WORKDIR.value).absolute())
        if isinstance(e, OSError) and e.filename and str(
                pathlib.Path(e.filename).absolute()).startswith(workdir):
            message = (f"cannot write to workdir {_WORKDIR.value!r} ({e.strerror}: {e.filename}); "
                       f"choose a writable --workdir")
        print(f"error: {message}" + ("" if known else " (rerun with --debug for the traceback)"),
              file=sys.stderr, flush=True)
        return status


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)), flags_parser=_parse_flags)
