"""Checks every registered model (every family, whoever wrote it) against the registry's contract:
unknown names, output shapes, minimum input sizes, gradients under jit, mixed precision.

Big models cost nothing here: shapes come from jax.eval_shape and dtypes from jax.make_jaxpr;
only the jit(grad) test computes, at each model's smallest input.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import models
from kernel_checks import matmul_operand_dtypes

ALL = models.list_models()
CLASSES = 7  # not any model's default, so a model that ignores num_classes is caught
# "at least 32x32", "exactly 227x227", "at least 5 tokens": the minimum the error must state.
MIN_SIZE = re.compile(r"\b(at least|exactly) (\d+)(?:x(\d+)| tokens)")
# Where a model runs at any size (every downsampling layer padded), the gradient and bf16 tests
# use this size (capped by the paper's input): the CIFAR size, where every stage of a 32x
# downsampling network still sees one pixel, and compiles fast.
SMALL_NO_MINIMUM = 32


def _spec_input(spec, batch: int, size: int | None = None) -> jax.ShapeDtypeStruct:
    """An abstract input for `spec`: images (batch, size, size, C), token ids (batch, size)."""
    shape = spec.input_shape
    if size is not None:
        shape = (size,) if len(shape) == 1 else (size, size, shape[-1])
    return jax.ShapeDtypeStruct((batch, *shape), jnp.dtype(spec.input_dtype))


def _init_shapes(model, x: jax.ShapeDtypeStruct):
    return jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)


def _outputs(out) -> tuple:
    return out if isinstance(out, tuple) else (out,)


@functools.lru_cache(maxsize=None)
def _size_rule(name: str) -> tuple[str, int] | None:
    """("at least" | "exactly", n) as the model's own error for a 1-pixel (1-token) input states
    it, or None if the model accepts that input."""
    spec = models.get_spec(name)
    try:
        _init_shapes(models.create(name, num_classes=CLASSES), _spec_input(spec, 2, 1))
    except ValueError as e:
        match = MIN_SIZE.search(str(e))
        assert match, f"{name}: the error for a too-small input does not state the minimum: {e}"
        return match.group(1), int(match.group(2))
    return None


def _small_input(name: str) -> jax.ShapeDtypeStruct:
    """The model's stated minimum input, or for a model without one its paper's input capped at
    SMALL_NO_MINIMUM pixels."""
    spec = models.get_spec(name)
    rule = _size_rule(name)
    if rule is not None:
        return _spec_input(spec, 2, rule[1])
    return _spec_input(spec, 2, min(spec.input_shape[0], SMALL_NO_MINIMUM))


@pytest.mark.parametrize("name", ALL)
def test_unknown_name_raises_with_close_matches(name):
    # A typo of a registered name must suggest that name first.
    pattern = rf"unknown model '{re.escape(name)}!'.*did you mean {re.escape(name)}\b"
    with pytest.raises(ValueError, match=pattern):
        models.create(f"{name}!")


def test_list_models_is_sorted_and_holds_every_family():
    assert ALL == sorted(ALL)
    for name in ("lenet5", "alexnet", "alexnet_tv", "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn",
                 "vgg13_bn", "vgg16_bn", "vgg19_bn", "googlenet", "mlp", "unet", "textcnn"):
        assert name in ALL


@pytest.mark.parametrize("name", ALL)
def test_forward_shapes(name):
    spec = models.get_spec(name)
    model = models.create(name, num_classes=CLASSES)
    x = _spec_input(spec, 2)
    variables = _init_shapes(model, x)
    # Dense prediction models (U-Net) give one score vector per pixel, classifiers one per example.
    expected = {(2, CLASSES), (2, *spec.input_shape[:2], CLASSES)}
    out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    assert not isinstance(out, tuple), f"{name} returns auxiliary outputs in evaluation"
    assert out.shape in expected, f"{name}: output {out.shape}"
    train_out, _ = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)},
                                 mutable=["batch_stats"]), variables, x)
    for o in _outputs(train_out):
        assert o.shape == out.shape, f"{name}: training output {o.shape} vs {out.shape}"


def _out_size(n: int, kernel: int, stride: int, padding, ceil_mode: bool = False) -> int:
    """Output length of a convolution or pooling over `n` pixels, the textbook formula:
    floor((n + 2p - k) / s) + 1; with `ceil_mode` PyTorch's ceil((n + 2p - k) / s) + 1, less one
    when the last window would start beyond the input and its left padding; with padding "same"
    TensorFlow's ceil(n / s). 0 or less: an empty output."""
    if padding == "same":
        return -(-n // stride)
    span = n + 2 * padding - kernel
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    return out - 1 if (out - 1) * stride >= n + padding else out


def _final_size(n: int, layers) -> int:
    """The spatial size after `layers` ((kernel, stride, padding[, ceil_mode]) each, in order)
    from an n x n input; 0 as soon as one output is empty."""
    for layer in layers:
        n = _out_size(n, *layer)
        if n < 1:
            return 0
    return n


HALVE = (2, 2, 0)            # 2x2/2 max-pool, no padding
S2_PAD1 = (3, 2, 1)          # 3x3/2 convolution, padding 1
# Per family, derived by hand from the papers' layer lists: the layers that change the spatial
# size ((kernel, stride, padding[, ceil_mode]); size-keeping 3x3/1 pad 1 convolutions, padded
# pools and parallel shortcut branches of the same output size are left out), then either
# ("at least", None): the smallest n with every output non-empty, or ("exactly", m): the
# smallest n whose last map is m x m, the size the first dense layer is built for.
FAMILIES = (
    # 7x7/2 pad 3 stem, 3x3/2 pad 1 pool, 3 stride-2 stages (3x3/2 pad 1; their 1x1/2 projection
    # shortcuts give the same size): every layer padded, so 1 (no minimum).
    (r"resnet(18|34|50|101|152)|plain(18|34)|preact_resnet(18|50)|wide_resnet50_2"
     r"|resnext50_32x4d", [(7, 2, 3), (3, 2, 1), S2_PAD1, S2_PAD1, S2_PAD1], "at least", None),
    # 3x3/1 pad 1 stem, 2 stride-2 stages (option A's subsampling ::2 is 1x1/2): 1.
    (r"cifar_(resnet|plain)\d+", [S2_PAD1, S2_PAD1], "at least", None),
    # 3x3/2 pad 1 stem, depthwise 3x3/2 pad 1 in layers 2, 4, 6 and 12 of Table 1: 1.
    (r"mobilenet_v1", [S2_PAD1] * 5, "at least", None),
    # 3x3/2 pad 1 stem, 4 stages starting with a 3x3/2 pad 1 depthwise (Table 2): 1.
    (r"mobilenet_v2", [S2_PAD1] * 5, "at least", None),
    # 3x3/2 stem; stride-2 depthwise k x k with padding (k - 1) / 2: large 3, 5, 3, 5 (Table 1),
    # small 3, 3, 5, 5 (Table 2): 1.
    (r"mobilenet_v3_large", [S2_PAD1, S2_PAD1, (5, 2, 2), S2_PAD1, (5, 2, 2)], "at least", None),
    (r"mobilenet_v3_small", [S2_PAD1, S2_PAD1, S2_PAD1, (5, 2, 2), (5, 2, 2)], "at least", None),
    # B0's Table 1: 3x3/2 stem, stride-2 MBConv stages with kernels 3, 5, 3, 5, padded; the
    # compound scaling changes widths and depths, not strides: 1.
    (r"efficientnet_b\d", [S2_PAD1, S2_PAD1, (5, 2, 2), S2_PAD1, (5, 2, 2)], "at least", None),
    # SAME-padded 3x3 stem convolutions of strides 2, 1, 1, 2 and stages of strides 1, 2, 2, 2
    # (Brock et al. 2021, sec. 2 and app. C; the shortcuts' 2x2/2 ceil-mode average pools give
    # the same size): 1.
    (r"nfnet_f\d", [(3, 2, "same")] * 5, "at least", None),
    # 3 stages, the last two starting with a 3x3/2 pad 1 convolution: 1.
    (r"plain_cnn", [S2_PAD1, S2_PAD1], "at least", None),
    # The MLP flattens whatever it is given: 1.
    (r"mlp", [], "at least", None),
    # 5 unpadded 2x2/2 max-pools: 32.
    (r"vgg(11|13|16|19)(_bn)?", [HALVE] * 5, "at least", None),
    # 2 unpadded 2x2/2 max-pools: 4.
    (r"simple_cnn", [HALVE] * 2, "at least", None),
    # 3 unpadded 2x2/2 max-pools, after the layer1, layer2 and layer3 convolutions: 8.
    (r"resnet9", [HALVE] * 3, "at least", None),
    # Unpadded 2x2 whitening convolution, 3 blocks with a 2x2/2 max-pool, a final 3x3/3 pool: 25.
    (r"airbench94", [(2, 1, 0), HALVE, HALVE, HALVE, (3, 3, 0)], "at least", None),
    # torchvision: 11x11/4 pad 2, three 3x3/2 max-pools (5x5 pad 2, 3x3 pad 1 keep the size;
    # the adaptive 6x6 pool takes any size): 63.
    (r"alexnet_tv", [(11, 4, 2), (3, 2, 0), (3, 2, 0), (3, 2, 0)], "at least", None),
    # 7x7/2 pad 3, then ceil-mode max-pools 3x3/2, 3x3/2 (stem), 3x3/2 (after 3b), 2x2/2 (after
    # 4e); the inception branches' 3x3/1 pad 1 pools keep the size: 15.
    (r"googlenet", [(7, 2, 3), (3, 2, 0, True), (3, 2, 0, True), (3, 2, 0, True), (2, 2, 0, True)],
     "at least", None),
    # 4 unpadded 2x2/2 max-pools (the padded convolutions keep the size): 16.
    (r"unet", [HALVE] * 4, "at least", None),
    # Unpadded 1-D convolutions of widths 3, 4, 5 in parallel: the widest needs 5 tokens.
    (r"textcnn", [(5, 1, 0)], "at least", None),
    # 5x5 unpadded convolution, 2x2/2 pool, 5x5, 2x2/2: F5 reads 5x5 maps (LeCun et al. 1998): 32.
    (r"lenet5", [(5, 1, 0), HALVE, (5, 1, 0), HALVE], "exactly", 5),
    # 11x11/4 unpadded, three 3x3/2 max-pools (conv2-5 keep the size): fc6 reads 6x6 maps: 227.
    (r"alexnet", [(11, 4, 0), (3, 2, 0), (3, 2, 0), (3, 2, 0)], "exactly", 6),
    # 16x16/16 patches; the token-mixing MLP is built for 14 x 14 = 196 of them: 224.
    (r"mixer_[slb]16", [(16, 16, 0)], "exactly", 14),
)


def _derived_minimum(name: str) -> tuple[str, int]:
    """("at least" | "exactly", n) for `name` from FAMILIES."""
    found = [(layers, kind, last) for pattern, layers, kind, last in FAMILIES
             if re.fullmatch(pattern, name)]
    assert len(found) == 1, f"{name}: {len(found)} families in FAMILIES match it"
    layers, kind, last = found[0]
    for n in range(1, 4096):
        size = _final_size(n, layers)
        if (size >= 1) if last is None else (size == last):
            return kind, n
    raise AssertionError(f"{name}: no input up to 4096 satisfies its layer list")


def test_output_size_formula_by_hand():
    # The papers' sizes: AlexNet 227 -> 55 (11x11/4); ResNet 224 -> 112 (7x7/2 pad 3) -> 56
    # (3x3/2 pad 1); GoogLeNet's ceil-mode 3x3/2 pool 112 -> 56.
    assert _out_size(227, 11, 4, 0) == 55
    assert _out_size(224, 7, 2, 3) == 112 and _out_size(112, 3, 2, 1) == 56
    assert _out_size(112, 3, 2, 0, ceil_mode=True) == 56
    # A 2x2/2 pool over 7: 3 windows by floor, 4 by ceil (the last one overhangs by a pixel);
    # TensorFlow's SAME: ceil(7 / 2) = 4.
    assert _out_size(7, 2, 2, 0) == 3 and _out_size(7, 2, 2, 0, ceil_mode=True) == 4
    assert _out_size(7, 3, 2, "same") == 4
    # PyTorch's correction: 2x2/2 pad 1 over 5 by ceil would be ceil(5 / 2) + 1 = 4 windows,
    # but the 4th would start at 6 - 1 = 5, past the input: 3.
    assert _out_size(5, 2, 2, 1, ceil_mode=True) == 3
    # Too small: a 2x2 window over 1 pixel is empty by floor, one overhanging window by ceil.
    assert _out_size(1, 2, 2, 0) == 0 and _out_size(2, 3, 2, 0, ceil_mode=True) == 1


def _assert_every_layer_output_is_non_empty(name: str, model, x: jax.ShapeDtypeStruct) -> None:
    """Runs the model (shapes only) on `x` and checks that no module's output has a zero-sized
    axis: JAX computes an empty feature map without complaint (a 3x3 VALID convolution of a
    1x1 input is (N, 0, 0, C)), and a global pool of it is NaN of the right shape."""
    def outputs(x):
        variables = model.init(jax.random.PRNGKey(0), x, train=False)
        return model.apply(variables, x, train=False, capture_intermediates=True,
                           mutable=["intermediates"])[1]
    for path, leaf in jax.tree_util.tree_leaves_with_path(jax.eval_shape(outputs, x)):
        assert 0 not in leaf.shape, f"{name}: {jax.tree_util.keystr(path)} is {leaf.shape}"


@pytest.mark.parametrize("name", ALL)
def test_stated_minimum_is_the_true_minimum(name):
    """The minimum a model states (its error for a 1-pixel input) equals the one derived from
    its family's layer list, the model runs at it, and one pixel (token) less is refused with a
    one-line ValueError stating it. No stated minimum must mean the derivation gives 1."""
    kind, n = _derived_minimum(name)
    rule = _size_rule(name)
    assert (rule or ("at least", 1)) == (kind, n), f"{name} states {rule}, derived {(kind, n)}"
    spec, model = models.get_spec(name), models.create(name, num_classes=CLASSES)
    _assert_every_layer_output_is_non_empty(name, model, _spec_input(spec, 2, n))
    refused = [n - 1] if n > 1 else []
    if kind == "exactly":
        refused.append(n + 1)
    for size in refused:
        with pytest.raises(ValueError) as error:
            _init_shapes(model, _spec_input(spec, 2, size))
        message = str(error.value)
        assert "\n" not in message, f"{name}: the error is not one line: {message!r}"
        match = MIN_SIZE.search(message)
        assert match and (match.group(1), int(match.group(2))) == (kind, n), message


@pytest.mark.parametrize("name", ALL)
def test_larger_inputs_work_where_no_exact_size_is_required(name):
    rule = _size_rule(name)
    if rule is not None and rule[0] == "exactly":
        return
    spec = models.get_spec(name)
    size = spec.input_shape[0] + 32  # a multiple of 16 more, for fully convolutional models
    model = models.create(name, num_classes=CLASSES)
    x = _spec_input(spec, 2, size)
    out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), _init_shapes(model, x), x)
    assert out.shape in {(2, CLASSES), (2, size, size, CLASSES)}, f"{name}: {out.shape}"


# Deeper or wider copies of a family whose smallest member runs in the default suite: the same
# modules with other stage depths/widths, whose compile time (up to a minute each on 2 CPU cores)
# buys no new check. They run with `make test-all`.
GRAD_SLOW = re.compile(r"^(resnet(34|101|152)|plain34|wide_resnet50_2|cifar_(resnet|plain)(32|44|56|110)"
                       r"|vgg(13|16|19)(_bn)?|efficientnet_b[1-7]|mixer_[bl]16|nfnet_f[1-9])$")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if GRAD_SLOW.match(n)
                                  else n for n in ALL])
def test_jit_grad_at_the_smallest_input(name):
    spec = models.get_spec(name)
    model = models.create(name, num_classes=CLASSES)
    if hasattr(model, "drop_path_rate"):
        # Stochastic depth may drop a block for every example of a 2-image batch, zeroing its
        # gradients by design (its own test: test_models_nfnet_mixer.py); off here.
        model = model.clone(drop_path_rate=0.0)
    x_spec = _small_input(name)
    key = jax.random.PRNGKey(0)
    if spec.input_dtype == "int32":
        x = jax.random.randint(key, x_spec.shape, 0, 100, jnp.int32)
    else:
        x = jax.random.normal(key, x_spec.shape, jnp.float32)
    variables = jax.jit(lambda x: model.init(jax.random.PRNGKey(1), x, train=False))(x)
    params, rest = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    # Papers zero-initialise some parameters (SkipInit gains, Mixer's classifier), which blocks
    # the gradient of others at the first step by design. Gradient flow is checked at a nearby
    # point where every parameter is non-zero.
    # (On the host: eager jax.random per leaf would compile once per distinct shape.)
    rng = np.random.default_rng(3)
    params = jax.tree_util.tree_map(
        lambda p: np.asarray(p) + 0.05 * rng.standard_normal(p.shape).astype(p.dtype), params)

    @jax.jit
    def grad(params):
        def loss(params):
            out, _ = model.apply({"params": params, **rest}, x, train=True,
                                 rngs={"dropout": jax.random.PRNGKey(2)}, mutable=["batch_stats"])
            return sum(jnp.mean(jnp.square(o.astype(jnp.float32))) for o in _outputs(out))
        return jax.grad(loss)(params)

    grads = grad(params)
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(params)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        g = np.asarray(g)
        assert np.all(np.isfinite(g)), f"{name}: non-finite gradient at {jax.tree_util.keystr(path)}"
        assert np.any(g != 0), f"{name}: zero gradient at {jax.tree_util.keystr(path)}"


@pytest.mark.parametrize("name", ALL)
def test_bfloat16_computes_in_bf16_with_float32_parameters(name):
    model = models.create(name, num_classes=CLASSES, dtype=jnp.bfloat16)
    x = _small_input(name)
    variables = _init_shapes(model, x)
    for path, leaf in jax.tree_util.tree_leaves_with_path(variables):
        assert leaf.dtype == jnp.float32, f"{name}: {jax.tree_util.keystr(path)} is {leaf.dtype}"
    jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, x)
    ops = matmul_operand_dtypes(jaxpr.jaxpr)
    assert ops, f"{name}: no convolution or matrix product found"
    wrong = [op for op in ops if op[1] != "bfloat16"]
    assert not wrong, f"{name}: computes in {sorted(set(wrong))}"
    # Logits come back in float32 (upcast once at the end) so the loss is computed accurately.
    out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    assert out.dtype == jnp.float32
