"""Augmentations: crops are true windows (of the padded image, of the source resized by torch),
flips really flip, the sampling laws (crop boxes, mixup's Beta) by KS tests, the papers'
formulas (PCA lighting, mixup, cutmix, 10-crop) against hand computations, and the wiring into
the train step (device side, deterministic per step) and the 10-crop eval step."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from scipy import stats

from cnnjax import models
from cnnjax.data import augment as A
from cnnjax.data.device_pipeline import DevicePipeline
from cnnjax.train.state import init_state
from cnnjax.train.step import eval_step, train_step


def _images(n=16, h=8, w=8, c=3, seed=0):
    return np.random.default_rng(seed).uniform(0.05, 1.0, (n, h, w, c)).astype(np.float32)


def _find_window(out: np.ndarray, padded: np.ndarray) -> list[tuple[int, int, bool]]:
    """Every (top, left, mirrored) whose window of `padded` equals `out`, by brute force."""
    h, w = out.shape[:2]
    found = []
    for t in range(padded.shape[0] - h + 1):
        for l in range(padded.shape[1] - w + 1):
            win = padded[t:t + h, l:l + w]
            for mirrored in (False, True):
                if np.array_equal(win[:, ::-1] if mirrored else win, out):
                    found.append((t, l, mirrored))
    return found


@pytest.mark.parametrize("device", [False, True])
def test_pad_crop_flip_gives_true_windows_of_the_padded_image(device):
    x, pad = _images(n=64), 2
    if device:
        out = np.asarray(A.pad_crop_flip_device(jnp.asarray(x), jax.random.PRNGKey(3), pad=pad))
    else:
        out = A.pad_crop_flip(x, np.random.default_rng(3), pad=pad)
    assert out.shape == x.shape and out.dtype == np.float32
    offsets, flips = set(), 0
    for i in range(len(x)):
        padded = np.zeros((x.shape[1] + 2 * pad, x.shape[2] + 2 * pad, 3), np.float32)
        padded[pad:-pad, pad:-pad] = x[i]
        found = _find_window(out[i], padded)
        assert len(found) == 1, f"image {i}: not a (unique) window of the padded input"
        t, l, mirrored = found[0]
        offsets.add((t, l))
        flips += mirrored
    assert out.min() >= 0.0 and out.max() <= x.max()  # zero padding, no new values
    assert len(offsets) > 15  # 25 possible offsets, 64 draws
    assert 16 < flips < 48


def test_pad_crop_flip_is_deterministic_in_its_rng_and_rejects_bad_input():
    x = _images()
    a = A.pad_crop_flip(x, np.random.default_rng(7))
    b = A.pad_crop_flip(x, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="NHWC"):
        A.pad_crop_flip(x[0], np.random.default_rng(0))
    with pytest.raises(ValueError, match="pad must be >= 0, got -1"):
        A.pad_crop_flip(x, np.random.default_rng(0), pad=-1)


def test_named_flip_mirrors_exactly():
    x = _images(n=200)
    out = A.get_host_augment("flip")({"image": x, "label": np.zeros(200)},
                                     np.random.default_rng(0))["image"]
    same = np.all(out == x, axis=(1, 2, 3))
    mirrored = np.all(out == x[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(same | mirrored) and 60 < mirrored.sum() < 140
    with pytest.raises(ValueError, match="unknown augmentation 'flipp'.*pad_crop_flip"):
        A.get_host_augment("flipp")


def _torch_resize(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """torch's antialiased bilinear resize of one HWC image (the reference for PIL's), float64."""
    t = torch.tensor(np.asarray(image, np.float64).transpose(2, 0, 1)[None])
    out = torch.nn.functional.interpolate(t, size=(h, w), mode="bilinear", antialias=True,
                                          align_corners=False)
    return out[0].numpy().transpose(1, 2, 0)


def test_inception_crop_boxes_have_uniform_area_and_log_uniform_aspect():
    """Szegedy et al.'s crop: area fraction ~ U(scale), log(w / h) ~ U(log ratio). KS tests on
    2,000 boxes of a 400x400 image with scale (0.08, 0.5), where every sampled box fits (no
    retries to skew the law); whole-pixel rounding moves each value by < 1%."""
    rng = np.random.default_rng(0)
    boxes = np.array([A.sample_crop_box(400, 400, rng, scale=(0.08, 0.5)) for _ in range(2000)])
    top, left, h, w = boxes.T
    assert np.all((top >= 0) & (left >= 0) & (top + h <= 400) & (left + w <= 400))
    area = h * w / 400 ** 2
    assert stats.kstest(area, stats.uniform(0.08, 0.42).cdf).pvalue > 1e-3
    lo, hi = np.log(3 / 4), np.log(4 / 3)
    assert stats.kstest(np.log(w / h), stats.uniform(lo, hi - lo).cdf).pvalue > 1e-3
    # Offsets uniform over the positions that fit: the relative offset is ~ U(0, 1).
    rel = (top + rng.uniform(0, 1, len(top))) / (400 - h + 1)
    assert stats.kstest(rel, "uniform").pvalue > 1e-3


def test_random_resized_crop_is_its_box_window_resized():
    """The output is the window of the source at the sampled box (the same rng draws it first),
    resized by torch's antialiased bilinear interpolation."""
    image = np.random.default_rng(1).uniform(size=(60, 80, 3)).astype(np.float32)
    for seed in range(5):
        top, left, h, w = A.sample_crop_box(60, 80, np.random.default_rng(seed))
        out = A.random_resized_crop(image, np.random.default_rng(seed), 24)
        np.testing.assert_allclose(out, _torch_resize(image[top:top + h, left:left + w], 24, 24),
                                   atol=1e-5)


def test_crop_box_falls_back_to_a_centred_box_for_impossible_ratios():
    # A 10x1000 strip: no box of aspect <= 4/3 and area >= 8% fits, so the fallback applies.
    top, left, h, w = A.sample_crop_box(10, 1000, np.random.default_rng(0))
    assert (h, w) == (10, 13) and top == 0 and left == (1000 - 13) // 2


def test_resize_and_center_crop_against_torch():
    img = np.random.default_rng(0).uniform(size=(300, 400, 3)).astype(np.float32)
    resized = A.resize_shorter(img, 256)
    want = _torch_resize(img, 256, 341)  # 400 * 256 / 300 = 341.3
    np.testing.assert_allclose(resized, want, atol=1e-5)
    np.testing.assert_allclose(A.resize_center_crop(img), want[16:240, 58:282], atol=1e-5)
    with pytest.raises(ValueError, match="smaller than the crop 224x224"):
        A.center_crop(img[:100], 224)


def test_scale_jitter_crop_is_a_window_of_the_image_resized_to_a_scale_in_range():
    """Simonyan & Zisserman's training view: shorter side S ~ U{lo..hi}, a random crop, a random
    flip. Each output is found, by exhaustive search, as exactly one (S, top, left, mirrored)
    window of the torch-resized source; over 40 draws S, offsets and mirroring all vary."""
    img = np.random.default_rng(0).uniform(size=(24, 32, 3)).astype(np.float32)
    resized = {s: _torch_resize(img, s, round(32 * s / 24)) for s in range(18, 27)}
    rng, found = np.random.default_rng(1), []
    for _ in range(40):
        out = A.scale_jitter_crop(img, rng, scale_range=(20, 24), crop=16)
        assert out.shape == (16, 16, 3)
        hits = []
        for s, r in resized.items():
            windows = np.lib.stride_tricks.sliding_window_view(r, (16, 16), axis=(0, 1))
            for mirrored in (False, True):
                view = out[:, ::-1] if mirrored else out
                err = np.abs(windows - view.transpose(2, 0, 1)).max(axis=(2, 3, 4))
                hits += [(s, t, l, mirrored) for t, l in zip(*np.nonzero(err < 1e-5))]
        assert len(hits) == 1, hits
        found.append(hits[0])
    scales = {f[0] for f in found}
    assert scales <= set(range(20, 25)) and len(scales) >= 4
    assert len({f[1:3] for f in found}) > 10 and 8 < sum(f[3] for f in found) < 32


def test_ten_crop_views_by_hand():
    img = np.arange(5 * 6 * 1, dtype=np.float32).reshape(5, 6, 1)
    views = A.ten_crop(img, 3)
    assert views.shape == (10, 3, 3, 1)
    expected_corners = [img[0:3, 0:3], img[0:3, 3:6], img[2:5, 0:3], img[2:5, 3:6], img[1:4, 1:4]]
    for i, e in enumerate(expected_corners):
        np.testing.assert_array_equal(views[i], e)
        np.testing.assert_array_equal(views[i + 5], e[:, ::-1])


def test_lighting_adds_the_pca_colour_shift_per_image():
    x = _images(n=4, h=3, w=3)
    out = A.lighting(x, np.random.default_rng(5), alpha_std=0.1)
    alpha = np.random.default_rng(5).normal(0.0, 0.1, (4, 3))
    for i in range(4):
        for c in range(3):
            shift = sum(A.IMAGENET_EIGVEC[c, j] * alpha[i, j] * A.IMAGENET_EIGVAL[j]
                        for j in range(3))
            np.testing.assert_allclose(out[i, ..., c] - x[i, ..., c], shift, atol=1e-6)
    with pytest.raises(ValueError, match="RGB"):
        A.lighting(x[..., :1], np.random.default_rng(0))


def test_normalize_and_its_errors():
    x = _images(n=2)
    out = A.normalize(x, (0.5, 0.4, 0.3), (0.2, 0.1, 0.5))
    np.testing.assert_allclose(out[..., 1], (x[..., 1] - 0.4) / 0.1, rtol=1e-6)
    with pytest.raises(ValueError, match="one value per channel; images have 3 channels"):
        A.normalize(x, (0.5,), (0.2,))


def test_mixup_is_a_convex_combination_with_lambda_from_beta():
    """Zhang et al.: x' = lam x + (1 - lam) x[::-1] with the labels mixed alike, lam ~ Beta(a, a)
    per batch: a KS test of 2,000 batches' lam against scipy's Beta(0.4, 0.4)."""
    x = jnp.asarray(_images(n=6))
    labels = jnp.array([0, 1, 2, 3, 4, 0])
    keys = jax.random.split(jax.random.PRNGKey(0), 2000)
    out, soft = jax.vmap(lambda k: A.mixup(x, labels, k, alpha=0.4, num_classes=5))(keys)
    out, soft = np.asarray(out), np.asarray(soft)
    lam = soft[:, 1, 1]  # example 1's own class weight (its partner, example 4, is class 4)
    np.testing.assert_allclose(soft.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(soft[:, 1, 4], 1 - lam, rtol=1e-5, atol=1e-6)
    xs = np.asarray(x)
    np.testing.assert_allclose(out, lam[:, None, None, None, None] * xs
                               + (1 - lam[:, None, None, None, None]) * xs[::-1], atol=2e-6)
    assert stats.kstest(lam, stats.beta(0.4, 0.4).cdf).pvalue > 1e-3
    assert stats.kstest(lam, stats.beta(1.0, 1.0).cdf).pvalue < 1e-6  # the test tells alphas apart


def test_cutmix_label_weights_equal_the_pasted_area():
    n, h, w = 4, 16, 16
    x = jnp.broadcast_to(jnp.arange(n, dtype=jnp.float32)[:, None, None, None], (n, h, w, 1))
    for seed in range(5):
        out, soft = A.cutmix(x, jnp.arange(n), jax.random.PRNGKey(seed), alpha=1.0, num_classes=n)
        out, soft = np.asarray(out), np.asarray(soft)
        for i in range(n):
            partner = n - 1 - i
            pasted = np.mean(out[i] == partner)
            assert np.all((out[i] == i) | (out[i] == partner))
            np.testing.assert_allclose(soft[i, partner], pasted, atol=1e-6)
            np.testing.assert_allclose(soft[i, i], 1 - pasted, atol=1e-6)


def _tiny_model_state():
    model = models.create("simple_cnn", num_classes=10)
    return model, init_state(model, optax.sgd(0.1), (8, 8, 1), seed=0, use_ema=False)


def _step(model, seed, pipeline=None):
    kw = {} if pipeline is None else {"pipeline": pipeline}
    return jax.jit(functools.partial(
        train_step, model=model, tx=optax.sgd(0.1), schedule=optax.constant_schedule(0.1),
        seed=seed, label_smoothing=0.0, ema_decay=0.0, pass_loss=False, **kw))


def test_device_augmentation_in_the_train_step_is_a_function_of_seed_and_step():
    """With a random flip on the device, the step's loss is the loss (model applied directly) of
    one of the 2^4 flip patterns of the 4 images; the pattern is the same for the same (seed,
    step), and over 12 steps and 2 seeds several patterns occur. Mixup changes the loss and is
    repeatable too."""
    model = models.create("simple_cnn", num_classes=10, dropout_rate=0.0)
    state = init_state(model, optax.sgd(0.1), (8, 8, 1), seed=0, use_ema=False)
    x = np.asarray(_images(n=4, c=1))
    labels = np.array([1, 2, 3, 4])
    batch = {"image": jnp.asarray(x), "label": jnp.asarray(labels)}
    patterns = [tuple(int(b) for b in f"{p:04b}") for p in range(16)]
    flipped = np.concatenate([np.where(np.array(p)[:, None, None, None] == 1, x[:, :, ::-1], x)
                              for p in patterns])
    logits = np.asarray(model.apply(state.variables(False), jnp.asarray(flipped), train=False),
                        np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    losses = -logp[np.arange(64), np.tile(labels, 16)].reshape(16, 4).mean(1)
    assert len(set(np.round(losses, 6))) == 16  # every pattern tells itself apart
    flip = DevicePipeline(augment=A.get_device_augment("flip"))
    seen = set()
    for seed in (0, 1):
        step = _step(model, seed, flip)
        for k in range(12):
            s = state.replace(step=jnp.asarray(k, state.step.dtype))
            loss = float(step(s, batch)[1]["loss"])
            match = np.flatnonzero(np.isclose(losses, loss, rtol=1e-5, atol=1e-6))
            assert len(match) == 1, f"seed {seed} step {k}: loss {loss} is no flip pattern's"
            assert float(step(s, batch)[1]["loss"]) == loss  # repeatable
            seen.add(patterns[match[0]])
    assert len(seen) >= 6
    mix = _step(model, 0, DevicePipeline(augment=A.get_device_augment("pad_crop_flip"), mix="mixup",
                                         mix_alpha=0.2, num_classes=10))
    a, b = mix(state, batch)[1], mix(state, batch)[1]
    assert float(a["loss"]) == float(b["loss"])
    assert float(a["loss"]) != float(_step(model, 0)(state, batch)[1]["loss"])


def test_ten_crop_eval_averages_the_views_probabilities():
    model, state = _tiny_model_state()
    views = jnp.asarray(_images(n=3 * 10, c=1).reshape(3, 10, 8, 8, 1))
    labels = jnp.array([1, 2, 3])
    sums = eval_step(state, {"image": views, "label": labels, "mask": jnp.ones(3, bool)},
                     model=model, use_ema=False, num_classes=10)
    logits = np.asarray(model.apply(state.variables(False), views.reshape(30, 8, 8, 1),
                                    train=False), np.float64)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p = (p / p.sum(-1, keepdims=True)).reshape(3, 10, 10).mean(1)
    np.testing.assert_allclose(float(sums["loss"]), -np.log(p[np.arange(3), [1, 2, 3]]).sum(),
                               rtol=1e-5)
    assert float(sums["correct"]) == float(np.sum(p.argmax(-1) == [1, 2, 3]))


def test_eval_step_pads_then_normalises_per_channel_before_the_model():
    model, state = _tiny_model_state()
    x = jnp.asarray(_images(n=4, c=1))
    labels = jnp.array([1, 2, 3, 4])
    sums = eval_step(state, {"image": x, "label": labels, "mask": jnp.ones(4, bool)}, model=model,
                     use_ema=False, num_classes=10,
                     pipeline=DevicePipeline(pad_to=10, mean=(0.25,), std=(0.5,)))
    padded = np.zeros((4, 10, 10, 1), np.float32)
    padded[:, 1:9, 1:9] = np.asarray(x)  # 8x8 centred in 10x10
    logits = np.asarray(model.apply(state.variables(False), (padded - 0.25) / 0.5, train=False),
                        np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    np.testing.assert_allclose(float(sums["loss"]), -logp[np.arange(4), [1, 2, 3, 4]].sum(),
                               rtol=1e-5)


def test_flip_tta_averages_an_image_and_its_mirror():
    model, state = _tiny_model_state()
    x = jnp.asarray(_images(n=3, c=1))
    sums = eval_step(state, {"image": x, "label": jnp.array([0, 1, 2]), "mask": jnp.ones(3, bool)},
                     model=model, use_ema=False, num_classes=10,
                     pipeline=DevicePipeline(flip_tta=True))
    both = np.concatenate([np.asarray(x), np.asarray(x)[:, :, ::-1]])
    logits = np.asarray(model.apply(state.variables(False), jnp.asarray(both), train=False),
                        np.float64)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    p = (p[:3] + p[3:]) / 2
    np.testing.assert_allclose(float(sums["loss"]), -np.log(p[np.arange(3), [0, 1, 2]]).sum(),
                               rtol=1e-5)
