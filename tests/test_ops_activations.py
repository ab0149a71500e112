"""Activations against their textbook formulas in float64 NumPy and against PyTorch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from cnnjax import ops

X = np.linspace(-6, 6, 101)


@pytest.mark.parametrize("name,formula,torch_fn", [
    ("sigmoid", lambda x: 1 / (1 + np.exp(-x)), torch.sigmoid),
    ("tanh", np.tanh, torch.tanh),
    ("relu", lambda x: np.maximum(x, 0), torch.relu),
    ("leaky_relu", lambda x: np.where(x >= 0, x, 0.01 * x), torch.nn.functional.leaky_relu),
    ("elu", lambda x: np.where(x > 0, x, np.exp(x) - 1), torch.nn.functional.elu),
    ("selu", lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * (np.exp(x) - 1)),
     torch.selu),
])
def test_activation_formulas(name, formula, torch_fn):
    got = np.asarray(getattr(ops, name)(jnp.asarray(X, jnp.float32)))
    np.testing.assert_allclose(got, formula(X), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, torch_fn(torch.tensor(X, dtype=torch.float32)).numpy(), rtol=1e-5, atol=1e-6)
    assert ops.get_activation(name) is getattr(ops, name)


def test_prelu_per_channel_alpha():
    x = np.random.default_rng(0).standard_normal((2, 3, 3, 4)).astype(np.float32)
    alpha = np.array([0.1, 0.2, 0.3, 0.0], np.float32)
    np.testing.assert_allclose(np.asarray(ops.prelu(jnp.asarray(x), jnp.asarray(alpha))),
                               np.where(x >= 0, x, alpha * x), rtol=1e-6)


def test_selu_fixed_point_keeps_unit_variance():
    # Klambauer et al.: for zero-mean unit-variance input, SELU output has mean ~0 and variance ~1.
    z = jax.random.normal(jax.random.PRNGKey(0), (400_000,))
    y = ops.selu(z)
    assert abs(float(jnp.mean(y))) < 0.01 and abs(float(jnp.var(y)) - 1.0) < 0.01


def test_softmax_is_stable_and_normalised():
    logits = jnp.asarray([[1000.0, 1001.0, 999.0], [-1000.0, -1000.0, -1000.0]])
    p = np.asarray(ops.softmax(logits))
    e = np.exp(np.array([-1.0, 0.0, -2.0]))
    np.testing.assert_allclose(p[0], e / e.sum(), rtol=1e-6)
    np.testing.assert_allclose(p[1], [1 / 3] * 3, rtol=1e-6)
    assert np.all(np.isfinite(np.asarray(ops.log_softmax(logits))))


def test_gradients_stay_finite_for_large_negative_inputs():
    g = jax.grad(lambda x: jnp.sum(ops.elu(x) + ops.selu(x)))(jnp.asarray([-1e4, -50.0, 0.0, 3.0]))
    assert np.all(np.isfinite(np.asarray(g)))


def test_unknown_activation_lists_the_known_ones():
    with pytest.raises(ValueError, match="'swishy'.*relu"):
        ops.get_activation("swishy")


@pytest.mark.parametrize("name,formula,torch_fn", [
    ("relu6", lambda x: np.minimum(np.maximum(x, 0), 6), torch.nn.functional.relu6),
    ("hard_sigmoid", lambda x: np.clip(x / 6 + 0.5, 0, 1), torch.nn.functional.hardsigmoid),
    ("hard_swish", lambda x: x * np.clip(x / 6 + 0.5, 0, 1), torch.nn.functional.hardswish),
    ("swish", lambda x: x / (1 + np.exp(-x)), torch.nn.functional.silu),
])
def test_mobile_activations_match_formula_and_torch(name, formula, torch_fn):
    x = np.linspace(-8, 8, 161)  # steps of 0.1 cross the kinks at -3, 0, 3 and 6
    got = np.asarray(getattr(ops, name)(jnp.asarray(x, jnp.float32)))
    np.testing.assert_allclose(got, formula(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, torch_fn(torch.tensor(x, dtype=torch.float32)).numpy(),
                               rtol=1e-5, atol=1e-6)
    assert ops.get_activation(name) is getattr(ops, name)
    assert getattr(ops, name)(jnp.ones(3, jnp.bfloat16)).dtype == jnp.bfloat16
