"""1-D convolution layer over `ops.conv1d`, for sequence models (text CNNs).

Activations are NWC `(N, W, C)`; the kernel is `(k, C_in // groups, features)`, the layout
`from_torch` gives a torch Conv1d weight `(out, in // groups, k)`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax import ops
from cnnjax.nn.layers import Initializer


class Conv1D(nn.Module):
    """1-D convolution: `kernel` (k, C_in // groups, features) and optional `bias` (features,).

    `padding` is an int, a (left, right) pair or "VALID"/"SAME"/"FULL". The default initialiser
    is He et al.'s normal (fan-in); models that follow another paper pass their own.
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: int | str | tuple[int, int] = 0
    dilation: int = 1
    groups: int = 1
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.he_normal()
    bias_init: Initializer = nn.initializers.zeros
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 3:
            raise ValueError(f"Conv1D {self.name}: input must be (N, W, C), got shape "
                             f"{tuple(x.shape)}")
        in_ch = x.shape[-1]
        if in_ch % self.groups:
            raise ValueError(f"Conv1D {self.name}: groups={self.groups} does not divide the "
                             f"{in_ch} input channels")
        kernel = self.param("kernel", self.kernel_init,
                            (self.kernel_size, in_ch // self.groups, self.features),
                            self.param_dtype)
        bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
                if self.use_bias else None)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return ops.conv1d(x, kernel, bias, stride=self.stride, padding=self.padding,
                          dilation=self.dilation, groups=self.groups)
