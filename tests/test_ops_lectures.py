"""The lectures' worked examples, each checked against the number the lecture gives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference
from cnnjax import models, nn as cnn, ops

# The lectures' 6x6 binary image (a diagonal stroke pattern) and its diagonal-detector filter.
SIX_BY_SIX = np.array([[1, 0, 0, 0, 0, 1], [0, 1, 0, 0, 1, 0], [0, 0, 1, 1, 0, 0],
                       [1, 0, 0, 0, 1, 0], [0, 1, 0, 0, 1, 0], [0, 0, 1, 0, 1, 0]], np.float32)
DIAGONAL = np.array([[1, -1, -1], [-1, 1, -1], [-1, -1, 1]], np.float32)


def _conv_single(image, kernel, **kw):
    return np.asarray(ops.conv2d(jnp.asarray(image)[None, :, :, None],
                                 jnp.asarray(kernel)[:, :, None, None], **kw)[0, :, :, 0])


def test_five_by_five_worked_example():
    image = np.array([[3, 3, 2, 1, 0], [0, 0, 1, 3, 1], [3, 1, 2, 2, 3], [2, 0, 0, 2, 2],
                      [2, 0, 0, 0, 1]], np.float32)
    kernel = np.array([[0, 1, 2], [2, 2, 0], [0, 1, 2]], np.float32)
    np.testing.assert_array_equal(_conv_single(image, kernel), [[12, 12, 17], [10, 17, 19], [9, 6, 14]])


def test_six_by_six_binary_image_stride_1_and_2():
    s1 = _conv_single(SIX_BY_SIX, DIAGONAL)
    assert s1.shape == (4, 4)
    np.testing.assert_array_equal(s1[0], [3, -1, -3, -1])
    s2 = _conv_single(SIX_BY_SIX, DIAGONAL, stride=2)
    assert s2.shape == (2, 2)
    np.testing.assert_array_equal(s2[0], [3, -3])


def test_seven_by_seven_output_sizes():
    assert ops.conv_output_size(7, 3, stride=1, exact=True) == 5
    assert ops.conv_output_size(7, 3, stride=2, exact=True) == 3
    with pytest.raises(ValueError, match="does not fit"):
        ops.conv_output_size(7, 3, stride=3, exact=True)
    assert ops.conv_output_size(7, 3, stride=3) == 2  # floor, as frameworks silently do
    assert _conv_single(np.ones((7, 7), np.float32), np.ones((3, 3), np.float32), stride=2).shape == (3, 3)


def _param_count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def test_32x32x3_with_ten_5x5_filters_pad_2():
    """A conv layer of ten 5x5 filters with bias on a 32x32x3 input: 760 parameters
    (10 x (5 x 5 x 3 + 1)) and a 32x32x10 output, whose values match the float64 reference."""
    layer = cnn.Conv(10, 5, padding=2)
    x = jax.random.uniform(jax.random.PRNGKey(0), (1, 32, 32, 3))
    params = layer.init(jax.random.PRNGKey(1), x)["params"]
    assert _param_count(params) == 760
    params = {**params, "bias": jnp.arange(10, dtype=jnp.float32)}  # a bias that shows
    out = np.asarray(layer.apply({"params": params}, x))
    want = reference.conv2d(x, params["kernel"], params["bias"], pads=((2, 2), (2, 2)))
    assert want.shape == (1, 32, 32, 10)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)


def test_alexnet_first_layer():
    """The lecture's AlexNet conv1: 96 11x11 filters, stride 4, on 227x227x3 gives 55x55x96 with
    34,944 parameters; checked on the registry's AlexNet itself."""
    assert ops.conv_output_size(227, 11, stride=4, exact=True) == 55
    model = models.create("alexnet", num_classes=1000)
    x = jnp.zeros((1, 227, 227, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
    assert _param_count(variables["params"]["conv1"]) == 34_944
    _, state = jax.eval_shape(lambda v: model.apply(v, x, train=False, capture_intermediates=True,
                                                    mutable=["intermediates"]), variables)
    assert state["intermediates"]["conv1"]["__call__"][0].shape == (1, 55, 55, 96)


def test_sharpen_kernel_on_zero_padded_image():
    """The sharpen kernel with zero padding: the top-left output is 5 a00 - a01 - a10 (the two
    missing neighbours are padding). The lecture's own 5x5 image is not reproduced here; the
    image below is chosen so the top-left value is the lecture's 114 (5*30 - 20 - 16)."""
    sharpen = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32)
    image = np.array([[30, 20, 25, 28, 31], [16, 40, 44, 39, 30], [22, 35, 60, 41, 29],
                      [18, 33, 47, 52, 40], [20, 26, 31, 36, 45]], np.float32)
    out = _conv_single(image, sharpen, padding=1)
    assert out.shape == (5, 5) and out[0, 0] == 114
    assert out[2, 2] == 5 * 60 - 44 - 35 - 41 - 47


def test_three_stacked_3x3_convs_see_7x7():
    # The receptive field is the support of the gradient of one output pixel w.r.t. the input.
    x = jnp.zeros((1, 15, 15, 1))
    w = jnp.ones((3, 3, 1, 1))
    f = lambda z: ops.conv2d(ops.conv2d(ops.conv2d(z, w), w), w)[0, 4, 4, 0]
    support = np.argwhere(np.asarray(jax.grad(f)(x))[0, :, :, 0] != 0)
    assert (support.max(0) - support.min(0) + 1).tolist() == [7, 7]
