"""airbench94 (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU", arXiv 2404.00498,
sec. 3.1-3.2): the network of the fastest published 94% CIFAR-10 recipe.

whiten: 2x2 convolution, 24 filters, no padding (its kernel is set from the training images'
patch statistics by `cnnjax.ops.whitening` and frozen; its bias trains, starting at zero as
airbench94.py's Conv.reset_parameters sets it) -> GELU -> three blocks
[3x3 conv -> 2x2 max-pool -> BN -> GELU -> 3x3 conv -> BN -> GELU] of widths 64, 256, 256 ->
3x3 max-pool -> linear (no bias) -> x 1/9. Each GELU after a batch norm is fused into it (one
kernel forward and backward on the CPU and the GPU; the same function).
airbench94_muon.py (configs/airbench94_muon.py) uses the same network with three changes, the
model's fields: the whitening bias from PyTorch's default uniform (`whiten_bias="torch"`), the
head's weights rescaled to unit standard deviation at init (`head_unit_std`), and the logits
divided by the head's 256 inputs instead of 9 (`logit_scale=1/256`).
Batch norm: scale fixed at 1 (no parameter), trainable bias, eps 1e-12, running statistics kept
at 0.6 per step (PyTorch momentum 0.4). The 3x3 convolutions have no bias and start as the
identity on their first input channels (`cnnjax.nn.init.dirac`), PyTorch's default uniform for
the rest. (N, 32, 32, 3) -> (N, num_classes): 32 -> 31 (whiten) -> 15 -> 7 -> 3 -> 1.
Parameters: 1,971,640 for 10 classes (the whitening kernel's 288 included).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax import kernels, ops
from cnnjax.models.registry import register, require_min_size
from cnnjax.models.resnet9 import TORCH_DEFAULT_INIT
from cnnjax.nn import BatchNorm, Conv, Dense
from cnnjax.nn.init import dirac, unit_std

WIDTHS = (64, 256, 256)
WHITEN_KERNEL = 2
BN_MOMENTUM = 0.6
BN_EPS = 1e-12
LOGIT_SCALE = 1 / 9


def torch_bias_init(fan_in: int):
    """PyTorch's default bias initialiser, U(+-1/sqrt(fan_in))."""
    bound = fan_in ** -0.5
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class ConvGroup(nn.Module):
    """conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU."""

    features: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        def conv(name):
            return Conv(self.features, 3, padding=1, use_bias=False,
                        kernel_init=dirac(TORCH_DEFAULT_INIT), dtype=self.dtype, name=name)

        def norm_gelu(name):  # GELU fused into the batch norm (one kernel on the CPU and GPU)
            return BatchNorm(momentum=BN_MOMENTUM, epsilon=BN_EPS, use_scale=False,
                             activation="gelu", dtype=self.dtype, name=name)

        x = kernels.max_pool2d(conv("conv1")(x), 2)
        x = norm_gelu("norm1")(x, train)
        return norm_gelu("norm2")(conv("conv2")(x), train)


WHITEN_BIAS = ("zeros", "torch")


class Airbench94(nn.Module):
    num_classes: int = 10
    widths: tuple[int, ...] = WIDTHS
    dtype: Any = None
    logit_scale: float = LOGIT_SCALE
    whiten_bias: str = "zeros"  # WHITEN_BIAS: zeros (airbench94.py) or PyTorch's default uniform
    head_unit_std: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        require_min_size(x, 25, "airbench94")  # a 2x2 conv, three halvings, then a 3x3 pool
        if self.whiten_bias not in WHITEN_BIAS:
            raise ValueError(f"airbench94 whiten_bias {self.whiten_bias!r}; expected one of "
                             f"{WHITEN_BIAS}")
        x = x.astype(self.dtype or x.dtype)
        fan_in = WHITEN_KERNEL * WHITEN_KERNEL * x.shape[-1]
        bias_init = (nn.initializers.zeros if self.whiten_bias == "zeros"
                     else torch_bias_init(fan_in))
        x = Conv(2 * fan_in, WHITEN_KERNEL, padding=0, kernel_init=TORCH_DEFAULT_INIT,
                 bias_init=bias_init, dtype=self.dtype, name="whiten")(x)
        x = ops.gelu(x)
        for i, width in enumerate(self.widths):
            x = ConvGroup(width, dtype=self.dtype, name=f"block{i + 1}")(x, train)
        x = kernels.max_pool2d(x, 3).reshape(x.shape[0], -1)
        head_init = unit_std(TORCH_DEFAULT_INIT) if self.head_unit_std else TORCH_DEFAULT_INIT
        logits = Dense(self.num_classes, use_bias=False, kernel_init=head_init,
                       dtype=self.dtype, name="head")(x)
        return (logits * self.logit_scale).astype(jnp.float32)


@register("airbench94", input_shape=(32, 32, 3), num_classes=10)
def airbench94(*, num_classes: int, **overrides) -> Airbench94:
    return Airbench94(num_classes=num_classes, **overrides)
