"""tensorflow-datasets interoperability both ways, without TensorFlow.

What cnnjax prepares from small files of the real formats (tests/data_files.py) is the catalog's
own dataset: tfds opens it by name (`tfds.data_source`, `tfds.builder`: tfds' registered builders
and feature specs, not cnnjax's) and decodes the written pixels and labels. A TFRecord copy in the
catalog's layout, written here as tfds writes one (tfds' own builder info, feature encoding and
example serializer; TFRecord framing with a CRC-32C written here bytewise), converts with
`prepare from-tfds` and trains. Corrupt framing names the file and offset; the vectorised CRC-32C
is compared with a bitwise loop; the PNGs cnnjax writes are read by PIL; copies cnnjax prepared
before (NAME/1.0.0) still load."""

from __future__ import annotations

import io
import json
import math
import pathlib
import struct

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from array_record.python.array_record_module import ArrayRecordWriter
from tensorflow_datasets.core import example_serializer
from tensorflow_datasets.proto import tf_example_pb2

import data_files as F
from cnnjax import data
from cnnjax.data import png
from cnnjax.data import prepare as P
from cnnjax.data import tfds_store
from cnnjax.data.catalog import ORIGINALS
from cnnjax.data.crc32c import crc32c_ranges
from cnnjax.data.tfrecord import CorruptRecord, read_records


# ---------------------------------------------------------------- references written here

def _bitwise_crc32c(data: bytes) -> int:
    """CRC-32C one bit at a time, straight from its definition (reflected 0x82F63B78)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def _byte_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _byte_table()


def _crc(data: bytes) -> int:
    """CRC-32C a byte at a time in pure Python (checked against the bitwise loop below)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _framed(record: bytes) -> bytes:
    """One TFRecord: length, masked CRC of the length, data, masked CRC of the data."""
    length = struct.pack("<Q", len(record))
    return (length + struct.pack("<I", _masked(_crc(length))) + record
            + struct.pack("<I", _masked(_crc(record))))


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def _read_all(data_dir, name, split, **options) -> dict[str, np.ndarray]:
    """A whole split through cnnjax.data.create, in stored order; pixels as read (uint8)."""
    kw = dict(train=False, data_dir=str(data_dir), worker_count=0, **options)
    n = data.create(name, split, batch_size=1, **kw).num_examples
    batch = next(data.create(name, split, batch_size=n, **kw).batches())
    assert batch["image"].dtype == np.uint8
    batch["pixels"] = batch["image"]
    return batch


# ---------------------------------------------------------------- CRC-32C and TFRecord framing

def test_crc32c_of_many_ranges_matches_the_bitwise_definition():
    assert _bitwise_crc32c(b"123456789") == 0xE3069283  # RFC 3720's check value
    rng = np.random.default_rng(0)
    buffer = rng.integers(0, 256, 9000, dtype=np.uint8)
    lengths = [0, 1, 3, 4, 5, 63, 64, 65, 127, 128, 129, 1000, 4099]
    starts = rng.integers(0, 9000 - 4099, len(lengths))
    got = crc32c_ranges(buffer, starts, lengths)
    expected = [_bitwise_crc32c(buffer[s:s + n].tobytes()) for s, n in zip(starts, lengths)]
    assert got.tolist() == expected
    assert [_crc(buffer[s:s + n].tobytes()) for s, n in zip(starts, lengths)] == expected


def _record_file(path: pathlib.Path, records: list[bytes]) -> list[int]:
    """Writes `records` as a TFRecord file; returns each record's byte offset."""
    framed = [_framed(r) for r in records]
    path.write_bytes(b"".join(framed))
    return np.cumsum([0] + [len(f) for f in framed[:-1]]).tolist()


def test_tfrecord_records_read_back_exactly(tmp_path):
    rng = np.random.default_rng(1)
    records = [rng.bytes(int(n)) for n in (0, 1, 70, 3000, 12)]
    _record_file(tmp_path / "ok.tfrecord", records)
    assert read_records(tmp_path / "ok.tfrecord") == records
    (tmp_path / "empty.tfrecord").write_bytes(b"")
    assert read_records(tmp_path / "empty.tfrecord") == []


@pytest.mark.parametrize("case", ["data", "data_crc", "length", "truncated", "short_header"])
def test_corrupt_tfrecord_names_the_file_and_the_record_offset(tmp_path, case):
    rng = np.random.default_rng(2)
    records = [rng.bytes(100 + 7 * i) for i in range(5)]
    path = tmp_path / "x.tfrecord"
    offsets = _record_file(path, records)
    raw = bytearray(path.read_bytes())
    if case == "data":
        raw[offsets[2] + 12 + 50] ^= 0x01  # one bit of record 2's data
        bad, what = 2, "data"
    elif case == "data_crc":
        raw[offsets[3] + 12 + len(records[3])] ^= 0x80
        bad, what = 3, "data"
    elif case == "length":
        raw[offsets[1]] ^= 0x02  # record 1 claims 2 bytes more: the rest misaligns
        bad, what = 1, "length"
    elif case == "truncated":
        raw = raw[:offsets[4] + 40]
        bad, what = 4, "truncated"
    else:
        raw = raw[:offsets[4] + 5]
        bad, what = 4, "truncated"
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptRecord, match=f"{path}: record {bad} at byte offset "
                                            f"{offsets[bad]}:.*{what}"):
        read_records(path)


# ---------------------------------------------------------------- PNGs that decode as a copy

@pytest.mark.parametrize("shape", [(28, 28, 1), (7, 13, 3)])
def test_stored_png_is_a_standard_png_and_decodes_as_a_copy(shape):
    pixels = np.random.default_rng(6).integers(0, 256, shape, dtype=np.uint8)
    encoded = png.encode(pixels)
    with Image.open(io.BytesIO(encoded)) as im:  # PIL verifies the chunk CRCs and zlib stream
        im.load()
        assert im.mode == ("L" if shape[-1] == 1 else "RGB")
        np.testing.assert_array_equal(np.asarray(im).reshape(shape), pixels)
    np.testing.assert_array_equal(png.decode_stored([encoded, encoded], shape), [pixels, pixels])
    truncated = encoded[:len(encoded) // 2]  # left to PIL, which names the problem
    assert png.decode_stored([encoded, truncated], shape) is None


def test_filtered_png_is_left_to_pil():
    y, x = np.mgrid[:16, :16]
    pixels = np.stack([x * 8, y * 8, x * y], -1).astype(np.uint8)  # PIL filters these rows
    assert png.decode_stored([png.encode(pixels), _png(pixels)], (16, 16, 3)) is None
    np.testing.assert_array_equal(png.decode_stored([png.encode(pixels)], (16, 16, 3))[0], pixels)


# ---------------------------------------------------------------- the catalog's specs

@pytest.mark.parametrize("name", sorted(ORIGINALS))
def test_catalog_versions_and_features_are_tfds_own(tmp_path, name):
    builder = tfds.builder(name, data_dir=str(tmp_path))  # tfds' registered builder
    assert str(builder.version) == ORIGINALS[name].tfds_version
    theirs = builder.info.features
    classes = {k: theirs[k].num_classes for k in theirs.keys()
               if isinstance(theirs[k], tfds.features.ClassLabel)}
    ours = tfds_store.catalog_features(name, [str(i) for i in range(classes["label"])],
                                       [str(i) for i in range(classes.get("coarse_label", 0))])

    def spec(features):
        return {k: (type(f).__name__, f.shape, np.dtype(f.np_dtype).name,
                    getattr(f, "encoding_format", None),
                    getattr(f, "num_classes", None)) for k, f in features.items()}
    assert spec(ours) == spec(theirs)


# ---------------------------------------------------------------- what cnnjax prepares, tfds opens

def _prepare_tiny(name: str, src: pathlib.Path, data_dir: pathlib.Path) -> dict:
    """Prepares a tiny copy of `name` from files of its real format; returns split -> (images
    (N, H, W, C), labels, coarse labels or None) as written."""
    if name in ("mnist", "fashion_mnist"):
        written = F.write_idx_dataset(src)
        expected = {s: (x[..., None], y, None) for s, (x, y) in written.items()}
    else:
        files, expected = F.cifar_files(name, per_file=8 if name == "cifar100" else 6)
        archive, folder = {"cifar10": ("cifar-10-python.tar.gz", "cifar-10-batches-py"),
                           "cifar100": ("cifar-100-python.tar.gz", "cifar-100-python")}[name]
        F.write_cifar_tar(src / archive, files, folder)
    P.prepare(name, src, data_dir=str(data_dir))
    return expected


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100"])
def test_prepared_dataset_opens_in_tfds_by_name_with_the_same_arrays(tmp_path, name):
    expected = _prepare_tiny(name, tmp_path / "src", tmp_path / "tfds")
    version = ORIGINALS[name].tfds_version
    assert (tmp_path / "tfds" / name / version / "dataset_info.json").is_file()
    builder = tfds.builder(name, data_dir=str(tmp_path / "tfds"))
    assert str(builder.version) == version
    builder.download_and_prepare()  # finds it prepared: no download
    # tfds' look-up of its download checksums, which a missing dataset starts with, imports
    # importlib_resources (declared in setup.cfg: tfds declares it for Python < 3.9 only).
    assert builder.url_infos
    for split, (images, labels, coarse) in expected.items():
        theirs = tfds.data_source(name, split=split, data_dir=str(tmp_path / "tfds"))
        rows = [theirs[i] for i in range(len(theirs))]
        np.testing.assert_array_equal(np.stack([r["image"] for r in rows]), images)
        np.testing.assert_array_equal([r["label"] for r in rows], labels)
        ours = _read_all(tmp_path / "tfds", name, split)
        np.testing.assert_array_equal(ours["pixels"], images)
        np.testing.assert_array_equal(ours["label"], labels)
        if coarse is not None:
            np.testing.assert_array_equal([r["coarse_label"] for r in rows], coarse)
            np.testing.assert_array_equal(ours["coarse_label"], coarse)
        if name != "mnist":  # the catalog's CIFAR ids: split and index
            assert [r["id"].decode() for r in rows[:2]] == [f"{split}_00000", f"{split}_00001"]
    names = builder.info.features["label"].names
    assert tuple(names) == data.create(name, "test", batch_size=2, train=False,
                                       data_dir=str(tmp_path / "tfds")).class_names


def test_cifar10_jpeg_copy_says_so_in_tfds_description_and_metadata(tmp_path):
    files = F.write_image_folder(tmp_path / "src", F.CIFAR10_CLASSES, {"train": 2, "test": 1},
                                 sizes=[(32, 32)], suffix=".jpg", quality=75)
    P.prepare("cifar10", tmp_path / "src", data_dir=str(tmp_path / "tfds"))
    path = tmp_path / "tfds" / "cifar10" / "3.0.2"
    assert "JPEG q75 copy" in tfds.builder_from_directory(str(path)).info.description
    assert json.loads((path / "metadata.json").read_text())["origin"] == "CIFAR-10 (JPEG q75 copy)"
    rows = tfds.data_source("cifar10", split="test", data_dir=str(tmp_path / "tfds"))
    # Records are stored shuffled (prepare.record_order): match them to the files by their id.
    by_id = {file.relative_to(tmp_path / "src").as_posix(): (file, label)
             for file, label in files["test"]}
    assert sorted(row["id"].decode() for row in rows) == sorted(by_id)
    for row in rows:
        file, label = by_id[row["id"].decode()]
        np.testing.assert_array_equal(row["image"], np.asarray(Image.open(file).convert("RGB")))
        assert row["label"] == label


def test_cifar100_folder_copy_has_unknown_superclasses(tmp_path):
    classes = tuple(f"class{i:03d}" for i in range(100))
    files = F.write_image_folder(tmp_path / "src", classes, {"train": 1, "test": 1},
                                 sizes=[(32, 32)])
    P.prepare("cifar100", tmp_path / "src", data_dir=str(tmp_path / "tfds"))
    rows = tfds.data_source("cifar100", split="test", data_dir=str(tmp_path / "tfds"))
    by_id = {file.relative_to(tmp_path / "src").as_posix(): (file, label)
             for file, label in files["test"]}
    assert {int(r["coarse_label"]) for r in rows} == {-1}
    for row in rows:
        file, label = by_id[row["id"].decode()]
        assert row["label"] == label
        np.testing.assert_array_equal(row["image"], np.asarray(Image.open(file)))


def _write_old_copy_by_hand(root: pathlib.Path, splits: dict, class_names) -> None:
    """cifar10/1.0.0 as cnnjax wrote it before the catalog layout, file by file without
    cnnjax's or tfds' writer: dataset_info.json and features.json as literal JSON, each split one
    array_record shard of tf.train.Example protos (the image's raw bytes, the label)."""
    path = root / "cifar10" / "1.0.0"
    path.mkdir(parents=True)
    info_splits = []
    for split, (images, labels) in splits.items():
        writer = ArrayRecordWriter(str(path / f"cifar10-{split}.array_record-00000-of-00001"),
                                   "group_size:1")
        size = 0
        for image, label in zip(images, labels):
            example = tf_example_pb2.Example()
            example.features.feature["image"].bytes_list.value.append(image.tobytes())
            example.features.feature["label"].int64_list.value.append(int(label))
            record = example.SerializeToString()
            size += len(record)
            writer.write(record)
        writer.close()
        info_splits.append({"filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
                            "name": split, "numBytes": str(size),
                            "shardLengths": [str(len(labels))]})
    (path / "dataset_info.json").write_text(json.dumps({
        "description": "earlier cnnjax", "disableShuffling": True, "fileFormat": "array_record",
        "moduleName": "cnnjax.data.tfds_store", "name": "cifar10", "splits": info_splits,
        "supervisedKeys": {"tuple": {"items": [{"featureKey": "image"},
                                               {"featureKey": "label"}]}},
        "version": "1.0.0"}))
    features = "tensorflow_datasets.core.features."
    (path / "features.json").write_text(json.dumps({
        "pythonClassName": features + "features_dict.FeaturesDict",
        "featuresDict": {"features": {
            "image": {"pythonClassName": features + "tensor_feature.Tensor",
                      "tensor": {"dtype": "uint8", "encoding": "bytes",
                                 "shape": {"dimensions": ["32", "32", "3"]}}},
            "label": {"pythonClassName": features + "class_label_feature.ClassLabel",
                      "classLabel": {"numClasses": str(len(class_names))}}}}}))
    (path / "label.labels.txt").write_text("\n".join(class_names) + "\n")
    (path / "metadata.json").write_text(json.dumps({"origin": "CIFAR-10", "holdout": 2}))


def test_copy_prepared_by_earlier_cnnjax_still_loads_and_the_catalog_copy_wins(tmp_path):
    rng = np.random.default_rng(3)
    old = {s: (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), np.arange(n) % 10)
           for s, n in (("train", 12), ("test", 4))}
    _write_old_copy_by_hand(tmp_path, old, F.CIFAR10_CLASSES)
    got = _read_all(tmp_path, "cifar10", "test")
    np.testing.assert_array_equal(got["pixels"], old["test"][0])
    np.testing.assert_array_equal(got["label"], old["test"][1])
    source = data.create("cifar10", "test", batch_size=1, train=False, data_dir=str(tmp_path))
    assert source.class_names == tuple(F.CIFAR10_CLASSES)
    assert data.create("cifar10", "holdout", batch_size=1, train=False,
                       data_dir=str(tmp_path)).num_examples == 2
    expected = _prepare_tiny("cifar10", tmp_path / "src", tmp_path)
    np.testing.assert_array_equal(_read_all(tmp_path, "cifar10", "test")["pixels"],
                                  expected["test"][0])


def test_missing_dataset_names_both_ways_to_get_it(tmp_path):
    with pytest.raises(tfds_store.MissingDataset) as info:
        data.create("cifar10", "train", batch_size=2, train=True, data_dir=str(tmp_path))
    message = str(info.value)
    assert f"python -m cnnjax.data.prepare cifar10 --source=DIR --data_dir={tmp_path}" in message
    assert f"python -m cnnjax.data.prepare from-tfds cifar10 --data_dir={tmp_path}" in message
    assert str(tmp_path / "cifar10" / "3.0.2") in message


# ---------------------------------------------------------------- tfds' TFRecord copy, converted

SHARDS = {"train": [14, 16], "test": [6]}


def _write_tfds_tfrecord_copy(data_dir: pathlib.Path) -> dict:
    """CIFAR-10 in the catalog's layout as tfds writes it: tfds' registered builder's info
    (features, version), its feature encoding and example serializer, TFRecord shards, and its
    dataset_info.json / features.json; returns split -> (images, labels) in record order."""
    builder = tfds.builder("cifar10", data_dir=str(data_dir))
    info = builder.info
    info.features["label"].names = list(F.CIFAR10_CLASSES)  # what tfds reads from batches.meta
    serializer = example_serializer.ExampleSerializer(info.features.get_serialized_info())
    path = pathlib.Path(builder.data_dir)
    path.mkdir(parents=True)
    rng = np.random.default_rng(4)
    written, split_infos = {}, []
    for split, lengths in SHARDS.items():
        n = sum(lengths)
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, n)
        records = [serializer.serialize_example(info.features.encode_example(
            {"id": f"{split}_{i:05d}", "image": _png(images[i]), "label": int(labels[i])}))
            for i in range(n)]
        template = tfds.core.ShardedFileTemplate(data_dir=path, dataset_name="cifar10",
                                                 split=split, filetype_suffix="tfrecord")
        for shard, start in enumerate(np.cumsum([0] + lengths[:-1])):
            _record_file(template.sharded_filepath(shard_index=shard, num_shards=len(lengths)),
                         records[start:start + lengths[shard]])
        split_infos.append(tfds.core.SplitInfo(name=split, shard_lengths=lengths,
                                               num_bytes=sum(map(len, records)),
                                               filename_template=template))
        written[split] = (images, labels)
    info.set_splits(tfds.core.SplitDict(split_infos))
    info.set_file_format("tfrecord")
    info.write_to_directory(path)
    return written


def test_tfds_tfrecord_copy_converts_reads_and_trains(tmp_path):
    from cnnjax.sweep.config_file import load_module
    from cnnjax.train import trainer
    from conftest import REPO_ROOT

    written = _write_tfds_tfrecord_copy(tmp_path)
    path = tmp_path / "cifar10" / "3.0.2"
    with pytest.raises(tfds_store.NeedsConversion,
                       match=f"python -m cnnjax.data.prepare from-tfds cifar10 "
                             f"--data_dir={tmp_path}"):
        data.create("cifar10", "train", batch_size=2, train=True, data_dir=str(tmp_path))
    assert P.main(["from-tfds", "cifar10", f"--data_dir={tmp_path}"]) == 0
    assert sorted(p.name for p in path.glob("*.array_record-*")) == [
        "cifar10-test.array_record-00000-of-00001", "cifar10-train.array_record-00000-of-00002",
        "cifar10-train.array_record-00001-of-00002"]
    assert not list(path.glob(".incomplete*"))
    for split, (images, labels) in written.items():
        got = _read_all(tmp_path, "cifar10", split)
        np.testing.assert_array_equal(got["pixels"], images)
        np.testing.assert_array_equal(got["label"], labels)
        theirs = tfds.data_source("cifar10", split=split, data_dir=str(tmp_path))
        np.testing.assert_array_equal(np.stack([theirs[i]["image"] for i in range(len(theirs))]),
                                      images)
    ds = data.create("cifar10", "train", batch_size=2, train=True, data_dir=str(tmp_path))
    assert ds.class_names == F.CIFAR10_CLASSES and ds.origin == "CIFAR-10"
    assert P.main(["from-tfds", "cifar10", f"--data_dir={tmp_path}"]) == 0  # already converted

    config = load_module(REPO_ROOT / "configs" / "default.py").get_config()
    config.dataset.name, config.dataset.data_dir = "cifar10", str(tmp_path)
    config.dataset.options = {"worker_count": 0, "holdout": 6}
    config.dataset.train_split, config.dataset.eval_split = "train_minus_holdout", "holdout"
    config.batch_size, config.num_train_steps = 8, 3
    config.log_every_steps = config.eval_every_steps = config.checkpoint_every_steps = 3
    result = trainer.train(config, tmp_path / "run")
    assert math.isfinite(result["loss"]) and 0.0 <= result["accuracy"] <= 1.0


@pytest.mark.parametrize("case", ["corrupt", "count", "missing_shard"])
def test_failed_conversion_names_the_file_and_changes_nothing(tmp_path, capsys, case):
    _write_tfds_tfrecord_copy(tmp_path)
    path = tmp_path / "cifar10" / "3.0.2"
    shard = path / "cifar10-train.tfrecord-00001-of-00002"
    if case == "corrupt":
        raw = bytearray(shard.read_bytes())
        (length,) = struct.unpack_from("<Q", raw, 0)
        second = 12 + length + 4
        raw[second + 12 + 30] ^= 0xFF
        shard.write_bytes(bytes(raw))
        expected = f"{shard}: record 1 at byte offset {second}: the data's CRC"
    elif case == "count":
        records = read_records(shard)
        _record_file(shard, records[:-1])
        expected = f"{shard}: 15 records, {path / 'dataset_info.json'} says 16"
    else:
        shard.unlink()
        expected = f"{shard} not found"
    before = (path / "dataset_info.json").read_bytes()
    assert P.main(["from-tfds", "cifar10", f"--data_dir={tmp_path}"]) == 1
    assert expected in capsys.readouterr().err
    assert (path / "dataset_info.json").read_bytes() == before
    assert not list(path.glob("*array_record*")) and not list(path.glob(".incomplete*"))
    with pytest.raises(tfds_store.NeedsConversion):
        data.create("cifar10", "train", batch_size=2, train=True, data_dir=str(tmp_path))


def test_from_tfds_without_a_copy_says_what_it_converts(tmp_path, capsys):
    assert P.main(["from-tfds", "mnist", f"--data_dir={tmp_path}"]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'mnist' / '3.0.1' / 'dataset_info.json'} not found" in err
    assert err.count("\n") == 1


# ---------------------------------------------------------------- ImageNet's odd files

def test_imagenet_cmyk_and_png_files_become_rgb_jpegs_as_in_tfds(tmp_path):
    y, x = np.mgrid[:20, :24]  # smooth content: JPEG's chroma subsampling keeps it
    pixels = np.stack([x * 10, y * 12, x * 5 + y * 6], -1).astype(np.uint8)
    rgb, cmyk, png = io.BytesIO(), io.BytesIO(), io.BytesIO()
    Image.fromarray(pixels).save(rgb, "JPEG", quality=90)
    Image.fromarray(pixels).convert("CMYK").save(cmyk, "JPEG", quality=95)
    Image.fromarray(pixels).save(png, "PNG")
    assert P._catalog_jpeg(rgb.getvalue(), "rgb") == (rgb.getvalue(), False)
    for source in (cmyk, png):
        stored, changed = P._catalog_jpeg(source.getvalue(), "odd")
        with Image.open(io.BytesIO(stored)) as im:
            assert changed and (im.format, im.mode, im.size) == ("JPEG", "RGB", (24, 20))
            # Quality 100 keeps the pixels PIL decodes from the original to within JPEG's error.
            reference = np.asarray(Image.open(source).convert("RGB"), np.float64)
            assert np.abs(np.asarray(im, np.float64) - reference).mean() < 3


def test_conversion_benchmark_round_trips_a_prepared_copy(tmp_path, monkeypatch):
    import sys

    from conftest import REPO_ROOT
    sys.path.insert(0, str(REPO_ROOT / "experiments"))
    import bench_from_tfds

    _prepare_tiny("cifar10", tmp_path / "src", tmp_path / "tfds")
    monkeypatch.setattr(bench_from_tfds, "RESULTS", tmp_path / "from_tfds.md")
    bench_from_tfds.main(["cifar10", f"--data_dir={tmp_path / 'tfds'}", "--record"])
    recorded = (tmp_path / "from_tfds.md").read_text()
    assert "| cifar10 | 36 |" in recorded and "bench_from_tfds.py cifar10" in recorded
