"""Shared checks of the kernel tests: random inputs, tolerances, and lowering for a GPU."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import export
from jax.sharding import NamedSharding

from cnnjax import kernels

# Relative to the largest magnitude of the expected array (sums that cancel to ~0 have no
# meaningful elementwise relative error).
TOLERANCE = {jnp.dtype(jnp.float32): 1e-5, jnp.dtype(jnp.bfloat16): 1e-2}
TRITON_CALL = "__gpu$xla.gpu.triton"


# The backends a kernel test runs each entry point on: "interpret" (the Pallas kernels in the
# Pallas interpreter) and "cpu" (the CPU extension's kernels, the switch at "onednn").
BACKENDS = ("interpret", "cpu")


def on_backend(f, backend: str):
    """Entry point `f` of cnnjax.kernels (taking `interpret=`) computing on `backend`."""
    if backend == "interpret":
        return functools.partial(f, interpret=True)

    from cnnjax.kernels import onednn
    reason = onednn.load()[1]
    assert reason is None, f"the CPU extension did not load: {reason}"  # no silent XLA fallback

    def run(*args, **kwargs):
        with kernels.use("onednn"):
            return f(*args, **kwargs)
    return run


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


def equations(jaxpr):
    """Every equation of `jaxpr`, those of its sub-jaxprs included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr wraps a Jaxpr
                if hasattr(inner, "eqns"):
                    yield from equations(inner)


def matmul_operand_dtypes(jaxpr) -> list[tuple[str, str]]:
    """(primitive, operand dtype) of every convolution (XLA's or a oneDNN pass's primitive) and
    matrix product, sub-jaxprs included."""
    return [(eqn.primitive.name, str(v.aval.dtype)) for eqn in equations(jaxpr)
            if eqn.primitive.name in ("conv_general_dilated", "dot_general")
            or eqn.primitive.name.startswith("cnnjax_onednn")  # the oneDNN passes' primitives
            for v in eqn.invars]


def transformations(f, args, tangents, weights):
    """f's values under every transformation a kernel must compose with, as a dict of pytrees:
    jvp, linearize, jacfwd, and for the scalar loss L = sum_i <weights_i, sin(out_i)>: the
    Hessian in the first operand (jax.hessian: forward over reverse), Hessian-vector products
    both ways, grad of a function of the gradient, vmap of f and of grad L over a mapped axis
    of 2 (args and tangents stacked). `f` returns an array or a tuple of arrays."""
    def outs(*a):
        out = f(*a)
        return out if isinstance(out, tuple) else (out,)

    def loss(*a):
        return sum(jnp.sum(w * jnp.sin(o)) for w, o in zip(weights, outs(*a)))

    args, tangents = tuple(args), tuple(tangents)
    every = tuple(range(len(args)))
    grad = jax.grad(loss, every)
    stacked = [jnp.stack([a, t.astype(a.dtype)]) for a, t in zip(args, tangents)]
    return {
        "jvp": jax.jvp(outs, args, tangents),
        "linearize": jax.linearize(outs, *args)[1](*tangents),
        "jacfwd": jax.jacfwd(outs, every)(*args),
        "hessian": jax.hessian(loss)(*args),
        "hvp forward over reverse": jax.jvp(grad, args, tangents)[1],
        "hvp reverse over forward": jax.grad(lambda *a: jax.jvp(loss, a, tangents)[1],
                                             every)(*args),
        "grad of grad": jax.grad(lambda *a: sum(jnp.sum(g ** 2) for g in grad(*a)),
                                 every)(*args),
        "vmap": jax.vmap(outs)(*stacked),
        "vmap of grad": jax.vmap(grad)(*stacked),
    }


def assert_transformations_match(kernel, reference, args, seed: int, tol: float = 1e-4) -> None:
    """`transformations` of the kernel (float32) against the reference evaluated in float64 on
    the same values, each leaf within tol * its largest magnitude."""
    tangents = [normal(seed + i, a.shape) for i, a in enumerate(args)]
    out = jax.eval_shape(kernel, *args)
    weights = [normal(seed + 50 + i, o.shape) for i, o in enumerate(jax.tree_util.tree_leaves(out))]
    got = transformations(kernel, args, tangents, weights)
    with jax.enable_x64(True):
        f64 = lambda a: jnp.asarray(np.asarray(a, np.float64))
        want = transformations(reference, [f64(a) for a in args], [f64(t) for t in tangents],
                               [f64(w) for w in weights])
    for name in got:
        assert_trees_close(got[name], want[name], jnp.float32, name, tol)


def primitive_counts(f, *args) -> dict[str, int]:
    """How many times each primitive occurs in the jaxpr of f(*args), sub-jaxprs included."""
    counts: dict[str, int] = {}
    for eqn in equations(jax.make_jaxpr(f)(*args).jaxpr):
        counts[eqn.primitive.name] = counts.get(eqn.primitive.name, 0) + 1
    return counts


def primitives(f, *args) -> set[str]:
    """The names of the primitives in the jaxpr of f(*args), sub-jaxprs included."""
    return set(primitive_counts(f, *args))
