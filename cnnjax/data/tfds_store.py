"""Datasets in the tensorflow-datasets layout, written and opened without TensorFlow.

Layout (tfds'): DATA_DIR/NAME/VERSION/ holds dataset_info.json (splits, their sizes and file
format), features.json (the feature spec, class names included) and the split files
NAME-SPLIT.FORMAT-0000i-of-0000n of serialized tf.train.Example records, one per example; cnnjax
adds metadata.json (where the data came from, the holdout size).

The standard datasets (mnist, fashion_mnist, cifar10, cifar100, imagenet2012) are written as
tfds' catalog defines them: its version (cnnjax.data.catalog), feature names and types
(catalog_features: images PNG-encoded (cnnjax.data.png), ImageNet's JPEG; ClassLabels named), as
array_record, so `tfds.data_source(NAME, data_dir=D)` opens what cnnjax prepared by name, and
cnnjax reads a copy tfds prepared itself: array_record as it is, TFRecord once converted
(cnnjax.data.from_tfds).
Image folders, and standard datasets prepared by cnnjax before it wrote the catalog's layout, are
NAME/1.0.0 (FOLDER_VERSION) with cnnjax's own features: "image" a uint8 `Tensor` (H, W, C) stored
as raw bytes ("decoded": small images of one size) or an `Image` of the original file's bytes
("encoded"), "label" a ClassLabel, "file_name" the image's path in the folder. Both are read the
same way: tfds' read-only builder (`tfds.builder_from_directory`, what `tfds.data_source` uses for
a dataset without registered code) fetches records as raw bytes, decoded here with NumPy and PIL.

Writing goes through a tfds `GeneratorBasedBuilder` (file_format "array_record", source order
kept): tfds serializes examples with its own protobuf classes, so TensorFlow is needed only for
what is skipped here: dataset statistics, and encoding NumPy images (images are given encoded).
Nothing half-written ever loads: the dataset is built under DATA_DIR/.incomplete-NAME-*/ (where
tfds itself writes into an incomplete.* folder renamed when done) and moved into place only when
complete; with `overwrite` an existing copy is replaced only at that moment.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.proto import tf_example_pb2  # protobuf classes only, no TensorFlow

from cnnjax.data import png
from cnnjax.data.augment import center_crop, resize_shorter
from cnnjax.data.catalog import ORIGINALS
from cnnjax.data.imagefolder import decode_image

FOLDER_VERSION = "1.0.0"
ARRAY_RECORD = "array_record"
DATA_DIR_ENV = "TFDS_DATA_DIR"
DEFAULT_DATA_DIR = "~/tensorflow_datasets"
METADATA_FILE = "metadata.json"
LABEL_KEYS = ("label", "coarse_label")
_NAME = re.compile(r"[a-z][a-z0-9_]*")


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """`data_dir` if given, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    chosen = data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return pathlib.Path(chosen).expanduser()


def check_name(name: str) -> str:
    """A dataset name tfds accepts: lower-case letters, digits and underscores."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"dataset name {name!r} must be lower-case letters, digits and "
                         f"underscores, starting with a letter (e.g. 'my_flowers')")
    return name


def default_version(name: str) -> str:
    """The version cnnjax writes dataset `name` as: the catalog's for a standard dataset, else
    FOLDER_VERSION."""
    return ORIGINALS[name].tfds_version if name in ORIGINALS else FOLDER_VERSION


def dataset_dir(name: str, data_dir: str | os.PathLike | None = None,
                version: str | None = None) -> pathlib.Path:
    """DATA_DIR/NAME/VERSION, by default at default_version(name)."""
    return resolve_data_dir(data_dir) / check_name(name) / (version or default_version(name))


def is_prepared(name: str, data_dir: str | os.PathLike | None = None) -> bool:
    """Whether `data_dir` holds dataset `name` (any string): at the catalog's version (written
    by tfds or cnnjax), or prepared by cnnjax at FOLDER_VERSION."""
    if not _NAME.fullmatch(name):
        return False
    return ((name in ORIGINALS and (dataset_dir(name, data_dir) / "dataset_info.json").is_file())
            or (dataset_dir(name, data_dir, FOLDER_VERSION) / METADATA_FILE).is_file())


def catalog_features(name: str, class_names: Sequence[str],
                     coarse_names: Sequence[str] = ()) -> tfds.features.FeaturesDict:
    """The tfds catalog's feature spec of standard dataset `name` (tensorflow_datasets 4.9.10's
    builders, named in cnnjax.data.catalog), its labels named `class_names` (`coarse_names`:
    CIFAR-100's superclasses). MNIST, Fashion-MNIST: "image" PNG 28x28x1, "label"; CIFAR: "id"
    ("train_00000", ...), "image" PNG 32x32x3, "label" (and "coarse_label"); ImageNet: "image"
    JPEG of any size, RGB, "label" (the synset), "file_name" (the image's file name)."""
    label = tfds.features.ClassLabel(names=list(class_names))
    if name in ("mnist", "fashion_mnist"):
        return tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(28, 28, 1)),
                                           "label": label})
    if name in ("cifar10", "cifar100"):
        spec = {"id": tfds.features.Text(), "image": tfds.features.Image(shape=(32, 32, 3)),
                "label": label}
        if name == "cifar100":  # without names (an image-folder copy): 20 unnamed classes
            spec["coarse_label"] = tfds.features.ClassLabel(names=list(coarse_names)) \
                if coarse_names else tfds.features.ClassLabel(num_classes=20)
        return tfds.features.FeaturesDict(spec)
    if name == "imagenet2012":
        return tfds.features.FeaturesDict({
            "image": tfds.features.Image(encoding_format="jpeg"), "label": label,
            "file_name": tfds.features.Text()})
    raise ValueError(f"{name!r} is not a catalog dataset cnnjax prepares; expected one of "
                     f"{sorted(ORIGINALS)}")


def image_features(*, class_names: Sequence[str], shape: tuple[int, int, int] | None = None,
                   channels: int = 3, coarse_names: Sequence[str] = (),
                   file_names: bool = False) -> tfds.features.FeaturesDict:
    """cnnjax's own feature spec (image folders): decoded uint8 images of `shape`, or (shape None)
    encoded image files of any size with `channels` channels; labels named `class_names` (and
    `coarse_names`); with `file_names`, each image's path in the folder."""
    if shape is not None:
        image = tfds.features.Tensor(shape=tuple(shape), dtype=np.uint8,
                                     encoding=tfds.features.Encoding.BYTES)
    else:
        image = tfds.features.Image(shape=(None, None, channels))
    spec = {"image": image, "label": tfds.features.ClassLabel(names=list(class_names))}
    if coarse_names:
        spec["coarse_label"] = tfds.features.ClassLabel(names=list(coarse_names))
    if file_names:
        spec["file_name"] = tfds.features.Text()
    return tfds.features.FeaturesDict(spec)


class _Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A builder whose name, version, features and examples are given when it is made (no
    registration: a catalog name is opened by tfds' own builder of that name)."""

    VERSION = tfds.core.Version(FOLDER_VERSION)
    # tfds looks for a download-checksums file next to a builder's source; there is none (the
    # preparers check the sources' MD5s).
    code_path = None

    def __init__(self, *, name: str, version: str, features: tfds.features.FeaturesDict,
                 splits: dict[str, Callable[[], Iterable[dict]]], description: str,
                 homepage: str, metadata: dict, data_dir: pathlib.Path):
        self.name = name
        self.VERSION = tfds.core.Version(version)
        self.RELEASE_NOTES = {version: "Prepared by cnnjax.data.prepare from the original files."}
        self._spec, self._splits = features, splits
        self._about = {"description": description, **({"homepage": homepage} if homepage else {})}
        self._metadata = metadata
        super().__init__(data_dir=os.fspath(data_dir), file_format=ARRAY_RECORD)

    # tfds announces "Downloading and preparing dataset Unknown size ... to <staging folder>" and
    # "downloaded and prepared to <staging folder>": nothing is downloaded (the sources are
    # local files) and the folder named is a temporary one; the preparers say what they wrote.
    def _log_download_bytes(self) -> None:
        pass

    def _log_download_done(self) -> None:
        pass

    def _info(self) -> tfds.core.DatasetInfo:
        # disable_shuffling keeps the source's order (tfds would otherwise order records by a
        # hash of their keys).
        return tfds.core.DatasetInfo(builder=self, features=self._spec,
                                     supervised_keys=("image", "label"), disable_shuffling=True,
                                     metadata=tfds.core.MetadataDict(self._metadata), **self._about)

    def _split_generators(self, dl_manager):
        del dl_manager  # the sources are local files, opened by the preparers
        return {split: self._generate_examples(make) for split, make in self._splits.items()}

    def _generate_examples(self, make: Callable[[], Iterable[dict]]):
        yield from enumerate(make())


def write_dataset(name: str, data_dir: str | os.PathLike | None, *,
                  features: tfds.features.FeaturesDict,
                  splits: dict[str, Callable[[], Iterable[dict]]], metadata: dict,
                  description: str, homepage: str = "", overwrite: bool = False,
                  version: str | None = None) -> pathlib.Path:
    """Writes dataset `name` (split -> a function returning its examples, dicts of `features`).

    Returns DATA_DIR/NAME/VERSION (default_version(name) unless `version` is given). An error
    raised while the examples are produced (a corrupt source) propagates and leaves no dataset
    behind (and an existing one untouched).
    """
    version = version or default_version(name)
    final = dataset_dir(name, data_dir, version)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already holds a prepared {name!r}; delete it or pass "
                              f"--overwrite to replace it")
    root = final.parent.parent
    root.mkdir(parents=True, exist_ok=True)
    tfds.disable_progress_bar()
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".incomplete-{name}-", dir=root))
    try:
        builder = _Builder(name=name, version=version, features=features, splits=splits,
                           description=description, homepage=homepage, metadata=metadata,
                           data_dir=staging)
        builder.download_and_prepare(
            download_dir=os.fspath(staging / "downloads"),
            download_config=tfds.download.DownloadConfig(
                compute_stats=tfds.download.ComputeStatsMode.SKIP))
        built = staging / name / version
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            final.rename(staging / "replaced")  # removed with the staging folder
        built.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


class MissingDataset(FileNotFoundError):
    """The data_dir has no prepared copy of the dataset; the message says how to prepare it."""


class NeedsConversion(MissingDataset):
    """The data_dir holds tfds' copy of the dataset in a format without random access (TFRecord);
    the message gives the command that converts it (cnnjax.data.from_tfds)."""


@dataclasses.dataclass
class StoredDataset:
    """A prepared dataset: its folder, split sizes, features and metadata (cnnjax's metadata.json,
    or for a copy tfds prepared, the catalog's title and holdout size)."""

    path: pathlib.Path
    split_sizes: dict[str, int]
    features: tfds.features.FeaturesDict
    metadata: dict

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.features["label"].names)

    def records(self, split: str) -> Sequence[bytes]:
        """Random access to a split's serialized records (a tfds ArrayRecordDataSource)."""
        builder = tfds.builder_from_directory(os.fspath(self.path))
        return builder.as_data_source(split, file_format=ARRAY_RECORD,
                                      deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)


def convert_command(name: str, data_dir: str | os.PathLike | None = None) -> str:
    """The command that converts tfds' TFRecord copy of `name` in `data_dir` to array_record."""
    return (f"python -m cnnjax.data.prepare from-tfds {name} "
            f"--data_dir={resolve_data_dir(data_dir)}")


def _catalog_info(name: str, path: pathlib.Path) -> tfds.core.DatasetInfo:
    """The DatasetInfo of the copy at the catalog's version in `path` (tfds' read-only builder's);
    NeedsConversion when it has no array_record files."""
    info = tfds.builder_from_directory(os.fspath(path)).info
    formats = {f.value for f in info.available_file_formats()}
    if ARRAY_RECORD not in formats:
        raise NeedsConversion(
            f"{path} holds tfds' {name} as {', '.join(sorted(formats))} files; cnnjax reads "
            f"array_record: convert it once with: {convert_command(name, path.parent.parent)}")
    return info


def open_dataset(name: str, data_dir: str | os.PathLike | None, prepare_hint: str) -> StoredDataset:
    """Dataset `name` in `data_dir`: at the catalog's version (by tfds or cnnjax), else at
    FOLDER_VERSION (an image folder, or a standard dataset prepared by an earlier cnnjax).

    Raises MissingDataset, whose message includes `prepare_hint` (how to get it), when neither is
    there, and NeedsConversion for tfds' TFRecord copy.
    """
    catalog = dataset_dir(name, data_dir)
    folder = dataset_dir(name, data_dir, FOLDER_VERSION)
    if name in ORIGINALS and (catalog / "dataset_info.json").is_file():
        path, info = catalog, _catalog_info(name, catalog)
    elif (folder / "dataset_info.json").is_file() and (folder / METADATA_FILE).is_file():
        path, info = folder, tfds.builder_from_directory(os.fspath(folder)).info
    else:
        raise MissingDataset(f"dataset {name!r} is not in {catalog.parent.parent} (no "
                             f"{catalog}/dataset_info.json). Get it with:\n  {prepare_hint}")
    if (path / METADATA_FILE).is_file():
        metadata = json.loads((path / METADATA_FILE).read_text())
    else:  # prepared by tfds from the original files
        original = ORIGINALS[name]
        metadata = {"origin": original.title, "holdout": original.holdout,
                    "prepared_by": "tensorflow-datasets"}
    sizes = {s: split.num_examples for s, split in info.splits.items()}
    return StoredDataset(path, sizes, info.features, metadata)


@dataclasses.dataclass
class RecordDecoder:
    """Serialized examples -> a batch {"image": uint8 (n, H, W, C), label keys: int32}; the
    device makes the pixels float32 in [0, 1] (cnnjax.data.device_pipeline).

    Raw-byte (`Tensor`) images are reshaped. Encoded images (`Image`) are decoded with PIL to the
    feature's channel count (grayscale or RGB), except the PNGs cnnjax writes (cnnjax.data.png:
    read by a copy). Those of a fixed shape (the catalog's CIFAR and MNIST) must have it; the
    others have their shorter side resized to `image_size` and the central image_size x
    image_size window kept (a deterministic view; random crops belong to the augmentation).
    """

    features: tfds.features.FeaturesDict
    image_size: int = 224

    def __post_init__(self):
        image = self.features["image"]
        self.encoded = isinstance(image, tfds.features.Image)
        self.channels = image.shape[-1]
        self.fixed = None not in image.shape
        self.shape = tuple(image.shape) if self.fixed else \
            (self.image_size, self.image_size, self.channels)
        self.label_keys = tuple(k for k in LABEL_KEYS if k in self.features)

    def _decode_file(self, raw: bytes, where: str) -> np.ndarray:
        pixels = decode_image(raw, where, self.channels)
        if self.fixed:
            if pixels.shape != self.shape:
                raise ValueError(f"{where}: image is {pixels.shape}, the dataset's features say "
                                 f"{self.shape}")
            return pixels
        return center_crop(resize_shorter(pixels, self.image_size), self.image_size)

    def __call__(self, records: Sequence[bytes]) -> dict[str, np.ndarray]:
        maps = [tf_example_pb2.Example.FromString(r).features.feature for r in records]
        images = [m["image"].bytes_list.value[0] for m in maps]
        stored = png.decode_stored(images, self.shape) if self.encoded and self.fixed else None
        if stored is not None:
            pixels = stored
        elif self.encoded:
            pixels = np.stack([self._decode_file(raw, f"record {i} of the batch")
                               for i, raw in enumerate(images)]) if images \
                else np.zeros((0, *self.shape), np.uint8)
        else:
            pixels = np.frombuffer(b"".join(images), np.uint8).reshape(-1, *self.shape)
        batch = {"image": pixels}
        for key in self.label_keys:
            batch[key] = np.array([m[key].int64_list.value[0] for m in maps], np.int32)
        return batch
