"""The models built for the reproductions: counts by hand, and the property each exists to show."""

import jax
import jax.numpy as jnp
import pytest

from cnnjax import models


def _count(name, shape, **kw):
    m = models.create(name, **kw)
    v = jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape))))
    return sum(x.size for x in jax.tree_util.tree_leaves(v["params"]))


def _conv(cin, cout, bias=True):
    return 9 * cin * cout + (cout if bias else 0)


def test_plain_cnn_count_by_hand():
    widths = [1] + [32] * 4 + [64] * 4 + [128] * 4
    expected = sum(_conv(a, b) for a, b in zip(widths, widths[1:])) + 128 * 10 + 10
    assert _count("plain_cnn", (28, 28, 1)) == expected == 675_242


def test_resnet9_count_by_hand():
    convs = [(3, 64), (64, 128), (128, 128), (128, 128), (128, 256), (256, 512), (512, 512),
             (512, 512)]
    expected = sum(_conv(a, b, bias=False) + 2 * b for a, b in convs) + 512 * 10
    assert _count("resnet9", (32, 32, 3)) == expected == 6_573_120


def _first_layer_grad_norm(activation, seed=0):
    model = models.create("plain_cnn", activation=activation, depth=12)
    x = jax.random.uniform(jax.random.PRNGKey(seed), (16, 28, 28, 1))
    labels = jnp.arange(16) % 10
    params = model.init(jax.random.PRNGKey(seed + 1), x)["params"]

    def loss(p):
        logits = model.apply({"params": p}, x)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

    g = jax.grad(loss)(params)
    return float(jnp.linalg.norm(g["conv1"]["kernel"])), float(jnp.linalg.norm(g["conv12"]["kernel"]))


def test_sigmoid_gradients_vanish_towards_the_input_and_relu_ones_do_not():
    # The lecture's claim, at initialisation: the first layer's gradient relative to the last
    # conv layer's is orders of magnitude smaller with sigmoid (derivative <= 1/4) than with ReLU.
    s_first, s_last = _first_layer_grad_norm("sigmoid")
    r_first, r_last = _first_layer_grad_norm("relu")
    assert s_first / s_last < 1e-2 * (r_first / r_last)


def test_plain_cnn_depth_below_the_stages_is_refused():
    with pytest.raises(ValueError, match="depth 2 must be >= stages 3"):
        _count("plain_cnn", (28, 28, 1), depth=2)
