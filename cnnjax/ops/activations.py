"""The activation family of the lectures, as elementwise functions (any shape, any float dtype)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

# Klambauer et al. 2017, eq. 14: the fixed point of self-normalisation.
SELU_LAMBDA = 1.0507009873554805
SELU_ALPHA = 1.6732632423543772


def sigmoid(x: jax.Array) -> jax.Array:
    """1 / (1 + exp(-x)), computed without overflow for large |x|."""
    return jax.nn.sigmoid(x)


def tanh(x: jax.Array) -> jax.Array:
    """Hyperbolic tangent, zero-centred in (-1, 1)."""
    return jnp.tanh(x)


def relu(x: jax.Array) -> jax.Array:
    """max(0, x)."""
    return jnp.maximum(x, 0)


def leaky_relu(x: jax.Array, negative_slope: float = 0.01) -> jax.Array:
    """x for x >= 0, negative_slope * x otherwise."""
    return jnp.where(x >= 0, x, negative_slope * x)


def prelu(x: jax.Array, alpha: jax.Array) -> jax.Array:
    """Parametric ReLU: like leaky ReLU with a learned `alpha` (scalar or per channel, broadcast
    against the last axis)."""
    return jnp.where(x >= 0, x, alpha.astype(x.dtype) * x)


def elu(x: jax.Array, alpha: float = 1.0) -> jax.Array:
    """x for x > 0, alpha * (exp(x) - 1) otherwise."""
    # expm1 on the clipped value keeps the unused branch finite, so gradients stay finite too.
    return jnp.where(x > 0, x, alpha * jnp.expm1(jnp.minimum(x, 0)))


def selu(x: jax.Array) -> jax.Array:
    """SELU_LAMBDA * elu(x, SELU_ALPHA)."""
    return SELU_LAMBDA * elu(x, SELU_ALPHA)


def gelu(x: jax.Array, approximate: bool = False) -> jax.Array:
    """Gaussian error linear unit (Hendrycks & Gimpel 2016), x * Phi(x): the exact erf form by
    default, as PyTorch's nn.GELU; `approximate=True` gives the tanh form."""
    return jax.nn.gelu(x, approximate=approximate)


def relu6(x: jax.Array) -> jax.Array:
    """min(max(0, x), 6): ReLU capped at 6 (MobileNetV2), robust in low precision."""
    return jnp.clip(x, 0, 6)


def hard_sigmoid(x: jax.Array) -> jax.Array:
    """relu6(x + 3) / 6: the piecewise-linear sigmoid of MobileNetV3 (Howard et al. 2019,
    sec. 5.2), PyTorch's nn.Hardsigmoid."""
    return relu6(x + 3) / 6


def hard_swish(x: jax.Array) -> jax.Array:
    """x * hard_sigmoid(x) (Howard et al. 2019, "Searching for MobileNetV3", sec. 5.2)."""
    return x * hard_sigmoid(x)


def swish(x: jax.Array) -> jax.Array:
    """x * sigmoid(x) (Ramachandran et al. 2017; SiLU, Elfwing et al. 2018), EfficientNet's."""
    return x * jax.nn.sigmoid(x)


def softmax(x: jax.Array, axis: int = -1) -> jax.Array:
    """exp(x) / sum(exp(x)) along `axis`, shifted by the max so large logits do not overflow."""
    return jnp.exp(log_softmax(x, axis))


def log_softmax(x: jax.Array, axis: int = -1) -> jax.Array:
    """x - logsumexp(x) along `axis`, stable for large logits."""
    shifted = x - jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
    return shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=axis, keepdims=True))


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "sigmoid": sigmoid, "tanh": tanh, "relu": relu, "leaky_relu": leaky_relu, "elu": elu,
    "selu": selu, "relu6": relu6, "hard_swish": hard_swish,
    "hard_sigmoid": hard_sigmoid, "swish": swish, "gelu": gelu,
    "identity": lambda x: x,
}


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Looks up an activation by name; raises ValueError listing the known names."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}") from None
