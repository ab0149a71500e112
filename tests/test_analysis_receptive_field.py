"""Receptive fields against hand computation, input-gradient supports, and the published table
of Araujo et al. (Distill 2019)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import models, ops
from cnnjax.analysis.fields import Window, chain
from cnnjax.analysis.receptive_field import network_field, receptive_field, to_markdown
from cnnjax.nn import BottleneckBlock, Conv


class Stack(nn.Module):
    """A single path of ("conv", k, stride, padding, dilation) / ("max" | "avg", k, stride,
    padding) layers; convs have all-ones kernels so input gradients are positive everywhere
    they can reach."""

    layers: tuple

    @nn.compact
    def __call__(self, x, train=False):
        for kind, k, s, p, *d in self.layers:
            if kind == "conv":
                x = Conv(1, k, stride=s, padding=p, dilation=d[0],
                         kernel_init=nn.initializers.ones)(x)
            elif kind == "max":
                x = ops.max_pool(x, k, stride=s, padding=p)
            else:
                x = ops.avg_pool(x, k, stride=s, padding=p)
        return x


def _windows(layers):
    return [Window(k, s, (p, p), d[0] if d else 1) for _, k, s, p, *d in layers]


# (layers, hand-computed (size, jump, padding) after each layer)
CASES = {
    "three 3x3 = 7x7": ([("conv", 3, 1, 1, 1)] * 3, [(3, 1, 1), (5, 1, 2), (7, 1, 3)]),
    "strided": ([("conv", 3, 2, 1, 1), ("conv", 3, 1, 1, 1), ("conv", 3, 2, 0, 1)],
                [(3, 2, 1), (7, 2, 3), (11, 4, 3)]),
    # Yu & Koltun (2016), Fig. 1: 3x3 convolutions dilated 1, 2, 4 see 3x3, 7x7, 15x15.
    "dilated": ([("conv", 3, 1, 1, 1), ("conv", 3, 1, 2, 2), ("conv", 3, 1, 4, 4)],
                [(3, 1, 1), (7, 1, 3), (15, 1, 7)]),
    "pools": ([("conv", 5, 1, 0, 1), ("max", 2, 2, 0), ("conv", 5, 1, 0, 1), ("avg", 3, 3, 1)],
              [(5, 1, 0), (6, 2, 0), (14, 2, 0), (18, 6, 2)]),
    # ResNet's stem: 7x7/2 conv, 3x3/2 max-pool.
    "resnet stem": ([("conv", 7, 2, 3, 1), ("max", 3, 2, 1)], [(7, 2, 3), (11, 4, 5)]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hand_computed_stacks(case):
    layers, expected = CASES[case]
    fields = receptive_field(Stack(tuple(layers)), (48, 48, 1))
    got = [(f.size, f.jump, f.padding) for f in fields[1:]]
    assert got == [((r, r), (j, j), (p, p)) for r, j, p in expected]
    assert [chain(_windows(layers)[:i + 1]) for i in range(len(layers))] == expected


@pytest.mark.parametrize("case", ["three 3x3 = 7x7", "strided", "dilated"])
def test_field_is_the_support_of_the_input_gradient(case):
    layers, _ = CASES[case]
    model = Stack(tuple(layers))
    shape = (40, 40, 1)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape)))
    last = receptive_field(model, shape)[-1]
    out = model.apply(variables, jnp.ones((1, *shape)))
    for i in (0, 1, out.shape[1] // 2):
        grad = jax.grad(lambda x: model.apply(variables, x)[0, i, i, 0])(jnp.ones((1, *shape)))
        rows = np.nonzero(np.asarray(grad)[0, :, :, 0].any(axis=1))[0]
        lo = -last.padding[0] + i * last.jump[0]
        # The field, clipped to the image (padding has no pixels to differentiate).
        assert rows.min() == max(lo, 0) and rows.max() == min(lo + last.size[0] - 1, shape[0] - 1)


def test_alexnet_and_vgg16_match_the_distill_table():
    # Araujo et al.: alexnet_v2 195 / 32 / 64 and vgg_16 212 / 32 / 90 (field, stride, padding).
    alex = network_field(receptive_field(models.create("alexnet"), (227, 227, 3)))
    vgg = network_field(receptive_field(models.create("vgg16"), (224, 224, 3)))
    assert (alex.name, alex.size, alex.jump, alex.padding) == ("max_pool3", (195, 195), (32, 32), (64, 64))
    assert (vgg.name, vgg.size, vgg.jump, vgg.padding) == ("max_pool5", (212, 212), (32, 32), (90, 90))


class SlimResNet50(nn.Module):
    """TF-Slim's resnet_v1_50 layout (the article's resnet_v1_50): the stride-2 unit is the LAST
    of stages 1-3, the 3x3/2 max-pool is "SAME" (pads (0, 1) on 112x112)."""

    @nn.compact
    def __call__(self, x, train=False):
        x = Conv(64, 7, stride=2, padding=3, use_bias=False)(x)
        x = ops.max_pool(x, 3, stride=2, padding=((0, 1), (0, 1)))
        for stage, (units, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
            for unit in range(units):
                stride = 2 if unit == units - 1 and stage < 3 else 1
                x = BottleneckBlock(4 * width, stride=stride)(x, train)
        return x


def test_resnet50_layouts():
    # The article's resnet_v1_50: 483 / 32 / 239.
    slim = network_field(receptive_field(SlimResNet50(), (224, 224, 3)))
    assert (slim.size, slim.jump, slim.padding) == ((483, 483), (32, 32), (239, 239))
    # torchvision's layout, by hand: 7 (conv1) + 4 (pool) + 3 x 8 (layer1) + 8 + 3 x 16
    # (layer2) + 16 + 5 x 32 (layer3) + 32 + 2 x 64 (layer4) = 427; padding 3 + 2 + 4 x 3 (stage
    # 1 3x3s at jump 4) + 4 + 8 x 3 + 8 + 16 x 5 + 16 + 32 x 2 = 213.
    tv = receptive_field(models.create("resnet50"), (224, 224, 3))
    last = network_field(tv)
    assert (last.name, last.size, last.jump, last.padding) == ("layer4_2/bn3", (427, 427), (32, 32), (213, 213))
    after = [f for f in tv if f.size is None]
    assert [f.name for f in after] == ["global_avg_pool1", "fc"] and after[0].note == "global"


def test_markdown_and_bad_input():
    fields = receptive_field(Stack((("conv", 3, 1, 1, 1),) * 3), (16, 16, 1))
    text = to_markdown(fields)
    assert "| Conv_2 | conv | 16x16x1 | 3/1 pad 1,1 | 7 | 1 | 3 | 0 |" in text
    with pytest.raises(ValueError, match="image input shape"):
        receptive_field(models.create("simple_cnn"), (8, 8))
    with pytest.raises(ValueError, match="kernel, stride and dilation"):
        Window(0)
