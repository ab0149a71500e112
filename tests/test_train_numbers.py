"""The numbers a run reports, against independent references: a full train step against a NumPy
step on 4 devices, the EMA of weights and batch-norm statistics, the random streams, images/s,
the single fetch of the eval sums, and the float16 refusal."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import train_helpers as th
from cnnjax.data.device_pipeline import DevicePipeline
from cnnjax.sweep.config_file import load_module
from cnnjax.train import checkpoint, metrics, rng, trainer
from cnnjax.train.state import init_state
from cnnjax.train.step import eval_step, train_step
from conftest import REPO_ROOT

# ---------------------------------------------------------------------------------------------
# One full train step against NumPy: label smoothing, the schedule's step index, momentum with
# coupled weight decay (not on the bias), the average over 4 devices, the logged metrics.

LR, MOMENTUM, WD, SMOOTHING, N, K = 0.1, 0.9, 0.01, 0.1, 16, 10
SCALES = (0.5, 0.2)  # piecewise at steps 1 and 2: rates 0.1, 0.05, 0.01


class _Linear(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(K, kernel_init=nn.initializers.normal(0.5),
                        bias_init=nn.initializers.normal(0.5))(x.reshape(x.shape[0], -1))


def _probe_train_steps() -> None:
    """Run in a subprocess with 4 CPU devices: 3 compiled train steps, with the whole batch as
    one batch (jit over the sharded batch) and per device (shard_map + pmean); prints JSON."""
    import ml_collections

    from cnnjax.train.optim import make_optimizer, make_schedule, optimizer_config
    from cnnjax.train.sharding import global_batch, make_mesh, shardings
    from cnnjax.train.step import compile_steps

    data = np.random.default_rng(1)
    images = data.random((3, N, 8, 8, 1)).astype(np.float32)
    labels = data.integers(0, K, (3, N)).astype(np.int32)
    mesh = make_mesh()
    assert mesh.size == 4, mesh
    data_sharding, replicated = shardings(mesh)
    out = {}
    for per_device in (False, True):
        config = ml_collections.ConfigDict({
            "seed": 0, "dataset": {"name": "digits"}, "per_device_batch_norm": per_device,
            "optimizer": optimizer_config("sgd", learning_rate=LR, momentum=MOMENTUM,
                                          nesterov=False, weight_decay=WD,
                                          label_smoothing=SMOOTHING).to_dict(),
            "schedule": {"name": "piecewise", "boundaries_steps": [1, 2], "scales": list(SCALES)}})
        schedule = make_schedule(config, steps_per_epoch=3, total_steps=3)
        tx = make_optimizer(config, schedule, steps_per_epoch=3, total_steps=3)
        model = _Linear()
        state = init_state(model, tx, (8, 8, 1), seed=0, use_ema=False)
        init = jax.tree_util.tree_map(lambda a: np.asarray(a).tolist(), state.params)
        train_fn, _ = compile_steps(model, tx, schedule, config, K, mesh, data_sharding, replicated)
        state = jax.device_put(state, replicated)
        logged = []
        for t in range(3):
            state, m = train_fn(state, global_batch({"image": images[t], "label": labels[t]},
                                                    data_sharding))
            logged.append({k: float(v) for k, v in jax.device_get(m).items()})
        final = jax.tree_util.tree_map(lambda a: np.asarray(a).tolist(), state.params)
        out[str(per_device)] = {"init": init, "logged": logged, "final": final}
    out["data"] = {"images": images.tolist(), "labels": labels.tolist()}
    print("PROBE" + json.dumps(out))


def _numpy_steps(w, b, images, labels):
    """SGD as torch.optim.SGD defines it, in float64: g = grad + wd * w (not on b);
    buf = momentum * buf + g; w -= lr_t * buf; lr_t from the schedule at step index t."""
    w, b = np.array(w, np.float64), np.array(b, np.float64)
    buf_w, buf_b = np.zeros_like(w), np.zeros_like(b)
    logged = []
    for t in range(3):
        x = np.asarray(images[t], np.float64).reshape(N, -1)
        y = np.asarray(labels[t])
        z = x @ w + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        target = (1 - SMOOTHING) * np.eye(K)[y] + SMOOTHING / K
        loss = np.mean(-np.sum(target * np.log(p), axis=1))
        others = np.where(np.eye(K, dtype=bool)[y], -np.inf, z)
        accuracy = np.mean(z[np.arange(N), y] > others.max(1))
        lr = LR * float(np.prod([s for bound, s in zip((1, 2), SCALES) if t >= bound]))
        dz = (p - target) / N
        gw, gb = x.T @ dz + WD * w, dz.sum(0)
        buf_w, buf_b = MOMENTUM * buf_w + gw, MOMENTUM * buf_b + gb
        w, b = w - lr * buf_w, b - lr * buf_b
        logged.append({"loss": loss, "accuracy": accuracy, "learning_rate": lr})
    return w, b, logged


def test_train_step_against_a_numpy_step_on_four_devices():
    env = th.env(devices=4)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "tests")])
    proc = subprocess.run(
        [sys.executable, "-c", "import test_train_numbers as t; t._probe_train_steps()"],
        env=env, cwd=REPO_ROOT / "tests", capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("PROBE", 1)[1])
    images, labels = out["data"]["images"], out["data"]["labels"]
    for per_device in ("False", "True"):
        run = out[per_device]
        dense = run["init"]["Dense_0"]
        w, b, logged = _numpy_steps(dense["kernel"], dense["bias"], images, labels)
        for t, (got, want) in enumerate(zip(run["logged"], logged)):
            for k in ("loss", "accuracy", "learning_rate"):
                assert got[k] == pytest.approx(want[k], rel=2e-5, abs=1e-6), (per_device, t, k)
        np.testing.assert_allclose(run["final"]["Dense_0"]["kernel"], w, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(run["final"]["Dense_0"]["bias"], b, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Parameter EMA: evaluation with the averaged weights AND the averaged batch-norm statistics.

class _BatchNormNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(6)(x.reshape(x.shape[0], -1))
        # A fast running average, so the live and averaged statistics differ clearly.
        x = nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)
        return nn.Dense(4, kernel_init=nn.initializers.normal(2.0))(nn.relu(x))


def test_ema_evaluation_uses_averaged_weights_and_averaged_statistics():
    decay, steps = 0.6, 4
    model = _BatchNormNet()
    state = init_state(model, optax.sgd(0.3), (5,), seed=0, use_ema=True)
    data = np.random.default_rng(0)
    xs = (data.standard_normal((steps, 8, 5)) * 3 + 2).astype(np.float32)
    ys = data.integers(0, 4, (steps, 8))
    step = jax.jit(functools.partial(train_step, model=model, tx=optax.sgd(0.3),
                                     schedule=optax.constant_schedule(0.3), seed=0,
                                     label_smoothing=0.0, ema_decay=decay, pass_loss=False))
    as64 = lambda tree: jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)
    ema = {"params": as64(state.params), "batch_stats": as64(state.batch_stats)}
    for t in range(steps):
        state, _ = step(state, {"image": jnp.asarray(xs[t]), "label": jnp.asarray(ys[t])})
        live = {"params": as64(state.params), "batch_stats": as64(state.batch_stats)}
        ema = jax.tree_util.tree_map(lambda e, v: decay * e + (1 - decay) * v, ema, live)
    x_eval = (data.standard_normal((12, 5)) * 3 + 2).astype(np.float32)
    y_eval = data.integers(0, 4, 12)

    def numpy_loss(variables):
        logits = np.asarray(model.apply(jax.tree_util.tree_map(np.float32, variables), x_eval,
                                        train=False), np.float64)
        logp = logits - logits.max(1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(1, keepdims=True))
        return -logp[np.arange(12), y_eval].sum(), np.sum(logits.argmax(1) == y_eval)

    want_loss, want_correct = numpy_loss(ema)
    live_stats_loss, _ = numpy_loss({"params": ema["params"], "batch_stats": live["batch_stats"]})
    assert abs(live_stats_loss - want_loss) > 0.05 * abs(want_loss)  # the pairing matters here
    sums = eval_step(state, {"image": jnp.asarray(x_eval), "label": jnp.asarray(y_eval),
                             "mask": jnp.ones(12, bool)}, model=model, use_ema=True, num_classes=4)
    assert float(sums["loss"]) == pytest.approx(want_loss, rel=1e-5)
    assert float(sums["correct"]) == want_correct


# ---------------------------------------------------------------------------------------------
# Random streams: one root key per run, by purpose, then by step.

def test_stream_keys_never_collide_over_a_sweep_grid():
    """20 seeds x every purpose x 200 steps, with the keys the step derives from them: dropout
    folded with the device index (8 devices), the device pipeline's split into augmentation and
    mixing keys. (Under JAX's partitionable threefry, split(k)[i] is fold_in(k, i): a parent key
    must be derived from in one way only, which is why every purpose has its own parent.)"""
    steps = jnp.arange(200)
    derived = {rng.DROPOUT: lambda k: jnp.stack([jax.random.fold_in(k, d) for d in range(8)]),
               rng.DEVICE_INPUT: jax.random.split}
    once = (rng.PARAMS_INIT, rng.RUN)  # the streams drawn once per run, without a step
    assert set(rng.PURPOSES.values()) == {*once, *derived}
    keys = []
    for seed in range(20):
        keys += [rng.stream_key(seed, purpose)[None] for purpose in once]
        for purpose, children in derived.items():
            per_step = jax.vmap(lambda s, p=purpose, sd=seed: rng.stream_key(sd, p, s))(steps)
            keys += [per_step, jax.vmap(children)(per_step).reshape(-1, 2)]
    data = np.concatenate([np.asarray(jax.random.key_data(k)) for k in keys])
    assert len(data) == 20 * (2 + 200 * (1 + 8) + 200 * (1 + 2))
    assert len(np.unique(data, axis=0)) == len(data)


class _RecordingModel:
    """_Linear, recording the dropout key its apply is given."""

    def __init__(self, seen):
        self.seen, self.inner = seen, _Linear()

    def apply(self, variables, x, train, rngs, mutable):
        self.seen.append(("dropout", np.asarray(jax.random.key_data(rngs["dropout"]))))
        return self.inner.apply(variables, x, train=train, rngs=rngs, mutable=mutable)


class _RecordingPipeline(DevicePipeline):
    @property
    def active(self) -> bool:
        return True

    def train(self, batch, key, run_key=None):
        # run_key is one per run by design (the alternating flip's half); the grid test covers it.
        self.seen.append(("input", np.asarray(jax.random.key_data(key))))
        return batch


def test_train_step_draws_distinct_keys_for_every_seed_purpose_and_step():
    """The keys train_step hands to dropout and to the device pipeline, seeds 0-2 x steps 0-1:
    all distinct (deriving augmentation from seed + 1 made it seed + 1's dropout)."""
    seen: list = []
    pipeline = _RecordingPipeline()
    object.__setattr__(pipeline, "seen", seen)
    model = _RecordingModel(seen)
    tx = optax.sgd(0.1)
    batch = {"image": jnp.ones((2, 2, 2, 1)), "label": jnp.asarray([0, 1])}
    for seed in range(3):
        state = init_state(model.inner, tx, (2, 2, 1), seed=seed, use_ema=False)
        for _ in range(2):
            state, _ = train_step(state, batch, model=model, tx=tx,
                                  schedule=optax.constant_schedule(0.1), seed=seed,
                                  label_smoothing=0.0, ema_decay=0.0, pass_loss=False,
                                  pipeline=pipeline)
    assert len(seen) == 3 * 2 * 2
    assert len({key.tobytes() for _, key in seen}) == len(seen)


# ---------------------------------------------------------------------------------------------
# images/s counts training only; evaluation fetches its sums once.

def test_train_log_lines_count_training_only_and_every_step_of_their_window(tmp_path,
                                                                             monkeypatch):
    """A clock that jumps 1000 s in every evaluation and every checkpoint save: a window that
    counted either would report under 4 * 64 / 1000 images/s. The logged loss and accuracy are
    the means of the window's per-step values (recorded from the compiled step), checkpoints
    inside the window included."""
    offset = [0.0]
    real = types.SimpleNamespace(**{k: getattr(trainer.time, k) for k in
                                    ("time", "perf_counter", "strftime", "gmtime", "sleep")})
    clock = types.SimpleNamespace(
        time=lambda: real.time() + offset[0], perf_counter=lambda: real.perf_counter() + offset[0],
        strftime=real.strftime, gmtime=real.gmtime, sleep=real.sleep)
    monkeypatch.setattr(trainer, "time", clock)
    monkeypatch.setattr(metrics, "time", clock)

    def slow(fn):
        def wrapped(*args, **kw):
            offset[0] += 1000.0
            return fn(*args, **kw)
        return wrapped

    monkeypatch.setattr(trainer, "_evaluate", slow(trainer._evaluate))
    monkeypatch.setattr(checkpoint.Checkpointer, "save", slow(checkpoint.Checkpointer.save))
    per_step = []
    compile_steps = trainer.compile_steps

    def recording(*args, **kw):
        train_fn, eval_fn = compile_steps(*args, **kw)
        def train_and_record(state, batch):
            state, m = train_fn(state, batch)
            per_step.append(m)
            return state, m
        return train_and_record, eval_fn

    monkeypatch.setattr(trainer, "compile_steps", recording)
    config = load_module(REPO_ROOT / "configs" / "default.py").get_config("smoke")
    config.num_train_steps, config.log_every_steps = 8, 4
    config.eval_every_steps = config.checkpoint_every_steps = 3  # inside both windows
    trainer.train(config, tmp_path)
    logged = [r for r in metrics.read_jsonl(tmp_path / "metrics.jsonl") if r["split"] == "train"]
    assert [r["step"] for r in logged] == [4, 8] and offset[0] >= 6000.0  # evals at 3, 6, 8
    assert min(r["images_per_sec"] for r in logged) > 4 * 64 / 100.0, logged
    per_step = jax.device_get(per_step)
    for r, window in zip(logged, (per_step[:4], per_step[4:])):
        for k in ("loss", "accuracy"):
            assert r[k] == pytest.approx(np.mean([m[k] for m in window], dtype=np.float64),
                                         rel=1e-6), (r["step"], k)


def test_evaluation_fetches_its_sums_once(monkeypatch):
    batches = [{"image": np.full((4, 1), i, np.float32), "label": np.zeros(4, np.int32),
                "mask": np.arange(4) < (4 if i < 4 else 2)} for i in range(5)]
    dataset = types.SimpleNamespace(batches=lambda: iter(batches), num_examples=18)
    eval_fn = jax.jit(lambda state, b: {"loss": jnp.sum(b["image"][:, 0] * b["mask"]),
                                        "correct": jnp.sum(b["mask"] * 1.0),
                                        "count": jnp.sum(b["mask"] * 1.0)})
    fetches = []
    real_get = jax.device_get
    monkeypatch.setattr(jax, "device_get", lambda x: fetches.append(1) or real_get(x))
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",))
    result = trainer._evaluate(eval_fn, None, dataset,
                               jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
    assert len(fetches) == 1
    assert result == pytest.approx({"loss": (4 * (0 + 1 + 2 + 3) + 2 * 4) / 18, "accuracy": 1.0})


# ---------------------------------------------------------------------------------------------
# float16 without loss scaling is refused in one line.

def test_float16_is_refused_in_one_line_pointing_to_bfloat16(tmp_path):
    proc = th.run(tmp_path / "run", "--config.dtype=float16", check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "float16" in lines[0] and "bfloat16" in lines[0], proc.stderr
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# GoogLeNet's auxiliary heads: the step adds their losses with weight 0.3 (Szegedy et al. 2015,
# sec. 5), in the loss it reports and in the gradients it applies.


class _AuxHeads(nn.Module):
    """Three linear heads on the flattened input; in training (logits, aux1, aux2), as GoogLeNet
    with aux_logits returns them."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape(x.shape[0], -1)
        heads = [nn.Dense(K, kernel_init=nn.initializers.normal(0.5), name=f"head{i}")(x)
                 for i in range(3)]
        return tuple(heads) if train else heads[0]


def test_auxiliary_losses_weigh_0_3_in_the_loss_and_the_gradients():
    rng_np = np.random.default_rng(9)
    x = rng_np.standard_normal((N, 2, 2, 1)).astype(np.float32)
    labels = rng_np.integers(0, K, N)
    model, tx = _AuxHeads(), optax.sgd(1.0)
    state = init_state(model, tx, (2, 2, 1), seed=0, use_ema=False)
    new, metrics_ = jax.jit(functools.partial(
        train_step, model=model, tx=tx, schedule=optax.constant_schedule(1.0), seed=0,
        label_smoothing=0.0, ema_decay=0.0, pass_loss=False))(
            state, {"image": jnp.asarray(x), "label": jnp.asarray(labels, jnp.int32)})
    # NumPy, float64: cross-entropy of each head; d/dW = x^T (softmax - onehot) / N, times the
    # head's weight; SGD at rate 1 moves each kernel by minus its gradient.
    flat, onehot = x.reshape(N, -1).astype(np.float64), np.eye(K)[labels]
    want_loss = 0.0
    for i, weight in enumerate((1.0, 0.3, 0.3)):
        p = state.params[f"head{i}"]
        logits = flat @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        want_loss += weight * -np.mean(np.log(softmax[np.arange(N), labels]))
        grad = weight * flat.T @ (softmax - onehot) / N
        moved = np.asarray(p["kernel"], np.float64) - np.asarray(new.params[f"head{i}"]["kernel"])
        np.testing.assert_allclose(moved, grad, rtol=1e-4, atol=1e-6, err_msg=f"head{i}")
    np.testing.assert_allclose(float(metrics_["loss"]), want_loss, rtol=1e-5)
