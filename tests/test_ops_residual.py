"""Pure-function residual blocks (cnnjax.ops.residual) and their Flax wrappers against PyTorch
(torch_resnet.py: torchvision-named modules, and functional blocks for training mode: values,
gradients, running statistics), composed into a whole network against PyTorch, He-normal
fan-out initialisation against torch's, and their errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from scipy import stats as st

import torch_resnet as tr
from cnnjax import models, nn as cnn, ops

CASES = [  # (Flax class, pure fn, torch kind, cin, cout, stride, shortcut, extra kwargs)
    (cnn.BasicBlock, ops.basic_block, "basic", 8, 8, 1, "B", {}),
    (cnn.BasicBlock, ops.basic_block, "basic", 8, 16, 2, "B", {}),
    (cnn.BasicBlock, ops.basic_block, "basic", 8, 16, 2, "A", {}),
    (cnn.BasicBlock, ops.basic_block, "basic", 8, 16, 2, "none", {}),
    (cnn.BottleneckBlock, ops.bottleneck_block, "bottleneck", 16, 32, 2, "B", {}),
    (cnn.BottleneckBlock, ops.bottleneck_block, "bottleneck", 32, 32, 1, "B", {"groups": 4, "width": 16}),
    (cnn.PreActBlock, ops.preact_block, "preact", 8, 16, 2, "B", {}),
    (cnn.PreActBlock, ops.preact_block, "preact", 8, 8, 1, "B", {}),
    (cnn.PreActBottleneckBlock, ops.preact_bottleneck_block, "preact_bottleneck", 16, 32, 2, "B", {}),
]


def _randomize(tree, seed: int):
    """Batch-norm scales near 1, biases, means and variances away from their initial values, so
    both modes are exercised with non-trivial numbers."""
    rng = np.random.default_rng(seed)

    def leaf(path, a):
        name = path[-1].key
        if name in ("scale", "var"):
            return jnp.asarray(rng.uniform(0.5, 1.5, a.shape), jnp.float32)
        if name in ("bias", "mean"):
            return jnp.asarray(rng.normal(0, 0.2, a.shape), jnp.float32)
        return a
    return jax.tree_util.tree_map_with_path(leaf, tree)


def _close(got, want, what, rtol=2e-4):
    """Float32 against float64: every entry within rtol of the largest reference magnitude."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} vs {want.shape}"
    err, scale = np.abs(got - want).max(), max(np.abs(want).max(), 1e-3)
    assert err <= rtol * scale, f"{what}: max error {err:.3g} vs max magnitude {scale:.3g}"


def _compare_trees(got, want, what, rtol=2e-4):
    flat_got = dict(jax.tree_util.tree_flatten_with_path(got)[0])
    flat_want = dict(jax.tree_util.tree_flatten_with_path(want)[0])
    assert flat_got.keys() == flat_want.keys(), what
    for k in flat_want:
        _close(flat_got[k], flat_want[k], f"{what} {jax.tree_util.keystr(k)}", rtol)


@pytest.mark.parametrize("flax_cls,fn,kind,cin,cout,stride,shortcut,kw", CASES)
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("impl", ["pure", "flax"])
def test_blocks_match_pytorch_in_both_modes(flax_cls, fn, kind, cin, cout, stride, shortcut, kw,
                                            train, impl):
    """Output, gradients of sum(y^2) with respect to every parameter, and (in training) the
    updated running statistics, of the pure function and of its Flax wrapper, against torch's
    conv2d / batch_norm / autograd in float64 on the same numbers."""
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 8, 8, cin))
    block = flax_cls(cout, stride=stride, shortcut=shortcut, **kw)
    v = block.init(jax.random.PRNGKey(1), x, train=False)
    params, stats = _randomize(v["params"], 2), _randomize(v["batch_stats"], 3)
    groups = kw.get("groups", 1)

    def loss(p):
        if impl == "flax":
            out, upd = block.apply({"params": p, "batch_stats": stats}, x, train=train,
                                   mutable=["batch_stats"])
            new = upd["batch_stats"]
        else:
            out, new = fn(p, x, stride=stride, train=train, batch_stats=stats, shortcut=shortcut,
                          **({"groups": groups} if groups > 1 else {}))
        return jnp.sum(out ** 2), (out, new)

    (_, (out, new)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)

    tp = tr.to_torch(params, requires_grad=True)
    t_out, t_new = tr.block(kind, tp, tr.to_torch(stats), torch.tensor(
        np.asarray(x, np.float64).transpose(0, 3, 1, 2)), stride=stride, train=train,
        shortcut=shortcut, groups=groups)
    (t_out ** 2).sum().backward()
    t_grads = jax.tree_util.tree_map(lambda t: t.grad, tp)
    _close(out, t_out.detach().numpy().transpose(0, 2, 3, 1), "output")
    _compare_trees(grads, tr.from_torch_tree(t_grads), "gradient", rtol=5e-4)
    if train:
        _compare_trees(new, tr.from_torch_tree(t_new), "running statistics")
    else:
        _compare_trees(new, stats, "running statistics (unchanged)", rtol=0)


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
    """CIFAR ResNet-20 written with cnnjax.ops only: (logits, updated running statistics)."""
    p, s = variables["params"], variables["batch_stats"]
    new = {}
    y = ops.conv2d(x, p["conv1"]["kernel"], padding=1)
    y, mean, var = ops.batch_norm(y, p["bn1"]["scale"], p["bn1"]["bias"], mean=s["bn1"]["mean"],
                                  var=s["bn1"]["var"], train=train)
    if train:
        new["bn1"] = {"mean": 0.9 * s["bn1"]["mean"] + 0.1 * mean,
                      "var": 0.9 * s["bn1"]["var"] + 0.1 * var}
    y = ops.relu(y)
    for i in range(3):
        for j in range(3):
            name = f"layer{i + 1}_{j}"
            y, new[name] = ops.basic_block(p[name], y, stride=2 if (i > 0 and j == 0) else 1,
                                           train=train, batch_stats=s[name], shortcut="A")
    return ops.global_avg_pool(y) @ p["fc"]["kernel"] + p["fc"]["bias"], new


@pytest.mark.parametrize("train", [True, False])
def test_network_composed_from_pure_functions_matches_pytorch(train):
    """ResNet-20 written with cnnjax.ops only, on the registry model's initial parameters (with
    randomised batch-norm numbers): logits, gradients of the mean squared logit and the updated
    running statistics against the functional PyTorch ResNet-20 in float64."""
    model = models.create("cifar_resnet20")
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 32, 32, 3))
    v = model.init(jax.random.PRNGKey(1), x, train=False)
    params, stats = _randomize(v["params"], 4), _randomize(v["batch_stats"], 5)

    def loss(p):
        out, new = _pure_cifar_resnet({"params": p, "batch_stats": stats}, x, train)
        return jnp.mean(out ** 2), (out, new)

    (_, (out, new)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    tp = tr.to_torch(params, requires_grad=True)
    t_out, t_new = tr.cifar_resnet(tp, tr.to_torch(stats), torch.tensor(
        np.asarray(x, np.float64).transpose(0, 3, 1, 2)), depth=20, train=train)
    (t_out ** 2).mean().backward()
    _close(out, t_out.detach().numpy(), "logits", rtol=1e-3)
    _compare_trees(grads, tr.from_torch_tree(jax.tree_util.tree_map(lambda t: t.grad, tp)),
                   "gradient", rtol=2e-3)
    if train:
        _compare_trees(new, tr.from_torch_tree(t_new), "running statistics", rtol=1e-3)


def test_init_functions_make_the_documented_trees():
    params, stats = ops.init_bottleneck_block(jax.random.PRNGKey(0), 64, 256, stride=2)
    assert params["conv2"]["kernel"].shape == (3, 3, 64, 64)
    assert params["downsample"]["conv"]["kernel"].shape == (1, 1, 64, 256)
    assert set(stats) == {"bn1", "bn2", "bn3", "downsample"} and stats["bn3"]["var"].shape == (256,)
    y, new = ops.bottleneck_block(params, jnp.ones((1, 8, 8, 64)), stride=2, train=True, batch_stats=stats)
    assert y.shape == (1, 4, 4, 256) and jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(stats)


def test_kernels_are_he_normal_fan_out_like_torch():
    """With C_in = 16 != C_out = 64 fan-out and fan-in differ by 4x in variance. Each kernel's
    values against torch's kaiming_normal_(mode="fan_out", nonlinearity="relu") on a kernel of
    the same shape: a two-sample Kolmogorov-Smirnov test (same distribution) and an F test on
    the variances; the fan-in variant must fail the F test."""
    params, _ = ops.init_basic_block(jax.random.PRNGKey(1), 16, 64, stride=2)
    kernels = {"conv1": params["conv1"]["kernel"], "conv2": params["conv2"]["kernel"],
               "downsample": params["downsample"]["conv"]["kernel"]}
    torch.manual_seed(0)
    for name, k in kernels.items():
        kh, kw, cin, cout = k.shape
        want = torch.empty(cout, cin, kh, kw)
        torch.nn.init.kaiming_normal_(want, mode="fan_out", nonlinearity="relu")
        got, want = np.asarray(k, np.float64).ravel(), want.numpy().astype(np.float64).ravel()
        assert st.ks_2samp(got, want).pvalue > 1e-3, name
        f_p = lambda a, b: 2 * min(st.f.cdf(a.var() / b.var(), a.size - 1, b.size - 1),
                                   st.f.sf(a.var() / b.var(), a.size - 1, b.size - 1))
        assert f_p(got, want) > 1e-3, f"{name}: std {got.std():.4f} vs torch's {want.std():.4f}"
        if cin != cout:
            fan_in = want * np.sqrt(cout / cin)  # what mode="fan_in" would give
            assert f_p(got, fan_in) < 1e-6, name


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
