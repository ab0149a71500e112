"""A copy tensorflow-datasets prepared as TFRecord, converted to array_record without TensorFlow.

    python -m cnnjax.data.prepare from-tfds cifar10 [--data_dir=DIR]

tfds (run with TensorFlow) writes DATA_DIR/NAME/VERSION/ with dataset_info.json, features.json
and NAME-SPLIT.tfrecord-0000i-of-0000n files; cnnjax reads array_record (random access). For a
catalog dataset at the catalog's version (cnnjax.data.catalog), every shard dataset_info.json
lists is read (cnnjax.data.tfrecord: framing and CRCs checked), its record count compared with
dataset_info.json's shard length, every record parsed as a tf.train.Example with tfds' protobuf
classes and checked to hold the features of features.json, and the records written in order to
NAME-SPLIT.array_record-0000i-of-0000n beside them. dataset_info.json then gives array_record as
the file format and keeps TFRecord, whose files stay, as an alternative (`alternativeFileFormats`):
so `tfds.data_source(NAME)` reads the copy too (tfds 4.9.10's registered builders do not restore
alternative formats from the file, so array_record must be the main one).

Atomic: the array_record files are written in a staging folder inside the dataset's and moved in
when all are complete, then dataset_info.json is replaced in one os.replace; until then the copy
reads as unconverted, and a failure (a corrupt record, a count that differs) leaves it as it was.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile

import tensorflow_datasets as tfds
from array_record.python.array_record_module import ArrayRecordWriter
from google.protobuf.message import DecodeError
from tensorflow_datasets.proto import tf_example_pb2  # protobuf classes only, no TensorFlow

from cnnjax.data import tfds_store
from cnnjax.data.catalog import ORIGINALS
from cnnjax.data.tfrecord import read_records

TFRECORD = "tfrecord"


def _check_examples(records: list[bytes], keys: set[str], shard: pathlib.Path) -> None:
    """Every record parses as a tf.train.Example holding the features `keys`."""
    for i, record in enumerate(records):
        try:
            found = set(tf_example_pb2.Example.FromString(record).features.feature)
        except DecodeError as e:
            raise ValueError(f"{shard}: record {i} is not a tf.train.Example ({e})") from e
        if not keys <= found:
            raise ValueError(f"{shard}: record {i} lacks the features {sorted(keys - found)} "
                             f"that features.json lists (it has {sorted(found)})")


def _write_shard(records: list[bytes], path: pathlib.Path) -> None:
    # tfds' own array_record writer options (file_adapters.ArrayRecordFileAdapter): one record
    # per group, for random access.
    writer = ArrayRecordWriter(os.fspath(path), "group_size:1")
    for record in records:
        writer.write(record)
    writer.close()


def convert(name: str, data_dir: str | os.PathLike | None = None) -> tuple[pathlib.Path,
                                                                         dict[str, int]]:
    """Converts tfds' TFRecord copy of catalog dataset `name` in `data_dir`; returns (its folder,
    split sizes). A copy that already has array_record files is left as it is.

    Raises FileNotFoundError (no copy, a missing shard) and ValueError (a corrupt record, a count
    that differs from dataset_info.json, a record without the listed features) naming the file.
    """
    if name not in ORIGINALS:
        raise ValueError(f"from-tfds converts the catalog datasets {sorted(ORIGINALS)}, got "
                         f"{name!r}")
    path = tfds_store.dataset_dir(name, data_dir)
    info_file = path / "dataset_info.json"
    if not info_file.is_file():
        raise FileNotFoundError(f"{info_file} not found: from-tfds converts the copy of {name} "
                                f"that tensorflow-datasets prepared at the catalog's version "
                                f"{ORIGINALS[name].tfds_version}")
    info = tfds.builder_from_directory(os.fspath(path)).info
    sizes = {s: split.num_examples for s, split in info.splits.items()}
    formats = {f.value for f in info.available_file_formats()}
    if tfds_store.ARRAY_RECORD in formats:
        return path, sizes
    if info.file_format is None or info.file_format.value != TFRECORD:
        raise ValueError(f"{info_file}: file format {sorted(formats)}, from-tfds converts "
                         f"{TFRECORD!r}")
    keys = set(info.features.keys())
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".incomplete-array_record-", dir=path))
    try:
        for split in info.splits.values():
            template = split.filename_template.replace(data_dir=path)
            sources = template.sharded_filepaths(len(split.shard_lengths))
            targets = template.replace(filetype_suffix=tfds_store.ARRAY_RECORD).sharded_filepaths(
                len(split.shard_lengths))
            for source, target, expected in zip(sources, targets, split.shard_lengths):
                source = pathlib.Path(source)
                if not source.is_file():
                    raise FileNotFoundError(f"{source} not found ({info_file} lists "
                                            f"{len(split.shard_lengths)} shards of {split.name})")
                records = read_records(source)
                if len(records) != expected:
                    raise ValueError(f"{source}: {len(records)} records, {info_file} says "
                                     f"{expected}")
                _check_examples(records, keys, source)
                _write_shard(records, staging / pathlib.Path(target).name)
        for done in staging.iterdir():
            os.replace(done, path / done.name)
        described = json.loads(info_file.read_text())
        described["fileFormat"] = tfds_store.ARRAY_RECORD
        described["alternativeFileFormats"] = [
            *described.get("alternativeFileFormats", []), TFRECORD]
        written = staging / info_file.name
        written.write_text(json.dumps(described, indent=2, sort_keys=True))
        os.replace(written, info_file)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path, sizes
