"""Optimisers and schedules built from configs, against values computed by hand."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from cnnjax import models
from cnnjax.train.optim import current_scale, make_optimizer, make_schedule, optimizer_config


def _config(optimizer: dict, schedule: dict) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"optimizer": optimizer, "schedule": schedule})


def test_resnet_cifar_piecewise_schedule():
    # He et al.: 0.1, divided by 10 at 32k and 48k iterations.
    c = _config({"name": "sgd", "learning_rate": 0.1},
                {"name": "piecewise", "boundaries_steps": [32000, 48000], "scales": [0.1, 0.1]})
    s = make_schedule(c, steps_per_epoch=391, total_steps=64000)
    for step, lr in [(0, 0.1), (31999, 0.1), (32000, 0.01), (47999, 0.01), (48000, 0.001), (63999, 0.001)]:
        assert float(s(step)) == pytest.approx(lr, rel=1e-6)


def test_warmup_cosine_and_exponential_and_warmup_piecewise():
    c = _config({"name": "sgd", "learning_rate": 1.0}, {"name": "warmup_cosine", "warmup_epochs": 1.0})
    s = make_schedule(c, steps_per_epoch=10, total_steps=110)
    assert float(s(0)) == 0.0 and float(s(5)) == pytest.approx(0.5)
    assert float(s(10)) == pytest.approx(1.0)
    assert float(s(60)) == pytest.approx(0.5 * (1 + np.cos(np.pi * 50 / 100)), abs=1e-6)
    # EfficientNet: x0.97 every 2.4 epochs (staircase).
    c = _config({"name": "rmsprop", "learning_rate": 0.256},
                {"name": "exponential", "decay_epochs": 2.4, "decay_rate": 0.97})
    s = make_schedule(c, steps_per_epoch=10, total_steps=1000)
    assert float(s(23)) == pytest.approx(0.256) and float(s(24)) == pytest.approx(0.256 * 0.97)
    assert float(s(48)) == pytest.approx(0.256 * 0.97 ** 2)
    # Warm-up in front of a step schedule keeps the boundaries at their true steps.
    c = _config({"name": "sgd", "learning_rate": 0.1},
                {"name": "piecewise", "boundaries_epochs": [3], "scales": [0.1], "warmup_epochs": 1})
    s = make_schedule(c, steps_per_epoch=10, total_steps=50)
    assert float(s(5)) == pytest.approx(0.05) and float(s(29)) == pytest.approx(0.1)
    assert float(s(30)) == pytest.approx(0.01)


def test_resnet110_constant_warmup_and_the_fast_cifar_triangle():
    # He et al.'s ResNet-110: 0.01 for the first 400 iterations, then the 0.1 step schedule.
    c = _config({"name": "sgd", "learning_rate": 0.1},
                {"name": "piecewise", "boundaries_steps": [32000], "scales": [0.1],
                 "constant_warmup_steps": 400, "constant_warmup_scale": 0.1})
    s = make_schedule(c, steps_per_epoch=391, total_steps=64000)
    for step, lr in [(0, 0.01), (399, 0.01), (400, 0.1), (31999, 0.1), (32000, 0.01)]:
        assert float(s(step)) == pytest.approx(lr, rel=1e-6)
    # Triangle: 0 at epoch 0, peak 0.4 at epoch 5, 0 at epoch 24 (10 steps per epoch).
    c = _config({"name": "sgd", "learning_rate": 0.4},
                {"name": "piecewise_linear", "knots_epochs": [0, 5, 24], "scales": [0.0, 1.0, 0.0]})
    s = make_schedule(c, steps_per_epoch=10, total_steps=240)
    for step, lr in [(0, 0.0), (25, 0.2), (50, 0.4), (145, 0.2), (240, 0.0), (300, 0.0)]:
        assert float(s(step)) == pytest.approx(lr, abs=1e-6)
    with pytest.raises(ValueError, match="must be increasing"):
        make_schedule(_config({"name": "sgd", "learning_rate": 0.4},
                              {"name": "piecewise_linear", "knots_epochs": [5, 0],
                               "scales": [1.0, 0.0]}), 10, 100)


def _one_update(optimizer: dict, params, grads):
    c = _config(optimizer, {"name": "constant"})
    tx = make_optimizer(c, make_schedule(c, 1, 10), steps_per_epoch=1, total_steps=10)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    return updates


def test_coupled_l2_vs_decoupled_decay_by_hand():
    p, g = {"w": jnp.full((2, 2), 2.0)}, {"w": jnp.full((2, 2), 0.5)}
    # Coupled: SGD on g + wd * p -> -lr (g + wd p) = -0.1 (0.5 + 0.1 * 2) = -0.07.
    u = _one_update({"name": "sgd", "learning_rate": 0.1, "weight_decay": 0.1}, p, g)
    np.testing.assert_allclose(u["w"], -0.07, rtol=1e-6)
    # Adam's first step is -lr * sign(g); coupled decay goes inside Adam's normalisation (still
    # -lr), decoupled decay is added after it: -lr (1 + wd p) = -0.1 (1 + 0.2) = -0.12.
    u = _one_update({"name": "adam", "learning_rate": 0.1, "weight_decay": 0.1}, p, g)
    np.testing.assert_allclose(u["w"], -0.1, rtol=1e-4)
    u = _one_update({"name": "adamw", "learning_rate": 0.1, "weight_decay": 0.1}, p, g)
    np.testing.assert_allclose(u["w"], -0.12, rtol=1e-4)


def test_nesterov_momentum_second_step_by_hand():
    c = _config({"name": "sgd", "learning_rate": 1.0, "momentum": 0.9, "nesterov": True}, {"name": "constant"})
    tx = make_optimizer(c, make_schedule(c, 1, 10), steps_per_epoch=1, total_steps=10)
    p, g = {"w": jnp.zeros(())}, {"w": jnp.ones(())}
    state = tx.init(p)
    u1, state = tx.update(g, state, p)
    u2, state = tx.update(g, state, p)
    # Nesterov: v_t = 0.9 v + g; update = -(g + 0.9 v_t): -(1 + 0.9) then -(1 + 0.9 * 1.9).
    assert float(u1["w"]) == pytest.approx(-1.9) and float(u2["w"]) == pytest.approx(-(1 + 0.9 * 1.9))


def test_gradient_clipping_and_unknown_names():
    p, g = {"w": jnp.zeros(4)}, {"w": jnp.full(4, 3.0)}  # norm 6
    u = _one_update({"name": "sgd", "learning_rate": 1.0, "grad_clip_norm": 1.5}, p, g)
    np.testing.assert_allclose(np.linalg.norm(u["w"]), 1.5, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown optimizer 'sgdd'"):
        _one_update({"name": "sgdd", "learning_rate": 1.0}, p, g)
    with pytest.raises(ValueError, match="unknown schedule"):
        make_schedule(_config({"name": "sgd", "learning_rate": 1.0}, {"name": "cyclic"}), 1, 1)


def _lars_numpy(params, grads_seq, lrs, momentum, adapted, wd=0.0, eta=1e-3, nesterov=False):
    """You et al. 2017, Algorithm 1, per layer, float64, with the global rate lrs[t] at step t:
    local_lr = eta ||w|| / (||g|| + wd ||w||) (eq. 6), v = m v + lr local_lr (g + wd w),
    w = w - v. Layers not in `adapted` (biases) take neither: v = m v + lr g. local_lr is 1
    where ||w|| or ||g|| is 0 (TensorFlow's LARSOptimizer). nesterov (TensorFlow's momentum):
    w = w - (lr local_lr (g + wd w) + m v) with the new v."""
    w = {k: np.asarray(x, np.float64) for k, x in params.items()}
    v = {k: np.zeros_like(x) for k, x in w.items()}
    for lr, grads in zip(lrs, grads_seq):
        for k in w:
            g = np.asarray(grads[k], np.float64)
            local_lr, d = 1.0, g
            if k in adapted:
                w_norm = np.sqrt(np.sum(w[k] ** 2))
                g_norm = np.sqrt(np.sum(g ** 2))
                if w_norm > 0 and g_norm > 0:
                    local_lr = eta * w_norm / (g_norm + wd * w_norm)
                d = g + wd * w[k]
            v[k] = momentum * v[k] + lr * local_lr * d
            w[k] = w[k] - (lr * local_lr * d + momentum * v[k] if nesterov else v[k])
    return w


def _lamb_numpy(params, grads_seq, lr, wd, decayed, b1=0.9, b2=0.999, eps=1e-6):
    """You et al. 2019, Algorithm 2 (LAMB, phi = identity), per layer, float64: Adam's bias-
    corrected m / (sqrt(v) + eps), plus wd w on the `decayed` layers, scaled by ||w|| / ||r||."""
    w = {k: np.asarray(x, np.float64) for k, x in params.items()}
    m = {k: np.zeros_like(x) for k, x in w.items()}
    v = {k: np.zeros_like(x) for k, x in w.items()}
    for t, grads in enumerate(grads_seq, start=1):
        for k in w:
            g = np.asarray(grads[k], np.float64)
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g * g
            r = (m[k] / (1 - b1 ** t)) / (np.sqrt(v[k] / (1 - b2 ** t)) + eps)
            if k in decayed:
                r = r + wd * w[k]
            w[k] = w[k] - lr * np.linalg.norm(w[k]) / np.linalg.norm(r) * r
    return w


def _run(optimizer: dict, params, grads_seq, schedule: dict | None = None):
    c = _config(optimizer, schedule or {"name": "constant"})
    tx = make_optimizer(c, make_schedule(c, 1, 10), steps_per_epoch=1, total_steps=10)
    state = tx.init(params)
    for grads in grads_seq:
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


def _layers(seed):
    rng = np.random.default_rng(seed)
    # Layers of very different scales: the per-layer trust ratio is what makes the steps differ.
    return {"kernel": jnp.asarray(rng.standard_normal((3, 4)) * 5, jnp.float32),
            "bias": jnp.asarray(rng.standard_normal(4) * 0.1, jnp.float32)}


def test_lars_three_steps_against_a_numpy_step():
    # No decay; the 1-D bias is left out of the trust ratio by the default mask.
    params = _layers(0)
    grads_seq = [_layers(s) for s in (1, 2, 3)]
    got = _run({"name": "lars", "learning_rate": 0.5, "momentum": 0.9}, params, grads_seq)
    want = _lars_numpy(params, grads_seq, lrs=[0.5] * 3, momentum=0.9, adapted={"kernel"})
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-7, err_msg=k)


@pytest.mark.parametrize("nesterov", [False, True])
def test_lars_with_weight_decay_a_schedule_and_zero_norms_against_a_numpy_step(nesterov):
    """Algorithm 1 with decay: the trust ratio's denominator is ||g|| + wd ||w||, not
    ||g + wd w||; gradients small next to wd ||w|| make the two differ by a third. The bias is
    neither decayed nor adapted; `zero` starts at 0 (local rate 1 at the first step), `still`
    gets no gradient at the first step (local rate 1, the step is the decay alone). The rate
    halves at every step, so it must sit inside the momentum buffer."""
    rng = np.random.default_rng(0)
    as32 = lambda tree: {k: jnp.asarray(x, jnp.float32) for k, x in tree.items()}
    params = {"kernel": rng.standard_normal((3, 4)) * 5, "bias": rng.standard_normal(4) * 0.1,
              "zero": np.zeros((2, 3)), "still": rng.standard_normal((2, 2))}
    grads_seq = [{"kernel": rng.standard_normal((3, 4)) * 0.5, "bias": rng.standard_normal(4),
                  "zero": rng.standard_normal((2, 3)), "still": rng.standard_normal((2, 2))}
                 for _ in range(3)]
    grads_seq[0]["still"] = np.zeros((2, 2))
    optimizer = {"name": "lars", "learning_rate": 1.0, "momentum": 0.9, "nesterov": nesterov,
                 "weight_decay": 0.1, "trust_coefficient": 0.02, "decay_norm_and_bias": False}
    schedule = {"name": "piecewise", "boundaries_steps": [1, 2], "scales": [0.5, 0.5]}
    got = _run(optimizer, as32(params), [as32(g) for g in grads_seq], schedule)
    want = _lars_numpy(params, grads_seq, lrs=[1.0, 0.5, 0.25], momentum=0.9,
                       adapted={"kernel", "zero", "still"}, wd=0.1, eta=0.02, nesterov=nesterov)
    for k in want:
        assert not np.allclose(want[k], params[k], rtol=1e-3), k  # every layer moved
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_lars_refuses_decoupled_decay():
    with pytest.raises(ValueError, match="decoupled_weight_decay=True does not apply to lars"):
        _run(optimizer_config("lars", learning_rate=0.1, weight_decay=1e-4,
                              decoupled_weight_decay=True), _layers(0), [_layers(1)])


@pytest.mark.parametrize("moments", [{}, {"b1": 0.8, "b2": 0.99, "eps": 1e-3}])
def test_lamb_three_steps_against_a_numpy_step(moments):
    params = _layers(0)
    grads_seq = [_layers(s) for s in (1, 2, 3)]
    got = _run({"name": "lamb", "learning_rate": 0.05, "weight_decay": 0.1,
                "decay_norm_and_bias": False, **moments}, params, grads_seq)
    want = _lamb_numpy(params, grads_seq, lr=0.05, wd=0.1, decayed={"kernel"}, **moments)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-7, err_msg=k)


def _adam_rmsprop_numpy(name, params, grads_seq, lr, wd, decayed, decoupled=False, b1=0.9,
                        b2=0.999, eps=1e-8, rho=0.9, rms_eps=1e-3, momentum=0.0):
    """float64, per leaf, the weight decay on the `decayed` leaves. Adam (Kingma & Ba 2015,
    Algorithm 1): bias-corrected m / (sqrt(v) + eps); coupled L2 adds wd w to the gradient
    before the moments, decoupled decay (AdamW) adds wd w to the step. RMSProp as TensorFlow 1's
    RMSPropOptimizer: ms starts at 1, ms = rho ms + (1 - rho) g^2, step g / sqrt(ms + eps), then
    momentum mom = momentum mom + step; coupled L2 adds wd w to the gradient."""
    w = {k: np.asarray(x, np.float64) for k, x in params.items()}
    m = {k: np.zeros_like(x) for k, x in w.items()}
    v = {k: np.zeros_like(x) if name == "adam" else np.ones_like(x) for k, x in w.items()}
    for t, grads in enumerate(grads_seq, start=1):
        for k in w:
            g = np.asarray(grads[k], np.float64)
            decay = wd * w[k] if k in decayed else 0.0
            if not decoupled:
                g = g + decay
            if name == "adam":
                m[k] = b1 * m[k] + (1 - b1) * g
                v[k] = b2 * v[k] + (1 - b2) * g ** 2
                step = (m[k] / (1 - b1 ** t)) / (np.sqrt(v[k] / (1 - b2 ** t)) + eps)
            else:
                v[k] = rho * v[k] + (1 - rho) * g ** 2
                m[k] = momentum * m[k] + g / np.sqrt(v[k] + rms_eps)
                step = m[k]
            w[k] = w[k] - lr * (step + (decay if decoupled else 0.0))
    return w


@pytest.mark.parametrize("optimizer, reference", [
    ({"name": "adam", "learning_rate": 0.05, "weight_decay": 0.5}, {"name": "adam"}),
    ({"name": "adamw", "learning_rate": 0.05, "weight_decay": 0.5},
     {"name": "adam", "decoupled": True}),
    ({"name": "rmsprop", "learning_rate": 0.02, "weight_decay": 0.5, "momentum": 0.9},
     {"name": "rmsprop", "momentum": 0.9}),
], ids=["adam_coupled_l2", "adamw", "rmsprop_l2_momentum"])
def test_adam_and_rmsprop_with_weight_decay_four_steps_against_numpy(optimizer, reference):
    """Adam's first step is -lr sign(g) whatever the coupled decay, so only later steps can show
    the decay; the kernel is decayed, the bias is not (the default mask)."""
    params = _layers(0)
    grads_seq = [_layers(s) for s in (1, 2, 3, 4)]
    got = _run(optimizer, params, grads_seq)
    lr, wd = optimizer["learning_rate"], optimizer["weight_decay"]
    want = _adam_rmsprop_numpy(params=params, grads_seq=grads_seq, lr=lr, wd=wd,
                               decayed={"kernel"}, **reference)
    undecayed = _adam_rmsprop_numpy(params=params, grads_seq=grads_seq, lr=lr, wd=0.0,
                                    decayed=set(), **reference)
    # The decay moves the kernel well beyond the tolerance: a dropped decay would fail.
    assert np.max(np.abs(want["kernel"] - undecayed["kernel"])) > 1e-2
    np.testing.assert_allclose(want["bias"], undecayed["bias"])
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_rmsprop_first_step_by_hand():
    # TF1 RMSPropOptimizer: ms starts at 1, ms = 0.9 * 1 + 0.1 g^2, update = -lr g / sqrt(ms + eps).
    p, g = {"w": jnp.zeros(())}, {"w": jnp.full((), 2.0)}
    u = _one_update({"name": "rmsprop", "learning_rate": 0.01, "eps": 1e-3}, p, g)
    assert float(u["w"]) == pytest.approx(-0.01 * 2.0 / np.sqrt(0.9 + 0.1 * 4.0 + 1e-3), rel=1e-6)


def test_no_decay_mask_on_a_small_model_by_hand():
    """simple_cnn with batch norm: with zero gradients an update is -lr * wd * p exactly on the
    decayed leaves and 0 elsewhere. By default (and with the decoupled AdamW decay) only the
    four kernels are decayed; decay_norm_and_bias=True decays every leaf."""
    model = models.create("simple_cnn", num_classes=10, batch_norm=True)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)),
                                               train=False)["params"])
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.standard_normal(s.shape), jnp.float32), shapes)
    kernels = {"Conv_0/kernel", "Conv_1/kernel", "Dense_0/kernel", "Dense_1/kernel"}
    not_decayed = {"BatchNorm_0/scale", "BatchNorm_0/bias", "BatchNorm_1/scale", "BatchNorm_1/bias",
                   "Dense_0/bias", "Dense_1/bias"}
    assert set(_flat(params)) == kernels | not_decayed
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    for fields, decayed in [({"name": "sgd"}, kernels),
                            ({"name": "adamw"}, kernels),
                            ({"name": "sgd", "decay_norm_and_bias": True}, kernels | not_decayed)]:
        u = _flat(_one_update(optimizer_config(learning_rate=0.5, weight_decay=0.1, **fields),
                              params, zeros))
        for name, p in _flat(params).items():
            want = -0.5 * 0.1 * p if name in decayed else np.zeros_like(p)
            np.testing.assert_allclose(u[name], want, rtol=1e-6, atol=1e-12,
                                       err_msg=f"{fields} {name}")


def _flat(tree) -> dict[str, np.ndarray]:
    return {"/".join(k.key for k in path): np.asarray(v)
            for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_adaptive_gradient_clipping_by_hand():
    """Brock et al. 2021, eq. 3: each unit's gradient G_i (an output unit: the column of a dense
    kernel, the HWI slice of a conv kernel, a whole bias vector) is rescaled to
    lambda * max(||W_i||, 1e-3) when ||G_i|| / max(||W_i||, 1e-3) > lambda; the "head" is left
    alone (sec. 4.1)."""
    rng = np.random.default_rng(0)
    clip = 0.05
    params = {"conv": {"kernel": rng.standard_normal((3, 3, 2, 4)), "bias": rng.standard_normal(4)},
              "head": {"kernel": rng.standard_normal((5, 3))}}
    params["conv"]["kernel"][..., 0] = 0.0  # a zero unit: clipped against eps = 1e-3
    grads = {"conv": {"kernel": rng.standard_normal((3, 3, 2, 4)) * 0.1,
                      "bias": rng.standard_normal(4)},
             "head": {"kernel": rng.standard_normal((5, 3)) * 10}}
    grads["conv"]["kernel"][..., 3] *= 1e-3  # a unit below the threshold: unchanged
    want = {"conv": {}, "head": {"kernel": grads["head"]["kernel"]}}
    w, g = params["conv"]["kernel"], grads["conv"]["kernel"]
    out = np.empty_like(g)
    for o in range(4):
        w_norm = max(np.sqrt(np.sum(w[..., o] ** 2)), 1e-3)
        g_norm = np.sqrt(np.sum(g[..., o] ** 2))
        out[..., o] = g[..., o] * (clip * w_norm / g_norm if g_norm / w_norm > clip else 1.0)
    assert not np.allclose(out[..., :3], g[..., :3]) and np.allclose(out[..., 3], g[..., 3])
    want["conv"]["kernel"] = out
    b, gb = params["conv"]["bias"], grads["conv"]["bias"]
    want["conv"]["bias"] = gb * min(1.0, clip * np.linalg.norm(b) / np.linalg.norm(gb))
    as32 = lambda tree: jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), tree)
    u = _one_update(optimizer_config("sgd", learning_rate=1.0, agc_clip=clip), as32(params),
                    as32(grads))
    for name, value in _flat(want).items():
        np.testing.assert_allclose(_flat(u)[name], -value, rtol=1e-5, atol=1e-7, err_msg=name)


def test_reduce_on_plateau_by_hand():
    """Epochs of 2 steps, patience 2, factor 0.1, min_scale 1e-3, relative threshold 1e-4 on the
    epoch-averaged loss. The reduced rate starts with the epoch after the one that decided it,
    and the logged rate (current_scale of the state before the update) is the applied one."""
    epoch_losses = [(1.0, 1.0), (0.8, 0.8), (0.9, 0.9), (0.85, 0.79), (0.5, 0.5), (0.6, 0.6),
                    (0.6, 0.6), (0.6, 0.6), (0.6, 0.6), (0.6, 0.6), (0.6, 0.6)]
    # Averages 1.0, 0.8 (best), 0.9 (bad 1), 0.82 (bad 2: x0.1 from epoch 4), 0.5 (best),
    # 0.6 (bad 1), 0.6 (bad 2: x0.1 from epoch 7), bad 1, bad 2 (x0.1 from epoch 9: 1e-3, the
    # floor), then no lower.
    scales = [1, 1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01, 1e-3, 1e-3]
    c = _config(optimizer_config("sgd", learning_rate=0.5),
                {"name": "reduce_on_plateau", "factor": 0.1, "patience": 2, "min_scale": 1e-3})
    tx = make_optimizer(c, make_schedule(c, 2, 22), steps_per_epoch=2, total_steps=22)
    p, g = {"w": jnp.zeros(())}, {"w": jnp.ones(())}
    state, update = tx.init(p), jax.jit(tx.update)
    for epoch, (losses, scale) in enumerate(zip(epoch_losses, scales)):
        for loss in losses:
            assert float(current_scale(state)) == pytest.approx(scale, rel=1e-6), epoch
            u, state = update(g, state, p, value=jnp.asarray(loss))
            assert float(u["w"]) == pytest.approx(-0.5 * scale, rel=1e-6), epoch


def test_every_config_states_whether_it_decays_norm_parameters_and_biases():
    """The default leaves them out; a config must say so itself, with its source in a comment,
    rather than inherit the default silently."""
    from conftest import REPO_ROOT

    for path in sorted((REPO_ROOT / "configs").glob("*.py")):
        lines = path.read_text().splitlines()
        stated = [i for i, line in enumerate(lines) if "decay_norm_and_bias=" in line]
        assert len(stated) == 1, f"{path.name} does not state decay_norm_and_bias once"
        i = stated[0]
        assert "#" in lines[i] or lines[i - 1].strip().startswith("#"), \
            f"{path.name}: decay_norm_and_bias has no comment giving its source"
