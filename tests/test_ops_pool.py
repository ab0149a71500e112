"""Pooling against float64 window loops (tests/reference.py) and PyTorch's functional pooling."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import reference as ref
from cnnjax import ops

CASES = [(7, 7, 3, 2, 1), (8, 9, 2, 2, 0), (10, 7, 3, 2, 1), (5, 5, 3, 1, 1), (14, 14, 3, 2, 0),
         (6, 11, (2, 3), (1, 2), (1, 0))]


def _torch(x):
    return torch.tensor(x).permute(0, 3, 1, 2)


def _back(t):
    return t.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("h,w,k,s,p", CASES)
def test_max_and_avg_pool_match_loops(h, w, k, s, p):
    x = np.random.default_rng(h * w).standard_normal((2, h, w, 3)).astype(np.float32)
    k2, s2, p2 = ((k, k) if isinstance(k, int) else k), ((s, s) if isinstance(s, int) else s), \
        ((p, p) if isinstance(p, int) else p)
    pads = ((p2[0], p2[0]), (p2[1], p2[1]))
    want_max = ref.pool2d(x, k2, s2, pads, lambda win: np.nanmax(win, axis=(1, 2)))
    want_avg = ref.pool2d(x, k2, s2, pads, lambda win: np.nansum(win, axis=(1, 2)) / (k2[0] * k2[1]))
    want_avg_excl = ref.pool2d(x, k2, s2, pads, lambda win: np.nanmean(win, axis=(1, 2)))
    np.testing.assert_allclose(np.asarray(ops.max_pool(jnp.asarray(x), k, stride=s, padding=p)), want_max, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ops.avg_pool(jnp.asarray(x), k, stride=s, padding=p)), want_avg, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(ops.avg_pool(jnp.asarray(x), k, stride=s, padding=p, count_include_pad=False)),
                               want_avg_excl, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("h,w,k,s,p", CASES)
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_pooling_matches_pytorch(h, w, k, s, p, ceil_mode):
    x = np.random.default_rng(h + w).standard_normal((2, h, w, 3)).astype(np.float32)
    got = ops.max_pool(jnp.asarray(x), k, stride=s, padding=p, ceil_mode=ceil_mode)
    np.testing.assert_array_equal(np.asarray(got), _back(F.max_pool2d(_torch(x), k, s, p, ceil_mode=ceil_mode)))
    for cip in (True, False):
        got = ops.avg_pool(jnp.asarray(x), k, stride=s, padding=p, ceil_mode=ceil_mode, count_include_pad=cip)
        want = _back(F.avg_pool2d(_torch(x), k, s, p, ceil_mode=ceil_mode, count_include_pad=cip))
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


def test_stride_defaults_to_window():
    x = np.random.default_rng(0).standard_normal((1, 9, 9, 2)).astype(np.float32)
    want = ref.pool2d(x, (3, 3), (3, 3), ((0, 0), (0, 0)), lambda win: win.max(axis=(1, 2)))
    np.testing.assert_array_equal(np.asarray(ops.max_pool(jnp.asarray(x), 3)), want)


# SAME padding: (1, 1) both ways; (0, 1) both ways; (1, 1) and (0, 1).
@pytest.mark.parametrize("h,w,k,s", [(9, 9, 3, 2), (8, 6, 3, 2), (7, 10, (3, 2), (2, 3))])
def test_same_padding_values_match_loops(h, w, k, s):
    """TensorFlow's SAME: out = ceil(n / s), total padding max((out - 1) s + k - n, 0), the
    smaller half on top/left; padding never wins a max, and counts in the average only with
    count_include_pad."""
    x = np.random.default_rng(h * w + 1).standard_normal((2, h, w, 3)).astype(np.float32)
    k2, s2 = ((k, k) if isinstance(k, int) else k), ((s, s) if isinstance(s, int) else s)
    pads = []
    for n, kk, ss in zip((h, w), k2, s2):
        total = max((-(-n // ss) - 1) * ss + kk - n, 0)
        pads.append((total // 2, total - total // 2))
    want_max = ref.pool2d(x, k2, s2, pads, lambda win: np.nanmax(win, axis=(1, 2)))
    want_sum = ref.pool2d(x, k2, s2, pads, lambda win: np.nansum(win, axis=(1, 2)))
    want_mean = ref.pool2d(x, k2, s2, pads, lambda win: np.nanmean(win, axis=(1, 2)))
    xj = jnp.asarray(x)
    np.testing.assert_array_equal(np.asarray(ops.max_pool(xj, k, stride=s, padding="SAME")),
                                  want_max.astype(np.float32))
    np.testing.assert_allclose(np.asarray(ops.avg_pool(xj, k, stride=s, padding="SAME")),
                               want_sum / (k2[0] * k2[1]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(ops.avg_pool(xj, k, stride=s, padding="SAME",
                                                       count_include_pad=False)),
                               want_mean, rtol=1e-5, atol=1e-6)


def test_ceil_mode_drops_a_last_window_that_would_start_in_the_padding():
    """5x5, window 2, stride 2, padding 1: ceil((5 + 2 - 2) / 2) + 1 = 4 windows, but the 4th
    would start at 6 >= 5 + 1, inside the right padding, so PyTorch keeps 3."""
    x = np.random.default_rng(5).standard_normal((2, 5, 5, 3)).astype(np.float32)
    want = _back(F.max_pool2d(_torch(x), 2, 2, 1, ceil_mode=True))
    assert want.shape == (2, 3, 3, 3)
    got = ops.max_pool(jnp.asarray(x), 2, stride=2, padding=1, ceil_mode=True)
    np.testing.assert_array_equal(np.asarray(got), want)
    for cip in (True, False):
        want = _back(F.avg_pool2d(_torch(x), 2, 2, 1, ceil_mode=True, count_include_pad=cip))
        got = ops.avg_pool(jnp.asarray(x), 2, stride=2, padding=1, ceil_mode=True,
                           count_include_pad=cip)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_lp_pool_matches_pytorch_on_nonnegative_input(p):
    x = np.abs(np.random.default_rng(1).standard_normal((2, 8, 8, 3))).astype(np.float32)
    got = ops.lp_pool(jnp.asarray(x), p, 2, stride=2)
    want = _back(F.lp_pool2d(_torch(x), p, 2, stride=2))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


def test_lp_pool_with_infinite_p_is_max_pool_and_large_p_approaches_it():
    x = jnp.asarray(np.abs(np.random.default_rng(2).standard_normal((1, 6, 6, 2))) + 0.1, jnp.float32)
    np.testing.assert_array_equal(np.asarray(ops.lp_pool(x, float("inf"), 2)), np.asarray(ops.max_pool(x, 2)))
    np.testing.assert_allclose(np.asarray(ops.lp_pool(x, 60.0, 2)), np.asarray(ops.max_pool(x, 2)), rtol=0.03)


def test_global_and_adaptive_pools():
    x = np.random.default_rng(3).standard_normal((2, 10, 7, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(ops.global_avg_pool(jnp.asarray(x))), x.mean((1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(ops.global_max_pool(jnp.asarray(x))), x.max((1, 2)))
    assert ops.global_avg_pool(jnp.asarray(x), keepdims=True).shape == (2, 1, 1, 3)
    for size in [(4, 3), (1, 1), (10, 7), (3, 5)]:
        got = ops.adaptive_avg_pool(jnp.asarray(x), size)
        np.testing.assert_allclose(np.asarray(got), _back(F.adaptive_avg_pool2d(_torch(x), size)), rtol=1e-5, atol=1e-6)


def test_average_pooling_is_a_convolution_with_constant_weights():
    x = jnp.asarray(np.random.default_rng(4).standard_normal((2, 8, 8, 3)), jnp.float32)
    w = jnp.full((2, 2, 1, 3), 1 / 4, jnp.float32)
    np.testing.assert_allclose(np.asarray(ops.avg_pool(x, 2)),
                               np.asarray(ops.conv2d(x, w, stride=2, groups=3)), rtol=1e-6, atol=1e-7)


def test_max_pooling_ignores_a_one_pixel_shift_inside_a_window():
    # The lectures' example: the maximum moves by one pixel but stays in its 2x2 window.
    x = np.zeros((1, 4, 4, 1), np.float32)
    x[0, 0, 0, 0], x[0, 2, 3, 0] = 5.0, 7.0
    shifted = np.zeros_like(x)
    shifted[0, 1, 1, 0], shifted[0, 3, 2, 0] = 5.0, 7.0
    np.testing.assert_array_equal(np.asarray(ops.max_pool(jnp.asarray(x), 2)),
                                  np.asarray(ops.max_pool(jnp.asarray(shifted), 2)))


@pytest.mark.parametrize("bad,match", [
    (lambda: ops.max_pool(jnp.ones((4, 4, 3)), 2), "4-D"),
    (lambda: ops.max_pool(jnp.ones((1, 4, 4, 3)), 2, padding=2), "half the window"),
    (lambda: ops.avg_pool(jnp.ones((1, 4, 4, 3)), 0), "window"),
    (lambda: ops.max_pool(jnp.ones((1, 2, 2, 3)), 3), "larger than"),
    (lambda: ops.lp_pool(jnp.ones((1, 4, 4, 3)), 0.0, 2), "p > 0"),
])
def test_bad_pool_arguments(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_pooling_gradients_under_jit_match_pytorch(pool):
    import jax
    x = np.random.default_rng(5).standard_normal((2, 7, 7, 3)).astype(np.float32)
    g = np.random.default_rng(6).standard_normal((2, 4, 4, 3)).astype(np.float32)
    fn = {"max": ops.max_pool, "avg": ops.avg_pool}[pool]
    grad = jax.jit(jax.grad(lambda z: jnp.vdot(fn(z, 3, stride=2, padding=1), jnp.asarray(g))))(jnp.asarray(x))
    tx = _torch(x).requires_grad_()
    tfn = {"max": F.max_pool2d, "avg": F.avg_pool2d}[pool]
    (tfn(tx, 3, 2, 1) * _torch(g)).sum().backward()
    np.testing.assert_allclose(np.asarray(grad), _back(tx.grad), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("h,w,k,s", [(8, 8, 2, None), (7, 9, 2, None), (10, 8, 3, None),
                                      (8, 9, (2, 3), None), (7, 7, 3, 2)])
def test_max_pool_gradient_with_ties_and_nans_goes_where_pytorch_sends_it(h, w, k, s):
    """Small integers make most windows tie, and some windows hold NaNs: PyTorch's max_pool2d
    gives a window's gradient to its first maximum in row-major order (to its last NaN if it
    has NaNs). Non-overlapping windows are differentiated by their own rule, the stride-2 3x3
    case by reduce_window's (ties only: its select-and-scatter does not follow
    PyTorch's NaN rule); forward mode (jvp) must agree with the gradient."""
    import jax
    rng = np.random.default_rng(h * w)
    x = rng.integers(0, 3, (2, h, w, 3)).astype(np.float32)
    if s is None:
        x[rng.random(x.shape) < 0.05] = np.nan
    y = ops.max_pool(jnp.asarray(x), k, stride=s)
    g = rng.standard_normal(y.shape).astype(np.float32)
    tx = _torch(x).requires_grad_()
    ty = F.max_pool2d(tx, k, s)
    (ty * _torch(g)).sum().backward()
    np.testing.assert_array_equal(np.asarray(y), _back(ty.detach()))
    grad = jax.jit(jax.grad(lambda z: jnp.vdot(ops.max_pool(z, k, stride=s), jnp.asarray(g))))(jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(grad), _back(tx.grad))
    t = rng.standard_normal(x.shape).astype(np.float32)
    yt, jt = jax.jvp(lambda z: ops.max_pool(z, k, stride=s), (jnp.asarray(x),), (jnp.asarray(t),))
    np.testing.assert_array_equal(np.asarray(yt), _back(ty.detach()))
    np.testing.assert_allclose(float(jnp.vdot(jt, jnp.asarray(g))), float((_back(tx.grad) * t).sum()),
                               rtol=1e-5)


@pytest.mark.parametrize("window,stride,padding", [(2, 2, 0), (3, 2, 1)])
def test_max_pool_second_derivatives_agree_both_ways_and_with_pytorch(window, stride, padding):
    """The Hessian-vector product of sum(max_pool(x) ** 2), forward over reverse and reverse
    over forward, against PyTorch's double backward at ties (the 2x2 case: both give
    [2, 0, 0, 0]), on random values and with NaNs (non-overlapping windows: PyTorch's rule;
    overlapping ones use XLA's select-and-scatter, whose NaN rule differs: see ops.max_pool)."""
    import jax

    def loss(x):
        return jnp.sum(ops.max_pool(x, window, stride=stride, padding=padding) ** 2)

    for name, x, v in ref.max_pool_hvp_cases(window):
        if name == "nans" and window != stride:
            continue
        x, v = jnp.asarray(x), jnp.asarray(v)
        forward_over_reverse = jax.jvp(jax.grad(loss), (x,), (v,))[1]
        reverse_over_forward = jax.grad(lambda x: jax.jvp(loss, (x,), (v,))[1])(x)
        want = ref.torch_max_pool_hvp(x, v, window, stride, padding)
        np.testing.assert_array_equal(np.asarray(forward_over_reverse),
                                      np.asarray(reverse_over_forward), err_msg=name)
        np.testing.assert_allclose(np.asarray(forward_over_reverse), want, rtol=1e-6,
                                   atol=1e-6, err_msg=name)
