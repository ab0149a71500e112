"""VGG (Simonyan & Zisserman 2015): configurations A (11 layers), B (13), D (16), E (19), with and
without batch norm (torchvision's _bn variants).

Stacks of 3x3 convolutions (padding 1) with 2x2 max-pooling after each stage; then adaptive 7x7
pooling (torchvision's, so other input sizes work) and 4096-4096-classes fully connected layers
with dropout 0.5. Initialisation as torchvision: He normal (fan-out) convolutions, zero biases,
N(0, 0.01) linear weights. Module names follow torchvision's nn.Sequential slots.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax import ops
from cnnjax.models.registry import register, require_min_size
from cnnjax.models.torch_weights import sequential_torch_key
from cnnjax.nn import BatchNorm, Conv, Dense, Dropout

# Table 1 of the paper: output channels per 3x3 conv, "M" for a 2x2 max-pool.
CONFIGS = {
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "B": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "E": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"),
}
DEPTHS = {11: "A", 13: "B", 16: "D", 19: "E"}
HE_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class VGG(nn.Module):
    config: tuple = CONFIGS["D"]
    batch_norm: bool = False
    num_classes: int = 1000
    dropout_rate: float = 0.5
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        require_min_size(x, 32, "VGG")  # five 2x2 pools
        x = x.astype(self.dtype or x.dtype)
        index = 0  # the torch nn.Sequential slot of each layer
        for v in self.config:
            if v == "M":
                x = ops.max_pool(x, 2)
                index += 1
                continue
            x = Conv(v, 3, padding=1, kernel_init=HE_FAN_OUT, dtype=self.dtype, name=f"features_{index}")(x)
            index += 1
            if self.batch_norm:
                x = BatchNorm(dtype=self.dtype, name=f"features_{index}")(x, train)
                index += 1
            x = ops.relu(x)
            index += 1
        x = ops.adaptive_avg_pool(x, 7)
        x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)  # torch's NCHW flatten order
        for slot in (0, 3):
            x = ops.relu(Dense(4096, kernel_init=nn.initializers.normal(0.01), dtype=self.dtype,
                               name=f"classifier_{slot}")(x))
            x = Dropout(self.dropout_rate)(x, train)
        return Dense(self.num_classes, kernel_init=nn.initializers.normal(0.01), dtype=self.dtype,
                     name="classifier_6")(x).astype(jnp.float32)


def _register_all() -> None:
    for depth, letter in DEPTHS.items():
        for bn in (False, True):
            def build(*, num_classes: int, _c=CONFIGS[letter], _bn=bn, **overrides) -> VGG:
                return VGG(config=_c, batch_norm=_bn, num_classes=num_classes, **overrides)
            register(f"vgg{depth}{'_bn' if bn else ''}", torch_keys=sequential_torch_key)(build)


_register_all()
