"""EfficientNet-B0..B7 (Tan & Le 2019, "EfficientNet: rethinking model scaling for convolutional
neural networks"): the B0 baseline of Table 1, scaled by compound scaling (sec. 3.3).

Each variant scales B0 by a width coefficient w and a depth coefficient d: every channel count
becomes make_divisible(channels * w, 8) (`round_filters` of the reference code) and every stage's
layer count ceil(layers * d) (`round_repeats`); the stem is make_divisible(32 * w) and the head
make_divisible(1280 * w). The coefficients, resolutions and dropout rates are the published ones
(VARIANTS); nothing else is tabled. Parameter counts for 1000 classes: b0..b7 5,288,548 /
7,794,184 / 9,109,994 / 12,233,232 / 19,341,616 / 30,389,784 / 43,040,704 / 66,347,960.

Layer for layer torchvision's, module names included, so its state dicts load with `from_torch`:
MBConv blocks (cnnjax.nn.mobile) with SE to max(1, C_in // 4), swish everywhere, stochastic depth
rising linearly with the block index from 0 to 0.2 * (blocks - 1) / blocks, dropout before the
classifier. Batch norm as torchvision's: PyTorch's defaults (eps 1e-5, momentum 0.1) for b0-b4,
eps 1e-3 / momentum 0.01 for b5-b7 (whose weights were ported from TensorFlow). The paper's
momentum 0.99 is PyTorch's 0.01. Initialisation as torchvision's: He et al.'s normal with fan-out
scaling for convolutions, batch norm scale 1 / bias 0, the classifier U(+-1/sqrt(num_classes))
with zero bias. Every strided layer is padded, so any input of at least 1x1 runs.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax import ops
from cnnjax.models.mobilenet import torchvision_key
from cnnjax.models.registry import register
from cnnjax.nn import BatchNorm, Dense, Dropout
from cnnjax.nn.mobile import MBConv, conv_norm_act, make_divisible

# Tan & Le 2019, Table 1 (B0) stages 2-8: (expansion, kernel, first stride, input channels,
# output channels, layers). Stage 1 is a 3x3/2 convolution to 32 channels, stage 9 a 1x1
# convolution to 1280 channels, pooling and the classifier.
B0_STEM, B0_HEAD = 32, 1280
B0_STAGES = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2),
             (6, 3, 2, 40, 80, 3), (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4),
             (6, 3, 1, 192, 320, 1))
# variant: (width coefficient, depth coefficient, input resolution, dropout rate).
VARIANTS = {0: (1.0, 1.0, 224, 0.2), 1: (1.0, 1.1, 240, 0.2), 2: (1.1, 1.2, 260, 0.3),
            3: (1.2, 1.4, 300, 0.3), 4: (1.4, 1.8, 380, 0.4), 5: (1.6, 2.2, 456, 0.4),
            6: (1.8, 2.6, 528, 0.5), 7: (2.0, 3.1, 600, 0.5)}
TF_PORTED = frozenset({5, 6, 7})  # variants with TensorFlow's batch-norm constants
DROP_PATH_RATE = 0.2
CLASSIFIER_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_out", "uniform")


def scaled_stages(width: float, depth: float) -> tuple[tuple[int, int, int, int, int], ...]:
    """B0's stages under compound scaling: (expansion, kernel, first stride, output channels,
    layers) per stage."""
    return tuple((t, k, s, make_divisible(c_out * width), int(math.ceil(n * depth)))
                 for t, k, s, _, c_out, n in B0_STAGES)


class EfficientNet(nn.Module):
    """(N, H, W, 3) -> (N, num_classes) float32 logits. Modules as torchvision's:
    `features_0` (stem), `features_1..7` stages of MBConv `features_S_J`, `features_8` (head),
    `classifier_1` (after dropout)."""

    width: float = 1.0
    depth: float = 1.0
    num_classes: int = 1000
    dropout_rate: float = 0.2
    drop_path_rate: float = DROP_PATH_RATE
    bn_epsilon: float = 1e-5
    bn_momentum: float = 0.9  # Flax convention: 1 - PyTorch's momentum
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        norm = functools.partial(BatchNorm, epsilon=self.bn_epsilon, momentum=self.bn_momentum)
        x = x.astype(self.dtype or x.dtype)
        x = conv_norm_act(x, train, make_divisible(B0_STEM * self.width), 3, stride=2,
                          activation=ops.swish, norm=norm, dtype=self.dtype, name="features_0")
        stages = scaled_stages(self.width, self.depth)
        total = sum(n for *_, n in stages)
        index = 0
        for i, (t, k, s, c, n) in enumerate(stages):
            for j in range(n):
                x = MBConv(c, k, s if j == 0 else 1, t,
                           drop_path_rate=self.drop_path_rate * index / total, norm=norm,
                           dtype=self.dtype, name=f"features_{i + 1}_{j}")(x, train)
                index += 1
        x = conv_norm_act(x, train, make_divisible(B0_HEAD * self.width), activation=ops.swish,
                          norm=norm, dtype=self.dtype, name=f"features_{len(stages) + 1}")
        x = Dropout(self.dropout_rate)(ops.global_avg_pool(x), train)
        return Dense(self.num_classes, kernel_init=CLASSIFIER_INIT, dtype=self.dtype,
                     name="classifier_1")(x).astype(jnp.float32)


def _builder(variant: int):
    width, depth, _, dropout = VARIANTS[variant]
    eps, momentum = (1e-3, 0.99) if variant in TF_PORTED else (1e-5, 0.9)

    def build(*, num_classes: int, **overrides) -> EfficientNet:
        fixed = dict(width=width, depth=depth, dropout_rate=dropout, bn_epsilon=eps,
                     bn_momentum=momentum)
        return EfficientNet(num_classes=num_classes, **{**fixed, **overrides})
    return build


def _register_all() -> None:
    for variant, (_, _, resolution, _) in VARIANTS.items():
        register(f"efficientnet_b{variant}", input_shape=(resolution, resolution, 3),
                 torch_keys=torchvision_key)(_builder(variant))


_register_all()
