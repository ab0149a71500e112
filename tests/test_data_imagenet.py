"""ImageNet-2012 end to end on a tiny source in the published format, written here: a train tar of
per-class tars of JPEGs, a flat validation tar, and the devkit (or Kaggle's CSV) labels.
Preparation must store the exact JPEG bytes with the labels of sorted synsets; the evaluation
views must match a PIL computation written here; training crops have the right shape and range,
scale-jitter views are windows of their own source resized by torch, and Inception-crop views
are windows of the paper's areas and aspect ratios, read from sources whose pixels encode where
they are;
a malformed source stops with an error naming the file; an imagenet config trains on the set."""

from __future__ import annotations

import io
import logging
import math
import pathlib
import tarfile

import ml_collections
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from tensorflow_datasets.proto import tf_example_pb2

from cnnjax import data
from cnnjax.data import prepare as P
from cnnjax.data import tfds_store
from cnnjax.data.augment import get_host_augment
from cnnjax.data.imagenet import Views
from cnnjax.sweep.config_file import load_module
from cnnjax.train import trainer
from conftest import REPO_ROOT

# Written in this (unsorted) order: the labels must follow the sorted order instead.
SYNSETS = ("n02000000", "n01000000", "n03000000")
SORTED = sorted(SYNSETS)
# The devkit's ILSVRC2012_ID of each synset: deliberately not the sorted order. ID 4 is a
# non-leaf synset as the real meta.mat lists them (never a label).
DEVKIT_IDS = {1: "n03000000", 2: "n02000000", 3: "n01000000", 4: "n09999999"}
VAL_SYNSETS = ("n03000000", "n01000000", "n01000000", "n02000000", "n03000000")
VAL_TAR_ORDER = (3, 1, 5, 2, 4)  # the validation tar's member order (1-based image numbers)
PER_CLASS = 3
SIZE = 32  # image_size of the tests: evaluation resizes the shorter side to round(32/0.875)=37


def _jpeg(rng: np.random.Generator) -> bytes:
    h, w = rng.integers(24, 72, 2)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(out, "JPEG",
                                                                          quality=95)
    return out.getvalue()


def _tar_bytes(members: list[tuple[str, bytes]], mode: str = "w") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return out.getvalue()


def _meta_mat() -> bytes:
    synsets = np.zeros(len(DEVKIT_IDS), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"),
                                                ("num_children", "O")])
    for row, (i, wnid) in enumerate(DEVKIT_IDS.items()):
        synsets[row] = (i, wnid, 0 if i < 4 else 3)
    out = io.BytesIO()
    scipy.io.savemat(out, {"synsets": synsets})
    return out.getvalue()


def write_source(root: pathlib.Path, labels: str = "devkit", seed: int = 0) -> dict:
    """The tiny source in `root`; returns what was written: split -> [(file_name, jpeg, label)]
    with label = the synset's index in sorted order."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    written = {"train": [], "validation": []}
    class_tars = []
    for synset in SYNSETS:
        images = [(f"{synset}_{k + 10}.JPEG", _jpeg(rng)) for k in range(PER_CLASS)]
        class_tars.append((f"{synset}.tar", _tar_bytes(images)))
        written["train"] += [(n, b, SORTED.index(synset)) for n, b in images]
    (root / "ILSVRC2012_img_train.tar").write_bytes(_tar_bytes(class_tars))
    val = {i: (f"ILSVRC2012_val_{i:08d}.JPEG", _jpeg(rng)) for i in VAL_TAR_ORDER}
    (root / "ILSVRC2012_img_val.tar").write_bytes(_tar_bytes([val[i] for i in VAL_TAR_ORDER]))
    written["validation"] = [(*val[i], SORTED.index(VAL_SYNSETS[i - 1])) for i in VAL_TAR_ORDER]
    by_synset = {w: i for i, w in DEVKIT_IDS.items()}
    if labels == "devkit":
        truth = "".join(f"{by_synset[s]}\n" for s in VAL_SYNSETS).encode()
        (root / "ILSVRC2012_devkit_t12.tar.gz").write_bytes(_tar_bytes(
            [("ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt", truth),
             ("ILSVRC2012_devkit_t12/data/meta.mat", _meta_mat())], mode="w:gz"))
    else:  # Kaggle's CSV, rows in another order, with boxes after the synset
        rows = [f"ILSVRC2012_val_{i:08d},{VAL_SYNSETS[i - 1]} 1 2 30 40 {VAL_SYNSETS[i - 1]} 3 4"
                for i in (2, 5, 1, 4, 3)]
        (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" +
                                                   "\n".join(rows) + "\n")
    return written


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[pathlib.Path, dict]:
    root = tmp_path_factory.mktemp("imagenet")
    written = write_source(root / "source")
    P.prepare("imagenet2012", root / "source", data_dir=str(root / "data"))
    return root / "data", written


def _stored(data_dir: pathlib.Path, split: str) -> list[tuple[str, bytes, int]]:
    """The split's records parsed with the protobuf classes alone."""
    stored = tfds_store.open_dataset("imagenet2012", data_dir, "")
    out = []
    for record in stored.records(split):
        f = tf_example_pb2.Example.FromString(record).features.feature
        out.append((f["file_name"].bytes_list.value[0].decode(), f["image"].bytes_list.value[0],
                    int(f["label"].int64_list.value[0])))
    return out


def test_prepare_stores_the_jpeg_bytes_with_sorted_synset_labels(prepared):
    data_dir, written = prepared
    stored = tfds_store.open_dataset("imagenet2012", data_dir, "")
    assert stored.class_names == tuple(SORTED)
    assert stored.split_sizes == {"train": PER_CLASS * len(SYNSETS), "validation": 5}
    assert sorted(_stored(data_dir, "train")) == sorted(written["train"])
    assert _stored(data_dir, "validation") == written["validation"]


def test_kaggle_csv_labels_give_the_same_labels(tmp_path):
    written = write_source(tmp_path / "source", labels="csv")
    P.prepare("imagenet2012", tmp_path / "source", data_dir=str(tmp_path / "data"))
    assert _stored(tmp_path / "data", "validation") == written["validation"]


def test_published_counts_differ_only_with_warnings(tmp_path, caplog):
    write_source(tmp_path / "source")
    with caplog.at_level(logging.WARNING, logger="cnnjax.data.prepare"):
        summary = P.prepare("imagenet2012", tmp_path / "source", data_dir=str(tmp_path / "d"))
    text = caplog.text
    assert "ILSVRC2012_img_train.tar has MD5" in text  # not the published archive
    assert "train has 9 examples, the published ImageNet-2012 (ILSVRC-2012) has 1281167" in text
    assert "validation has 5 examples, the published ImageNet-2012 (ILSVRC-2012) has 50000" in text
    assert "3 classes, the published ImageNet-2012 (ILSVRC-2012) has 1000" in text
    assert summary.split_sizes == {"train": 9, "validation": 5}


def _reference_eval(jpeg: bytes, size: int) -> np.ndarray:
    """Shorter side to round(size / 0.875) with PIL's bilinear on uint8 RGB, central crop."""
    im = Image.open(io.BytesIO(jpeg)).convert("RGB")
    short = round(size / 0.875)
    scale = short / min(im.size)
    w, h = max(short, round(im.size[0] * scale)), max(short, round(im.size[1] * scale))
    pixels = np.asarray(im.resize((w, h), Image.Resampling.BILINEAR), np.float64) / 255
    top, left = (h - size) // 2, (w - size) // 2
    return pixels[top:top + size, left:left + size]


def _eval_batches(data_dir, **options) -> list[dict]:
    source = data.create("imagenet2012", "validation", batch_size=2, train=False,
                         data_dir=str(data_dir), worker_count=0, image_size=SIZE, **options)
    return list(source.batches())


def test_eval_view_matches_a_pil_resize_and_center_crop(prepared):
    data_dir, written = prepared
    batches = _eval_batches(data_dir)
    assert [b["mask"].tolist() for b in batches] == [[True, True], [True, True], [True, False]]
    images = np.concatenate([b["image"] for b in batches])[:5]
    labels = np.concatenate([b["label"] for b in batches])[:5]
    assert images.shape == (5, SIZE, SIZE, 3) and images.dtype == np.uint8
    assert labels.tolist() == [label for _, _, label in written["validation"]]
    for got, (_, jpeg, _) in zip(images, written["validation"]):
        # PIL's uint8 path rounds each value: within one level of the float computation.
        np.testing.assert_allclose(got / 255, _reference_eval(jpeg, SIZE), atol=1.01 / 255)


def test_ten_crop_eval_gives_corners_centre_and_mirrors(prepared):
    data_dir, written = prepared
    views = _eval_batches(data_dir, eval_crop="ten_crop")[0]["image"]
    assert views.shape == (2, 10, SIZE, SIZE, 3)
    np.testing.assert_allclose(views[0, 4] / 255,
                               _reference_eval(written["validation"][0][1], SIZE),
                               atol=1.01 / 255)  # view 4 is the centre crop
    np.testing.assert_array_equal(views[:, 5:], views[:, :5, :, ::-1])


@pytest.mark.parametrize("crop", ["inception", "scale_jitter"])
def test_train_crops_have_the_shape_range_and_determinism(prepared, crop):
    data_dir, _ = prepared

    def take(seed):
        source = data.create("imagenet2012", "train", batch_size=4, train=True, seed=seed,
                             data_dir=str(data_dir), worker_count=0, image_size=SIZE,
                             train_crop=crop, scale_range=(SIZE + 4, SIZE + 20))
        assert source.image_shape == (SIZE, SIZE, 3) and source.num_classes == 3
        stream = source.batches()
        return [next(stream) for _ in range(3)]

    first, again, other = take(0), take(0), take(1)
    for batch in first:
        assert batch["image"].shape == (4, SIZE, SIZE, 3) and batch["image"].dtype == np.uint8
        assert batch["image"].std() > 0.1 * 255  # random-noise JPEGs stay noisy
        assert set(batch["label"].tolist()) <= {0, 1, 2}
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["image"], b["image"])
    assert not np.array_equal(first[0]["image"], other[0]["image"])


def _torch_resize(pixels: np.ndarray, h: int, w: int) -> np.ndarray:
    """torch's antialiased bilinear resize (PIL's filter) of HWC pixels, float64."""
    t = torch.tensor(np.asarray(pixels, np.float64).transpose(2, 0, 1)[None])
    return torch.nn.functional.interpolate(t, size=(h, w), mode="bilinear", antialias=True,
                                           align_corners=False)[0].numpy().transpose(1, 2, 0)


LEVEL = 1.01 / 255  # one uint8 level, and float noise


def test_scale_jitter_views_are_windows_of_their_own_resized_image(prepared):
    """Every scale-jitter training view is, by exhaustive search over the 9 training JPEGs, the
    scales S in scale_range, the offsets and mirroring, exactly one window of one source image
    resized (by torch) to shorter side S, and it carries that image's label. The pipeline resizes
    uint8 RGB (rounded to whole levels), so pixels agree within one level of 255."""
    data_dir, written = prepared
    low, high = SIZE + 4, SIZE + 20
    candidates = []  # (label, S, resized image / 255)
    for _, jpeg, label in written["train"]:
        pixels = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
        h, w = pixels.shape[:2]
        for s in range(low, high + 1):
            size = (s, max(s, round(w * s / min(h, w)))) if h <= w else (max(s, round(h * s / w)), s)
            candidates.append((label, s, np.clip(_torch_resize(pixels, *size) / 255, 0, 1)))
    source = data.create("imagenet2012", "train", batch_size=4, train=True, seed=0,
                         data_dir=str(data_dir), worker_count=0, image_size=SIZE,
                         train_crop="scale_jitter", scale_range=(low, high))
    stream, scales = source.batches(), set()
    for _ in range(3):
        batch = next(stream)
        assert batch["image"].dtype == np.uint8
        for image, label in zip(batch["image"].astype(np.float32) / 255, batch["label"]):
            hits = []
            for cand_label, s, resized in candidates:
                corners = resized[:resized.shape[0] - SIZE + 1, :resized.shape[1] - SIZE + 1]
                for view in (image, image[:, ::-1]):
                    # Windows whose first pixel matches, then the whole window.
                    for t, l in zip(*np.nonzero(np.all(np.abs(corners - view[0, 0]) < LEVEL, -1))):
                        if np.abs(resized[t:t + SIZE, l:l + SIZE] - view).max() < LEVEL:
                            hits.append((cand_label, s))
            assert len(hits) == 1, f"{len(hits)} matching windows"
            assert hits[0][0] == label
            scales.add(hits[0][1])
    assert len(scales) > 3


# Szegedy et al. 2015, sec. 6: crops of 8% to 100% of the image's area, aspect ratio (width /
# height) between 3/4 and 4/3.
INCEPTION_AREA, INCEPTION_ASPECT = (0.08, 1.0), (3 / 4, 4 / 3)


def _ramp_jpeg(height: int, width: int) -> bytes:
    """A JPEG (quality 100, no chroma subsampling) whose pixels say where they are: red rises
    linearly from 0 at the first column to 255 at the last, green likewise down the rows, blue
    is 100."""
    red = np.broadcast_to(np.linspace(0, 255, width), (height, width))
    green = np.broadcast_to(np.linspace(0, 255, height)[:, None], (height, width))
    pixels = np.stack([red, green, np.full((height, width), 100.0)], -1)
    out = io.BytesIO()
    Image.fromarray(np.round(pixels).astype(np.uint8)).save(out, "JPEG", quality=100,
                                                            subsampling=0)
    return out.getvalue()


def _ramp_line(ramp: np.ndarray, length: int) -> tuple[float, float, float]:
    """(start, extent, worst residual) in source pixels of the window a view's row of red (or
    column of green) values in [0, 1] shows, from a least-squares line through them. View pixel
    j of n samples the source at start + (j + 0.5) extent / n - 0.5 (pixel centres at integers);
    the first and last pixels are left out, as their antialiasing filters may reach past the
    source's border."""
    n = len(ramp)
    inner = np.arange(1, n - 1)
    where = ramp * (length - 1)
    slope, intercept = np.polyfit(inner, where[inner], 1)
    residual = np.abs(where[inner] - (slope * inner + intercept)).max()
    return intercept - 0.5 * slope + 0.5, slope * n, residual


@pytest.mark.parametrize("height,width", [(180, 240), (210, 150)])
def test_inception_views_are_windows_of_the_papers_areas_and_aspect_ratios(height, width):
    """300 training views (Views.train, what the grain workers run on each JPEG) of a source
    whose red and green channels are its column and row: each view must be an axis-aligned
    window of the source (red constant down each column, green along each row, blue untouched),
    mirrored or not (red falling or rising left to right; a mirrored view read right to left must
    be a window too), whose extent, read off the ramps to within PIXELS (JPEG, uint8 rounding,
    PIL's draft decoding at 1/2 for large crops), lies inside the source with an area fraction
    and an aspect ratio in the paper's ranges; the views must span those ranges and be mirrored
    about half the time."""
    pixels = 3.0
    raw = _ramp_jpeg(height, width)
    views = Views(image_size=SIZE, train_crop="inception")
    areas, aspects, mirrored = [], [], 0
    for seed in range(300):
        view = views.train(raw, np.random.default_rng(seed)).astype(np.float64) / 255
        assert view.shape == (SIZE, SIZE, 3)
        red, green, blue = view[..., 0], view[..., 1], view[..., 2]
        assert np.abs(red - red.mean(0)).max() < 3 * LEVEL, seed
        assert np.abs(green - green.mean(1, keepdims=True)).max() < 3 * LEVEL, seed
        assert np.abs(blue - 100 / 255).max() < 3 * LEVEL, seed
        columns = red.mean(0)
        if columns[-1] < columns[0]:
            mirrored += 1
            columns = columns[::-1]
        left, w, x_residual = _ramp_line(columns, width)
        top, h, y_residual = _ramp_line(green.mean(1), height)
        assert max(x_residual, y_residual) < 2, f"seed {seed}: not a linear resize of a window"
        assert -pixels < left and left + w < width + pixels, (seed, left, w)
        assert -pixels < top and top + h < height + pixels, (seed, top, h)
        # Some box within PIXELS of the one read off has an area and aspect ratio in range.
        assert (w + pixels) * (h + pixels) >= INCEPTION_AREA[0] * height * width, seed
        assert (w - pixels) * (h - pixels) <= INCEPTION_AREA[1] * height * width, seed
        assert INCEPTION_ASPECT[0] <= (w + pixels) / (h - pixels), seed
        assert (w - pixels) / (h + pixels) <= INCEPTION_ASPECT[1], seed
        areas.append(w * h / (height * width))
        aspects.append(w / h)
    assert min(areas) < 0.15 and max(areas) > 0.8, (min(areas), max(areas))
    assert min(aspects) < 0.8 and max(aspects) > 1.25, (min(aspects), max(aspects))
    assert 0.35 < mirrored / 300 < 0.65, mirrored


def test_worker_processes_give_the_same_batches_as_in_process(prepared):
    """The crops (and a host augmentation after them) run in grain's worker processes."""
    data_dir, _ = prepared
    got = [next(data.create("imagenet2012", "train", batch_size=4, train=True, seed=3,
                            data_dir=str(data_dir), worker_count=workers, image_size=SIZE,
                            augment=get_host_augment("lighting")).batches())
           for workers in (0, 1)]
    np.testing.assert_array_equal(got[0]["image"], got[1]["image"])
    np.testing.assert_array_equal(got[0]["label"], got[1]["label"])


def _break(root: pathlib.Path, case: str) -> str:
    """Makes the source in `root` malformed; returns the file name the error must name."""
    train = root / "ILSVRC2012_img_train.tar"
    if case == "stray_member":
        with tarfile.open(train, "a") as tar:
            info = tarfile.TarInfo("README.txt")
            info.size = 2
            tar.addfile(info, io.BytesIO(b"hi"))
        return "ILSVRC2012_img_train.tar/README.txt"
    if case == "corrupt_jpeg":
        rng = np.random.default_rng(1)
        bad = _tar_bytes([("n04000000_1.JPEG", _jpeg(rng)[:200])])
        with tarfile.open(train, "a") as tar:
            info = tarfile.TarInfo("n04000000.tar")
            info.size = len(bad)
            tar.addfile(info, io.BytesIO(bad))
        return "n04000000.tar/n04000000_1.JPEG"
    if case == "truncated_val":
        path = root / "ILSVRC2012_img_val.tar"
        path.write_bytes(path.read_bytes()[:1500])
        return "ILSVRC2012_img_val.tar"
    if case == "unlabelled_val":
        with tarfile.open(root / "ILSVRC2012_img_val.tar", "a") as tar:
            jpeg = _jpeg(np.random.default_rng(2))
            info = tarfile.TarInfo("ILSVRC2012_val_00000009.JPEG")
            info.size = len(jpeg)
            tar.addfile(info, io.BytesIO(jpeg))
        return "ILSVRC2012_img_val.tar/ILSVRC2012_val_00000009.JPEG"
    assert case == "no_labels"
    (root / "ILSVRC2012_devkit_t12.tar.gz").unlink()
    return "no validation labels"


@pytest.mark.parametrize("case", ["stray_member", "corrupt_jpeg", "truncated_val",
                                  "unlabelled_val", "no_labels"])
def test_malformed_source_names_the_file_and_leaves_nothing(tmp_path, case):
    write_source(tmp_path / "source")
    named = _break(tmp_path / "source", case)
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        P.prepare("imagenet2012", tmp_path / "source", data_dir=str(tmp_path / "data"))
    assert named in str(error.value)
    assert not tfds_store.is_prepared("imagenet2012", tmp_path / "data")


def test_download_and_missing_dataset_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="by hand"):
        P.prepare("imagenet2012", tmp_path, data_dir=str(tmp_path), download_first=True)
    with pytest.raises(tfds_store.MissingDataset,
                       match="python -m cnnjax.data.prepare imagenet2012 --source=DIR"):
        data.create("imagenet2012", "train", batch_size=2, train=True, data_dir=str(tmp_path))


def test_imagenet_config_trains_two_steps_on_the_tiny_set(prepared, tmp_path):
    data_dir, _ = prepared
    config = load_module(REPO_ROOT / "configs" / "imagenet_resnet50.py").get_config()
    config.dataset.data_dir = str(data_dir)
    config.dataset.options = ml_collections.ConfigDict({"image_size": SIZE, "worker_count": 0})
    config.batch_size = 4
    config.num_train_steps = 2
    # Two steps of 4 images at the paper's rate 0.1 can drive the batch-norm statistics to
    # overflow; the test is of the pipeline, not the recipe.
    config.optimizer.learning_rate = 1e-3
    config.log_every_steps = config.eval_every_steps = config.checkpoint_every_steps = 2
    result = trainer.train(config, tmp_path)
    assert math.isfinite(result["loss"]) and 0.0 <= result["accuracy"] <= 1.0
