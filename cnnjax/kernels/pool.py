"""Max and average pooling (NHWC) as kernels with kernel backward and tangent passes (primitives:
see the list above `_max_fwd`): Pallas kernels (a GPU; the Pallas interpreter elsewhere) and the
CPU extension's (`cnnjax.kernels.onednn.pool`), the same passes and rules on either backend.

Equal to `cnnjax.ops.max_pool` / `ops.avg_pool` for any window, stride, padding and ceil_mode
they accept (max pooling's gradient in windows with NaNs: see below); windows of more than
MAX_WINDOW values fall back to the reference.

Blocking (GPU): one program per (output or input row, BW columns, BC channels) tile, channels
contiguous, float32 accumulation; the window's k_h x k_w shifted tiles are gathered with masks
(their overlap is served by L1/L2), so each operand crosses HBM once.

Max pooling's gradient goes to the first maximum of each window in row-major order, or to its
last NaN if it has NaNs: PyTorch's max_pool2d rule (ops.max_pool follows it for non-overlapping
windows; XLA's select-and-scatter, its gradient for the others, differs on NaNs). XLA scatters;
here the forward pass also writes the window position of each maximum (int8, a quarter of an
fp32 output), and the backward kernel gathers: every input value sums the output gradients of
the windows that chose it, so there are no atomics and no second pass over the input. Average pooling's backward kernel gathers dy / divisor likewise.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.interpreters import ad, batching

from cnnjax import ops
from cnnjax.kernels import dispatch, primitive, tiling
from cnnjax.kernels.onednn import pool as cpu
from cnnjax.ops.shapes import Padding, explicit_padding, pair

# Window positions are unrolled in the kernels and stored as int8 for max pooling's backward.
MAX_WINDOW = 64
TILE_ELEMENTS = 2048


class Geometry(NamedTuple):
    """Static shape of one pooling: input (n, h, w, c), output (ho, wo), window (kh, kw),
    strides (sh, sw), top and left padding; `include_pad`: avg_pool's count_include_pad; bottom
    and right explicit padding (the overhang ceil_mode adds beyond them never counts)."""

    n: int
    h: int
    w: int
    c: int
    ho: int
    wo: int
    kh: int
    kw: int
    sh: int
    sw: int
    pad_top: int
    pad_left: int
    include_pad: bool = True
    pad_bottom: int = 0
    pad_right: int = 0


def _window(g: Geometry):
    return [(di, dj) for di in range(g.kh) for dj in range(g.kw)]


def _output_tile(g: Geometry, bw: int, bc: int):
    """(row, n, oh, ow vector, c vector, channel mask) of this program's output tile."""
    row = pl.program_id(0)
    ow = tiling.arange(pl.program_id(1) * bw, bw)
    c = tiling.arange(pl.program_id(2) * bc, bc)
    return row, tiling.div(row, g.ho), tiling.rem(row, g.ho), ow, c, c < g.c


def _input_tile(g: Geometry, bw: int, bc: int):
    """(row, n, ih, iw vector, c vector, channel mask) of this program's input-gradient tile."""
    row = pl.program_id(0)
    iw = tiling.arange(pl.program_id(1) * bw, bw)
    c = tiling.arange(pl.program_id(2) * bc, bc)
    return row, tiling.div(row, g.h), tiling.rem(row, g.h), iw, c, c < g.c


def _source(i, pad: int, d: int, s: int, size: int):
    """The window o whose offset d lands on input position i (o*s + d - pad = i), and whether
    it exists."""
    t = i + pad - d
    if s == 1:
        return t, (t >= 0) & (t < size)
    # Negative t is masked out, so truncating division serves.
    o = tiling.div(t, s)
    return o, (t >= 0) & (tiling.rem(t, s) == 0) & (o < size)


def _max_kernel(x_ref, y_ref, *arg_ref, g: Geometry, bw: int, bc: int):
    """y = window max (padding never wins); with arg_ref, also the first maximum's window index.
    Refs: x (N*H, W, C), y (N*H', W', C), arg (N*H', W', C) int8."""
    row, n, oh, ow, c, c_ok = _output_tile(g, bw, bc)
    best = jnp.full((bw, bc), -jnp.inf, jnp.float32)
    arg = jnp.zeros((bw, bc), jnp.int32)
    for t, (di, dj) in enumerate(_window(g)):
        ih = oh * g.sh + di - g.pad_top
        iw = ow * g.sw + dj - g.pad_left
        ok = (ih >= 0) & (ih < g.h) & ((iw >= 0) & (iw < g.w))[:, None] & c_ok[None, :]
        v = tiling.load(x_ref, (n * g.h + ih, iw[:, None], c[None, :]), ok, -jnp.inf)
        v = v.astype(jnp.float32)
        if arg_ref:
            # Strict: ties keep the first; a NaN always takes over (PyTorch's rule: the last NaN).
            arg = jnp.where((v > best) | jnp.isnan(v), t, arg)
        best = jnp.maximum(best, v)  # propagates NaN like the reference's max
    out_ok = (ow < g.wo)[:, None] & c_ok[None, :]
    tiling.store(y_ref, (row, ow[:, None], c[None, :]), best, out_ok)
    if arg_ref:
        tiling.store(arg_ref[0], (row, ow[:, None], c[None, :]), arg.astype(jnp.int8), out_ok)


def _max_grad_kernel(arg_ref, dy_ref, dx_ref, *, g: Geometry, bw: int, bc: int):
    """dx[n, ih, iw, c] = sum of dy over the windows whose chosen position is (ih, iw).
    Refs: arg, dy (N*H', W', C), dx (N*H, W, C)."""
    row, n, ih, iw, c, c_ok = _input_tile(g, bw, bc)
    acc = jnp.zeros((bw, bc), jnp.float32)
    for t, (di, dj) in enumerate(_window(g)):
        oh, oh_ok = _source(ih, g.pad_top, di, g.sh, g.ho)
        ow, ow_ok = _source(iw, g.pad_left, dj, g.sw, g.wo)
        ok = oh_ok & ow_ok[:, None] & c_ok[None, :]
        index = (n * g.ho + oh, ow[:, None], c[None, :])
        chosen = tiling.load(arg_ref, index, ok, -1) == t
        gv = tiling.load(dy_ref, index, ok & chosen, 0.0)
        acc += gv.astype(jnp.float32)
    tiling.store(dx_ref, (row, iw[:, None], c[None, :]), acc, (iw < g.w)[:, None] & c_ok[None, :])


def _divisor(g: Geometry, oh, ow):
    ch = cpu.window_count(oh, g.sh, g.pad_top, g.pad_bottom, g.kh, g.h, g.include_pad)
    cw = cpu.window_count(ow, g.sw, g.pad_left, g.pad_right, g.kw, g.w, g.include_pad)
    # Lanes outside the output count <= 0; 1 keeps their (masked) quotient finite.
    return jnp.maximum(ch * cw, 1).astype(jnp.float32)


def _avg_kernel(x_ref, y_ref, *, g: Geometry, bw: int, bc: int):
    """y = window sum / divisor. Refs: x (N*H, W, C), y (N*H', W', C)."""
    row, n, oh, ow, c, c_ok = _output_tile(g, bw, bc)
    acc = jnp.zeros((bw, bc), jnp.float32)
    for di, dj in _window(g):
        ih = oh * g.sh + di - g.pad_top
        iw = ow * g.sw + dj - g.pad_left
        ok = (ih >= 0) & (ih < g.h) & ((iw >= 0) & (iw < g.w))[:, None] & c_ok[None, :]
        acc += tiling.load(x_ref, (n * g.h + ih, iw[:, None], c[None, :]), ok, 0.0).astype(jnp.float32)
    y = acc / _divisor(g, oh, ow)[:, None]
    tiling.store(y_ref, (row, ow[:, None], c[None, :]), y, (ow < g.wo)[:, None] & c_ok[None, :])


def _avg_grad_kernel(dy_ref, dx_ref, *, g: Geometry, bw: int, bc: int):
    """dx[n, ih, iw, c] = sum over the windows covering (ih, iw) of dy / divisor.
    Refs: dy (N*H', W', C), dx (N*H, W, C)."""
    row, n, ih, iw, c, c_ok = _input_tile(g, bw, bc)
    acc = jnp.zeros((bw, bc), jnp.float32)
    for di, dj in _window(g):
        oh, oh_ok = _source(ih, g.pad_top, di, g.sh, g.ho)
        ow, ow_ok = _source(iw, g.pad_left, dj, g.sw, g.wo)
        ok = oh_ok & ow_ok[:, None] & c_ok[None, :]
        gv = tiling.load(dy_ref, (n * g.ho + oh, ow[:, None], c[None, :]), ok, 0.0)
        acc += gv.astype(jnp.float32) / _divisor(g, oh, ow)[:, None]
    tiling.store(dx_ref, (row, iw[:, None], c[None, :]), acc, (iw < g.w)[:, None] & c_ok[None, :])


# Each pass's name -> its name in the CPU extension.
_CPU_PASSES = {"max_pool2d_fwd": "max", "max_pool2d_fwd_argmax": "max_argmax",
               "max_pool2d_select": "max_select", "max_pool2d_bwd": "max_grad",
               "avg_pool2d_fwd": "avg", "avg_pool2d_bwd": "avg_grad"}


def _run(kernel, g: Geometry, src, rows: int, cols: int, outs, backend: str, name: str):
    """Launches `kernel` over (rows, column tiles, channel tiles) of the result; on the "cpu"
    backend runs the same pass of the CPU extension (`cnnjax.kernels.onednn.pool`) instead."""
    if backend == "cpu":
        return cpu.run(_CPU_PASSES[name], *src, g=g)
    bc = tiling.channel_block(g.c, jnp.dtype(src[0].dtype).itemsize)
    bw = tiling.span_block(max(g.w, g.wo), bc, TILE_ELEMENTS)
    return tiling.launch(
        functools.partial(kernel, g=g, bw=bw, bc=bc),
        grid=(rows, pl.cdiv(cols, bw), pl.cdiv(g.c, bc)), out_shape=outs,
        interpret=backend == "interpret", name=name)(*src)


def _out(g: Geometry, dtype):
    return jax.ShapeDtypeStruct((g.n * g.ho, g.wo, g.c), dtype)


def _in(g: Geometry, dtype):
    return jax.ShapeDtypeStruct((g.n * g.h, g.w, g.c), dtype)


def _max_select_kernel(arg_ref, t_ref, ty_ref, *, g: Geometry, bw: int, bc: int):
    """ty = t at each window's chosen position (max pooling's tangent: the forward pass gathers
    what its backward kernel scatters). Refs: arg (N*H', W', C) int8, t (N*H, W, C), ty (N*H', W', C)."""
    row, n, oh, ow, c, c_ok = _output_tile(g, bw, bc)
    out_ok = (ow < g.wo)[:, None] & c_ok[None, :]
    arg = tiling.load(arg_ref, (row, ow[:, None], c[None, :]), out_ok, -1)
    acc = jnp.zeros((bw, bc), jnp.float32)
    for t, (di, dj) in enumerate(_window(g)):
        ih = oh * g.sh + di - g.pad_top
        iw = ow * g.sw + dj - g.pad_left
        ok = (ih >= 0) & (ih < g.h) & ((iw >= 0) & (iw < g.w))[:, None] & c_ok[None, :]
        v = tiling.load(t_ref, (n * g.h + ih, iw[:, None], c[None, :]), ok & (arg == t), 0.0)
        acc += v.astype(jnp.float32)
    tiling.store(ty_ref, (row, ow[:, None], c[None, :]), acc, out_ok)


# The passes, each a primitive (cnnjax.kernels.primitive) taking arrays viewed as
# (N*H, W, C) rows and the static Geometry `g` and `backend` ("triton" or "interpret": the
# Pallas kernels; "cpu": the CPU extension's passes):
#   max_pool2d_fwd(x) -> y                  the primal value (no argmax written)
#   max_pool2d_fwd_argmax(x) -> (y, arg)    under differentiation
#   max_pool2d_select(arg, t) -> t at arg   the tangent: linear in t
#   max_pool2d_bwd(arg, dy) -> dx           its transpose, the gradient
#   avg_pool2d_fwd(x) -> y, avg_pool2d_bwd(dy) -> dx: linear, each the other's transpose.
def _max_fwd(x3, *, g: Geometry, backend: str):
    return _run(_max_kernel, g, (x3,), g.n * g.ho, g.wo, _out(g, x3.dtype), backend,
                "max_pool2d_fwd")


def _max_fwd_argmax(x3, *, g: Geometry, backend: str):
    return _run(_max_kernel, g, (x3,), g.n * g.ho, g.wo, (_out(g, x3.dtype), _out(g, jnp.int8)),
                backend, "max_pool2d_fwd_argmax")


def _max_select(arg, t3, *, g: Geometry, backend: str):
    return _run(_max_select_kernel, g, (arg, t3), g.n * g.ho, g.wo, _out(g, t3.dtype), backend,
                "max_pool2d_select")


def _max_grad(arg, dy3, *, g: Geometry, backend: str):
    # dx has the output gradient's dtype, which is the input's.
    return _run(_max_grad_kernel, g, (arg, dy3), g.n * g.h, g.w, _in(g, dy3.dtype), backend,
                "max_pool2d_bwd")


def _avg_fwd(x3, *, g: Geometry, backend: str):
    return _run(_avg_kernel, g, (x3,), g.n * g.ho, g.wo, _out(g, x3.dtype), backend,
                "avg_pool2d_fwd")


def _avg_grad(dy3, *, g: Geometry, backend: str):
    return _run(_avg_grad_kernel, g, (dy3,), g.n * g.h, g.w, _in(g, dy3.dtype), backend,
                "avg_pool2d_bwd")


def _aval(shape: jax.ShapeDtypeStruct):
    return jax.core.ShapedArray(shape.shape, shape.dtype)


def _define(fn, name: str, out, multiple_results: bool = False):
    """The pass `fn` as a primitive; `out(g, *operand avals)` its output shape(s)."""
    def abstract_eval(*avals, g, backend):
        shapes = out(g, *avals)
        return [_aval(s) for s in shapes] if multiple_results else _aval(shapes)
    return primitive.define(name, fn, abstract_eval=abstract_eval,
                            multiple_results=multiple_results)


max_fwd_p = _define(_max_fwd, "max_pool2d_fwd", lambda g, x: _out(g, x.dtype))
max_fwd_argmax_p = _define(_max_fwd_argmax, "max_pool2d_fwd_argmax",
                           lambda g, x: (_out(g, x.dtype), _out(g, jnp.int8)), True)
max_select_p = _define(_max_select, "max_pool2d_select", lambda g, arg, t: _out(g, t.dtype))
max_grad_p = _define(_max_grad, "max_pool2d_bwd", lambda g, arg, dy: _in(g, dy.dtype))
avg_fwd_p = _define(_avg_fwd, "avg_pool2d_fwd", lambda g, x: _out(g, x.dtype))
avg_grad_p = _define(_avg_grad, "avg_pool2d_bwd", lambda g, dy: _in(g, dy.dtype))


def _max_argmax_jvp(primals, tangents, *, g, backend):
    # Max pooling is piecewise linear: its tangent takes t at each window's chosen position
    # (the kernel's tie and NaN rule), with no dependence on x beyond that choice. So the
    # derivative of every order goes through the same choice, and second derivatives taken
    # either way (forward-over-reverse, reverse-over-forward) agree, with PyTorch's too.
    (x3,), (t3,) = primals, tangents
    y, arg = max_fwd_argmax_p.bind(x3, g=g, backend=backend)
    ty = (ad.Zero(jax.typeof(y).to_tangent_aval()) if type(t3) is ad.Zero
          else max_select_p.bind(arg, t3, g=g, backend=backend))
    return (y, arg), (ty, ad.Zero(jax.typeof(arg).to_tangent_aval()))


def _max_jvp(primals, tangents, *, g, backend):
    (y, _), (ty, _) = _max_argmax_jvp(primals, tangents, g=g, backend=backend)
    return y, ty


ad.primitive_jvps[max_fwd_p] = _max_jvp
ad.primitive_jvps[max_fwd_argmax_p] = _max_argmax_jvp
primitive.def_linear(max_select_p, 1,
                     lambda cts, fixed, **p: [max_grad_p.bind(*fixed, cts[0], **p)])
primitive.def_linear(max_grad_p, 1,
                     lambda cts, fixed, **p: [max_select_p.bind(*fixed, cts[0], **p)])
primitive.def_linear(avg_fwd_p, 0, lambda cts, fixed, **p: [avg_grad_p.bind(cts[0], **p)])
primitive.def_linear(avg_grad_p, 0, lambda cts, fixed, **p: [avg_fwd_p.bind(cts[0], **p)])


def _batcher(prim):
    """vmap folds the mapped axis into the images: one call on B * N images."""
    def rule(args, dims, *, g, backend):
        args = primitive.at_front(args, dims)
        b = args[0].shape[0]
        out = prim.bind(*(a.reshape(b * a.shape[1], *a.shape[2:]) for a in args),
                        g=g._replace(n=b * g.n), backend=backend)
        unfold = lambda o: o.reshape(b, o.shape[0] // b, *o.shape[1:])
        if prim.multiple_results:
            return [unfold(o) for o in out], [0] * len(out)
        return unfold(out), 0
    return rule


for _p in (max_fwd_p, max_fwd_argmax_p, max_select_p, max_grad_p, avg_fwd_p, avg_grad_p):
    batching.primitive_batchers[_p] = _batcher(_p)


def _max_pool(x3, g: Geometry, backend: str):
    return max_fwd_p.bind(x3, g=g, backend=backend)


def _avg_pool(x3, g: Geometry, backend: str):
    return avg_fwd_p.bind(x3, g=g, backend=backend)


def _geometry(x: jax.Array, out_shape, window, stride, padding, include_pad: bool) -> Geometry:
    kh, kw = pair(window, "window")
    sh, sw = pair(window if stride is None else stride, "stride")
    pads = explicit_padding(padding, x.shape[1:3], (kh, kw), (sh, sw), (1, 1))
    n, h, w, c = x.shape
    return Geometry(n, h, w, c, out_shape[1], out_shape[2], kh, kw, sh, sw, pads[0][0],
                    pads[1][0], include_pad, pads[0][1], pads[1][1])


def _pool(op: str, x: jax.Array, reference, impl, geometry_args, interpret: bool) -> jax.Array:
    out = jax.eval_shape(reference, x)  # validates the arguments as the reference does
    g = _geometry(x, out.shape, *geometry_args)
    window = (f"window {g.kh}x{g.kw} (the kernel takes at most {MAX_WINDOW} values)"
              if g.kh * g.kw > MAX_WINDOW else None)
    mode = dispatch.kernel_mode(op, window or tiling.unsupported_dtype(x), interpret)
    if mode is not None:
        backend = "interpret" if mode else "triton"
    elif dispatch.cpu_kernel(op, window or cpu.unsupported(x)):
        backend = "cpu"
    else:
        return reference(x)
    return impl(x.reshape(g.n * g.h, g.w, g.c), g, backend).reshape(out.shape)


def max_pool2d(x: jax.Array, window, *, stride=None, padding: Padding = 0,
               ceil_mode: bool = False, interpret: bool = False) -> jax.Array:
    """Max pooling, (N, H, W, C) -> (N, H', W', C), equal to `ops.max_pool(x, window,
    stride=stride, padding=padding, ceil_mode=ceil_mode)`; `stride` defaults to the window.

    Runs the Pallas kernels when the kernels switch says "auto" or "pallas" on a GPU (or
    `interpret` is set), the CPU kernels when it says "auto" or "onednn" on an x86-64 CPU; see
    cnnjax.kernels.dispatch.
    """
    reference = functools.partial(ops.max_pool, window=window, stride=stride, padding=padding,
                                  ceil_mode=ceil_mode)
    return _pool("max_pool2d", x, reference, _max_pool, (window, stride, padding, True), interpret)


def avg_pool2d(x: jax.Array, window, *, stride=None, padding: Padding = 0,
               count_include_pad: bool = True, ceil_mode: bool = False,
               interpret: bool = False) -> jax.Array:
    """Average pooling, (N, H, W, C) -> (N, H', W', C), equal to `ops.avg_pool(x, window,
    stride=stride, padding=padding, count_include_pad=count_include_pad, ceil_mode=ceil_mode)`.

    Runs the Pallas kernels when the kernels switch says "auto" or "pallas" on a GPU (or
    `interpret` is set), the CPU kernels when it says "auto" or "onednn" on an x86-64 CPU; see
    cnnjax.kernels.dispatch.
    """
    reference = functools.partial(ops.avg_pool, window=window, stride=stride, padding=padding,
                                  count_include_pad=count_include_pad, ceil_mode=ceil_mode)
    return _pool("avg_pool2d", x, reference, _avg_pool,
                 (window, stride, padding, count_include_pad), interpret)
