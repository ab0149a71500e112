"""The ResNet family: the papers' parameter counts, PyTorch equivalence, shapes, BN modes against
PyTorch's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import torch_resnet as tr
from cnnjax import models

COUNTS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
          "resnet101": 44_549_160, "resnet152": 60_192_808, "plain18": 11_515_688,
          "plain34": 21_623_848, "cifar_resnet20": 269_722, "cifar_resnet32": 464_154,
          "cifar_resnet44": 658_586, "cifar_resnet56": 853_018, "cifar_resnet110": 1_727_962,
          "preact_resnet18": 11_687_720, "preact_resnet50": 25_549_352,
          "wide_resnet50_2": 68_883_240, "resnext50_32x4d": 25_028_904}


def count_params(name, **overrides):
    spec = models.get_spec(name)
    model = models.create(name, **overrides)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *spec.input_shape)),
                                               train=False))
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes["params"]))


@pytest.mark.parametrize("name,count", COUNTS.items())
def test_parameter_counts(name, count):
    assert count_params(name) == count


def test_cifar_plain_nets_differ_from_resnets_only_by_having_no_shortcut():
    # Option-A shortcuts are parameter-free, so plain and residual CIFAR nets have equal counts.
    for depth in (20, 56, 110):
        assert count_params(f"cifar_plain{depth}") == count_params(f"cifar_resnet{depth}")


@pytest.mark.parametrize("name,block,layers,kw", [
    ("resnet18", tr.BasicBlock, (2, 2, 2, 2), {}),
    ("resnext50_32x4d", tr.Bottleneck, (3, 4, 6, 3), {"groups": 32, "width_per_group": 4}),
])
def test_from_torch_matches_pytorch_logits(name, block, layers, kw):
    torch.manual_seed(0)
    net = tr.ResNet(block, layers, num_classes=10, **kw)
    tr.randomize_batch_norm(net)
    net.eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.tensor(x)).numpy()
    variables = models.from_torch(name, net.state_dict(), num_classes=10)
    got = models.create(name, num_classes=10).apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1)), train=False)
    assert np.linalg.norm(np.asarray(got) - want) / np.linalg.norm(want) < 1e-4


def test_from_torch_names_the_first_mismatch():
    net = tr.ResNet(tr.BasicBlock, (2, 2, 2, 2), num_classes=10)
    with pytest.raises(ValueError, match=r"shape"):
        models.from_torch("resnet34", net.state_dict(), num_classes=10)  # 34 expects more blocks
    sd = net.state_dict()
    sd["layer1.0.conv1.weight"] = torch.zeros(64, 64, 5, 5)
    with pytest.raises(ValueError, match=r"layer1\.0\.conv1\.weight.*\(5, 5, 64, 64\)"):
        models.from_torch("resnet18", sd, num_classes=10)


def _max_rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


def test_train_and_eval_batch_norm_against_pytorch():
    """cifar_resnet20 in training mode (batch statistics, running-statistics update with
    momentum 0.1 in PyTorch's terms) and then in evaluation mode with the updated statistics,
    against the functional PyTorch ResNet-20 (torch_resnet.cifar_resnet) in float64."""
    model = models.create("cifar_resnet20")
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 32, 32, 3)) * 2 + 1
    v = model.init(jax.random.PRNGKey(1), x, train=False)
    logits, updates = model.apply(v, x, train=True, mutable=["batch_stats"])
    x_t = torch.tensor(np.asarray(x, np.float64).transpose(0, 3, 1, 2))
    with torch.no_grad():
        want, want_stats = tr.cifar_resnet(tr.to_torch(v["params"]), tr.to_torch(v["batch_stats"]),
                                           x_t, depth=20, train=True)
    assert _max_rel_err(logits, want.numpy()) < 1e-4
    got_stats = jax.tree_util.tree_leaves_with_path(updates["batch_stats"])
    want_stats = dict(jax.tree_util.tree_leaves_with_path(tr.from_torch_tree(want_stats)))
    assert len(got_stats) == len(want_stats) == 2 * 19  # mean and var of 19 batch norms
    for path, leaf in got_stats:
        assert _max_rel_err(leaf, want_stats[path]) < 1e-4, jax.tree_util.keystr(path)
    # Evaluation uses the running statistics: per example, so independent of the batch.
    trained = {**v, "batch_stats": updates["batch_stats"]}
    eval_logits = model.apply(trained, x, train=False)
    with torch.no_grad():
        want_eval, _ = tr.cifar_resnet(tr.to_torch(v["params"]),
                                       tr.to_torch(updates["batch_stats"]), x_t, depth=20,
                                       train=False)
    assert _max_rel_err(eval_logits, want_eval.numpy()) < 1e-4
    np.testing.assert_allclose(np.asarray(model.apply(trained, x[:1], train=False)),
                               np.asarray(eval_logits[:1]), rtol=1e-5, atol=1e-5)


def test_other_input_sizes_work_with_the_224_parameters():
    # Every downsampling layer is padded, so any size runs, even 1x1 (tests/test_models_registry.py
    # derives that from the layer list), with the parameters built at 224x224.
    model = models.create("resnet18", num_classes=5)
    v = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3)), train=False))
    for shape in [(1, 320, 288, 3), (1, 16, 16, 3), (1, 1, 1, 3)]:
        out = jax.eval_shape(lambda v_: model.apply(v_, jnp.zeros(shape), train=False), v)
        assert out.shape == (1, 5), shape


def test_bfloat16_compute_keeps_float32_params():
    model = models.create("cifar_resnet20", dtype=jnp.bfloat16)
    x = jnp.ones((2, 32, 32, 3))
    v = model.init(jax.random.PRNGKey(0), x, train=False)
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(v["params"]))
    ref = models.create("cifar_resnet20").apply(v, x, train=False)
    out = model.apply(v, x, train=False)
    assert np.linalg.norm(np.asarray(out) - np.asarray(ref)) / np.linalg.norm(np.asarray(ref)) < 5e-2


def test_remat_gives_identical_gradients():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
    y = jnp.array([1, 2])
    plain, remat = models.create("cifar_resnet20"), models.create("cifar_resnet20", remat=True)
    v = plain.init(jax.random.PRNGKey(1), x, train=False)

    def grads(m):
        def loss(p):
            out, _ = m.apply({**v, "params": p}, x, train=True, mutable=["batch_stats"])
            return jnp.mean(jax.nn.log_softmax(out)[jnp.arange(2), y])
        return jax.jit(jax.grad(loss))(v["params"])

    for a, b in zip(jax.tree_util.tree_leaves(grads(plain)), jax.tree_util.tree_leaves(grads(remat))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
