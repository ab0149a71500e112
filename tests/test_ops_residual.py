"""Pure-function residual blocks (cnnjax.ops.residual): against PyTorch blocks, against their Flax
wrappers (values, gradients, batch statistics), composed into a whole network, and their errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import torch_resnet as tr
from cnnjax import models, nn as cnn, ops

CASES = [  # (Flax class, pure fn, cin, cout, stride, shortcut, extra kwargs)
    (cnn.BasicBlock, ops.basic_block, 8, 8, 1, "B", {}),
    (cnn.BasicBlock, ops.basic_block, 8, 16, 2, "B", {}),
    (cnn.BasicBlock, ops.basic_block, 8, 16, 2, "A", {}),
    (cnn.BasicBlock, ops.basic_block, 8, 16, 2, "none", {}),
    (cnn.BottleneckBlock, ops.bottleneck_block, 16, 32, 2, "B", {}),
    (cnn.BottleneckBlock, ops.bottleneck_block, 32, 32, 1, "B", {"groups": 4, "width": 16}),
    (cnn.PreActBlock, ops.preact_block, 8, 16, 2, "B", {}),
    (cnn.PreActBlock, ops.preact_block, 8, 8, 1, "B", {}),
    (cnn.PreActBottleneckBlock, ops.preact_bottleneck_block, 16, 32, 2, "B", {}),
]


@pytest.mark.parametrize("flax_cls,fn,cin,cout,stride,shortcut,kw", CASES)
@pytest.mark.parametrize("train", [True, False])
def test_pure_block_equals_flax_block(flax_cls, fn, cin, cout, stride, shortcut, kw, train):
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 8, 8, cin))
    block = flax_cls(cout, stride=stride, shortcut=shortcut, **kw)
    v = block.init(jax.random.PRNGKey(1), x, train=False)
    # Non-trivial running statistics so evaluation mode is exercised.
    v = {**v, "batch_stats": jax.tree_util.tree_map(lambda a: a + 0.3, v["batch_stats"])}
    pure_kw = {"groups": kw["groups"]} if "groups" in kw else {}

    def flax_loss(p):
        out, upd = block.apply({**v, "params": p}, x, train=train, mutable=["batch_stats"])
        return jnp.sum(out ** 2), (out, upd.get("batch_stats", {}))

    def pure_loss(p):
        out, stats = fn(p, x, stride=stride, train=train, batch_stats=v["batch_stats"],
                        shortcut=shortcut, **pure_kw)
        return jnp.sum(out ** 2), (out, stats)

    (lf, (yf, sf)), gf = jax.value_and_grad(flax_loss, has_aux=True)(v["params"])
    (lp, (yp, sp)), gp = jax.value_and_grad(pure_loss, has_aux=True)(v["params"])
    np.testing.assert_array_equal(np.asarray(yf), np.asarray(yp))
    for a, b in zip(jax.tree_util.tree_leaves(gf), jax.tree_util.tree_leaves(gp)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    if train:
        for a, b in zip(jax.tree_util.tree_leaves(sf), jax.tree_util.tree_leaves(sp)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _torch_params(block):
    sd = {k: v.detach().numpy() for k, v in block.state_dict().items()}
    params, stats = {}, {}
    for key, val in sd.items():
        *mod, leaf = key.split(".")
        name = ".".join(mod).replace("downsample.0", "downsample.conv").replace("downsample.1", "downsample.bn")
        target, tleaf = {"weight": (params, "kernel" if val.ndim == 4 else "scale"), "bias": (params, "bias"),
                         "running_mean": (stats, "mean"), "running_var": (stats, "var")}.get(leaf, (None, None))
        if target is None:
            continue
        d = target
        for part in name.split("."):
            d = d.setdefault(part, {})
        d[tleaf] = jnp.asarray(val.transpose(2, 3, 1, 0) if val.ndim == 4 else val)
    return params, stats


@pytest.mark.parametrize("block_cls,pure,cin,planes,stride", [
    (tr.BasicBlock, ops.basic_block, 8, 16, 2), (tr.Bottleneck, ops.bottleneck_block, 16, 8, 2)])
def test_pure_blocks_match_pytorch_blocks(block_cls, pure, cin, planes, stride):
    torch.manual_seed(0)
    cout = planes * block_cls.expansion
    down = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 1, stride, bias=False), torch.nn.BatchNorm2d(cout))
    block = block_cls(cin, planes, stride, down)
    tr.randomize_batch_norm(block)
    block.eval()
    x = np.random.default_rng(0).standard_normal((2, cin, 8, 8)).astype(np.float32)
    with torch.no_grad():
        want = block(torch.tensor(x)).numpy().transpose(0, 2, 3, 1)
    params, stats = _torch_params(block)
    got, _ = pure(params, jnp.asarray(x.transpose(0, 2, 3, 1)), stride=stride, train=False, batch_stats=stats)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


def _pure_cifar_resnet(variables, x, train):
    """CIFAR ResNet-20 written with cnnjax.ops only."""
    p, s = variables["params"], variables["batch_stats"]
    y = ops.conv2d(x, p["conv1"]["kernel"], padding=1)
    y, _, _ = ops.batch_norm(y, p["bn1"]["scale"], p["bn1"]["bias"], mean=s["bn1"]["mean"],
                             var=s["bn1"]["var"], train=train)
    y = ops.relu(y)
    for i in range(3):
        for j in range(3):
            name = f"layer{i + 1}_{j}"
            y, _ = ops.basic_block(p[name], y, stride=2 if (i > 0 and j == 0) else 1, train=train,
                                   batch_stats=s[name], shortcut="A")
    return ops.global_avg_pool(y) @ p["fc"]["kernel"] + p["fc"]["bias"]


@pytest.mark.parametrize("train", [True, False])
def test_flax_resnet_equals_the_network_composed_from_pure_functions(train):
    model = models.create("cifar_resnet20")
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 32, 32, 3))
    v = model.init(jax.random.PRNGKey(1), x, train=False)

    def flax_loss(p):
        out, _ = model.apply({**v, "params": p}, x, train=train, mutable=["batch_stats"])
        return jnp.mean(out ** 2), out

    def pure_loss(p):
        out = _pure_cifar_resnet({**v, "params": p}, x, train)
        return jnp.mean(out ** 2), out

    (_, of), gf = jax.value_and_grad(flax_loss, has_aux=True)(v["params"])
    (_, op), gp = jax.value_and_grad(pure_loss, has_aux=True)(v["params"])
    np.testing.assert_allclose(np.asarray(of), np.asarray(op), rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(gf), jax.tree_util.tree_leaves(gp)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_init_functions_make_the_documented_trees():
    params, stats = ops.init_bottleneck_block(jax.random.PRNGKey(0), 64, 256, stride=2)
    assert params["conv2"]["kernel"].shape == (3, 3, 64, 64)
    assert params["downsample"]["conv"]["kernel"].shape == (1, 1, 64, 256)
    assert set(stats) == {"bn1", "bn2", "bn3", "downsample"} and stats["bn3"]["var"].shape == (256,)
    # He normal, fan-out: std sqrt(2 / (k * k * C_out)).
    k = np.asarray(ops.init_basic_block(jax.random.PRNGKey(1), 64, 64)[0]["conv1"]["kernel"])
    assert abs(k.std() - np.sqrt(2 / (9 * 64))) < 0.01 * np.sqrt(2 / (9 * 64)) * 10
    y, new = ops.bottleneck_block(params, jnp.ones((1, 8, 8, 64)), stride=2, train=True, batch_stats=stats)
    assert y.shape == (1, 4, 4, 256) and jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(stats)


def test_errors_name_the_parameter():
    params, stats = ops.init_basic_block(jax.random.PRNGKey(0), 8, 16, stride=2)
    with pytest.raises(ValueError, match=r"'conv2.kernel' has shape \(3, 3, 8, 16\), expected \(3, 3, 16, 16\)"):
        bad = {**params, "conv2": {"kernel": jnp.ones((3, 3, 8, 16))}}
        ops.basic_block(bad, jnp.ones((1, 8, 8, 8)), stride=2, train=True, batch_stats=stats)
    with pytest.raises(ValueError, match=r"'conv1.kernel' has shape \(3, 3, 8, 16\), expected \(3, 3, 4, 16\)"):
        ops.basic_block(params, jnp.ones((1, 8, 8, 4)), stride=2, train=True, batch_stats=stats)
    with pytest.raises(ValueError, match="lack 'downsample'"):
        ops.basic_block({k: v for k, v in params.items() if k != "downsample"}, jnp.ones((1, 8, 8, 8)),
                        stride=2, train=True, batch_stats=stats)
    with pytest.raises(ValueError, match="shortcut must be one of"):
        ops.init_basic_block(jax.random.PRNGKey(0), 8, 8, shortcut="C")
    with pytest.raises(ValueError, match="needs batch_stats"):
        ops.basic_block(params, jnp.ones((1, 8, 8, 8)), stride=2, train=False, batch_stats={})
