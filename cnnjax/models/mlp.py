"""The lectures' baseline: flatten the image, fully connected hidden layers, a classifier.

Every hidden unit sees every pixel, so the model has no notion of locality or translation:
the comparison point for CNNs (experiments/mlp_vs_cnn).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax import ops
from cnnjax.models.registry import register
from cnnjax.nn import Dense, Dropout


class MLP(nn.Module):
    num_classes: int = 10
    hidden: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    dropout_rate: float = 0.0
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        act = ops.get_activation(self.activation)
        x = x.reshape(x.shape[0], -1).astype(self.dtype or x.dtype)
        for width in self.hidden:
            x = Dropout(self.dropout_rate)(act(Dense(width, dtype=self.dtype)(x)), train)
        return Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


@register("mlp", input_shape=(28, 28, 1), num_classes=10)
def mlp(*, num_classes: int, **overrides) -> MLP:
    return MLP(num_classes=num_classes, **overrides)
