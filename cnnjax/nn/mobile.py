"""Blocks of the mobile networks: MobileNet v1 (Howard et al. 2017), v2 (Sandler et al. 2018),
v3 (Howard et al. 2019) and EfficientNet (Tan & Le 2019). NHWC in, NHWC out.

Module names follow torchvision's nn.Sequential slots with `_N` for `.N` (`block_1_0` holds what
torchvision calls `block.1.0`), so its state dicts load with `cnnjax.models.from_torch`. Every
convolution is He et al.'s normal with fan-out scaling and no bias (a batch norm follows), as
torchvision initialises these networks; the squeeze-excitation 1x1 convolutions have zero biases.
`norm` builds the batch norm (cnnjax.nn.BatchNorm, or a functools.partial of it with the
epsilon/momentum a model needs) and `dtype` is the compute dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax

from cnnjax import ops
from cnnjax.nn.layers import HE_FAN_OUT, BatchNorm, Conv, StochasticDepth
from cnnjax.nn.squeeze_excite import SqueezeExcitation

Activation = Callable[[jax.Array], jax.Array]
NormFactory = Callable[..., nn.Module]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """`value` rounded to the nearest multiple of `divisor` (at least `min_value`, default
    `divisor`), bumped up one multiple if rounding lost more than 10%: the channel rule of the
    MobileNet v2/v3 and EfficientNet reference code (EfficientNet's `round_filters`)."""
    floor = divisor if min_value is None else min_value
    rounded = max(floor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def conv_norm_act(x: jax.Array, train: bool, features: int, kernel_size: int = 1, *,
                  name: str, stride: int = 1, groups: int = 1,
                  activation: Activation | None = None, norm: NormFactory = BatchNorm,
                  dtype: Any = None) -> jax.Array:
    """torchvision's Conv2dNormActivation, built inside the calling module: a bias-free
    `kernel_size` convolution `{name}_0` with padding (k - 1) // 2, the batch norm `{name}_1`,
    then `activation` (None: linear), fused into the batch norm when it is one of
    ops.ACTIVATIONS (one kernel under kernels "pallas"). (N, H, W, C) -> (N, ceil(H / stride),
    ceil(W / stride), features)."""
    x = Conv(features, kernel_size, stride=stride, padding=(kernel_size - 1) // 2, groups=groups,
             use_bias=False, kernel_init=HE_FAN_OUT, dtype=dtype, name=f"{name}_0")(x)
    fused = "identity" if activation is None else next(
        (key for key, fn in ops.ACTIVATIONS.items() if fn is activation), None)
    x = norm(activation=fused or "identity", dtype=dtype, name=f"{name}_1")(x, train)
    return activation(x) if fused is None else x


class DepthwiseSeparable(nn.Module):
    """MobileNet v1 block (Howard et al. 2017, Fig. 3 right): 3x3 depthwise convolution
    (`stride`) -> BN -> ReLU -> 1x1 pointwise convolution -> BN -> ReLU.
    (N, H, W, C) -> (N, H / stride, W / stride, features); modules `depthwise_0/1`,
    `pointwise_0/1`."""

    features: int
    stride: int = 1
    norm: NormFactory = BatchNorm
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c = x.shape[-1]
        x = conv_norm_act(x, train, c, 3, stride=self.stride, groups=c, activation=ops.relu,
                          norm=self.norm, dtype=self.dtype, name="depthwise")
        return conv_norm_act(x, train, self.features, activation=ops.relu, norm=self.norm,
                             dtype=self.dtype, name="pointwise")


class InvertedResidual(nn.Module):
    """MobileNet v2 bottleneck (Sandler et al. 2018, Table 1): 1x1 expansion to
    round(C * expand_ratio) -> BN -> ReLU6 (left out when expand_ratio is 1) -> 3x3 depthwise
    (`stride`) -> BN -> ReLU6 -> linear 1x1 projection -> BN, plus the input when stride is 1
    and C == features. (N, H, W, C) -> (N, H / stride, W / stride, features).
    Modules follow torchvision's `conv` Sequential: `conv_0_*` [, `conv_1_*`], then the
    projection convolution `conv_K` and its batch norm `conv_{K+1}`."""

    features: int
    stride: int
    expand_ratio: int
    norm: NormFactory = BatchNorm
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c = x.shape[-1]
        hidden = int(round(c * self.expand_ratio))
        h, slot = x, 0
        if self.expand_ratio != 1:
            h = conv_norm_act(h, train, hidden, activation=ops.relu6, norm=self.norm,
                              dtype=self.dtype, name="conv_0")
            slot = 1
        h = conv_norm_act(h, train, hidden, 3, stride=self.stride, groups=hidden,
                          activation=ops.relu6, norm=self.norm, dtype=self.dtype,
                          name=f"conv_{slot}")
        h = Conv(self.features, 1, use_bias=False, kernel_init=HE_FAN_OUT, dtype=self.dtype,
                 name=f"conv_{slot + 1}")(h)
        # The residual add is fused into the batch norm (one kernel under kernels "pallas").
        residual = x if self.stride == 1 and c == self.features else None
        return self.norm(dtype=self.dtype, name=f"conv_{slot + 2}")(h, train, residual)


class MobileNetV3Block(nn.Module):
    """MobileNet v3 bottleneck (Howard et al. 2019, Fig. 4 and Tables 1-2): 1x1 expansion to
    `expanded` -> BN -> activation (left out when expanded == C) -> k x k depthwise (`stride`)
    -> BN -> activation -> [squeeze-excitation to make_divisible(expanded / 4) with ReLU and a
    hard-sigmoid gate] -> linear 1x1 projection -> BN, plus the input when stride is 1 and
    C == features. (N, H, W, C) -> (N, H / stride, W / stride, features); modules `block_N`
    in torchvision's order."""

    features: int
    kernel_size: int
    expanded: int
    stride: int
    use_se: bool
    activation: Activation
    norm: NormFactory = BatchNorm
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c = x.shape[-1]
        h, slot = x, 0
        if self.expanded != c:
            h = conv_norm_act(h, train, self.expanded, activation=self.activation,
                              norm=self.norm, dtype=self.dtype, name="block_0")
            slot = 1
        h = conv_norm_act(h, train, self.expanded, self.kernel_size, stride=self.stride,
                          groups=self.expanded, activation=self.activation, norm=self.norm,
                          dtype=self.dtype, name=f"block_{slot}")
        slot += 1
        if self.use_se:
            h = SqueezeExcitation(make_divisible(self.expanded // 4), gate=ops.hard_sigmoid,
                                  dtype=self.dtype, name=f"block_{slot}")(h)
            slot += 1
        h = conv_norm_act(h, train, self.features, norm=self.norm, dtype=self.dtype,
                          name=f"block_{slot}")
        return h + x if self.stride == 1 and c == self.features else h


class MBConv(nn.Module):
    """EfficientNet's mobile inverted bottleneck (Tan & Le 2019, Table 1; from MnasNet):
    1x1 expansion to make_divisible(C * expand_ratio) -> BN -> swish (left out when that is C)
    -> k x k depthwise (`stride`) -> BN -> swish -> squeeze-excitation to max(1, C // 4) with
    swish and a sigmoid gate -> linear 1x1 projection -> BN. When stride is 1 and
    C == features the input is added back, after stochastic depth (Huang et al. 2016) drops the
    branch of each example with probability `drop_path_rate` in training.
    (N, H, W, C) -> (N, H / stride, W / stride, features); modules `block_N` in torchvision's
    order."""

    features: int
    kernel_size: int
    stride: int
    expand_ratio: int
    drop_path_rate: float = 0.0
    norm: NormFactory = BatchNorm
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c = x.shape[-1]
        expanded = make_divisible(c * self.expand_ratio)
        h, slot = x, 0
        if expanded != c:
            h = conv_norm_act(h, train, expanded, activation=ops.swish, norm=self.norm,
                              dtype=self.dtype, name="block_0")
            slot = 1
        h = conv_norm_act(h, train, expanded, self.kernel_size, stride=self.stride,
                          groups=expanded, activation=ops.swish, norm=self.norm,
                          dtype=self.dtype, name=f"block_{slot}")
        h = SqueezeExcitation(max(1, c // 4), activation=ops.swish, dtype=self.dtype,
                              name=f"block_{slot + 1}")(h)
        h = conv_norm_act(h, train, self.features, norm=self.norm, dtype=self.dtype,
                          name=f"block_{slot + 2}")
        if self.stride == 1 and c == self.features:
            return StochasticDepth(self.drop_path_rate)(h, train) + x
        return h
