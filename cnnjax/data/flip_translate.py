"""Jordan 2024 (airbench, arXiv 2404.00498) augmentations, jit-able, for the device pipeline.

`alternating_flip` (sec. 3.6): a fixed random half of the training set is mirrored on even
epochs and the other half on odd epochs, so every image is seen both ways in any two consecutive
epochs (plain random flipping repeats an orientation for a quarter of the images). It needs each
example's index in the split and its epoch, which the data sources put in train batches
("index", "epoch").
`translate_reflect`: a random translation by up to `pad` pixels in each direction, the
uncovered border filled by reflection (PyTorch's F.pad(mode="reflect"), which repeats no edge
pixel).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def flip_choice(index: jax.Array, key: jax.Array) -> jax.Array:
    """The alternating flip's chosen half: True for the examples (indices into the split) that
    are mirrored on even epochs; a fixed function of (key, index), each True with probability 1/2."""
    return jax.vmap(lambda i: jax.random.bernoulli(jax.random.fold_in(key, i)))(index)


def alternating_flip(images: jax.Array, index: jax.Array, epoch: jax.Array,
                     key: jax.Array) -> jax.Array:
    """NHWC `images` of examples `index` (N,) in epochs `epoch` (N,) -> the same with the chosen
    half (`flip_choice`) mirrored on even epochs and the complement on odd ones. `key` must be
    the same for the whole run."""
    flip = flip_choice(index, key) ^ (epoch % 2 == 1)
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1], images)


def translate_reflect(images: jax.Array, key: jax.Array, pad: int = 2) -> jax.Array:
    """NHWC `images` each shifted by its own (dy, dx), uniform in [-pad, pad]^2, with reflection
    at the borders: output[y, x] = reflect_pad(image)[pad + dy + y, pad + dx + x]."""
    if images.ndim != 4:
        raise ValueError(f"translate_reflect needs NHWC images, got shape {tuple(images.shape)}")
    if not 0 <= pad < min(images.shape[1:3]):
        raise ValueError(f"translate_reflect: pad must be in [0, {min(images.shape[1:3]) - 1}] "
                         f"for {images.shape[1]}x{images.shape[2]} images, got {pad}")
    n, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    offsets = jax.random.randint(key, (n, 2), 0, 2 * pad + 1)
    return jax.vmap(lambda img, o: lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c)))(
        padded, offsets)
