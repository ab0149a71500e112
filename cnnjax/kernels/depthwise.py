"""Depthwise 2-D convolution (channel multiplier 1, NHWC) as Pallas kernels: the forward pass
and the input and filter gradients, three bilinear primitives, each the others' transpose (so
forward mode, reverse mode and vmap all run kernels).

Equal to `cnnjax.ops.depthwise_conv2d(x, w, b, stride=stride, padding=padding)`. The kernels
take square 3x3 and 5x5 filters at stride 1 or 2 with any padding of 0..k-1 pixels per side
("SAME", or PyTorch's symmetric k // 2); other arguments fall back to the reference.

Blocking (GPU). Depthwise convolution does k^2 multiply-adds per value it reads, so it is bound
by memory traffic, not arithmetic; the kernels read each operand once from HBM and take the
k x k reuse from L1/L2:
- forward: one program per (ROWS output rows, BW columns, BC channels) tile of the result; it
  reads each input row of its window once and adds it into every output row it feeds (see
  `_forward_kernel`), each row of a tile one contiguous run of BC channels, float32 registers.
- input gradient: one program per (image row, BW columns, BC channels) tile of dx; it gathers
  the k^2 shifted (and, at stride 2, strided) tiles of dy whose windows cover it.
- filter gradient: dw[tap, c] = sum over (n, oh, ow) of dy * x_shifted is a reduction over
  N * H' * W' per channel. Programs own (a run of output rows, BC channels), keep k^2 float32
  (BW, BC) accumulators in registers across their rows, and write one (k^2, BC) partial that
  XLA sums (deterministic, no atomics); the programs are few and wide (see `_filter_grad`).
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
from cnnjax.ops.shapes import Padding, explicit_padding, pair

KERNEL_SIZES = (3, 5)
STRIDES = (1, 2)
# Values per output tile (input gradient; the forward's ROWS accumulators share this budget).
TILE_ELEMENTS = 2048
# Output rows per forward program.
ROWS = 4
# Filter gradient: values per accumulator, warps and target programs. It keeps k^2 accumulators
# live: 25 x 512 fp32 over 256 threads is 50 registers each.
GRAD_TILE_ELEMENTS = 512
GRAD_WARPS = 8
GRAD_PROGRAMS = 128


class Geometry(NamedTuple):
    """Static shape of one depthwise convolution: input (n, h, w, c), output (ho, wo), square
    kernel k, stride s, top and left padding."""

    n: int
    h: int
    w: int
    c: int
    ho: int
    wo: int
    k: int
    s: int
    pad_top: int
    pad_left: int


def _taps(k: int):
    return [(di, dj) for di in range(k) for dj in range(k)]


def _forward_kernel(x_ref, w_ref, y_ref, *, g: Geometry, bw: int, bc: int):
    """y[n, oh, ow, c] = sum_{di, dj} x[n, oh*s + di - pt, ow*s + dj - pl, c] * w[di*k + dj, c].
    Refs: x (N*H, W, C), w (k*k, C), y (N*H', W', C); program (n and a block of ROWS output
    rows, ow tile, c tile).

    ROWS output rows per program: output rows oh and oh + 1 share k - s of their k input rows,
    so a program per output row reads each input row k / s times (from L2 at best). Here the
    program walks the (ROWS - 1) * s + k input rows of its block once, loads each (per column
    shift dj) once, and adds it into every output row of the block it feeds, with the k^2
    weights held in registers for the whole block. The ROWS accumulators share the register
    budget of one tile (the caller narrows BW), so occupancy is unchanged.
    """
    blocks = pl.cdiv(g.ho, ROWS)
    p = pl.program_id(0)
    n, oh0 = tiling.div(p, blocks), tiling.rem(p, blocks) * ROWS
    ow = tiling.arange(pl.program_id(1) * bw, bw)
    c = tiling.arange(pl.program_id(2) * bc, bc)
    c_ok = c < g.c
    w = [tiling.load(w_ref, (t, c), c_ok, 0.0).astype(jnp.float32)[None, :]
         for t in range(g.k * g.k)]
    acc = [jnp.zeros((bw, bc), jnp.float32) for _ in range(ROWS)]
    for j in range((ROWS - 1) * g.s + g.k):  # input row oh0 * s + j - pt
        ih = oh0 * g.s + j - g.pad_top
        feeds = [(r, j - r * g.s) for r in range(ROWS) if 0 <= j - r * g.s < g.k]
        for dj in range(g.k):
            iw = ow * g.s + dj - g.pad_left
            ok = (ih >= 0) & (ih < g.h) & ((iw >= 0) & (iw < g.w))[:, None] & c_ok[None, :]
            xv = tiling.load(x_ref, (n * g.h + ih, iw[:, None], c[None, :]), ok, 0.0)
            xv = xv.astype(jnp.float32)
            for r, di in feeds:
                acc[r] = acc[r] + xv * w[di * g.k + dj]
    out_ok = (ow < g.wo)[:, None] & c_ok[None, :]
    for r in range(ROWS):
        oh = oh0 + r
        tiling.store(y_ref, (n * g.ho + oh, ow[:, None], c[None, :]), acc[r], out_ok & (oh < g.ho))


def _source(i, pad: int, d: int, s: int, size: int):
    """For input position i and tap offset d: the output position o with o*s + d - pad = i, and
    whether it exists (divisible, inside [0, size))."""
    t = i + pad - d
    if s == 1:
        return t, (t >= 0) & (t < size)
    # Negative t is masked out, so truncating division serves.
    o = tiling.div(t, s)
    return o, (t >= 0) & (tiling.rem(t, s) == 0) & (o < size)


def _input_grad_kernel(dy_ref, w_ref, dx_ref, *, g: Geometry, bw: int, bc: int):
    """dx[n, ih, iw, c] = sum over taps whose window covers (ih, iw) of dy[n, oh, ow, c] * w[tap, c]
    (the gather form of the transposed convolution: no scatter, no atomics). Refs: dy (N*H', W', C),
    w (k*k, C), dx (N*H, W, C); program (row n*H + ih, iw tile, c tile)."""
    row = pl.program_id(0)
    n, ih = tiling.div(row, g.h), tiling.rem(row, g.h)
    iw = tiling.arange(pl.program_id(1) * bw, bw)
    c = tiling.arange(pl.program_id(2) * bc, bc)
    c_ok = c < g.c
    acc = jnp.zeros((bw, bc), jnp.float32)
    for di, dj in _taps(g.k):
        oh, oh_ok = _source(ih, g.pad_top, di, g.s, g.ho)
        ow, ow_ok = _source(iw, g.pad_left, dj, g.s, g.wo)
        ok = oh_ok & ow_ok[:, None] & c_ok[None, :]
        gv = tiling.load(dy_ref, (n * g.ho + oh, ow[:, None], c[None, :]), ok, 0.0)
        wv = tiling.load(w_ref, (di * g.k + dj, c), c_ok, 0.0)
        acc += gv.astype(jnp.float32) * wv.astype(jnp.float32)[None, :]
    tiling.store(dx_ref, (row, iw[:, None], c[None, :]), acc, (iw < g.w)[:, None] & c_ok[None, :])


def _filter_grad_kernel(x_ref, dy_ref, part_ref, *, g: Geometry, rows: int, bw: int, bc: int):
    """part[p, tap, c] = sum over output rows [p*rows, (p+1)*rows) and all columns of
    dy[n, oh, ow, c] * x[n, oh*s + di - pt, ow*s + dj - pl, c]. Refs: x (N*H, W, C),
    dy (N*H', W', C), part (P, k*k, C) float32; program (row block p, c tile)."""
    p = pl.program_id(0)
    c = tiling.arange(pl.program_id(1) * bc, bc)
    c_ok = c < g.c
    col_tiles = pl.cdiv(g.wo, bw)
    taps = _taps(g.k)

    def body(i, acc):
        row = p * rows + tiling.div(i, col_tiles)
        n, oh = tiling.div(row, g.ho), tiling.rem(row, g.ho)
        ow = tiling.arange(tiling.rem(i, col_tiles) * bw, bw)
        dy_ok = (row < g.n * g.ho) & (ow < g.wo)[:, None] & c_ok[None, :]
        gv = tiling.load(dy_ref, (row, ow[:, None], c[None, :]), dy_ok, 0.0).astype(jnp.float32)
        out = []
        for a, (di, dj) in zip(acc, taps):
            ih = oh * g.s + di - g.pad_top
            iw = ow * g.s + dj - g.pad_left
            ok = dy_ok & (ih >= 0) & (ih < g.h) & ((iw >= 0) & (iw < g.w))[:, None]
            xv = tiling.load(x_ref, (n * g.h + ih, iw[:, None], c[None, :]), ok, 0.0)
            out.append(a + gv * xv.astype(jnp.float32))
        return tuple(out)

    zeros = tuple(jnp.zeros((bw, bc), jnp.float32) for _ in taps)
    acc = tiling.fori_loop(rows * col_tiles, body, zeros)
    for t, a in enumerate(acc):
        tiling.store(part_ref, (p, t, c), jnp.sum(a, axis=0), c_ok)


def _blocks(g: Geometry, dtype, elements: int = TILE_ELEMENTS) -> tuple[int, int]:
    bc = tiling.channel_block(g.c, jnp.dtype(dtype).itemsize)
    return bc, tiling.span_block(max(g.w, g.wo), bc, elements)


def _forward(x3, w2, g: Geometry, interpret: bool):
    bc, bw = _blocks(g, x3.dtype, TILE_ELEMENTS // ROWS)
    kernel = functools.partial(_forward_kernel, g=g, bw=bw, bc=bc)
    return tiling.launch(
        kernel, grid=(g.n * pl.cdiv(g.ho, ROWS), pl.cdiv(g.wo, bw), pl.cdiv(g.c, bc)),
        interpret=interpret, out_shape=jax.ShapeDtypeStruct((g.n * g.ho, g.wo, g.c), x3.dtype),
        name="depthwise_conv2d_fwd")(x3, w2)


def _input_grad(dy3, w2, g: Geometry, interpret: bool, dtype):
    bc, bw = _blocks(g, dy3.dtype)
    kernel = functools.partial(_input_grad_kernel, g=g, bw=bw, bc=bc)
    return tiling.launch(
        kernel, grid=(g.n * g.h, pl.cdiv(g.w, bw), pl.cdiv(g.c, bc)), interpret=interpret,
        out_shape=jax.ShapeDtypeStruct((g.n * g.h, g.w, g.c), dtype),
        name="depthwise_conv2d_dx")(dy3, w2)


def _filter_grad(x3, dy3, g: Geometry, interpret: bool, dtype):
    """dw (k, k, 1, C) from per-program partials.

    Few, wide programs. A program's fixed cost is its k^2 accumulators: at the end, k^2
    cross-row reductions of a (BW, BC) tile (warp shuffles) and k^2 partial rows written to HBM
    and read back by XLA's sum. With TARGET_PROGRAMS (512) programs a late layer (7x7 output,
    1152 channels in 18 tiles, batch 32: 224 output rows) gives each program 8 rows of 7
    columns, so that fixed cost rivals the loop's work; GRAD_PROGRAMS (128, about one wave on a
    ~100-SM GPU) gives each 32 rows and leaves a quarter of the partials. Each program is also twice as
    wide (GRAD_WARPS warps, a GRAD_TILE_ELEMENTS tile): per-thread registers for the k^2
    accumulators stay as they were, a tile of BW columns re-reads k - 1 halo columns of x per
    shifted load, a share that halves as BW doubles, and more loads are in flight per program to
    cover memory latency over its longer run of rows.
    """
    bc = tiling.channel_block(g.c, jnp.dtype(x3.dtype).itemsize)
    bw = tiling.span_block(g.wo, bc, GRAD_TILE_ELEMENTS)
    c_tiles, out_rows = pl.cdiv(g.c, bc), g.n * g.ho
    rows = pl.cdiv(out_rows, max(1, min(out_rows, GRAD_PROGRAMS // c_tiles)))
    programs = pl.cdiv(out_rows, rows)
    kernel = functools.partial(_filter_grad_kernel, g=g, rows=rows, bw=bw, bc=bc)
    parts = tiling.launch(
        kernel, grid=(programs, c_tiles), interpret=interpret, num_warps=GRAD_WARPS,
        out_shape=jax.ShapeDtypeStruct((programs, g.k * g.k, g.c), jnp.float32),
        name="depthwise_conv2d_dw")(x3, dy3)
    return jnp.sum(parts, axis=0).astype(dtype)


def _dx(dy3, w2, *, geometry: Geometry, interpret: bool):
    return _input_grad(dy3, w2, geometry, interpret, dy3.dtype)


def _dw(x3, dy3, *, geometry: Geometry, interpret: bool):
    return _filter_grad(x3, dy3, geometry, interpret, x3.dtype)


def _shapes(g: Geometry, dtype):
    """The shapes of (x, w, y) as the kernels view them: (N*H, W, C), (k*k, C), (N*H', W', C)."""
    return tuple(jax.core.ShapedArray(s, dtype)
                 for s in ((g.n * g.h, g.w, g.c), (g.k * g.k, g.c), (g.n * g.ho, g.wo, g.c)))


# The three passes, each a primitive (cnnjax.kernels.primitive), all in x's dtype:
#   depthwise_conv2d_fwd(x, w) -> y, depthwise_conv2d_dx(dy, w) -> dx,
#   depthwise_conv2d_dw(x, dy) -> dw.
# Each is bilinear, and <g, fwd(x, w)> = <dx(g, w), x> = <dw(x, g), w>: every pass's transpose in
# either operand is one of the other two, so the JVP is the pass applied to each tangent (two
# kernel calls) and reverse mode, of any order, runs the kernels.
fwd_p = primitive.define("depthwise_conv2d_fwd", lambda x3, w2, *, geometry, interpret: _forward(
    x3, w2, geometry, interpret), abstract_eval=lambda x, w, **p: _shapes(p['geometry'], x.dtype)[2])
dx_p = primitive.define("depthwise_conv2d_dx", _dx,
                        abstract_eval=lambda dy, w, **p: _shapes(p['geometry'], dy.dtype)[0])
dw_p = primitive.define("depthwise_conv2d_dw", _dw,
                        abstract_eval=lambda x, dy, **p: _shapes(p['geometry'], x.dtype)[1])
ad.defbilinear(fwd_p, lambda ct, x, w, **p: dx_p.bind(ct, w, **p),
               lambda ct, x, w, **p: dw_p.bind(x, ct, **p))
ad.defbilinear(dx_p, lambda ct, dy, w, **p: fwd_p.bind(ct, w, **p),
               lambda ct, dy, w, **p: dw_p.bind(ct, dy, **p))
ad.defbilinear(dw_p, lambda ct, x, dy, **p: dx_p.bind(dy, ct, **p),
               lambda ct, x, dy, **p: fwd_p.bind(x, ct, **p))


def _batcher(prim, images: int | None):
    """vmap: where only operand `images` (rows of whole images) is mapped, the mapped axis folds
    into the images (one call on B * N images); otherwise (mapped filters, or both operands of
    the filter gradient) into the channels, which depthwise convolution keeps apart (one call
    on B * C channels; an unmapped operand is broadcast first)."""
    def rule(args, dims, *, geometry, interpret):
        if images is not None and dims[1 - images] is None:
            a = jnp.moveaxis(args[images], dims[images], 0)
            b = a.shape[0]
            folded = list(args)
            folded[images] = a.reshape(b * a.shape[1], *a.shape[2:])
            out = prim.bind(*folded, geometry=geometry._replace(n=b * geometry.n), interpret=interpret)
            return out.reshape(b, out.shape[0] // b, *out.shape[1:]), 0
        args = primitive.at_front(args, dims)
        b = args[0].shape[0]
        out = prim.bind(*map(primitive.channels_in, args), geometry=geometry._replace(c=b * geometry.c),
                        interpret=interpret)
        return primitive.channels_out(out, b), 0
    return rule


batching.primitive_batchers[fwd_p] = _batcher(fwd_p, 0)
batching.primitive_batchers[dx_p] = _batcher(dx_p, 0)
batching.primitive_batchers[dw_p] = _batcher(dw_p, None)


def _unsupported(x: jax.Array, w: jax.Array, strides, pads) -> str | None:
    kh, kw, _, cm = w.shape
    if kh != kw or kh not in KERNEL_SIZES:
        return f"kernel {kh}x{kw} (the kernel takes square {KERNEL_SIZES})"
    if cm != x.shape[-1]:
        return f"channel multiplier {cm // x.shape[-1]} (the kernel takes 1)"
    if strides[0] != strides[1] or strides[0] not in STRIDES:
        return f"stride {strides} (the kernel takes equal strides in {STRIDES})"
    if any(not 0 <= p < kh for side in pads for p in side):
        return f"padding {pads} (the kernel takes 0..{kh - 1} per side)"
    return tiling.unsupported_dtype(x, w)


def depthwise_conv2d(x: jax.Array, w: jax.Array, b: jax.Array | None = None, *, stride=1,
                     padding: Padding = "SAME", interpret: bool = False) -> jax.Array:
    """Depthwise convolution, channel multiplier 1: x (N, H, W, C), w (kh, kw, 1, C), optional
    bias b (C,); returns (N, H', W', C) in x's dtype, equal to
    `ops.depthwise_conv2d(x, w, b, stride=stride, padding=padding)`.

    Runs the Pallas kernels when the kernels switch says "pallas" (on a GPU) or `interpret` is
    set; see cnnjax.kernels.dispatch. Differentiable in x, w and b.
    """
    reference = functools.partial(ops.depthwise_conv2d, stride=stride, padding=padding)
    out = jax.eval_shape(reference, x, w, b)  # validates the arguments as the reference does
    strides = pair(stride, "stride")
    pads = explicit_padding(padding, x.shape[1:3], w.shape[:2], strides, (1, 1))
    mode = dispatch.kernel_mode("depthwise_conv2d", _unsupported(x, w, strides, pads), interpret)
    if mode is None:
        return reference(x, w, b)
    n, h, wd, c = x.shape
    g = Geometry(n, h, wd, c, out.shape[1], out.shape[2], w.shape[0], strides[0], pads[0][0],
                 pads[1][0])
    # The reference computes in x's dtype (it casts w); so does the kernel, in fp32 registers.
    w2 = w.astype(x.dtype).reshape(g.k * g.k, c)
    y = fwd_p.bind(x.reshape(n * h, wd, c), w2, geometry=g, interpret=mode).reshape(out.shape)
    return y if b is None else y + b.astype(y.dtype)

