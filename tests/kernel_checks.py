"""Shared checks of the kernel tests: random inputs, tolerances, and lowering for a GPU."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import export
from jax.sharding import NamedSharding

# Relative to the largest magnitude of the expected array (sums that cancel to ~0 have no
# meaningful elementwise relative error).
TOLERANCE = {jnp.dtype(jnp.float32): 1e-5, jnp.dtype(jnp.bfloat16): 1e-2}
TRITON_CALL = "__gpu$xla.gpu.triton"


def normal(seed: int, shape, dtype=jnp.float32) -> jax.Array:
    """Standard normal values of `shape` (fresh per seed, never zeros), rounded to `dtype`."""
    return jax.random.normal(jax.random.PRNGKey(seed), shape, jnp.float32).astype(dtype)


def assert_close(actual, expected, dtype, what: str = "", tol: float | None = None) -> None:
    """|actual - expected| <= tol * max|expected| elementwise; tol defaults to TOLERANCE[dtype]."""
    tol = TOLERANCE[jnp.dtype(dtype)] if tol is None else tol
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert a.shape == e.shape, (what, a.shape, e.shape)
    scale = max(float(np.max(np.abs(e))), 1e-30)
    np.testing.assert_allclose(a, e, rtol=0, atol=tol * scale, err_msg=what)


def assert_trees_close(actual, expected, dtype, what: str = "", tol: float | None = None) -> None:
    """assert_close on every pair of leaves."""
    leaves_a, leaves_e = jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected)
    assert len(leaves_a) == len(leaves_e), what
    for i, (a, e) in enumerate(zip(leaves_a, leaves_e)):
        assert_close(a, e, dtype, f"{what} leaf {i}", tol)


def flat(tree) -> np.ndarray:
    """Every leaf of `tree`, raveled and concatenated (float64)."""
    return np.concatenate([np.ravel(np.asarray(leaf, np.float64))
                           for leaf in jax.tree_util.tree_leaves(tree)])


def value_and_vjp(f, args, seed: int):
    """f(*args) and its VJP with a random cotangent: fresh normal values (never ones) rounded
    to bfloat16, so that float32 and bfloat16 evaluations see the same cotangent."""
    y, pullback = jax.vjp(f, *args)
    leaves, tree = jax.tree_util.tree_flatten(y)
    cot = [normal(seed + i, leaf.shape, jnp.bfloat16).astype(leaf.dtype)
           for i, leaf in enumerate(leaves)]
    return y, pullback(jax.tree_util.tree_unflatten(tree, cot))


def triton_kernels_for_gpu(f, args, monkeypatch) -> int:
    """How many Triton kernels jit(f) holds lowered for CUDA (`cuda_module`)."""
    return cuda_module(f, args, monkeypatch).count(TRITON_CALL)


def cuda_module(f, args, monkeypatch) -> str:
    """Lowers jit(f) for CUDA without a GPU and returns its StableHLO text; `args` are arrays or
    pytrees of arrays (or of their shapes, dtypes and shardings, e.g. over an abstract mesh).

    JAX itself turns Pallas kernels into Triton IR (a GPU compiles that IR later), so this
    catches what the Triton backend rejects (shapes that are not powers of two, unsupported
    operations) on any machine. The dispatcher is told the backend is a GPU.
    """
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    specs = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=(
        a.sharding if isinstance(getattr(a, "sharding", None), NamedSharding) else None)), args)
    exported = export.export(jax.jit(f), platforms=["cuda"],
                             disabled_checks=[export.DisabledSafetyCheck.custom_call(TRITON_CALL)])
    return exported(*specs).mlir_module()


def matmul_operand_dtypes(jaxpr) -> list[tuple[str, str]]:
    """(primitive, operand dtype) of every convolution (XLA's or oneDNN's custom call) and matrix
    product, sub-jaxprs included."""
    found = []
    for eqn in jaxpr.eqns:
        if (eqn.primitive.name in ("conv_general_dilated", "dot_general")
                or str(eqn.params.get("target_name", "")).startswith("cnnjax_onednn")):
            found += [(eqn.primitive.name, str(v.aval.dtype)) for v in eqn.invars]
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr wraps a Jaxpr
                if hasattr(inner, "eqns"):
                    found += matmul_operand_dtypes(inner)
    return found
