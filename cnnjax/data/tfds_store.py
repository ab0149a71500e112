"""Datasets in the tensorflow-datasets layout, written and opened without TensorFlow.

Layout (tfds'): DATA_DIR/NAME/1.0.0/ holds dataset_info.json (splits and their sizes), features.json
(the feature spec, class names included), metadata.json (where the data came from) and one or more
NAME-SPLIT.array_record-0000i-of-0000n files of serialized tf.train.Example records, one per
example, in the source's order. It is written by a tfds `GeneratorBasedBuilder` with file_format
"array_record": tfds serializes examples with its own protobuf classes, so TensorFlow is needed
only for what is skipped here: dataset statistics, and encoding NumPy images (images are given
as raw bytes or encoded files instead). It is read back with tfds' read-only builder
(`tfds.builder_from_directory(...).as_data_source(split)`, what `tfds.data_source` uses for a
dataset without registered code), records fetched as raw bytes and parsed here with NumPy.

Features: "image" is either a `Tensor` of uint8 (H, W, C) stored as raw bytes ("decoded": small
images of one size) or an `Image` holding the original file's bytes ("encoded": any size, decoded
when read); "label" and, for CIFAR-100, "coarse_label" are `ClassLabel`s carrying the class names;
image folders add the "file_name" each image came from.

Nothing half-written ever loads: the dataset is built under DATA_DIR/.incomplete-NAME-*/ (where
tfds itself writes into an incomplete.* folder renamed when done) and moved to DATA_DIR/NAME/1.0.0
only when complete; with `overwrite` an existing copy is replaced only at that moment.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pathlib
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.proto import tf_example_pb2  # protobuf classes only, no TensorFlow

from cnnjax.data.augment import center_crop, resize_shorter

VERSION = "1.0.0"
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


def dataset_dir(name: str, data_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """Where dataset `name` lives: DATA_DIR/NAME/1.0.0."""
    return resolve_data_dir(data_dir) / check_name(name) / VERSION


def is_prepared(name: str, data_dir: str | os.PathLike | None = None) -> bool:
    """Whether `data_dir` holds a prepared dataset called `name` (any string)."""
    return bool(_NAME.fullmatch(name)) and (dataset_dir(name, data_dir) / METADATA_FILE).is_file()


def image_features(*, class_names: Sequence[str], shape: tuple[int, int, int] | None = None,
                   channels: int = 3, coarse_names: Sequence[str] = (),
                   file_names: bool = False) -> tfds.features.FeaturesDict:
    """The feature spec: decoded uint8 images of `shape`, or (shape None) encoded image files of
    any size with `channels` channels; labels named `class_names` (and `coarse_names`)."""
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
    """A builder whose name, features and examples are given when it is made (no registration)."""

    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = {str(VERSION): "Prepared by cnnjax.data.prepare from the original files."}
    # tfds looks for a download-checksums file next to a builder's source; there is none (the
    # preparers check the sources' MD5s), and the look-up needs the importlib_resources package.
    code_path = None

    def __init__(self, *, name: str, features: tfds.features.FeaturesDict,
                 splits: dict[str, Callable[[], Iterable[dict]]], description: str,
                 homepage: str, metadata: dict, data_dir: pathlib.Path):
        self.name = name
        self._spec, self._splits = features, splits
        self._about = {"description": description, **({"homepage": homepage} if homepage else {})}
        self._metadata = metadata
        super().__init__(data_dir=os.fspath(data_dir), file_format="array_record")

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
                  description: str, homepage: str = "", overwrite: bool = False) -> pathlib.Path:
    """Writes dataset `name` (split -> a function returning its examples, dicts of `features`).

    Returns DATA_DIR/NAME/1.0.0. An error raised while the examples are produced (a corrupt
    source) propagates and leaves no dataset behind (and an existing one untouched).
    """
    final = dataset_dir(name, data_dir)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already holds a prepared {name!r}; delete it or pass "
                              f"--overwrite to replace it")
    root = final.parent.parent
    root.mkdir(parents=True, exist_ok=True)
    tfds.disable_progress_bar()
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".incomplete-{name}-", dir=root))
    try:
        builder = _Builder(name=name, features=features, splits=splits, description=description,
                           homepage=homepage, metadata=metadata, data_dir=staging)
        builder.download_and_prepare(
            download_dir=os.fspath(staging / "downloads"),
            download_config=tfds.download.DownloadConfig(
                compute_stats=tfds.download.ComputeStatsMode.SKIP))
        built = staging / name / VERSION
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            final.rename(staging / "replaced")  # removed with the staging folder
        built.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


class MissingDataset(FileNotFoundError):
    """The data_dir has no prepared copy of the dataset; the message says how to prepare it."""


@dataclasses.dataclass
class StoredDataset:
    """A prepared dataset: its folder, split sizes, features and metadata."""

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
        return builder.as_data_source(split,
                                      deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)


def open_dataset(name: str, data_dir: str | os.PathLike | None, prepare_hint: str) -> StoredDataset:
    """The prepared dataset `name` in `data_dir`; MissingDataset (whose message includes
    `prepare_hint`, the command that prepares it) when it is not there."""
    path = dataset_dir(name, data_dir)
    if not (path / "dataset_info.json").is_file() or not (path / METADATA_FILE).is_file():
        raise MissingDataset(f"dataset {name!r} is not prepared in {path.parent.parent} (no "
                             f"{path}/dataset_info.json). Prepare it with:\n  {prepare_hint}")
    builder = tfds.builder_from_directory(os.fspath(path))
    sizes = {s: info.num_examples for s, info in builder.info.splits.items()}
    metadata = json.loads((path / METADATA_FILE).read_text())
    return StoredDataset(path, sizes, builder.info.features, metadata)


@dataclasses.dataclass
class RecordDecoder:
    """Serialized examples -> a batch {"image": uint8 (n, H, W, C), label keys: int32}; the
    device makes the pixels float32 in [0, 1] (cnnjax.data.device_pipeline).

    Decoded images are reshaped from their raw bytes. Encoded images are decoded with PIL,
    converted to the dataset's channel count, their shorter side resized to `image_size` and the
    central image_size x image_size window kept (a deterministic view; random crops belong to
    the augmentation).
    """

    features: tfds.features.FeaturesDict
    image_size: int = 224

    def __post_init__(self):
        image = self.features["image"]
        self.encoded = isinstance(image, tfds.features.Image)
        self.channels = image.shape[-1]
        self.shape = (self.image_size, self.image_size, self.channels) if self.encoded \
            else tuple(image.shape)
        self.label_keys = tuple(k for k in LABEL_KEYS if k in self.features)

    def _decode_file(self, raw: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(raw)) as im:
            pixels = np.asarray(im.convert("L" if self.channels == 1 else "RGB"))
        return center_crop(resize_shorter(pixels.reshape(*pixels.shape[:2], self.channels),
                                          self.image_size), self.image_size)

    def __call__(self, records: Sequence[bytes]) -> dict[str, np.ndarray]:
        maps = [tf_example_pb2.Example.FromString(r).features.feature for r in records]
        images = [m["image"].bytes_list.value[0] for m in maps]
        if self.encoded:
            pixels = np.stack([self._decode_file(raw) for raw in images]) if images \
                else np.zeros((0, *self.shape), np.uint8)
        else:
            pixels = np.frombuffer(b"".join(images), np.uint8).reshape(-1, *self.shape)
        batch = {"image": pixels}
        for key in self.label_keys:
            batch[key] = np.array([m[key].int64_list.value[0] for m in maps], np.int32)
        return batch
