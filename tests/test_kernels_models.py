"""The kernels switch end to end: its semantics and fallbacks, the kernels with 64-bit types
enabled, the Flax layers routing to the kernels, whole models giving the same loss and gradients
with kernels "pallas" (interpreted) as with XLA, config.model.kernels reaching the model, and the
GPU benchmark's --smoke mode."""

import logging
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import kernels, models, ops
from cnnjax.kernels import dispatch
from cnnjax.nn import BatchNorm, Conv
from cnnjax.ops import hooks
from cnnjax.train.trainer import build_model_and_optimizer
from conftest import REPO_ROOT
from kernel_checks import assert_close, assert_trees_close, flat, normal

from cnnjax.sweep.config_file import load_module

sys.path.insert(0, str(REPO_ROOT / "experiments"))
import bench_kernels  # noqa: E402


def test_switch_scopes_nest_and_reject_unknown_names():
    assert kernels.current() == kernels.Setting("auto", False)
    with kernels.use("pallas", interpret=True) as outer:
        assert outer == kernels.current() == kernels.Setting("pallas", True)
        with kernels.use("xla"):
            assert kernels.current().kernels == "xla"
        assert kernels.current() == outer
    assert kernels.current().kernels == "auto"
    with pytest.raises(ValueError, match="unknown kernels 'triton'"):
        kernels.use("triton").__enter__()
    with pytest.raises(ValueError, match="unknown kernels"):
        kernels.set_default("cuda")


def test_default_switch_applies_outside_scopes():
    before = kernels.current()
    kernels.set_default("pallas", interpret=True)
    try:
        assert kernels.current() == kernels.Setting("pallas", True)
        with kernels.use("xla"):
            assert kernels.current().kernels == "xla"
    finally:
        kernels.set_default(before.kernels, interpret=before.interpret)
    assert kernels.current() == before


def test_pallas_on_cpu_falls_back_to_the_reference_with_one_log_line(monkeypatch, caplog):
    monkeypatch.setattr(dispatch, "_logged", set())
    caplog.set_level(logging.WARNING, logger=dispatch.logger.name)
    x = normal(0, (1, 6, 6, 3))
    with kernels.use("pallas"):  # no interpret: the CPU cannot run the Triton kernels
        got = [jax.make_jaxpr(lambda x: kernels.max_pool2d(x, 2))(x) for _ in range(2)]
        y = kernels.max_pool2d(x, 2)
    assert "max_pool2d_fwd" not in str(got[0])
    assert_close(y, ops.max_pool(x, 2), jnp.float32)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "backend 'cpu'" in lines[0] and "max_pool2d" in lines[0], lines


@pytest.mark.parametrize("name", ["depthwise_conv2d", "batch_norm_act"])
def test_kernels_with_loops_run_with_64_bit_types_enabled(name):
    # A user with jax_enable_x64 on (float32 models): the kernels' loop indices stay int32
    # (Python-int loop bounds would make them int64 against the int32 program ids; the depthwise
    # filter gradient's index arithmetic then failed to trace). Value and gradients in the
    # interpreter against ops' XLA reference, and the kernel's backward pass in the program.
    x, w = normal(6, (2, 5, 7, 8)), normal(7, (3, 3, 1, 8))
    kernel, reference = {
        "depthwise_conv2d": (
            lambda x, w: kernels.depthwise_conv2d(x, w, stride=2, padding=1, interpret=True),
            lambda x, w: ops.depthwise_conv2d(x, w, stride=2, padding=1)),
        "batch_norm_act": (
            lambda x, w: kernels.batch_norm_act(x, w[0, 0, 0], None, activation="relu6",
                                                interpret=True)[0],
            lambda x, w: ops.batch_norm(x, w[0, 0, 0], None, train=True, activation="relu6")[0]),
    }[name]
    # One compilation each: the value of sum(sin(f)) and its gradients, which see f through cos.
    value_and_grad = lambda f: jax.value_and_grad(lambda x, w: jnp.sum(jnp.sin(f(x, w))), (0, 1))
    with jax.enable_x64(True), kernels.use("xla"):
        backward = {"depthwise_conv2d": "depthwise_conv2d_dw[",
                    "batch_norm_act": "batch_norm_act_bwd["}[name]
        assert backward in str(jax.make_jaxpr(value_and_grad(kernel))(x, w))
        assert_trees_close(value_and_grad(kernel)(x, w), value_and_grad(reference)(x, w),
                           jnp.float32, name)


class _DepthwiseBlock(nn.Module):
    """A depthwise convolution (torchvision's symmetric padding, stride 2), then batch norm."""

    @nn.compact
    def __call__(self, x, train: bool):
        c = x.shape[-1]
        # No bias: before a batch norm its gradient is zero up to rounding, nothing to compare.
        x = Conv(c, 3, stride=2, padding=1, groups=c, use_bias=False)(x)
        return BatchNorm()(x, train)


def _loss_and_grads(model, variables, x, labels, rngs):
    """Training-mode cross-entropy, the updated batch statistics and the parameter gradients."""
    def loss(params):
        out, updates = model.apply({**variables, "params": params}, x, train=True,
                                   mutable=["batch_stats"], rngs=rngs or {})
        logits = out if out.ndim == 2 else jnp.mean(out, axis=(1, 2))
        return jnp.mean(ops.softmax_cross_entropy(logits, labels)), updates

    return jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])


def _compare_models(model, x, labels, rngs=None, tol=None):
    """The model as the trainer wraps it for kernels "pallas" (interpreted) against the plain
    model (kernels "xla"): same loss, batch statistics and gradients (float32, `tol` relative to
    the largest magnitude in all statistics or all gradients; default 1e-5). Whole trees share
    one scale because some leaves are zero but for rounding (at initialisation the means after
    a zero-bias batch norm and a linear layer), where any relative comparison is noise."""
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    (loss, stats), grads = _loss_and_grads(model, variables, x, labels, rngs)
    scoped = kernels.KernelScoped(model, "pallas", interpret=True)
    (loss_k, stats_k), grads_k = _loss_and_grads(scoped, variables, x, labels, rngs)
    assert_close(loss_k, loss, jnp.float32, "loss", tol)
    assert_close(flat(stats_k), flat(stats), jnp.float32, "batch statistics", tol)
    assert_close(flat(grads_k), flat(grads), jnp.float32, "gradients", tol)


def test_flax_layers_route_depthwise_conv_and_batch_norm_to_the_kernels():
    model, x = _DepthwiseBlock(), normal(1, (2, 7, 8, 5))
    variables = model.init(jax.random.PRNGKey(0), x, train=False)

    def jaxpr():  # a fresh function each time: JAX caches traces per function
        return str(jax.make_jaxpr(lambda v, x: model.apply(v, x, train=True,
                                                            mutable=["batch_stats"]))(variables, x))

    with kernels.use("pallas", interpret=True):  # the kernels' primitives
        text = jaxpr()
        assert text.count("depthwise_conv2d_fwd[") == text.count("batch_norm_act_fwd[") == 1
    with kernels.use("xla"):
        assert "depthwise_conv2d" not in jaxpr() and "batch_norm_act" not in jaxpr()
    text = jaxpr()  # "auto" on the CPU: the CPU kernels' batch norm, the convolution on oneDNN
    assert text.count("backend=cpu") == 1 and "depthwise_conv2d_fwd[" not in text
    _compare_models(model, x, jnp.array([1, 3]))


# Per model, from the architecture: batch norms by (activation, residual add fused), and the
# max pools and depthwise convolutions, each of which must reach its kernel.
ROUTED = {
    # stem BN-ReLU; 8 basic blocks: BN-ReLU, BN + shortcut + ReLU; 3 projection BNs.
    "resnet18": ({("relu", False): 9, ("relu", True): 8, ("identity", False): 3}, 1, 0),
    # stem; 16 bottlenecks: 2 BN-ReLU, BN + shortcut + ReLU; 4 projection BNs.
    "resnet50": ({("relu", False): 33, ("relu", True): 16, ("identity", False): 4}, 1, 0),
    # stem, 16 expansions, 17 depthwise and the head with ReLU6; 17 linear projections, 10 of
    # them (stride 1, same width) with the residual add (Sandler et al. 2018, Table 2).
    "mobilenet_v2": ({("relu6", False): 35, ("identity", True): 10, ("identity", False): 7},
                     0, 17),
    # stem, 15 expansions, 16 depthwise and the head with swish; 16 projections (the residual
    # passes stochastic depth first, so it is not fused).
    "efficientnet_b0": ({("swish", False): 33, ("identity", False): 16}, 0, 16),
}


@pytest.mark.parametrize("name", list(ROUTED))
def test_models_route_every_batch_norm_pool_and_depthwise_conv_to_the_kernels(name):
    """Counts the kernels' primitives in the training forward's jaxpr under kernels "pallas" and
    which activation and residual each batch norm fuses (recorded at the kernel's entry,
    cnnjax.ops' batch-norm hook)."""
    fused, pools, depthwise = ROUTED[name]
    calls = []
    kernel = hooks.kernel("batch_norm")

    def recording(x, scale, bias, residual, activation, eps, axis_name=None):
        calls.append((activation, residual is not None))
        return kernel(x, scale, bias, residual, activation, eps, axis_name)

    hooks.register_kernel("batch_norm", recording)
    try:
        model = models.create(name, num_classes=10)
        x = jnp.zeros((2, 64, 64, 3))
        variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
        with kernels.use("pallas", interpret=True):
            jaxpr = str(jax.make_jaxpr(lambda v, x: model.apply(
                v, x, train=True, mutable=["batch_stats"],
                rngs={"dropout": jax.random.PRNGKey(0)}))(variables, x))
    finally:
        hooks.register_kernel("batch_norm", kernel)
    assert {k: calls.count(k) for k in set(calls)} == fused
    assert jaxpr.count("batch_norm_act_fwd[") == len(calls)
    assert jaxpr.count("max_pool2d_fwd[") == pools
    assert jaxpr.count("depthwise_conv2d_fwd[") == depthwise


def test_cifar_resnet20_same_loss_and_gradients_with_pallas_and_xla():
    model = models.create("cifar_resnet20", num_classes=10)
    _compare_models(model, normal(2, (2, 8, 8, 3)), jnp.array([4, 7]))


def _shift_batch_norm_biases(params, by: float):
    """params with every batch norm's bias (a module holding "scale" and "bias") plus `by`."""
    if not isinstance(params, dict):
        return params
    if "scale" in params and "bias" in params:
        return {**params, "bias": params["bias"] + by}
    return {k: _shift_batch_norm_biases(v, by) for k, v in params.items()}


@pytest.mark.slow
def test_mobilenet_v2_pallas_equals_float64_xla():
    """MobileNetV2 through the Pallas kernels (interpreted) against XLA in float64: loss, batch
    statistics and every parameter's gradient, each to 2e-4 (relative L2).

    The batch norms' biases start at 3 instead of 0, which puts ReLU6's kinks 3 standard
    deviations from the pre-activations' mean. At the zero init some of the ~1e6 pre-activations
    lie within rounding of 0, where float32 rounding decides the ReLU6 mask. Measured
    2026-12-06 at these inputs: one such entry in block 16 flipped on the Pallas path and on the
    oneDNN convolutions alike (not on XLA's float32 path), which moved every gradient below it by
    3% (L2); with the biases at 3, Pallas, oneDNN and XLA float32 all agreed with float64 to
    2e-6 (L2, all gradients) and to 4e-5 per parameter. 64x64, not the minimum 32x32: at 32x32
    the last layers are 1x1 and their batch norms normalise 2 values each."""
    assert "mobilenet_v2" in models.list_models()  # a rename must fail here, not skip
    # No dropout: float64 draws other masks than float32 (and no kernel is involved).
    model = models.create("mobilenet_v2", num_classes=10, dropout_rate=0.0)
    x, labels = normal(3, (2, 64, 64, 3)), jnp.array([0, 9])
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    variables = {**variables, "params": _shift_batch_norm_biases(variables["params"], 3.0)}
    scoped = kernels.KernelScoped(model, "pallas", interpret=True)
    (loss, stats), grads = _loss_and_grads(scoped, variables, x, labels, None)
    with jax.enable_x64(True), kernels.use("xla"):
        wide = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), (variables, x))
        (loss_64, stats_64), grads_64 = _loss_and_grads(model, *wide, labels, None)
    # Float64 up to the logits, which the model returns in float32 (its last op): the loss and
    # its cotangent carry float32 rounding (~1e-7), far below the tolerances here.
    assert all(a.dtype == jnp.float64 for a in jax.tree_util.tree_leaves((stats_64, grads_64)))
    assert_close(loss, loss_64, jnp.float32, "loss")
    assert_close(flat(stats), flat(stats_64), jnp.float32, "batch statistics")
    # The floor is for the biases of the linear projections' batch norms, which reach the loss
    # only through a convolution and the next batch norm: their gradient is zero but rounding.
    floor = 1e-7 * np.linalg.norm(flat(grads_64))
    off = []
    for (path, g64), g in zip(jax.tree_util.tree_flatten_with_path(grads_64)[0],
                              jax.tree_util.tree_leaves(grads), strict=True):
        g64 = np.asarray(g64)
        err, size = np.linalg.norm(np.asarray(g, np.float64) - g64), np.linalg.norm(g64)
        if err > 2e-4 * size + floor:
            off.append((jax.tree_util.keystr(path), err / size))
    assert not off, off


def test_config_model_kernels_reaches_the_model():
    config = load_module(REPO_ROOT / "configs" / "default.py").get_config()
    assert config.model.kernels == "auto"
    config.model.kernels = "pallas"
    model, *_ = build_model_and_optimizer(config, num_classes=10, steps_per_epoch=10)
    assert isinstance(model, kernels.KernelScoped)
    assert model.setting == kernels.Setting("pallas", False)
    seen = []
    model.model = type("Probe", (), {"init": lambda self, *a: seen.append(kernels.current())})()
    model.init()
    assert seen == [kernels.Setting("pallas", False)]
    config.model.kernels = "cuda"
    with pytest.raises(ValueError, match="model.kernels 'cuda'"):
        build_model_and_optimizer(config, num_classes=10, steps_per_epoch=10)


def test_benchmark_smoke_runs_kernels_in_the_interpreter_and_records_nothing(tmp_path):
    out = tmp_path / "kernels.md"
    rows = bench_kernels.main(["--smoke", "--dtypes=bfloat16", f"--out={out}"])
    assert {r["op"] for r in rows} == {"depthwise_conv2d", "max_pool2d", "avg_pool2d",
                                       "batch_norm_act"}
    # bf16: the references round their intermediates (y before the activation, sums of
    # gradients) to bf16 where the kernels keep float32, hence a few bf16 ulps apart.
    assert all(r["kernel_ran"] and r["max_rel_error"] < 3e-2 for r in rows), rows
    assert not out.exists()


def test_benchmark_refuses_to_record_without_a_gpu(tmp_path):
    out = tmp_path / "kernels.md"
    with pytest.raises(SystemExit, match="GPU measurements only"):
        bench_kernels.main([f"--out={out}"])
    assert not out.exists()
