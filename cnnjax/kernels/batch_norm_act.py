"""Training-mode batch normalisation fused with an optional residual add and an activation, as
Pallas kernels with a kernel backward pass.

    y = act(batch_norm(x) + residual),  returned with the batch mean and (biased) variance

equal to `ops.batch_norm(x, scale, bias, train=True, eps=eps)`, then `+ residual`, then
`ops.get_activation(activation)`. Statistics are over every axis but the last, in float32.

Passes over the activation (viewed as (M, C): M = N*H*W rows, channels contiguous):
- statistics: one read of x. Each program owns (R rows, BC channels) and streams (BR, BC)
  tiles, accumulating shifted sums elementwise and reducing once (see `_stats_kernel`). XLA
  merges the few hundred per-program (mean, M2) partials exactly (Chan et al.'s pairwise form,
  which has no E[x^2] - E[x]^2 cancellation).
- normalise: one read of x (and the residual), one write of y; the per-channel affine map
  (scale * rstd, bias - mean * scale * rstd) is folded in XLA beforehand.
- backward: a reduction pass reads x, dy (and the residual) and returns per-program sums of
  dz and dz * xhat, with dz = dy * act'(z) recomputed from x; with a residual it also writes dz
  (which is the residual's gradient). An elementwise pass then writes
  dx = A dz + B x + D with per-channel A, B, D (including the gradients that reach mean and var).
XLA's lowering of the reference needs separate passes for the mean, the variance and the
normalisation, and as many again backwards. Inside shard_map with the batch split over a mapped
axis (`axis_name`, what the trainer's steps set on several devices), each device runs these
passes on its rows and the statistics and gradient sums are exchanged once each way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl

from cnnjax import ops
from cnnjax.kernels import dispatch, tiling
from cnnjax.ops.hooks import register_kernel
from cnnjax.ops.norm import merge_across

STATS_TILE_ELEMENTS = 2048
MAP_TILE_ELEMENTS = 4096


def _sigmoid(z):
    return 1.0 / (1.0 + jnp.exp(-z))


def _hard_relu6(z):
    return jnp.minimum(jnp.maximum(z, 0.0), 6.0)


# name -> (activation, its derivative), both of the float32 pre-activation z; the same functions
# as ops.ACTIVATIONS, written with operations the Triton backend lowers.
ACTIVATIONS: dict[str, tuple[Callable, Callable]] = {
    "identity": (lambda z: z, lambda z: jnp.ones_like(z)),
    "relu": (lambda z: jnp.maximum(z, 0.0), lambda z: jnp.where(z > 0, 1.0, 0.0)),
    "relu6": (_hard_relu6, lambda z: jnp.where((z > 0) & (z < 6), 1.0, 0.0)),
    "swish": (lambda z: z * _sigmoid(z),
              lambda z: _sigmoid(z) * (1.0 + z * (1.0 - _sigmoid(z)))),
    "hard_swish": (lambda z: z * _hard_relu6(z + 3.0) / 6.0,
                   lambda z: jnp.where(z < -3, 0.0, jnp.where(z > 3, 1.0, (2.0 * z + 3.0) / 6.0))),
}


class Geometry(NamedTuple):
    """Static shape: m rows of c channels; `activation` a key of ACTIVATIONS; `residual` whether
    a residual is added; `rows` per reduction program."""

    m: int
    c: int
    activation: str
    residual: bool
    rows: int


def _channels(g: Geometry, bc: int):
    """This program's channel vector and its mask (read outside loops: the interpreter
    substitutes program ids only at the kernel's top level)."""
    c = tiling.arange(pl.program_id(1) * bc, bc)
    return c, c < g.c


def _tile(g: Geometry, r0, br: int, c, c_ok):
    """Row and channel indices of the (br, BC) tile at row r0, and its mask."""
    r = tiling.arange(r0, br)
    return r[:, None], c[None, :], (r < g.m)[:, None] & c_ok[None, :]


def _stats_kernel(x_ref, mean_ref, m2_ref, *, g: Geometry, br: int, bc: int):
    """Per program p: mean and sum of squared deviations of rows [p*rows, (p+1)*rows).
    Refs: x (M, C); mean, m2 (P, C) float32.

    The program accumulates d = x - K and d^2 elementwise into two (BR, BC) float32 tiles across
    all its tiles and reduces their rows once, at the end. A block reduction and a Chan merge
    per tile would put a cross-lane reduction (warp shuffles) and a division on the loop's
    critical path in every iteration of a memory-bound kernel; elementwise accumulation is two
    FMAs per value with no cross-thread traffic until the end. The shift K is the program's
    first row, a sample of each channel, so |mean - K| is of the order of the standard deviation
    and the one-pass M2 = S2 - S1^2 / n keeps the two-pass form's precision (the relative error
    grows only as eps * (mean - K)^2 / var), however far the mean lies from zero.
    """
    p = pl.program_id(0)
    cv, c_ok = _channels(g, bc)
    start = p * g.rows
    shift = tiling.load(x_ref, (start, cv), c_ok, 0.0).astype(jnp.float32)[None, :]

    def body(i, acc):
        s1, s2 = acc
        r, c, ok = _tile(g, start + i * br, br, cv, c_ok)
        d = jnp.where(ok, tiling.load(x_ref, (r, c), ok, 0.0).astype(jnp.float32) - shift, 0.0)
        return s1 + d, s2 + d * d

    zeros = jnp.zeros((br, bc), jnp.float32)
    s1, s2 = lax.fori_loop(0, g.rows // br, body, (zeros, zeros))
    s1, s2 = jnp.sum(s1, axis=0), jnp.sum(s2, axis=0)
    n = jnp.clip(g.m - start, 1, g.rows).astype(jnp.float32)
    tiling.store(mean_ref, (p, cv), shift[0] + s1 / n, c_ok)
    tiling.store(m2_ref, (p, cv), jnp.maximum(s2 - s1 * s1 / n, 0.0), c_ok)


def _affine(ab_ref, c, c_ok):
    """The per-channel (a, b) of z = a x + b (+ residual) from ab (2, C)."""
    a = tiling.load(ab_ref, (0, c), c_ok, 0.0)[None, :]
    return a, tiling.load(ab_ref, (1, c), c_ok, 0.0)[None, :]


def _pre_activation(x, ab_ref, res_ref, index, ok, c, c_ok):
    """z = a x + b (+ the residual tile at `index`) for the float32 tile x."""
    a, b = _affine(ab_ref, c, c_ok)
    z = x * a + b
    if res_ref is not None:
        z += tiling.load(res_ref, index, ok, 0.0).astype(jnp.float32)
    return z


def _normalize_kernel(x_ref, ab_ref, *refs, g: Geometry, br: int, bc: int):
    """y = act(a x + b + residual). Refs: x (M, C), ab (2, C) float32, [residual (M, C)], y (M, C)."""
    res_ref, y_ref = refs if g.residual else (None, refs[0])
    cv, c_ok = _channels(g, bc)
    r, c, ok = _tile(g, pl.program_id(0) * br, br, cv, c_ok)
    x = tiling.load(x_ref, (r, c), ok, 0.0).astype(jnp.float32)
    z = _pre_activation(x, ab_ref, res_ref, (r, c), ok, cv, c_ok)
    tiling.store(y_ref, (r, c), ACTIVATIONS[g.activation][0](z), ok)


def _grad_sums_kernel(x_ref, ab_ref, mr_ref, dy_ref, *refs, g: Geometry, br: int, bc: int):
    """Per program p over its rows: sums of dz and dz * xhat, dz = dy * act'(z),
    xhat = (x - mean) * rstd; with a residual also writes dz. Refs: x, dy (M, C); ab, mr (2, C)
    float32 holding (a, b) and (mean, rstd); [residual]; s1, s2 (P, C) float32; [dz (M, C)]."""
    if g.residual:
        res_ref, s1_ref, s2_ref, dz_ref = refs
    else:
        (s1_ref, s2_ref), res_ref, dz_ref = refs, None, None
    p = pl.program_id(0)
    cv, c_ok = _channels(g, bc)
    mean, rstd = _affine(mr_ref, cv, c_ok)

    def body(i, acc):
        s1, s2 = acc
        r, c, ok = _tile(g, p * g.rows + i * br, br, cv, c_ok)
        x = tiling.load(x_ref, (r, c), ok, 0.0).astype(jnp.float32)
        z = _pre_activation(x, ab_ref, res_ref, (r, c), ok, cv, c_ok)
        dz = tiling.load(dy_ref, (r, c), ok, 0.0).astype(jnp.float32) * ACTIVATIONS[g.activation][1](z)
        if dz_ref is not None:
            tiling.store(dz_ref, (r, c), dz, ok)
        # Masked rows load x = 0 and dy = 0, so dz = 0 there and they add nothing.
        return s1 + dz, s2 + dz * ((x - mean) * rstd)

    zeros = jnp.zeros((br, bc), jnp.float32)
    s1, s2 = lax.fori_loop(0, g.rows // br, body, (zeros, zeros))
    tiling.store(s1_ref, (p, cv), jnp.sum(s1, axis=0), c_ok)
    tiling.store(s2_ref, (p, cv), jnp.sum(s2, axis=0), c_ok)


def _input_grad_kernel(x_ref, g_ref, coef_ref, *refs, g: Geometry, br: int, bc: int):
    """dx = A dz + B x + D. Refs: x (M, C); g (M, C): dz with a residual, else dy (dz is then
    recomputed); coef (5, C) float32 holding A, B, D, a, b; [residual]; dx (M, C)."""
    dx_ref = refs[-1]
    cv, c_ok = _channels(g, bc)
    r, c, ok = _tile(g, pl.program_id(0) * br, br, cv, c_ok)
    coef = [tiling.load(coef_ref, (k, cv), c_ok, 0.0)[None, :] for k in range(5)]
    x = tiling.load(x_ref, (r, c), ok, 0.0).astype(jnp.float32)
    dz = tiling.load(g_ref, (r, c), ok, 0.0).astype(jnp.float32)
    if not g.residual:
        dz *= ACTIVATIONS[g.activation][1](x * coef[3] + coef[4])
    tiling.store(dx_ref, (r, c), coef[0] * dz + coef[1] * x + coef[2], ok)


def _blocks(g: Geometry, dtype, elements: int) -> tuple[int, int]:
    bc = tiling.channel_block(g.c, jnp.dtype(dtype).itemsize)
    return bc, tiling.span_block(g.m, bc, elements)


def _plan(m: int, c: int, dtype) -> int:
    """Rows per reduction program: a multiple of the tile rows giving ~TARGET_PROGRAMS programs."""
    bc = tiling.channel_block(c, jnp.dtype(dtype).itemsize)
    br = tiling.span_block(m, bc, STATS_TILE_ELEMENTS)
    tiles = pl.cdiv(m, br)
    per_program = pl.cdiv(tiles, max(1, min(tiles, tiling.TARGET_PROGRAMS // pl.cdiv(c, bc))))
    return per_program * br


def _counts(g: Geometry) -> np.ndarray:
    """Rows of each reduction program (the last may be short)."""
    starts = np.arange(pl.cdiv(g.m, g.rows)) * g.rows
    return np.minimum(g.m - starts, g.rows).astype(np.float32)


def _reduce_grid(g: Geometry, bc: int) -> tuple[int, int]:
    return pl.cdiv(g.m, g.rows), pl.cdiv(g.c, bc)


def _statistics(x2, g: Geometry, interpret: bool, axis_name: str | None):
    """(mean, biased variance) of x2's rows, or with `axis_name` of every device's rows."""
    bc, br = _blocks(g, x2.dtype, STATS_TILE_ELEMENTS)
    part = jax.ShapeDtypeStruct((pl.cdiv(g.m, g.rows), g.c), jnp.float32)
    means, m2s = tiling.launch(
        functools.partial(_stats_kernel, g=g, br=br, bc=bc), grid=_reduce_grid(g, bc),
        out_shape=(part, part), interpret=interpret, name="batch_norm_stats")(x2)
    counts = jnp.asarray(_counts(g))[:, None]
    mean = jnp.sum(counts * means, axis=0) / g.m
    m2 = jnp.sum(m2s + counts * jnp.square(means - mean), axis=0)
    if axis_name is not None:
        return merge_across(jnp.stack([mean, jnp.zeros_like(mean), m2]), g.m, axis_name)
    return mean, m2 / g.m


def _map_launch(kernel, g: Geometry, dtype, out_dtype, interpret: bool, name: str):
    bc, br = _blocks(g, dtype, MAP_TILE_ELEMENTS)
    return tiling.launch(
        functools.partial(kernel, g=g, br=br, bc=bc), grid=(pl.cdiv(g.m, br), pl.cdiv(g.c, bc)),
        out_shape=jax.ShapeDtypeStruct((g.m, g.c), out_dtype), interpret=interpret, name=name)


def _forward(x2, scale, bias, res, g: Geometry, eps: float, interpret: bool,
             axis_name: str | None):
    mean, var = _statistics(x2, g, interpret, axis_name)
    rstd = lax.rsqrt(var + eps)
    a = scale.astype(jnp.float32) * rstd
    ab = jnp.stack([a, bias.astype(jnp.float32) - mean * a])
    src = (x2, ab) if res is None else (x2, ab, res)
    y = _map_launch(_normalize_kernel, g, x2.dtype, x2.dtype, interpret, "batch_norm_act_fwd")(*src)
    return (y, mean, var), (x2, scale, res, ab, mean, rstd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _batch_norm_act(x2, scale, bias, res, g: Geometry, eps: float, interpret: bool,
                    axis_name: str | None):
    """With `axis_name` (in shard_map, the batch split over that mapped axis) the statistics are
    the whole batch's: one all-gather of (devices, 3, C) forward, one all-reduce of (4, C)
    backward (the gradient sums and the statistics' cotangents)."""
    return _forward(x2, scale, bias, res, g, eps, interpret, axis_name)[0]


def _batch_norm_act_fwd(x2, scale, bias, res, g, eps, interpret, axis_name):
    return _forward(x2, scale, bias, res, g, eps, interpret, axis_name)


def _batch_norm_act_bwd(g, eps, interpret, axis_name, saved, cotangents):
    x2, scale, res, ab, mean, rstd = saved
    dy, d_mean, d_var = cotangents
    bc = tiling.channel_block(g.c, jnp.dtype(x2.dtype).itemsize)
    br = tiling.span_block(g.m, bc, STATS_TILE_ELEMENTS)
    part = jax.ShapeDtypeStruct((pl.cdiv(g.m, g.rows), g.c), jnp.float32)
    outs = (part, part) + ((jax.ShapeDtypeStruct((g.m, g.c), res.dtype),) if g.residual else ())
    src = (x2, ab, jnp.stack([mean, rstd]), dy) + ((res,) if g.residual else ())
    s1, s2, *d_res = tiling.launch(
        functools.partial(_grad_sums_kernel, g=g, br=br, bc=bc), grid=_reduce_grid(g, bc),
        out_shape=outs, interpret=interpret, name="batch_norm_act_bwd_sums")(*src)
    s1, s2 = jnp.sum(s1, axis=0), jnp.sum(s2, axis=0)
    d_scale, d_bias = s2.astype(scale.dtype), s1.astype(scale.dtype)  # this device's rows'
    m = g.m
    if axis_name is not None:
        # Every device's loss reaches every device's rows through the shared statistics.
        s1, s2, d_mean, d_var = lax.psum(jnp.stack([s1, s2, d_mean, d_var]), axis_name)
        m = g.m * lax.axis_size(axis_name)
    gamma = scale.astype(jnp.float32)
    # dx = gamma rstd (dz - mean(dz) - xhat mean(dz xhat)) + d_mean / M + 2 d_var (x - mean) / M,
    # with xhat = (x - mean) rstd, written as A dz + B' xhat + D and then as A dz + B x + D'.
    a_coef = gamma * rstd
    b_hat = -a_coef * s2 / m + 2.0 * d_var / (m * rstd)
    d_coef = -a_coef * s1 / m + d_mean / m
    coef = jnp.stack([a_coef, b_hat * rstd, d_coef - b_hat * rstd * mean, ab[0], ab[1]])
    grad_in = d_res[0] if g.residual else dy
    dx = _map_launch(_input_grad_kernel, g, x2.dtype, x2.dtype, interpret,
                     "batch_norm_act_bwd_dx")(x2, grad_in, coef)
    return dx, d_scale, d_bias, d_res[0] if g.residual else None


_batch_norm_act.defvjp(_batch_norm_act_fwd, _batch_norm_act_bwd)


def reference(x: jax.Array, scale: jax.Array | None, bias: jax.Array | None, *,
              residual: jax.Array | None = None, activation: str = "relu", eps: float = 1e-5
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The definition the kernels equal: ops.batch_norm in training on its XLA path."""
    with dispatch.use("xla"):
        return ops.batch_norm(x, scale, bias, train=True, eps=eps, residual=residual,
                              activation=activation)


def _unsupported(x, residual, activation: str) -> str | None:
    if activation not in ACTIVATIONS:
        return f"activation {activation!r} (the kernel fuses {sorted(ACTIVATIONS)})"
    if residual is not None and (residual.shape != x.shape or residual.dtype != x.dtype):
        return (f"residual {residual.dtype}{list(residual.shape)} unlike x "
                f"{x.dtype}{list(x.shape)} (the kernel adds a residual of x's shape and dtype)")
    if x.ndim < 2:
        return f"{x.ndim}-D input (the kernel takes (..., C) with at least one batch axis)"
    return tiling.unsupported_dtype(x)


def _kernel(x: jax.Array, scale: jax.Array | None, bias: jax.Array | None,
            residual: jax.Array | None, activation: str, eps: float,
            axis_name: str | None = None, interpret: bool = False
            ) -> tuple[jax.Array, jax.Array, jax.Array] | None:
    """The kernels on validated arguments, or None when the switch (or an argument the kernel
    does not take) keeps ops.batch_norm's XLA path. Registered as ops.batch_norm's kernel;
    `axis_name` synchronises the statistics over that mapped axis (in shard_map)."""
    mode = dispatch.kernel_mode("batch_norm_act", _unsupported(x, residual, activation), interpret)
    if mode is None:
        return None
    c = x.shape[-1]
    m = x.size // c
    g = Geometry(m, c, activation, residual is not None, _plan(m, c, x.dtype))
    scale = jnp.ones((c,), jnp.float32) if scale is None else scale
    bias = jnp.zeros((c,), jnp.float32) if bias is None else bias
    res = None if residual is None else residual.reshape(m, c)
    y, mean, var = _batch_norm_act(x.reshape(m, c), scale, bias, res, g, eps, mode, axis_name)
    return y.reshape(x.shape), mean, var


register_kernel("batch_norm", _kernel)


def batch_norm_act(x: jax.Array, scale: jax.Array | None, bias: jax.Array | None, *,
                   residual: jax.Array | None = None, activation: str = "relu",
                   eps: float = 1e-5, interpret: bool = False
                   ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """act(batch_norm(x) + residual) with training-mode statistics over every axis but the last:
    `ops.batch_norm(x, scale, bias, train=True, residual=..., activation=..., eps=...)`, which
    runs these kernels when the kernels switch says "pallas" (on a GPU); `interpret` runs them in
    the Pallas interpreter whatever the switch (see cnnjax.kernels.dispatch).

    Args:
      x: (..., C) activations (NHWC for images).
      scale, bias: (C,) affine parameters, or None for none.
      residual: optional array of x's shape and dtype added before the activation.
      activation: a name of ops.ACTIVATIONS; the kernels fuse those in ACTIVATIONS here.
    Returns:
      (y, mean, var): y like x; the batch mean and biased variance in float32.
    Differentiable in x, scale, bias and residual.
    """
    setting = dispatch.current()
    kernels = "pallas" if interpret else setting.kernels
    with dispatch.use(kernels, interpret=interpret or setting.interpret):
        return ops.batch_norm(x, scale, bias, train=True, eps=eps, residual=residual,
                              activation=activation)
