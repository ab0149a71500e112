"""The fused batch-norm + residual + activation kernels (interpreted on CPU) against
ops.batch_norm followed by the residual add and ops' activation: y, the batch mean and variance,
and the gradients of x, scale, bias and residual (through all three outputs), float32 and
bfloat16; the statistics' stability against float64 NumPy; custom-VJP numerics; fallbacks; and
the lowering to Triton for a GPU."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from cnnjax import kernels
from cnnjax.kernels import dispatch
from cnnjax.kernels.batch_norm_act import reference
from kernel_checks import (assert_close, assert_trees_close, normal, triton_kernels_for_gpu,
                           value_and_vjp)

# (shape, activation, residual, affine): NHWC with odd sizes, a 2-D (N, C) input, batch 1,
# channel counts that are not a multiple of the 16-channel block, every fused activation.
CASES = [((2, 5, 7, 6), "relu", True, True), ((3, 37), "swish", False, False),
         ((1, 4, 4, 33), "hard_swish", True, True)]
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


def _compare(case, dtype, seed):
    """Kernel against reference. In bfloat16 the reference runs in float32 on the same values:
    the kernel keeps float32 inside and rounds y once, whereas the bfloat16 reference rounds
    the normalised value before the residual add, and at ReLU's kink that rounding alone picks
    the branch (jnp.maximum's gradient is even 1/2 at an exact 0)."""
    shape, activation, residual, affine = case
    x, scale, bias, res = _inputs(shape, residual, affine, dtype, seed)
    kernel = jax.jit(lambda x, s, b, r: kernels.batch_norm_act(
        x, s, b, residual=r, activation=activation, interpret=True))
    ref = lambda x, s, b, r: reference(x, s, b, residual=r, activation=activation)
    out, grads = value_and_vjp(kernel, (x, scale, bias, res), seed + 5)
    out_ref, grads_ref = value_and_vjp(ref, (_float32(x), scale, bias, _float32(res)), seed + 5)
    assert [o.dtype for o in out] == [dtype, jnp.float32, jnp.float32]
    for name, a, e in zip(("y", "mean", "var"), out, out_ref):
        assert_close(a, e, dtype if name == "y" else jnp.float32, name)
    assert_trees_close(grads, grads_ref, dtype, "gradients of x, scale, bias, residual")


@pytest.mark.parametrize("case", CASES)
def test_float32_outputs_and_gradients_match_reference(case):
    _compare(case, jnp.float32, seed=sum(case[0]))


@pytest.mark.parametrize("case", BF16_CASES)
def test_bfloat16_outputs_and_gradients_match_reference(case):
    _compare(case, jnp.bfloat16, seed=3 * sum(case[0]))


@pytest.mark.slow
@pytest.mark.parametrize("case", SLOW_CASES)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_larger_shapes_match_reference(case, dtype):
    _compare(case, dtype, seed=7 * sum(case[0]))


def test_statistics_are_stable_for_a_large_mean():
    # Values around 1e4 with unit spread: E[x^2] - E[x]^2 in float32 would lose every digit of
    # the variance; the one-pass merge must match float64 NumPy on the same float32 values.
    x = 1e4 + normal(2, (3, 11, 13, 5)) * jnp.linspace(0.5, 2.0, 5)
    _, mean, var = kernels.batch_norm_act(x, None, None, activation="identity", interpret=True)
    x64 = np.asarray(x, np.float64).reshape(-1, 5)
    np.testing.assert_allclose(np.asarray(mean), x64.mean(axis=0), rtol=1e-7)
    np.testing.assert_allclose(np.asarray(var), x64.var(axis=0), rtol=1e-4)


def test_custom_vjp_passes_numerical_gradient_check():
    # swish: smooth, so finite differences are meaningful everywhere.
    x, scale, bias, res = _inputs((2, 3, 4, 5), True, True, jnp.float32, 13)
    f = jax.jit(lambda x, s, b, r: kernels.batch_norm_act(x, s, b, residual=r,
                                                          activation="swish", interpret=True))
    check_grads(f, (x, scale, bias, res), order=1, modes=["rev"])


@pytest.mark.parametrize("activation,residual_dtype,reason", [
    ("elu", jnp.float32, "activation 'elu'"), ("relu", jnp.bfloat16, "residual bfloat16")])
def test_unsupported_arguments_fall_back_once_with_the_reason(monkeypatch, caplog, activation,
                                                              residual_dtype, reason):
    monkeypatch.setattr(dispatch, "_logged", set())
    caplog.set_level(logging.WARNING, logger=dispatch.logger.name)
    x, scale, bias, _ = _inputs((2, 3, 3, 4), False, True, jnp.float32, 1)
    res = normal(9, x.shape, residual_dtype)
    with kernels.use("pallas", interpret=True):
        got = [kernels.batch_norm_act(x, scale, bias, residual=res, activation=activation)
               for _ in range(2)]
    want = reference(x, scale, bias, residual=res, activation=activation)
    assert_trees_close(got, [want, want], jnp.float32)
    lines = [r.getMessage() for r in caplog.records if "batch_norm_act" in r.getMessage()]
    assert len(lines) == 1 and reason in lines[0], lines


def test_wrong_parameter_shape_raises_like_the_reference():
    with kernels.use("pallas", interpret=True), pytest.raises(ValueError, match="scale"):
        kernels.batch_norm_act(normal(0, (2, 3, 3, 4)), normal(1, (5,)), None)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_forward_and_backward_lower_to_triton(monkeypatch, dtype):
    x, scale, bias, res = _inputs((4, 14, 14, 144), True, True, dtype, 0)

    def fwd_bwd(x, s, b, r):
        out, pullback = jax.vjp(lambda *a: kernels.batch_norm_act(
            *a[:3], residual=a[3], activation="swish"), x, s, b, r)
        return out, pullback(out)

    with kernels.use("pallas"):  # statistics, normalise; gradient sums, input gradient
        assert triton_kernels_for_gpu(fwd_bwd, (x, scale, bias, res), monkeypatch) == 4
