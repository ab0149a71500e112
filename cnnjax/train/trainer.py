"""The training loop: data -> jit-compiled sharded steps -> metrics, evals and checkpoints.

Exact resume: the state at a checkpoint plus the config determine everything after it (data
order and dropout keys are functions of (seed, step)), so a run killed at any moment and
relaunched ends with the same parameters and the same eval lines as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import signal
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnnjax import data, kernels, models
from cnnjax.data import device_pipeline
from cnnjax.data.augment import get_host_augment
from cnnjax.train import lookahead
from cnnjax.train.checkpoint import Checkpointer
from cnnjax.train.data_init import whitening_init
from cnnjax.train.distributed import PreemptionNotice
from cnnjax.train.metrics import MetricsWriter, Progress, TrainTimer
from cnnjax.train.optim import make_optimizer, make_schedule
from cnnjax.train.sharding import (check_batch, global_batch, make_mesh,
                                  prefetch_to_device, shardings)
from cnnjax.train.state import TrainState, init_state
from cnnjax.train.step import compile_steps

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Exit status after a clean save on a signal (128 + its number: SIGTERM 143, Ctrl-C's SIGINT
# 130): the run is resumable, not finished.
EXIT_PREEMPTED = 143
EXIT_INTERRUPTED = 130
# Keys of a run's config that may change between launches of the same workdir.
_RESUMABLE_CHANGES = ("num_epochs", "num_train_steps", "log_every_steps", "eval_every_steps",
                      "checkpoint_every_steps", "keep_checkpoints")


def params_fingerprint(params: Any) -> str:
    """A short SHA-256 of the parameters' bytes: equal only for bit-identical parameters."""
    digest = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(jax.device_get(params)):
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()[:16]


class Preempted(Exception):
    """Raised after a checkpoint saved on SIGTERM or Ctrl-C; the run can be relaunched.
    `status` is the process's exit status: 128 + the signal's number."""

    def __init__(self, message: str, status: int = EXIT_PREEMPTED):
        super().__init__(message)
        self.status = status


class StoppedAtEval(Exception):
    """Raised when `train`'s `on_eval` asked to stop (e.g. a pruned search trial), after the
    checkpoint of that evaluation's step was saved. `step` is that step."""

    def __init__(self, step: int):
        super().__init__(f"stopped at the evaluation of step {step}; checkpoint kept")
        self.step = step


def model_overrides(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Keyword overrides for models.create: config.model minus its name and kernels, plus dtype
    and remat."""
    if config.dtype == "float16":
        # float16 gradients underflow without loss scaling, which cnnjax does not implement.
        raise ValueError("dtype 'float16' needs loss scaling, which cnnjax does not implement; use "
                         "--config.dtype=bfloat16 (same memory, float32's exponent range)")
    if config.dtype not in DTYPES:
        raise ValueError(f"unknown dtype {config.dtype!r}; expected one of {sorted(DTYPES)}")
    overrides = {k: v for k, v in config.model.items() if k not in ("name", "kernels")}
    overrides = {k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items()}
    if config.dtype != "float32":
        overrides["dtype"] = DTYPES[config.dtype]
    if config.get("remat", False):
        overrides["remat"] = True
    return overrides


def total_steps(config: ml_collections.ConfigDict | dict, steps_per_epoch: int) -> int:
    """The run's length in steps: num_train_steps if > 0, else num_epochs * steps_per_epoch."""
    if config["num_train_steps"] > 0:
        return int(config["num_train_steps"])
    return int(round(config["num_epochs"] * steps_per_epoch))


def _check_model_keys(name: str, num_classes: int, overrides: dict[str, Any]) -> None:
    """ValueError naming the config.model keys that model `name` has no field for (e.g. a
    config written for another model with --config.model.name changed)."""
    fields = {f.name for f in dataclasses.fields(models.create(name, num_classes=num_classes))}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        taken = sorted(fields - {"parent", "name", "num_classes"})
        raise ValueError(f"model {name!r} does not take the config's model keys {unknown} (it "
                         f"takes {taken}); use a config written for {name!r}")


def build_model_and_optimizer(config: ml_collections.ConfigDict, num_classes: int,
                              steps_per_epoch: int):
    """(model, schedule, tx, total_steps) of a config; raises ValueError on bad names."""
    choice = config.model.get("kernels", "auto")
    if choice not in kernels.CHOICES:
        raise ValueError(f"unknown model.kernels {choice!r}; expected one of {kernels.CHOICES}")
    overrides = model_overrides(config)
    _check_model_keys(config.model.name, num_classes, overrides)
    model = models.create(config.model.name, num_classes=num_classes, **overrides)
    # The layers read the kernels switch when the steps are traced, inside model.init/apply.
    model = kernels.KernelScoped(model, choice)
    total = total_steps(config, steps_per_epoch)
    schedule = make_schedule(config, steps_per_epoch, total)
    return model, schedule, make_optimizer(config, schedule, steps_per_epoch, total), total


def build(config: ml_collections.ConfigDict, process_index: int = 0, process_count: int = 1):
    """Datasets, model, schedule and optimiser of a config; raises ValueError on bad names.

    Returns (train_ds, eval_ds, model, schedule, tx, total_steps).
    """
    ds = config.dataset
    common = dict(batch_size=config.batch_size, seed=config.seed, data_dir=ds.get("data_dir") or None,
                  process_index=process_index, process_count=process_count,
                  **dict(ds.get("options", {})))
    augment = ds.get("augment", "none")
    if ds.get("augment_on", "host") not in ("host", "device"):
        raise ValueError(f"dataset.augment_on must be 'host' or 'device', got {ds.augment_on!r}")
    # Device-side augmentation runs in the train step (cnnjax.data.device_pipeline).
    on_host = augment != "none" and ds.get("augment_on", "host") == "host"
    train_ds = data.create(ds.name, ds.get("train_split", "train"), train=True,
                           **({"augment": get_host_augment(augment, pad=ds.get("augment_pad", 4))}
                              if on_host else {}), **common)
    eval_ds = data.create(ds.name, ds.get("eval_split", "test"), train=False, **common)
    # The device part of the pipeline: an unknown name or a bad field fails here, before
    # anything is written.
    pipeline = device_pipeline.from_config(ds, train_ds.num_classes)
    pipeline.output_shape(train_ds.image_shape)
    if train_ds.label_shape and (augment != "none" or pipeline.pad_to or pipeline.mix != "none"
                                 or pipeline.flip_tta):
        # Crops, flips, padding and mixing move the pixels but not their per-pixel labels.
        raise ValueError(f"dataset {ds.name!r} has per-pixel labels {train_ds.label_shape}: "
                         f"dataset.augment, pad_to, mix and flip_tta must be off, got augment="
                         f"{augment!r}, pad_to={pipeline.pad_to}, mix={pipeline.mix!r}, "
                         f"flip_tta={pipeline.flip_tta}")
    model, schedule, tx, total = build_model_and_optimizer(config, train_ds.num_classes,
                                                           train_ds.steps_per_epoch)
    return train_ds, eval_ds, model, schedule, tx, total


def initial_state(config: ml_collections.ConfigDict, model, tx, image_shape: tuple[int, ...],
                  input_dtype, num_classes: int) -> TrainState:
    """The randomly initialised train state for host images of `image_shape`/`input_dtype` (the
    model sees them after the device pipeline), with the Lookahead's statistics average started:
    the tree every checkpoint of the run has, so the restore target of training, evaluation and
    analysis alike."""
    pipeline = device_pipeline.from_config(config.dataset, num_classes)
    state = init_state(model, tx, pipeline.output_shape(image_shape), config.seed,
                       use_ema=bool(config.optimizer.get("ema_decay", 0.0)),
                       input_dtype=pipeline.output_dtype(input_dtype))
    return state.replace(opt_state=lookahead.attach_batch_stats(state.opt_state, state.batch_stats))


def _data_init(state: TrainState, config: ml_collections.ConfigDict, train_ds, tx) -> TrainState:
    """A fresh run's step-0 state: `state` with the data-dependent initialisation (whitening),
    which restarts the optimiser state from the new parameters, so the average starts again."""
    if not config.get("whitening_init"):
        return state
    state = whitening_init(state, config, train_ds, tx)
    return state.replace(opt_state=lookahead.attach_batch_stats(state.opt_state, state.batch_stats))


def _without_data_dir(config: dict) -> dict:
    """A config.json dict minus dataset.data_dir: the same data moved elsewhere is the same run."""
    dataset = {k: v for k, v in config.get("dataset", {}).items() if k != "data_dir"}
    return {**config, "dataset": dataset}


def _check_workdir(workdir: pathlib.Path, config: ml_collections.ConfigDict,
                   steps_per_epoch: int, extend: bool = False, write: bool = True) -> None:
    """Refuses a workdir holding another run, or a run of another length unless `extend`; keeps
    the previous config.json if it changed. With `write` False (evaluation) only checks."""
    path = workdir / "config.json"
    new = json.loads(config.to_json_best_effort())
    if path.is_file():
        old = json.loads(path.read_text())
        for key in ("model", "dataset"):
            if old.get(key, {}).get("name") != new[key]["name"]:
                raise ValueError(
                    f"workdir {str(workdir)!r} holds a run of {key} {old.get(key, {}).get('name')!r}, "
                    f"not {new[key]['name']!r}; choose another --workdir (nothing was changed)")
        same_run = [_without_data_dir(c) for c in (old, new)]
        changed = sorted(k for k in set(old) | set(new) if k not in _RESUMABLE_CHANGES
                         and same_run[0].get(k) != same_run[1].get(k))
        if changed:
            use = "resuming it with" if write else "evaluating it under"
            raise ValueError(f"workdir {str(workdir)!r} holds a run with different {changed}; "
                             f"{use} another config would mix two runs. Use another "
                             f"--workdir or the run's config (nothing was changed)")
        old_total, new_total = total_steps(old, steps_per_epoch), total_steps(new, steps_per_epoch)
        if write and old_total != new_total:
            # The learning-rate schedule is a function of the run's length: continuing under
            # another length jumps to another curve at the resumed step.
            if not extend:
                raise ValueError(
                    f"workdir {str(workdir)!r} holds a run of {old_total} steps; this config asks "
                    f"for {new_total}, which recomputes the learning-rate schedule from the "
                    f"resumed step on. Use another --workdir, or pass --extend to continue under "
                    f"the new schedule (nothing was changed)")
            print(f"--extend: run length {old_total} -> {new_total} steps; the learning-rate "
                  f"schedule is recomputed for {new_total} steps from the resumed step on "
                  f"(previous config kept as config.<time>.json)", flush=True)
        if write and old != new:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            path.rename(workdir / f"config.{stamp}.json")
    if write:
        workdir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(new, indent=2, sort_keys=True))


def _evaluate(eval_fn, state, eval_ds, data_sharding) -> dict[str, float]:
    # The sums stay on the device and are fetched once, so batches are not serialised by
    # device-to-host copies; float32 sums of per-batch sums count exactly up to 2**24 examples.
    device_sums = None
    for batch in eval_ds.batches():
        out = eval_fn(state, global_batch(batch, data_sharding))
        device_sums = out if device_sums is None else jax.tree_util.tree_map(
            jnp.add, device_sums, out)
    sums = {k: float(v) for k, v in jax.device_get(device_sums).items()}
    count = sums.pop("count")
    if int(count) != eval_ds.num_examples:
        raise RuntimeError(f"eval saw {count} examples, the split has {eval_ds.num_examples}")
    result = {"loss": sums["loss"] / count, "accuracy": sums["correct"] / count}
    if "correct_plain" in sums:  # test-time augmentation: the first view alone
        result["plain_accuracy"] = sums["correct_plain"] / count
    if "correct5" in sums:
        result["top5_accuracy"] = sums["correct5"] / count
    return result


def train(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
          extend: bool = False,
          on_eval: Callable[[int, dict[str, float]], bool] | None = None) -> dict[str, float]:
    """Trains (or resumes) the run in `workdir`; returns the final eval metrics.

    `on_eval(step, eval_metrics)` is called after every evaluation (every process gets the
    same values); when it returns True before the last step, the run saves a checkpoint at that
    step and raises StoppedAtEval. Raises Preempted after a SIGTERM checkpoint,
    FloatingPointError on a non-finite loss (the last good checkpoint is kept), ValueError on a
    bad config, a workdir of another run, or one of another length (num_epochs /
    num_train_steps) unless `extend`.
    """
    workdir = pathlib.Path(workdir)
    pid, pcount = jax.process_index(), jax.process_count()
    train_ds, eval_ds, model, schedule, tx, total = build(config, pid, pcount)
    mesh = make_mesh()
    check_batch(config.batch_size, mesh)
    if pid == 0:
        _check_workdir(workdir, config, train_ds.steps_per_epoch, extend)
    data_sharding, replicated = shardings(mesh)

    state = initial_state(config, model, tx, train_ds.image_shape, train_ds.input_dtype,
                          train_ds.num_classes)
    ckpt = Checkpointer(workdir, config.keep_checkpoints)
    restored = ckpt.restore_newest_readable(jax.tree_util.tree_map(np.asarray, state),
                                            set_aside=True)
    # The data-dependent initialisation only for a fresh run: a restored state replaces it.
    state = _data_init(state, config, train_ds, tx) if restored is None else restored
    state = jax.device_put(state, replicated)
    start = int(jax.device_get(state.step))
    writer = MetricsWriter(workdir, start, enabled=pid == 0)
    progress = Progress(start, total, enabled=pid == 0)
    train_fn, eval_fn = compile_steps(model, tx, schedule, config, train_ds.num_classes, mesh,
                                      data_sharding, replicated)
    if pid == 0:
        print(f"{config.model.name} on {train_ds.name} ({train_ds.origin}): {total} steps of "
              f"{config.batch_size}, {train_ds.steps_per_epoch} per epoch, {mesh.size} devices, "
              f"{'resuming at step ' + str(start) if start else 'from scratch'}; workdir "
              f"{workdir.resolve()}", flush=True)

    preemption = PreemptionNotice()
    pending: list[tuple[int, dict]] = []
    window: list[dict] = []  # host metrics of the log window's steps fetched so far
    last_eval: dict[str, float] | None = None
    timer = TrainTimer(start)

    def flush() -> dict[str, float]:
        """Fetches the metrics of the steps since the last flush; stops at a non-finite loss.
        Returns the means over the log window so far (a flush before a checkpoint keeps them)."""
        fetched = [(s, jax.device_get(m)) for s, m in pending]
        pending.clear()
        for s, m in fetched:
            if not np.isfinite(m["loss"]):
                good = ckpt.latest_step()
                kept = (f"the last good checkpoint (step {good}) is kept in "
                        f"{workdir / 'checkpoints'}" if good is not None else
                        "no checkpoint was saved before it")
                raise FloatingPointError(f"loss is {m['loss']} at step {s}; stopping; {kept}")
        window.extend(m for _, m in fetched)
        return {"loss": float(np.mean([m["loss"] for m in window])),
                "accuracy": float(np.mean([m["accuracy"] for m in window])),
                "learning_rate": float(window[-1]["learning_rate"])}

    batches = prefetch_to_device(train_ds.batches(start_step=start), data_sharding, depth=2)
    try:
        for step in range(start + 1, total + 1):
            # Between log points a step only queues work: no value comes back to the host (the
            # metrics wait in `pending`), so the host runs ahead of the device.
            with jax.transfer_guard_device_to_host("disallow"):
                state, m = train_fn(state, next(batches))
                pending.append((step, m))
                preempt = preemption.reached(step)
            evaluated = False
            if step % config.log_every_steps == 0 or step == total:
                values = flush()
                window.clear()
                values["images_per_sec"] = timer.images_per_sec(step, config.batch_size)
                writer.write(step, "train", values)
                progress.train(step, values)
            if step % config.eval_every_steps == 0 or step == total:
                timer.pause(state)  # images/s counts training only
                last_eval = _evaluate(eval_fn, state, eval_ds, data_sharding)
                evaluated = True
                writer.write(step, "eval", last_eval)
                progress.eval(step, step / train_ds.steps_per_epoch, last_eval)
                # The last evaluation is reported too; stopping there changes nothing.
                stop = on_eval is not None and on_eval(step, last_eval) and step < total
            else:
                stop = False
            if step % config.checkpoint_every_steps == 0 or step == total or preempt or stop:
                timer.pause(state)
                if pending:
                    flush()
                ckpt.save(state, last_eval if evaluated else None)
            timer.resume()
            if stop:
                ckpt.wait()
                raise StoppedAtEval(step)
            if preempt:
                ckpt.wait()
                what = "Ctrl-C" if preemption.signal == signal.SIGINT else preemption.signal.name
                raise Preempted(f"{what}: saved a checkpoint at step {step}; relaunch the same "
                                f"command to resume", 128 + preemption.signal)
        if last_eval is None:  # resumed at the end: nothing left to train, evaluate once
            last_eval = _evaluate(eval_fn, state, eval_ds, data_sharding)
        ckpt.wait()
    finally:
        # Stops the grain workers now, releasing the batches they share with this process, rather
        # than at interpreter exit, where their shared memory would be reported leaked.
        batches.close()
        preemption.restore()
        ckpt.close()
        writer.close()
    # Every process prints it, so multi-process runs can be checked to end identical.
    print(f"process {pid}: params fingerprint {params_fingerprint(state.params)}", flush=True)
    if pid == 0:
        print(f"done: test accuracy {last_eval['accuracy']:.4f} after {total} steps; metrics in "
              f"{(workdir / 'metrics.jsonl').resolve()}, checkpoints in "
              f"{(workdir / 'checkpoints').resolve()}", flush=True)
    return last_eval


def evaluate_workdir(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, float]:
    """Restores the newest readable checkpoint of `workdir` and evaluates it on the full eval
    split; prints the result, then writes WORKDIR/eval_step_<N>.json."""
    workdir = pathlib.Path(workdir)
    train_ds, eval_ds, model, schedule, tx, _ = build(config, jax.process_index(), jax.process_count())
    if not (workdir / "checkpoints").is_dir():
        raise ValueError(f"no checkpoint in {str(workdir / 'checkpoints')!r} to evaluate")
    _check_workdir(workdir, config, train_ds.steps_per_epoch, write=False)
    mesh = make_mesh()
    data_sharding, replicated = shardings(mesh)
    state = initial_state(config, model, tx, train_ds.image_shape, train_ds.input_dtype,
                          train_ds.num_classes)
    ckpt = Checkpointer(workdir, config.keep_checkpoints)
    try:
        state = ckpt.restore_newest_readable(jax.tree_util.tree_map(np.asarray, state))
    finally:
        ckpt.close()
    if state is None:
        raise ValueError(f"no checkpoint in {str(workdir / 'checkpoints')!r} to evaluate")
    state = jax.device_put(state, replicated)
    _, eval_fn = compile_steps(model, tx, schedule, config, train_ds.num_classes, mesh,
                               data_sharding, replicated)
    result = _evaluate(eval_fn, state, eval_ds, data_sharding)
    step = int(jax.device_get(state.step))
    if jax.process_index() == 0:
        print(f"eval of step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()),
              flush=True)
        path = workdir / f"eval_step_{step}.json"
        try:
            path.write_text(json.dumps({"step": step, **result}, indent=1))
        except OSError as e:
            raise OSError(f"could not write {str(path)!r} ({e.strerror or e}); the result is "
                          f"printed above") from e
    return result
