"""Flax layers over `cnnjax.ops`: parameters in `params`, running statistics in `batch_stats`.

Every layer takes `dtype` (the compute dtype, e.g. bfloat16 for mixed precision; None keeps the
input's) and `param_dtype` (float32 by default), so models get mixed precision by passing `dtype`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax import kernels, ops
from cnnjax.ops.shapes import Padding, pair

Initializer = Callable[..., jax.Array]
Dtype = Any
# He et al. 2015 normal scaled by fan-out: torchvision's initialiser for the convolutions of
# ResNet, VGG and the mobile networks, used wherever cnnjax matches torchvision's init.
HE_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

# Dense layers need nothing beyond a matrix product; flax's own keeps `kernel` (in, out) and `bias`.
Dense = nn.Dense


class Conv(nn.Module):
    """2-D convolution: `kernel` (kh, kw, C_in // groups, features) and optional `bias` (features,).

    The default initialiser is He et al.'s (2015) normal with fan-in scaling, right for ReLU nets;
    models that follow another paper pass their own.
    """

    features: int
    kernel_size: int | tuple[int, int]
    stride: int | tuple[int, int] = 1
    padding: Padding = 0
    dilation: int | tuple[int, int] = 1
    groups: int = 1
    use_bias: bool = True
    padding_mode: str = "zeros"
    kernel_init: Initializer = nn.initializers.he_normal()
    bias_init: Initializer = nn.initializers.zeros
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = pair(self.kernel_size, "kernel_size")
        in_ch = x.shape[-1]
        if in_ch % self.groups:
            raise ValueError(f"Conv {self.name}: groups={self.groups} does not divide the "
                             f"{in_ch} input channels")
        kernel = self.param("kernel", self.kernel_init,
                            (kh, kw, in_ch // self.groups, self.features), self.param_dtype)
        bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
                if self.use_bias else None)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        if (self.groups == in_ch == self.features and self.padding_mode == "zeros"
                and pair(self.dilation, "dilation") == (1, 1)):
            # Depthwise: the Pallas kernel on a GPU (kernels "auto" or "pallas"), else ops'.
            return kernels.depthwise_conv2d(x, kernel, bias, stride=self.stride,
                                            padding=self.padding)
        return ops.conv2d(x, kernel, bias, stride=self.stride, padding=self.padding,
                          dilation=self.dilation, groups=self.groups,
                          padding_mode=self.padding_mode)


class BatchNorm(nn.Module):
    """Batch normalisation over N, H, W: `scale`/`bias` params, `mean`/`var` batch_stats; then
    the optional residual add and `activation` (a name of ops.ACTIVATIONS), fused.

    Computes through ops.batch_norm, cnnjax's one batch norm (the fused kernel under kernels
    "auto": Pallas on a GPU, the CPU extension's on an x86-64 CPU), and
    ops.update_running_stats: running = momentum * running + (1 - momentum) * batch; Flax's 0.9 equals PyTorch's momentum=0.1. `axis_name` merges the
    statistics across a mapped axis of an enclosing shard_map. (The trainer's steps leave it
    None and name their data axis for every batch norm with `ops.mapping.batch_split_over`,
    on more than one device unless `per_device_batch_norm`.)
    """

    momentum: float = 0.9
    epsilon: float = 1e-5
    use_scale: bool = True
    use_bias: bool = True
    scale_init: Initializer = nn.initializers.ones
    bias_init: Initializer = nn.initializers.zeros
    axis_name: str | None = None
    activation: str = "identity"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, residual: jax.Array | None = None
                 ) -> jax.Array:
        """act(bn(x) + residual), x (..., C); `residual` like x or None."""
        c = x.shape[-1]
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
        running_var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
        scale = self.param("scale", self.scale_init, (c,), self.param_dtype) if self.use_scale else None
        bias = self.param("bias", self.bias_init, (c,), self.param_dtype) if self.use_bias else None
        if self.dtype is not None:
            x = x.astype(self.dtype)
            residual = None if residual is None else residual.astype(self.dtype)
        y, mean, var = ops.batch_norm(x, scale, bias, mean=running_mean.value,
                                      var=running_var.value, train=train, eps=self.epsilon,
                                      axis_name=self.axis_name, residual=residual,
                                      activation=self.activation)
        if train and not self.is_initializing():
            running_mean.value, running_var.value = ops.update_running_stats(
                running_mean.value, running_var.value, mean, var, self.momentum)
        return y


class Dropout(nn.Module):
    """Inverted dropout, active only when `train` is True; draws from the `dropout` RNG stream."""

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if not train or self.rate == 0.0:
            return x
        return ops.dropout(self.make_rng("dropout"), x, self.rate, deterministic=False)


class StochasticDepth(nn.Module):
    """Drops the whole residual branch of each example with probability `rate` in training and
    scales the kept ones by 1 / (1 - rate) (Huang et al. 2016); draws from the `dropout` stream.
    (N, ...) -> (N, ...)."""

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if not train or self.rate == 0.0:
            return x
        mask = jnp.ones((x.shape[0],) + (1,) * (x.ndim - 1), x.dtype)
        return x * ops.dropout(self.make_rng("dropout"), mask, self.rate, deterministic=False)


def init_for_activation(activation: str) -> Initializer:
    """The weight initialiser each activation's paper prescribes: Glorot & Bengio 2010 uniform
    for sigmoid and tanh, LeCun normal for SELU (Klambauer et al. 2017), He et al. 2015 normal
    (fan-in) for the ReLU family (ReLU, leaky/parametric ReLU, ELU)."""
    if activation in ("sigmoid", "tanh"):
        return nn.initializers.glorot_uniform()
    if activation == "selu":
        return nn.initializers.lecun_normal()
    return nn.initializers.he_normal()
