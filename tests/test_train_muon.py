"""Muon (cnnjax/train/muon.py) and the per-parameter optimizer groups of cnnjax.train.optim, as
configs/airbench94_muon.py uses them, against independent references: a float64 NumPy
transcription of airbench94_muon.py's `zeropower_via_newtonschulz5` and Muon step, and the
PyTorch port (experiments/airbench94/torch_airbench_muon.py: torch.optim.SGD + its Muon) run in
float64 on the same tensors."""

from __future__ import annotations

import math
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import torch

from cnnjax import models
from cnnjax.sweep.config_file import load_module
from cnnjax.train.muon import newton_schulz5
from cnnjax.train.optim import make_optimizer, make_schedule, optimizer_config
from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "experiments" / "airbench94"))
import torch_airbench_muon  # noqa: E402


def _config(arg=None) -> ml_collections.ConfigDict:
    return load_module(REPO_ROOT / "configs" / "airbench94_muon.py").get_config(arg)


def _np_newton_schulz5(g: np.ndarray, steps: int = 3, eps: float = 1e-7) -> np.ndarray:
    """airbench94_muon.py's iteration in float64: X = G/(|G|+eps), X^T if tall, then
    X <- a X + (b A + c A^2) X with A = X X^T."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g / (np.linalg.norm(g) + eps)
    tall = g.shape[0] > g.shape[1]
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


@pytest.mark.parametrize("shape", [(8, 27), (27, 8), (16, 16), (64, 216)])
def test_newton_schulz_matches_the_float64_original(shape):
    g = np.random.default_rng(shape[0]).normal(size=shape)
    want = _np_newton_schulz5(g)
    got32 = np.asarray(newton_schulz5(jnp.asarray(g, jnp.float32), dtype=jnp.float32))
    np.testing.assert_allclose(got32, want, rtol=1e-4, atol=1e-5)
    # bfloat16 (the original's dtype) keeps 8 bits, which the quintic's large coefficients
    # amplify over 3 steps: 2.7% relative error measured for (8, 27), the same order as
    # PyTorch's bfloat16 run of the original (checked beside it).
    got16 = np.asarray(newton_schulz5(jnp.asarray(g, jnp.float32)), np.float64)
    torch16 = torch_airbench_muon.newton_schulz5(torch.tensor(g), 3, torch.bfloat16).double()
    for bf16 in (got16, torch16.numpy()):
        assert np.linalg.norm(bf16 - want) / np.linalg.norm(want) < 5e-2


@pytest.mark.parametrize("shape", [(64, 216), (256, 576), (256, 2304), (10, 256)])
def test_orthogonalised_singular_values_in_the_originals_band(shape):
    """The docstring's claim: U S' V^T with S' within about (0.5, 1.5), for the filter banks'
    matrix shapes (Gaussian matrices, as gradients of a fresh network roughly are)."""
    g = jnp.asarray(np.random.default_rng(1).normal(size=shape), jnp.float32)
    s = np.linalg.svd(np.asarray(newton_schulz5(g), np.float64), compute_uv=False)
    assert s.min() > 0.5 and s.max() < 1.5, (s.min(), s.max())
    # and not the identity map: the normalised input's singular values are all far below 0.5.
    s_in = np.linalg.svd(np.asarray(g, np.float64), compute_uv=False)
    assert s_in.max() / np.linalg.norm(s_in) < 0.4


def _nest(flat: dict) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _to_torch(a: np.ndarray) -> torch.Tensor:
    """HWIO kernels -> OIHW, (in, out) dense kernels -> (out, in), float64."""
    if a.ndim == 4:
        a = np.transpose(a, (3, 2, 0, 1))
    elif a.ndim == 2:
        a = a.T
    return torch.tensor(np.ascontiguousarray(a), dtype=torch.float64)


def _from_torch(t: torch.Tensor) -> np.ndarray:
    a = t.detach().numpy()
    return np.transpose(a, (2, 3, 1, 0)) if a.ndim == 4 else (a.T if a.ndim == 2 else a)


SHAPES = {"whiten/kernel": (2, 2, 3, 24), "whiten/bias": (24,), "block1/norm1/bias": (8,),
          "block1/conv1/kernel": (3, 3, 24, 8), "block1/conv2/kernel": (3, 3, 8, 8),
          "head/kernel": (8, 10)}


def test_config_optimizer_equals_the_pytorch_port_step_by_step():
    """configs/airbench94_muon.py's optimiser over 6 steps (2 per epoch, the whitening bias
    trained and decayed over epoch 0 only, the rest decayed over 3 epochs) against the PyTorch
    port's SGD groups and Muon in float64, on the same tensors and gradients."""
    config = _config()
    config.optimizer.groups.filters.ns_dtype = "float32"  # the reference runs float64
    steps_per_epoch, total = 2, 6
    config.schedule.knots_epochs = [0.0, 3.0]
    config.optimizer.groups.whiten_bias.schedule.knots_epochs = [0.0, 1.0]
    config.optimizer.freeze = [(r"^whiten/kernel$", 0.0), (r"^whiten/bias$", 1.0)]
    tx = make_optimizer(config, make_schedule(config, steps_per_epoch, total), steps_per_epoch,
                        total)
    rng = np.random.default_rng(0)
    init = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    grads = [{k: rng.normal(size=s) for k, s in SHAPES.items()} for _ in range(total)]
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), _nest(init))
    state = tx.init(params)
    for g in grads:
        g = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), _nest(g))
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)

    t = {k: _to_torch(v).requires_grad_(True) for k, v in init.items()}
    hyp = torch_airbench_muon.HYP
    wd = hyp["wd_per_example"] * hyp["batch_size"]
    sgd = torch.optim.SGD(
        [dict(params=[t["whiten/bias"]], lr=hyp["bias_lr"], weight_decay=wd / hyp["bias_lr"]),
         dict(params=[t["block1/norm1/bias"]], lr=hyp["bias_lr"],
              weight_decay=wd / hyp["bias_lr"]),
         dict(params=[t["head/kernel"]], lr=hyp["head_lr"], weight_decay=wd / hyp["head_lr"])],
        momentum=hyp["sgd_momentum"], nesterov=True)
    muon = torch_airbench_muon.Muon([t["block1/conv1/kernel"], t["block1/conv2/kernel"]],
                                    hyp["muon_lr"], hyp["muon_momentum"], hyp["ns_steps"],
                                    torch.float64)
    initial = [g["lr"] for g in sgd.param_groups + muon.param_groups]
    for step, g in enumerate(grads):
        for k in t:
            t[k].grad = _to_torch(g[k])
        t["whiten/kernel"].grad = None  # requires_grad=False in the original
        if step >= steps_per_epoch:
            t["whiten/bias"].grad = None  # whiten_bias_grad=False: no update, no decay
        lrs = [initial[0] * (1 - step / steps_per_epoch)] + [
            lr * (1 - step / total) for lr in initial[1:]]
        for group, lr in zip(sgd.param_groups + muon.param_groups, lrs):
            group["lr"] = lr
        with torch.no_grad():
            sgd.step()
        muon.step()
    got = {"/".join(str(k.key) for k in path): v
           for path, v in jax.tree_util.tree_leaves_with_path(params)}
    for name, value in got.items():
        np.testing.assert_allclose(np.asarray(value), _from_torch(t[name]), rtol=2e-5,
                                   atol=2e-6, err_msg=name)
    # The frozen kernel never moved.
    np.testing.assert_array_equal(np.asarray(params["whiten"]["kernel"]),
                                  init["whiten/kernel"].astype(np.float32))


def test_muon_step_against_a_numpy_transcription():
    """Two steps of one filter bank: momentum 0.6 Nesterov, renormalise to sqrt(C_out), NS5 of
    the (C_out, C_in kh kw) view (PyTorch's OIHW order), in float64 NumPy."""
    rng = np.random.default_rng(3)
    w0 = rng.normal(size=(3, 3, 4, 6))
    grads = [rng.normal(size=w0.shape) for _ in range(2)]
    lr, m = 0.24, 0.6
    config = ml_collections.ConfigDict({"optimizer": optimizer_config(
        "muon", learning_rate=lr, momentum=m, nesterov=True, ns_dtype="float32"),
        "schedule": {"name": "constant"}})
    tx = make_optimizer(config, make_schedule(config, 1, 2), 1, 2)
    w = jnp.asarray(w0, jnp.float32)
    state = tx.init(w)
    for g in grads:
        updates, state = tx.update(jnp.asarray(g, jnp.float32), state, w)
        w = optax.apply_updates(w, updates)

    p, buf = np.transpose(w0, (3, 2, 0, 1)), np.zeros((6, 4, 3, 3))
    for g in grads:
        g = np.transpose(g, (3, 2, 0, 1))
        buf = m * buf + g
        u = g + m * buf
        p = p * math.sqrt(len(p)) / np.linalg.norm(p)
        p = p - lr * _np_newton_schulz5(u.reshape(len(u), -1)).reshape(u.shape)
    np.testing.assert_allclose(np.asarray(w), np.transpose(p, (2, 3, 1, 0)), rtol=1e-4,
                               atol=1e-5)


def test_group_mistakes_are_one_line_errors():
    params = _nest({k: jnp.zeros(s) for k, s in SHAPES.items()})

    def build(groups):
        config = _config()
        config.optimizer.groups = groups
        return make_optimizer(config, make_schedule(config, 25, 200), 25, 200).init(params)

    with pytest.raises(ValueError, match=r"\['nothing'\] match no parameter"):
        build({"nothing": {"pattern": "^nope$"}})
    with pytest.raises(ValueError, match="all match parameter 'head/kernel'"):
        build({"a": {"pattern": "head"}, "b": {"pattern": "kernel$"}})
    with pytest.raises(ValueError, match=r"sets \['freeze'\], which act on every parameter"):
        build({"a": {"pattern": "head", "freeze": []}})
    with pytest.raises(ValueError, match="unknown optimizer 'sgdd'"):
        build({"a": {"pattern": "head", "name": "sgdd"}})


def test_config_is_the_originals_recipe():
    config = _config()
    assert (config.batch_size, config.num_train_steps) == (2000, 200)  # ceil(8 x 25)
    sched = make_schedule(config, 25, 200)
    for step in (0, 1, 100, 199):
        assert float(sched(step)) == pytest.approx(0.053 * (1 - step / 200), rel=1e-6)
    o = config.optimizer
    assert not o.get("lookahead_every", 0)
    assert (o.groups.filters.learning_rate, o.groups.filters.momentum) == (0.24, 0.6)
    assert o.groups.head.weight_decay * 0.67 == pytest.approx(2e-6 * 2000)
    assert o.weight_decay * 0.053 == pytest.approx(2e-6 * 2000)


def test_model_init_follows_airbench94_muon():
    """Unit-std head, PyTorch-uniform whitening bias, logits / 256 (muon); zero whitening bias
    (airbench94.py) by default."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
    muon = models.create("airbench94", whiten_bias="torch", head_unit_std=True,
                         logit_scale=1 / 256)
    v = jax.jit(lambda k: muon.init(k, x, train=False))(jax.random.PRNGKey(0))
    head = np.asarray(v["params"]["head"]["kernel"], np.float64)
    assert np.std(head, ddof=1) == pytest.approx(1.0, rel=1e-5)
    bias = np.asarray(v["params"]["whiten"]["bias"])
    bound = 1 / math.sqrt(2 * 2 * 3)
    assert np.all(np.abs(bias) <= bound) and np.std(bias) > bound / 4
    plain = models.create("airbench94")
    v94 = jax.jit(lambda k: plain.init(k, x, train=False))(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(np.asarray(v94["params"]["whiten"]["bias"]), 0.0)
    # The same weights under both scales: the logits differ by exactly 9/256.
    v94["params"]["head"] = v["params"]["head"]
    v94["params"]["whiten"] = v["params"]["whiten"]
    logits = jax.jit(lambda a, b: (muon.apply(a, x), plain.apply(b, x)))(v, v94)
    np.testing.assert_allclose(np.asarray(logits[0]) * 256, np.asarray(logits[1]) * 9,
                               rtol=1e-5, atol=1e-5)
