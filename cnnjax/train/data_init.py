"""Initialisation from training data, after the random one and before the first step.

`config.whitening_init` = {"param": NAME, "num_images": N, "eps": EPS} sets the kernel of
convolution NAME (a top-level module of the model, e.g. airbench's "whiten") to the patch
whitening of `cnnjax.ops.whitening` computed on the first N training images of the run (the
start of epoch 0's random order), normalised as the device pipeline normalises them.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.data.augment import normalize, to_unit_range
from cnnjax.ops.whitening import patch_whitening_kernel
from cnnjax.train.state import TrainState


def sample_images(train_ds, count: int) -> np.ndarray:
    """The first `count` training images of epoch 0 (this process's rows), NHWC float32."""
    images, have = [], 0
    # A grain source reads its batches directly here, without starting worker processes.
    read = getattr(train_ds, "train_batch", None)
    for batch in (map(read, itertools.count()) if read else train_ds.batches(start_step=0)):
        # Prepared datasets hand out uint8; the model sees [0, 1] (cnnjax.data.device_pipeline).
        images.append(to_unit_range(np.asarray(batch["image"])).astype(np.float32))
        have += len(images[-1])
        if have >= count or have >= train_ds.num_examples:
            break
    return np.concatenate(images)[:count]


def whitening_init(state: TrainState, config, train_ds, tx) -> TrainState:
    """`state` with the whitening kernel set from the data (unchanged without
    `config.whitening_init`); the optimiser state is started again from the new parameters."""
    spec = config.get("whitening_init")
    if not spec:
        return state
    name = spec["param"]
    if name not in state.params or "kernel" not in state.params[name]:
        raise ValueError(f"whitening_init.param {name!r} is not a convolution of the model; its "
                         f"top-level parameters are {sorted(state.params)}")
    kernel = state.params[name]["kernel"]
    kh, kw, cin, cout = kernel.shape
    if kh != kw or cout != 2 * kh * kw * cin:
        raise ValueError(f"whitening_init: {name}'s kernel {kernel.shape} must be (k, k, C, 2 k^2 C)")
    images = sample_images(train_ds, spec["num_images"])
    mean, std = config.dataset.get("mean"), config.dataset.get("std")
    if mean:
        images = normalize(images, tuple(mean), tuple(std))
    new = patch_whitening_kernel(images, kh, spec.get("eps", 5e-4))
    params = {**state.params, name: {**state.params[name], "kernel": jnp.asarray(new)}}
    # The averages start from the initial parameters (cnnjax.train.state), so from these too.
    ema = ({**state.ema_params, name: jax.tree_util.tree_map(jnp.copy, params[name])}
           if state.ema_params else state.ema_params)
    return state.replace(params=params, opt_state=tx.init(params), ema_params=ema)
