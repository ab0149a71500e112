"""Training-mode batch normalisation fused with an optional residual add and an activation, as
kernels with kernel backward and tangent passes: Pallas kernels (a GPU; the Pallas interpreter
elsewhere) and the CPU extension's (`cnnjax.kernels.onednn.norm_act`), the same passes on either
backend (the primitives' `backend` parameter: "triton", "interpret" or "cpu").

    y = act(batch_norm(x) + residual),  returned with the batch mean and (biased) variance

equal to `ops.batch_norm(x, scale, bias, train=True, eps=eps)`, then `+ residual`, then
`ops.get_activation(activation)` (the fused ones, GELU included: `cnnjax.kernels.activations`).
Statistics are over every axis but the last, in float32.

Passes over the activation (viewed as (M, C): M = N*H*W rows, channels contiguous):
- statistics: one read of x. Each program owns (R rows, BC channels) and streams (BR, BC)
  tiles, accumulating shifted sums elementwise and reducing once (see `_stats_kernel`). XLA
  merges the few hundred per-program (mean, M2) partials exactly (Chan et al.'s pairwise form,
  which has no E[x^2] - E[x]^2 cancellation). The CPU pass accumulates shifted sums in float64
  per block of rows and merges the blocks the same way, in a fixed order.
- normalise: one read of x (and the residual), one write of y; the per-channel affine map
  (scale * rstd, bias - mean * scale * rstd) is folded in XLA beforehand.
- backward: a reduction pass reads x, dy (and the residual) and returns per-program sums of
  dz and dz * xhat, with dz = dy * act'(z) recomputed from x; with a residual it also writes dz
  (which is the residual's gradient). An elementwise pass then writes
  dx = A dz + B x + D with per-channel A, B, D (including the gradients that reach mean and var).
- tangent (forward mode): the backward's reduction pass on the tangent (sums of tx and
  tx * xhat), then an elementwise pass ty = act'(z) (A tx + B x + D + t_residual). The tangent
  is a linear primitive whose transpose is the backward passes (and vice versa), so every order
  of differentiation runs these kernels; only the second-order terms (derivatives of the
  tangent and backward maps in x and the statistics) are XLA's.
- with `axis_name` inside shard_map (synchronised batch norm; what the trainer's steps set on
  several devices), each device runs the passes on its rows and each pass exchanges its
  per-channel partials across the axis: the statistics by one all-gather (ops.norm's merge),
  the tangent's and backward's sums by one all-reduce of (2, C).
XLA's lowering of the reference needs separate passes for the mean, the variance and the
normalisation, and as many again backwards; on the CPU, inside a whole training step, it also
evaluates GELU's erf as a separate fusion (experiments/results/cpu_step.md section 7).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.interpreters import ad, batching

from cnnjax import ops
from cnnjax.kernels import dispatch, primitive, tiling
from cnnjax.kernels.activations import ACTIVATIONS
from cnnjax.kernels.onednn import norm_act as cpu
from cnnjax.ops.hooks import register_kernel
from cnnjax.ops.norm import merge_across

STATS_TILE_ELEMENTS = 2048
MAP_TILE_ELEMENTS = 4096


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
    s1, s2 = tiling.fori_loop(g.rows // br, body, (zeros, zeros))
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
    s1, s2 = tiling.fori_loop(g.rows // br, body, (zeros, zeros))
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


def _tangent_kernel(x_ref, t_ref, coef_ref, *refs, g: Geometry, br: int, bc: int):
    """ty = act'(z) (A t + B x + D + t_residual), z = a x + b + residual: the forward-mode
    tangent's elementwise pass. Refs: x, t (M, C); coef (5, C) float32 holding A, B, D, a, b;
    [residual, t_residual (M, C)]; ty (M, C)."""
    ty_ref = refs[-1]
    cv, c_ok = _channels(g, bc)
    r, c, ok = _tile(g, pl.program_id(0) * br, br, cv, c_ok)
    coef = [tiling.load(coef_ref, (k, cv), c_ok, 0.0)[None, :] for k in range(5)]
    x = tiling.load(x_ref, (r, c), ok, 0.0).astype(jnp.float32)
    z = x * coef[3] + coef[4]
    tz = coef[0] * tiling.load(t_ref, (r, c), ok, 0.0).astype(jnp.float32) + coef[1] * x + coef[2]
    if g.residual:
        z += tiling.load(refs[0], (r, c), ok, 0.0).astype(jnp.float32)
        tz += tiling.load(refs[1], (r, c), ok, 0.0).astype(jnp.float32)
    tiling.store(ty_ref, (r, c), ACTIVATIONS[g.activation][1](z) * tz, ok)


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


def _statistics(x2, g: Geometry, backend: str, axis_name: str | None):
    """(mean, biased variance) of x2's rows, or with `axis_name` of every device's rows."""
    if backend == "cpu":
        mean, var = cpu.run("stats", x2)
        if axis_name is not None:
            return merge_across(jnp.stack([mean, jnp.zeros_like(mean), var * g.m]), g.m,
                                axis_name)
        return mean, var
    bc, br = _blocks(g, x2.dtype, STATS_TILE_ELEMENTS)
    part = jax.ShapeDtypeStruct((pl.cdiv(g.m, g.rows), g.c), jnp.float32)
    means, m2s = tiling.launch(
        functools.partial(_stats_kernel, g=g, br=br, bc=bc), grid=_reduce_grid(g, bc),
        out_shape=(part, part), interpret=backend == "interpret", name="batch_norm_stats")(x2)
    counts = jnp.asarray(_counts(g))[:, None]
    mean = jnp.sum(counts * means, axis=0) / g.m
    m2 = jnp.sum(m2s + counts * jnp.square(means - mean), axis=0)
    if axis_name is not None:
        return merge_across(jnp.stack([mean, jnp.zeros_like(mean), m2]), g.m, axis_name)
    return mean, m2 / g.m


# The elementwise passes: name -> the Pallas kernel and its launch name.
_MAPS = {"normalize": (_normalize_kernel, "batch_norm_act_fwd"),
         "input_grad": (_input_grad_kernel, "batch_norm_act_bwd_dx"),
         "tangent": (_tangent_kernel, "batch_norm_act_tangent")}


def _map(pass_name: str, g: Geometry, backend: str, out_dtype, *operands):
    """Elementwise pass `pass_name` (a key of _MAPS) on `operands`, x2 first."""
    if backend == "cpu":
        return cpu.run(pass_name, *operands, activation=g.activation, residual=g.residual)
    kernel, name = _MAPS[pass_name]
    bc, br = _blocks(g, operands[0].dtype, MAP_TILE_ELEMENTS)
    return tiling.launch(
        functools.partial(kernel, g=g, br=br, bc=bc), grid=(pl.cdiv(g.m, br), pl.cdiv(g.c, bc)),
        out_shape=jax.ShapeDtypeStruct((g.m, g.c), out_dtype), interpret=backend == "interpret",
        name=name)(*operands)


def _affine_map(scale, bias, mean, var, eps: float):
    """(rstd, ab): ab (2, C) holds z = a x + b's a = scale * rstd and b = bias - mean * a."""
    rstd = lax.rsqrt(var + eps)
    a = scale.astype(jnp.float32) * rstd
    return rstd, jnp.stack([a, bias.astype(jnp.float32) - mean * a])


def _sums(x2, ab, mean, rstd, grad, res, g: Geometry, backend: str):
    """Per channel: sums over the rows of dz and dz * xhat, dz = grad * act'(z) (and dz itself
    with a residual, else None): the reduction pass of the backward and (with identity
    activation, no residual) of the tangent."""
    if backend == "cpu":
        s1, s2, *dz = cpu.run("sums", x2, ab, jnp.stack([mean, rstd]), grad,
                              *(() if res is None else (res,)), activation=g.activation,
                              residual=g.residual)
        return s1, s2, dz[0] if g.residual else None
    bc = tiling.channel_block(g.c, jnp.dtype(x2.dtype).itemsize)
    br = tiling.span_block(g.m, bc, STATS_TILE_ELEMENTS)
    part = jax.ShapeDtypeStruct((pl.cdiv(g.m, g.rows), g.c), jnp.float32)
    outs = (part, part) + ((jax.ShapeDtypeStruct((g.m, g.c), res.dtype),) if g.residual else ())
    src = (x2, ab, jnp.stack([mean, rstd]), grad) + ((res,) if g.residual else ())
    s1, s2, *dz = tiling.launch(
        functools.partial(_grad_sums_kernel, g=g, br=br, bc=bc), grid=_reduce_grid(g, bc),
        out_shape=outs, interpret=backend == "interpret", name="batch_norm_act_bwd_sums")(*src)
    return jnp.sum(s1, axis=0), jnp.sum(s2, axis=0), dz[0] if g.residual else None


def _rows(g: Geometry, axis_name):
    """The rows the statistics are over: this shard's, times the shards along `axis_name`."""
    return g.m if axis_name is None else g.m * lax.psum(1, axis_name)


# The passes, each a primitive (cnnjax.kernels.primitive) on x viewed as (M, C), with the static
# parameters g (Geometry), eps, backend ("triton", "interpret" or "cpu") and axis_name (None, or
# inside shard_map the mapped axis whose shards share the statistics: their partials cross it
# once per pass):
#   batch_norm_act_fwd(x, scale, bias, [res]) -> (y, mean, var)
#   batch_norm_act_tangent(x, scale, bias, [res], mean, var | tx, tscale, tbias, [tres])
#       -> (ty, tmean, tvar): the JVP's tangent, linear in the operands after the bar;
#   batch_norm_act_bwd(x, scale, bias, [res], mean, var | dy, dmean, dvar)
#       -> (dx, dscale, dbias, [dres]): its transpose, the backward kernels, and vice versa.
# The second-order terms (the tangent and backward passes' derivatives in x, scale, bias, res,
# mean, var) are XLA's derivative of `_tangent_formula`, the same map in plain JAX.
def _forward(x2, scale, bias, *res, g: Geometry, eps: float, backend: str, axis_name):
    mean, var = _statistics(x2, g, backend, axis_name)
    ab = _affine_map(scale, bias, mean, var, eps)[1]
    y = _map("normalize", g, backend, x2.dtype, x2, ab, *res)
    return y, mean, var


def _split(g: Geometry, operands):
    """(x, scale, bias, res or None, mean, var) and the linear operands after them."""
    if g.residual:
        x2, scale, bias, res, mean, var, *linear = operands
    else:
        (x2, scale, bias, mean, var, *linear), res = operands, None
    return (x2, scale, bias, res, mean, var), linear


def _tangent_coefficients(fixed, s1, s2, m, t_scale, t_bias, eps: float):
    """(tmean, tvar, coef): coef (5, C) holds A, B, D, a, b of tz = A t + B x + D + t_residual
    and z = a x + b + residual, from the sums s1 = sum(tx), s2 = sum(tx * xhat) over the m rows.

    With r = rstd: tmean = s1 / m, tvar = 2 s2 / (m r), and the tangent of
    z = scale r (x - mean) + bias + res is
    scale r (tx - tmean) + (x - mean) (t_scale r - scale r^2 s2 / m) + t_bias + t_res."""
    x2, scale, bias, _, mean, var = fixed
    rstd, ab = _affine_map(scale, bias, mean, var, eps)
    gamma = scale.astype(jnp.float32)
    b_coef = rstd * (t_scale.astype(jnp.float32) - gamma * rstd * s2 / m)
    d_coef = t_bias.astype(jnp.float32) - gamma * rstd * s1 / m - b_coef * mean
    coef = jnp.stack([gamma * rstd, b_coef, d_coef, ab[0], ab[1]])
    return s1 / m, 2.0 * s2 / (m * rstd), coef


def _tangent(*operands, g: Geometry, eps: float, backend: str, axis_name):
    fixed, (tx, t_scale, t_bias, *t_res) = _split(g, operands)
    x2, scale, bias, res, mean, var = fixed
    rstd, ab = _affine_map(scale, bias, mean, var, eps)
    plain = g._replace(activation="identity", residual=False)
    s1, s2, _ = _sums(x2, ab, mean, rstd, tx, None, plain, backend)
    if axis_name is not None:  # one (2, C) all-reduce
        s1, s2 = lax.psum(jnp.stack([s1, s2]), axis_name)
    t_mean, t_var, coef = _tangent_coefficients(fixed, s1, s2, _rows(g, axis_name), t_scale,
                                                t_bias, eps)
    extra = (res, *t_res) if g.residual else ()
    ty = _map("tangent", g, backend, tx.dtype, x2, tx, coef, *extra)
    return ty, t_mean, t_var


def _backward(*operands, g: Geometry, eps: float, backend: str, axis_name):
    fixed, (dy, d_mean, d_var) = _split(g, operands)
    x2, scale, bias, res, mean, var = fixed
    rstd, ab = _affine_map(scale, bias, mean, var, eps)
    s1, s2, d_res = _sums(x2, ab, mean, rstd, dy, res, g, backend)
    # dx = gamma rstd (dz - mean(dz) - xhat mean(dz xhat)) + d_mean / M + 2 d_var (x - mean) / M,
    # with xhat = (x - mean) rstd, written as A dz + B' xhat + D and then as A dz + B x + D'.
    # x gets the sums over every shard (every shard's y depends on the statistics): the two
    # per-channel sums D and B' need are combined first, so one (2, C) all-reduce carries them
    # (A = scale rstd is the same on every shard: scale is replicated, the statistics
    # synchronised). scale and bias get this shard's sums (the caller reduces
    # parameter gradients across shards).
    a_coef = scale.astype(jnp.float32) * rstd
    sums = jnp.stack([d_mean - a_coef * s1, 2.0 * d_var / rstd - a_coef * s2])
    if axis_name is not None:
        sums = lax.psum(sums, axis_name)
    m = _rows(g, axis_name)
    d_coef, b_hat = sums[0] / m, sums[1] / m
    coef = jnp.stack([a_coef, b_hat * rstd, d_coef - b_hat * rstd * mean, ab[0], ab[1]])
    dx = _map("input_grad", g, backend, x2.dtype, x2, d_res if g.residual else dy, coef)
    grads = (dx, s2.astype(scale.dtype), s1.astype(bias.dtype))
    return grads + ((d_res,) if g.residual else ())


def _tangent_formula(fixed, linear, g: Geometry, eps: float, axis_name):
    """`_tangent` in plain JAX (float32), differentiable in every operand."""
    x2, scale, bias, res, mean, var = fixed
    tx, t_scale, t_bias, *t_res = linear
    x32, t32 = x2.astype(jnp.float32), tx.astype(jnp.float32)
    rstd = lax.rsqrt(var + eps)
    s1, s2 = jnp.sum(t32, axis=0), jnp.sum(t32 * (x32 - mean) * rstd, axis=0)
    if axis_name is not None:
        s1, s2 = lax.psum((s1, s2), axis_name)
    t_mean, t_var, coef = _tangent_coefficients(fixed, s1, s2, _rows(g, axis_name), t_scale,
                                                t_bias, eps)
    z, tz = x32 * coef[3] + coef[4], coef[0] * t32 + coef[1] * x32 + coef[2]
    if g.residual:
        z, tz = z + res.astype(jnp.float32), tz + t_res[0].astype(jnp.float32)
    return (ACTIVATIONS[g.activation][1](z) * tz).astype(tx.dtype), t_mean, t_var


def _define(name, fn, abstract_eval):
    return primitive.define(name, fn, abstract_eval=abstract_eval, multiple_results=True)


def _fwd_aval(x, scale, bias, *res, g, **_):
    return [jax.core.ShapedArray((g.m, g.c), x.dtype)] + [
        jax.core.ShapedArray((g.c,), jnp.float32)] * 2


def _tangent_aval(*operands, g, **_):
    _, (tx, *_) = _split(g, operands)
    return [jax.core.ShapedArray((g.m, g.c), tx.dtype)] + [
        jax.core.ShapedArray((g.c,), jnp.float32)] * 2


def _bwd_aval(*operands, g, **_):
    (x2, scale, bias, res, _, _), _ = _split(g, operands)
    return [jax.core.ShapedArray(a.shape, a.dtype)
            for a in (x2, scale, bias) + ((res,) if g.residual else ())]


fwd_p = _define("batch_norm_act_fwd", _forward, _fwd_aval)
tangent_p = _define("batch_norm_act_tangent", _tangent, _tangent_aval)
bwd_p = _define("batch_norm_act_bwd", _backward, _bwd_aval)


def _fwd_jvp(primals, tangents, **params):
    y, mean, var = fwd_p.bind(*primals, **params)
    if all(type(t) is ad.Zero for t in tangents):
        return (y, mean, var), [ad.Zero(jax.typeof(o).to_tangent_aval()) for o in (y, mean, var)]
    linear = [ad.instantiate_zeros(t) for t in tangents]
    return (y, mean, var), tangent_p.bind(*primals, mean, var, *linear, **params)


def _second_order(kind: str):
    """The derivative of the tangent (kind "tangent") or backward pass in its fixed operands,
    by XLA from `_tangent_formula` (the backward pass being its transpose)."""
    def rule(fixed, linear, fixed_tangents, *, g, eps, backend, axis_name):
        def value(*f):
            fx = _split(g, list(f) + [None] * 3)[0]
            if kind == "tangent":
                return _tangent_formula(fx, linear, g, eps, axis_name)
            zeros = [jnp.zeros(a.shape, a.dtype) for a in _bwd_aval(*f, None, None, None, g=g)]
            return jax.vjp(lambda *t: _tangent_formula(fx, t, g, eps, axis_name), *zeros)[1](
                tuple(linear))
        tangents = [ad.instantiate_zeros(t) for t in fixed_tangents]
        return list(jax.jvp(value, tuple(fixed), tuple(tangents))[1])
    return rule


def _fold_channels(prim):
    """vmap: the mapped axis folds into the channels (each mapped element its own statistics):
    one call on (M, B * C) rows; an unmapped operand is broadcast first."""
    def rule(args, dims, *, g, **params):
        args = primitive.at_front(args, dims)
        b = args[0].shape[0]
        folded = g._replace(c=b * g.c, rows=_plan(g.m, b * g.c, args[0].dtype))
        out = prim.bind(*map(primitive.channels_in, args), g=folded, **params)
        return [primitive.channels_out(o, b) for o in out], [0] * len(out)
    return rule


def _fixed(g: Geometry, **_) -> int:
    return 6 if g.residual else 5


ad.primitive_jvps[fwd_p] = _fwd_jvp
primitive.def_linear(tangent_p, _fixed, lambda cts, fixed, **p: bwd_p.bind(*fixed, *cts, **p),
                     _second_order("tangent"))
primitive.def_linear(bwd_p, _fixed, lambda cts, fixed, **p: tangent_p.bind(*fixed, *cts, **p),
                     _second_order("backward"))
for _p in (fwd_p, tangent_p, bwd_p):
    batching.primitive_batchers[_p] = _fold_channels(_p)


def reference(x: jax.Array, scale: jax.Array | None, bias: jax.Array | None, *,
              residual: jax.Array | None = None, activation: str = "relu", eps: float = 1e-5
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The definition the kernels equal: ops.batch_norm in training on its XLA path."""
    with dispatch.use("xla"):
        return ops.batch_norm(x, scale, bias, train=True, eps=eps, residual=residual,
                              activation=activation)


def _unsupported(x, residual, activation: str) -> str | None:
    """Why no backend's kernels take these arguments, or None (each also has dtypes of its
    own)."""
    if activation not in ACTIVATIONS:
        return f"activation {activation!r} (the kernel fuses {sorted(ACTIVATIONS)})"
    if residual is not None and (residual.shape != x.shape or residual.dtype != x.dtype):
        return (f"residual {residual.dtype}{list(residual.shape)} unlike x "
                f"{x.dtype}{list(x.shape)} (the kernel adds a residual of x's shape and dtype)")
    if x.ndim < 2:
        return f"{x.ndim}-D input (the kernel takes (..., C) with at least one batch axis)"
    return None


def _kernel(x: jax.Array, scale: jax.Array | None, bias: jax.Array | None,
            residual: jax.Array | None, activation: str, eps: float, axis_name=None,
            interpret: bool = False) -> tuple[jax.Array, jax.Array, jax.Array] | None:
    """The kernels on validated arguments (Pallas where `dispatch.kernel_mode` says so, else the
    CPU kernels where `dispatch.cpu_kernel` does), or None when the switch (or an argument the
    kernels do not take) keeps ops.batch_norm's XLA path. Registered as ops.batch_norm's kernel.
    With `axis_name` (synchronised statistics) the kernels run inside shard_map, whose shards
    exchange their partials within the kernels' passes; under vmap or pmap's axis they do not."""
    reason = _unsupported(x, residual, activation)
    if reason is None and axis_name is not None and (
            axis_name not in jax.sharding.get_abstract_mesh().manual_axes):
        reason = f"axis_name {axis_name!r} is not a shard_map axis"
    mode = dispatch.kernel_mode("batch_norm_act", reason or tiling.unsupported_dtype(x), interpret)
    if mode is not None:
        backend = "interpret" if mode else "triton"
    elif dispatch.cpu_kernel("batch_norm_act", reason or cpu.unsupported(x, activation)):
        backend = "cpu"
    else:
        return None
    c = x.shape[-1]
    m = x.size // c
    g = Geometry(m, c, activation, residual is not None, _plan(m, c, x.dtype))
    scale = jnp.ones((c,), jnp.float32) if scale is None else scale
    bias = jnp.zeros((c,), jnp.float32) if bias is None else bias
    res = () if residual is None else (residual.reshape(m, c),)
    y, mean, var = fwd_p.bind(x.reshape(m, c), scale, bias, *res, g=g, eps=eps, backend=backend,
                              axis_name=axis_name)
    return y.reshape(x.shape), mean, var


register_kernel("batch_norm", _kernel)


def batch_norm_act(x: jax.Array, scale: jax.Array | None, bias: jax.Array | None, *,
                   residual: jax.Array | None = None, activation: str = "relu",
                   eps: float = 1e-5, interpret: bool = False
                   ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """act(batch_norm(x) + residual) with training-mode statistics over every axis but the last:
    `ops.batch_norm(x, scale, bias, train=True, residual=..., activation=..., eps=...)`, which
    runs these kernels on a GPU when the kernels switch says "auto" or "pallas" and on an x86-64
    CPU when it says "auto" or "onednn"; `interpret` runs the Pallas kernels in the Pallas
    interpreter whatever the switch (see cnnjax.kernels.dispatch).

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
