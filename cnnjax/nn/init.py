"""Initialisers beyond Flax's: for kernels in this codebase's HWIO layout."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

Initializer = nn.initializers.Initializer


def dirac(base: Initializer) -> Initializer:
    """Identity ("Dirac") initialisation of a convolution kernel (kh, kw, C_in, C_out), as
    PyTorch's `nn.init.dirac_` applied to the first C_in filters (Jordan 2024, airbench): filter
    j < min(C_in, C_out) is a one at the spatial centre of input channel j and zero elsewhere, so
    the layer starts by passing its first channels through (shifted by half the kernel when
    even-sized); the other filters come from `base`."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
        if len(shape) != 4:
            raise ValueError(f"dirac init needs a 4-D kernel (kh, kw, C_in, C_out), got {shape}")
        kh, kw, cin, cout = shape
        k = min(cin, cout)
        eye = jnp.zeros((kh, kw, cin, k), dtype).at[kh // 2, kw // 2].set(jnp.eye(cin, k, dtype=dtype))
        return base(key, shape, dtype).at[..., :k].set(eye)

    return init


def unit_std(base: Initializer) -> Initializer:
    """`base`, then the whole tensor divided by its standard deviation (unbiased, as PyTorch's
    `w.std()`): airbench94_muon.py's head, `w *= 1 / w.std()` after PyTorch's default init."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
        w = base(key, shape, dtype)
        return w / jnp.std(w, ddof=1)

    return init
