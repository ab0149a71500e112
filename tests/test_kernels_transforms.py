"""Every Pallas kernel (interpreted on CPU) and every CPU-extension kernel under jvp, linearize,
jacfwd, hessian, Hessian-vector products both ways, grad of grad and vmap, against an independent float64 reference; reverse
mode on the backward kernels, forward mode on the tangent kernels; batch norm's synchronised
statistics inside shard_map; and the lowering of second-order and vmapped programs to Triton."""

import functools
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src.interpreters import partial_eval as pe  # dce_jaxpr: no public equivalent

from cnnjax import kernels, ops
from kernel_checks import (BACKENDS, assert_transformations_match, equations, normal, on_backend,
                           primitive_counts, primitives, triton_kernels_for_gpu)


def _xla(f):
    """f on XLA's path (the references), whatever the process-wide switch."""
    def run(*args):
        with kernels.use("xla"):
            return f(*args)
    return run


def _loss(f):
    return lambda *a: jnp.sum(jnp.sin(jax.tree_util.tree_leaves(f(*a))[0]))


def _assert_vmap_is_one_call(kernel, args, forward: str) -> None:
    """vmap over a mapped axis of 3 binds the forward primitive once (the axis folded into the
    batch or the channels), not once per element."""
    stacked = [jnp.stack([a] * 3) for a in args]
    counts = primitive_counts(jax.vmap(kernel), *stacked)
    assert counts.get(forward) == 1 and not {"while", "scan"} & set(counts), counts


def _distinct(shape, seed: int) -> jax.Array:
    """Values 0.05 apart in random order: no ties in a window, so max pooling's derivative is
    the same for every tie rule, and finite-precision noise cannot pick another maximum."""
    size = int(np.prod(shape))
    values = jax.random.permutation(jax.random.PRNGKey(seed), jnp.arange(size))
    return (values.reshape(shape) * 0.05 - size * 0.025).astype(jnp.float32)


POOLS = [("max_pool", 3, 2, 1), ("max_pool", 2, 2, 0), ("avg_pool", 3, 2, 1)]


def _pool(op, window, stride, padding, backend="interpret"):
    options = dict(window=window, stride=stride, padding=padding)
    return (functools.partial(on_backend(getattr(kernels, f"{op}2d"), backend), **options),
            _xla(functools.partial(getattr(ops, op), **options)))


def _depthwise():
    options = dict(stride=2, padding="SAME")
    return (functools.partial(kernels.depthwise_conv2d, interpret=True, **options),
            _xla(functools.partial(ops.depthwise_conv2d, **options)),
            [normal(0, (2, 5, 4, 3)), normal(1, (3, 3, 1, 3))])


def _batch_norm(activation: str, backend: str = "interpret"):
    """The kernel, the definition in plain jnp (act(scale (x - mean) / sqrt(var + eps) + bias +
    res), mean and var over every axis but the last: independent of ops.batch_norm and the
    kernels) and arguments (x with an offset per channel, as activations have)."""
    def formula(x, scale, bias, res):
        axes = tuple(range(x.ndim - 1))
        mean = jnp.mean(x, axis=axes)
        var = jnp.mean(jnp.square(x - mean), axis=axes)
        z = scale * (x - mean) / jnp.sqrt(var + 1e-5) + bias + res
        return ops.get_activation(activation)(z), mean, var

    kernel = lambda x, s, b, r: on_backend(kernels.batch_norm_act, backend)(
        x, s, b, residual=r, activation=activation)
    args = [normal(0, (2, 3, 2, 4)) * 2.0 + normal(1, (4,)), normal(2, (4,)), normal(3, (4,)),
            normal(4, (2, 3, 2, 4))]
    return kernel, formula, args


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op,window,stride,padding", POOLS)
def test_pooling_composes_with_every_transformation(op, window, stride, padding, backend):
    kernel, reference = _pool(op, window, stride, padding, backend)
    assert_transformations_match(kernel, reference, [_distinct((2, 5, 4, 3), window)], seed=1)


@pytest.mark.slow
def test_depthwise_composes_with_every_transformation():
    kernel, reference, args = _depthwise()
    assert_transformations_match(kernel, reference, args, seed=2)


@pytest.mark.slow
@pytest.mark.parametrize("backend,activation", [("interpret", "swish"), ("interpret", "relu"),
                                                ("cpu", "swish"), ("cpu", "relu"),
                                                ("cpu", "gelu")])
def test_batch_norm_composes_with_every_transformation(backend, activation):
    kernel, formula, args = _batch_norm(activation, backend)
    assert_transformations_match(kernel, formula, args, seed=3)


def _assert_cpu_calls(f, args, target: str, count: int) -> None:
    """jit(f)'s program, as lowered for the CPU, holds `count` custom calls of `target`."""
    text = jax.jit(f).lower(*args).as_text()
    assert text.count(f"stablehlo.custom_call @{target}(") == count, text[-2000:]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op,window,stride,padding", POOLS)
def test_pooling_programs_hold_the_kernels(op, window, stride, padding, backend):
    """Reverse mode runs the backward kernel; vmap is one call (traced only: cheap); on the CPU
    the gradient's program is the forward (with argmax) and backward custom calls."""
    kernel, _ = _pool(op, window, stride, padding, backend)
    x = _distinct((2, 5, 4, 3), 0)
    names = primitives(jax.grad(_loss(kernel)), x)
    forward = "max_pool2d_fwd_argmax" if op == "max_pool" else "avg_pool2d_fwd"
    assert {forward, f"{op}2d_bwd"} <= names, names
    if op == "max_pool":  # forward mode: the select kernel gathers the tangent
        assert "max_pool2d_select" in primitives(lambda x: jax.jvp(kernel, (x,), (x,)), x)
    _assert_vmap_is_one_call(kernel, [x], f"{op}2d_fwd")
    if backend == "cpu":
        _assert_cpu_calls(jax.grad(_loss(kernel)), [x], "cnnjax_onednn_pool", 2)


def test_depthwise_programs_hold_the_kernels():
    kernel, _, args = _depthwise()
    names = primitives(jax.grad(_loss(kernel), (0, 1)), *args)
    assert {"depthwise_conv2d_fwd", "depthwise_conv2d_dx", "depthwise_conv2d_dw"} <= names, names
    _assert_vmap_is_one_call(kernel, args, "depthwise_conv2d_fwd")  # per-example filters too


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_norm_programs_hold_the_kernels(backend):
    kernel, _, args = _batch_norm("swish", backend)
    names = primitives(jax.grad(_loss(kernel), (0, 1, 2, 3)), *args)
    assert {"batch_norm_act_fwd", "batch_norm_act_bwd"} <= names, names
    names = primitives(lambda *a: jax.jvp(kernel, a, tuple(a)), *args)
    assert "batch_norm_act_tangent" in names, names  # forward mode on the tangent kernels
    _assert_vmap_is_one_call(kernel, args, "batch_norm_act_fwd")
    if backend == "cpu":  # statistics, normalise; gradient sums, input gradient
        _assert_cpu_calls(jax.grad(_loss(kernel), (0, 1, 2, 3)), args, "cnnjax_onednn_norm_act", 4)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_synchronised_batch_norm_runs_the_kernels_inside_shard_map(backend):
    """tests/sharded_kernel_probe.py on 2 forced host devices: batch_norm(axis_name=...) inside
    shard_map on the kernels equals the whole batch's statistics, gradients and HVP (float64
    formula), and its program holds the kernels' primitives."""
    proc = subprocess.run([sys.executable, str(pathlib.Path(__file__).with_name(
        "sharded_kernel_probe.py")), backend], capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok"), proc.stdout


def _hvp_and_vmap(f, n_args):
    every = tuple(range(n_args))
    loss = lambda *a: jnp.sum(jnp.sin(jax.tree_util.tree_leaves(f(*a))[0]))
    return lambda *a: (jax.jvp(jax.grad(loss, every), a, a)[1],
                       jax.vmap(jax.grad(loss, every))(*(jnp.stack([x, x]) for x in a)))


# Triton kernels per primitive: batch norm's passes are a reduction and an elementwise kernel.
TRITON_PER_PRIMITIVE = {"batch_norm_act": 2, "max_pool2d": 1, "avg_pool2d": 1, "depthwise_conv2d": 1}


@pytest.mark.parametrize("f,shapes", [
    (lambda x: kernels.max_pool2d(x, 3, stride=2, padding=1), [(2, 8, 8, 16)]),
    (lambda x: kernels.avg_pool2d(x, 3, stride=2, padding=1), [(2, 8, 8, 16)]),
    (lambda x, w: kernels.depthwise_conv2d(x, w, stride=1), [(2, 8, 8, 16), (3, 3, 1, 16)]),
    (lambda x, s, b: kernels.batch_norm_act(x, s, b), [(2, 4, 4, 16), (16,), (16,)])],
    ids=["max_pool", "avg_pool", "depthwise", "batch_norm"])
def test_second_order_and_vmap_lower_to_triton(monkeypatch, f, shapes):
    """A Hessian-vector product (forward over reverse) and vmap of the gradient, exported for
    CUDA: every kernel primitive in the program becomes its Triton kernels (none falls back)."""
    args = [normal(i, s) for i, s in enumerate(shapes)]
    program = _hvp_and_vmap(f, len(args))
    with kernels.use("pallas"):
        monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
        # Lowering drops unused values (the gradient itself, under its JVP): count the kernels
        # of the program as lowered.
        closed = jax.make_jaxpr(program)(*args)
        live = pe.dce_jaxpr(closed.jaxpr, [True] * len(closed.jaxpr.outvars))[0]
        counts = {}
        for eqn in equations(live):
            counts[eqn.primitive.name] = counts.get(eqn.primitive.name, 0) + 1
        want = sum(n * TRITON_PER_PRIMITIVE[next(k for k in TRITON_PER_PRIMITIVE if p.startswith(k))]
                   for p, n in counts.items() if p.startswith(tuple(TRITON_PER_PRIMITIVE)))
        assert want >= 4, counts  # forward, backward and tangent kernels at least
        assert triton_kernels_for_gpu(program, args, monkeypatch) == want


def test_cpu_kernels_export_to_cuda_and_tpu_as_xla():
    """A gradient traced on the CPU kernels (batch norm + GELU, max and average pooling) exports
    for the CPU (their custom calls) and for a GPU or TPU (each pass lowers to XLA), and the
    exported CPU program equals the XLA path in float64."""
    from jax import export

    def loss(x, s, b):
        y = kernels.batch_norm_act(x, s, b, activation="gelu")[0]
        return jnp.sum(jnp.sin(kernels.max_pool2d(y, 3, stride=2, padding=1))) + jnp.sum(
            jnp.cos(kernels.avg_pool2d(y, 2)))

    args = [normal(0, (2, 6, 6, 5)) * 2.0 + normal(1, (5,)), normal(2, (5,)), normal(3, (5,))]
    grads = jax.grad(loss, (0, 1, 2))
    targets = ("cnnjax_onednn_norm_act", "cnnjax_onednn_pool")
    with kernels.use("onednn"):
        exported = export.export(
            jax.jit(grads), platforms=["cpu", "cuda", "tpu"],
            disabled_checks=[export.DisabledSafetyCheck.custom_call(t) for t in targets])(*args)
        gpu_only = export.export(jax.jit(grads), platforms=["cuda"])(*args).mlir_module()
    assert all(f"@{t}(" in exported.mlir_module() for t in targets)
    assert "custom_call @cnnjax_onednn" not in gpu_only
    with jax.enable_x64(True), kernels.use("xla"):
        want = grads(*(jnp.asarray(np.asarray(a, np.float64)) for a in args))
    for got, ref in zip(exported.call(*args), want):
        np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(ref), rtol=0,
                                   atol=1e-4 * float(np.max(np.abs(ref))))
