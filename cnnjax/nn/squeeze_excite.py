"""Squeeze-and-excitation (Hu et al. 2018, "Squeeze-and-excitation networks", sec. 3): the one
channel-attention block of MobileNetV3, EfficientNet and NFNets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax

from cnnjax import ops
from cnnjax.nn.layers import HE_FAN_OUT, Conv, Initializer


class SqueezeExcitation(nn.Module):
    """s = mean of x over H, W; the channel gate gate(fc2(activation(fc1(s)))) multiplies x.
    fc1 (C -> squeeze) and fc2 (squeeze -> C) are 1x1 convolutions with bias (torchvision's and
    timm's parameter names). (N, H, W, C) -> (N, H, W, C).

    `kernel_init`: torchvision's He fan-out for the mobile networks; NFNets pass their own
    (Kaiming fan-in, gain 1, as every NFNet convolution)."""

    squeeze: int
    activation: Callable[[jax.Array], jax.Array] = ops.relu
    gate: Callable[[jax.Array], jax.Array] = ops.sigmoid
    kernel_init: Initializer = HE_FAN_OUT
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        s = ops.global_avg_pool(x, keepdims=True)
        s = self.activation(Conv(self.squeeze, 1, kernel_init=self.kernel_init, dtype=self.dtype,
                                 name="fc1")(s))
        s = Conv(x.shape[-1], 1, kernel_init=self.kernel_init, dtype=self.dtype, name="fc2")(s)
        return x * self.gate(s).astype(x.dtype)
