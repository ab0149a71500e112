"""Run as a subprocess by tests/test_kernels_transforms.py with XLA_FLAGS forcing 2 host devices:
`python sharded_kernel_probe.py BACKEND`, BACKEND "interpret" or "cpu".

Synchronised batch norm (ops.batch_norm with axis_name) inside shard_map on the kernels of
BACKEND (the Pallas kernels interpreted, or the CPU extension's), each device holding half the
batch, against the whole batch's definition in
float64: a loss of y, mean and var, its gradients in x, scale, bias and residual and a
Hessian-vector product (forward over reverse); and the program holds the kernels. Prints "ok".
"""

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from cnnjax import kernels, ops
from cnnjax.ops.mapping import shard_map
from kernel_checks import equations


def formula(x, scale, bias, res):
    mean = jnp.mean(x, axis=(0, 1, 2))
    var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
    z = scale * (x - mean) / jnp.sqrt(var + 1e-5) + bias + res
    return ops.get_activation("swish")(z), mean, var


def loss(f, weights):
    def run(x, scale, bias, res):
        y, mean, var = f(x, scale, bias, res)
        return jnp.sum(weights * jnp.sin(y)) + jnp.sum(mean ** 2) + jnp.sum(jnp.cos(var))
    return run


def sharded(mesh, weights, backend: str):
    """The kernels' batch norm per device, statistics across axis "d"; the loss summed over
    devices and the parameter gradients reduced across them."""
    def local(x, scale, bias, res, w):
        y, mean, var = ops.batch_norm(x, scale, bias, train=True, axis_name="d", residual=res,
                                      activation="swish")
        # mean and var are the same on both devices: each counts half.
        total = jnp.sum(w * jnp.sin(y)) + 0.5 * (jnp.sum(mean ** 2) + jnp.sum(jnp.cos(var)))
        return jax.lax.psum(total, "d")

    def run(x, scale, bias, res):
        setting = (kernels.use("pallas", interpret=True) if backend == "interpret"
                   else kernels.use("onednn"))
        with setting:
            return shard_map(local, mesh, (P("d"), P(), P(), P("d"), P("d")), P())(
                x, scale, bias, res, weights)
    return run


def main() -> None:
    assert jax.device_count() == 2, jax.device_count()
    mesh = Mesh(np.array(jax.devices()), ("d",))
    key = jax.random.split(jax.random.PRNGKey(0), 8)
    x = jax.random.normal(key[0], (4, 3, 2, 5)) * 2.0 + jax.random.normal(key[1], (5,))
    args = (x, jax.random.normal(key[2], (5,)), jax.random.normal(key[3], (5,)),
            jax.random.normal(key[4], x.shape))
    tangents = tuple(jax.random.normal(k, a.shape) for k, a in zip(jax.random.split(key[5], 4), args))
    weights = jax.random.normal(key[7], x.shape)
    every = (0, 1, 2, 3)
    backend = sys.argv[1] if len(sys.argv) > 1 else "interpret"
    f = sharded(mesh, weights, backend)
    got = [f(*args), jax.grad(f, every)(*args), jax.jvp(jax.grad(f, every), args, tangents)[1]]
    # grad splits the shard_map into a forward and a transposed one: walk every sub-jaxpr.
    eqns = list(equations(jax.make_jaxpr(jax.grad(f, every))(*args).jaxpr))
    names = {e.primitive.name for e in eqns}
    assert {"batch_norm_act_fwd", "batch_norm_act_bwd"} <= names, names
    assert all(e.params["backend"] == backend for e in eqns if e.primitive.name.startswith(
        "batch_norm_act")), backend
    with jax.enable_x64(True):
        a64 = [jnp.asarray(np.asarray(a, np.float64)) for a in args]
        t64 = [jnp.asarray(np.asarray(t, np.float64)) for t in tangents]
        g = loss(formula, jnp.asarray(np.asarray(weights, np.float64)))
        want = [g(*a64), jax.grad(g, every)(*a64), jax.jvp(jax.grad(g, every), a64, t64)[1]]
        want = jax.tree_util.tree_map(np.asarray, want)
    for name, a, e in zip(("loss", "grad", "hvp"), got, want):
        for i, (u, v) in enumerate(zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(e))):
            scale = max(float(np.max(np.abs(v))), 1e-30)
            np.testing.assert_allclose(np.asarray(u, np.float64), v, rtol=0, atol=1e-4 * scale,
                                       err_msg=f"{name} leaf {i}")
    print("ok")


if __name__ == "__main__":
    main()
