"""Offline preparation into the tensorflow-datasets layout (the catalog's for the standard
datasets: tests/test_data_tfds_catalog.py): every preparer on small files of the real formats
(written by tests/data_files.py) round-trips exact pixels and labels, read back both by tfds' own
reader and by `cnnjax.data.create`; bad sources stop with an error naming the file
and leave nothing that loads; the real shared MNIST and CIFAR-10 JPEG copy when present."""

from __future__ import annotations

import gzip
import json
import logging
import pathlib
import pickle
import struct

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import data_files as F
from cnnjax import data
from cnnjax.data import prepare as P
from cnnjax.data import tfds_store
from cnnjax.data.imagefolder import jpeg_quality

MNIST_TRAIN_HIST = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_HIST = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _tfds_split(data_dir, name, split) -> list[dict]:
    """A split as tfds itself decodes it (no cnnjax code): the layout is tfds-readable."""
    builder = tfds.builder_from_directory(str(tfds_store.dataset_dir(name, data_dir)))
    return list(builder.as_data_source(split))


def _read_all(data_dir, name, split, **options) -> dict[str, np.ndarray]:
    """A whole split through cnnjax.data.create, in stored order (uint8 pixels, as stored)."""
    probe = data.create(name, split, batch_size=1, train=False, data_dir=str(data_dir),
                        worker_count=0, **options)
    batch = next(data.create(name, split, batch_size=probe.num_examples, train=False,
                             data_dir=str(data_dir), worker_count=0, **options).batches())
    assert batch["image"].dtype == np.uint8  # scaled to [0, 1] on the device, not here
    batch["pixels"] = batch["image"]
    return batch


def _nothing_left(data_dir: pathlib.Path, name: str) -> None:
    assert not tfds_store.is_prepared(name, data_dir)
    leftovers = [p for p in data_dir.rglob("*") if p.is_file()] if data_dir.exists() else []
    assert leftovers == [], leftovers


# ---------------------------------------------------------------- MNIST / Fashion-MNIST (IDX)

@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_round_trip_exact_and_checksum_warnings(tmp_path, caplog, name):
    written = F.write_idx_dataset(tmp_path / "src")
    with caplog.at_level(logging.WARNING, logger="cnnjax.data.prepare"):
        summary = P.prepare(name, tmp_path / "src", data_dir=str(tmp_path / "tfds"))
    # The tiny files are not the published ones: one warning per file, naming it.
    for file in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert any(file in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    assert summary.split_sizes == {"train": 30, "test": 12}
    assert "differs from the published" in summary.origin
    for split, (images, labels) in written.items():
        reference = _tfds_split(tmp_path / "tfds", name, split)
        np.testing.assert_array_equal(np.stack([r["image"][..., 0] for r in reference]), images)
        np.testing.assert_array_equal([r["label"] for r in reference], labels)
        got = _read_all(tmp_path / "tfds", name, split)
        np.testing.assert_array_equal(got["pixels"][..., 0], images)
        np.testing.assert_array_equal(got["label"], labels)
    ds = data.create(name, "test", batch_size=4, train=False, data_dir=str(tmp_path / "tfds"))
    assert ds.image_shape == (28, 28, 1) and ds.num_classes == 10
    if name == "fashion_mnist":
        assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"


def _idx_case(src: pathlib.Path, case: str) -> str:
    """Breaks the written IDX files one way; returns the name of the file the error must name."""
    images = src / "train-images-idx3-ubyte.gz"
    labels = src / "train-labels-idx1-ubyte.gz"
    raw = gzip.decompress(images.read_bytes())
    if case == "magic":
        images.write_bytes(gzip.compress((2049).to_bytes(4, "big") + raw[4:]))
    elif case == "truncated_gzip":
        F.truncate(images, 0.6)
    elif case == "truncated_data":
        images.write_bytes(gzip.compress(raw[:-100]))
    elif case == "size":
        pixels = np.frombuffer(raw, np.uint8, offset=16).reshape(30, 28, 28)
        images.write_bytes(gzip.compress(F.idx_bytes(pixels[:, :27])))
    elif case == "label_range":
        labels.write_bytes(gzip.compress(F.idx_bytes(np.full(30, 10, np.uint8))))
        return labels.name
    elif case == "count":
        labels.write_bytes(gzip.compress(F.idx_bytes(np.zeros(29, np.uint8))))
    return images.name


@pytest.mark.parametrize("case", ["magic", "truncated_gzip", "truncated_data", "size",
                                  "label_range", "count"])
def test_idx_bad_files_name_the_file_and_leave_nothing(tmp_path, case):
    F.write_idx_dataset(tmp_path / "src")
    bad = _idx_case(tmp_path / "src", case)
    with pytest.raises(ValueError, match=bad):
        P.prepare("mnist", tmp_path / "src", data_dir=str(tmp_path / "tfds"))
    _nothing_left(tmp_path / "tfds", "mnist")


def test_missing_idx_file_names_it(tmp_path):
    F.write_idx_dataset(tmp_path / "src")
    (tmp_path / "src" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        P.prepare("mnist", tmp_path / "src", data_dir=str(tmp_path / "tfds"))


# ---------------------------------------------------------------- CIFAR python version

@pytest.mark.parametrize("layout", ["tar", "extracted"])
def test_cifar10_round_trip_exact(tmp_path, layout):
    files, expected = F.cifar_files("cifar10")
    if layout == "tar":
        F.write_cifar_tar(tmp_path / "src" / "cifar-10-python.tar.gz", files, "cifar-10-batches-py")
    else:
        for name, raw in files.items():
            (tmp_path / "src" / "cifar-10-batches-py").mkdir(parents=True, exist_ok=True)
            (tmp_path / "src" / "cifar-10-batches-py" / name).write_bytes(raw)
    summary = P.prepare("cifar10", tmp_path / "src", data_dir=str(tmp_path / "tfds"))
    assert summary.split_sizes == {"train": 30, "test": 6}
    for split, (images, labels, _) in expected.items():
        reference = _tfds_split(tmp_path / "tfds", "cifar10", split)
        np.testing.assert_array_equal(np.stack([r["image"] for r in reference]), images)
        got = _read_all(tmp_path / "tfds", "cifar10", split)
        np.testing.assert_array_equal(got["pixels"], images)
        np.testing.assert_array_equal(got["label"], labels)
    assert data.create("cifar10", "train", batch_size=2, train=True, data_dir=str(
        tmp_path / "tfds"), worker_count=0).class_names == F.CIFAR10_CLASSES


def test_cifar100_fine_and_coarse_labels(tmp_path):
    files, expected = F.cifar_files("cifar100", per_file=8)
    F.write_cifar_tar(tmp_path / "src" / "cifar-100-python.tar.gz", files, "cifar-100-python")
    P.prepare("cifar100", tmp_path / "src", data_dir=str(tmp_path / "tfds"))
    for split, (images, fine, coarse) in expected.items():
        got = _read_all(tmp_path / "tfds", "cifar100", split)
        np.testing.assert_array_equal(got["pixels"], images)
        np.testing.assert_array_equal(got["label"], fine)
        np.testing.assert_array_equal(got["coarse_label"], coarse)
    ds = data.create("cifar100", "test", batch_size=2, train=False, data_dir=str(tmp_path / "tfds"))
    assert ds.num_classes == 100 and ds.class_names[3] == "fine3"


def _cifar_case(tmp_path: pathlib.Path, case: str) -> tuple[pathlib.Path, str]:
    files, _ = F.cifar_files("cifar10")
    images = np.zeros((6, 32, 32, 3), np.uint8)
    if case == "label_range":
        files["data_batch_3"] = F.cifar_pickle(images, {"labels": [0, 1, 2, 3, 4, 10]})
    elif case == "shape":
        files["data_batch_2"] = pickle.dumps({b"data": np.zeros((6, 3000), np.uint8),
                                              b"labels": [0] * 6}, protocol=2)
    elif case == "label_count":
        files["test_batch"] = F.cifar_pickle(images, {"labels": [0] * 5})
    elif case == "code_in_pickle":
        files["data_batch_1"] = pickle.dumps({b"data": pathlib.PurePosixPath("x")}, protocol=2)
    tar = F.write_cifar_tar(tmp_path / "src" / "cifar-10-python.tar.gz", files,
                            "cifar-10-batches-py")
    if case == "truncated_tar":
        F.truncate(tar, 0.7)
        return tar, tar.name
    culprit = {"label_range": "data_batch_3", "shape": "data_batch_2", "label_count": "test_batch",
               "code_in_pickle": "data_batch_1"}[case]
    return tar, culprit


@pytest.mark.parametrize("case", ["truncated_tar", "label_range", "shape", "label_count",
                                  "code_in_pickle"])
def test_cifar_bad_files_name_the_file_and_leave_nothing(tmp_path, case):
    tar, culprit = _cifar_case(tmp_path, case)
    with pytest.raises(ValueError, match=culprit):
        P.prepare("cifar10", tar, data_dir=str(tmp_path / "tfds"))
    _nothing_left(tmp_path / "tfds", "cifar10")


# ---------------------------------------------------------------- image folders

def _stored_order(files: list) -> list:
    """An image-folder split's files (sorted by class, then name) in the documented stored
    order: NumPy's permutation with seed 0."""
    return [files[i] for i in np.random.default_rng(0).permutation(len(files))]


def test_imagefolder_png_and_jpeg_of_several_sizes_stays_encoded_and_round_trips(tmp_path):
    classes = ("ant", "bee", "cat")
    pngs = F.write_image_folder(tmp_path / "src", classes, {"train": 3, "test": 2},
                                sizes=[(40, 48), (52, 40), (40, 40)])
    jpeg = F.write_image(tmp_path / "src" / "train" / "bee" / "photo.JPG",
                         np.full((44, 40, 3), 120, np.uint8), quality=90)
    summary = P.prepare("imagefolder", tmp_path / "src", data_dir=str(tmp_path / "tfds"),
                        dataset_name="bugs")
    assert summary.split_sizes == {"train": 10, "test": 6}
    meta = tfds_store.open_dataset("bugs", tmp_path / "tfds", "").metadata
    assert meta["storage"] == "encoded" and meta["class_folders"] == list(classes)
    # Stored: the files' own bytes, labelled by sorted class folder, with their relative names.
    stored = {r["file_name"].decode(): r for r in _tfds_split(tmp_path / "tfds", "bugs", "train")}
    expected_train = sorted(pngs["train"] + [(jpeg, 1)], key=lambda pl: (pl[1], pl[0].name))
    assert len(stored) == len(expected_train)
    for path, label in expected_train:
        record = stored[path.relative_to(tmp_path / "src").as_posix()]
        assert record["label"] == label
        np.testing.assert_array_equal(record["image"], np.asarray(Image.open(path).convert("RGB")))
    # Read: the shorter side resized to image_size (here the images' own shorter side 40, so
    # no resampling) and the central square kept: exact for PNG.
    got = _read_all(tmp_path / "tfds", "bugs", "train", image_size=40)
    for row, (path, label) in enumerate(_stored_order(expected_train)):
        pixels = np.asarray(Image.open(path).convert("RGB"))
        h, w = pixels.shape[:2]
        top, left = (h - 40) // 2, (w - 40) // 2
        np.testing.assert_array_equal(got["pixels"][row], pixels[top:top + 40, left:left + 40])
        assert got["label"][row] == label


def test_imagefolder_small_images_are_stored_decoded_grayscale_exact(tmp_path):
    files = F.write_image_folder(tmp_path / "src", ("a", "b"), {"train": 3, "validation": 2},
                                 sizes=[(12, 10)], gray=True)
    P.prepare("imagefolder", tmp_path / "src", data_dir=str(tmp_path / "tfds"), dataset_name="tiny")
    meta = tfds_store.open_dataset("tiny", tmp_path / "tfds", "").metadata
    assert meta["storage"] == "decoded"
    for split in ("train", "validation"):
        got = _read_all(tmp_path / "tfds", "tiny", split)
        assert got["image"].shape[1:] == (12, 10, 1)
        stored = _stored_order(files[split])
        expected = np.stack([np.asarray(Image.open(p)) for p, _ in stored])
        np.testing.assert_array_equal(got["pixels"][..., 0], expected)
        np.testing.assert_array_equal(got["label"], [y for _, y in stored])
    # A tenth of train is the default holdout.
    assert data.create("tiny", "holdout", batch_size=1, train=False,
                       data_dir=str(tmp_path / "tfds")).num_examples == 1


def _corrupt_folder(tmp_path: pathlib.Path, how: str) -> pathlib.Path:
    F.write_image_folder(tmp_path / "src", ("a", "b"), {"train": 3, "test": 2}, sizes=[(40, 70)])
    bad = tmp_path / "src" / "train" / "b" / "0001.png"
    if how == "garbage":
        bad.write_bytes(b"this is not a png")
    else:
        F.truncate(bad, 0.5)  # the header reads, the pixels do not: found while writing
    return bad


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_imagefolder_unreadable_image_stops_naming_it_or_is_skipped(tmp_path, how):
    bad = _corrupt_folder(tmp_path, how)
    with pytest.raises(ValueError, match=str(bad)):
        P.prepare("imagefolder", tmp_path / "src", data_dir=str(tmp_path / "tfds"),
                  dataset_name="broken")
    _nothing_left(tmp_path / "tfds", "broken")
    summary = P.prepare("imagefolder", tmp_path / "src", data_dir=str(tmp_path / "tfds"),
                        dataset_name="broken", skip_bad=True)
    assert summary.split_sizes == {"train": 5, "test": 4}
    assert len(summary.skipped) == 1 and str(bad) in summary.skipped[0]
    assert "skipped 1 unreadable files" in str(summary)
    meta = tfds_store.open_dataset("broken", tmp_path / "tfds", "").metadata
    assert len(meta["skipped_files"]) == 1 and str(bad) in meta["skipped_files"][0]


def test_imagefolder_structure_errors(tmp_path):
    def prepare(root):
        return P.prepare("imagefolder", root, data_dir=str(tmp_path / "tfds"), dataset_name="x")

    F.write_image_folder(tmp_path / "empty_class", ("a", "b"), {"train": 1}, sizes=[(8, 8)])
    (tmp_path / "empty_class" / "train" / "c").mkdir()
    with pytest.raises(ValueError, match="empty class folder"):
        prepare(tmp_path / "empty_class")
    F.write_image_folder(tmp_path / "no_classes", ("a",), {"train": 1}, sizes=[(8, 8)])
    (tmp_path / "no_classes" / "test").mkdir()
    with pytest.raises(ValueError, match="split without class folders"):
        prepare(tmp_path / "no_classes")
    F.write_image_folder(tmp_path / "differ", ("a", "b"), {"train": 1}, sizes=[(8, 8)])
    F.write_image_folder(tmp_path / "differ", ("a", "c"), {"test": 1}, sizes=[(8, 8)])
    with pytest.raises(ValueError, match="classes differ between splits"):
        prepare(tmp_path / "differ")
    F.write_image_folder(tmp_path / "reserved", ("a",), {"holdout": 1}, sizes=[(8, 8)])
    with pytest.raises(ValueError, match="holdout"):
        prepare(tmp_path / "reserved")
    with pytest.raises(ValueError, match="needs --name"):
        P.prepare("imagefolder", tmp_path / "differ", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(ValueError, match="lower-case"):
        P.prepare("imagefolder", tmp_path / "differ", dataset_name="My-Set")
    _nothing_left(tmp_path / "tfds", "x")


# ---------------------------------------------------------------- CIFAR from an image-folder copy

@pytest.mark.parametrize("suffix, label", [(".jpg", "CIFAR-10 (JPEG q75 copy)"),
                                           (".png", "CIFAR-10 (image-folder copy)")])
def test_cifar10_from_class_folders_records_its_origin(tmp_path, suffix, label, capsys):
    files = F.write_image_folder(tmp_path / "src", F.CIFAR10_CLASSES, {"train": 2, "test": 1},
                                 sizes=[(32, 32)], suffix=suffix,
                                 **({"quality": 75} if suffix == ".jpg" else {}))
    summary = P.prepare("cifar10", tmp_path / "src", data_dir=str(tmp_path / "tfds"))
    assert summary.origin == label
    assert "Downloading" not in capsys.readouterr().out  # offline: tfds' download notice is off
    ds = data.create("cifar10", "test", batch_size=10, train=False, data_dir=str(tmp_path / "tfds"))
    assert ds.origin == label
    got = _read_all(tmp_path / "tfds", "cifar10", "test")
    stored = _stored_order(files["test"])  # one image per class, not in class order
    expected = np.stack([np.asarray(Image.open(p).convert("RGB")) for p, _ in stored])
    np.testing.assert_array_equal(got["pixels"], expected)  # PIL's decoding, as stored
    np.testing.assert_array_equal(got["label"], [y for _, y in stored])
    assert got["label"].tolist() != sorted(got["label"].tolist())
    info = json.loads((tmp_path / "tfds" / "cifar10" / "3.0.2" / "dataset_info.json").read_text())
    assert "records in a fixed shuffled order" in info["description"]


def test_cifar10_folder_with_wrong_classes_or_sizes_is_refused(tmp_path):
    F.write_image_folder(tmp_path / "classes", F.CIFAR10_CLASSES[:9] + ("lorry",),
                         {"train": 1, "test": 1}, sizes=[(32, 32)])
    with pytest.raises(ValueError, match="class folders"):
        P.prepare("cifar10", tmp_path / "classes", data_dir=str(tmp_path / "tfds"))
    F.write_image_folder(tmp_path / "sizes", F.CIFAR10_CLASSES, {"train": 1, "test": 1},
                         sizes=[(32, 32)])
    F.write_image(tmp_path / "sizes" / "train" / "cat" / "big.png", np.zeros((33, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="32x32"):
        P.prepare("cifar10", tmp_path / "sizes", data_dir=str(tmp_path / "tfds"))
    _nothing_left(tmp_path / "tfds", "cifar10")


@pytest.mark.parametrize("quality", [30, 75, 95])
def test_jpeg_quality_is_read_from_the_quantization_table(tmp_path, quality):
    path = F.write_image(tmp_path / "x.jpg", np.zeros((16, 16, 3), np.uint8), quality=quality)
    assert jpeg_quality(Image.open(path).quantization[0]) == quality


# ---------------------------------------------------------------- data_dir, CLI, download

def test_missing_dataset_prints_the_prepare_command(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "from_env"))
    with pytest.raises(FileNotFoundError) as info:
        data.create("cifar10", "train", batch_size=2, train=True)
    assert (f"python -m cnnjax.data.prepare cifar10 --source=DIR "
            f"--data_dir={tmp_path / 'from_env'}") in str(info.value)
    with pytest.raises(FileNotFoundError) as info:
        data.create("mnist", "train", batch_size=2, train=True, data_dir=str(tmp_path / "given"))
    assert f"python -m cnnjax.data.prepare mnist --source=DIR --data_dir={tmp_path / 'given'}" \
        in str(info.value)
    with pytest.raises(ValueError, match="prepare imagefolder --source=DIR --name=flowers"):
        data.create("flowers", "train", batch_size=2, train=True, data_dir=str(tmp_path))


def test_default_data_dir_is_home_tensorflow_datasets(monkeypatch):
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    assert tfds_store.resolve_data_dir() == pathlib.Path.home() / "tensorflow_datasets"
    monkeypatch.setenv("TFDS_DATA_DIR", "/somewhere")
    assert tfds_store.resolve_data_dir() == pathlib.Path("/somewhere")
    assert tfds_store.resolve_data_dir("/given") == pathlib.Path("/given")


def test_existing_copy_is_kept_unless_overwritten_and_a_failed_overwrite_keeps_it(tmp_path):
    F.write_idx_dataset(tmp_path / "src", seed=1)
    P.prepare("mnist", tmp_path / "src", data_dir=str(tmp_path / "tfds"))
    before = _read_all(tmp_path / "tfds", "mnist", "test")["pixels"]
    with pytest.raises(FileExistsError, match="--overwrite"):
        P.prepare("mnist", tmp_path / "src", data_dir=str(tmp_path / "tfds"))
    F.truncate(tmp_path / "src" / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(ValueError, match="t10k-images"):
        P.prepare("mnist", tmp_path / "src", data_dir=str(tmp_path / "tfds"), overwrite=True)
    np.testing.assert_array_equal(_read_all(tmp_path / "tfds", "mnist", "test")["pixels"], before)
    written = F.write_idx_dataset(tmp_path / "src", seed=2)
    P.prepare("mnist", tmp_path / "src", data_dir=str(tmp_path / "tfds"), overwrite=True)
    np.testing.assert_array_equal(_read_all(tmp_path / "tfds", "mnist", "test")["pixels"][..., 0],
                                  written["test"][0])
    assert sorted(p.name for p in (tmp_path / "tfds").iterdir()) == ["mnist"]


def test_cli_prints_a_summary_or_the_error(tmp_path, capsys):
    F.write_idx_dataset(tmp_path / "src")
    assert P.main(["fashion_mnist", f"--source={tmp_path / 'src'}",
                   f"--data_dir={tmp_path / 'tfds'}"]) == 0
    assert "prepared fashion_mnist" in capsys.readouterr().out
    F.truncate(tmp_path / "src" / "train-labels-idx1-ubyte.gz")
    assert P.main(["mnist", f"--source={tmp_path / 'src'}", f"--data_dir={tmp_path / 'tfds'}"]) == 1
    assert "train-labels-idx1-ubyte.gz" in capsys.readouterr().err


def test_download_fetches_the_originals_then_prepares(tmp_path):
    F.write_idx_dataset(tmp_path / "mirror")
    from cnnjax.data.download import download

    paths = download("mnist", tmp_path / "src", base_url=(tmp_path / "mirror").as_uri() + "/")
    assert sorted(p.name for p in paths) == sorted(p.name for p in (tmp_path / "mirror").iterdir())
    assert all(p.read_bytes() == (tmp_path / "mirror" / p.name).read_bytes() for p in paths)
    with pytest.raises(OSError, match="could not download"):
        download("cifar10", tmp_path / "src2", base_url=(tmp_path / "nowhere").as_uri() + "/")
    assert list((tmp_path / "src2").iterdir()) == []


# ---------------------------------------------------------------- the real shared datasets

@pytest.mark.needs_data
def test_shared_mnist_files_pass_the_structure_checks(shared_data):
    from cnnjax.data.idx import read_idx_pair

    src = shared_data / "mnist"
    train = read_idx_pair(src / "train-images-idx3-ubyte.gz", src / "train-labels-idx1-ubyte.gz",
                          image_hw=(28, 28), num_classes=10)
    test = read_idx_pair(src / "t10k-images-idx3-ubyte.gz", src / "t10k-labels-idx1-ubyte.gz",
                         image_hw=(28, 28), num_classes=10)
    assert train[0].shape == (60000, 28, 28, 1) and test[0].shape == (10000, 28, 28, 1)
    assert np.bincount(train[1]).tolist() == MNIST_TRAIN_HIST
    assert np.bincount(test[1]).tolist() == MNIST_TEST_HIST
    assert train[1][:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


@pytest.mark.needs_data
@pytest.mark.slow
def test_shared_mnist_prepared_and_read_back(shared_data, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="cnnjax.data.prepare"):
        P.prepare("mnist", shared_data / "mnist", data_dir=str(tmp_path))
    assert sum("checksum mismatch" in r.getMessage() for r in caplog.records) == 4
    train, test = _read_all(tmp_path, "mnist", "train"), _read_all(tmp_path, "mnist", "test")
    assert np.bincount(train["label"]).tolist() == MNIST_TRAIN_HIST
    assert np.bincount(test["label"]).tolist() == MNIST_TEST_HIST
    assert train["label"][:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    # The pixels, against the IDX files decoded here: a big-endian header (magic 0x803, count,
    # rows, columns), then one byte per pixel.
    for split, images in (("train", train["image"]), ("t10k", test["image"])):
        with gzip.open(shared_data / "mnist" / f"{split}-images-idx3-ubyte.gz", "rb") as f:
            magic, count, rows, cols = struct.unpack(">4I", f.read(16))
            pixels = np.frombuffer(f.read(), np.uint8)
        assert magic == 0x803 and pixels.size == count * rows * cols
        np.testing.assert_array_equal(images.reshape(count, rows, cols),
                                      pixels.reshape(count, rows, cols), err_msg=split)


@pytest.mark.needs_data
def test_shared_cifar10_copy_has_the_published_counts(shared_data):
    from cnnjax.data.imagefolder import scan_folder

    index = scan_folder(shared_data / "cifar10_jpeg")
    assert index.classes == F.CIFAR10_CLASSES
    for split, per_class in (("train", 5000), ("test", 1000)):
        assert np.bincount([y for _, y in index.files[split]]).tolist() == [per_class] * 10


@pytest.mark.needs_data
@pytest.mark.slow
def test_shared_cifar10_jpeg_copy_prepared_and_read_back(shared_data, tmp_path):
    summary = P.prepare("cifar10", shared_data / "cifar10_jpeg", data_dir=str(tmp_path))
    assert summary.origin == "CIFAR-10 (JPEG q75 copy)"
    assert summary.split_sizes == {"train": 50000, "test": 10000}
    train, test = _read_all(tmp_path, "cifar10", "train"), _read_all(tmp_path, "cifar10", "test")
    assert np.bincount(train["label"]).tolist() == [5000] * 10
    assert np.bincount(test["label"]).tolist() == [1000] * 10
    means = train["image"].astype(np.float64).mean(axis=(0, 1, 2)) / 255
    np.testing.assert_allclose(means, [0.489, 0.481, 0.447], atol=0.01)
