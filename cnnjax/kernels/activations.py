"""The activations the batch-norm kernels fuse, each with its derivative, as functions of the
float32 pre-activation z, written with operations every kernel backend lowers (Pallas' Triton
backend has exp but no erf): the same functions as `cnnjax.ops.ACTIVATIONS`. The CPU kernels
(`onednn/norm_act.cc`) evaluate the same formulas with the same coefficients in C++ (plus an
fma-compensated z^2 in exp(-z^2 / 2) and caps against overflow; a test keeps the coefficients
equal).

Derivatives at a kink take the one-sided value below: relu'(0) = 0, relu6'(0) = relu6'(6) = 0,
hard_swish'(+-3) = the inner branch's.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

# erf(u) / u = sum_n ERF_SERIES[n] u^(2n), the Taylor series (2 / sqrt(pi)) (-1)^n / (n! (2n + 1))
# to u^20: truncation below 2e-9 for u < 1.
ERF_SERIES = tuple(2 / math.sqrt(math.pi) * (-1) ** n / (math.factorial(n) * (2 * n + 1))
                   for n in range(11))
# u e^(u^2) erfc(u) for u in [1, 10] as a polynomial in s = (2 / u - 1.1) / 0.9 (s in [-1, 1]):
# a degree-12 least-squares Chebyshev fit in float64 (relative error 2e-9; 8e-8 in float32),
# in the power basis of s.
ERFC_FIT = (5.023534233e-01, -7.651580730e-02, -4.123688264e-03, 8.962924200e-03,
            -3.978206620e-03, 9.196535677e-04, 9.776484288e-05, -2.253707871e-04,
            1.435517453e-04, -7.294686697e-05, 1.410331645e-05, 1.837082404e-05,
            -1.019662100e-05)


def _horner(coefficients, v):
    out = jnp.full_like(v, coefficients[-1])
    for c in coefficients[-2::-1]:
        out = out * v + c
    return out


def normal_cdf(z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(Phi(z), phi(z)): the standard normal CDF and density of float32 z, to ~1e-7 absolute
    (Phi) without erf: with u = |z| / sqrt(2) and E = exp(-u^2), erf(u) by ERF_SERIES below
    u = 1, erfc(u) = E ERFC_FIT(s) / u above (zero beyond float32's range)."""
    u = jnp.abs(z) * (1 / math.sqrt(2))
    e = jnp.exp(-0.5 * z * z)
    erf_small = u * _horner(ERF_SERIES, u * u)
    uc = jnp.maximum(u, 1.0)
    erfc_large = e * _horner(ERFC_FIT, (2.0 / jnp.minimum(uc, 10.0) - 1.1) / 0.9) / uc
    half_erfc = 0.5 * jnp.where(u < 1.0, 1.0 - erf_small, erfc_large)
    return jnp.where(z > 0, 1.0 - half_erfc, half_erfc), e * (1 / math.sqrt(2 * math.pi))


def _sigmoid(z):
    return 1.0 / (1.0 + jnp.exp(-z))


def _hard_relu6(z):
    return jnp.minimum(jnp.maximum(z, 0.0), 6.0)


def _gelu_grad(z):
    cdf, density = normal_cdf(z)
    return cdf + jnp.where(density > 0, z * density, 0.0)  # gelu'(+-inf): 1, 0 (no inf * 0)


# name -> (activation, its derivative). The order is the CPU kernels' activation code.
ACTIVATIONS: dict[str, tuple[Callable, Callable]] = {
    "identity": (lambda z: z, lambda z: jnp.ones_like(z)),
    "relu": (lambda z: jnp.maximum(z, 0.0), lambda z: jnp.where(z > 0, 1.0, 0.0)),
    "relu6": (_hard_relu6, lambda z: jnp.where((z > 0) & (z < 6), 1.0, 0.0)),
    "swish": (lambda z: z * _sigmoid(z),
              lambda z: _sigmoid(z) * (1.0 + z * (1.0 - _sigmoid(z)))),
    "hard_swish": (lambda z: z * _hard_relu6(z + 3.0) / 6.0,
                   lambda z: jnp.where(z < -3, 0.0, jnp.where(z > 3, 1.0, (2.0 * z + 3.0) / 6.0))),
    "gelu": (lambda z: z * normal_cdf(z)[0], _gelu_grad),  # the exact GELU, z Phi(z)
}
