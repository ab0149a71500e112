"""The run's random streams: every JAX key comes from one root key per run, by purpose, then step.

    stream_key(seed, purpose, step) = fold_in(fold_in(PRNGKey(seed), purpose), step)

Streams of different purposes, seeds or steps share a key only by hash chance (2^-64 a pair),
whereas deriving them from neighbouring seeds (PRNGKey(seed + 1) for augmentation) makes seed
s's augmentation stream seed s + 1's dropout stream, correlating the runs of a sweep over seeds.
A stream is a function of (seed, step) alone, so a resumed run draws the same keys. Derive from a
stream key in one way only: under JAX's partitionable threefry, split(k)[i] equals
fold_in(k, i). The host-side data order and augmentation use NumPy generators seeded with
(seed, epoch) and (seed, 1 << 20, step) (cnnjax.data.source).
"""

from __future__ import annotations

import jax

# The purposes, one per stream; the values only need to differ.
PARAMS_INIT = 1  # parameter initialisation (no step)
DROPOUT = 2  # dropout masks; under per-device batch norm folded once more with the device index
DEVICE_INPUT = 3  # device-side augmentation and batch mixing (split in two by DevicePipeline)
RUN = 4  # drawn once per run (no step): the alternating flip's fixed half
PURPOSES = {"params_init": PARAMS_INIT, "dropout": DROPOUT, "device_input": DEVICE_INPUT,
            "run": RUN}


def stream_key(seed: int, purpose: int, step: int | jax.Array | None = None) -> jax.Array:
    """The key of stream `purpose` (one of PURPOSES' values) of run `seed` at `step` (a scalar,
    traced inside the train step); `step=None` for the streams drawn once (initialisation)."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), purpose)
    return key if step is None else jax.random.fold_in(key, step)
