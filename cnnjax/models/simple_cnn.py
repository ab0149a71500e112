"""A small LeNet-5-style CNN for small images (the default experiment's model).

conv 3x3 (32) -> [batch norm] -> ReLU -> max-pool 2 -> conv 3x3 (64) -> [batch norm] -> ReLU ->
max-pool 2 -> dense 128 -> ReLU -> dropout -> dense num_classes (batch norm off by default). On 8x8x1 digits: 8 -> 4 -> 2 spatially, 2*2*64 = 256 features.
He-normal initialisation (ReLU network).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax import kernels, ops
from cnnjax.models.registry import register, require_min_size
from cnnjax.nn import BatchNorm, Conv, Dense, Dropout


class SimpleCNN(nn.Module):
    num_classes: int = 10
    widths: tuple[int, ...] = (32, 64)
    hidden: int = 128
    dropout_rate: float = 0.25
    batch_norm: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        require_min_size(x, 2 ** len(self.widths), "simple_cnn")
        x = x.astype(self.dtype or x.dtype)
        for width in self.widths:
            x = Conv(width, 3, padding="SAME", use_bias=not self.batch_norm, dtype=self.dtype)(x)
            if self.batch_norm:
                x = BatchNorm(dtype=self.dtype)(x, train)
            x = ops.relu(x)
            x = kernels.max_pool2d(x, 2)
        x = x.reshape(x.shape[0], -1)
        x = ops.relu(Dense(self.hidden, dtype=self.dtype)(x))
        x = Dropout(self.dropout_rate)(x, train)
        return Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


@register("simple_cnn", input_shape=(8, 8, 1), num_classes=10)
def simple_cnn(*, num_classes: int, **overrides) -> SimpleCNN:
    return SimpleCNN(num_classes=num_classes, **overrides)
