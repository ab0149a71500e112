"""Convolutions as pure functions on `lax.conv_general_dilated`.

Conventions: activations NHWC, kernels HWIO `(kh, kw, in_ch // groups, out_ch)`. Like every CNN
library, "convolution" here is cross-correlation (the kernel is not flipped).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from cnnjax.ops import hooks
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
    w = w.astype(x.dtype)
    # An explicit precision is XLA's to honour. A kernel (cnnjax.ops.hooks) may take the call.
    backend = hooks.kernel("conv")
    y = (backend(x, w, strides, pads, dilations, groups)
         if backend is not None and precision is None else None)
    if y is None:
        y = lax.conv_general_dilated(
            x, w, window_strides=strides, padding=pads, rhs_dilation=dilations,
            dimension_numbers=_DIMENSION_NUMBERS, feature_group_count=groups, precision=precision)
    if b is not None:
        y = y + b.astype(y.dtype)
    return y


def conv1d(x: jax.Array, w: jax.Array, b: jax.Array | None = None, *, stride: int = 1,
           padding: int | str | tuple[int, int] = 0, dilation: int = 1, groups: int = 1,
           padding_mode: str = "zeros") -> jax.Array:
    """1-D convolution for sequences (text CNNs): x (N, W, C_in), w (k, C_in // groups, C_out).

    `padding` is an int, a (left, right) pair, or "VALID"/"SAME"/"FULL". Returns (N, W_out, C_out).
    """
    _check_conv_args(x, w, groups, 3)
    if isinstance(padding, str):
        pad2d: Padding = padding
    elif isinstance(padding, int):
        pad2d = ((0, 0), (padding, padding))
    elif isinstance(padding, (tuple, list)) and len(padding) == 2:
        pad2d = ((0, 0), tuple(padding))
    else:
        raise ValueError(f"conv1d padding must be an int, a (left, right) pair or one of "
                         f"VALID/SAME/FULL, got {padding!r}")
    y = conv2d(x[:, None], w[None], b, stride=(1, stride), padding=pad2d, dilation=(1, dilation),
               groups=groups, padding_mode=padding_mode)
    return y[:, 0]


def conv_transpose2d(x: jax.Array, w: jax.Array, b: jax.Array | None = None, *, stride=1,
                     padding=0, output_padding=0, dilation=1, groups: int = 1) -> jax.Array:
    """Transposed ("fractionally strided") convolution with PyTorch's ConvTranspose2d semantics.

    Args:
      x: (N, H, W, C_in).
      w: (kh, kw, C_in, C_out // groups): note C_in, the channels of ITS input, comes first.
      padding: int or (h, w): crops `padding` pixels from each side of the full transposed
        output, as PyTorch does.
      output_padding: int or (h, w), < max(stride, dilation): extra rows/columns at the bottom/right
        that resolve the size ambiguity of strided convolution.
    Returns:
      (N, H_out, W_out, C_out), H_out = (H - 1) s - 2 p + d (kh - 1) + output_padding + 1. It is
      exactly the adjoint (the input gradient) of `conv2d` with kernel `w.transpose(0, 1, 3, 2)` at
      the same stride, padding and dilation.
    """
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"conv_transpose2d expects NHWC input and (kh, kw, C_in, C_out // groups) "
                         f"kernel, got shapes {tuple(x.shape)} and {tuple(w.shape)}")
    if not isinstance(groups, int) or groups < 1 or x.shape[-1] % groups:
        raise ValueError(f"groups={groups!r} must be a positive int dividing the "
                         f"{x.shape[-1]} input channels")
    if w.shape[2] != x.shape[-1]:
        raise ValueError(f"conv_transpose2d kernel expects {w.shape[2]} input channels, input has "
                         f"{x.shape[-1]} (x shape {tuple(x.shape)}, kernel shape {tuple(w.shape)})")
    (sh, sw), (dh, dw) = pair(stride, "stride"), pair(dilation, "dilation")
    (ph, pw), (oph, opw) = pair(padding, "padding", minimum=0), pair(output_padding, "output_padding", minimum=0)
    if oph >= max(sh, dh) or opw >= max(sw, dw):
        raise ValueError(f"output_padding {output_padding!r} must be smaller than max(stride, "
                         f"dilation) = {(max(sh, dh), max(sw, dw))}")
    kh, kw, cin, cout_g = w.shape
    n, h, wd, _ = x.shape
    out_shape = (n, (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1,
                 (wd - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1, groups * cout_g)
    # The backend computes it as conv2d's input gradient, where conv2d maps out_shape back onto
    # x's shape (output_padding < stride; larger, with dilation, it would map to more rows).
    backend = hooks.kernel("conv")
    y = (backend(x, w.transpose(0, 1, 3, 2).astype(x.dtype), (sh, sw), ((ph, ph), (pw, pw)),
                 (dh, dw), groups, input_shape=out_shape)
         if backend is not None and oph < sh and opw < sw else None)
    if y is None:
        # Regroup (kh, kw, C_in, C_out/g) into a forward HWIO kernel (C_in/g, C_out), flip it.
        wf = w.reshape(kh, kw, groups, cin // groups, cout_g).transpose(0, 1, 3, 2, 4)
        wf = wf.reshape(kh, kw, cin // groups, groups * cout_g)[::-1, ::-1]
        lo_h, lo_w = dh * (kh - 1) - ph, dw * (kw - 1) - pw
        pads = ((lo_h, lo_h + oph), (lo_w, lo_w + opw))
        y = lax.conv_general_dilated(
            x, wf.astype(x.dtype), window_strides=(1, 1),
            padding=tuple((max(lo, 0), max(hi, 0)) for lo, hi in pads), lhs_dilation=(sh, sw),
            rhs_dilation=(dh, dw), dimension_numbers=_DIMENSION_NUMBERS,
            feature_group_count=groups)
        # Padding larger than the kernel extent crops the output instead of padding it.
        crop_h = (max(-pads[0][0], 0), max(-pads[0][1], 0))
        crop_w = (max(-pads[1][0], 0), max(-pads[1][1], 0))
        y = y[:, crop_h[0]:y.shape[1] - crop_h[1], crop_w[0]:y.shape[2] - crop_w[1]]
    if b is not None:
        y = y + b.astype(y.dtype)
    return y


def depthwise_conv2d(x: jax.Array, w: jax.Array, b: jax.Array | None = None, *, stride=1,
                     padding: Padding = 0, dilation=1, padding_mode: str = "zeros") -> jax.Array:
    """Depthwise convolution: each input channel convolved with its own `multiplier` filters.

    x (N, H, W, C), w (kh, kw, 1, C * multiplier); output channel c * multiplier + m is filter m of
    input channel c (PyTorch's order for groups=C). Returns (N, H', W', C * multiplier).
    """
    if w.ndim != 4 or w.shape[2] != 1 or x.ndim != 4 or w.shape[3] % x.shape[-1]:
        raise ValueError(f"depthwise_conv2d expects x (N, H, W, C) and w (kh, kw, 1, C * multiplier),"
                         f" got shapes {tuple(x.shape)} and {tuple(w.shape)}")
    return conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=x.shape[-1],
                  padding_mode=padding_mode)


def separable_conv2d(x: jax.Array, w_depthwise: jax.Array, w_pointwise: jax.Array,
                     b: jax.Array | None = None, *, stride=1, padding: Padding = 0,
                     dilation=1) -> jax.Array:
    """Depthwise-separable convolution (MobileNet v1): a depthwise kxk convolution
    (w_depthwise (kh, kw, 1, C * m)) then a pointwise 1x1 convolution (w_pointwise (1, 1, C * m, C_out))."""
    y = depthwise_conv2d(x, w_depthwise, stride=stride, padding=padding, dilation=dilation)
    return conv2d(y, w_pointwise, b)


def _single_2d(a: jax.Array, k: jax.Array, mode: str, op: str) -> tuple[jax.Array, jax.Array, str]:
    if a.ndim != 2 or k.ndim != 2:
        raise ValueError(f"{op} works on single 2-D arrays, got shapes {tuple(a.shape)} and "
                         f"{tuple(k.shape)}")
    modes = {"valid": "VALID", "same": "SAME", "full": "FULL"}
    if mode not in modes:
        raise ValueError(f"{op} mode must be one of {sorted(modes)}, got {mode!r}")
    return a[None, :, :, None], k[:, :, None, None], modes[mode]


def correlate2d(a: jax.Array, k: jax.Array, mode: str = "valid") -> jax.Array:
    """Cross-correlation of a 2-D array with a 2-D kernel: out[i, j] = sum a[i + u, j + v] k[u, v].

    This is what CNNs call "convolution" (and what `conv2d` computes). `mode` is "valid", "same"
    or "full", as in scipy.signal.correlate2d.
    """
    x, w, padding = _single_2d(a, k, mode, "correlate2d")
    return conv2d(x, w, padding=padding)[0, :, :, 0]


def convolve2d(a: jax.Array, k: jax.Array, mode: str = "valid") -> jax.Array:
    """Mathematical 2-D convolution: correlation with the kernel rotated by 180 degrees,
    out[i, j] = sum a[i - u, j - v] k[u, v]; commutative, unlike correlation."""
    return correlate2d(a, k[::-1, ::-1], mode)
