"""A search worker: pulls trials from the study and trains each in this process until the study
has its number of trials.

Worker i of k (a local process or a SLURM array task) first takes back the trials left RUNNING
by worker ids congruent to i mod k (a worker that was killed or preempted: same id after a
restart, a requeue or a relaunch), which resume from their own checkpoints; only then does it
ask Optuna for new ones. New trials are asked under a lock file in the search root, so the study
never gets more trials than asked, and a trial belongs to one worker at a time.
"""

from __future__ import annotations

import copy
import pathlib
from collections.abc import Mapping
from typing import Any

import ml_collections
import optuna
from optuna.storages.journal import JournalFileOpenLock
from optuna.trial import TrialState

from cnnjax.sweep import study as study_lib
from cnnjax.sweep.search_space import Search
from cnnjax.train.trainer import Preempted, StoppedAtEval, train

ASK_LOCK = ".ask.lock"
# A trial in these states counts towards num_trials.
_COUNTED = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def apply_params(config: ml_collections.ConfigDict, params: Mapping[str, Any]
                 ) -> ml_collections.ConfigDict:
    """A copy of `config` with dotted keys set; ValueError when a value does not fit its field."""
    config = copy.deepcopy(config)
    for key, value in params.items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        try:
            node[leaf] = value
        except TypeError as e:
            raise ValueError(f"search value {key}={value!r} does not fit the config field "
                             f"({e})") from e
    return config


def _own_running(study: optuna.Study, worker: int,
                 num_workers: int) -> list[optuna.trial.FrozenTrial]:
    trials = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return [t for t in trials if int(t.user_attrs.get("worker", 0)) % num_workers == worker]


def _ask(study: optuna.Study, root: pathlib.Path, search: Search,
         worker: int) -> optuna.Trial | None:
    lock = JournalFileOpenLock(str(root / ASK_LOCK))
    lock.acquire()
    try:
        trials = study.get_trials(deepcopy=False)
        if not trials:  # a fresh study: the declared first trials go first
            for params in search.first_trials:
                study.enqueue_trial(dict(params))
        if sum(t.state in _COUNTED for t in trials) >= search.num_trials:
            return None
        trial = study.ask(fixed_distributions=dict(search.space))
        trial.set_user_attr("worker", worker)
        return trial
    finally:
        lock.release()


def _tell(study: optuna.Study, number: int, **outcome: Any) -> None:
    """study.tell, letting pass the RuntimeError of the grid sampler, which calls study.stop()
    once its grid is used up, and Optuna refuses that outside study.optimize(); the trial's
    outcome is stored before (optuna/study/_tell.py stores it in a `finally`)."""
    try:
        study.tell(number, **outcome)
    except RuntimeError as e:
        if "Study.stop" not in str(e):
            raise


def _run_trial(study: optuna.Study, trial: optuna.Trial, config: ml_collections.ConfigDict,
               root: pathlib.Path, search: Search, worker: int) -> None:
    """Trains one trial and tells the study its outcome; Preempted propagates (trial stays
    RUNNING, to be resumed)."""
    workdir = study_lib.trial_workdir(root, trial.number)
    print(f"worker {worker}: trial {trial.number} {trial.params} in {workdir}", flush=True)

    def on_eval(step: int, metrics: dict[str, float]) -> bool:
        if search.objective not in metrics:
            raise ValueError(f"search objective {search.objective!r} is not an eval metric; "
                             f"the trainer logs {sorted(metrics)}")
        trial.report(metrics[search.objective], step)
        return trial.should_prune()

    try:
        result = train(apply_params(config, trial.params), workdir, on_eval=on_eval)
    except StoppedAtEval as e:
        _tell(study, trial.number, state=TrialState.PRUNED)
        print(f"worker {worker}: trial {trial.number} pruned at step {e.step}", flush=True)
    except (Preempted, KeyboardInterrupt):
        raise
    except Exception as e:  # a failed trial is recorded with its reason; the study goes on
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:500]
        trial.set_user_attr("fail_reason", reason)
        _tell(study, trial.number, state=TrialState.FAIL)
        print(f"worker {worker}: trial {trial.number} failed: {reason}", flush=True)
    else:
        value = result[search.objective]
        _tell(study, trial.number, values=value)
        print(f"worker {worker}: trial {trial.number} done, {search.objective} {value:.4f}",
              flush=True)


def run_worker(root: pathlib.Path, config: ml_collections.ConfigDict, search: Search,
               worker: int, num_workers: int, storage_url: str | None) -> None:
    """Runs trials until the study has `search.num_trials` of them and none of this worker's is
    left RUNNING. Raises Preempted after a SIGTERM checkpoint (the trial stays RUNNING)."""
    if not 0 <= worker < num_workers:
        raise ValueError(f"--search_worker must be in [0, {num_workers}), got {worker}")
    study = optuna.create_study(
        study_name=study_lib.STUDY_NAME, storage=study_lib.storage(root, storage_url),
        sampler=search.make_sampler(worker), pruner=search.make_pruner(),
        direction=search.direction, load_if_exists=True)
    while True:
        own = _own_running(study, worker, num_workers)
        if own:
            frozen = own[0]
            # Optuna's public API hands out Trial objects only from ask(); resuming one needs
            # its storage id.
            trial = optuna.Trial(study, frozen._trial_id)
            trial.set_user_attr("worker", worker)
            print(f"worker {worker}: resuming trial {frozen.number}", flush=True)
            if frozen.intermediate_values and trial.should_prune():
                # Pruned at its last evaluation, before the worker could record it.
                _tell(study, frozen.number, state=TrialState.PRUNED)
                continue
        else:
            trial = _ask(study, root, search, worker)
            if trial is None:
                print(f"worker {worker}: the study has its {search.num_trials} trials; done",
                      flush=True)
                return
        _run_trial(study, trial, config, root, search, worker)
