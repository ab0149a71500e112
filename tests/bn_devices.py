"""One train step of simple_cnn with batch norm, through the trainer's compiled sharded step
(cnnjax.train.step.compile_steps), on a mesh of 1 device and on a mesh of 8 forced host devices,
with synchronised and with per-device batch norm. Run as a script in a process started with
XLA_FLAGS=--xla_force_host_platform_device_count=8; writes an .npz of flat arrays:

  x, label                      the global batch (64, 8, 8, 1), (64,)
  init/<path>                   initial params and batch_stats
  <mode>/loss                   mode in one_device, sync8, local8
  <mode>/params/<path>, <mode>/batch_stats/<path>   the state after the step

    python tests/bn_devices.py OUT.npz
"""

from __future__ import annotations

import pathlib
import sys

import jax
import numpy as np
from jax.sharding import Mesh

from cnnjax.sweep.config_file import load_module
from cnnjax.train.sharding import shardings
from cnnjax.train.state import init_state
from cnnjax.train.step import compile_steps
from cnnjax.train.trainer import build_model_and_optimizer

REPO = pathlib.Path(__file__).resolve().parent.parent


def _flat(tree, prefix: str) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {prefix + "/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
            for path, v in leaves}


def main(out: str) -> None:
    assert jax.device_count() == 8, f"needs 8 devices, got {jax.device_count()}"
    config = load_module(REPO / "configs" / "default.py").get_config("smoke")
    config.model.batch_norm, config.model.dropout_rate = True, 0.0
    # A constant rate: the warm-up's step-0 rate of 0 would leave the parameters (and so the
    # gradients) out of the comparison.
    config.schedule = {"name": "constant"}
    model, schedule, tx, _ = build_model_and_optimizer(config, 10, 22)
    state = jax.tree_util.tree_map(np.asarray, init_state(model, tx, (8, 8, 1), 0, use_ema=False))
    rng = np.random.default_rng(0)
    # Each device's 8 rows get their own brightness, so per-device statistics differ clearly
    # from the global batch's.
    shift = np.repeat(np.linspace(0.0, 0.5, 8), 8)[:, None, None, None]
    batch = {"image": (rng.uniform(0, 0.5, (64, 8, 8, 1)) + shift).astype(np.float32),
             "label": rng.integers(0, 10, 64).astype(np.int32)}
    arrays = {"x": batch["image"], "label": batch["label"], **_flat(state.params, "init/params/"),
              **_flat(state.batch_stats, "init/batch_stats/")}
    for mode, devices, per_device in (("one_device", 1, False), ("sync8", 8, False),
                                      ("local8", 8, True)):
        mesh = Mesh(np.asarray(jax.devices()[:devices]), ("data",))
        config.per_device_batch_norm = per_device
        data_sharding, replicated = shardings(mesh)
        train_fn, _ = compile_steps(model, tx, schedule, config, 10, mesh, data_sharding, replicated)
        new, metrics = train_fn(jax.device_put(state, replicated),
                                jax.device_put(batch, data_sharding))
        arrays[f"{mode}/loss"] = np.asarray(metrics["loss"])
        arrays.update(_flat(new.params, f"{mode}/params/"))
        arrays.update(_flat(new.batch_stats, f"{mode}/batch_stats/"))
    np.savez(out, **arrays)


if __name__ == "__main__":
    main(sys.argv[1])
