"""Run as a subprocess by tests/test_train_kernels_devices.py with XLA_FLAGS forcing 8 host
devices (the flag must be set before JAX starts).

Trains ResNet-8 (cifar_resnet20's stem, stages and head with one basic block per stage: 7
batch norms, 9 convolutions), 16x16 images, batch 16, for 3 steps through the trainer's
compiled steps (cnnjax.train.step.compile_steps) under kernels "auto" (oneDNN's convolutions on
this CPU) on a mesh of 1 device and of 8, and "xla" on 8, from one initial state; every device's
rows get their own brightness, so statistics per device differ clearly from the whole batch's.
Also runs the batch-norm kernels (the Pallas ones in interpret mode, the CPU extension's) and
ops.batch_norm's XLA path inside shard_map over the 8 devices on one batch, synchronised, with
their gradients.

The parts named after the output path run: "trainer" (the training runs; about 30 CPU-seconds,
mostly compiling) and "batch_norm" (the batch-norm checks). Writes an .npz of flat arrays and
prints one JSON line:

  x0                                    the first batch's images (16, 16, 16, 3)
  init/<path>                           the initial params
  <run>/loss                            (3,) the training losses, run in auto1, auto8, xla8
  <run>/params/<path>, <run>/batch_stats/<path>   the state after 3 steps
  <run>/step1/batch_stats/<path>        the running statistics after the first step
  <run>/eval/<key>                      the eval step's sums on one batch
  bn/x, bn/scale, bn/bias, bn/residual, bn/cotangent   the batch-norm check's inputs
  bn/<path>/{y,mean,var,dx,dscale,dbias,dresidual}     path in pallas8, cpu8, xla8
  centred/x, centred/mean, centred/var  badly centred inputs and their synchronised statistics
  JSON: {"<run>_train_hlo", "<run>_eval_hlo": the collectives of each compiled step (as
  sharded_batch_norm_probe.collectives gives them) and its oneDNN calls, "convolutions": the
  model's, "batch_norm_channels": each batch norm's channels}

    python tests/kernels_devices_probe.py OUT.npz trainer batch_norm
"""

from __future__ import annotations

import json
import pathlib
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from cnnjax import kernels, ops
from cnnjax.ops.mapping import batch_split_over, shard_map
from cnnjax.sweep.config_file import load_module
from cnnjax.train.sharding import shardings
from cnnjax.train.state import init_state
from cnnjax.train.step import compile_steps
from cnnjax.train.trainer import build_model_and_optimizer
from sharded_batch_norm_probe import collectives

REPO = pathlib.Path(__file__).resolve().parent.parent
BATCH, SIZE, STEPS = 16, 16, 3
CONVOLUTION = re.compile(r'custom_call_target="cnnjax_onednn_(forward|input_grad|weight_grad)"')
BATCH_NORM = 'custom_call_target="cnnjax_onednn_norm_act"'


def _flat(tree, prefix: str) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {prefix + "/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
            for path, v in leaves}


def _batches() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    shift = np.repeat(np.linspace(-1.0, 1.0, 8), BATCH // 8)[:, None, None, None]
    return [{"image": (rng.standard_normal((BATCH, SIZE, SIZE, 3)) + shift).astype(np.float32),
             "label": rng.integers(0, 10, BATCH).astype(np.int32),
             "mask": np.ones(BATCH, bool)} for _ in range(STEPS)]


def _hlo(compiled) -> dict:
    text = compiled.as_text()
    return {**collectives(text), "onednn": len(CONVOLUTION.findall(text)),
            "batch_norm_calls": text.count(BATCH_NORM)}


def train_runs(arrays: dict, out: dict) -> None:
    config = load_module(REPO / "configs" / "default.py").get_config("smoke")
    config.model = {"name": "cifar_resnet20", "stage_sizes": (1, 1, 1), "kernels": "auto"}
    config.schedule = {"name": "constant"}  # the warm-up's step-0 rate 0 would hide the gradients
    config.batch_size = BATCH
    batches = _batches()
    arrays["x0"] = batches[0]["image"]
    state = None
    for kernel_choice, device_counts in (("auto", (1, 8)), ("xla", (8,))):
        config.model["kernels"] = kernel_choice
        model, schedule, tx, _ = build_model_and_optimizer(config, 10, 100)
        if state is None:
            state = jax.tree_util.tree_map(np.asarray, init_state(model, tx, (SIZE, SIZE, 3), 0,
                                                                  use_ema=False))
            arrays.update(_flat(state.params, "init/params/"))
        for devices in device_counts:
            run = f"{kernel_choice}{devices}"
            mesh = Mesh(np.asarray(jax.devices()[:devices]), ("data",))
            data_sharding, replicated = shardings(mesh)
            train_fn, eval_fn = compile_steps(model, tx, schedule, config, 10, mesh,
                                              data_sharding, replicated)
            new, losses = jax.device_put(state, replicated), []
            for i, batch in enumerate(batches):
                on_device = jax.device_put({k: batch[k] for k in ("image", "label")}, data_sharding)
                if i == 0:
                    out[f"{run}_train_hlo"] = _hlo(train_fn.lower(new, on_device).compile())
                new, metrics = train_fn(new, on_device)
                losses.append(float(metrics["loss"]))
                if i == 0:
                    arrays.update(_flat(new.batch_stats, f"{run}/step1/batch_stats/"))
            arrays[f"{run}/loss"] = np.asarray(losses)
            arrays.update(_flat(new.params, f"{run}/params/"))
            arrays.update(_flat(new.batch_stats, f"{run}/batch_stats/"))
            eval_batch = jax.device_put(batches[0], data_sharding)
            out[f"{run}_eval_hlo"] = _hlo(eval_fn.lower(new, eval_batch).compile())
            arrays.update(_flat(eval_fn(new, eval_batch), f"{run}/eval/"))
    out["convolutions"] = sum(leaf.ndim == 4 for leaf in jax.tree_util.tree_leaves(state.params))
    out["batch_norm_channels"] = sorted(
        leaf.shape[-1] for path, leaf in jax.tree_util.tree_flatten_with_path(state.batch_stats)[0]
        if getattr(path[-1], "key", None) == "mean")


def batch_norm_runs(arrays: dict) -> None:
    """act(bn(x) + residual) in shard_map over 8 devices, synchronised, on the Pallas kernel
    (interpret mode), the CPU kernel and XLA: values and the VJP of a fixed cotangent."""
    rng = np.random.default_rng(1)
    shift = np.repeat(np.linspace(-2.0, 2.0, 8), 2)[:, None, None, None]
    inputs = {"x": (rng.standard_normal((16, 3, 3, 8)) * 1.5 + 0.5 + shift).astype(np.float32),
              "scale": (1.0 + 0.5 * rng.standard_normal(8)).astype(np.float32),
              "bias": rng.standard_normal(8).astype(np.float32),
              "residual": rng.standard_normal((16, 3, 3, 8)).astype(np.float32),
              "cotangent": rng.standard_normal((16, 3, 3, 8)).astype(np.float32)}
    arrays.update({f"bn/{k}": v for k, v in inputs.items()})
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    # Weights of the statistics in the loss, so their cotangents reach the backward pass too.
    w_mean, w_var = (rng.standard_normal(8).astype(np.float32) for _ in range(2))
    arrays["bn/w_mean"], arrays["bn/w_var"] = w_mean, w_var

    def local(x, scale, bias, residual, cotangent):
        def loss(x, scale, bias, residual):
            with batch_split_over("data"):
                y, mean, var = ops.batch_norm(x, scale, bias, train=True, residual=residual,
                                              activation="relu")
            # The devices' losses add up to the whole batch's: the shared statistics' terms
            # are split between them.
            shared = (jnp.sum(mean * w_mean) + jnp.sum(var * w_var)) / jax.device_count()
            return jnp.sum(y * cotangent) + shared, (y, mean, var)

        (_, (y, mean, var)), grads = jax.value_and_grad(loss, (0, 1, 2, 3), has_aux=True)(
            x, scale, bias, residual)
        dx, dscale, dbias, dres = grads
        # Parameter gradients: each device's share of its loss; summed as a train step would.
        dscale, dbias = jax.lax.psum((dscale, dbias), "data")
        return y, mean, var, dx, dscale, dbias, dres

    batch, rep = P("data"), P()
    names = ("y", "mean", "var", "dx", "dscale", "dbias", "dresidual")
    for run, setting in (("pallas8", dict(kernels="pallas", interpret=True)),
                         ("cpu8", dict(kernels="onednn")), ("xla8", dict(kernels="xla"))):
        fn = jax.jit(shard_map(local, mesh, in_specs=(batch, rep, rep, batch, batch),
                               out_specs=(batch, rep, rep, batch, rep, rep, batch)))
        with kernels.use(**setting):
            jaxpr = str(jax.make_jaxpr(fn)(*inputs.values()))
            # The kernels' passes are primitives: the forward kernel, and under grad the
            # backward kernel (its transpose), each bound once (backend: Pallas or the CPU's).
            arrays[f"bn/{run}/kernel_calls"] = np.asarray(
                jaxpr.count("batch_norm_act_fwd[") + jaxpr.count("batch_norm_act_bwd["))
            values = fn(*inputs.values())
        arrays.update({f"bn/{run}/{k}": np.asarray(v) for k, v in zip(names, values)})


def badly_centred_moments(arrays: dict) -> None:
    """ops.batch_moments synchronised in shard_map over the 8 devices, of N(1e4 + 10 * device, 1)
    inputs: each device's share offset differently, where float32 holds the mean only to 1e-3."""
    rng = np.random.default_rng(2)
    offsets = 10.0 * np.repeat(np.arange(8), 2)[:, None, None, None]
    x = (1e4 + rng.standard_normal((16, 6, 6, 3)) + offsets).astype(np.float32)
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    fn = jax.jit(shard_map(lambda x: ops.batch_moments(x, axis_name="data"), mesh,
                           in_specs=P("data"), out_specs=P()))
    mean, var = fn(x)
    arrays.update({"centred/x": x, "centred/mean": np.asarray(mean),
                   "centred/var": np.asarray(var)})


def main(path: str, parts: list[str]) -> None:
    assert jax.device_count() == 8, f"needs 8 devices, got {jax.device_count()}"
    arrays, out = {}, {}
    if "trainer" in parts:
        train_runs(arrays, out)
    if "batch_norm" in parts:
        batch_norm_runs(arrays)
        badly_centred_moments(arrays)
    np.savez(path, **arrays)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
