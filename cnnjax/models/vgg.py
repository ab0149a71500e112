"""VGG (Simonyan & Zisserman 2015, "Very deep convolutional networks for large-scale image
recognition", Table 1), configurations A, B, D, E = vgg11, vgg13, vgg16, vgg19, with and without
batch norm (torchvision's `_bn` variants, after each convolution, before the ReLU).

Five stages of 3x3 convolutions (stride 1, padding 1) with 64, 128, 256, 512, 512 channels, each
stage ended by a 2x2/2 max-pool; then fc 4096 -> fc 4096 -> fc classes with ReLU and dropout 0.5
after the two hidden layers. Before the classifier, torchvision's adaptive 7x7 average pooling:
the identity at the paper's 224x224 (7x7 maps), and what lets any input from 32x32 (five
halvings to 1x1) work. Counts for 1000 classes: vgg11/13/16/19 132,863,336 / 133,047,848 /
138,357,544 / 143,667,240; batch norm adds 2 x (sum of conv widths).

Module names are torchvision's nn.Sequential slots (`features_7`, `classifier_3`) and the 7x7x512
maps are flattened channel-major as torch does, so torchvision's weights load with `from_torch`.
Initialisation: the paper trained A from N(0, 0.01) and initialised the deeper nets from it, then
notes (sec. 3.1) that a proper random initialisation works without that pre-training. Here He et
al.'s (2015) normal with fan-out scaling for convolutions (torchvision's choice, shown by He et al.
to train the 19-layer net from scratch), N(0, 0.01) for the linear layers, biases zero.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax import kernels, ops
from cnnjax.models.registry import register, require_min_size
from cnnjax.models.torch_weights import sequential_torch_key
from cnnjax.nn import BatchNorm, Conv, Dense, Dropout
from cnnjax.nn.layers import HE_FAN_OUT

STAGE_WIDTHS = (64, 128, 256, 512, 512)
# Table 1: 3x3 convolutions per stage in configurations A, B, D, E.
STAGE_DEPTHS = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3),
                19: (2, 2, 4, 4, 4)}
HIDDEN = 4096
POOLED = 7  # the classifier's input maps are 7x7
LINEAR_INIT = nn.initializers.normal(0.01)


class VGG(nn.Module):
    """(N, H, W, 3), H, W >= 32 -> (N, num_classes) float32 logits; `stage_depths` are the 3x3
    convolutions per stage (STAGE_DEPTHS)."""

    stage_depths: tuple[int, ...] = STAGE_DEPTHS[16]
    batch_norm: bool = False
    num_classes: int = 1000
    dropout_rate: float = 0.5
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        name = f"vgg{sum(self.stage_depths) + 3}{'_bn' if self.batch_norm else ''}"
        require_min_size(x, 2 ** len(self.stage_depths), name)  # one halving per stage
        x = x.astype(self.dtype or x.dtype)
        slot = 0  # torchvision's Sequential index: conv, [bn], relu per conv; one per pool
        for depth, width in zip(self.stage_depths, STAGE_WIDTHS):
            for _ in range(depth):
                x = Conv(width, 3, padding=1, kernel_init=HE_FAN_OUT, dtype=self.dtype,
                         name=f"features_{slot}")(x)
                if self.batch_norm:
                    x = BatchNorm(dtype=self.dtype, name=f"features_{slot + 1}")(x, train)
                x = ops.relu(x)
                slot += 3 if self.batch_norm else 2
            x = kernels.max_pool2d(x, 2)
            slot += 1
        x = ops.adaptive_avg_pool(x, POOLED)
        x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)  # torch's channel-major flatten
        for slot in (0, 3):
            x = ops.relu(Dense(HIDDEN, kernel_init=LINEAR_INIT, dtype=self.dtype,
                               name=f"classifier_{slot}")(x))
            x = Dropout(self.dropout_rate)(x, train)
        return Dense(self.num_classes, kernel_init=LINEAR_INIT, dtype=self.dtype,
                     name="classifier_6")(x).astype(jnp.float32)


def _builder(stage_depths: tuple[int, ...], batch_norm: bool):
    def build(*, num_classes: int, **overrides) -> VGG:
        return VGG(stage_depths=stage_depths, batch_norm=batch_norm, num_classes=num_classes,
                   **overrides)
    return build


def _register_all() -> None:
    for layers, depths in STAGE_DEPTHS.items():
        register(f"vgg{layers}", torch_keys=sequential_torch_key)(_builder(depths, False))
        register(f"vgg{layers}_bn", torch_keys=sequential_torch_key)(_builder(depths, True))


_register_all()
