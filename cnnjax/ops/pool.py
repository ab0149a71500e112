"""Pooling as pure functions on NHWC arrays, with PyTorch's semantics for the same arguments.

`window`, `stride` and `padding` take ints or (h, w) pairs as for convolution (padding also
((top, bottom), (left, right)), "VALID", "SAME"); `stride` defaults to the window. `ceil_mode`
lets the last window hang over the bottom/right edge (PyTorch's rule: it must start inside the
input or its left padding).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnnjax.ops.precision import compute_dtype
from cnnjax.ops.shapes import Padding, explicit_padding, pair


def _check_nhwc(x: jax.Array, op: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{op} expects a 4-D NHWC input, got shape {tuple(x.shape)}")


def _ceil_extra(n: int, k: int, s: int, lo: int, hi: int) -> int:
    """Extra bottom/right padding that ceil_mode adds (PyTorch's output-size rule)."""
    out = math.ceil((n + lo + hi - k) / s) + 1
    if (out - 1) * s >= n + lo:  # the last window would start in the right padding
        out -= 1
    return max((out - 1) * s + k - (n + lo + hi), 0)


def _windows(x: jax.Array, window, stride, padding: Padding, ceil_mode: bool, op: str):
    """Resolves pooling arguments into reduce_window's (window, strides, explicit pads, ceil pads)."""
    _check_nhwc(x, op)
    kh, kw = pair(window, "window")
    sh, sw = pair(window if stride is None else stride, "stride")
    pads = explicit_padding(padding, x.shape[1:3], (kh, kw), (sh, sw), (1, 1))
    for (lo, hi), k in zip(pads, (kh, kw)):
        if isinstance(padding, (int, tuple, list)) and max(lo, hi) > k // 2:
            raise ValueError(f"{op}: padding {padding!r} must be at most half the window "
                             f"{(kh, kw)} (PyTorch's rule: every window must see real input)")
    extra = ((0, _ceil_extra(x.shape[1], kh, sh, *pads[0])),
             (0, _ceil_extra(x.shape[2], kw, sw, *pads[1]))) if ceil_mode else ((0, 0), (0, 0))
    if min(x.shape[1] + sum(pads[0]) + extra[0][1], x.shape[2] + sum(pads[1]) + extra[1][1]) < min(kh, kw):
        raise ValueError(f"{op}: window {(kh, kw)} is larger than the padded input "
                         f"{tuple(x.shape[1:3])}")
    return (1, kh, kw, 1), (1, sh, sw, 1), pads, extra


def _full_pads(pads, extra):
    return ((0, 0),) + tuple((lo + e_lo, hi + e_hi) for (lo, hi), (e_lo, e_hi) in zip(pads, extra)) + ((0, 0),)


def _tiles(x: jax.Array, kh: int, kw: int) -> jax.Array:
    """(N, H, W, C) -> (N, H // kh, kh, W // kw, kw, C): the non-overlapping windows; the rows
    and columns past the last whole window are dropped, as floor-mode pooling drops them."""
    n, h, w, c = x.shape
    ho, wo = h // kh, w // kw
    return x[:, :ho * kh, :wo * kw].reshape(n, ho, kh, wo, kw, c)


def _reduce_window_max(x: jax.Array, dims, strides, pads) -> jax.Array:
    # A concrete (NumPy) init value lets JAX recognise the max monoid, which it can differentiate.
    return lax.reduce_window(x, np.array(-np.inf, x.dtype), lax.max, dims, strides, pads)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _tiled_max(x: jax.Array, kh: int, kw: int) -> jax.Array:
    """Max pooling with stride = window and no padding. Its value is reduce_window's (so the
    model graph of cnnjax.analysis sees a max-pool); its derivative is below."""
    return _reduce_window_max(x, (1, kh, kw, 1), (1, kh, kw, 1), ((0, 0),) * 4)


@_tiled_max.defjvp
def _tiled_max_jvp(kh: int, kw: int, primals, tangents):
    # Computed on the windows as a reshape (elementwise, fused by XLA), with no select-and-
    # scatter in the gradient. The derivative of a plain reshape + max would split the tangent
    # among tied maxima; this one takes it from the element PyTorch's max_pool2d picks: the
    # first maximum in row-major window order, or the last NaN if the window has one. It is
    # linear in the tangent, so JAX transposes it into the gradient.
    # The value is _tiled_max itself, not tiles.max: differentiated again (a second derivative
    # either way round), it then follows this same rule, where jnp's max would split the
    # derivative among tied maxima and the two orders would disagree at ties.
    (x,), (t,) = primals, tangents
    tiles = _tiles(x, kh, kw)
    y = _tiled_max(x, kh, kw)
    k = kh * kw
    order = (np.arange(kh)[:, None] * kw + np.arange(kw)[None, :])[None, None, :, None, :, None]
    score = jnp.where(jnp.isnan(tiles), 2 * k + order,
                      jnp.where(tiles == y[:, :, None, :, None], k - order, -1))
    picked = score == score.max(axis=(2, 4), keepdims=True)
    taken = jnp.where(picked, _tiles(t, kh, kw), jnp.zeros((), t.dtype))
    return y, taken.sum(axis=(2, 4))


def max_pool(x: jax.Array, window, *, stride=None, padding: Padding = 0,
             ceil_mode: bool = False) -> jax.Array:
    """Max over each window; padding counts as -inf, so it never wins. (N, H, W, C) -> (N, H', W', C).

    The gradient goes to the first maximum of a window in row-major order (PyTorch's rule).
    Non-overlapping windows without padding (the common 2x2 / stride 2) have their own
    derivative, elementwise on the reshaped windows (faster than select-and-scatter: see
    experiments/airbench94/README.md); it also follows PyTorch's rule for NaNs (the last NaN of
    a window gets the gradient). Other windows are differentiated by XLA's select-and-scatter,
    which does not follow that NaN rule. Second derivatives (Hessian-vector products either way
    round) follow the same choice, as PyTorch's double backward does.
    """
    dims, strides, pads, extra = _windows(x, window, stride, padding, ceil_mode, "max_pool")
    full = _full_pads(pads, extra)
    if dims == strides and full == ((0, 0),) * 4:
        return _tiled_max(x, dims[1], dims[2])
    return _reduce_window_max(x, dims, strides, full)


def avg_pool(x: jax.Array, window, *, stride=None, padding: Padding = 0,
             count_include_pad: bool = True, ceil_mode: bool = False) -> jax.Array:
    """Mean over each window. With `count_include_pad` the explicit zero padding counts in the
    divisor (PyTorch's default); the overhang added by `ceil_mode` never does."""
    dims, strides, pads, extra = _windows(x, window, stride, padding, ceil_mode, "avg_pool")
    full = _full_pads(pads, extra)
    sums = lax.reduce_window(x, np.array(0, x.dtype), lax.add, dims, strides, full)
    # Divisor per output position: reduce a map of the positions that count (static shapes only).
    h, w = x.shape[1:3]
    counted = np.ones((1, h, w, 1), np.float32)
    if count_include_pad:
        counted = np.pad(counted, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=1.0)
        inner = ((0, 0), extra[0], extra[1], (0, 0))
    else:
        inner = full
    divisor = lax.reduce_window(jnp.asarray(counted), 0.0, lax.add, dims, strides, inner)
    return (sums / divisor.astype(sums.dtype)).astype(x.dtype)


def lp_pool(x: jax.Array, p: float, window, *, stride=None, padding: Padding = 0) -> jax.Array:
    """L_p-norm pooling: (sum over the window of |x|^p)^(1/p); p=inf gives max |x|.

    For non-negative inputs (after a ReLU) this equals PyTorch's lp_pool2d; p=1 is sum pooling
    and p -> inf approaches max pooling.
    """
    if not (p > 0):
        raise ValueError(f"lp_pool needs p > 0, got {p!r}")
    if math.isinf(p):
        return max_pool(jnp.abs(x), window, stride=stride, padding=padding)
    dims, strides, pads, extra = _windows(x, window, stride, padding, False, "lp_pool")
    powered = jnp.abs(x.astype(compute_dtype(x))) ** p
    sums = lax.reduce_window(powered, 0.0, lax.add, dims, strides, _full_pads(pads, extra))
    return (sums ** (1.0 / p)).astype(x.dtype)


def global_avg_pool(x: jax.Array, keepdims: bool = False) -> jax.Array:
    """Mean over H and W: (N, H, W, C) -> (N, C) (or (N, 1, 1, C) with keepdims)."""
    _check_nhwc(x, "global_avg_pool")
    return jnp.mean(x, axis=(1, 2), keepdims=keepdims)


def global_max_pool(x: jax.Array, keepdims: bool = False) -> jax.Array:
    """Max over H and W: (N, H, W, C) -> (N, C) (or (N, 1, 1, C) with keepdims)."""
    _check_nhwc(x, "global_max_pool")
    return jnp.max(x, axis=(1, 2), keepdims=keepdims)


def _bin_matrix(n: int, out: int) -> np.ndarray:
    """(out, n) averaging matrix of PyTorch's adaptive bins [floor(i n / out), ceil((i + 1) n / out))."""
    m = np.zeros((out, n))  # float64: rounded once, to the input dtype, by the caller
    for i in range(out):
        start, end = (i * n) // out, -(-((i + 1) * n) // out)
        m[i, start:end] = 1.0 / (end - start)
    return m


def adaptive_avg_pool(x: jax.Array, output_size: int | tuple[int, int]) -> jax.Array:
    """Average pooling to a fixed (out_h, out_w) whatever the input size, with PyTorch's bins
    (they overlap when the size does not divide). (N, H, W, C) -> (N, out_h, out_w, C)."""
    _check_nhwc(x, "adaptive_avg_pool")
    oh, ow = pair(output_size, "output_size")
    mh = jnp.asarray(_bin_matrix(x.shape[1], oh), x.dtype)
    mw = jnp.asarray(_bin_matrix(x.shape[2], ow), x.dtype)
    return jnp.einsum("oh,nhwc,pw->nopc", mh, x, mw, precision=lax.Precision.HIGHEST)
