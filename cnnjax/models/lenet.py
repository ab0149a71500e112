"""LeNet-5 (LeCun et al. 1998), on 32x32x1 input.

C1: 6 maps 5x5 -> 28x28, S2: 2x2 average subsampling -> 14x14, C3: 16 maps 5x5 -> 10x10 (full
connections to the six S2 maps, the common simplification of the paper's partial table),
S4 -> 5x5, C5: 120 maps 5x5 -> 1x1, F6: 84, output 10. tanh activations. The subsampling layers
here have no trainable coefficients, giving the usual 61,706 parameters. LeCun-style
initialisation: uniform with variance 1 / fan_in.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax import ops
from cnnjax.models.registry import register
from cnnjax.nn import Conv, Dense

LECUN = nn.initializers.lecun_uniform()


class LeNet5(nn.Module):
    num_classes: int = 10
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if x.shape[1:3] != (32, 32):
            raise ValueError(f"lenet5 needs 32x32 inputs (C5 must reduce to 1x1), got "
                             f"{x.shape[1]}x{x.shape[2]}; pad 28x28 MNIST by 2")
        x = x.astype(self.dtype or x.dtype)
        x = ops.avg_pool(ops.tanh(Conv(6, 5, kernel_init=LECUN, dtype=self.dtype, name="c1")(x)), 2)
        x = ops.avg_pool(ops.tanh(Conv(16, 5, kernel_init=LECUN, dtype=self.dtype, name="c3")(x)), 2)
        x = ops.tanh(Conv(120, 5, kernel_init=LECUN, dtype=self.dtype, name="c5")(x))
        x = x.reshape(x.shape[0], -1)
        x = ops.tanh(Dense(84, kernel_init=LECUN, dtype=self.dtype, name="f6")(x))
        return Dense(self.num_classes, kernel_init=LECUN, dtype=self.dtype, name="output")(x).astype(jnp.float32)


@register("lenet5", input_shape=(32, 32, 1), num_classes=10)
def lenet5(*, num_classes: int, **overrides) -> LeNet5:
    return LeNet5(num_classes=num_classes, **overrides)
