"""Convolutions as pure functions on `lax.conv_general_dilated`.

Conventions: activations NHWC, kernels HWIO `(kh, kw, in_ch // groups, out_ch)`. Like every CNN
library, "convolution" here is cross-correlation (the kernel is not flipped).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from cnnjax.ops.shapes import Padding, explicit_padding, pair

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
# PyTorch's names mapped to jnp.pad's.
_PAD_MODE_TO_NUMPY = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}
_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def _check_conv_args(x: jax.Array, w: jax.Array, groups: int, ndim: int) -> None:
    if x.ndim != ndim:
        layout = "NHWC" if ndim == 4 else "NWC"
        raise ValueError(f"input must be {ndim}-D ({layout}), got shape {tuple(x.shape)}")
    if w.ndim != ndim:
        layout = "HWIO" if ndim == 4 else "WIO"
        raise ValueError(f"kernel must be {ndim}-D ({layout}), got shape {tuple(w.shape)}")
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    in_ch, out_ch = x.shape[-1], w.shape[-1]
    if in_ch % groups or out_ch % groups:
        raise ValueError(f"groups={groups} must divide both input channels ({in_ch}) and output "
                         f"channels ({out_ch})")
    if w.shape[-2] * groups != in_ch:
        raise ValueError(f"kernel expects {w.shape[-2]} x groups={groups} = "
                         f"{w.shape[-2] * groups} input channels, input has {in_ch} "
                         f"(x shape {tuple(x.shape)}, kernel shape {tuple(w.shape)})")


def pad_spatial(x: jax.Array, pads: tuple[tuple[int, int], ...], mode: str) -> jax.Array:
    """Pads the spatial axes of an N...C array with PyTorch's `padding_mode` semantics."""
    if mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {mode!r}")
    widths = ((0, 0),) + tuple(pads) + ((0, 0),)
    if mode == "zeros":
        return jnp.pad(x, widths)
    return jnp.pad(x, widths, mode=_PAD_MODE_TO_NUMPY[mode])


def conv2d(x: jax.Array, w: jax.Array, b: jax.Array | None = None, *, stride=1,
           padding: Padding = 0, dilation=1, groups: int = 1, padding_mode: str = "zeros",
           precision: lax.Precision | None = None) -> jax.Array:
    """2-D convolution (cross-correlation).

    Args:
      x: input, (N, H, W, C_in).
      w: kernel, (kh, kw, C_in // groups, C_out).
      b: optional bias, (C_out,).
      stride, dilation: int or (h, w).
      padding: int, (h, w), ((top, bottom), (left, right)), "VALID", "SAME" or "FULL".
      groups: feature groups; C_in and C_out must both be divisible by it.
      padding_mode: "zeros", "reflect", "replicate" or "circular" (PyTorch's meanings).
    Returns:
      (N, H_out, W_out, C_out) with H_out = floor((H + pad_h - d(kh - 1) - 1) / s + 1).
    """
    _check_conv_args(x, w, groups, 4)
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    strides, dilations = pair(stride, "stride"), pair(dilation, "dilation")
    pads = explicit_padding(padding, x.shape[1:3], w.shape[:2], strides, dilations)
    if padding_mode != "zeros":
        x, pads = pad_spatial(x, pads, padding_mode), ((0, 0), (0, 0))
    y = lax.conv_general_dilated(
        x, w.astype(x.dtype), window_strides=strides, padding=pads, rhs_dilation=dilations,
        dimension_numbers=_DIMENSION_NUMBERS, feature_group_count=groups, precision=precision)
    if b is not None:
        y = y + b.astype(y.dtype)
    return y
