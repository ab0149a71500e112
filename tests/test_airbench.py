"""airbench94 (Jordan 2024) and its general tools, each against an independent reference:
NumPy float64 loops and eigendecompositions, PyTorch's SGD and max-pool, the paper's numbers."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import torch
from flax import linen as nn

from cnnjax import models, ops
from cnnjax.data.augment import normalize
from cnnjax.data.device_pipeline import DevicePipeline
from cnnjax.data.flip_translate import alternating_flip, flip_choice, translate_reflect
from cnnjax.data.source import ArraySource
from cnnjax.data.tta import average_logits, tta_views
from cnnjax.nn.init import dirac
from cnnjax.ops.whitening import patch_whitening_kernel
from cnnjax.sweep.config_file import load_module
from cnnjax.train import lookahead, trainer
from cnnjax.train.checkpoint import Checkpointer
from cnnjax.train.decoupled import decoupled_sgd
from cnnjax.train.optim import make_optimizer, make_schedule
from cnnjax.train.state import TrainState
from cnnjax.train.step import eval_step
from conftest import REPO_ROOT


def _config(arg=None) -> ml_collections.ConfigDict:
    return load_module(REPO_ROOT / "configs" / "airbench94.py").get_config(arg)


def _correlated_images(rng, n=40, size=9) -> np.ndarray:
    """Smooth, channel-correlated images, so the patch covariance is far from the identity."""
    base = rng.normal(size=(n, size + 2, size + 2, 1)).cumsum(1).cumsum(2) * 0.1
    mix = np.array([[1.0, 0.8, 0.6]])
    return (base * mix + 0.1 * rng.normal(size=(n, size + 2, size + 2, 3)))[:, 1:-1, 1:-1]


def _patches_by_loops(images: np.ndarray, k: int) -> np.ndarray:
    rows = []
    for img in images:
        for y in range(img.shape[0] - k + 1):
            for x in range(img.shape[1] - k + 1):
                rows.append(img[y:y + k, x:x + k, :].reshape(-1))  # HWC order
    return np.array(rows, np.float64)


def test_whitening_layer_output_has_identity_covariance_on_its_patches():
    rng = np.random.default_rng(0)
    images = _correlated_images(rng)
    patches = _patches_by_loops(images, 2)
    eigval = np.linalg.eigvalsh(patches.T @ patches / len(patches))[::-1]
    assert eigval[0] / eigval[-1] > 100  # the input is far from white
    for eps in (5e-4, 1e-9):
        kernel = patch_whitening_kernel(images.astype(np.float32), 2, eps)
        assert kernel.shape == (2, 2, 3, 24)
        out = np.asarray(ops.conv2d(jnp.asarray(images, jnp.float32), jnp.asarray(kernel)),
                         np.float64).reshape(-1, 24)
        np.testing.assert_allclose(out[:, 12:], -out[:, :12], rtol=1e-6, atol=1e-6)
        second_moment = out[:, :12].T @ out[:, :12] / len(out)
        # diag(l / (l + eps)) exactly; the identity when eps << l.
        np.testing.assert_allclose(second_moment, np.diag(eigval / (eigval + eps)), atol=2e-3)
    np.testing.assert_allclose(second_moment, np.eye(12), atol=2e-3)


def test_dirac_init_is_the_identity_on_the_first_channels():
    kernel = dirac(nn.initializers.lecun_normal())(jax.random.PRNGKey(0), (3, 3, 4, 6))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 7, 7, 4))
    y = np.asarray(ops.conv2d(x, kernel, padding=1))
    np.testing.assert_array_equal(y[..., :4], np.asarray(x))
    # The remaining filters keep the base initialiser's random values.
    assert np.std(np.asarray(kernel[..., 4:])) > 0.1
    # More inputs than outputs: every filter is an identity of its own input channel.
    wide = dirac(nn.initializers.zeros)(jax.random.PRNGKey(0), (3, 3, 5, 2))
    np.testing.assert_array_equal(np.asarray(ops.conv2d(jnp.ones((1, 3, 3, 5)) * jnp.arange(5.0),
                                                         wide, padding=1))[0, 1, 1], [0.0, 1.0])


def test_alternating_flip_flips_the_chosen_half_then_its_complement():
    n = 64
    images = np.random.default_rng(0).random((n, 4, 5, 3)).astype(np.float32)
    index = np.arange(n, dtype=np.int32) + 1000
    key = jax.random.PRNGKey(7)

    def flipped(epoch, order=np.arange(n)):
        out = np.asarray(alternating_flip(jnp.asarray(images[order]), jnp.asarray(index[order]),
                                          jnp.full(n, epoch, jnp.int32), key))
        result = np.zeros(n, bool)
        for row, i in enumerate(order):
            is_flip = np.array_equal(out[row], images[i][:, ::-1])
            assert is_flip or np.array_equal(out[row], images[i])
            result[i] = is_flip
        return result

    even, odd = flipped(0), flipped(1)
    chosen = np.asarray(flip_choice(jnp.asarray(index), key))
    np.testing.assert_array_equal(even, chosen)
    np.testing.assert_array_equal(odd, ~chosen)
    assert 20 <= even.sum() <= 44  # a random half
    np.testing.assert_array_equal(flipped(2, order=np.random.default_rng(1).permutation(n)), even)
    np.testing.assert_array_equal(flipped(5), odd)


def test_translate_reflect_is_a_reflected_shift_within_the_pad():
    rng = np.random.default_rng(0)
    images = rng.random((40, 6, 7, 2)).astype(np.float32)
    out = np.asarray(translate_reflect(jnp.asarray(images), jax.random.PRNGKey(3), pad=2))
    seen = set()
    for img, got in zip(images, out):
        padded = np.pad(img, ((2, 2), (2, 2), (0, 0)), mode="reflect")
        shifts = [(dy, dx) for dy in range(5) for dx in range(5)
                  if np.array_equal(got, padded[dy:dy + 6, dx:dx + 7])]
        assert shifts, "output is not a reflected shift of its image"
        seen.update(shifts)
    assert len(seen) >= 10  # the offsets vary
    with pytest.raises(ValueError, match="pad must be in"):
        translate_reflect(jnp.asarray(images), jax.random.PRNGKey(3), pad=6)


class _Linear(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


def test_tta_equals_the_weighted_average_of_the_six_views_by_hand():
    rng = np.random.default_rng(0)
    x = rng.random((5, 6, 6, 3)).astype(np.float32)
    labels = np.array([0, 3, 9, 2, 2], np.int32)
    model = _Linear()
    params = model.init(jax.random.PRNGKey(0), jnp.asarray(x))["params"]
    w = np.asarray(params["Dense_0"]["kernel"], np.float64)
    b = np.asarray(params["Dense_0"]["bias"], np.float64)
    f = lambda v: v.reshape(len(v), -1).astype(np.float64) @ w + b
    mirror = lambda v: v[:, :, ::-1]
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    up_left, down_right = padded[:, :6, :6], padded[:, 2:, 2:]
    expected = (0.25 * f(x) + 0.25 * f(mirror(x)) + 0.125 * f(up_left)
                + 0.125 * f(mirror(up_left)) + 0.125 * f(down_right) + 0.125 * f(mirror(down_right)))
    views = tta_views(jnp.asarray(x), "mirror_translate")
    got = average_logits(model.apply({"params": params}, views.reshape(-1, 6, 6, 3))
                         .reshape(5, 6, 10), "mirror_translate")
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)
    # Through the eval step: the loss of the averaged logits, the plain accuracy of view 0.
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats={}, opt_state={},
                       ema_batch_stats={},
                       ema_params={})
    sums = eval_step(state, {"image": jnp.asarray(x), "label": jnp.asarray(labels),
                             "mask": jnp.ones(5, bool)}, model=model, use_ema=False,
                     num_classes=10, pipeline=DevicePipeline(tta="mirror_translate"))
    log_p = expected - np.log(np.exp(expected).sum(1, keepdims=True))
    assert float(sums["loss"]) == pytest.approx(-log_p[np.arange(5), labels].sum(), rel=1e-5)
    assert float(sums["correct"]) == (expected.argmax(1) == labels).sum()
    assert float(sums["correct_plain"]) == (f(x).argmax(1) == labels).sum()


def test_schedule_is_the_papers_triangle():
    config = _config()
    assert config.num_train_steps == 476  # ceil(9.9 x 48)
    sched = make_schedule(config, 48, config.num_train_steps)
    lr = config.optimizer.learning_rate
    for step, scale in ((0, 0.2), (109, 1.0), (476, 0.07), (54, 0.2 + 0.8 * 54 / 109),
                        (300, 1.0 - 0.93 * (300 - 109) / (476 - 109))):
        assert float(sched(step)) == pytest.approx(lr * scale, rel=1e-5)


def test_parameter_count_from_the_layer_shapes():
    model = models.create("airbench94")
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)),
                                                  train=False))
    count = sum(math.prod(p.shape) for p in jax.tree_util.tree_leaves(variables["params"]))
    whiten = 2 * 2 * 3 * 24 + 24
    blocks = 0
    for cin, cout in ((24, 64), (64, 256), (256, 256)):
        blocks += 3 * 3 * cin * cout + cout + 3 * 3 * cout * cout + cout  # two convs, two BN biases
    head = 256 * 10
    assert count == whiten + blocks + head == 1_971_640
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 32, 32, 3)), train=False),
                         variables)
    assert out.shape == (2, 10)


def _torch_lookahead_run(p0, grads, every, total):
    """The reference: plain SGD steps and airbench94.py's LookaheadState, in float64 NumPy."""
    p, ema = p0.copy(), p0.copy()
    decay = 0.95 ** every * (np.arange(total + 1) / total) ** 3
    for step in range(1, total + 1):
        p = p - 0.1 * grads[step - 1]
        if step % every == 0:
            ema = ema + (1 - decay[step]) * (p - ema)
            p = ema.copy()
        if step >= total:
            p = ema.copy()
    return p


def test_lookahead_matches_airbench_reference():
    rng = np.random.default_rng(0)
    total, every = 17, 5
    p0 = rng.normal(size=6)
    grads = rng.normal(size=(total, 6))
    tx = optax.chain(optax.sgd(0.1), lookahead.lookahead_ema(every, total))
    params = {"w": jnp.asarray(p0, jnp.float32)}
    stats = {"m": jnp.asarray(p0, jnp.float32)}
    state = lookahead.attach_batch_stats(tx.init(params), stats)
    for g in grads:
        g = jnp.asarray(g, jnp.float32)
        # Statistics that follow the optimiser's point (as running statistics follow the weights
        # of the forward pass) get the same average.
        fast = {"m": params["w"] - 0.1 * g}
        updates, state = tx.update({"w": g}, state, params)
        params = optax.apply_updates(params, updates)
        stats, state = lookahead.sync_batch_stats(state, fast)
    want = _torch_lookahead_run(p0, grads, every, total)
    np.testing.assert_allclose(np.asarray(params["w"]), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(stats["m"]), want, rtol=1e-5, atol=1e-5)


def test_optimizer_equals_torch_sgd_with_airbench_param_groups():
    """Decoupled hyperparameters, BN biases' lr x64 (not their decay), a frozen kernel and a bias
    frozen after one epoch, against torch.optim.SGD set up as airbench94.py does."""
    config = _config()
    config.optimizer.lookahead_every = 0
    config.optimizer.freeze = [(r"^whiten/kernel$", 0.0), (r"^whiten/bias$", 1.0)]
    config.schedule.name = "constant"
    steps_per_epoch = 2
    rng = np.random.default_rng(0)
    init = {"whiten": {"kernel": rng.normal(size=(2, 2)), "bias": rng.normal(size=3)},
            "block1": {"norm1": {"bias": rng.normal(size=4)}, "conv1": {"kernel": rng.normal(size=5)}}}
    grads = [jax.tree_util.tree_map(lambda a: rng.normal(size=a.shape), init) for _ in range(5)]
    tx = make_optimizer(config, make_schedule(config, steps_per_epoch, 5), steps_per_epoch,
                        total_steps=5)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), init)
    state = tx.init(params)
    for g in grads:
        updates, state = tx.update(jax.tree_util.tree_map(jnp.asarray, g), state, params)
        params = optax.apply_updates(params, updates)

    momentum, batch = 0.85, 1024
    kilostep = 1024 * (1 + 1 / (1 - momentum))
    lr, wd = 11.5 / kilostep, 0.0153 * batch / kilostep
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in
         (("wk", init["whiten"]["kernel"]), ("wb", init["whiten"]["bias"]),
          ("nb", init["block1"]["norm1"]["bias"]), ("ck", init["block1"]["conv1"]["kernel"]))}
    opt = torch.optim.SGD([dict(params=[t["nb"]], lr=64 * lr, weight_decay=wd / (64 * lr)),
                           dict(params=[t["wb"], t["ck"]], lr=lr, weight_decay=wd / lr)],
                          momentum=momentum, nesterov=True)
    for step, g in enumerate(grads):
        t["wb"].grad = (torch.tensor(g["whiten"]["bias"]) if step < steps_per_epoch else None)
        t["nb"].grad = torch.tensor(g["block1"]["norm1"]["bias"])
        t["ck"].grad = torch.tensor(g["block1"]["conv1"]["kernel"])
        opt.step()
    got = {"wk": params["whiten"]["kernel"], "wb": params["whiten"]["bias"],
           "nb": params["block1"]["norm1"]["bias"], "ck": params["block1"]["conv1"]["kernel"]}
    for k, v in got.items():
        np.testing.assert_allclose(np.asarray(v), t[k].detach().numpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=k)
    assert decoupled_sgd(11.5, 0.0153, 0.85, 1024)["learning_rate"] == pytest.approx(lr)


def test_train_batches_carry_index_and_epoch():
    images = np.random.default_rng(0).random((10, 2, 2, 1)).astype(np.float32)
    source = ArraySource(name="tiny", images=images, labels=np.arange(10, dtype=np.int32),
                         num_classes=10, batch_size=4, train=True, seed=3)
    stream = source.batches(start_step=0)
    for step in range(5):
        batch = next(stream)
        np.testing.assert_array_equal(batch["image"], images[batch["index"]])
        np.testing.assert_array_equal(batch["epoch"], np.full(4, step // 2))


def test_smoke_run_keeps_the_whitening_kernel_and_reports_plain_accuracy(tmp_path):
    """The smoke config through the trainer (tests/test_configs_smoke.py runs it too): after
    training, the frozen kernel is still the whitening of the run's first 32 images (computed
    here again from the data source), and both accuracies are reported."""
    config = _config("smoke")
    result = trainer.train(config, tmp_path)
    assert 0.0 <= result["plain_accuracy"] <= 1.0 and math.isfinite(result["loss"])
    train_ds, _, model, _, tx, _ = trainer.build(config)
    first = np.concatenate([b["image"] for _, b in zip(range(2), train_ds.batches(0))])
    want = patch_whitening_kernel(normalize(first, config.dataset.mean, config.dataset.std), 2)
    ckpt = Checkpointer(tmp_path, 1)
    state = ckpt.restore_newest_readable(jax.tree_util.tree_map(np.asarray, trainer.initial_state(
        config, model, tx, train_ds.image_shape, train_ds.input_dtype, train_ds.num_classes)))
    ckpt.close()
    assert int(state.step) == 8
    np.testing.assert_allclose(np.asarray(state.params["whiten"]["kernel"]), want, rtol=1e-5,
                               atol=1e-5)
