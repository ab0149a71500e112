"""A deep plain CNN with a selectable activation: the lectures' vanishing-gradient experiment.

`depth` 3x3 convolutions of `width` channels (no batch norm, no shortcuts), the channels doubled
and the maps halved by a stride-2 convolution at the start of each of `stages` stages, global
average pooling and a linear classifier. (N, H, W, C) -> (N, num_classes), any H, W (the
strided convolutions are padded). With the default 28x28x1 input, depth 12, width 32 and 3
stages, 10 classes: 9 C_in C_out + C_out per convolution, 675,242 parameters in all.

Each activation gets the initialiser its paper prescribes (cnnjax.nn.layers.init_for_activation),
so the experiment compares activations, not initialisations: with sigmoid, the gradients reaching
the first layers shrink by orders of magnitude at initialisation; with ReLU/ELU/SELU they do not.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax import ops
from cnnjax.models.registry import register
from cnnjax.nn import Conv, Dense
from cnnjax.nn.layers import init_for_activation


class PlainCNN(nn.Module):
    """Convolutions `conv1`..`conv{depth}`; stage s (0-based) has width * 2**s channels."""

    num_classes: int = 10
    depth: int = 12
    width: int = 32
    stages: int = 3
    activation: str = "relu"
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no dropout or batch norm: the point is the bare stack
        if self.depth < self.stages:
            raise ValueError(f"plain_cnn: depth {self.depth} must be >= stages {self.stages}")
        act, init = ops.get_activation(self.activation), init_for_activation(self.activation)
        x = x.astype(self.dtype or x.dtype)
        per_stage = [self.depth // self.stages + (s < self.depth % self.stages)
                     for s in range(self.stages)]
        i = 0
        for s, n in enumerate(per_stage):
            for j in range(n):
                i += 1
                x = act(Conv(self.width * 2 ** s, 3, stride=2 if s and not j else 1, padding=1,
                             kernel_init=init, dtype=self.dtype, name=f"conv{i}")(x))
        x = ops.global_avg_pool(x)
        return Dense(self.num_classes, kernel_init=init, dtype=self.dtype,
                     name="output")(x).astype(jnp.float32)


@register("plain_cnn", input_shape=(28, 28, 1), num_classes=10)
def plain_cnn(*, num_classes: int, **overrides) -> PlainCNN:
    return PlainCNN(num_classes=num_classes, **overrides)
