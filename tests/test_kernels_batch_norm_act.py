"""The fused batch-norm + residual + activation kernels, the Pallas kernels (interpreted on
CPU) and the CPU extension's, against ops.batch_norm followed by the residual add and ops'
activation: y, the batch mean and variance, and the gradients of x, scale, bias and residual
(through all three outputs), float32 and bfloat16; the statistics' stability against float64
NumPy; the exact GELU and its derivative against float64 erf; numerical gradients; fallbacks;
and the lowering to Triton for a GPU."""

import logging
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from cnnjax import kernels
from cnnjax.kernels import dispatch
from cnnjax.kernels.activations import normal_cdf
from cnnjax.kernels.batch_norm_act import reference
from cnnjax.kernels.onednn import norm_act
from kernel_checks import (BACKENDS, assert_close, assert_trees_close, normal, on_backend,
                           triton_kernels_for_gpu, value_and_vjp)

# (shape, activation, residual, affine): NHWC with odd sizes, a 2-D (N, C) input, batch 1,
# channel counts that are not a multiple of the 16-channel block, every fused activation.
CASES = [((2, 5, 7, 6), "relu", True, True), ((3, 37), "swish", False, False),
         ((1, 4, 4, 33), "hard_swish", True, True), ((2, 3, 5, 24), "gelu", False, True)]
BF16_CASES = [((2, 3, 5, 20), "relu6", False, True), ((2, 3, 5, 20), "identity", True, True)]
SLOW_CASES = [((4, 16, 16, 96), "relu", True, True), ((8, 7, 7, 200), "swish", False, True),
              ((2, 3, 5, 20), "relu6", False, True), ((5, 3, 3, 3), "identity", True, False)]


def _inputs(shape, residual, affine, dtype, seed):
    c = shape[-1]
    # An offset and spread per channel, as activations have; never zeros.
    x = (normal(seed, shape) * 2.0 + normal(seed + 1, (c,)) * 3.0).astype(dtype)
    scale, bias = (normal(seed + 2, (c,)), normal(seed + 3, (c,))) if affine else (None, None)
    res = normal(seed + 4, shape, dtype) if residual else None
    return x, scale, bias, res


def _float32(a):
    return None if a is None else a.astype(jnp.float32)


def _compare(case, dtype, seed, backend):
    """Kernel against reference. In bfloat16 the reference runs in float32 on the same values:
    the kernel keeps float32 inside and rounds y once, whereas the bfloat16 reference rounds
    the normalised value before the residual add, and at ReLU's kink that rounding alone picks
    the branch (jnp.maximum's gradient is even 1/2 at an exact 0)."""
    shape, activation, residual, affine = case
    x, scale, bias, res = _inputs(shape, residual, affine, dtype, seed)
    kernel = jax.jit(lambda x, s, b, r: on_backend(kernels.batch_norm_act, backend)(
        x, s, b, residual=r, activation=activation))
    assert f"backend={backend}" in str(jax.make_jaxpr(kernel)(x, scale, bias, res))
    ref = lambda x, s, b, r: reference(x, s, b, residual=r, activation=activation)
    out, grads = value_and_vjp(kernel, (x, scale, bias, res), seed + 5)
    out_ref, grads_ref = value_and_vjp(ref, (_float32(x), scale, bias, _float32(res)), seed + 5)
    assert [o.dtype for o in out] == [dtype, jnp.float32, jnp.float32]
    for name, a, e in zip(("y", "mean", "var"), out, out_ref):
        assert_close(a, e, dtype if name == "y" else jnp.float32, name)
    assert_trees_close(grads, grads_ref, dtype, "gradients of x, scale, bias, residual")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES)
def test_float32_outputs_and_gradients_match_reference(case, backend):
    _compare(case, jnp.float32, sum(case[0]), backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", BF16_CASES)
def test_bfloat16_outputs_and_gradients_match_reference(case, backend):
    _compare(case, jnp.bfloat16, 3 * sum(case[0]), backend)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", SLOW_CASES)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_larger_shapes_match_reference(case, dtype, backend):
    _compare(case, dtype, 7 * sum(case[0]), backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_statistics_are_stable_for_a_large_mean(backend):
    # Values around 1e4 with unit spread: E[x^2] - E[x]^2 in float32 would lose every digit of
    # the variance; the one-pass merge must match float64 NumPy on the same float32 values.
    x = 1e4 + normal(2, (3, 11, 13, 5)) * jnp.linspace(0.5, 2.0, 5)
    _, mean, var = on_backend(kernels.batch_norm_act, backend)(x, None, None,
                                                               activation="identity")
    x64 = np.asarray(x, np.float64).reshape(-1, 5)
    np.testing.assert_allclose(np.asarray(mean), x64.mean(axis=0), rtol=1e-7)
    np.testing.assert_allclose(np.asarray(var), x64.var(axis=0), rtol=1e-4)


@pytest.mark.parametrize("backend,activation", [("interpret", "swish"), ("cpu", "swish"),
                                                ("cpu", "gelu")])
def test_custom_vjp_passes_numerical_gradient_check(backend, activation):
    # Smooth activations, so finite differences are meaningful everywhere.
    x, scale, bias, res = _inputs((2, 3, 4, 5), True, True, jnp.float32, 13)
    f = jax.jit(lambda x, s, b, r: on_backend(kernels.batch_norm_act, backend)(
        x, s, b, residual=r, activation=activation))
    check_grads(f, (x, scale, bias, res), order=1, modes=["rev", "fwd"])


@pytest.mark.parametrize("activation", ["relu", "relu6", "swish", "hard_swish", "gelu"])
@pytest.mark.parametrize("shape,residual", [((1, 5, 3, 7), True), ((3, 4, 6, 20), False)])
def test_cpu_kernel_matches_pytorch_float64(activation, shape, residual):
    """The CPU kernel (float32) against PyTorch's training batch norm and activation in float64
    on the same values: y, the batch mean and variance, and the gradients of x, scale, bias and
    residual through all three (batch 1 with an odd shape and a residual, and a wider one)."""
    import torch
    import torch.nn.functional as F

    x, scale, bias, res = _inputs(shape, residual, True, jnp.float32, sum(shape))
    kernel = on_backend(kernels.batch_norm_act, "cpu")
    f = lambda x, s, b, r: kernel(x, s, b, residual=r, activation=activation)
    out, grads = value_and_vjp(f, (x, scale, bias, res), 17)
    # value_and_vjp's cotangents (y, mean, var), for PyTorch's loss.
    cot = [normal(17 + i, o.shape, jnp.bfloat16).astype(o.dtype) for i, o in enumerate(out)]

    t = {k: torch.tensor(np.asarray(v, np.float64), requires_grad=True)
         for k, v in (("x", x), ("scale", scale), ("bias", bias), ("res", res)) if v is not None}
    nchw = t["x"].movedim(-1, 1)
    z = F.batch_norm(nchw, None, None, t["scale"], t["bias"], training=True, eps=1e-5)
    z = z.movedim(1, -1) + (t["res"] if residual else 0.0)
    torch_act = {"relu": F.relu, "relu6": F.relu6, "swish": F.silu, "hard_swish": F.hardswish,
                 "gelu": F.gelu}[activation]
    y = torch_act(z)
    axes = tuple(range(len(shape) - 1))
    mean = t["x"].mean(dim=axes)
    var = ((t["x"] - mean) ** 2).mean(dim=axes)
    loss = sum((o * torch.tensor(np.asarray(c, np.float64))).sum()
               for o, c in zip((y, mean, var), cot))
    loss.backward()
    want = [y.detach().numpy(), mean.detach().numpy(), var.detach().numpy()]
    for name, a, e in zip(("y", "mean", "var"), out, want):
        assert_close(a, e, jnp.float32, name)
    names = ["x", "scale", "bias"] + (["res"] if residual else [])
    for name, g in zip(names, grads):
        assert_close(g, t[name].grad.numpy(), jnp.float32, f"d{name}")


def _gelu64(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The exact GELU z Phi(z) and its derivative Phi(z) + z phi(z), float64 from math.erf."""
    cdf = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in z])
    return z * cdf, cdf + z * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def test_gelu_and_its_derivative_match_float64_erf_everywhere():
    # Both implementations of the erf-free normal CDF (the jnp one the Pallas kernels lower,
    # the C++ one of the CPU kernels) on a dense grid through both branches (|z| < sqrt 2 and
    # above), the far tails and the extremes, within a few float32 ulps of |z| (or of 1).
    z = np.concatenate([np.linspace(-12, 12, 20001),
                        [-1e20, -1e15, -60.0, -20.0, 20.0, 60.0, 1e15, 1e20]]).astype(np.float32)
    value, grad = _gelu64(z.astype(np.float64))
    tail = (z > -12) & (z < -3)  # GELU ~ -1e-3 .. -1e-32 there: relative accuracy counts

    def check(got_value, got_grad):
        got_value, got_grad = (np.asarray(a, np.float64).ravel() for a in (got_value, got_grad))
        tol = 4e-7 * np.maximum(np.abs(z), 1.0)
        np.testing.assert_array_less(np.abs(got_value - value), tol)
        np.testing.assert_array_less(np.abs(got_grad - grad), tol)
        np.testing.assert_array_less(np.abs(got_value[tail] / value[tail] - 1.0), 2e-5)

    cdf, density = jax.jit(normal_cdf)(jnp.asarray(z))
    check(z * cdf, cdf + z * density)
    # The CPU passes: normalise with a = 1, b = 0 is gelu(z); the input gradient with dy = 1,
    # A = 1 and B = D = 0 is gelu'(z).
    x = jnp.asarray(np.append(z, [np.inf, np.inf])).reshape(-1, 1)
    ab = jnp.asarray([[1.0], [0.0]])
    coef = jnp.asarray([[1.0], [0.0], [0.0], [1.0], [0.0]])
    y = jax.jit(lambda x: norm_act.run("normalize", x, ab, activation="gelu"))(x).ravel()
    dy = jax.jit(lambda x: norm_act.run("input_grad", x, jnp.ones_like(x), coef,
                                        activation="gelu"))(x).ravel()
    check(y[:-2], dy[:-2])
    assert float(y[-1]) == np.inf  # gelu(inf) = inf (the input gradient pass adds 0 * x: NaN)


def test_cpu_kernels_gelu_coefficients_equal_the_pallas_ones():
    """norm_act.cc's erf series and erfc fit are activations.py's, rounded to float32 (the two
    backends' GELUs may not drift apart)."""
    import pathlib
    import re

    from cnnjax.kernels import activations
    source = (pathlib.Path(norm_act.__file__).with_name("norm_act.cc")).read_text()
    for name, want in (("kErfSeries", activations.ERF_SERIES), ("kErfcFit", activations.ERFC_FIT)):
        body = re.search(name + r"\[\d+\] = \{(.*?)\};", source, re.S).group(1)
        got = [float(v.strip().rstrip("f")) for v in body.split(",")]
        np.testing.assert_array_equal(np.float32(got), np.float32(want), err_msg=name)


@pytest.mark.parametrize("switch", [("pallas", True), ("onednn", False)], ids=["pallas", "cpu"])
@pytest.mark.parametrize("activation,residual_dtype,reason", [
    ("elu", jnp.float32, "activation 'elu'"), ("relu", jnp.bfloat16, "residual bfloat16")])
def test_unsupported_arguments_fall_back_once_with_the_reason(monkeypatch, caplog, activation,
                                                              residual_dtype, reason, switch):
    monkeypatch.setattr(dispatch, "_logged", set())
    caplog.set_level(logging.WARNING, logger=dispatch.logger.name)
    x, scale, bias, _ = _inputs((2, 3, 3, 4), False, True, jnp.float32, 1)
    res = normal(9, x.shape, residual_dtype)
    with kernels.use(switch[0], interpret=switch[1]):
        got = [kernels.batch_norm_act(x, scale, bias, residual=res, activation=activation)
               for _ in range(2)]
    want = reference(x, scale, bias, residual=res, activation=activation)
    assert_trees_close(got, [want, want], jnp.float32)
    lines = [r.getMessage() for r in caplog.records if "batch_norm_act" in r.getMessage()]
    assert len(lines) == 1 and reason in lines[0], lines


def test_float64_falls_back_on_the_cpu_with_the_reason(monkeypatch, caplog):
    monkeypatch.setattr(dispatch, "_logged", set())
    caplog.set_level(logging.WARNING, logger=dispatch.logger.name)
    with jax.enable_x64(True), kernels.use("onednn"):
        x = jnp.asarray(np.asarray(normal(3, (2, 3, 3, 4)), np.float64))
        text = str(jax.make_jaxpr(lambda x: kernels.batch_norm_act(x, None, None))(x))
    assert "batch_norm_act" not in text
    lines = [r.getMessage() for r in caplog.records if "batch_norm_act" in r.getMessage()]
    assert len(lines) == 1 and "dtype float64" in lines[0], lines


def test_wrong_parameter_shape_raises_like_the_reference():
    with kernels.use("pallas", interpret=True), pytest.raises(ValueError, match="scale"):
        kernels.batch_norm_act(normal(0, (2, 3, 3, 4)), normal(1, (5,)), None)


@pytest.mark.parametrize("dtype,activation", [(jnp.float32, "swish"), (jnp.bfloat16, "swish"),
                                              (jnp.float32, "gelu")])
def test_forward_and_backward_lower_to_triton(monkeypatch, dtype, activation):
    x, scale, bias, res = _inputs((4, 14, 14, 144), True, True, dtype, 0)

    def fwd_bwd(x, s, b, r):
        out, pullback = jax.vjp(lambda *a: kernels.batch_norm_act(
            *a[:3], residual=a[3], activation=activation), x, s, b, r)
        return out, pullback(out)

    with kernels.use("pallas"):  # statistics, normalise; gradient sums, input gradient
        assert triton_kernels_for_gpu(fwd_bwd, (x, scale, bias, res), monkeypatch) == 4
