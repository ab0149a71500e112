"""The layer table against the lectures' VGG-16 table, published parameter counts, and XLA's
own cost analysis."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import pytest

from cnnjax import kernels, models
from cnnjax.analysis.summary import summary

# The lectures' VGG-16 table (configuration D at 224x224x3): (kind, output, weights), written
# as the lecture writes them. Its weights omit the biases.
LECTURE_VGG16 = [
    ("input", (224, 224, 3), 0),
    ("conv", (224, 224, 64), (3 * 3 * 3) * 64),
    ("conv", (224, 224, 64), (3 * 3 * 64) * 64),
    ("max_pool", (112, 112, 64), 0),
    ("conv", (112, 112, 128), (3 * 3 * 64) * 128),
    ("conv", (112, 112, 128), (3 * 3 * 128) * 128),
    ("max_pool", (56, 56, 128), 0),
    ("conv", (56, 56, 256), (3 * 3 * 128) * 256),
    ("conv", (56, 56, 256), (3 * 3 * 256) * 256),
    ("conv", (56, 56, 256), (3 * 3 * 256) * 256),
    ("max_pool", (28, 28, 256), 0),
    ("conv", (28, 28, 512), (3 * 3 * 256) * 512),
    ("conv", (28, 28, 512), (3 * 3 * 512) * 512),
    ("conv", (28, 28, 512), (3 * 3 * 512) * 512),
    ("max_pool", (14, 14, 512), 0),
    ("conv", (14, 14, 512), (3 * 3 * 512) * 512),
    ("conv", (14, 14, 512), (3 * 3 * 512) * 512),
    ("conv", (14, 14, 512), (3 * 3 * 512) * 512),
    ("max_pool", (7, 7, 512), 0),
    ("dense", (4096,), 7 * 7 * 512 * 4096),
    ("dense", (4096,), 4096 * 4096),
    ("dense", (1000,), 4096 * 1000),
]


@pytest.fixture(scope="module")
def vgg16():
    return summary(models.create("vgg16"), (224, 224, 3))


def test_vgg16_matches_the_lecture_table_row_by_row(vgg16):
    rows = [(l.kind, l.output_shape, l.weights) for l in vgg16.layers]
    assert rows == LECTURE_VGG16
    first, fc6 = vgg16.layers[1], vgg16.layers[-3]
    assert first.activations == 3_211_264 and first.weights == 1_728
    assert first.params == 1_728 + 64  # params include the bias; weights do not
    assert fc6.weights == 102_760_448
    assert first.activation_bytes == 4 * 3_211_264  # float32


def test_vgg16_totals(vgg16):
    # 138,357,544: the lecture's "138M" exactly, torchvision's published count.
    biases = sum(shape[-1] for kind, shape, _ in LECTURE_VGG16 if kind in ("conv", "dense"))
    assert vgg16.total_params == sum(w for *_, w in LECTURE_VGG16) + biases == 138_357_544
    assert sum(l.params for l in vgg16.layers) == vgg16.total_params
    # The lecture's rows sum to 15.2M activations per image (its stated total of 24M does not
    # follow from them).
    assert vgg16.total_activations == sum(math.prod(s) for _, s, _ in LECTURE_VGG16) == 15_237_608
    assert vgg16.total_activation_bytes == 4 * 15_237_608


def test_macs_count_taps_on_real_input(vgg16):
    # conv1_1: per axis, 224 outputs x 3 taps minus the 2 that fall on the zero padding.
    assert vgg16.layers[1].macs == (224 * 3 - 2) ** 2 * 3 * 64
    assert vgg16.layers[-3].macs == 7 * 7 * 512 * 4096
    assert vgg16.layers[3].macs == 0  # pooling does no multiply-adds


def test_markdown_has_every_layer_and_the_totals(vgg16):
    text = vgg16.to_markdown()
    assert text.count("\n| features_") == 13 and "| classifier_0 | dense | 4096 | 102,760,448 |" in text
    assert "138,357,544" in text and "15,237,608" in text


@pytest.mark.parametrize("name,shape", [("simple_cnn", (8, 8, 1)), ("cifar_resnet20", (32, 32, 3))])
def test_flops_match_xla_cost_analysis(name, shape):
    model = models.create(name)
    table = summary(model, shape)
    x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
    with kernels.use("xla"):  # XLA's cost analysis counts nothing inside oneDNN's custom calls
        lowered = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x)
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    # XLA also counts the elementwise work (bias, ReLU, batch norm, pooling) that MACs leave out.
    assert table.total_flops <= cost["flops"]
    assert table.total_flops == pytest.approx(cost["flops"], rel=0.03)


@pytest.mark.parametrize("name", ["alexnet", "resnet50", "googlenet", "vgg16_bn"])
def test_every_parameter_belongs_to_a_row(name):
    spec = models.get_spec(name)
    table = summary(models.create(name), spec.input_shape)
    assert sum(l.params for l in table.layers) == table.total_params
    assert sum(l.state for l in table.layers) == table.total_state


def test_batch_norm_rows_hold_their_statistics():
    table = summary(models.create("cifar_resnet20"), (32, 32, 3))
    bn = table.layer("bn1")
    assert (bn.kind, bn.params, bn.state, bn.output_shape) == ("norm", 2 * 16, 2 * 16, (32, 32, 16))
    with pytest.raises(ValueError, match="no layer 'nope'"):
        table.layer("nope")
