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
    spec = models.get_spec(name)
    rule = _size_rule(name)
    return _spec_input(spec, 2, None if rule is None else rule[1])


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


@pytest.mark.parametrize("name", ALL)
def test_too_small_input_states_the_minimum_and_the_minimum_is_true(name):
    rule = _size_rule(name)
    if rule is None:  # the model has no minimum (e.g. the MLP)
        return
    kind, n = rule
    spec, model = models.get_spec(name), models.create(name, num_classes=CLASSES)
    _init_shapes(model, _spec_input(spec, 2, n))  # the stated minimum works
    with pytest.raises(ValueError):
        _init_shapes(model, _spec_input(spec, 2, n - 1))
    if kind == "exactly":
        with pytest.raises(ValueError):
            _init_shapes(model, _spec_input(spec, 2, n + 1))


@pytest.mark.parametrize("name", ALL)
def test_larger_inputs_work_where_no_exact_size_is_required(name):
    rule = _size_rule(name)
    if rule is None or rule[0] == "exactly":
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
