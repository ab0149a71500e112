"""The ILSVRC-2012 (ImageNet) classification archives as published, read without extracting them.

A source folder DIR holds, under their published names:
  ILSVRC2012_img_train.tar  one tar per class, `<synset>.tar` (n01440764.tar, ...), each a flat
                            tar of that class's images `<synset>_<number>.JPEG`;
  ILSVRC2012_img_val.tar    the validation images, flat: ILSVRC2012_val_00000001.JPEG, ...;
and the validation labels, either
  ILSVRC2012_devkit_t12.tar.gz (or its extracted folder ILSVRC2012_devkit_t12/): the devkit's
    data/ILSVRC2012_validation_ground_truth.txt (line i: the ILSVRC2012_ID, 1-1000, of validation
    image i) and data/meta.mat, whose `synsets` records map ILSVRC2012_ID to WNID (the synset);
  or LOC_val_solution.csv (the copy distributed with Kaggle's ImageNet localization challenge):
    rows "ImageId,PredictionString", the synset being PredictionString's first word.
The devkit is used when both are present.

Classes are the train tar's synsets in sorted order (tfds' imagenet2012 convention): label i is
the i-th. The archives are streamed with `tarfile` (the outer train tar read by random access
to its per-class members), never extracted to disk. Structure errors (a missing file, an
unexpected member, a truncated tar, a validation image without a label, a label naming no
training class) raise ValueError / FileNotFoundError naming the file.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import pathlib
import re
import tarfile
from collections.abc import Iterator

import numpy as np
import scipy.io

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
DEVKIT = "ILSVRC2012_devkit_t12"  # .tar.gz as published, or the folder it extracts to
DEVKIT_TAR = DEVKIT + ".tar.gz"
GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
META = "data/meta.mat"
LOC_CSV = "LOC_val_solution.csv"
SOURCE_HELP = (f"DIR holds {TRAIN_TAR}, {VAL_TAR} and the validation labels: {DEVKIT_TAR} (or "
               f"its extracted folder {DEVKIT}/) or {LOC_CSV}; downloaded by hand from "
               f"image-net.org")
PUBLISHED_CLASSES = 1000
_SYNSET = re.compile(r"n\d{8}")
_VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG")


@dataclasses.dataclass(frozen=True)
class Example:
    """One image of the archives: its file's bytes, label, and file name ("n01440764_1.JPEG",
    "ILSVRC2012_val_00000001.JPEG": the tfds catalog's "file_name")."""

    raw: bytes
    label: int
    file_name: str
    where: str  # the archive path naming it in errors


@dataclasses.dataclass(frozen=True)
class Sources:
    """The archives found in a source folder; `labels` is the devkit (archive or folder) or the
    CSV file."""

    train: pathlib.Path
    val: pathlib.Path
    labels: pathlib.Path


def find_sources(source: pathlib.Path) -> Sources:
    """The archives in `source`; FileNotFoundError naming what is missing."""
    if not source.is_dir():
        raise FileNotFoundError(f"--source {source} is not a folder ({SOURCE_HELP})")
    for name in (TRAIN_TAR, VAL_TAR):
        if not (source / name).is_file():
            raise FileNotFoundError(f"{source / name} not found ({SOURCE_HELP})")
    for labels in (source / DEVKIT_TAR, source / DEVKIT, source / LOC_CSV):
        if labels.exists():
            return Sources(source / TRAIN_TAR, source / VAL_TAR, labels)
    raise FileNotFoundError(f"{source}: no validation labels ({DEVKIT_TAR}, {DEVKIT}/ or "
                            f"{LOC_CSV}) found ({SOURCE_HELP})")


def _class_members(train: tarfile.TarFile, path: pathlib.Path) -> dict[str, tarfile.TarInfo]:
    members = {}
    for member in train.getmembers():
        synset = member.name.removesuffix(".tar")
        if not member.isfile() or not member.name.endswith(".tar") or not _SYNSET.fullmatch(synset):
            raise ValueError(f"{path}/{member.name}: expected only per-class tars named "
                             f"<synset>.tar (e.g. n01440764.tar)")
        members[synset] = member
    if not members:
        raise ValueError(f"{path}: no per-class tars <synset>.tar inside")
    return members


def read_synsets(train_tar: pathlib.Path) -> tuple[str, ...]:
    """The classes: the synsets of the train tar's per-class tars, sorted."""
    try:
        with tarfile.open(train_tar, "r:") as train:
            return tuple(sorted(_class_members(train, train_tar)))
    except tarfile.TarError as e:
        raise ValueError(f"{train_tar}: not a readable tar ({e})") from e


def train_examples(train_tar: pathlib.Path, synsets: tuple[str, ...]) -> Iterator[Example]:
    """The training images class by class in synset order, each class's in its tar's order."""
    try:
        with tarfile.open(train_tar, "r:") as train:
            members = _class_members(train, train_tar)
            for label, synset in enumerate(synsets):
                yield from _class_examples(train, members[synset], label,
                                           f"{train_tar}/{synset}.tar", synset)
    except tarfile.TarError as e:
        raise ValueError(f"{train_tar}: truncated or corrupt tar ({e})") from e


def _class_examples(train: tarfile.TarFile, member: tarfile.TarInfo, label: int, where: str,
                    synset: str) -> Iterator[Example]:
    count = 0
    try:
        with tarfile.open(fileobj=train.extractfile(member), mode="r|") as cls:
            for image in cls:
                name = image.name
                if (not image.isfile() or not name.startswith(synset + "_")
                        or not name.upper().endswith(".JPEG") or "/" in name):
                    raise ValueError(f"{where}/{name}: expected only images named "
                                     f"{synset}_<number>.JPEG")
                count += 1
                yield Example(cls.extractfile(image).read(), label, name,
                              f"{where}/{name}")
    except tarfile.TarError as e:
        raise ValueError(f"{where}: truncated or corrupt tar ({e})") from e
    if not count:
        raise ValueError(f"{where}: a class tar without images")


def _devkit_files(devkit: pathlib.Path) -> tuple[bytes, bytes]:
    """(ground-truth text, meta.mat bytes) from the devkit archive or its extracted folder."""
    if devkit.is_dir():
        files = [devkit / GROUND_TRUTH, devkit / META]
        for file in files:
            if not file.is_file():
                raise FileNotFoundError(f"{file} not found in the extracted devkit {devkit}")
        return files[0].read_bytes(), files[1].read_bytes()
    try:
        with tarfile.open(devkit, "r:gz") as tar:
            found = {}
            for member in tar:
                for wanted in (GROUND_TRUTH, META):
                    if member.name == f"{DEVKIT}/{wanted}":
                        found[wanted] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ValueError(f"{devkit}: truncated or corrupt archive ({e})") from e
    for wanted in (GROUND_TRUTH, META):
        if wanted not in found:
            raise ValueError(f"{devkit}: lacks {DEVKIT}/{wanted}")
    return found[GROUND_TRUTH], found[META]


def _devkit_labels(devkit: pathlib.Path) -> list[str]:
    truth, meta = _devkit_files(devkit)
    where = f"{devkit}/{META}"
    try:
        synsets = scipy.io.loadmat(io.BytesIO(meta), squeeze_me=True)["synsets"]
        ids = {int(i): str(w) for i, w in zip(np.atleast_1d(synsets["ILSVRC2012_ID"]),
                                              np.atleast_1d(synsets["WNID"]))}
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise ValueError(f"{where}: not the devkit's meta.mat with a `synsets` struct of "
                         f"ILSVRC2012_ID and WNID ({e})") from e
    labels = []
    for line_number, line in enumerate(truth.decode("ascii", "replace").split(), 1):
        if not line.isdigit() or int(line) not in ids:
            raise ValueError(f"{devkit}/{GROUND_TRUTH} line {line_number}: {line!r} is not an "
                             f"ILSVRC2012_ID listed in {META}")
        labels.append(ids[int(line)])
    return labels


def _csv_labels(path: pathlib.Path) -> list[str]:
    by_index = {}
    with open(path, newline="") as f:
        rows = csv.reader(f)
        if next(rows, None) != ["ImageId", "PredictionString"]:
            raise ValueError(f"{path}: expected the header 'ImageId,PredictionString'")
        for row_number, row in enumerate(rows, 2):
            match = _VAL_NAME.fullmatch(row[0] + ".JPEG") if len(row) == 2 else None
            words = row[1].split() if match else []
            if not words or not _SYNSET.fullmatch(words[0]):
                raise ValueError(f"{path} row {row_number}: expected "
                                 f"'ILSVRC2012_val_<8 digits>,<synset> ...', got {row}")
            by_index[int(match.group(1))] = words[0]
    if sorted(by_index) != list(range(1, len(by_index) + 1)):
        raise ValueError(f"{path}: the image numbers are not 1..{len(by_index)}")
    return [by_index[i] for i in range(1, len(by_index) + 1)]


def read_val_labels(labels: pathlib.Path) -> list[str]:
    """The synset of validation image i (1-based) at index i - 1, from the devkit or the CSV."""
    return _csv_labels(labels) if labels.suffix == ".csv" else _devkit_labels(labels)


def val_examples(val_tar: pathlib.Path, labels: list[str], labels_file: pathlib.Path,
                 synsets: tuple[str, ...]) -> Iterator[Example]:
    """The validation images in the tar's order with their labels (`labels[i - 1]` for
    ILSVRC2012_val_<i>.JPEG, read from `labels_file`)."""
    index = {s: i for i, s in enumerate(synsets)}
    try:
        with tarfile.open(val_tar, "r|") as val:
            for member in val:
                match = _VAL_NAME.fullmatch(member.name)
                if not member.isfile() or not match:
                    raise ValueError(f"{val_tar}/{member.name}: expected only images named "
                                     f"ILSVRC2012_val_<8 digits>.JPEG")
                number = int(match.group(1))
                if not 1 <= number <= len(labels):
                    raise ValueError(f"{val_tar}/{member.name}: no label for image {number} in "
                                     f"{labels_file} ({len(labels)} labels)")
                if labels[number - 1] not in index:
                    raise ValueError(f"{labels_file}: image {number}'s label "
                                     f"{labels[number - 1]} is not a class of the train tar")
                yield Example(val.extractfile(member).read(), index[labels[number - 1]],
                              member.name, f"{val_tar}/{member.name}")
    except tarfile.TarError as e:
        raise ValueError(f"{val_tar}: truncated or corrupt tar ({e})") from e
