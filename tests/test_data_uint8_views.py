"""The input pipeline at GPU speed: prepared images reach the device as uint8 and are scaled and
normalised there (checked against float64 NumPy); ImageNet's JPEGs are decoded at reduced size
where the view allows (PIL's draft mode), and the views match a full-size decode, crop and
resize computed here within JPEG tolerance."""

from __future__ import annotations

import functools
import io

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image, JpegImagePlugin

from cnnjax import data, models
from cnnjax.data import tfds_store
from cnnjax.data.augment import IMAGENET_MEAN, IMAGENET_STD, sample_crop_box
from cnnjax.data.device_pipeline import DevicePipeline
from cnnjax.data.imagenet import Views
from cnnjax.sweep.config_file import load_module
from cnnjax.train import trainer
from cnnjax.train.state import init_state
from cnnjax.train.step import train_step
from conftest import REPO_ROOT


def _photo_like(seed: int, width: int = 500, height: int = 375) -> bytes:
    """An ImageNet-sized JPEG (quality 90): a smooth random colour field plus pixel noise."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC), np.float64)
    pixels = np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def _full(jpeg: bytes) -> Image.Image:
    return Image.open(io.BytesIO(jpeg)).convert("RGB")


@pytest.fixture
def drafts(monkeypatch) -> list[tuple[int, int]]:
    """The sizes the JPEG decoder was drafted to (an empty list: full-size decodes only)."""
    sizes = []
    real = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        out = real(self, mode, size)
        sizes.append(self.size)
        return out

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    return sizes


def _close(got: np.ndarray, want: np.ndarray) -> None:
    """Within JPEG tolerance: DCT-domain scaling and a full decode + antialiased resize differ by
    a few levels on smooth content."""
    diff = np.abs(got.astype(np.float64) - want)
    assert diff.mean() < 2.0 and np.percentile(diff, 99) < 12, (diff.mean(), diff.max())


def test_inception_crop_decodes_small_crops_at_reduced_size(drafts):
    views, size = Views(image_size=64), 64
    jpeg = _photo_like(0)
    for seed in range(6):
        got = views.train(jpeg, np.random.default_rng(seed))
        assert got.shape == (size, size, 3) and got.dtype == np.uint8
        rng = np.random.default_rng(seed)  # the same draws, in the documented order
        top, left, h, w = sample_crop_box(375, 500, rng)
        want = np.asarray(_full(jpeg).resize((size, size), Image.Resampling.BILINEAR,
                                             box=(left, top, left + w, top + h)), np.float64)
        if rng.random() < 0.5:
            want = want[:, ::-1]
        _close(got, want)
    # Crops more than twice the view's side decode at 1/2 .. 1/8 of the stored size.
    assert any(s[0] < 500 for s in drafts)


def test_eval_view_decodes_at_reduced_size_and_matches_a_full_decode(drafts):
    jpeg = _photo_like(1)
    for size in (64, 224):
        got = Views(image_size=size).eval(jpeg)
        short = round(size / 0.875)
        w = max(short, round(500 * short / 375))
        resized = np.asarray(_full(jpeg).resize((w, short), Image.Resampling.BILINEAR),
                             np.float64)
        left = (w - size) // 2
        top = (short - size) // 2
        assert got.dtype == np.uint8
        _close(got, resized[top:top + size, left:left + size])
    # 64: shorter side 73 of 375, decoded at 1/4; 224: 256 of 375 needs the full size.
    assert drafts == [(125, 94), (500, 375)]


def test_scale_jitter_views_match_a_full_decode():
    views = Views(image_size=64, train_crop="scale_jitter", scale_range=(80, 120))
    jpeg = _photo_like(2)
    for seed in range(4):
        got = views.train(jpeg, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        shorter = int(rng.integers(80, 121))
        w = max(shorter, round(500 * shorter / 375))
        resized = np.asarray(_full(jpeg).resize((w, shorter), Image.Resampling.BILINEAR),
                             np.float64)
        top, left = int(rng.integers(0, shorter - 64 + 1)), int(rng.integers(0, w - 64 + 1))
        want = resized[top:top + 64, left:left + 64]
        _close(got, want[:, ::-1] if rng.random() < 0.5 else want)


def test_device_pipeline_scales_uint8_on_the_device():
    pixels = np.random.default_rng(0).integers(0, 256, (3, 5, 4, 3), dtype=np.uint8)
    pipeline = DevicePipeline(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    got = np.asarray(pipeline.eval(jnp.asarray(pixels)))
    want = (pixels / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert DevicePipeline.output_dtype(np.uint8) == jnp.float32


def test_a_uint8_batch_trains_like_its_float_copy():
    model = models.create("simple_cnn", num_classes=10)
    state = init_state(model, optax.sgd(0.1), (8, 8, 3), seed=0, use_ema=False)
    pixels = np.random.default_rng(1).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    labels = jnp.arange(4)
    step = jax.jit(functools.partial(
        train_step, model=model, tx=optax.sgd(0.1), schedule=optax.constant_schedule(0.1),
        seed=0, label_smoothing=0.0, ema_decay=0.0, pass_loss=False))
    _, m8 = step(state, {"image": jnp.asarray(pixels), "label": labels})
    _, mf = step(state, {"image": jnp.asarray(pixels / np.float32(255)), "label": labels})
    np.testing.assert_allclose(float(m8["loss"]), float(mf["loss"]), rtol=1e-5)


def test_prepared_pixels_reach_the_device_as_uint8(tmp_path, monkeypatch):
    """A run on a prepared dataset: every batch the train step receives holds uint8 images."""
    images = np.random.default_rng(0).integers(0, 256, (24, 8, 8, 3), dtype=np.uint8)
    rows = lambda: ({"image": x, "label": i % 3} for i, x in enumerate(images))  # noqa: E731
    tfds_store.write_dataset(
        "toy8", tmp_path / "tfds",
        features=tfds_store.image_features(class_names=("a", "b", "c"), shape=(8, 8, 3)),
        splits={"train": rows, "test": rows}, description="test set",
        metadata={"origin": "toy arrays", "holdout": 4})
    config = load_module(REPO_ROOT / "configs" / "default.py").get_config("smoke")
    config.dataset.name, config.dataset.data_dir = "toy8", str(tmp_path / "tfds")
    config.dataset.options = {"worker_count": 0}
    config.batch_size, config.num_train_steps = 8, 2
    config.log_every_steps = config.eval_every_steps = config.checkpoint_every_steps = 2
    seen = []
    real = trainer.prefetch_to_device

    def spy(batches, sharding, depth=2):
        for batch in real(batches, sharding, depth):
            seen.append(batch["image"].dtype)
            yield batch

    monkeypatch.setattr(trainer, "prefetch_to_device", spy)
    trainer.train(config, tmp_path / "run")
    assert seen and set(seen) == {jnp.dtype(jnp.uint8)}
    assert data.create("toy8", "train", batch_size=8, train=True, data_dir=str(tmp_path / "tfds"),
                       worker_count=0).input_dtype == np.uint8


def test_worker_count_defaults_to_the_cores_of_the_task(monkeypatch):
    from cnnjax.data.grain_source import default_worker_count

    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "12")  # sbatch --cpus-per-task=12
    assert default_worker_count() == 12
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    assert default_worker_count() == 16  # every core, no cap
