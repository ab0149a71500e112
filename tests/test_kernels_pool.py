"""The pooling kernels, the Pallas kernels (interpreted on CPU) and the CPU extension's, against
ops.max_pool / ops.avg_pool and PyTorch: outputs and input gradients in float32 and bfloat16,
max pooling's tie and NaN rules, second derivatives, numerical gradients, fallbacks and the
lowering to Triton for a GPU."""

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from cnnjax import kernels, ops
from cnnjax.kernels import dispatch
from kernel_checks import (BACKENDS, assert_close, assert_trees_close, normal, on_backend,
                           triton_kernels_for_gpu, value_and_vjp)

# (n, h, w, c, window, stride, padding): odd sizes, batch 1, stride-2 windows that stop short
# of the edge, rectangular windows and strides, SAME padding, and
# channel counts that are not a multiple of the 16-channel block. (The tie test below adds
# overlapping stride-1 windows; the slow run adds more shapes.)
MAX_CASES = [(2, 7, 9, 5, 3, 2, 1), (1, 8, 8, 33, 2, 2, 0), (1, 6, 11, 17, (2, 3), (1, 2), (1, 0))]
AVG_CASES = [((2, 7, 9, 5, 3, 2, 1), True), ((1, 7, 7, 4, 3, 2, "SAME"), False)]
SLOW_CASES = [(4, 15, 15, 64, 3, 2, 1), (2, 16, 16, 100, 2, 2, 0), (3, 12, 13, 40, 3, 1, "SAME"),
              (2, 9, 6, 3, 3, 1, 1), (1, 6, 11, 17, (2, 3), (1, 2), (1, 0))]


def _functions(op: str, case, backend: str, **options):
    window, stride, padding = case[4:]
    common = dict(window=window, stride=stride, padding=padding, **options)
    kernel = getattr(kernels, f"{op}2d")
    reference = ops.max_pool if op == "max_pool" else ops.avg_pool
    return (jax.jit(functools.partial(on_backend(kernel, backend), **common)),
            functools.partial(reference, **common))


def _compare(op: str, case, dtype, seed: int, backend: str, x=None, **options):
    x = normal(seed, case[:4], dtype) if x is None else x
    kernel, reference = _functions(op, case, backend, **options)
    assert f"backend={backend}" in str(jax.make_jaxpr(kernel)(x))
    y, (dx,) = value_and_vjp(kernel, (x,), seed + 1)
    y_ref, (dx_ref,) = value_and_vjp(reference, (x,), seed + 1)
    assert y.dtype == y_ref.dtype == dtype
    assert_close(y, y_ref, dtype, f"{op} output")
    assert_close(dx, dx_ref, dtype, f"{op} input gradient")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", MAX_CASES)
def test_max_pool_float32_matches_reference(case, backend):
    _compare("max_pool", case, jnp.float32, sum(case[:4]), backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case,count_include_pad", AVG_CASES)
def test_avg_pool_float32_matches_reference(case, count_include_pad, backend):
    _compare("avg_pool", case, jnp.float32, sum(case[:4]), backend,
             count_include_pad=count_include_pad)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op,padding,count_include_pad", [
    ("max_pool", 0, True), ("avg_pool", 1, True), ("avg_pool", 0, False), ("avg_pool", 1, False)])
def test_ceil_mode_matches_pytorch(op, padding, count_include_pad, backend):
    """ceil_mode (GoogLeNet's max pools, NFNet's avg-pool shortcut): windows overhanging the
    bottom/right edge, whose overhang never counts in the average, against PyTorch's pooling
    (output and input gradient)."""
    import torch

    x = normal(11, (2, 9, 10, 5))
    options = {} if op == "max_pool" else {"count_include_pad": count_include_pad}
    kernel = functools.partial(on_backend(getattr(kernels, f"{op}2d"), backend), window=3,
                               stride=2, padding=padding, ceil_mode=True, **options)
    y, pullback = jax.vjp(kernel, x)
    g = normal(13, y.shape)
    (dx,) = pullback(g)
    t = torch.tensor(np.asarray(x), dtype=torch.float64).permute(0, 3, 1, 2).requires_grad_()
    pool = getattr(torch.nn.functional, f"{op}2d")
    ty = pool(t, 3, 2, padding, ceil_mode=True, **options).permute(0, 2, 3, 1)
    ty.backward(torch.tensor(np.asarray(g), dtype=torch.float64))
    np.testing.assert_allclose(np.asarray(y), ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(dx), t.grad.permute(0, 2, 3, 1).numpy(), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_avg_pool_bfloat16_matches_reference(backend):  # bf16 max pooling: the tie test below
    _compare("avg_pool", (2, 9, 7, 20, 3, 2, 1), jnp.bfloat16, 5, backend,
             count_include_pad=False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_pool_gradient_goes_to_the_first_of_tied_maxima(backend):
    # Small integers make most windows hold several equal maxima (bf16, where ties are common in
    # practice); XLA gives the gradient to the first in row-major window order, and so must the
    # kernel.
    dtype = jnp.bfloat16
    ints = np.asarray(jax.random.randint(jax.random.PRNGKey(3), (2, 7, 8, 6), -2, 3))
    windows = np.lib.stride_tricks.sliding_window_view(ints, (3, 3), axis=(1, 2))[:, ::2, ::2]
    tied = (windows == windows.max(axis=(-2, -1), keepdims=True)).sum(axis=(-2, -1)) > 1
    assert tied.mean() > 0.3  # the setup really has ties
    x = jnp.asarray(ints, dtype)
    _compare("max_pool", (2, 7, 8, 6, 3, 1, 1), dtype, 9, backend, x=x)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("window,stride,padding", [(2, 2, 0), (3, 2, 1)])
def test_max_pool_gradient_with_nans_goes_where_pytorch_sends_it(window, stride, padding, backend):
    """Windows holding NaNs and ties, overlapping and not: the kernel's output and gradient
    against PyTorch's max_pool2d (NaN output; the gradient to the window's last NaN)."""
    import torch
    rng = np.random.default_rng(window)
    x = rng.integers(0, 3, (2, 8, 8, 3)).astype(np.float32)
    x[rng.random(x.shape) < 0.08] = np.nan
    kernel = jax.jit(functools.partial(on_backend(kernels.max_pool2d, backend), window=window,
                                       stride=stride, padding=padding))
    y, vjp = jax.vjp(kernel, jnp.asarray(x))
    g = rng.standard_normal(y.shape).astype(np.float32)
    (dx,) = vjp(jnp.asarray(g))
    xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    yt = torch.nn.functional.max_pool2d(xt, window, stride, padding)
    (yt * torch.tensor(g.transpose(0, 3, 1, 2))).sum().backward()
    np.testing.assert_array_equal(np.asarray(y), yt.detach().numpy().transpose(0, 2, 3, 1))
    # Overlapping windows sum several output gradients into one input, in another order.
    np.testing.assert_allclose(np.asarray(dx), xt.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", SLOW_CASES)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_larger_shapes_match_reference(case, dtype, backend):
    _compare("max_pool", case, dtype, 3 * sum(case[:4]), backend)
    _compare("avg_pool", case, dtype, 5 * sum(case[:4]), backend, count_include_pad=False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_custom_vjps_pass_numerical_gradient_check(backend):
    # Distinct values in [-1, 1], 0.01 apart: no two in a window are within check_grads'
    # perturbation, and float32 rounding stays far below its tolerance.
    values = jax.random.permutation(jax.random.PRNGKey(0), jnp.arange(2 * 5 * 6 * 3))
    x = (values.reshape(2, 5, 6, 3) / 90.0 - 1.0).astype(jnp.float32)
    for op in ("max_pool", "avg_pool"):
        kernel, _ = _functions(op, (2, 5, 6, 3, 3, 2, 1), backend)
        check_grads(kernel, (x,), order=1, modes=["rev", "fwd"] if backend == "cpu" else ["rev"])


def test_large_window_falls_back_once_with_the_reason(monkeypatch, caplog):
    monkeypatch.setattr(dispatch, "_logged", set())
    caplog.set_level(logging.WARNING, logger=dispatch.logger.name)
    x = normal(4, (1, 9, 9, 3))
    with kernels.use("pallas", interpret=True):
        got = [kernels.max_pool2d(x, 9) for _ in range(2)]
    assert_trees_close(got, [ops.max_pool(x, 9)] * 2, jnp.float32)
    lines = [r.getMessage() for r in caplog.records if "max_pool2d" in r.getMessage()]
    assert len(lines) == 1 and "window 9x9" in lines[0], lines


def test_invalid_padding_raises_like_the_reference():
    with kernels.use("pallas", interpret=True), pytest.raises(ValueError, match="padding"):
        kernels.max_pool2d(normal(0, (1, 6, 6, 2)), 3, padding=2)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_forward_and_backward_lower_to_triton(monkeypatch, dtype):
    x = normal(0, (2, 28, 28, 64), dtype)

    def fwd_bwd(x):
        out = []
        for pool in (kernels.max_pool2d, kernels.avg_pool2d):
            y, pullback = jax.vjp(lambda x: pool(x, 3, stride=2, padding=1), x)
            out += [y, pullback(y)]
        return out

    with kernels.use("pallas"):  # max: forward with argmax, backward; avg: forward, backward
        assert triton_kernels_for_gpu(fwd_bwd, (x,), monkeypatch) == 4


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("window,stride,padding", [(2, 2, 0), (3, 2, 1)])
def test_max_pool_second_derivatives_agree_both_ways_and_with_pytorch(window, stride, padding,
                                                                     backend):
    """The kernel's Hessian-vector product of sum(max_pool2d(x) ** 2) both ways against
    PyTorch's double backward: ties, random values and NaNs, overlapping windows too."""
    import reference as ref

    kernel = jax.jit(functools.partial(on_backend(kernels.max_pool2d, backend), window=window,
                                       stride=stride, padding=padding))
    loss = lambda x: jnp.sum(kernel(x) ** 2)
    for name, x, v in ref.max_pool_hvp_cases(window):
        x, v = jnp.asarray(x), jnp.asarray(v)
        forward_over_reverse = jax.jvp(jax.grad(loss), (x,), (v,))[1]
        reverse_over_forward = jax.grad(lambda x: jax.jvp(loss, (x,), (v,))[1])(x)
        np.testing.assert_array_equal(np.asarray(forward_over_reverse),
                                      np.asarray(reverse_over_forward), err_msg=name)
        np.testing.assert_allclose(np.asarray(forward_over_reverse),
                                   ref.torch_max_pool_hvp(x, v, window, stride, padding),
                                   rtol=1e-6, atol=1e-6, err_msg=name)
