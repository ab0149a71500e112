"""Muon (Jordan et al. 2024, as in airbench94_muon.py of KellerJordan/cifar10-airbench): momentum
SGD whose update for each convolution filter bank is replaced by an approximately orthogonal
matrix with the same singular vectors, computed by a quintic Newton-Schulz iteration.

For a filter bank W (kh, kw, C_in, C_out) in this codebase's HWIO layout, one Muon step is
    b <- m b + g;  u = g + m b (Nesterov) or b;
    O = NS5(u viewed as a (C_out, kh kw C_in) matrix);
    W <- W sqrt(C_out) / ||W||_F  -  lr O          (`renormalized_step`)
PyTorch's view is (C_out, C_in kh kw); the two views differ by a permutation of the columns,
which the iteration commutes with (X -> XP leaves X X^T unchanged), so the update is the same.

Why not `optax.contrib.scale_by_muon` (optax 0.2.8): its momentum is an exponential moving
average with bias correction, whose Nesterov combination weighs the gradient and the buffer
differently from the original's g + m b in the first steps (the two are not proportional, so
the orthogonalised directions differ), it runs 5 iterations in the input's dtype by default and
it has no weight renormalisation. The pieces below compose the original from `optax.trace`.

The iteration runs in bfloat16 as the original does (`dtype`); on a CPU without bfloat16
arithmetic pass float32 (slower matmuls in XLA's emulation otherwise, same algorithm).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

# The quintic's coefficients, chosen by the original to maximise the slope at zero.
NS_COEFFS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 3  # airbench94_muon.py's zeropower_via_newtonschulz5(G, steps=3)
NS_EPS = 1e-7


def newton_schulz5(g: jax.Array, steps: int = NS_STEPS, dtype: jnp.dtype = jnp.bfloat16,
                   eps: float = NS_EPS) -> jax.Array:
    """The quintic Newton-Schulz iteration on a (rows, cols) matrix, returned in `dtype`.

    X = G / (||G||_F + eps) (so the top singular value is at most 1), transposed when rows >
    cols so that X X^T is the smaller Gram matrix; then `steps` times X <- a X + (b A + c A A) X
    with A = X X^T. The result is U S' V^T, G = U S V^T, with S' spread roughly over
    (0.5, 1.5) rather than exactly 1 (the original's docstring)."""
    if g.ndim != 2:
        raise ValueError(f"newton_schulz5 takes a matrix, got shape {g.shape}")
    a, b, c = NS_COEFFS
    x = g.astype(dtype)
    x = x / (jnp.linalg.norm(x) + eps)
    tall = g.shape[0] > g.shape[1]
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def filter_matrix(kernel: jax.Array) -> jax.Array:
    """(kh, kw, C_in, C_out) -> (C_out, kh kw C_in); any other rank: (shape[-1], rest)."""
    return kernel.reshape(-1, kernel.shape[-1]).T


def orthogonalize_filters(steps: int = NS_STEPS, dtype: jnp.dtype = jnp.bfloat16
                          ) -> optax.GradientTransformation:
    """Replaces each update (a filter bank, HWIO) by NS5 of its (C_out, kh kw C_in) matrix, cast
    back to the update's dtype."""

    def update(updates, state, params=None):
        del params
        ortho = lambda u: newton_schulz5(filter_matrix(u), steps, dtype).T.reshape(u.shape)
        return jax.tree_util.tree_map(lambda u: ortho(u).astype(u.dtype), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def renormalized_step() -> optax.GradientTransformation:
    """Turns an update u into one that first rescales each weight W to Frobenius norm
    sqrt(C_out) (C_out = W.shape[-1], PyTorch's len(W) of an OIHW filter bank), then adds u:
    W + result = W sqrt(C_out) / ||W|| + u. Place it after the learning rate."""

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("renormalized_step needs the parameters; pass params to update")

        def step(u, w):
            scale = jnp.sqrt(jnp.asarray(w.shape[-1], w.dtype)) / jnp.linalg.norm(w)
            return u + (scale - 1) * w

        return jax.tree_util.tree_map(step, updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def muon(learning_rate: optax.ScalarOrSchedule | Callable, momentum: float, *,
         nesterov: bool = True, ns_steps: int = NS_STEPS, dtype: jnp.dtype = jnp.bfloat16,
         renormalize: bool = True) -> optax.GradientTransformation:
    """airbench94_muon.py's Muon on filter banks: Nesterov momentum (PyTorch's form, as
    `optax.trace`), the Newton-Schulz orthogonalisation, the learning rate, and (with
    `renormalize`) the per-step weight renormalisation before the step."""
    chain = [optax.trace(decay=momentum, nesterov=nesterov),
             orthogonalize_filters(ns_steps, dtype),
             optax.scale_by_learning_rate(learning_rate)]
    if renormalize:
        chain.append(renormalized_step())
    return optax.chain(*chain)
