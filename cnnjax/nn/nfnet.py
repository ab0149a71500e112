"""Normaliser-free building blocks (Brock et al. 2021, "High-performance large-scale image
recognition without normalization"; signal propagation from Brock et al. 2021, "Characterizing
signal propagation to close the performance gap in unnormalized ResNets").

Without batch norm, each residual block keeps the variance of the signal analytically known:
  x_{l+1} = x_l + alpha * f(beta_l * g(x_l)),   beta_l = 1 / sqrt(Var(x_l)),
where g is a nonlinearity scaled by gamma so that Var(gamma * g(z)) = 1 for z ~ N(0, 1), and every
convolution in f uses scaled weight standardisation (so it maps unit variance to unit variance).
The residual branch then has variance alpha^2 and Var(x_{l+1}) = Var(x_l) + alpha^2; the first
block of a stage feeds its shortcut the normalised input too, which resets the variance to
1 + alpha^2. Layout NHWC, kernels HWIO; module and parameter names follow timm's `nfnet.py`, so
timm's state dicts load with `cnnjax.models.from_torch`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax import kernels, ops
from cnnjax.nn.layers import StochasticDepth
from cnnjax.nn.squeeze_excite import SqueezeExcitation

# 1 / std(gelu(z)) for z ~ N(0, 1): the value DeepMind estimated by sampling and timm uses (a
# float64 quadrature gives 1.70093; the released weights were trained with this one).
GELU_GAMMA = 1.7015043497085571
# Kaiming normal with fan-in and gain 1 (timm's and DeepMind's choice); scaled WS makes the scale
# irrelevant, only the direction of each filter matters.
WS_KERNEL_INIT = nn.initializers.variance_scaling(1.0, "fan_in", "normal")


def gamma_gelu(x: jax.Array) -> jax.Array:
    """GELU (exact erf form, as timm runs the weights) times GELU_GAMMA: unit variance for a
    standard normal input."""
    return ops.gelu(x) * jnp.asarray(GELU_GAMMA, x.dtype)


class ScaledStdConv(nn.Module):
    """Convolution with scaled weight standardisation (`ops.weight_standardize`), TF "SAME"
    padding (the extra pixel of a stride-2 window at the bottom/right, as DeepMind's code) and a
    bias: params `kernel` (kh, kw, C_in // groups, C_out), `bias` (C_out,), `gain` (C_out,)."""

    features: int
    kernel_size: int = 1
    stride: int = 1
    groups: int = 1
    epsilon: float = 1e-5  # timm's std_conv_eps for the NFNet-F models
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_ch = x.shape[-1]
        if in_ch % self.groups:
            raise ValueError(f"ScaledStdConv {self.name}: groups={self.groups} does not divide "
                             f"the {in_ch} input channels")
        k = self.kernel_size
        kernel = self.param("kernel", WS_KERNEL_INIT, (k, k, in_ch // self.groups, self.features),
                            self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        gain = self.param("gain", nn.initializers.ones, (self.features,), self.param_dtype)
        kernel = ops.weight_standardize(kernel, gain, eps=self.epsilon)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return ops.conv2d(x, kernel, bias, stride=self.stride, padding="SAME", groups=self.groups)


class NFBlock(nn.Module):
    """NFNet bottleneck block (Brock et al. 2021, Fig. 1 and sec. 4.1), (N, H, W, C_in) ->
    (N, ceil(H / stride), ceil(W / stride), features).

    out = act(x) * beta; shortcut = x, or conv1x1(avgpool2x2(out)) when the shape changes;
    branch = conv1x1 -> act -> grouped conv3x3 (stride) -> act -> grouped conv3x3 -> act ->
    conv1x1 -> attn_gain * SE -> stochastic depth -> * skipinit_gain;
    y = alpha * branch + shortcut.
    The bottleneck width is features * bottle_ratio in groups of `group_size` channels; SE
    squeezes the output to features * se_ratio. `skip_gain_init` initialises the learnable
    scalar `skipinit_gain` (SkipInit, De & Smith 2020): 0 makes the block the identity at init.
    """

    features: int
    stride: int = 1
    alpha: float = 0.2
    beta: float = 1.0
    bottle_ratio: float = 0.5
    group_size: int = 128
    se_ratio: float = 0.5
    attn_gain: float = 2.0
    drop_path_rate: float = 0.0
    skip_gain_init: float = 0.0
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        mid = int(self.features * self.bottle_ratio)
        if mid % self.group_size:
            raise ValueError(f"NFBlock {self.name}: bottleneck width {mid} is not a multiple of "
                             f"group_size={self.group_size}")
        groups = mid // self.group_size

        def conv(features: int, name: str, k: int = 1, **kw) -> ScaledStdConv:
            return ScaledStdConv(features, k, dtype=self.dtype, name=name, **kw)

        x = x.astype(self.dtype or x.dtype)
        out = gamma_gelu(x) * jnp.asarray(self.beta, x.dtype)
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.features:
            pooled = out
            if self.stride != 1:
                pooled = kernels.avg_pool2d(out, 2, stride=self.stride, ceil_mode=True,
                                            count_include_pad=False)
            shortcut = conv(self.features, "downsample_conv")(pooled)
        h = conv(mid, "conv1")(out)
        h = conv(mid, "conv2", 3, stride=self.stride, groups=groups)(gamma_gelu(h))
        h = conv(mid, "conv2b", 3, groups=groups)(gamma_gelu(h))
        h = conv(self.features, "conv3")(gamma_gelu(h))
        h = SqueezeExcitation(int(self.features * self.se_ratio), kernel_init=WS_KERNEL_INIT,
                              dtype=self.dtype, name="attn_last")(h) * jnp.asarray(self.attn_gain, h.dtype)
        h = StochasticDepth(self.drop_path_rate)(h, train)
        skip_gain = self.param("skipinit_gain", nn.initializers.constant(self.skip_gain_init), (),
                               jnp.float32)
        return h * (skip_gain * self.alpha).astype(h.dtype) + shortcut

