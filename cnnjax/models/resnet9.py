"""ResNet-9, the small residual net of the fast CIFAR-10 trainers (Page 2018, "How to train your
ResNet", the DAWNBench entry that reached 94% in 24 epochs).

prep: conv 64 -> layer1: conv 128, 2x2 max-pool, residual (conv 128, conv 128) -> layer2: conv
256, max-pool -> layer3: conv 512, max-pool, residual (conv 512, conv 512) -> global max-pool ->
linear classifier whose logits are scaled by 0.125. Every conv is 3x3, no bias, followed by batch
norm and ReLU; a residual adds the block's input to the output of its two convolutions.
(N, H, W, 3), H, W >= 8 -> (N, num_classes). 6,573,120 parameters for 10 classes.
Initialisation: PyTorch's defaults, as the original (U(+-1/sqrt(fan_in)) weights; BN scale 1).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax import kernels, ops
from cnnjax.models.registry import register, require_min_size
from cnnjax.nn import BatchNorm, Conv, Dense

TORCH_DEFAULT_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# (name, width, max-pool after the conv, residual pair after)
LAYERS = (("prep", 64, False, False), ("layer1", 128, True, True), ("layer2", 256, True, False),
          ("layer3", 512, True, True))
LOGIT_SCALE = 0.125


class ConvBN(nn.Module):
    """3x3 conv (no bias) -> batch norm -> ReLU, keeping the spatial size."""

    features: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = Conv(self.features, 3, padding=1, use_bias=False, kernel_init=TORCH_DEFAULT_INIT,
                 dtype=self.dtype, name="conv")(x)
        return BatchNorm(activation="relu", dtype=self.dtype, name="bn")(x, train)


class ResNet9(nn.Module):
    num_classes: int = 10
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        require_min_size(x, 8, "resnet9")  # three halvings
        x = x.astype(self.dtype or x.dtype)
        for name, width, pool, residual in LAYERS:
            x = ConvBN(width, dtype=self.dtype, name=name)(x, train)
            if pool:
                x = kernels.max_pool2d(x, 2)
            if residual:
                y = ConvBN(width, dtype=self.dtype, name=f"{name}_res1")(x, train)
                x = x + ConvBN(width, dtype=self.dtype, name=f"{name}_res2")(y, train)
        x = ops.global_max_pool(x)
        logits = Dense(self.num_classes, use_bias=False, kernel_init=TORCH_DEFAULT_INIT,
                       dtype=self.dtype, name="fc")(x)
        return (logits * LOGIT_SCALE).astype(jnp.float32)


@register("resnet9", input_shape=(32, 32, 3), num_classes=10)
def resnet9(*, num_classes: int, **overrides) -> ResNet9:
    return ResNet9(num_classes=num_classes, **overrides)
