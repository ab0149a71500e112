"""A kernel as a JAX primitive, the way JAX defines its own convolution: every transformation
(jit, grad, jvp, jacfwd, hessian, linearize, vmap, export) composes with it.

`define(name, reference, platforms={"cpu": ffi_fn})` makes a `jax.extend.core.Primitive` whose
value on each platform listed is the given JAX function (an FFI call, a Pallas kernel) and, on
every other platform, `reference`, XLA's form of the same computation (so an export for another
platform, or a lowering where the kernel is absent, still computes the right thing). The caller
then gives the primitive its differentiation rules with JAX's own registries:
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
from jax.interpreters import batching, mlir


def define(name: str, reference: Callable, platforms: Mapping[str, Callable] | None = None, *,
           abstract_eval: Callable | None = None, multiple_results: bool = False) -> Primitive:
    """A primitive computing `reference` (XLA), lowered on each platform of `platforms` to that
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
