"""The oneDNN convolution under every JAX transformation: jvp, jacfwd, jax.hessian, Hessian-vector
products both ways, linearize, grad-of-grad, vmap (a vmapped batch, per-example weights,
per-example gradients) and export, against XLA's convolution in float64, with every convolution
of the transformed program on oneDNN; and the kernels switch as part of jit's cache key."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import export, lax

from cnnjax import kernels, models, ops
from cnnjax.kernels import onednn
from kernel_checks import assert_close, assert_trees_close

pytestmark = pytest.mark.skipif(onednn.load()[1] is not None,
                                reason="the oneDNN extension is unavailable here "
                                       "(test_kernels_onednn checks why)")

# float32 oneDNN against float64 XLA: float32 rounding of sums over a few hundred terms.
TOL = 1e-5

# (N, H, W, C_in, kh, kw, C_out, strides, padding, dilation, groups), small enough that a full
# Hessian w.r.t. input and kernel takes a second: strides, asymmetric padding, dilation and
# groups; depthwise with a channel multiplier, strided, dilated and padded on the other axis.
CONFIGS = [
    (2, 6, 5, 4, 3, 2, 6, (2, 1), ((0, 2), (1, 0)), (2, 1), 2),
    (1, 7, 6, 3, 3, 3, 6, (1, 2), ((1, 2), (2, 1)), (1, 2), 3),
]
ONEDNN_PASSES = ("cnnjax_onednn_forward", "cnnjax_onednn_input_grad",
                 "cnnjax_onednn_weight_grad")


def _xla(x, w, strides, padding, dilation, groups):
    return lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilation,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=groups)


def _transformations(conv, c):
    """name -> f(x, w, tx, tw, xs, ws) for conv(x, w); `c` weights the outputs in the loss."""
    loss = lambda x, w: jnp.sum(c * jnp.sin(conv(x, w)))
    grads = jax.grad(loss, (0, 1))
    return {
        "jvp": lambda x, w, tx, tw, xs, ws: jax.jvp(loss, (x, w), (tx, tw)),
        "jacfwd": lambda x, w, tx, tw, xs, ws: jax.jacfwd(conv, (0, 1))(x, w),
        "hessian": lambda x, w, tx, tw, xs, ws: jax.hessian(loss, (0, 1))(x, w),
        "hvp_forward_over_reverse":
            lambda x, w, tx, tw, xs, ws: jax.jvp(grads, (x, w), (tx, tw))[1],
        "hvp_reverse_over_forward": lambda x, w, tx, tw, xs, ws: jax.grad(
            lambda x, w: jax.jvp(loss, (x, w), (tx, tw))[1], (0, 1))(x, w),
        "linearize": lambda x, w, tx, tw, xs, ws: jax.linearize(conv, x, w)[1](tx, tw),
        "grad_of_grad": lambda x, w, tx, tw, xs, ws: jax.grad(
            lambda x, w: sum(jnp.sum(g ** 2) for g in grads(x, w)), (0, 1))(x, w),
        "vmap_batch": lambda x, w, tx, tw, xs, ws: jax.vmap(conv, (0, None))(xs, w),
        "vmap_weights": lambda x, w, tx, tw, xs, ws: (jax.vmap(conv)(xs, ws),
                                                      jax.vmap(conv, (None, 0))(x, ws)),
        "per_example_grads": lambda x, w, tx, tw, xs, ws: jax.vmap(
            jax.grad(lambda x, w: loss(x[None], w), (0, 1)), (0, None))(x, w),
    }


@pytest.fixture(scope="module", params=range(len(CONFIGS)), ids=str)
def computed(request):
    """(config, oneDNN results, float64 XLA results, oneDNN jaxprs as text) of every
    transformation; the oneDNN ones in one jit (one compilation)."""
    config = CONFIGS[request.param]
    n, h, w_, c, kh, kw, o, *args = config
    rng = np.random.default_rng(request.param)
    x, tx = (rng.standard_normal((n, h, w_, c)) for _ in range(2))
    w, tw = (rng.standard_normal((kh, kw, c // args[3], o)) / 3 for _ in range(2))
    xs, ws = rng.standard_normal((3, n, h, w_, c)), rng.standard_normal((3, *w.shape)) / 3
    y_shape = jax.eval_shape(lambda x, w: _xla(x, w, *args), x, w).shape
    weights = rng.standard_normal(y_shape)
    operands = (x, w, tx, tw, xs, ws)
    ours = _transformations(lambda x, w: onednn.conv2d(x, w, *args),
                            jnp.asarray(weights, jnp.float32))
    f32 = [jnp.asarray(a, jnp.float32) for a in operands]
    got = jax.jit(lambda *a: {k: f(*a) for k, f in ours.items()})(*f32)
    jaxprs = {k: str(jax.make_jaxpr(f)(*f32)) for k, f in ours.items()}
    with jax.enable_x64(True):
        reference = _transformations(lambda x, w: _xla(x, w, *args), jnp.asarray(weights))
        want = jax.jit(lambda *a: {k: f(*a) for k, f in reference.items()})(
            *[jnp.asarray(a, jnp.float64) for a in operands])
        want = jax.tree_util.tree_map(np.asarray, want)
    return config, got, want, jaxprs


def _check(computed, name: str) -> None:
    config, got, want, jaxprs = computed
    # Every convolution of the transformed program is a oneDNN pass, none is XLA's.
    assert "conv_general_dilated" not in jaxprs[name], jaxprs[name]
    assert "cnnjax_onednn_forward" in jaxprs[name]
    assert_trees_close(got[name], want[name], jnp.float32, f"{name} of {config}", TOL)


def test_jvp(computed):
    _check(computed, "jvp")


def test_jacfwd(computed):
    _check(computed, "jacfwd")


def test_hessian(computed):
    _check(computed, "hessian")


def test_hessian_vector_products_both_ways(computed):
    _check(computed, "hvp_forward_over_reverse")
    _check(computed, "hvp_reverse_over_forward")


def test_linearize(computed):
    _check(computed, "linearize")


def test_grad_of_grad(computed):
    _check(computed, "grad_of_grad")


def test_vmap_folds_into_one_call(computed):
    # A vmapped batch folds into the batch axis; per-example weights into the feature groups;
    # per-example gradients (vmap of grad) run the weight gradient grouped: one call per pass.
    _check(computed, "vmap_batch")
    _check(computed, "vmap_weights")
    _check(computed, "per_example_grads")
    jaxprs = computed[3]
    assert jaxprs["vmap_batch"].count("cnnjax_onednn_forward") == 1
    assert jaxprs["vmap_weights"].count("cnnjax_onednn_forward") == 2  # two vmaps
    assert all(jaxprs["per_example_grads"].count(p) == 1 for p in ONEDNN_PASSES)


def test_reverse_mode_runs_the_onednn_backward_passes():
    config = CONFIGS[0]
    args = config[7:]
    x = jnp.ones(config[:4], jnp.float32)
    w = jnp.ones((*config[4:6], config[3] // args[3], config[6]), jnp.float32)
    loss = lambda x, w: jnp.sum(jnp.sin(onednn.conv2d(x, w, *args)))
    hlo = jax.jit(jax.grad(loss, (0, 1))).lower(x, w).compile().as_text()
    assert all(f'custom_call_target="{p}"' in hlo for p in ONEDNN_PASSES), hlo
    assert " convolution(" not in hlo  # no pass fell back to XLA's convolution


def test_the_kernels_switch_is_part_of_jits_cache_key():
    # The repro of issue 27: a function traced under "onednn", then lowered afresh under "xla".
    x, w = jnp.ones((1, 6, 6, 3)), jnp.ones((3, 3, 3, 4))
    f = lambda x, w: ops.conv2d(x, w, padding=1)
    with kernels.use("onednn"):
        jax.jit(f)(x, w)
    with kernels.use("xla"):
        xla_text = jax.jit(f).lower(x, w).as_text()
    with kernels.use("onednn"):
        onednn_text = jax.jit(f).lower(x, w).as_text()
    assert "cnnjax_onednn" not in xla_text and "stablehlo.convolution" in xla_text
    assert "cnnjax_onednn_forward" in onednn_text and "stablehlo.convolution" not in onednn_text
    before = kernels.current()
    kernels.set_default("xla")
    try:
        assert "cnnjax_onednn" not in jax.jit(f).lower(x, w).as_text()
    finally:
        kernels.set_default(before.kernels, interpret=before.interpret)


def test_export_runs_onednn_on_the_cpu_and_xla_elsewhere():
    # A program traced on oneDNN exports for the CPU (the custom calls) and for a GPU or TPU (each
    # pass lowers to XLA's convolution), and the exported CPU program computes the gradient.
    config = CONFIGS[1]
    args = config[7:]
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal(config[:4]), jnp.float32)
    w = jnp.asarray(rng.standard_normal((*config[4:6], config[3] // args[3], config[6])),
                    jnp.float32)
    grads = jax.grad(lambda x, w: jnp.sum(jnp.sin(onednn.conv2d(x, w, *args))), (0, 1))
    exported = export.export(
        jax.jit(grads), platforms=["cpu", "cuda", "tpu"],
        disabled_checks=[export.DisabledSafetyCheck.custom_call(p) for p in ONEDNN_PASSES])(x, w)
    text = exported.mlir_module()
    assert all(p in text for p in ONEDNN_PASSES) and "stablehlo.convolution" in text
    with jax.enable_x64(True):
        want = jax.grad(lambda x, w: jnp.sum(jnp.sin(_xla(x, w, *args))), (0, 1))(
            *(jnp.asarray(a, jnp.float64) for a in (x, w)))
    assert_trees_close(exported.call(x, w), want, jnp.float32, "exported gradient", TOL)


@pytest.mark.slow  # ~25 CPU-seconds, the two compilations of ResNet-20's jvp (in make test-slow)
def test_jvp_of_a_resnet_loss_on_onednn_equals_xla():
    # Batch norm in training mode: the statistics' tangents too. The XLA path in float32 is the
    # reference (oneDNN takes no float64).
    model = models.create("cifar_resnet20", num_classes=10)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    labels = jnp.array([3, 7])
    variables = model.init(jax.random.PRNGKey(1), x, train=False)
    params, stats = variables["params"], variables["batch_stats"]
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
    direction = tree.unflatten([jax.random.normal(k, p.shape) for k, p in zip(keys, leaves)])

    def loss(params):
        logits, _ = model.apply({"params": params, "batch_stats": stats}, x, train=True,
                                mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    jvp = lambda params, direction: jax.jvp(loss, (params,), (direction,))
    with kernels.use("onednn"):
        jaxpr = str(jax.make_jaxpr(jvp)(params, direction))
        got = jax.jit(jvp)(params, direction)
    assert "conv_general_dilated" not in jaxpr and "cnnjax_onednn_forward" in jaxpr
    with kernels.use("xla"):
        want = jax.jit(jvp)(params, direction)
    assert_trees_close(got, want, jnp.float32, "resnet20 loss and its jvp", 1e-4)
