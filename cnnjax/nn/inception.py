"""Inception modules (Szegedy et al. 2015, "Going deeper with convolutions", Fig. 2) and the
GoogLeNet auxiliary classifier.

Every branch runs on the same NHWC input at stride 1 with "same" padding, so the branches'
outputs concatenate along channels. Module names follow torchvision's GoogLeNet (`branch1`,
`branch2_0` for its `branch2.0`, ..., `conv`/`bn` inside a `BasicConv`) so that its weights map
one to one.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax import kernels, ops
from cnnjax.nn.layers import BatchNorm, Conv, Dense, Dropout, Initializer

# torchvision's GoogLeNet: truncated normal std 0.01 for convolutions and linear layers.
GOOGLENET_INIT = nn.initializers.truncated_normal(0.01)


class BasicConv(nn.Module):
    """conv -> [batch norm] -> ReLU, torchvision's `BasicConv2d` (batch norm with eps 1e-3 and no
    conv bias); with `batch_norm=False` the paper's conv with bias -> ReLU."""

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    batch_norm: bool = True
    kernel_init: Initializer = GOOGLENET_INIT
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = Conv(self.features, self.kernel_size, stride=self.stride, padding=self.padding,
                 use_bias=not self.batch_norm, kernel_init=self.kernel_init, dtype=self.dtype,
                 name="conv")(x)
        if self.batch_norm:
            x = BatchNorm(epsilon=1e-3, dtype=self.dtype, name="bn")(x, train)
        return ops.relu(x)


class NaiveInception(nn.Module):
    """Fig. 2(a): 1x1, 3x3 and 5x5 convolutions and a 3x3 max-pool, side by side on the input.

    (N, H, W, C) -> (N, H, W, ch1x1 + ch3x3 + ch5x5 + C): the pooling branch keeps all C input
    channels, which is why stacking these modules grows the width (and cost) without bound.
    """

    ch1x1: int
    ch3x3: int
    ch5x5: int
    batch_norm: bool = False
    kernel_init: Initializer = GOOGLENET_INIT
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        conv = dict(batch_norm=self.batch_norm, kernel_init=self.kernel_init, dtype=self.dtype)
        return jnp.concatenate([
            BasicConv(self.ch1x1, 1, name="branch1", **conv)(x, train),
            BasicConv(self.ch3x3, 3, padding=1, name="branch2", **conv)(x, train),
            BasicConv(self.ch5x5, 5, padding=2, name="branch3", **conv)(x, train),
            kernels.max_pool2d(x, 3, stride=1, padding=1),
        ], axis=-1)


class Inception(nn.Module):
    """Fig. 2(b), the module GoogLeNet stacks: 1x1 reductions before the 3x3 and 5x5
    convolutions and a 1x1 projection after the 3x3 max-pool.

    Widths as in the paper's Table 1 columns: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool
    proj. (N, H, W, C) -> (N, H, W, ch1x1 + ch3x3 + ch5x5 + pool_proj). `wide_kernel` is the
    kernel of the "5x5" branch: 5 in the paper, 3 in torchvision's GoogLeNet (a slip torchvision
    keeps for its published weights).
    """

    ch1x1: int
    ch3x3red: int
    ch3x3: int
    ch5x5red: int
    ch5x5: int
    pool_proj: int
    wide_kernel: int = 5
    batch_norm: bool = True
    kernel_init: Initializer = GOOGLENET_INIT
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        conv = dict(batch_norm=self.batch_norm, kernel_init=self.kernel_init, dtype=self.dtype)
        b1 = BasicConv(self.ch1x1, 1, name="branch1", **conv)(x, train)
        b2 = BasicConv(self.ch3x3red, 1, name="branch2_0", **conv)(x, train)
        b2 = BasicConv(self.ch3x3, 3, padding=1, name="branch2_1", **conv)(b2, train)
        b3 = BasicConv(self.ch5x5red, 1, name="branch3_0", **conv)(x, train)
        b3 = BasicConv(self.ch5x5, self.wide_kernel, padding=self.wide_kernel // 2,
                       name="branch3_1", **conv)(b3, train)
        b4 = kernels.max_pool2d(x, 3, stride=1, padding=1)
        b4 = BasicConv(self.pool_proj, 1, name="branch4_1", **conv)(b4, train)
        return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class InceptionAux(nn.Module):
    """GoogLeNet's auxiliary classifier (sec. 5): average-pool to 4x4, 1x1 conv with 128 filters,
    fully connected 1024 + ReLU, dropout 70%, linear classifier. (N, H, W, C) -> (N, num_classes).

    The pooling is adaptive to 4x4 (torchvision's; the paper's 5x5/3 average pool gives 4x4 from
    the 14x14 maps of a 224 input), and the 4x4x128 features are flattened channel-major, as torch
    does, so torchvision's fc1 weights need no permutation.
    """

    num_classes: int
    dropout_rate: float = 0.7
    batch_norm: bool = True
    kernel_init: Initializer = GOOGLENET_INIT
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = ops.adaptive_avg_pool(x, 4)
        x = BasicConv(128, 1, batch_norm=self.batch_norm, kernel_init=self.kernel_init,
                      dtype=self.dtype, name="conv")(x, train)
        x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)
        x = ops.relu(Dense(1024, kernel_init=self.kernel_init, dtype=self.dtype, name="fc1")(x))
        x = Dropout(self.dropout_rate)(x, train)
        return Dense(self.num_classes, kernel_init=self.kernel_init, dtype=self.dtype,
                     name="fc2")(x)
