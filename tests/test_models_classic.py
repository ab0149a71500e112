"""The classic models (LeNet-5, AlexNet, VGG, GoogLeNet, U-Net, TextCNN, MLP): published parameter
counts, converted torch weights giving torch's logits, and train/eval behaviour.

Output shapes, minimum input sizes, jit(grad) and bfloat16 are checked for every model in
test_models_registry.py. References: tests/torch_classic.py (PyTorch) and float64 NumPy below.
"""

import copy
import re
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import torch_classic as tc
from cnnjax import models
from cnnjax.models.lenet import scaled_tanh
from torch_resnet import randomize_batch_norm

COUNTS = [  # (name, overrides, published count for the registry's default input and classes)
    ("lenet5", {}, 61_706),
    ("alexnet", {}, 60_965_224),
    ("alexnet_tv", {}, 61_100_840),
    ("vgg11", {}, 132_863_336),
    ("vgg13", {}, 133_047_848),
    ("vgg16", {}, 138_357_544),
    ("vgg19", {}, 143_667_240),
    ("vgg11_bn", {}, 132_868_840),
    ("vgg16_bn", {}, 138_365_992),
    ("vgg19_bn", {}, 143_678_248),
    ("googlenet", {}, 6_624_904),
    ("googlenet", {"aux_logits": True}, 13_004_888),
]
CLASSES = 10
KEY = jax.random.PRNGKey(0)  # the dropout key where the test does not vary it


def count_params(name: str, input_shape: tuple[int, ...] | None = None, **overrides) -> int:
    """Scalars in `params` (running statistics not counted) for the registry's input, or
    `input_shape`; shapes only, via jax.eval_shape. Token-id models get integer inputs."""
    spec = models.get_spec(name)
    model = models.create(name, **overrides)
    x = jax.ShapeDtypeStruct((1, *(input_shape or spec.input_shape)), jnp.dtype(spec.input_dtype))
    shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
    return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(shapes["params"]))


def _jit_apply(model, train: bool, mutable: bool = False):
    """model.apply under one jit, f(variables, x, dropout_key): compiling op by op (eager
    apply) costs GoogLeNet seconds per call shape on CPU. With `mutable`, f returns
    (output, updated batch_stats)."""
    def apply(variables, x, key):
        return model.apply(variables, x, train=train, rngs={"dropout": key},
                           mutable=["batch_stats"] if mutable else False)
    return jax.jit(apply)


def _rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def _images(n: int, size: int, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    """(n, 3, size, size) float32 NCHW for torch; `.transpose(0, 2, 3, 1)` gives cnnjax's NHWC."""
    rng = np.random.default_rng(seed)
    return (scale * rng.standard_normal((n, 3, size, size))).astype(np.float32)


def _nhwc(x: np.ndarray) -> jax.Array:
    return jnp.asarray(x.transpose(0, 2, 3, 1))


def _torch_eval(net: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    net.eval()
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


def _random_variables(model, x, seed: int = 0) -> dict:
    """Variables of `model` for input `x`, drawn by NumPy: kernels N(0, 1 / fan_in) (fan_in = all
    axes but the last), vectors N(0, 0.1^2). Tests that need some parameters thus skip compiling
    the initialisers, which costs seconds per shape on this CPU."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))

    def draw(s):
        std = 0.1 if len(s.shape) < 2 else 1.0 / np.sqrt(np.prod(s.shape[:-1]))
        return jnp.asarray(std * rng.standard_normal(s.shape), s.dtype)

    return jax.tree_util.tree_map(draw, shapes)


def _hand_converted(net: torch.nn.Module) -> dict:
    """{'params': ...} from a torch model whose modules carry cnnjax's names (`down1.convs.conv1`
    -> params["down1"]["convs"]["conv1"]), with the layouts written out here: Conv2d (O, I, kh, kw)
    -> (kh, kw, I, O), ConvTranspose2d (I, O, kh, kw) -> (kh, kw, I, O), Conv1d (O, I, k) ->
    (k, I, O), Linear (out, in) -> (in, out), Embedding as is."""
    axes = {torch.nn.Conv2d: (2, 3, 1, 0), torch.nn.ConvTranspose2d: (2, 3, 0, 1),
            torch.nn.Conv1d: (2, 1, 0), torch.nn.Linear: (1, 0)}
    params = {}
    for path, module in net.named_modules():
        *parents, leaf = path.split(".")
        node = params
        for name in parents:
            node = node.setdefault(name, {})
        if type(module) is torch.nn.Embedding:
            node[leaf] = jnp.asarray(module.weight.detach().numpy())
        elif type(module) in axes:
            kernel = module.weight.detach().numpy().transpose(axes[type(module)])
            node[leaf] = {"kernel": jnp.asarray(kernel),
                          "bias": jnp.asarray(module.bias.detach().numpy())}
    return {"params": params}


# ---------------------------------------------------------------- parameter counts

@pytest.mark.parametrize("name,overrides,count", COUNTS,
                         ids=[f"{n}{'_aux' if o else ''}" for n, o, _ in COUNTS])
def test_parameter_counts(name, overrides, count):
    assert count_params(name, **overrides) == count


def _double_conv(cin: int, cout: int) -> int:
    return 9 * cin * cout + cout + 9 * cout * cout + cout


def test_unet_count_is_the_docstrings_and_follows_from_the_widths():
    # Ronneberger et al. Fig. 1 widths, 1 input channel, 2 classes: contracting double convs,
    # then per up step a 2x2 up-convolution and a double conv on [skip, up] (2 w channels).
    w, cin, classes = (64, 128, 256, 512, 1024), 1, 2
    down = _double_conv(cin, w[0]) + sum(_double_conv(w[i], w[i + 1]) for i in range(4))
    up = sum(4 * w[i + 1] * w[i] + w[i] + _double_conv(2 * w[i], w[i]) for i in range(4))
    expected = down + up + w[0] * classes + classes
    assert expected == 31_030_658  # the figure in cnnjax/models/unet.py's docstring
    assert count_params("unet", num_classes=classes) == expected
    # "each further input channel adds 576" = 9 x 64 weights of the first convolution.
    assert count_params("unet", (32, 32, 3), num_classes=classes) == expected + 2 * 576


def test_textcnn_count_is_the_docstrings_and_follows_from_kims_settings():
    vocab, k, widths, maps, classes = 18_765, 300, (3, 4, 5), 100, 2
    convs = sum((h * k + 1) * maps for h in widths)
    expected = vocab * k + convs + (maps * len(widths) + 1) * classes
    assert expected == 5_990_402  # the figure in cnnjax/models/textcnn.py's docstring
    assert count_params("textcnn", num_classes=classes) == expected


@pytest.mark.parametrize("image,hidden,classes", [((28, 28, 1), None, 10),
                                                  ((32, 32, 3), (300, 100, 50), 7)])
def test_mlp_count_is_the_sum_of_fan_in_plus_one_times_width(image, hidden, classes):
    overrides = {} if hidden is None else {"hidden": hidden}
    widths = (*(hidden or (256, 256)), classes)  # the default hidden layers are 256, 256
    fan_ins = (int(np.prod(image)), *widths[:-1])
    got = count_params("mlp", image, num_classes=classes, **overrides)
    assert got == sum((f + 1) * w for f, w in zip(fan_ins, widths))
    if hidden is None:
        assert got == 269_322  # the docstring's figure for the default


# ---------------------------------------------------------------- torchvision weights

@pytest.fixture(scope="module")
def alexnet_tv():
    """(torch AlexNet with 10 classes, its converted variables)."""
    torch.manual_seed(0)
    net = tc.AlexNetTV(num_classes=CLASSES).eval()
    return net, models.from_torch("alexnet_tv", net.state_dict(), num_classes=CLASSES)


@pytest.fixture(scope="module")
def googlenet_aux():
    """A torch GoogLeNet with aux heads and random BN statistics (its dropout 0, so that its
    training outputs are deterministic), its converted variables, an input (4, 96, 96, 3) and
    cnnjax functions f(variables, x, key) -> (output, batch_stats), each compiled once for all
    the tests: `evaluate` and `train` (the default dropout rates) and `train_no_dropout`.

    96x96: the ceil-mode pools give 24 and 12 where floor would give 23 and 11, and the aux heads
    average 6x6 maps into overlapping 4x4 bins.
    """
    torch.manual_seed(0)
    net = tc.GoogLeNet(num_classes=CLASSES, aux_logits=True, dropout=0.0, dropout_aux=0.0)
    randomize_batch_norm(net)
    net.eval()
    model = models.create("googlenet", num_classes=CLASSES, aux_logits=True)
    no_dropout = models.create("googlenet", num_classes=CLASSES, aux_logits=True,
                               dropout_rate=0.0, aux_dropout_rate=0.0)
    return SimpleNamespace(
        net=net, x=_images(4, 96),
        variables=models.from_torch("googlenet", net.state_dict(), num_classes=CLASSES,
                                    aux_logits=True),
        evaluate=_jit_apply(model, False, mutable=True),
        train=_jit_apply(model, True, mutable=True),
        train_no_dropout=_jit_apply(no_dropout, True, mutable=True))


@pytest.mark.parametrize("size", [63, 256])  # 256: conv5's 7x7 maps average-pool to 6x6
def test_alexnet_tv_from_torch_matches_torch(alexnet_tv, size):
    net, variables = alexnet_tv
    x = _images(2, size)
    model = models.create("alexnet_tv", num_classes=CLASSES)
    got = _jit_apply(model, False)(variables, _nhwc(x), KEY)
    assert _rel_err(got, _torch_eval(net, x)) < 1e-4


def _check_vgg(depth: int, batch_norm: bool, size: int) -> None:
    torch.manual_seed(0)
    net = tc.VGG(depth, batch_norm, num_classes=CLASSES)
    randomize_batch_norm(net)
    x = _images(1, size)
    want = _torch_eval(net, x)
    name = f"vgg{depth}{'_bn' if batch_norm else ''}"
    variables = models.from_torch(name, net.state_dict(), num_classes=CLASSES)
    del net
    got = _jit_apply(models.create(name, num_classes=CLASSES), False)(variables, _nhwc(x), KEY)
    assert _rel_err(got, want) < 1e-4


@pytest.mark.parametrize("batch_norm", [False, True], ids=["vgg11", "vgg11_bn"])
def test_vgg11_from_torch_matches_torch(batch_norm):
    _check_vgg(11, batch_norm, 32)


@pytest.mark.slow
@pytest.mark.parametrize("depth,batch_norm,size", [(16, False, 224), (19, True, 256)],
                         ids=["vgg16_224", "vgg19_bn_256"])
def test_deep_vgg_from_torch_matches_torch_at_full_size(depth, batch_norm, size):
    _check_vgg(depth, batch_norm, size)


def test_googlenet_from_torch_matches_torch_in_eval_and_training(googlenet_aux):
    g = googlenet_aux
    got, _ = g.evaluate(g.variables, _nhwc(g.x), KEY)
    assert _rel_err(got, _torch_eval(g.net, g.x)) < 1e-4

    # Training mode runs the aux heads and normalises with batch statistics, as torch does.
    train_net = copy.deepcopy(g.net).train()
    with torch.no_grad():
        want = [t.numpy() for t in train_net(torch.from_numpy(g.x))]
    got, updates = g.train_no_dropout(g.variables, _nhwc(g.x), KEY)
    assert len(got) == 3
    for a, b in zip(got, want):
        assert _rel_err(a, b) < 1e-4
    # Both update running means with momentum 0.1 (Flax's 0.9). (Running variances are not
    # compared: torch accumulates the unbiased batch variance, cnnjax the biased one.)
    torch_stats = train_net.state_dict()
    flat = jax.tree_util.tree_flatten_with_path(updates["batch_stats"])[0]
    means = [(path, v) for path, v in flat if path[-1].key == "mean"]
    assert len(means) == sum(k.endswith("running_mean") for k in torch_stats)
    for path, value in means:
        key = re.sub(r"_(\d)", r".\1", ".".join(k.key for k in path[:-1])) + ".running_mean"
        np.testing.assert_allclose(value, torch_stats[key].numpy(), rtol=1e-4, atol=1e-6,
                                   err_msg=key)


def test_from_torch_names_the_first_mismatching_key(alexnet_tv, googlenet_aux):
    alex_sd, goog_sd = alexnet_tv[0].state_dict(), googlenet_aux.net.state_dict()
    with pytest.raises(ValueError, match=r"lacks key 'conv1\.bn\.running_mean'"):
        models.from_torch("googlenet", alex_sd, num_classes=CLASSES)
    with pytest.raises(ValueError, match=r"lacks key 'classifier\.0\.bias'"):
        models.from_torch("vgg11", alex_sd, num_classes=CLASSES)  # alexnet's classifier.0: Dropout
    with pytest.raises(ValueError, match=r"'classifier\.6\.bias' has shape \(10,\).*"
                                         r"expects \(1000,\)"):
        models.from_torch("alexnet_tv", alex_sd, num_classes=1000)
    # Aux-head weights without aux heads in the model: unused keys, named.
    with pytest.raises(ValueError, match=r"keys model 'googlenet' does not use, first "
                                         r"'aux1\.conv\.bn\.bias'"):
        models.from_torch("googlenet", goog_sd, num_classes=CLASSES)


# ---------------------------------------------------------------- training vs evaluation

def test_batch_norm_updates_statistics_only_in_training_and_eval_uses_them(googlenet_aux):
    g = googlenet_aux
    x = 2.0 * g.x + 0.5  # conv1's batch statistics then differ clearly from the running ones
    logits, updates = g.evaluate(g.variables, _nhwc(x), KEY)
    for a, b in zip(jax.tree_util.tree_leaves(updates),
                    jax.tree_util.tree_leaves(g.variables["batch_stats"])):
        np.testing.assert_array_equal(a, b)
    # Eval normalises with the running statistics: an example's logits ignore the rest of the batch.
    others = np.concatenate([x[:1], _images(3, 96, seed=7)])
    mixed, _ = g.evaluate(g.variables, _nhwc(others), KEY)
    np.testing.assert_allclose(mixed[:1], logits[:1], rtol=1e-5, atol=1e-5)

    (train_logits, *_), updates = g.train(g.variables, _nhwc(x), KEY)
    assert not np.allclose(train_logits, logits, rtol=1e-2)
    with torch.no_grad():
        conv1 = g.net.conv1.conv(torch.from_numpy(x)).numpy().astype(np.float64)
    old, new = g.variables["batch_stats"]["conv1"]["bn"], updates["batch_stats"]["conv1"]["bn"]
    for stat, batch in (("mean", conv1.mean(axis=(0, 2, 3))), ("var", conv1.var(axis=(0, 2, 3)))):
        np.testing.assert_allclose(new[stat], 0.9 * np.asarray(old[stat]) + 0.1 * batch,
                                   rtol=1e-4, atol=1e-6, err_msg=stat)


def _check_dropout_only_in_training(evaluate, train) -> None:
    """`evaluate(key)`, `train(key)` -> logits. Eval ignores the key; training draws its dropout
    masks from it."""
    key0, key1 = jax.random.PRNGKey(0), jax.random.PRNGKey(1)
    np.testing.assert_array_equal(evaluate(key0), evaluate(key1))
    np.testing.assert_array_equal(train(key0), train(key0))
    assert not np.allclose(train(key0), train(key1))


def test_dropout_is_active_only_in_training_alexnet_tv(alexnet_tv):
    model, variables = models.create("alexnet_tv", num_classes=CLASSES), alexnet_tv[1]
    x = _nhwc(_images(2, 63))
    evaluate, train = _jit_apply(model, False), _jit_apply(model, True)
    _check_dropout_only_in_training(lambda key: evaluate(variables, x, key),
                                    lambda key: train(variables, x, key))


def test_dropout_is_active_only_in_training_googlenet(googlenet_aux):
    g = googlenet_aux
    _check_dropout_only_in_training(lambda key: g.evaluate(g.variables, _nhwc(g.x), key)[0],
                                    lambda key: g.train(g.variables, _nhwc(g.x), key)[0][0])


@pytest.mark.parametrize("name,overrides,x", [
    ("textcnn", {"vocab_size": 50, "embed_dim": 16}, np.arange(24, dtype=np.int32).reshape(2, 12)),
    ("mlp", {"dropout_rate": 0.5}, np.ones((2, 28, 28, 1), np.float32)),
])
def test_dropout_is_active_only_in_training_small_models(name, overrides, x):
    model = models.create(name, num_classes=CLASSES, **overrides)
    variables = _random_variables(model, x)
    evaluate, train = _jit_apply(model, False), _jit_apply(model, True)
    _check_dropout_only_in_training(lambda key: evaluate(variables, x, key),
                                    lambda key: train(variables, x, key))


def test_googlenet_returns_aux_logits_only_in_training(googlenet_aux):
    g = googlenet_aux
    train_out, _ = g.train(g.variables, _nhwc(g.x), KEY)
    assert isinstance(train_out, tuple) and len(train_out) == 3
    assert all(o.shape == (4, CLASSES) for o in train_out)
    eval_out, _ = g.evaluate(g.variables, _nhwc(g.x), KEY)
    assert isinstance(eval_out, jax.Array) and eval_out.shape == (4, CLASSES)


# ---------------------------------------------------------------- U-Net

def test_unet_parameters_made_at_176_apply_at_256():
    # Narrow widths keep the compute small; the parameter shapes depend on no input size.
    # (A gradient step at 176 adds nothing here: test_models_registry runs jit(grad) per model.)
    model = models.create("unet", num_classes=3, widths=(4, 8, 16, 32, 64))
    variables = _random_variables(model, jnp.zeros((1, 176, 176, 1)))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 256, 256, 1)), jnp.float32)
    out = jax.jit(model.apply)(variables, x)
    assert out.shape == (1, 256, 256, 3) and bool(jnp.all(jnp.isfinite(out)))

    # The paper's widths, shapes only: parameters made at 176 serve a 256 input.
    full = models.create("unet", num_classes=2)
    shapes = jax.eval_shape(lambda: full.init(jax.random.PRNGKey(0), jnp.zeros((1, 176, 176, 1))))
    out = jax.eval_shape(lambda v: full.apply(v, jnp.zeros((1, 256, 256, 1))), shapes)
    assert out.shape == (1, 256, 256, 2)
    with pytest.raises(ValueError, match="divisible by 16"):
        jax.eval_shape(lambda v: full.apply(v, jnp.zeros((1, 100, 100, 1))), shapes)


def test_unet_matches_torch():
    # Narrow widths, 48x48 (divisible by 16, not a power of two), 2 input channels.
    widths = (4, 8, 16, 32, 64)
    torch.manual_seed(0)
    net = tc.UNet(2, 3, widths)
    x = np.random.default_rng(0).standard_normal((2, 2, 48, 48)).astype(np.float32)
    model = models.create("unet", num_classes=3, widths=widths)
    got = jax.jit(model.apply)(_hand_converted(net), _nhwc(x))
    assert _rel_err(got, _torch_eval(net, x).transpose(0, 2, 3, 1)) < 1e-5


# ---------------------------------------------------------------- TextCNN

def test_textcnn_matches_a_float64_numpy_forward():
    widths, maps, classes = (2, 3, 4), 3, 4
    model = models.create("textcnn", num_classes=classes, vocab_size=13, embed_dim=5,
                          widths=widths, feature_maps=maps)
    tokens = np.random.default_rng(0).integers(0, 13, (3, 7))
    variables = _random_variables(model, jnp.asarray(tokens))
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), variables["params"])
    emb = p["embedding"][tokens]  # (N, L, k)
    features = []
    for h in widths:
        kernel, bias = p[f"conv{h}"]["kernel"], p[f"conv{h}"]["bias"]  # (h, k, maps), (maps,)
        steps = tokens.shape[1] - h + 1  # valid convolution
        conv = np.zeros((tokens.shape[0], steps, maps))
        for t in range(steps):
            for j in range(h):
                conv[:, t] += emb[:, t + j] @ kernel[j]
        features.append(np.maximum(conv + bias, 0).max(axis=1))
    want = np.concatenate(features, axis=1) @ p["fc"]["kernel"] + p["fc"]["bias"]
    got = model.apply(variables, jnp.asarray(tokens), train=False)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_textcnn_matches_kims_model_in_torch():
    torch.manual_seed(0)
    net = tc.TextCNN(vocab_size=200, embed_dim=32, num_classes=3).eval()
    tokens = np.random.default_rng(0).integers(0, 200, (4, 20))
    with torch.no_grad():
        want = net(torch.from_numpy(tokens)).numpy()
    got = models.create("textcnn", num_classes=3, vocab_size=200, embed_dim=32).apply(
        _hand_converted(net), jnp.asarray(tokens), train=False)
    assert _rel_err(got, want) < 1e-5


# ---------------------------------------------------------------- AlexNet (2012 paper)

def test_alexnet_paper_groups_conv2_conv4_conv5():
    model = models.create("alexnet")
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 227, 227, 3))))
    kernels = {k: v["kernel"].shape for k, v in shapes["params"].items() if k.startswith("conv")}
    # Each GPU's half of conv2/4/5 sees only its own half of the input maps (sec. 3.5, Fig. 2).
    assert kernels == {"conv1": (11, 11, 3, 96), "conv2": (5, 5, 48, 256),
                       "conv3": (3, 3, 256, 384), "conv4": (3, 3, 192, 384),
                       "conv5": (3, 3, 192, 256)}


def test_alexnet_paper_matches_torch_with_grouped_convs_and_lrn():
    # torch.nn.LocalResponseNorm computes a / (k + alpha / n * sum a^2) ** beta; the paper (and
    # cnnjax.ops.local_response_norm) uses alpha * sum without dividing by n. So the paper's
    # alpha = 1e-4 over n = 5 maps is torch's alpha = 5 * 1e-4.
    torch.manual_seed(0)
    net = tc.AlexNetPaper(num_classes=CLASSES, lrn_alpha=5 * 1e-4)
    # Inputs scaled so that conv1's responses are large enough for the LRN denominator to differ
    # from k: with unit inputs alpha * sum a^2 << k = 2 and LRN is a mere constant factor.
    x = _images(2, 227, scale=100.0)
    want = _torch_eval(net, x)
    variables = _hand_converted(net)
    got = _jit_apply(models.create("alexnet", num_classes=CLASSES), False)(variables, _nhwc(x), KEY)
    assert _rel_err(got, want) < 1e-4
    # The comparison sees the LRN: torch's default alpha convention misread (alpha = 1e-4) moves
    # the logits by far more than the tolerance.
    net.lrn.alpha = 1e-4
    assert _rel_err(got, _torch_eval(net, x)) > 1e-2


# ---------------------------------------------------------------- LeNet-5

def test_lenet_scaled_tanh_maps_one_to_one():
    a = jnp.asarray([-1.0, 0.0, 1.0, 2.5])
    want = 1.7159 * np.tanh(2.0 * np.asarray(a, np.float64) / 3.0)
    np.testing.assert_allclose(scaled_tanh(a), want, rtol=1e-6)
    # LeCun et al. Appendix A chose A = 1.7159, S = 2/3 so that f(1) = 1 and f(-1) = -1.
    np.testing.assert_allclose(scaled_tanh(jnp.asarray([1.0, -1.0])), [1.0, -1.0], atol=1e-5)


def test_lenet5_matches_torch():
    torch.manual_seed(0)
    net = tc.LeNet5(num_classes=CLASSES)
    x = np.random.default_rng(0).standard_normal((3, 1, 32, 32)).astype(np.float32)
    got = models.create("lenet5").apply(_hand_converted(net), _nhwc(x))
    assert _rel_err(got, _torch_eval(net, x)) < 1e-5
