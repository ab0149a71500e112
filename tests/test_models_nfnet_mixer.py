"""NFNet-F and MLP-Mixer: timm's parameter counts, PyTorch equivalence of converted weights,
scaled weight standardisation against float64 NumPy, and signal propagation through NF blocks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import torch_nfnet_mixer as tm
from cnnjax import models
from cnnjax.nn import NFBlock, ScaledStdConv, StochasticDepth
from cnnjax.nn.nfnet import GELU_GAMMA

# timm's dm_nfnet_f0/f1 and mixer_{s,b,l}16_224, 1000 classes.
COUNTS = {"nfnet_f0": 71_489_284, "nfnet_f1": 132_634_256, "mixer_s16": 18_528_264,
          "mixer_b16": 59_880_472, "mixer_l16": 208_196_168}


def count_params(name: str) -> int:
    spec = models.get_spec(name)
    model = models.create(name)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                               jnp.zeros((1, *spec.input_shape)), train=False))
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes["params"]))


def relative_error(got, want) -> float:
    return float(np.linalg.norm(np.asarray(got) - want) / np.linalg.norm(want))


@pytest.fixture(scope="module")
def torch_nfnet_f0():
    torch.manual_seed(0)
    net = tm.NFNet((1, 2, 6, 3), num_classes=10)
    tm.randomize(net)
    return net.eval()


@pytest.fixture(scope="module")
def torch_mixer_s16():
    torch.manual_seed(1)
    net = tm.MlpMixer(8, 512, 256, 2048, num_classes=10)
    tm.randomize(net)
    return net.eval()


@pytest.mark.parametrize("name,count", COUNTS.items())
def test_parameter_counts(name, count):
    assert count_params(name) == count


def test_nfnet_f0_from_torch_matches_pytorch_logits(torch_nfnet_f0):
    # 72x72: even maps in the stem (asymmetric SAME padding), then 9x9 and 5x5 maps, so the
    # ceil-mode average pooling of the shortcuts and symmetric SAME padding are exercised too.
    x = np.random.default_rng(0).standard_normal((2, 3, 72, 72)).astype(np.float32)
    with torch.no_grad():
        want = torch_nfnet_f0(torch.tensor(x)).numpy()
    variables = models.from_torch("nfnet_f0", torch_nfnet_f0.state_dict(), num_classes=10)
    model = models.create("nfnet_f0", num_classes=10)
    got = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x.transpose(0, 2, 3, 1))
    assert relative_error(got, want) < 1e-4


def test_mixer_s16_from_torch_matches_pytorch_logits(torch_mixer_s16):
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        want = torch_mixer_s16(torch.tensor(x)).numpy()
    variables = models.from_torch("mixer_s16", torch_mixer_s16.state_dict(), num_classes=10)
    got = models.create("mixer_s16", num_classes=10).apply(variables, x.transpose(0, 2, 3, 1),
                                                           train=False)
    assert relative_error(got, want) < 1e-4


def test_from_torch_names_the_first_mismatching_key(torch_nfnet_f0, torch_mixer_s16):
    # Parameters are checked in sorted order: blocks.0.mlp_channels.fc1.bias comes first.
    with pytest.raises(ValueError, match=r"'blocks\.0\.mlp_channels\.fc1\.bias' has shape "
                                         r"\(2048,\).*'mixer_b16' expects \(3072,\)"):
        models.from_torch("mixer_b16", torch_mixer_s16.state_dict(), num_classes=10)
    # F1 has two blocks in the first stage where F0 has one.
    with pytest.raises(ValueError, match=r"lacks key 'stages\.0\.1\."):
        models.from_torch("nfnet_f1", torch_nfnet_f0.state_dict(), num_classes=10)
    sd = dict(torch_nfnet_f0.state_dict())
    sd["final_conv.gain"] = torch.ones(3072, 1, 1, 2)
    with pytest.raises(ValueError, match=r"'final_conv\.gain' has shape \(3072, 1, 1, 2\)"):
        models.from_torch("nfnet_f0", sd, num_classes=10)
    sd = dict(torch_nfnet_f0.state_dict())
    sd["stages.2.5.skip_gain"] = sd.pop("stages.2.5.skipinit_gain")
    with pytest.raises(ValueError, match=r"lacks key 'stages\.2\.5\.skipinit_gain'"):
        models.from_torch("nfnet_f0", sd, num_classes=10)


@pytest.mark.parametrize("size", [7, 8])
def test_scaled_ws_conv_matches_float64_numpy(size):
    rng = np.random.default_rng(size)
    k, stride, groups, cin, cout, eps = 3, 2, 2, 4, 6, 1e-5
    x = rng.standard_normal((2, size, size, cin))
    kernel = rng.standard_normal((k, k, cin // groups, cout)) * 0.3 + 0.1
    gain, bias = rng.uniform(0.5, 1.5, cout), rng.standard_normal(cout)
    conv = ScaledStdConv(cout, k, stride=stride, groups=groups)
    params = {"kernel": kernel, "bias": bias, "gain": gain}
    got = conv.apply({"params": jax.tree_util.tree_map(jnp.float32, params)}, jnp.float32(x))

    # W_hat = gain * (W - mean) / sqrt(Var + eps) / sqrt(fan_in), per output filter.
    fan_in = k * k * cin // groups
    w_hat = np.empty_like(kernel)
    for o in range(cout):
        f = kernel[..., o]
        w_hat[..., o] = gain[o] * (f - f.mean()) / math.sqrt(f.var() + eps) / math.sqrt(fan_in)
    # TensorFlow "SAME": out = ceil(n / s); an odd total padding puts the extra pixel at the end.
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    xp = np.pad(x, ((0, 0), (total // 2, total - total // 2), (total // 2, total - total // 2),
                    (0, 0)))
    per_group_in, per_group_out = cin // groups, cout // groups
    want = np.zeros((2, out, out, cout))
    for n in range(2):
        for i in range(out):
            for j in range(out):
                for o in range(cout):
                    g = o // per_group_out
                    window = xp[n, i * stride:i * stride + k, j * stride:j * stride + k,
                                g * per_group_in:(g + 1) * per_group_in]
                    want[n, i, j, o] = np.sum(window * w_hat[..., o]) + bias[o]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_gelu_gamma_makes_gelu_unit_variance():
    # Var(gelu(z)), z ~ N(0, 1), by 200-point Gauss-Hermite quadrature in float64.
    z, w = np.polynomial.hermite_e.hermegauss(200)
    w = w / w.sum()
    g = np.array([v * 0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in z])
    var = np.sum(w * g * g) - np.sum(w * g) ** 2
    # DeepMind estimated the constant by sampling, hence the loose tolerance.
    assert GELU_GAMMA == pytest.approx(1.0 / math.sqrt(var), rel=1e-3)


def _box_filter_twice_mean(n: int) -> float:
    """Mean of the ones image after two zero-padded 3x3 box filters (normalised by 9): the share
    of variance two 3x3 "SAME" convolutions keep on an n x n map of independent inputs."""
    a = np.ones((n, n))
    for _ in range(2):
        p = np.pad(a, 1)
        a = sum(p[i:i + n, j:j + n] for i in range(3) for j in range(3)) / 9.0
    return float(a.mean())


def test_nf_blocks_add_alpha_squared_to_the_variance():
    # Brock et al.: with beta = 1 / sqrt(Var(x_l)), each block adds alpha^2 to the variance. On a
    # finite map the zero padding of the two 3x3 convolutions keeps a share rho of it (rho -> 1
    # on an unbounded map). alpha is large here so the growth dwarfs the sampling noise.
    alpha, n = 0.5, 32
    rho = _box_filter_twice_mean(n)
    x = jax.random.normal(jax.random.PRNGKey(0), (4, n, n, 256))
    expected = 1.0
    for i in range(3):
        block = NFBlock(256, alpha=alpha, beta=expected ** -0.5, skip_gain_init=1.0)
        y = block.apply(block.init(jax.random.PRNGKey(10 + i), x, train=False), x, train=False)
        growth = (float(jnp.var(y)) - float(jnp.var(x))) / alpha ** 2
        assert growth == pytest.approx(rho, rel=0.05), f"block {i}"
        expected += alpha ** 2 * rho
        x = y
    assert float(jnp.var(x)) == pytest.approx(expected, rel=0.02)


def test_skipinit_zero_makes_a_block_the_identity_at_init():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 256))
    block = NFBlock(256, skip_gain_init=0.0)
    y = block.apply(block.init(jax.random.PRNGKey(1), x, train=False), x, train=False)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x))


def test_stochastic_depth_drops_whole_examples_only_in_training():
    x = jnp.ones((64, 2, 2, 3))
    layer = StochasticDepth(0.5)
    y = np.asarray(layer.apply({}, x, train=True, rngs={"dropout": jax.random.PRNGKey(0)}))
    per_example = y.reshape(64, -1)
    assert set(np.unique(per_example)) == {0.0, 2.0}
    assert np.all(per_example.min(axis=1) == per_example.max(axis=1))  # all or nothing
    np.testing.assert_array_equal(np.asarray(layer.apply({}, x, train=False)), np.asarray(x))


def test_mixer_needs_exactly_its_image_size():
    model = models.create("mixer_s16", num_classes=10)
    with pytest.raises(ValueError, match="exactly 224x224"):
        jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 240, 240, 3))))
    # Another resolution is another model: 32x32 has 4 patches for the token-mixing MLP.
    small = models.create("mixer_s16", num_classes=10, image_size=32)
    x = jnp.zeros((2, 32, 32, 3))
    v = jax.eval_shape(lambda: small.init(jax.random.PRNGKey(0), x))
    assert v["params"]["blocks_0"]["mlp_tokens"]["fc1"]["kernel"].shape == (4, 256)
    assert jax.eval_shape(lambda v_: small.apply(v_, x), v).shape == (2, 10)
