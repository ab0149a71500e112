"""The training loop: data -> jit-compiled sharded steps -> metrics, evals and checkpoints.

Exact resume: the state at a checkpoint plus the config determine everything after it (data
order and dropout keys are functions of (seed, step)), so a run killed at any moment and
relaunched ends with the same parameters and the same eval lines as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from cnnjax import data, kernels, models
from cnnjax.data import device_pipeline
from cnnjax.data.augment import get_host_augment
from cnnjax.train.checkpoint import Checkpointer
from cnnjax.train.metrics import MetricsWriter, Progress
from cnnjax.train.optim import make_optimizer, make_schedule
from cnnjax.train.sharding import check_batch, global_batch, make_mesh, shardings
from cnnjax.train.state import init_state
from cnnjax.train.step import compile_steps

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
# Exit status after a clean preemption save (128 + SIGTERM): the run is resumable, not finished.
EXIT_PREEMPTED = 143
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
    """Raised after a SIGTERM-triggered checkpoint was saved; the run can be relaunched."""


def model_overrides(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Keyword overrides for models.create: config.model minus its name and kernels, plus dtype
    and remat."""
    if config.dtype not in DTYPES:
        raise ValueError(f"unknown dtype {config.dtype!r}; expected one of {sorted(DTYPES)}")
    overrides = {k: v for k, v in config.model.items() if k not in ("name", "kernels")}
    overrides = {k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items()}
    if config.dtype != "float32":
        overrides["dtype"] = DTYPES[config.dtype]
    if config.get("remat", False):
        overrides["remat"] = True
    return overrides


def build_model_and_optimizer(config: ml_collections.ConfigDict, num_classes: int,
                              steps_per_epoch: int):
    """(model, schedule, tx, total_steps) of a config; raises ValueError on bad names."""
    choice = config.model.get("kernels", "auto")
    if choice not in kernels.CHOICES:
        raise ValueError(f"unknown model.kernels {choice!r}; expected one of {kernels.CHOICES}")
    model = models.create(config.model.name, num_classes=num_classes, **model_overrides(config))
    # The layers read the kernels switch when the steps are traced, inside model.init/apply.
    model = kernels.KernelScoped(model, choice)
    total = config.num_train_steps if config.num_train_steps > 0 else int(
        round(config.num_epochs * steps_per_epoch))
    schedule = make_schedule(config, steps_per_epoch, total)
    return model, schedule, make_optimizer(config, schedule, steps_per_epoch), total


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


def _fresh_state(config: ml_collections.ConfigDict, train_ds, model, tx):
    """The initial train state, for the input the model sees after the device pipeline."""
    model_input = device_pipeline.from_config(config.dataset, train_ds.num_classes).output_shape(
        train_ds.image_shape)
    return init_state(model, tx, model_input, config.seed,
                      use_ema=bool(config.optimizer.get("ema_decay", 0.0)),
                      input_dtype=train_ds.input_dtype)


def _check_workdir(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> None:
    """Refuses a workdir holding another run; keeps the previous config.json if it changed."""
    path = workdir / "config.json"
    new = json.loads(config.to_json_best_effort())
    if path.is_file():
        old = json.loads(path.read_text())
        for key in ("model", "dataset"):
            if old.get(key, {}).get("name") != new[key]["name"]:
                raise ValueError(
                    f"workdir {str(workdir)!r} holds a run of {key} {old.get(key, {}).get('name')!r}, "
                    f"not {new[key]['name']!r}; choose another --workdir (nothing was changed)")
        changed = sorted(k for k in set(old) | set(new)
                         if old.get(k) != new.get(k) and k not in _RESUMABLE_CHANGES)
        if changed:
            raise ValueError(f"workdir {str(workdir)!r} holds a run with different {changed}; "
                             f"resuming it with another config would mix two runs. Use another "
                             f"--workdir (nothing was changed)")
        if old != new:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            path.rename(workdir / f"config.{stamp}.json")
    workdir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(new, indent=2, sort_keys=True))


def _evaluate(eval_fn, state, eval_ds, data_sharding) -> dict[str, float]:
    sums: dict[str, float] = {}
    for batch in eval_ds.batches():
        out = jax.device_get(eval_fn(state, global_batch(batch, data_sharding)))
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + float(v)
    count = sums.pop("count")
    if int(count) != eval_ds.num_examples:
        raise RuntimeError(f"eval saw {count} examples, the split has {eval_ds.num_examples}")
    result = {"loss": sums["loss"] / count, "accuracy": sums["correct"] / count}
    if "correct5" in sums:
        result["top5_accuracy"] = sums["correct5"] / count
    return result


class _SigtermFlag:
    """Records SIGTERM (how clusters preempt) so the loop can checkpoint at a step boundary."""

    def __init__(self):
        self.raised = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.raised = True

    def any_process(self) -> bool:
        if jax.process_count() == 1:
            return self.raised
        return bool(np.any(multihost_utils.process_allgather(np.array(self.raised))))

    def restore(self):
        signal.signal(signal.SIGTERM, self._previous)


def train(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, float]:
    """Trains (or resumes) the run in `workdir`; returns the final eval metrics.

    Raises Preempted after a SIGTERM checkpoint, FloatingPointError on a non-finite loss (the
    last good checkpoint is kept), ValueError on a bad config or a workdir of another run.
    """
    workdir = pathlib.Path(workdir)
    pid, pcount = jax.process_index(), jax.process_count()
    train_ds, eval_ds, model, schedule, tx, total = build(config, pid, pcount)
    mesh = make_mesh()
    check_batch(config.batch_size, mesh)
    if pid == 0:
        _check_workdir(workdir, config)
    data_sharding, replicated = shardings(mesh)

    state = _fresh_state(config, train_ds, model, tx)
    ckpt = Checkpointer(workdir, config.keep_checkpoints)
    if ckpt.latest_step() is not None:
        state = ckpt.restore(jax.tree_util.tree_map(np.asarray, state))
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

    sigterm = _SigtermFlag()
    pending: list[tuple[int, dict]] = []
    last_eval: dict[str, float] | None = None
    tick, tick_step = time.time(), start

    def flush() -> dict[str, float]:
        """Fetches the metrics of the steps since the last flush; stops at a non-finite loss."""
        fetched = [(s, jax.device_get(m)) for s, m in pending]
        pending.clear()
        for s, m in fetched:
            if not np.isfinite(m["loss"]):
                raise FloatingPointError(
                    f"loss is {m['loss']} at step {s}; stopping. The last good checkpoint "
                    f"(step {ckpt.latest_step()}) is kept in {workdir / 'checkpoints'}")
        return {"loss": float(np.mean([m["loss"] for _, m in fetched])),
                "accuracy": float(np.mean([m["accuracy"] for _, m in fetched])),
                "learning_rate": float(fetched[-1][1]["learning_rate"])}

    try:
        batches = train_ds.batches(start_step=start)
        for step in range(start + 1, total + 1):
            state, m = train_fn(state, global_batch(next(batches), data_sharding))
            pending.append((step, m))
            evaluated = False
            if step % config.log_every_steps == 0 or step == total:
                values = flush()
                values["images_per_sec"] = (step - tick_step) * config.batch_size / (time.time() - tick)
                tick, tick_step = time.time(), step
                writer.write(step, "train", values)
                progress.train(step, values)
            if step % config.eval_every_steps == 0 or step == total:
                last_eval = _evaluate(eval_fn, state, eval_ds, data_sharding)
                evaluated = True
                writer.write(step, "eval", last_eval)
                progress.eval(step, step / train_ds.steps_per_epoch, last_eval)
            preempt = sigterm.any_process()
            if step % config.checkpoint_every_steps == 0 or step == total or preempt:
                if pending:
                    flush()
                ckpt.save(state, last_eval if evaluated else None)
            if preempt:
                ckpt.wait()
                raise Preempted(f"SIGTERM: saved a checkpoint at step {step}; relaunch the same "
                                f"command to resume")
        if last_eval is None:  # resumed at the end: nothing left to train, evaluate once
            last_eval = _evaluate(eval_fn, state, eval_ds, data_sharding)
        ckpt.wait()
    finally:
        sigterm.restore()
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
    """Restores the latest checkpoint of `workdir` and evaluates it on the full eval split;
    writes WORKDIR/eval_step_<N>.json."""
    workdir = pathlib.Path(workdir)
    train_ds, eval_ds, model, schedule, tx, _ = build(config, jax.process_index(), jax.process_count())
    ckpt = Checkpointer(workdir, config.keep_checkpoints)
    if ckpt.latest_step() is None:
        raise ValueError(f"no checkpoint in {str(workdir / 'checkpoints')!r} to evaluate")
    mesh = make_mesh()
    data_sharding, replicated = shardings(mesh)
    state = _fresh_state(config, train_ds, model, tx)
    state = jax.device_put(ckpt.restore(jax.tree_util.tree_map(np.asarray, state)), replicated)
    ckpt.close()
    _, eval_fn = compile_steps(model, tx, schedule, config, train_ds.num_classes, mesh,
                               data_sharding, replicated)
    result = _evaluate(eval_fn, state, eval_ds, data_sharding)
    step = int(jax.device_get(state.step))
    if jax.process_index() == 0:
        (workdir / f"eval_step_{step}.json").write_text(json.dumps({"step": step, **result}, indent=1))
        print(f"eval of step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()))
    return result
