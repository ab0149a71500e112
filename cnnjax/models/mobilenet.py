"""MobileNets: v1 (Howard et al. 2017, "MobileNets: efficient convolutional neural networks for
mobile vision applications", Table 1), v2 (Sandler et al. 2018, "MobileNetV2: inverted residuals
and linear bottlenecks", Table 2) and v3 large/small (Howard et al. 2019, "Searching for
MobileNetV3", Tables 1 and 2), all at width multiplier 1.0 and 224x224 inputs.

Parameter counts for 1000 classes: mobilenet_v1 4,231,976; mobilenet_v2 3,504,872;
mobilenet_v3_large 5,483,032; mobilenet_v3_small 2,542,856.

v2 and v3 are torchvision's layer for layer (the v3 SE widths make_divisible(expanded / 4, 8),
classifier dropout 0.2, batch norm eps 1e-5 / PyTorch momentum 0.1 for v2 and eps 1e-3 / momentum
0.01 for v3), module names included, so torchvision's state dicts load with `from_torch`.
v1 is not in torchvision; it follows Table 1 with batch norm and ReLU after every convolution
(Fig. 3) and two departures: the 13th depthwise layer has stride 1, not the "s2" printed in the
table, whose own input and output sizes (7x7 both) require stride 1; and batch norm uses PyTorch's
defaults (eps 1e-5, momentum 0.1), as the paper gives none.

Initialisation, as torchvision's: He et al.'s normal with fan-out scaling for every convolution,
batch norm scale 1 / bias 0, linear layers N(0, 0.01) with zero bias (v1 too: the paper states no
initialisation). Every strided layer is padded, so any input of at least 1x1 runs.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax import ops
from cnnjax.models.registry import register
from cnnjax.models.torch_weights import default_torch_key
from cnnjax.nn import BatchNorm, Dense, Dropout
from cnnjax.nn.mobile import (DepthwiseSeparable, InvertedResidual, MobileNetV3Block,
                              conv_norm_act)

LINEAR_INIT = nn.initializers.normal(0.01)

# Howard et al. 2017, Table 1: a 3x3/2 convolution to 32 channels, then 13 depthwise-separable
# layers as (output channels, depthwise stride).
V1_STEM = 32
V1_LAYERS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
             (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))

# Sandler et al. 2018, Table 2: stem 32, then stages of (expansion t, channels c, repeats n,
# first stride s), then a 1x1 convolution to 1280.
V2_STEM, V2_HEAD = 32, 1280
V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1))

# Howard et al. 2019, Tables 1 (large) and 2 (small): stem 16 (3x3/2, hard-swish), bottlenecks as
# (kernel, expanded, output channels, SE, activation, stride), a 1x1 convolution to 6x the last
# width (hard-swish), then the hidden classifier width.
V3_STEM = 16
V3_LAYERS = {
    "large": ((3, 16, 16, False, "relu", 1), (3, 64, 24, False, "relu", 2),
              (3, 72, 24, False, "relu", 1), (5, 72, 40, True, "relu", 2),
              (5, 120, 40, True, "relu", 1), (5, 120, 40, True, "relu", 1),
              (3, 240, 80, False, "hard_swish", 2), (3, 200, 80, False, "hard_swish", 1),
              (3, 184, 80, False, "hard_swish", 1), (3, 184, 80, False, "hard_swish", 1),
              (3, 480, 112, True, "hard_swish", 1), (3, 672, 112, True, "hard_swish", 1),
              (5, 672, 160, True, "hard_swish", 2), (5, 960, 160, True, "hard_swish", 1),
              (5, 960, 160, True, "hard_swish", 1)),
    "small": ((3, 16, 16, True, "relu", 2), (3, 72, 24, False, "relu", 2),
              (3, 88, 24, False, "relu", 1), (5, 96, 40, True, "hard_swish", 2),
              (5, 240, 40, True, "hard_swish", 1), (5, 240, 40, True, "hard_swish", 1),
              (5, 120, 48, True, "hard_swish", 1), (5, 144, 48, True, "hard_swish", 1),
              (5, 288, 96, True, "hard_swish", 2), (5, 576, 96, True, "hard_swish", 1),
              (5, 576, 96, True, "hard_swish", 1)),
}
V3_HIDDEN = {"large": 1280, "small": 1024}
V3_HEAD_EXPANSION = 6
# torchvision's BatchNorm2d(eps=0.001, momentum=0.01); Flax's momentum is 1 - PyTorch's.
V3_NORM = functools.partial(BatchNorm, epsilon=1e-3, momentum=0.99)


def torchvision_key(collection: str, path: tuple[str, ...]) -> str:
    """Flax path -> torchvision state_dict key: every `_N` is a Sequential index, so
    features_1/conv_0_0/kernel -> features.1.conv.0.0.weight."""
    modules = tuple(re.sub(r"_(\d+)", r".\1", name) for name in path[:-1])
    return default_torch_key(collection, modules + path[-1:])


class MobileNetV1(nn.Module):
    """(N, H, W, 3) -> (N, num_classes) float32 logits. Modules: `stem_0/1`,
    `block1`..`block13` (DepthwiseSeparable), `fc`."""

    num_classes: int = 1000
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.astype(self.dtype or x.dtype)
        x = conv_norm_act(x, train, V1_STEM, 3, stride=2, activation=ops.relu, dtype=self.dtype,
                          name="stem")
        for i, (features, stride) in enumerate(V1_LAYERS):
            x = DepthwiseSeparable(features, stride, dtype=self.dtype,
                                   name=f"block{i + 1}")(x, train)
        x = ops.global_avg_pool(x)
        return Dense(self.num_classes, kernel_init=LINEAR_INIT, dtype=self.dtype,
                     name="fc")(x).astype(jnp.float32)


class MobileNetV2(nn.Module):
    """(N, H, W, 3) -> (N, num_classes) float32 logits. Modules as torchvision's:
    `features_0` (stem), `features_1..17` (InvertedResidual), `features_18` (1x1 head),
    `classifier_1` (after dropout)."""

    num_classes: int = 1000
    dropout_rate: float = 0.2
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.astype(self.dtype or x.dtype)
        x = conv_norm_act(x, train, V2_STEM, 3, stride=2, activation=ops.relu6, dtype=self.dtype,
                          name="features_0")
        slot = 1
        for t, c, n, s in V2_STAGES:
            for j in range(n):
                x = InvertedResidual(c, s if j == 0 else 1, t, dtype=self.dtype,
                                     name=f"features_{slot}")(x, train)
                slot += 1
        x = conv_norm_act(x, train, V2_HEAD, activation=ops.relu6, dtype=self.dtype,
                          name=f"features_{slot}")
        x = Dropout(self.dropout_rate)(ops.global_avg_pool(x), train)
        return Dense(self.num_classes, kernel_init=LINEAR_INIT, dtype=self.dtype,
                     name="classifier_1")(x).astype(jnp.float32)


class MobileNetV3(nn.Module):
    """size "large" or "small": (N, H, W, 3) -> (N, num_classes) float32 logits.
    Modules as torchvision's: `features_0` (stem), `features_1..` (MobileNetV3Block), the last
    `features_N` (1x1 head), `classifier_0` (hidden, hard-swish, dropout), `classifier_3`."""

    size: str = "large"
    num_classes: int = 1000
    dropout_rate: float = 0.2
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.size not in V3_LAYERS:
            raise ValueError(f"MobileNetV3 size must be one of {sorted(V3_LAYERS)}, "
                             f"got {self.size!r}")
        x = x.astype(self.dtype or x.dtype)
        x = conv_norm_act(x, train, V3_STEM, 3, stride=2, activation=ops.hard_swish,
                          norm=V3_NORM, dtype=self.dtype, name="features_0")
        layers = V3_LAYERS[self.size]
        for i, (k, expanded, c, se, act, s) in enumerate(layers):
            x = MobileNetV3Block(c, k, expanded, s, se, ops.get_activation(act), norm=V3_NORM,
                                 dtype=self.dtype, name=f"features_{i + 1}")(x, train)
        x = conv_norm_act(x, train, V3_HEAD_EXPANSION * x.shape[-1], activation=ops.hard_swish,
                          norm=V3_NORM, dtype=self.dtype, name=f"features_{len(layers) + 1}")
        x = ops.global_avg_pool(x)
        x = ops.hard_swish(Dense(V3_HIDDEN[self.size], kernel_init=LINEAR_INIT, dtype=self.dtype,
                                 name="classifier_0")(x))
        x = Dropout(self.dropout_rate)(x, train)
        return Dense(self.num_classes, kernel_init=LINEAR_INIT, dtype=self.dtype,
                     name="classifier_3")(x).astype(jnp.float32)


def _builder(cls: type[nn.Module], **fixed):
    def build(*, num_classes: int, **overrides) -> nn.Module:
        return cls(num_classes=num_classes, **{**fixed, **overrides})
    return build


def _register_all() -> None:
    register("mobilenet_v1")(_builder(MobileNetV1))
    register("mobilenet_v2", torch_keys=torchvision_key)(_builder(MobileNetV2))
    for size in V3_LAYERS:
        register(f"mobilenet_v3_{size}", torch_keys=torchvision_key)(_builder(MobileNetV3,
                                                                             size=size))


_register_all()
