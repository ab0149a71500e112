"""The depthwise convolution kernels (interpreted on CPU) against ops.depthwise_conv2d: outputs
and the gradients of x, w and b, float32 and bfloat16; custom-VJP numerics; fallbacks; and the
kernels' lowering to Triton for a GPU."""

import functools
import logging

import jax
import jax.numpy as jnp
import pytest
from jax.test_util import check_grads

from cnnjax import kernels, ops
from cnnjax.kernels import dispatch
from kernel_checks import (assert_close, assert_trees_close, normal, triton_kernels_for_gpu,
                           value_and_vjp)

# (n, h, w, c, k, stride, padding): odd sizes, batch 1, stride 2 on even and odd sizes (SAME
# pads only bottom/right there), PyTorch's symmetric padding, channel counts that are not a
# multiple of the 16-channel block (5, 33 = 2 blocks + 1, 3, 20, 17). The interpreter compiles
# every shape afresh, so the default run keeps a few and the slow run adds the rest.
CASES = [(2, 7, 9, 5, 3, 1, "SAME"), (1, 8, 8, 33, 3, 2, "SAME"), (2, 9, 7, 3, 5, 2, 2)]
BF16_CASES = [(1, 8, 7, 20, 3, 2, 1)]
SLOW_CASES = [(1, 5, 6, 17, 5, 1, "SAME"), (2, 6, 5, 9, 5, 1, "SAME"),
              (4, 16, 16, 96, 3, 2, "SAME"), (2, 14, 14, 144, 5, 1, "SAME"),
              (3, 13, 11, 40, 5, 2, 2), (1, 12, 12, 200, 3, 1, 1)]


def _inputs(case, dtype, seed):
    n, h, w, c, k, _, _ = case
    return (normal(seed, (n, h, w, c), dtype), normal(seed + 1, (k, k, 1, c)),
            normal(seed + 2, (c,)))


def _compare(case, dtype, seed):
    stride, padding = case[5], case[6]
    args = _inputs(case, dtype, seed)
    kernel = jax.jit(functools.partial(kernels.depthwise_conv2d, stride=stride, padding=padding,
                                       interpret=True))
    reference = functools.partial(ops.depthwise_conv2d, stride=stride, padding=padding)
    y, grads = value_and_vjp(kernel, args, seed + 3)
    y_ref, grads_ref = value_and_vjp(reference, args, seed + 3)
    assert y.dtype == y_ref.dtype == dtype
    assert_close(y, y_ref, dtype, "output")
    assert_trees_close(grads, grads_ref, dtype, "gradients of x, w, b")


@pytest.mark.parametrize("case", CASES)
def test_float32_output_and_gradients_match_reference(case):
    _compare(case, jnp.float32, seed=sum(case[:5]))


@pytest.mark.parametrize("case", BF16_CASES)
def test_bfloat16_output_and_gradients_match_reference(case):
    _compare(case, jnp.bfloat16, seed=sum(case[:5]))


@pytest.mark.slow
@pytest.mark.parametrize("case", SLOW_CASES)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_larger_shapes_match_reference(case, dtype):
    _compare(case, dtype, seed=7 * sum(case[:5]))


def test_custom_vjp_passes_numerical_gradient_check():
    x, w, _ = _inputs((1, 5, 6, 3, 3, 2, "SAME"), jnp.float32, 11)
    f = jax.jit(lambda x, w: kernels.depthwise_conv2d(x, w, stride=2, interpret=True))
    check_grads(f, (x, w), order=1, modes=["rev"])


@pytest.fixture
def fresh_log(monkeypatch, caplog):
    """The dispatcher's once-only log, emptied so this test sees its own first lines."""
    monkeypatch.setattr(dispatch, "_logged", set())
    caplog.set_level(logging.WARNING, logger=dispatch.logger.name)
    return caplog


@pytest.mark.parametrize("k,w_channels,reason", [(7, 4, "kernel 7x7"), (3, 8, "channel multiplier 2")])
def test_unsupported_arguments_fall_back_once_with_the_reason(fresh_log, k, w_channels, reason):
    x, w = normal(1, (1, 6, 6, 4)), normal(2, (k, k, 1, w_channels))
    with kernels.use("pallas", interpret=True):
        for _ in range(2):
            y = kernels.depthwise_conv2d(x, w, stride=1)
    assert_close(y, ops.depthwise_conv2d(x, w, padding="SAME"), jnp.float32)
    lines = [r.getMessage() for r in fresh_log.records if "depthwise_conv2d" in r.getMessage()]
    assert len(lines) == 1 and reason in lines[0], lines


def test_invalid_input_raises_like_the_reference():
    with kernels.use("pallas", interpret=True), pytest.raises(ValueError, match="depthwise"):
        kernels.depthwise_conv2d(normal(0, (6, 6, 4)), normal(1, (3, 3, 1, 4)))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_forward_and_both_gradients_lower_to_triton(monkeypatch, dtype):
    x, w = normal(0, (2, 14, 14, 144), dtype), normal(1, (5, 5, 1, 144))

    def fwd_bwd(x, w):
        y, pullback = jax.vjp(lambda x, w: kernels.depthwise_conv2d(x, w, stride=2), x, w)
        return y, pullback(y)

    with kernels.use("pallas"):
        assert triton_kernels_for_gpu(fwd_bwd, (x, w), monkeypatch) == 3
