"""A kernel as a JAX primitive, the way JAX defines its own convolution: every transformation
(jit, grad, jvp, jacfwd, hessian, linearize, vmap, export) composes with it.

`define(name, reference, platforms={"cpu": ffi_fn})` makes a `jax.extend.core.Primitive` whose
value on each platform listed is the given JAX function (an FFI call) and, on every other
platform, `reference`. The oneDNN passes give XLA's form of the same computation as `reference`,
so an export for a GPU or TPU still computes the right thing. The Pallas passes give the
Pallas call itself: it lowers to Triton on a GPU and runs in the interpreter on any backend,
and the entry points bind these primitives only where one of the two runs
(`dispatch.kernel_mode`). The caller then gives the primitive its differentiation rules with
JAX's own registries:
- a bilinear kernel (a convolution and its two gradient passes): `jax.interpreters.ad.defbilinear`
  with the two transpose rules, each another kernel primitive; the JVP is then the sum of the
  kernel applied to each tangent, and reverse mode runs the kernels' backward passes;
- a nonlinear kernel: `ad.primitive_jvps[p]` whose tangent is a linear kernel primitive, and
  that primitive's `ad.primitive_transposes` entry its backward kernel;
- `jax.interpreters.batching.primitive_batchers[p]`: fold the vmapped axis into an axis the
  kernel already loops over (`at_front` brings every operand's vmapped axis to the front).

Each function (reference and per-platform) takes the primitive's operands as positional
arguments and its parameters (hashable: tuples, frozen dataclasses) as keywords.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

import jax
from jax._src import dispatch  # apply_primitive: the eager impl JAX's own primitives use
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir


def define(name: str, reference: Callable, platforms: Mapping[str, Callable] | None = None, *,
           abstract_eval: Callable | None = None, multiple_results: bool = False) -> Primitive:
    """A primitive computing `reference`, lowered on each platform of `platforms` to that
    platform's function instead. `abstract_eval(*avals, **params)` gives the output aval(s);
    by default it is `reference`'s, by `jax.eval_shape`."""
    prim = Primitive(name)
    prim.multiple_results = multiple_results
    prim.def_impl(functools.partial(dispatch.apply_primitive, prim))
    prim.def_abstract_eval(abstract_eval or _abstract_eval_of(reference))
    mlir.register_lowering(prim, mlir.lower_fun(reference, multiple_results))
    for platform, fn in (platforms or {}).items():
        mlir.register_lowering(prim, mlir.lower_fun(fn, multiple_results), platform=platform)
    return prim


def _abstract_eval_of(reference: Callable) -> Callable:
    def abstract_eval(*avals, **params):
        out = jax.eval_shape(functools.partial(reference, **params), *avals)
        return jax.tree_util.tree_map(lambda s: jax.core.ShapedArray(s.shape, s.dtype), out)
    return abstract_eval


def at_front(args: Sequence[jax.Array], dims: Sequence[int | None]) -> tuple[jax.Array, ...]:
    """A batching rule's operands with the vmapped axis first: moved there, or (unbatched
    operands) broadcast along a new leading axis of the vmapped size."""
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    return tuple(batching.bdim_at_front(a, d, size) for a, d in zip(args, dims))


def channels_in(a: jax.Array) -> jax.Array:
    """(B, ..., C) -> (..., B * C): a vmapped axis (first) folded into the channels, batch-major,
    for kernels whose channels are independent (per-channel statistics, depthwise filters)."""
    return jax.numpy.moveaxis(a, 0, -2).reshape(*a.shape[1:-1], a.shape[0] * a.shape[-1])


def channels_out(a: jax.Array, size: int) -> jax.Array:
    """The inverse of `channels_in`: (..., B * C) -> (B, ..., C)."""
    return jax.numpy.moveaxis(a.reshape(*a.shape[:-1], size, a.shape[-1] // size), -2, 0)


def def_linear(prim: Primitive, fixed: int | Callable[..., int], transpose: Callable,
               fixed_jvp: Callable | None = None) -> None:
    """Differentiation rules of a primitive `prim(*fixed_operands, *linear_operands, **params)`
    that is linear in its operands after the first `fixed` (a tangent or backward kernel);
    `fixed` may be a function of the primitive's parameters (an optional operand).

    JVP: `prim` applied to the linear operands' tangents (another call of the same kernel),
    plus, where a fixed operand has a tangent, `fixed_jvp(fixed_operands, linear_operands,
    fixed_tangents, **params)` (the second-order term; None where the fixed operands cannot
    have tangents, e.g. integer indices). Symbolic zero tangents are filled in.
    Transpose: `transpose(cotangents, fixed_operands, **params)` -> the cotangents of every
    linear operand (a list); symbolic zero cotangents are filled in, and the results for linear
    operands that are not being transposed (known zeros) are dropped.
    """
    count = fixed if callable(fixed) else (lambda **_: fixed)

    def jvp(primals, tangents, **params):
        fixed = count(**params)
        out = prim.bind(*primals, **params)
        parts = []
        if any(type(t) is not ad.Zero for t in tangents[fixed:]):
            linear = [ad.instantiate_zeros(t) for t in tangents[fixed:]]
            parts.append(prim.bind(*primals[:fixed], *linear, **params))
        if any(type(t) is not ad.Zero for t in tangents[:fixed]):
            if fixed_jvp is None:
                raise TypeError(f"{prim.name}: its first {fixed} operands have no derivative")
            parts.append(fixed_jvp(primals[:fixed], primals[fixed:], tangents[:fixed], **params))
        outs = out if prim.multiple_results else [out]
        if not parts:
            tangent = [ad.Zero(jax.typeof(o).to_tangent_aval()) for o in outs]
        else:
            parts = [p if prim.multiple_results else [p] for p in parts]
            tangent = [functools.reduce(lambda a, b: a + b, ts) for ts in zip(*parts)]
        return out, tangent if prim.multiple_results else tangent[0]

    def transpose_rule(cts, *args, **params):
        fixed = count(**params)
        linear = args[fixed:]
        cts = list(cts) if prim.multiple_results else [cts]
        if all(type(c) is ad.Zero for c in cts):
            return [None] * fixed + [ad.Zero(a.aval.to_ct_aval()) if ad.is_undefined_primal(a)
                                     else None for a in linear]
        out = transpose([ad.instantiate_zeros(c) for c in cts], args[:fixed], **params)
        return [None] * fixed + [o if ad.is_undefined_primal(a) else None
                                 for a, o in zip(linear, out)]

    ad.primitive_jvps[prim] = jvp
    ad.primitive_transposes[prim] = transpose_rule
