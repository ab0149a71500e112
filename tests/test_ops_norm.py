"""Normalisation and dropout against float64 NumPy formulas and PyTorch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from cnnjax import ops


def test_batch_norm_train_and_eval():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, 5, 5, 3)) * 3 + 2).astype(np.float32)
    scale, bias = rng.standard_normal(3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    y, mean, var = ops.batch_norm(jnp.asarray(x), jnp.asarray(scale), jnp.asarray(bias), train=True, eps=1e-5)
    m, v = x.astype(np.float64).mean((0, 1, 2)), x.astype(np.float64).var((0, 1, 2))
    np.testing.assert_allclose(np.asarray(mean), m, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(var), v, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(y), (x - m) / np.sqrt(v + 1e-5) * scale + bias, rtol=1e-4, atol=1e-4)
    rm, rv = rng.standard_normal(3).astype(np.float32), rng.uniform(0.5, 2, 3).astype(np.float32)
    y_eval, m_eval, _ = ops.batch_norm(jnp.asarray(x), jnp.asarray(scale), jnp.asarray(bias),
                                       mean=jnp.asarray(rm), var=jnp.asarray(rv), train=False)
    np.testing.assert_allclose(np.asarray(y_eval), (x - rm) / np.sqrt(rv + 1e-5) * scale + bias, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(m_eval), rm)


def test_batch_norm_epsilon_sits_inside_the_square_root():
    """A channel of std 1e-3 (variance 1e-6, below eps 1e-5): (x - m) / sqrt(v + eps) and
    (x - m) / (sqrt(v) + eps) differ threefold there, so a misplaced eps shows; values, running
    statistics in eval and gradients against PyTorch in float64."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((4, 3, 3, 3)) * np.array([1e-3, 1.0, 10.0]) + 0.5).astype(np.float32)
    scale, bias = np.array([1.5, -0.5, 2.0], np.float32), np.array([0.1, 0.2, -0.3], np.float32)
    cot = rng.standard_normal(x.shape).astype(np.float32)
    t = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, scale, bias)]
    ty = torch.nn.functional.batch_norm(t[0].permute(0, 3, 1, 2), None, None, t[1], t[2],
                                        training=True, eps=1e-5).permute(0, 2, 3, 1)
    ty.backward(torch.tensor(cot, dtype=torch.float64))
    y, pullback = jax.vjp(lambda *a: ops.batch_norm(*a, train=True, eps=1e-5)[0],
                          *map(jnp.asarray, (x, scale, bias)))
    np.testing.assert_allclose(np.asarray(y), ty.detach().numpy(), rtol=1e-4, atol=1e-4)
    for got, want in zip(pullback(jnp.asarray(cot)), t):
        np.testing.assert_allclose(np.asarray(got), want.grad.numpy(), rtol=1e-3, atol=1e-4)
    # Eval with running statistics: the same placement.
    rm, rv = np.array([0.5, 0.0, 1.0], np.float32), np.array([1e-6, 1.0, 100.0], np.float32)
    y_eval = ops.batch_norm(jnp.asarray(x), jnp.asarray(scale), jnp.asarray(bias),
                            mean=jnp.asarray(rm), var=jnp.asarray(rv), train=False, eps=1e-5)[0]
    want = torch.nn.functional.batch_norm(torch.tensor(x, dtype=torch.float64).permute(0, 3, 1, 2),
                                          torch.tensor(rm, dtype=torch.float64),
                                          torch.tensor(rv, dtype=torch.float64), t[1].detach(),
                                          t[2].detach(), training=False, eps=1e-5)
    np.testing.assert_allclose(np.asarray(y_eval), want.permute(0, 2, 3, 1).numpy(), rtol=1e-4,
                               atol=1e-4)


def test_batch_norm_statistics_are_float32_for_bf16_and_stable_for_large_means():
    x = jnp.asarray(1e4 + np.random.default_rng(1).standard_normal((64, 4, 4, 2)), jnp.float32)
    _, _, var = ops.batch_norm(x, None, None, train=True)
    np.testing.assert_allclose(np.asarray(var), np.asarray(x, np.float64).var((0, 1, 2)), rtol=1e-3)
    y, mean, _ = ops.batch_norm(x.astype(jnp.bfloat16), None, None, train=True)
    assert y.dtype == jnp.bfloat16 and mean.dtype == jnp.float32


@pytest.mark.parametrize("shape", [(64, 4, 4, 2), (32, 8, 8, 16), (256, 16), (3, 1, 1, 5)])
def test_batch_statistics_of_badly_centred_inputs_match_a_float64_two_pass(shape):
    """Mean 1e4, std 1: float32 spaces 1e4 by 1e-3, so E[x^2] - E[x]^2 keeps no digit of the
    variance; the fused statistics must be as good as a float32 two-pass (~1e-6 relative)."""
    x = jnp.asarray(1e4 + np.random.default_rng(5).standard_normal(shape), jnp.float32)
    x64 = np.asarray(x, np.float64)
    axes = tuple(range(x.ndim - 1))
    ref_mean = x64.mean(axes)
    ref_var = ((x64 - ref_mean) ** 2).mean(axes)
    mean, var = jax.jit(ops.batch_moments)(x)
    np.testing.assert_allclose(np.asarray(mean), ref_mean, rtol=0, atol=2e-3)
    np.testing.assert_allclose(np.asarray(var), ref_var, rtol=1e-5)


def test_batch_statistics_under_vmap_and_their_second_derivatives_match_float64():
    """vmap over batches against per-batch float64 statistics; the gradient of the squared
    gradient of w . (mean, var) (second derivatives through the statistics' custom VJP) against
    PyTorch's float64 double backward."""
    rng = np.random.default_rng(7)
    xs = (rng.standard_normal((3, 8, 4, 4, 2)) * np.arange(1, 9)[:, None, None, None] + 5).astype(
        np.float32)
    mean, var = jax.vmap(ops.batch_moments)(jnp.asarray(xs))
    x64 = xs.astype(np.float64)
    np.testing.assert_allclose(np.asarray(mean), x64.mean((1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(var), x64.var((1, 2, 3)), rtol=1e-5)

    w = rng.standard_normal((2, 2)).astype(np.float32)

    def first(x):
        return jax.grad(lambda x: jnp.sum(jnp.stack(ops.batch_moments(x)) * w))(x)

    got = jax.jit(jax.grad(lambda x: jnp.sum(jnp.square(first(x)))))(jnp.asarray(xs[0]))
    t = torch.tensor(xs[0], dtype=torch.float64, requires_grad=True)
    stats = torch.stack([t.mean((0, 1, 2)), t.var((0, 1, 2), unbiased=False)])
    (g,) = torch.autograd.grad(torch.sum(stats * torch.tensor(w, dtype=torch.float64)), t,
                               create_graph=True)
    (want,) = torch.autograd.grad(torch.sum(g * g), t)
    np.testing.assert_allclose(np.asarray(got), want.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("activation", ["relu", "swish", "identity"])
def test_fused_batch_norm_residual_activation_and_gradients_match_pytorch(activation):
    """act(batch_norm(x) + residual) and its gradients in x, scale, bias and residual against
    PyTorch's float64 autograd (the training statistics' VJP is cnnjax's own)."""
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((4, 5, 6, 3)) * 2 + 3).astype(np.float32)
    scale, bias = rng.standard_normal(3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    res = rng.standard_normal(x.shape).astype(np.float32)
    cot = rng.standard_normal(x.shape).astype(np.float32)

    def ours(x, scale, bias, res):
        return ops.batch_norm(x, scale, bias, train=True, residual=res, activation=activation)[0]

    y, pullback = jax.vjp(ours, *map(jnp.asarray, (x, scale, bias, res)))
    grads = pullback(jnp.asarray(cot))
    t = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, scale, bias, res)]
    act = {"relu": torch.relu, "swish": torch.nn.functional.silu, "identity": lambda z: z}[activation]
    z = torch.nn.functional.batch_norm(t[0].permute(0, 3, 1, 2), None, None, t[1], t[2],
                                       training=True, eps=1e-5).permute(0, 2, 3, 1)
    ty = act(z + t[3])
    ty.backward(torch.tensor(cot, dtype=torch.float64))
    np.testing.assert_allclose(np.asarray(y), ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, t):
        np.testing.assert_allclose(np.asarray(got), want.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_running_statistics_update_is_the_momentum_average():
    mean, var = ops.update_running_stats(jnp.array([1.0, 2.0]), jnp.array([3.0, 4.0]),
                                         jnp.array([5.0, 6.0]), jnp.array([7.0, 8.0]), 0.9)
    np.testing.assert_allclose(np.asarray(mean), [0.9 * 1 + 0.1 * 5, 0.9 * 2 + 0.1 * 6], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(var), [0.9 * 3 + 0.1 * 7, 0.9 * 4 + 0.1 * 8], rtol=1e-6)


def test_batch_norm_errors():
    with pytest.raises(ValueError, match="running mean"):
        ops.batch_norm(jnp.ones((2, 3)), None, None, train=False)
    with pytest.raises(ValueError, match=r"scale must have shape \(3,\)"):
        ops.batch_norm(jnp.ones((2, 3)), jnp.ones(4), None, train=True)
    with pytest.raises(ValueError, match=r"residual must have x's shape \(2, 3\), got \(3,\)"):
        ops.batch_norm(jnp.ones((2, 3)), None, None, train=True, residual=jnp.ones(3))
    with pytest.raises(ValueError, match=r"batch axis and a channel axis, got shape \(3,\)"):
        ops.batch_norm(jnp.ones(3), None, None, train=True)
    with pytest.raises(ValueError, match="unknown activation 'tanhh'"):
        ops.batch_norm(jnp.ones((2, 3)), None, None, train=True, activation="tanhh")


def test_local_response_norm_paper_formula_and_pytorch():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 3, 9)).astype(np.float32) * 10
    got = np.asarray(ops.local_response_norm(jnp.asarray(x)))
    want = np.empty_like(x, dtype=np.float64)
    for c in range(9):
        lo, hi = max(0, c - 2), min(8, c + 2)
        want[..., c] = x[..., c] / (2.0 + 1e-4 * np.sum(x[..., lo:hi + 1].astype(np.float64) ** 2, -1)) ** 0.75
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # PyTorch divides alpha by the window size: alpha_torch = size * alpha_paper gives the same map.
    t = torch.nn.functional.local_response_norm(torch.tensor(x).permute(0, 3, 1, 2), 5, alpha=5e-4, beta=0.75, k=2.0)
    np.testing.assert_allclose(got, t.permute(0, 2, 3, 1).numpy(), rtol=1e-5)


def test_layer_and_group_norm_match_pytorch():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 5, 6)).astype(np.float32)
    s, b = rng.standard_normal(6).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    ln = ops.layer_norm(jnp.asarray(x), jnp.asarray(s), jnp.asarray(b), eps=1e-6)
    tln = torch.nn.functional.layer_norm(torch.tensor(x), (6,), torch.tensor(s), torch.tensor(b), eps=1e-6)
    np.testing.assert_allclose(np.asarray(ln), tln.numpy(), rtol=1e-4, atol=1e-5)
    gn = ops.group_norm(jnp.asarray(x), 3, jnp.asarray(s), jnp.asarray(b))
    tgn = torch.nn.functional.group_norm(torch.tensor(x).permute(0, 3, 1, 2), 3, torch.tensor(s), torch.tensor(b))
    np.testing.assert_allclose(np.asarray(gn), tgn.permute(0, 2, 3, 1).numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="num_groups=4"):
        ops.group_norm(jnp.asarray(x), 4, None, None)


def test_scaled_weight_standardization():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((3, 3, 8, 5)).astype(np.float32) * 0.3 + 0.1
    gain = rng.uniform(0.5, 2, 5).astype(np.float32)
    got = np.asarray(ops.weight_standardize(jnp.asarray(w), jnp.asarray(gain), eps=0.0))
    w64 = w.reshape(-1, 5).astype(np.float64)
    want = (w64 - w64.mean(0)) / (w64.std(0) * np.sqrt(72)) * gain
    np.testing.assert_allclose(got.reshape(-1, 5), want, rtol=1e-4, atol=1e-6)
    # Signal propagation: a unit-gain standardised conv keeps unit-variance inputs at unit variance.
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 16, 16, 64))
    ws = ops.weight_standardize(jax.random.normal(jax.random.PRNGKey(1), (3, 3, 64, 64)))
    assert abs(float(jnp.var(ops.conv2d(x, ws, padding="SAME"))) - 1.0) < 0.1


def test_dropout_scaling_rate_and_determinism():
    x = jnp.ones((200_000,))
    key = jax.random.PRNGKey(0)
    y = np.asarray(ops.dropout(key, x, 0.3, deterministic=False))
    np.testing.assert_allclose(np.unique(y), [0.0, 1 / 0.7], rtol=1e-6)
    assert abs((y == 0).mean() - 0.3) < 0.005 and abs(y.mean() - 1.0) < 0.01
    np.testing.assert_array_equal(y, np.asarray(ops.dropout(key, x, 0.3, deterministic=False)))
    assert ops.dropout(key, x, 0.3, deterministic=True) is x
    with pytest.raises(ValueError, match="rate"):
        ops.dropout(key, x, 1.0, deterministic=False)


def test_normalisations_compute_in_float64_for_float64_inputs():
    # With jax_enable_x64, float64 inputs keep float64 throughout (a float32 accumulation would
    # be off by ~1e-7): against the definitions in NumPy float64, to 1e-12.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 5, 6)) * 2.0 + 1.0
    scale, bias = rng.standard_normal(6), rng.standard_normal(6)
    axes = (0, 1, 2)
    mean, var = x.mean(axes), x.var(axes)
    ln = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
    w = rng.standard_normal((3, 3, 4, 6))
    w_std = (w - w.mean((0, 1, 2))) / np.sqrt(w.var((0, 1, 2)) + 1e-6) / np.sqrt(36)
    g = x.reshape(3, 4, 5, 2, 3)  # 2 groups of 3 channels
    gn = ((g - g.mean((1, 2, 4), keepdims=True))
          / np.sqrt(g.var((1, 2, 4), keepdims=True) + 1e-5)).reshape(x.shape)
    sq = np.pad(x ** 2, ((0, 0),) * 3 + ((2, 2),))  # the paper's LRN: size 5, k 2, alpha 1e-4
    lrn = x / (2.0 + 1e-4 * sum(sq[..., i:i + 6] for i in range(5))) ** 0.75
    with jax.enable_x64(True):
        y, m, v = ops.batch_norm(jnp.asarray(x), jnp.asarray(scale), jnp.asarray(bias),
                                 train=True, activation="relu")
        got = {"batch norm": y, "mean": m, "var": v,
               "layer norm": ops.layer_norm(jnp.asarray(x), None, None),
               "weight standardisation": ops.weight_standardize(jnp.asarray(w)),
               "group norm": ops.group_norm(jnp.asarray(x), 2, None, None),
               "local response norm": ops.local_response_norm(jnp.asarray(x))}
        grad = jax.grad(lambda x: jnp.sum(ops.batch_norm(x, None, None, train=True)[0] ** 3))(
            jnp.asarray(x))
    want = {"batch norm": np.maximum((x - mean) / np.sqrt(var + 1e-5) * scale + bias, 0),
            "mean": mean, "var": var, "layer norm": ln, "weight standardisation": w_std,
            "group norm": gn, "local response norm": lrn}
    for name, value in got.items():
        assert value.dtype == jnp.float64, name
        np.testing.assert_allclose(np.asarray(value), want[name], rtol=0, atol=1e-12,
                                   err_msg=name)
    # d/dx sum(xhat^3) = (g - mean(g) - xhat mean(g xhat)) / sqrt(var + eps), g = 3 xhat^2
    xhat = (x - mean) / np.sqrt(var + 1e-5)
    g = 3 * xhat ** 2
    expected = (g - g.mean(axes) - xhat * (g * xhat).mean(axes)) / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(np.asarray(grad), expected, rtol=0, atol=1e-10)
