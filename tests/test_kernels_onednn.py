"""oneDNN's CPU convolutions (cnnjax.kernels.onednn): values and gradients against
XLA's lax.conv_general_dilated and PyTorch in float64, the "auto" switch routing every model
convolution there, a few training steps against the XLA path, and the fallback to XLA with one
log line when the extension cannot be built. Higher derivatives, forward mode, vmap and export:
test_kernels_compose.py."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from jax import lax

from cnnjax import kernels, models, ops
from cnnjax.kernels import dispatch, onednn
from cnnjax.kernels.onednn import build
from kernel_checks import assert_close, assert_trees_close, normal

from conftest import REPO_ROOT

X86_LINUX = sys.platform == "linux" and platform.machine() == "x86_64"

# (N, H, W, C_in, kh, kw, C_out, strides, padding, dilation, groups): strides, asymmetric
# padding, dilation, groups, depthwise (with a channel multiplier), odd sizes, batch 1, a kernel
# larger than the input, 1x1.
CONFIGS = [
    (2, 9, 7, 6, 3, 3, 4, (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    (1, 11, 10, 6, 3, 2, 9, (2, 1), ((0, 2), (1, 0)), (2, 1), 3),
    (3, 8, 9, 5, 3, 3, 5, (1, 2), ((1, 1), (2, 2)), (1, 1), 5),
    (2, 13, 13, 4, 5, 5, 8, (2, 2), ((2, 1), (2, 3)), (1, 2), 4),
    (1, 5, 6, 3, 7, 7, 2, (1, 1), ((3, 3), (3, 3)), (1, 1), 1),
    (2, 7, 7, 8, 1, 1, 16, (2, 2), ((0, 0), (0, 0)), (1, 1), 2),
    (1, 4, 4, 32, 3, 3, 32, (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
]


def _xla(x, w, strides, padding, dilation, groups):
    return lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilation,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=groups)


def _torch64(x, w, dy, strides, padding, dilation, groups):
    """y, dx, dw from PyTorch in float64 (NCHW / OIHW under the hood)."""
    tx = torch.tensor(np.asarray(x, np.float64)).permute(0, 3, 1, 2).requires_grad_()
    tw = torch.tensor(np.asarray(w, np.float64)).permute(3, 2, 0, 1).requires_grad_()
    (top, bottom), (left, right) = padding
    y = torch.nn.functional.conv2d(torch.nn.functional.pad(tx, (left, right, top, bottom)), tw,
                                   stride=strides, dilation=dilation, groups=groups)
    y.backward(torch.tensor(np.asarray(dy, np.float64)).permute(0, 3, 1, 2))
    return (y.detach().permute(0, 2, 3, 1).numpy(), tx.grad.permute(0, 2, 3, 1).numpy(),
            tw.grad.permute(2, 3, 1, 0).numpy())


def _operands(config, seed, dtype=jnp.float32):
    """x (N, H, W, C_in) and w (kh, kw, C_in // groups, C_out), standard normal, from NumPy."""
    n, h, w, c, kh, kw, o, *_, groups = config
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.standard_normal((n, h, w, c)), dtype),
            jnp.asarray(rng.standard_normal((kh, kw, c // groups, o)), dtype))


def _passes(conv, args):
    """jit of (x, w, dy) -> (y, dx, dw) of conv(x, w, *args)."""
    def f(x, w, dy):
        y, pullback = jax.vjp(lambda x, w: conv(x, w, *args), x, w)
        return (y, *pullback(dy))
    return jax.jit(f)


def test_the_extension_builds_on_x86_64_linux():
    # CI is x86-64 Linux with the oneDNN wheels (setup.cfg installs them there): the oneDNN path
    # must really run, not fall back. Elsewhere load() must say why it cannot.
    lib, reason = onednn.load()
    if X86_LINUX:
        assert lib is not None and reason is None, reason
    else:
        assert lib is None and "x86-64 Linux" in reason


@pytest.mark.parametrize("config", CONFIGS, ids=[str(i) for i in range(len(CONFIGS))])
def test_values_and_gradients_equal_xla_and_pytorch(config):
    args = config[7:]
    x, w = _operands(config, 10)
    out_shape = jax.eval_shape(lambda x, w: _xla(x, w, *args), x, w).shape
    dy = jnp.asarray(np.random.default_rng(11).standard_normal(out_shape), jnp.float32)
    got = _passes(onednn.conv2d, args)(x, w, dy)
    for a, b, what in zip(got, _passes(_xla, args)(x, w, dy), ("y", "dx", "dw")):
        assert_close(a, b, jnp.float32, f"{what} vs XLA")
    for a, b, what in zip(got, _torch64(x, w, dy, *args), ("y", "dx", "dw")):
        assert_close(a, b, jnp.float32, f"{what} vs PyTorch float64")


# (N, H, W, C_in, kh, kw, C_out // groups, stride, padding, output_padding, dilation, groups)
TRANSPOSED = [
    (2, 5, 6, 4, 2, 2, 3, 2, 0, 0, 1, 1),  # U-Net's up-convolution
    (1, 4, 5, 4, 3, 3, 3, 2, 1, 1, 1, 2),
    (2, 5, 4, 3, 3, 3, 2, 1, 1, 0, 2, 1),
    (1, 4, 4, 2, 3, 3, 2, 1, 0, 1, 2, 1),  # output_padding >= stride: stays on XLA
]


@pytest.mark.parametrize("config", TRANSPOSED, ids=[str(i) for i in range(len(TRANSPOSED))])
def test_transposed_convolution_equals_xla_and_pytorch(config):
    n, h, w, c, kh, kw, o, s, p, op, d, g = config
    rng = np.random.default_rng(90)
    x = jnp.asarray(rng.standard_normal((n, h, w, c)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((kh, kw, c, o)), jnp.float32)
    conv = lambda x, k: ops.conv_transpose2d(x, k, stride=s, padding=p, output_padding=op,
                                             dilation=d, groups=g)
    loss = lambda x, k: jnp.sum(jnp.sin(conv(x, k)))
    with kernels.use("onednn"):
        calls = str(jax.make_jaxpr(conv)(x, k)).count("cnnjax_onednn_input_grad")
        y, grads = jax.jit(conv)(x, k), jax.jit(jax.grad(loss, (0, 1)))(x, k)
    assert calls == (0 if op >= s else 1)
    with kernels.use("xla"):
        y_ref, grads_ref = jax.jit(conv)(x, k), jax.jit(jax.grad(loss, (0, 1)))(x, k)
    assert_close(y, y_ref, jnp.float32, "y vs XLA")
    assert_trees_close(grads, grads_ref, jnp.float32, "gradients vs XLA")
    want = torch.nn.functional.conv_transpose2d(
        torch.tensor(np.asarray(x, np.float64)).permute(0, 3, 1, 2),
        torch.tensor(np.asarray(k, np.float64)).permute(2, 3, 0, 1), stride=s, padding=p,
        output_padding=op, groups=g, dilation=d).permute(0, 2, 3, 1).numpy()
    assert_close(y, want, jnp.float32, "y vs PyTorch float64")


def test_bfloat16_without_native_support_stays_on_xla(monkeypatch):
    # Runs on every CPU: where the CPU has AVX512-BF16/AMX, has_bf16 is made to say it has not.
    monkeypatch.setattr(onednn.conv, "has_bf16", lambda: False)
    config = CONFIGS[3]
    args = config[7:]
    x, w = _operands(config, 30, jnp.bfloat16)
    assert "bfloat16" in onednn.unsupported(x, w)
    conv = lambda x, w: ops.conv2d(x, w, stride=args[0], padding=args[1], dilation=args[2],
                                   groups=args[3])
    with kernels.use("onednn"):
        jaxpr = str(jax.make_jaxpr(conv)(x, w))
        y = jax.jit(lambda x, w: conv(x, w))(x, w)
    assert "cnnjax_onednn" not in jaxpr and "conv_general_dilated" in jaxpr
    assert y.dtype == jnp.bfloat16
    f32 = [a.astype(jnp.float32) for a in (x, w)]
    assert_close(y, _xla(*f32, *args), jnp.bfloat16, "y on XLA")


@pytest.mark.skipif(not onednn.has_bf16(), reason="the CPU has neither AVX512-BF16 nor AMX-BF16 "
                    "(the XLA fallback is tested above on every CPU)")
def test_bfloat16_on_onednn_where_the_cpu_has_it():
    config = CONFIGS[3]
    args = config[7:]
    x, w = _operands(config, 30, jnp.bfloat16)
    spec = onednn.ConvSpec.create(x.shape, w.shape, *args)
    impls = [onednn.implementation(p, spec, jnp.bfloat16) for p in onednn.conv.PASSES]
    assert not any(i.startswith("ref") for i in impls), impls  # native bf16, not the fallback
    out_shape = jax.eval_shape(lambda x, w: _xla(x, w, *args), x, w).shape
    dy = jnp.asarray(np.random.default_rng(31).standard_normal(out_shape), jnp.bfloat16)
    got = _passes(onednn.conv2d, args)(x, w, dy)
    assert all(a.dtype == jnp.bfloat16 for a in got)
    # The reference: the same bf16 values, computed in float32.
    f32 = [a.astype(jnp.float32) for a in (x, w, dy)]
    for a, b, what in zip(got, _passes(_xla, args)(*f32), ("y", "dx", "dw")):
        assert_close(a, b, jnp.bfloat16, what)


def test_auto_routes_every_model_convolution_to_onednn_on_the_cpu():
    model = models.create("cifar_resnet20", num_classes=10)
    x = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)

    def jaxpr():  # a fresh function each time: JAX caches traces per function
        return str(jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, x))

    assert kernels.current().kernels == "auto"
    onednn_calls = jaxpr().count("cnnjax_onednn_forward")
    with kernels.use("xla"):
        xla_convs = jaxpr().count("conv_general_dilated")
    assert onednn_calls == xla_convs == 19
    assert "conv_general_dilated" not in jaxpr()


def test_training_steps_with_auto_follow_the_xla_loss_trajectory():
    # The default experiment's CNN with batch norm (a ResNet-20 step takes ~10x longer to compile).
    model = models.create("simple_cnn", num_classes=10, batch_norm=True, dropout_rate=0.0)
    x, labels = normal(70, (8, 16, 16, 1)), jnp.arange(8)
    variables = jax.jit(lambda x: model.init(jax.random.PRNGKey(1), x, train=False))(x)
    tx = optax.sgd(0.02, momentum=0.9)

    def trajectory(choice):
        scoped = kernels.KernelScoped(model, choice)

        def loss_fn(params, stats):
            logits, new = scoped.apply({"params": params, "batch_stats": stats}, x, train=True,
                                       mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), new

        @jax.jit
        def step(params, stats, opt):
            (loss, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats)
            updates, opt = tx.update(grads, opt, params)
            return optax.apply_updates(params, updates), new["batch_stats"], opt, loss

        params, stats, opt, losses = variables["params"], variables["batch_stats"], None, []
        opt = tx.init(params)
        for _ in range(5):
            params, stats, opt, loss = step(params, stats, opt)
            losses.append(float(loss))
        return np.array(losses)

    auto, xla = trajectory("auto"), trajectory("xla")
    assert auto[-1] < auto[0], auto  # it trains
    np.testing.assert_allclose(auto, xla, rtol=1e-4)


def test_unsupported_convolutions_stay_on_xla_with_one_log_line(monkeypatch, caplog):
    monkeypatch.setattr(dispatch, "_logged", set())
    caplog.set_level(logging.WARNING, logger=dispatch.logger.name)
    x, w = normal(80, (1, 6, 6, 2), jnp.float16), normal(81, (3, 3, 2, 2), jnp.float16)
    conv = lambda x, w: ops.conv2d(x, w, padding=1)
    with kernels.use("onednn"):
        for _ in range(2):
            jaxpr = str(jax.make_jaxpr(conv)(x, w))
    assert "conv_general_dilated" in jaxpr and "cnnjax_onednn" not in jaxpr
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["cnnjax.kernels: a convolution runs on XLA, oneDNN does not take its dtypes "
                     "float16/float16 (oneDNN takes float32, or bfloat16 with AVX512-BF16)"]


def test_a_failing_compiler_is_reported_as_the_reason(monkeypatch, tmp_path):
    if not X86_LINUX:
        pytest.skip("the build is only attempted on x86-64 Linux (the other test covers the rest)")
    monkeypatch.setenv("CNNJAX_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", "false")  # exists, exits 1
    with pytest.raises(RuntimeError, match="false failed"):
        build._build()
    assert not list(tmp_path.rglob("*.so"))  # nothing half-written left in the cache


def test_without_the_extension_everything_runs_on_xla_with_one_log_line(tmp_path):
    # A fresh process whose build cannot find a compiler: the model trains on XLA, and the
    # reason is logged once however many convolutions are traced.
    script = textwrap.dedent("""
        import logging
        import jax, jax.numpy as jnp
        from cnnjax import models, ops
        from cnnjax.kernels import onednn
        from jax import lax
        model = models.create("simple_cnn", num_classes=10)
        x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 1))
        v = jax.jit(lambda x: model.init(jax.random.PRNGKey(1), x, train=False))(x)
        grads = jax.jit(jax.grad(lambda v: model.apply(v, x, train=False).sum()))(v)
        jaxpr = str(jax.make_jaxpr(lambda x: ops.conv2d(x, jnp.ones((3, 3, 1, 4))))(x))
        assert "conv_general_dilated" in jaxpr and "cnnjax_onednn" not in jaxpr, jaxpr
        print("load:", onednn.load()[1])
    """)
    env = {**os.environ, "CXX": "/nonexistent/g++", "CNNJAX_CACHE_DIR": str(tmp_path),
           "PYTHONPATH": str(REPO_ROOT), "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    logged = [line for line in done.stderr.splitlines() if "cnnjax.kernels" in line]
    assert len(logged) == 1, done.stderr
    assert ("the CPU extension is unavailable, every convolution, batch norm and pooling runs on "
            "XLA") in logged[0]
    reason = "no C++ compiler" if X86_LINUX else "x86-64 Linux"
    assert reason in logged[0] and reason in done.stdout
