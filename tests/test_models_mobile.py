"""MobileNet v1/v2/v3 and EfficientNet-B0..B7: the published parameter counts, PyTorch
equivalence of converted torchvision weights, stochastic depth and dropout only in training."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import torch_mobile as tm
from cnnjax import models
from cnnjax.nn import DepthwiseSeparable, MBConv
from torch_resnet import randomize_batch_norm

# torchvision's num_params (v2, v3, EfficientNet) and Howard et al. 2017 Table 1 (v1).
COUNTS = {"mobilenet_v1": 4_231_976, "mobilenet_v2": 3_504_872,
          "mobilenet_v3_large": 5_483_032, "mobilenet_v3_small": 2_542_856,
          "efficientnet_b0": 5_288_548, "efficientnet_b1": 7_794_184,
          "efficientnet_b2": 9_109_994, "efficientnet_b3": 12_233_232,
          "efficientnet_b4": 19_341_616, "efficientnet_b5": 30_389_784,
          "efficientnet_b6": 43_040_704, "efficientnet_b7": 66_347_960}
# Tan & Le 2019 / torchvision: each variant's input resolution and classifier dropout.
EFFICIENTNET_INPUTS = {0: (224, 0.2), 1: (240, 0.2), 2: (260, 0.3), 3: (300, 0.3),
                       4: (380, 0.4), 5: (456, 0.4), 6: (528, 0.5), 7: (600, 0.5)}


def _numpy_variables(module, x, seed=0):
    """Variables for `module` without compiling its initialiser (slow on CPU): kernels He-normal
    (fan-in) from NumPy, biases 0, batch norm scale 1, running mean 0 and variance 1."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), x, train=False))

    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return rng.standard_normal(leaf.shape).astype(np.float32) * np.sqrt(2 / fan_in)
        return np.full(leaf.shape, 1.0 if name in ("scale", "var") else 0.0, np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def _param_count(name):
    spec = models.get_spec(name)
    model = models.create(name)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                                jnp.zeros((1, *spec.input_shape)), train=False))
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes["params"]))


@pytest.mark.parametrize("name,count", COUNTS.items())
def test_parameter_counts(name, count):
    assert _param_count(name) == count


@pytest.mark.parametrize("variant,expected", EFFICIENTNET_INPUTS.items())
def test_efficientnet_default_resolution_and_dropout(variant, expected):
    resolution, dropout = expected
    assert models.get_spec(f"efficientnet_b{variant}").input_shape == (resolution, resolution, 3)
    assert models.create(f"efficientnet_b{variant}").dropout_rate == dropout


@pytest.mark.parametrize("name,build", [
    ("mobilenet_v2", lambda: tm.MobileNetV2(num_classes=10)),
    ("mobilenet_v3_large", lambda: tm.MobileNetV3("large", num_classes=10)),
    ("mobilenet_v3_small", lambda: tm.MobileNetV3("small", num_classes=10)),
    ("efficientnet_b0", lambda: tm.EfficientNetB0(num_classes=10)),
])
def test_from_torch_matches_pytorch_logits(name, build):
    torch.manual_seed(0)
    net = build()
    tm.he_fan_out_(net)
    randomize_batch_norm(net)
    net.eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.tensor(x)).numpy()
    variables = models.from_torch(name, net.state_dict(), num_classes=10)
    model = models.create(name, num_classes=10)
    got = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x.transpose(0, 2, 3, 1))
    assert np.linalg.norm(np.asarray(got) - want) / np.linalg.norm(want) < 1e-4


def test_from_torch_names_the_first_mismatch():
    small = tm.MobileNetV3("small", num_classes=10).state_dict()
    # The small net's first block has squeeze-excitation at block.1, where the large net's has
    # the batch norm of its projection.
    with pytest.raises(ValueError, match=r"lacks key 'features\.1\.block\.1\.1\.running_mean'"):
        models.from_torch("mobilenet_v3_large", small, num_classes=10)
    sd = tm.MobileNetV2(num_classes=10).state_dict()
    sd["features.2.conv.1.0.weight"] = torch.zeros(96, 1, 5, 5)
    with pytest.raises(ValueError, match=r"features\.2\.conv\.1\.0\.weight.*\(5, 5, 1, 96\)"
                                         r".*\(3, 3, 1, 96\)"):
        models.from_torch("mobilenet_v2", sd, num_classes=10)
    del sd["classifier.1.bias"]
    sd["features.2.conv.1.0.weight"] = torch.zeros(96, 1, 3, 3)
    with pytest.raises(ValueError, match=r"lacks key 'classifier\.1\.bias'"):
        models.from_torch("mobilenet_v2", sd, num_classes=10)


def test_depthwise_separable_block_matches_pytorch():
    # Howard et al. Fig. 3 right, in torch: 3x3 depthwise, BN, ReLU, 1x1, BN, ReLU.
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, 2, 1, groups=8, bias=False),
                              torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 16, 1, bias=False), torch.nn.BatchNorm2d(16),
                              torch.nn.ReLU())
    randomize_batch_norm(ref)
    ref.eval()
    t = {k: v.numpy() for k, v in ref.state_dict().items()}

    def bn(i):
        return ({"scale": t[f"{i}.weight"], "bias": t[f"{i}.bias"]},
                {"mean": t[f"{i}.running_mean"], "var": t[f"{i}.running_var"]})

    (p1, s1), (p4, s4) = bn(1), bn(4)
    variables = {"params": {"depthwise_0": {"kernel": t["0.weight"].transpose(2, 3, 1, 0)},
                            "depthwise_1": p1,
                            "pointwise_0": {"kernel": t["3.weight"].transpose(2, 3, 1, 0)},
                            "pointwise_1": p4},
                 "batch_stats": {"depthwise_1": s1, "pointwise_1": s4}}
    x = np.random.default_rng(1).standard_normal((2, 8, 9, 9)).astype(np.float32)
    with torch.no_grad():
        want = ref(torch.tensor(x)).numpy().transpose(0, 2, 3, 1)
    got = DepthwiseSeparable(16, stride=2).apply(variables, x.transpose(0, 2, 3, 1), train=False)
    assert got.shape == (2, 5, 5, 16)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_stochastic_depth_drops_whole_branches_only_in_training():
    rate = 0.5
    x = jax.random.normal(jax.random.PRNGKey(0), (32, 6, 6, 16))
    v = _numpy_variables(MBConv(16, 3, 1, 6), x)

    @functools.partial(jax.jit, static_argnums=(0, 1))
    def run(drop_path_rate, train):
        block = MBConv(16, 3, 1, 6, drop_path_rate=drop_path_rate)
        if not train:
            return block.apply(v, x, train=False)
        return block.apply(v, x, train=True, rngs={"dropout": jax.random.PRNGKey(2)},
                           mutable=["batch_stats"])[0]

    # Batch statistics do not depend on stochastic depth (it acts after the last batch norm), so
    # the branch is the same with and without it.
    full, out = np.asarray(run(0.0, True)), np.asarray(run(rate, True))
    x = np.asarray(x)
    scaled = x + (full - x) / (1 - rate)
    dropped = np.all(np.isclose(out, x, atol=1e-6), axis=(1, 2, 3))
    kept = np.all(np.isclose(out, scaled, rtol=1e-5, atol=1e-5), axis=(1, 2, 3))
    assert np.all(dropped ^ kept)  # every example: whole branch dropped, or kept and rescaled
    assert 0 < dropped.sum() < len(x)
    # Evaluation is deterministic and keeps every branch unscaled.
    np.testing.assert_array_equal(run(rate, False), run(0.0, False))


def test_efficientnet_dropout_and_stochastic_depth_only_in_training():
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 32, 32, 3))
    # B0's modules at half depth (10 blocks, 3 of them residual) compile in half the time.
    model = models.create("efficientnet_b0", num_classes=10, depth=0.5)
    v = _numpy_variables(model, x)

    @functools.partial(jax.jit, static_argnums=1)
    def run(key, train):
        out = model.apply(v, x, train=train, rngs={"dropout": key},
                          mutable=["batch_stats"] if train else False)
        return out[0] if train else out

    key_0, key_1 = jax.random.PRNGKey(0), jax.random.PRNGKey(1)
    np.testing.assert_array_equal(run(key_0, False), run(key_1, False))  # eval ignores the RNG
    assert not np.allclose(run(key_0, True), run(key_1, True))  # training draws from it
