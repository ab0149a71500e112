"""U-Net blocks (Ronneberger et al. 2015, Fig. 1): the contracting path's down blocks and the
expansive path's up blocks, NHWC.

The 3x3 convolutions are zero-padded ("same"), not unpadded as in the paper, so a block keeps the
spatial size and skip connections need no cropping: a U-Net of these blocks maps an H x W input
to an H x W output for any H, W divisible by 2 ** (number of down blocks).
Initialisation is the paper's (sec. 3): Gaussian with standard deviation sqrt(2 / N), N the
number of incoming nodes of one neuron (9 C_in for a 3x3 convolution, C_in for the 2x2
up-convolution, whose stride-2 windows do not overlap); biases zero.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax import kernels, ops
from cnnjax.nn.layers import Conv

# std sqrt(2 / (kh kw C_in)) for an HWIO kernel.
UNET_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def up_conv_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """std sqrt(2 / C_in) for a (2, 2, C_in, C_out) up-convolution kernel: each output pixel sees
    one input pixel's C_in channels."""
    return jax.random.normal(key, shape, dtype) * (2.0 / shape[2]) ** 0.5


class DoubleConv(nn.Module):
    """Two 3x3 convolutions, each followed by a ReLU: (N, H, W, C) -> (N, H, W, features)."""

    features: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in (1, 2):
            x = ops.relu(Conv(self.features, 3, padding=1, kernel_init=UNET_CONV_INIT,
                              dtype=self.dtype, name=f"conv{i}")(x))
        return x


class DownBlock(nn.Module):
    """One contracting step: 2x2 max-pool (stride 2), then the double convolution that sets the
    new width (the paper doubles it): (N, H, W, C) -> (N, H/2, W/2, features)."""

    features: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return DoubleConv(self.features, dtype=self.dtype, name="convs")(kernels.max_pool2d(x, 2))


class UpConv(nn.Module):
    """The paper's "up-convolution": a 2x2 transposed convolution with stride 2,
    (N, H, W, C) -> (N, 2H, 2W, features); kernel (2, 2, C, features) as ops.conv_transpose2d."""

    features: int
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", up_conv_init, (2, 2, x.shape[-1], self.features),
                            self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return ops.conv_transpose2d(x, kernel, bias, stride=2)


class UpBlock(nn.Module):
    """One expansive step: up-convolution to `features` channels (the paper halves them),
    concatenation with the skip connection from the contracting path ([skip, up] along channels),
    double convolution: (N, H, W, C), skip (N, 2H, 2W, C_skip) -> (N, 2H, 2W, features)."""

    features: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, skip: jax.Array) -> jax.Array:
        up = UpConv(self.features, dtype=self.dtype, name="up")(x)
        if up.shape[1:3] != skip.shape[1:3]:
            raise ValueError(f"UpBlock {self.name}: upsampled map {tuple(up.shape[1:3])} does not "
                             f"match the skip connection {tuple(skip.shape[1:3])}")
        x = jnp.concatenate([skip.astype(up.dtype), up], axis=-1)
        return DoubleConv(self.features, dtype=self.dtype, name="convs")(x)
