"""The passes of `cnnjax.kernels.batch_norm_act` on the CPU: the handler of `norm_act.cc` (one
FFI target, `cnnjax_onednn_norm_act`, its pass an attribute), on activations viewed as (M, C),
float32 or bfloat16:

- statistics(x) -> (mean, var): float32 (C,), this array's rows only;
- normalize(x, ab, [res]) -> y = act(a x + b + res), ab (2, C) holding a, b;
- sums(x, ab, mr, g, [res]) -> (s1, s2, [dz]): dz = g act'(a x + b + res), s1 = sum of dz,
  s2 = sum of dz (x - mean) rstd over the rows, mr (2, C) holding mean, rstd;
- input_grad(x, d, coef) -> A dz + B x + D, dz = d (with a residual) or d act'(a x + b);
- tangent(x, t, coef, [res, tres]) -> act'(a x + b + res) (A t + B x + D + tres),
  coef (5, C) holding A, B, D, a, b.

Each pass is a primitive (`cnnjax.kernels.primitive`) lowered on the CPU to the custom call and
on any other platform to the same pass in XLA, so an export for a GPU from a CPU host computes
the right thing. They are not differentiated or batched themselves: batch_norm_act's primitives,
which call them, own those rules.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.kernels import primitive
from cnnjax.kernels.activations import ACTIVATIONS
from cnnjax.kernels.onednn import build

PASSES = ("stats", "normalize", "sums", "input_grad", "tangent")  # norm_act.cc's pass codes
DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))


def _ffi(pass_name: str):
    def call(*operands, activation: str, residual: bool, out):
        build.require()  # registers the FFI target (a pass bound directly, not via dispatch)
        return jax.ffi.ffi_call(build.target_name("norm_act"), out)(
            *operands, **{"pass": np.int64(PASSES.index(pass_name))},
            activation=np.int64(list(ACTIVATIONS).index(activation)), residual=residual)
    return call


def _f32(a: jax.Array) -> jax.Array:
    return a.astype(jnp.float32)


def _pre(x, ab, res):
    z = _f32(x) * ab[0] + ab[1]
    return z if res is None else z + _f32(res)


def _stats_xla(x, *, activation, residual):
    x32 = _f32(x)
    mean = jnp.mean(x32, axis=0)
    return mean, jnp.mean(jnp.square(x32 - mean), axis=0)


def _normalize_xla(x, ab, *res, activation, residual):
    return ACTIVATIONS[activation][0](_pre(x, ab, res[0] if residual else None)).astype(x.dtype)


def _sums_xla(x, ab, mr, g, *res, activation, residual):
    dz = _f32(g) * ACTIVATIONS[activation][1](_pre(x, ab, res[0] if residual else None))
    s1, s2 = jnp.sum(dz, axis=0), jnp.sum(dz * (_f32(x) - mr[0]) * mr[1], axis=0)
    return (s1, s2, dz.astype(x.dtype)) if residual else (s1, s2)


def _input_grad_xla(x, d, coef, *, activation, residual):
    dz = _f32(d) if residual else _f32(d) * ACTIVATIONS[activation][1](_pre(x, coef[3:], None))
    return (coef[0] * dz + coef[1] * _f32(x) + coef[2]).astype(x.dtype)


def _tangent_xla(x, t, coef, *extra, activation, residual):
    z = _pre(x, coef[3:], extra[0] if residual else None)
    tz = coef[0] * _f32(t) + coef[1] * _f32(x) + coef[2]
    if residual:
        tz = tz + _f32(extra[1])
    return (ACTIVATIONS[activation][1](z) * tz).astype(t.dtype)


def _avals(pass_name: str, x, activation, residual):
    """The output shapes and dtypes of a pass on x (M, C)."""
    sums = jax.ShapeDtypeStruct((x.shape[1],), jnp.float32)
    act = jax.ShapeDtypeStruct(x.shape, x.dtype)
    return {"stats": [sums, sums], "normalize": act, "sums": [sums, sums] + [act] * residual,
            "input_grad": act, "tangent": act}[pass_name]


def _define(pass_name: str, reference):
    multiple = pass_name in ("stats", "sums")

    def cpu(*operands, activation, residual):
        return _ffi(pass_name)(*operands, activation=activation, residual=residual,
                               out=_avals(pass_name, operands[0], activation, residual))

    def abstract_eval(*avals, activation, residual):
        out = _avals(pass_name, avals[0], activation, residual)
        to_aval = lambda s: jax.core.ShapedArray(s.shape, s.dtype)
        return [to_aval(s) for s in out] if multiple else to_aval(out)

    return primitive.define(f"cnnjax_onednn_norm_act_{pass_name}", reference, {"cpu": cpu},
                            abstract_eval=abstract_eval, multiple_results=multiple)


_PRIMITIVES = {name: _define(name, ref) for name, ref in (
    ("stats", _stats_xla), ("normalize", _normalize_xla), ("sums", _sums_xla),
    ("input_grad", _input_grad_xla), ("tangent", _tangent_xla))}


def run(pass_name: str, *operands: jax.Array, activation: str = "identity",
        residual: bool = False):
    """Pass `pass_name` (one of PASSES) on its operands (see the module docstring); `residual`
    says whether the optional residual operands are given."""
    return _PRIMITIVES[pass_name].bind(*operands, activation=activation, residual=residual)


def unsupported(x: jax.Array, activation: str) -> str | None:
    """Why the CPU passes cannot take activations x with `activation`, or None."""
    if jnp.dtype(x.dtype) not in DTYPES:
        return f"dtype {x.dtype} (the CPU kernel takes float32 and bfloat16)"
    if x.size == 0:
        return f"empty input {tuple(x.shape)}"
    if activation not in ACTIVATIONS:
        return f"activation {activation!r} (the CPU kernel fuses {sorted(ACTIVATIONS)})"
    return None
