"""LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998, "Gradient-based learning applied to document
recognition", sec. II.B and Fig. 2).

32x32x1 input -> C1: 6 5x5 convolutions (28x28) -> S2: 2x2 subsampling (14x14) -> C3: 16 5x5
convolutions (10x10) -> S4: 2x2 subsampling (5x5) -> C5: 120 5x5 convolutions (1x1) -> F6: 84
units -> output: num_classes units. Squashing function: the paper's scaled tanh
f(a) = 1.7159 tanh(2a/3) (Appendix A) after every layer but the output.

Differences from the paper, all the usual modern ones: C3 connects to all six S2 maps (the paper's
Table I leaves some out), S2/S4 are plain 2x2 averages (the paper's per-map trainable coefficient
and bias would add 12 + 32 parameters) and the output is a linear layer instead of fixed Euclidean
RBF units. Parameters: 156 + 2,416 + 48,120 + 10,164 + 850 = 61,706 for 10 classes.
MNIST's 28x28 digits are padded to 32x32 (2 pixels on each side) before entering, as in the paper.
Initialisation (Appendix A): weights uniform in (-2.4 / F, 2.4 / F), F the fan-in; biases zero.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax import kernels, ops
from cnnjax.models.registry import register
from cnnjax.nn import Conv, Dense

INPUT_SIZE = 32
# (name, output maps) of the convolutional layers C1, C3, C5; S2 and S4 follow C1 and C3.
CONV_LAYERS = (("c1", 6), ("c3", 16), ("c5", 120))
F6_UNITS = 84


def lecun98_uniform(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """U(-2.4 / F, 2.4 / F) with F = the fan-in (all axes but the last: kh kw C_in, or D_in)."""
    bound = 2.4 / math.prod(shape[:-1])
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def scaled_tanh(x: jax.Array) -> jax.Array:
    """LeCun's squashing function 1.7159 tanh(2x/3): f(1) = 1 and f(-1) = -1."""
    return 1.7159 * ops.tanh(x * (2.0 / 3.0))


class LeNet5(nn.Module):
    """LeNet-5 on (N, 32, 32, C) images -> (N, num_classes) logits (float32)."""

    num_classes: int = 10
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no dropout or batch norm in LeNet-5
        if x.ndim != 4 or x.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"lenet5 needs NHWC inputs of exactly {INPUT_SIZE}x{INPUT_SIZE} (pad "
                             f"28x28 MNIST digits by 2 pixels on each side), got shape "
                             f"{tuple(x.shape)}")
        x = x.astype(self.dtype or x.dtype)
        for i, (name, maps) in enumerate(CONV_LAYERS):
            x = scaled_tanh(Conv(maps, 5, kernel_init=lecun98_uniform, dtype=self.dtype,
                                 name=name)(x))
            if i < len(CONV_LAYERS) - 1:
                x = kernels.avg_pool2d(x, 2)
        x = x.reshape(x.shape[0], -1)
        x = scaled_tanh(Dense(F6_UNITS, kernel_init=lecun98_uniform, dtype=self.dtype,
                              name="f6")(x))
        return Dense(self.num_classes, kernel_init=lecun98_uniform, dtype=self.dtype,
                     name="output")(x).astype(jnp.float32)


@register("lenet5", input_shape=(INPUT_SIZE, INPUT_SIZE, 1), num_classes=10)
def lenet5(*, num_classes: int, **overrides) -> LeNet5:
    return LeNet5(num_classes=num_classes, **overrides)
