"""Random images and labels of any shape and class count, for throughput benchmarks and tests.

Generated deterministically from the seed; `benchmark.py` uses `device_batch` to put one batch on
the accelerator once, so the input pipeline is never what is measured.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def synthetic_arrays(num_examples: int, image_shape: tuple[int, int, int], num_classes: int,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 (N, H, W, C) standard normal, labels int32 (N,) uniform)."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((num_examples, *image_shape), dtype=np.float32)
    return images, rng.integers(0, num_classes, num_examples).astype(np.int32)


def device_batch(batch_size: int, image_shape: tuple[int, ...], num_classes: int,
                 seed: int = 0, dtype=jnp.float32, label_shape: tuple[int, ...] = (),
                 vocab_size: int = 100) -> dict[str, jax.Array]:
    """One batch generated directly on the default device.

    image: (N, *image_shape) standard normal, or for an integer `dtype` token ids uniform in
    [1, vocab_size) (0 is padding); label: (N, *label_shape) int32 uniform in [0, num_classes),
    label_shape () for one class per example, (H, W) for one per pixel.
    """
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    shape = (batch_size, *image_shape)
    if jnp.issubdtype(dtype, jnp.integer):
        image = jax.random.randint(k1, shape, 1, vocab_size, dtype)
    else:
        image = jax.random.normal(k1, shape, dtype)
    return {"image": image, "label": jax.random.randint(k2, (batch_size, *label_shape), 0,
                                                        num_classes, jnp.int32)}
