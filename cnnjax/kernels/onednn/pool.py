"""The passes of `cnnjax.kernels.pool` on the CPU: the handler of `pool.cc` (one FFI target,
`cnnjax_onednn_pool`, its pass an attribute), on NHWC activations viewed as (N*H, W, C) rows as
the Pallas kernels view them, float32 or bfloat16, for the static `cnnjax.kernels.pool.Geometry`
`g`:

- max(x) -> y; max_argmax(x) -> (y, arg int8): the window position of each maximum (ties: the
  first in row-major order; a NaN always takes over);
- max_select(arg, t) -> t at each window's chosen position; max_grad(arg, dy) -> dx, its
  transpose;
- avg(x) -> window sums / divisor; avg_grad(dy) -> dx, its transpose.

Each pass is a primitive (`cnnjax.kernels.primitive`) lowered on the CPU to the custom call and
on any other platform to the same pass in XLA (shifted strided slices of the padded input), so
an export for a GPU from a CPU host computes the right thing. They are not differentiated or
batched themselves: cnnjax.kernels.pool's primitives, which call them, own those rules.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnnjax.kernels import primitive
from cnnjax.kernels.onednn import build

PASSES = ("max", "max_argmax", "max_select", "max_grad", "avg", "avg_grad")  # pool.cc's codes


def _views(x3: jax.Array, g: Any, fill: float) -> list[jax.Array]:
    """For each window position (row-major), the (N, H', W', C) values it sees, `fill` where it
    falls outside the input."""
    x = x3.reshape(g.n, g.h, g.w, g.c)
    bottom = max(0, (g.ho - 1) * g.sh + g.kh - g.h - g.pad_top)
    right = max(0, (g.wo - 1) * g.sw + g.kw - g.w - g.pad_left)
    xp = jnp.pad(x, ((0, 0), (g.pad_top, bottom), (g.pad_left, right), (0, 0)),
                 constant_values=fill)
    return [lax.slice(xp, (0, di, dj, 0),
                      (g.n, di + (g.ho - 1) * g.sh + 1, dj + (g.wo - 1) * g.sw + 1, g.c),
                      (1, g.sh, g.sw, 1))
            for di in range(g.kh) for dj in range(g.kw)]


def _rows(a: jax.Array, g: Any) -> jax.Array:
    return a.reshape(g.n * g.ho, g.wo, g.c)


def _max_argmax_xla(x3, *, g):
    best = jnp.full((g.n, g.ho, g.wo, g.c), -jnp.inf, jnp.float32)
    arg = jnp.zeros(best.shape, jnp.int8)
    for t, v in enumerate(_views(x3.astype(jnp.float32), g, -np.inf)):
        take = (v > best) | jnp.isnan(v)
        best, arg = jnp.where(take, v, best), jnp.where(take, jnp.int8(t), arg)
    return _rows(best.astype(x3.dtype), g), _rows(arg, g)


def _max_xla(x3, *, g):
    return _max_argmax_xla(x3, g=g)[0]


def _max_select_xla(arg, t3, *, g):
    arg = arg.reshape(g.n, g.ho, g.wo, g.c)
    views = _views(t3.astype(jnp.float32), g, 0.0)
    out = sum(jnp.where(arg == t, v, 0.0) for t, v in enumerate(views))
    return _rows(out.astype(t3.dtype), g)


def window_count(o, s: int, pad: int, pad_end: int, k: int, size: int, include_pad: bool):
    """Values of window o along one axis that count in the average: those inside the input,
    or with `include_pad` inside the explicitly padded input (never the ceil_mode overhang).
    The rule of every backend's divisor (pool.cc's Geometry::Count is its C++ copy)."""
    start = o * s - pad
    lo, hi = (-pad, size + pad_end) if include_pad else (0, size)
    return jnp.minimum(start + k, hi) - jnp.maximum(start, lo)


def _divisor(g: Any) -> jax.Array:
    """(H', W', 1) divisors of the average."""
    ch = window_count(np.arange(g.ho), g.sh, g.pad_top, g.pad_bottom, g.kh, g.h, g.include_pad)
    cw = window_count(np.arange(g.wo), g.sw, g.pad_left, g.pad_right, g.kw, g.w, g.include_pad)
    return jnp.maximum(ch[:, None] * cw[None, :], 1).astype(jnp.float32)[..., None]


def _avg_xla(x3, *, g):
    sums = sum(_views(x3.astype(jnp.float32), g, 0.0))
    return _rows((sums / _divisor(g)).astype(x3.dtype), g)


def _in_shape(g: Any, dtype) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((g.n * g.h, g.w, g.c), dtype)


def _max_grad_xla(arg, dy3, *, g):
    return jax.linear_transpose(lambda t: _max_select_xla(arg, t, g=g), _in_shape(g, dy3.dtype))(
        dy3)[0]


def _avg_grad_xla(dy3, *, g):
    return jax.linear_transpose(lambda x: _avg_xla(x, g=g), _in_shape(g, dy3.dtype))(dy3)[0]


def _outputs(pass_name: str, g: Any, dtype) -> list[jax.ShapeDtypeStruct]:
    out = jax.ShapeDtypeStruct((g.n * g.ho, g.wo, g.c), dtype)
    return {"max": [out], "max_argmax": [out, jax.ShapeDtypeStruct(out.shape, jnp.int8)],
            "max_select": [out], "max_grad": [_in_shape(g, dtype)], "avg": [out],
            "avg_grad": [_in_shape(g, dtype)]}[pass_name]


def _define(pass_name: str, reference):
    multiple = pass_name == "max_argmax"

    def cpu(*operands, g):
        build.require()  # registers the FFI target (a pass bound directly, not via dispatch)
        assert len(g) == 15, g  # pool.cc reads exactly these 15 fields
        out = _outputs(pass_name, g, operands[-1].dtype)
        result = jax.ffi.ffi_call(build.target_name("pool"), out)(
            *operands, **{"pass": np.int64(PASSES.index(pass_name))},
            geometry=np.array(g[:15], np.int64))
        return result if multiple else result[0]

    def abstract_eval(*avals, g):
        out = [jax.core.ShapedArray(s.shape, s.dtype)
               for s in _outputs(pass_name, g, avals[-1].dtype)]
        return out if multiple else out[0]

    return primitive.define(f"cnnjax_onednn_pool_{pass_name}", reference, {"cpu": cpu},
                            abstract_eval=abstract_eval, multiple_results=multiple)


_PRIMITIVES = {name: _define(name, ref) for name, ref in (
    ("max", _max_xla), ("max_argmax", _max_argmax_xla), ("max_select", _max_select_xla),
    ("max_grad", _max_grad_xla), ("avg", _avg_xla), ("avg_grad", _avg_grad_xla))}


def run(pass_name: str, *operands: jax.Array, g: Any):
    """Pass `pass_name` (one of PASSES) of the pooling of geometry `g` on its operands."""
    return _PRIMITIVES[pass_name].bind(*operands, g=g)


def unsupported(x: jax.Array) -> str | None:
    """Why the CPU passes cannot pool x, or None."""
    if jnp.dtype(x.dtype) not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
        return f"dtype {x.dtype} (the CPU kernel takes float32 and bfloat16)"
    if x.size == 0:
        return f"empty input {tuple(x.shape)}"
    return None
