"""The lectures' baseline: flatten the image, fully connected hidden layers, a linear classifier.

Every hidden unit sees every pixel, so the model has no notion of locality or translation: the
comparison point for CNNs (experiments/mlp_vs_cnn). (N, H, W, C) -> (N, num_classes); the input
size is fixed by the first layer's weights at initialisation. Parameters: sum over layers of
(fan_in + 1) x width; the default (28x28x1 -> 256 -> 256 -> 10) has 200,960 + 65,792 + 2,570 =
269,322. Dropout (off by default) follows each hidden activation.
Initialisation matches the activation: He et al. 2015 normal for the ReLU family, LeCun normal
for SELU (Klambauer et al. 2017), Glorot & Bengio 2010 uniform for tanh and sigmoid; biases zero.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax import ops
from cnnjax.models.registry import register
from cnnjax.nn import Dense, Dropout
from cnnjax.nn.layers import init_for_activation

class MLP(nn.Module):
    """`hidden`: widths of the hidden layers; `activation`: a name in ops.ACTIVATIONS."""

    num_classes: int = 10
    hidden: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    dropout_rate: float = 0.0
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        act = ops.get_activation(self.activation)
        init = init_for_activation(self.activation)
        x = x.reshape(x.shape[0], -1).astype(self.dtype or x.dtype)
        for i, width in enumerate(self.hidden):
            x = act(Dense(width, kernel_init=init, dtype=self.dtype, name=f"hidden{i + 1}")(x))
            x = Dropout(self.dropout_rate)(x, train)
        return Dense(self.num_classes, kernel_init=init, dtype=self.dtype,
                     name="output")(x).astype(jnp.float32)


@register("mlp", input_shape=(28, 28, 1), num_classes=10)
def mlp(*, num_classes: int, **overrides) -> MLP:
    return MLP(num_classes=num_classes, **overrides)
