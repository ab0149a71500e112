"""The pure train and eval steps, compiled once with jax.jit by the trainer.

Model outputs: logits (N, K), or a tuple (logits, aux_logits...) in training for models with
auxiliary heads (GoogLeNet), whose losses are added with weight 0.3 as in Szegedy et al. 2015.
Dense prediction (U-Net): logits (N, H, W, K) against per-pixel labels (N, H, W); an example's
loss and accuracy are then the means over its pixels, so every metric stays per example.
Device-side augmentation (crop/flip) and batch mixing (mixup, cutmix) run inside the compiled
train step, drawing their randomness from (seed, step) like dropout, so a resumed run repeats them.
Evaluation batches may hold several views per example (N, V, H, W, C), e.g. 10-crop testing: the
softmax probabilities of the views are averaged; with `dataset.tta` (airbench) their logits, weighted,
and the first view alone is also scored ("plain_accuracy").
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from cnnjax import ops
from cnnjax.data.device_pipeline import DevicePipeline, from_config
from cnnjax.ops.mapping import batch_split_over, shard_map
from cnnjax.train import rng
from cnnjax.data.tta import average_logits
from cnnjax.train import lookahead
from cnnjax.train.optim import current_scale, needs_loss_value
from cnnjax.train.state import TrainState

AUX_LOSS_WEIGHT = 0.3


def _loss_and_metrics(model, params, batch_stats, batch, dropout_key, label_smoothing,
                      loss_scale=1.0):
    variables = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
    out, updates = model.apply(variables, batch["image"], train=True,
                               rngs={"dropout": dropout_key}, mutable=["batch_stats"])
    logits, aux = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
    labels = batch["label"]
    loss = jnp.mean(per_example(ops.softmax_cross_entropy, logits, labels,
                                label_smoothing=label_smoothing))
    for a in aux:
        loss = loss + AUX_LOSS_WEIGHT * jnp.mean(per_example(
            ops.softmax_cross_entropy, a, labels, label_smoothing=label_smoothing))
    accuracy = jnp.mean(per_example(ops.top_k_correct, logits, _hard_labels(logits, labels), k=1))
    # loss_scale = the batch size differentiates the summed loss (airbench); the mean is reported.
    return loss * loss_scale, (updates.get("batch_stats", {}), accuracy, loss)


def _hard_labels(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Class ids from ids or from mixed soft targets (N, K) (the dominant class)."""
    return jnp.argmax(labels, axis=-1) if labels.shape == logits.shape else labels


def per_example(fn, logits: jax.Array, labels: jax.Array, **kw) -> jax.Array:
    """`fn(logits, labels, **kw)` (a per-row loss or correctness) as float32 (N,): directly for
    logits (N, K); for dense logits (N, ..., K) with labels (N, ...) (ids, not soft targets), the
    mean over each example's positions."""
    if logits.ndim == 2:
        return fn(logits, labels, **kw).astype(jnp.float32)
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"dense logits {tuple(logits.shape)} need labels of shape "
                         f"{tuple(logits.shape[:-1])}, got {tuple(labels.shape)}")
    n, k = logits.shape[0], logits.shape[-1]
    values = fn(logits.reshape(-1, k), labels.reshape(-1), **kw).astype(jnp.float32)
    return jnp.mean(values.reshape(n, -1), axis=1)


def train_step(state: TrainState, batch: dict, *, model, tx: optax.GradientTransformation,
               schedule: optax.Schedule, seed: int, label_smoothing: float, ema_decay: float,
               pass_loss: bool, mesh=None, per_device_batch_norm: bool = False,
               pipeline: DevicePipeline = DevicePipeline(), summed_loss: bool = False
               ) -> tuple[TrainState, dict[str, jax.Array]]:
    """One SGD step on a global batch; returns the new state and scalar metrics.

    `pipeline`: the device-side input processing (padding, augmentation, normalisation, mixing).
    `summed_loss`: differentiate the batch's summed loss instead of its mean (airbench's
    hyperparameters are stated for it); the reported loss is the mean either way.

    With `mesh` (a "data" axis the batch is sharded over) of more than one device, the model
    runs per device under shard_map on the device's rows, so every kernel (Pallas, oneDNN)
    computes on local arrays.
    The batch norms then take the whole batch's statistics (`ops.mapping.batch_split_over`: one
    collective each way per batch norm) and dropout the whole batch's masks, so the step equals
    the one-device step; with `per_device_batch_norm`, each device normalises with its own
    rows' statistics (the original ResNet's per-GPU batch norm), draws its own dropout masks,
    and the running statistics are averaged. Loss, accuracy and gradients are averaged over the
    devices (XLA combines them into one all-reduce). Without `mesh` (or with one device), the
    step is plain jit: the whole batch is one batch-norm batch under XLA's partitioning, and on
    a sharded batch a kernel call (which has no sharding rule) would get the whole batch
    gathered.
    """
    dropout_key = rng.stream_key(seed, rng.DROPOUT, state.step)
    if pipeline.active or batch["image"].dtype == jnp.uint8:
        # A stream of its own, so switching augmentation on leaves the dropout masks unchanged.
        batch = pipeline.train(batch, rng.stream_key(seed, rng.DEVICE_INPUT, state.step),
                               run_key=rng.stream_key(seed, rng.RUN))
    grad_fn = jax.value_and_grad(
        functools.partial(_loss_and_metrics, model, label_smoothing=label_smoothing,
                          loss_scale=batch["label"].shape[0] if summed_loss else 1.0), has_aux=True)
    if mesh is None or mesh.size == 1:
        (_, (batch_stats, accuracy, loss)), grads = grad_fn(state.params, state.batch_stats,
                                                            batch, dropout_key)
    else:
        def local(params, stats, local_batch, key):
            if per_device_batch_norm:
                # Each device draws its own dropout mask, as separate GPUs would.
                key = jax.random.fold_in(key, jax.lax.axis_index("data"))
                (_, (s, a, l)), g = grad_fn(params, stats, local_batch, key)
                return jax.lax.pmean((l, s, a, g), "data")
            with batch_split_over("data"):
                (_, (s, a, l)), g = grad_fn(params, stats, local_batch, key)
            # The synchronised statistics are already the same bits on every device.
            l, a, g = jax.lax.pmean((l, a, g), "data")
            return l, s, a, g

        model_batch = {"image": batch["image"], "label": batch["label"]}
        loss, batch_stats, accuracy, grads = shard_map(
            local, mesh, in_specs=(P(), P(), P("data"), P()), out_specs=P())(
                state.params, state.batch_stats, model_batch, dropout_key)
    extra = {"value": loss} if pass_loss else {}
    updates, opt_state = tx.update(grads, state.opt_state, state.params, **extra)
    params = optax.apply_updates(state.params, updates)
    batch_stats, opt_state = lookahead.sync_batch_stats(opt_state, batch_stats)
    ema, ema_stats = state.ema_params, state.ema_batch_stats
    if ema_decay:
        average = lambda e, p: ema_decay * e + (1.0 - ema_decay) * p
        ema = jax.tree_util.tree_map(average, ema, params)
        ema_stats = jax.tree_util.tree_map(average, ema_stats, batch_stats)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state, ema_params=ema, ema_batch_stats=ema_stats)
    lr = schedule(state.step) * current_scale(state.opt_state)  # the rate of this update
    return new_state, {"loss": loss, "accuracy": accuracy, "learning_rate": lr}


def eval_step(state: TrainState, batch: dict, *, model, use_ema: bool, num_classes: int,
              pipeline: DevicePipeline = DevicePipeline(), mesh=None) -> dict[str, jax.Array]:
    """Sums over the real (mask=True) examples of a padded eval batch: loss, top-1, top-5, count.

    With several views per example (images (N, V, H, W, C)), the prediction is the mean of the
    views' softmax probabilities (10-crop testing), scored through its logarithm. With `mesh`
    (a "data" axis the batch is sharded over) of more than one device, each device scores its
    rows under shard_map (so the kernels compute on local arrays) and the sums are added over
    the devices.
    """
    if mesh is not None and mesh.size > 1:
        local = functools.partial(eval_step, model=model, use_ema=use_ema,
                                  num_classes=num_classes, pipeline=pipeline)
        rows = {k: batch[k] for k in ("image", "label", "mask")}
        return shard_map(lambda s, b: jax.lax.psum(local(s, b), "data"), mesh,
                         in_specs=(P(), P("data")), out_specs=P())(state, rows)
    images = pipeline.eval(batch["image"])
    plain = None
    if images.ndim == 5:
        n, v = images.shape[:2]
        logits = model.apply(state.variables(use_ema), images.reshape(n * v, *images.shape[2:]),
                             train=False)
        if pipeline.tta != "none":
            # Weighted mean of the views' logits (airbench); view 0 alone is the plain prediction.
            views = logits.astype(jnp.float32).reshape(n, v, -1)
            plain, logits = views[:, 0], average_logits(views, pipeline.tta)
        else:
            probs = jnp.mean(jax.nn.softmax(logits.astype(jnp.float32)).reshape(n, v, -1), axis=1)
            logits = jnp.log(jnp.maximum(probs, jnp.finfo(jnp.float32).tiny))
    else:
        logits = model.apply(state.variables(use_ema), images, train=False)
    mask, labels = batch["mask"].astype(jnp.float32), batch["label"]
    sums = {"loss": jnp.sum(per_example(ops.softmax_cross_entropy, logits, labels) * mask),
            "correct": jnp.sum(per_example(ops.top_k_correct, logits, labels, k=1) * mask),
            "count": jnp.sum(mask)}
    if plain is not None:
        sums["correct_plain"] = jnp.sum(per_example(ops.top_k_correct, plain, labels, k=1) * mask)
    if num_classes >= 10:
        sums["correct5"] = jnp.sum(per_example(ops.top_k_correct, logits, labels, k=5) * mask)
    return sums


def summed_loss(config) -> bool:
    """Whether the gradient is of the batch's summed loss (`optimizer.loss_reduction`)."""
    reduction = config.optimizer.get("loss_reduction", "mean")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"optimizer.loss_reduction must be 'mean' or 'sum', got {reduction!r}")
    return reduction == "sum"


def compile_steps(model, tx, schedule, config, num_classes: int, mesh, data_sharding,
                  replicated) -> tuple[Any, Any]:
    """jit-compiled (train_step, eval_step) with the state donated and batches sharded.

    `config.compiler_options` (optional) maps XLA debug options to values for both steps, e.g.
    {"xla_cpu_experimental_ynn_fusion_type": ""} (Eigen instead of YNNPACK convolutions on
    CPU, measured in experiments/results/benchmarks.md); an unknown option fails at compile.
    """
    # Mixing pairs examples within each device's shard (no cross-device shuffle of the batch).
    pipeline = dataclasses.replace(from_config(config.dataset, num_classes), mesh=mesh)
    train = functools.partial(
        train_step, model=model, tx=tx, schedule=schedule, seed=config.seed,
        label_smoothing=config.optimizer.get("label_smoothing", 0.0),
        ema_decay=config.optimizer.get("ema_decay", 0.0), pass_loss=needs_loss_value(config),
        mesh=mesh, per_device_batch_norm=config.get("per_device_batch_norm", False),
        pipeline=pipeline, summed_loss=summed_loss(config))
    evaluate = functools.partial(eval_step, model=model,
                                 use_ema=bool(config.optimizer.get("ema_decay", 0.0)),
                                 num_classes=num_classes, pipeline=pipeline, mesh=mesh)
    options = dict(config.get("compiler_options") or {})
    train_jit = jax.jit(train, in_shardings=(replicated, data_sharding),
                        out_shardings=(replicated, replicated), donate_argnums=0,
                        compiler_options=options)
    eval_jit = jax.jit(evaluate, in_shardings=(replicated, data_sharding), out_shardings=replicated,
                       compiler_options=options)
    return train_jit, eval_jit
