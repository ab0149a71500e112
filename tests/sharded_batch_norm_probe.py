"""Run as a subprocess by tests/test_scale_ready.py with XLA_FLAGS forcing 8 host devices (the
flag must be set before JAX starts, and would change every other test's device count).

Prints one JSON object: for each model named on the command line, the collectives in the
compiled HLO of its training step (cnnjax.train.step.train_step, SGD) under jit with the batch
sharded over the 8 devices with the result shape of each, and its batch norms' channels; the
same for a stack of conv + BN + ReLU layers built with cnnjax.nn.BatchNorm and with
flax.linen.BatchNorm (the reference); and the batch statistics of badly centred, sharded inputs
computed by ops.batch_moments, and the synchronised ones under shard_map, against NumPy float64.
"""

import functools
import json
import re
import sys

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from cnnjax import kernels, models, nn, ops
from cnnjax.train.state import init_state
from cnnjax.ops.mapping import shard_map
from cnnjax.train.step import train_step

COLLECTIVES = ("all-reduce", "all-gather", "collective-permute", "all-to-all", "reduce-scatter")
BATCH = 16


def collectives(hlo: str) -> dict:
    """How many of each collective the HLO holds, and each one's result shape ("f32[8,3,16]",
    or a tuple "(f32[16], f32[16])" for a variadic one), layouts dropped, as [kind, shape]."""
    counts = {k: len(re.findall(rf" {k}(-start)?\(", hlo)) for k in COLLECTIVES}
    found = re.findall(rf"= (\S+|\(.*?\)) ({'|'.join(COLLECTIVES)})(?:-start)?\(", hlo)
    counts["ops"] = [[kind, re.sub(r"\{[\d,]*\}|/\*index=\d+\*/", "", shape)]
                     for shape, kind in found]
    return counts


class BNStack(fnn.Module):
    """depth x (3x3 conv, batch norm, ReLU), global average pool, dense: `flax` picks the BN."""

    depth: int
    flax: bool

    @fnn.compact
    def __call__(self, x, train: bool):
        for _ in range(self.depth):
            x = fnn.Conv(16, (3, 3), use_bias=False)(x)
            if self.flax:
                x = jax.nn.relu(fnn.BatchNorm(use_running_average=not train)(x))
            else:
                x = nn.BatchNorm(activation="relu")(x, train)
        return fnn.Dense(10)(jnp.mean(x, axis=(1, 2)))


def step_collectives(model, size: int, mesh) -> dict:
    data, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    tx = optax.sgd(0.1, momentum=0.9)
    state = init_state(model, tx, (size, size, 3), seed=0, use_ema=False)
    batch = {"image": jax.ShapeDtypeStruct((BATCH, size, size, 3), jnp.float32, sharding=data),
             "label": jax.ShapeDtypeStruct((BATCH,), jnp.int32, sharding=data)}
    step = functools.partial(train_step, model=model, tx=tx, schedule=optax.constant_schedule(0.1),
                             seed=0, label_smoothing=0.0, ema_decay=0.0, pass_loss=False)
    state = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype,
                                                                  sharding=replicated), state)
    # Plain jit over the sharded batch (train_step without a mesh) partitions XLA's lowering; a
    # kernel call has no sharding rule and would be gathered (the trainer's per-device steps:
    # tests/kernels_devices_probe.py).
    with kernels.use("xla"):
        hlo = jax.jit(step).lower(state, batch).compile().as_text()
    counts = collectives(hlo)
    means = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(state.batch_stats)[0]
             if getattr(path[-1], "key", None) == "mean"]
    counts["batch_norms"] = len(means)
    counts["batch_norm_channels"] = sorted(m.shape[-1] for m in means)
    return counts


def sharded_moments(mesh) -> list:
    """Statistics of N(1e4 + 10 * device, 1) inputs, each device's shard offset differently."""
    rng = np.random.default_rng(0)
    x = 1e4 + rng.standard_normal((BATCH, 6, 6, 3)) + 10.0 * np.repeat(np.arange(8), BATCH // 8)[
        :, None, None, None]
    xs = jax.device_put(jnp.asarray(x, jnp.float32), NamedSharding(mesh, P("data")))
    mean, var = jax.jit(ops.batch_moments)(xs)
    x64 = np.asarray(xs, np.float64)  # the float32 values the devices hold
    ref_mean = x64.mean(axis=(0, 1, 2))
    ref_var = ((x64 - ref_mean) ** 2).mean(axis=(0, 1, 2))
    return [np.asarray(mean).tolist(), np.asarray(var).tolist(), ref_mean.tolist(),
            ref_var.tolist()]


def shard_map_moments(mesh) -> dict:
    """Synchronised statistics under shard_map (`axis_name`) against NumPy's float64 statistics
    of the whole batch, and their gradient against the analytic one (max absolute differences).
    For L = sum_c w0_c mean_c + w1_c var_c over the M = N*H*W values of each channel (biased
    variance): dL/dx = w0_c / M + w1_c * 2 (x - mean_c) / M."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(3.0 + rng.standard_normal((BATCH, 5, 5, 4)) * np.arange(1, 17)[:, None, None,
                                                                             None], jnp.float32)
    w = jnp.asarray(rng.standard_normal((2, 4)), jnp.float32)
    local = shard_map(lambda x: ops.batch_moments(x, axis_name="data"), mesh,
                      in_specs=P("data"), out_specs=P())
    got = np.stack(jax.jit(local)(x))
    grad_got = jax.jit(jax.grad(lambda x: jnp.sum(jnp.stack(local(x)) * w)))(x)
    x64, w64 = np.asarray(x, np.float64), np.asarray(w, np.float64)
    count = x64.size // x64.shape[-1]
    mean = x64.mean(axis=(0, 1, 2))
    want = np.stack([mean, ((x64 - mean) ** 2).mean(axis=(0, 1, 2))])
    grad_want = w64[0] / count + w64[1] * 2 * (x64 - mean) / count
    return {"values": float(np.max(np.abs(got - want))), "scale": float(np.max(np.abs(want))),
            "grads": float(np.max(np.abs(grad_got - grad_want))),
            "grad_scale": float(np.max(np.abs(grad_want)))}


def main(names: list[str]) -> None:
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    assert len(jax.devices()) == 8, jax.devices()
    out = {name: step_collectives(models.create(name, num_classes=10), 32, mesh) for name in names}
    out["stack_cnnjax"] = step_collectives(BNStack(6, flax=False), 8, mesh)
    out["stack_flax"] = step_collectives(BNStack(6, flax=True), 8, mesh)
    out["moments"] = sharded_moments(mesh)
    out["shard_map"] = shard_map_moments(mesh)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
