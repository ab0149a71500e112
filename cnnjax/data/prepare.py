"""Offline preparation: original files -> the tensorflow-datasets layout (array_record) in data_dir.

    python -m cnnjax.data.prepare mnist --source=../shared/data/mnist [--data_dir=DIR]
    python -m cnnjax.data.prepare fashion_mnist --source=DIR [--download]
    python -m cnnjax.data.prepare cifar10 --source=DIR       # python .tar.gz, extracted, or
    python -m cnnjax.data.prepare cifar100 --source=DIR      #   an image-folder copy
    python -m cnnjax.data.prepare imagefolder --source=DIR --name=NAME [--skip-bad]
    python -m cnnjax.data.prepare imagenet2012 --source=DIR  # the ILSVRC-2012 tars + val labels
    python -m cnnjax.data.prepare from-tfds cifar10 [--data_dir=DIR]  # tfds' own TFRecord copy

The standard datasets are written as tfds' catalog entries of the same name and version
(DATA_DIR/cifar10/3.0.2, ...: cnnjax.data.tfds_store), so tfds opens them by name; image folders
as DATA_DIR/NAME/1.0.0. `from-tfds` converts a copy tfds prepared as TFRecord to array_record
(cnnjax.data.from_tfds); a tfds copy in array_record is read as it is.
Sources: MNIST / Fashion-MNIST: the four IDX files (.gz or not); CIFAR: the python version's
.tar.gz, a folder holding it, or its extracted batch files; or, for CIFAR, a class-folder copy
DIR/{train,test}/<class>/*.jpg|png (e.g. ../shared/data/cifar10_jpeg), whose results are labelled
with the copy's origin ("CIFAR-10 (JPEG q75 copy)"); imagefolder: DIR/<split>/<class>/<image>;
imagenet2012: the published tars and validation labels (cnnjax.data.imagenet_files), streamed,
every image decoded once as a check and stored as its original (encoded) bytes.
`--download` first fetches the original files of a standard dataset into --source. data_dir
defaults to $TFDS_DATA_DIR, else ~/tensorflow_datasets. The structure checks (magic numbers,
counts, shapes, label ranges, decodable images) stop with an error naming the file; published
MD5 sums and split sizes are compared and a difference is a WARNING naming the file. Preparing
needs no TensorFlow (see cnnjax.data.tfds_store).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import pathlib
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from cnnjax.data import png, tfds_store
from cnnjax.data.catalog import CIFAR10_CLASSES, IDX_FILES, ORIGINALS, Original
from cnnjax.data.checksums import check_md5
from cnnjax.data.cifar_files import read_cifar
from cnnjax.data.download import download
from cnnjax.data.from_tfds import convert
from cnnjax.data.idx import read_idx_pair
from cnnjax.data.imagefolder import (FolderIndex, decode_image, folder_examples, scan_folder,
                                     survey)
from cnnjax.data.imagenet_files import (PUBLISHED_CLASSES, SOURCE_HELP, Example, find_sources,
                                        read_synsets, read_val_labels, train_examples,
                                        val_examples)
from cnnjax.data.splits import DERIVED

log = logging.getLogger("cnnjax.data.prepare")
# What a preparer wrote: (dataset folder, origin label, unreadable files skipped).
Prepared = tuple[pathlib.Path, str, list[str]]
PREPARABLE = ("mnist", "fashion_mnist", "cifar10", "cifar100", "imagefolder", "imagenet2012")
FROM_TFDS = "from-tfds"
_SOURCES = {
    "mnist": "DIR holds the four MNIST IDX files (train-images-idx3-ubyte.gz, ...); add "
             "--download to fetch them into DIR first",
    "fashion_mnist": "DIR holds the four Fashion-MNIST IDX files; add --download to fetch them "
                     "into DIR first",
    "cifar10": "DIR holds cifar-10-python.tar.gz or its extracted files, or an image-folder copy "
               "DIR/{train,test}/<class>/*.jpg; add --download to fetch the tar.gz first",
    "cifar100": "DIR holds cifar-100-python.tar.gz or its extracted files, or an image-folder "
                "copy; add --download to fetch the tar.gz first",
    "imagenet2012": SOURCE_HELP,
}


@dataclasses.dataclass
class Summary:
    """What a preparation wrote."""

    name: str
    path: pathlib.Path
    split_sizes: dict[str, int]
    origin: str
    skipped: list[str]

    def __str__(self) -> str:
        sizes = ", ".join(f"{s} {n:,}" for s, n in self.split_sizes.items())
        lines = [f"prepared {self.name} ({self.origin}) in {self.path}: {sizes}"]
        if self.skipped:
            lines += [f"skipped {len(self.skipped)} unreadable files:"]
            lines += [f"  {s}" for s in self.skipped]
        return "\n".join(lines)


def prepare_command(name: str, data_dir: str | None = None) -> str:
    """How to get dataset `name` into `data_dir` (resolved): the command that prepares it from
    its original files, with what DIR is, and for a catalog dataset, from a copy tfds prepared."""
    where = f"--data_dir={tfds_store.resolve_data_dir(data_dir)}"
    if name in _SOURCES:
        folder = tfds_store.dataset_dir(name, data_dir)
        return (f"python -m cnnjax.data.prepare {name} --source=DIR {where}\n  ({_SOURCES[name]})"
                f"\nor put a copy prepared by tensorflow-datasets in {folder} (array_record is "
                f"read as it is; convert TFRecord once with: "
                f"{tfds_store.convert_command(name, data_dir)})")
    return (f"python -m cnnjax.data.prepare imagefolder --source=DIR --name={name} {where}\n"
            f"  (DIR holds DIR/<split>/<class>/*.jpg|png, e.g. DIR/train/cat/0001.jpg)")


def _check_count(original: Original, split: str, found: int, where: object) -> None:
    """A split size other than the published one is a WARNING (e.g. a partial copy)."""
    expected = original.counts[split]
    if found != expected:
        log.warning("%s: %s %s has %d examples, the published %s has %d", where, original.title,
                    split, found, original.title, expected)


def _rows(images: np.ndarray, labels: Sequence[np.ndarray], keys: Sequence[str],
          id_prefix: str | None = None) -> Callable[[], Iterable[dict]]:
    """The examples of in-memory arrays: image i PNG-encoded, label key k = labels[k][i], and
    with `id_prefix` the catalog's CIFAR "id" (e.g. "train_00042")."""

    def make() -> Iterable[dict]:
        for i in range(len(images)):
            example = {"image": png.encode(images[i]),
                       **{k: int(lab[i]) for k, lab in zip(keys, labels)}}
            if id_prefix is not None:
                example["id"] = f"{id_prefix}_{i:05d}"
            yield example
    return make


def _origin(title: str, checksums: list[dict]) -> str:
    if all(c["match"] for c in checksums):
        return title
    return f"{title} (a copy whose MD5 differs from the published)"


def _metadata(origin: str, source: pathlib.Path, source_format: str, holdout: int,
              **more) -> dict:
    return {"origin": origin, "source": str(source.resolve()), "source_format": source_format,
            "prepared_by": "cnnjax.data.prepare", "holdout": holdout, **more}


def _prepare_idx(name: str, source: pathlib.Path, data_dir: str | None,
                 overwrite: bool) -> Prepared:
    original = ORIGINALS[name]
    checksums, splits = [], {}
    for split, files in IDX_FILES.items():
        paths = []
        for file in files:
            # Accept the files compressed (as published) or already decompressed.
            path = source / file if (source / file).is_file() else source / file[:-3]
            if not path.is_file():
                raise FileNotFoundError(f"{source / file} not found ({_SOURCES[name]})")
            if path.name == file:
                checksums.append(check_md5(path, original.md5[file]))
            paths.append(path)
        images, labels = read_idx_pair(*paths, image_hw=(28, 28), num_classes=10)
        _check_count(original, split, len(images), paths[0])
        splits[split] = _rows(images, [labels], ["label"])
    origin = _origin(original.title, checksums)
    path = tfds_store.write_dataset(
        name, data_dir, features=tfds_store.catalog_features(name, original.class_names),
        splits=splits, description=f"{original.title} from its IDX files ({source}).",
        homepage=original.homepage, overwrite=overwrite,
        metadata=_metadata(origin, source, "IDX", original.holdout, checksums=checksums))
    return path, origin, []


def _is_image_folder(source: pathlib.Path) -> bool:
    return (source / "train").is_dir() and (source / "test").is_dir()


def _prepare_cifar(name: str, source: pathlib.Path, data_dir: str | None,
                   overwrite: bool) -> Prepared:
    original = ORIGINALS[name]
    data = read_cifar(name, source)
    keys = ["label"] + (["coarse_label"] if data.coarse_labels is not None else [])
    splits = {}
    for split in ("train", "test"):
        _check_count(original, split, len(data.labels[split]), source)
        labels = [data.labels[split]] + ([data.coarse_labels[split]] if len(keys) > 1 else [])
        splits[split] = _rows(data.images[split], labels, keys, id_prefix=split)
    origin = _origin(original.title, data.checksums)
    path = tfds_store.write_dataset(
        name, data_dir, features=tfds_store.catalog_features(name, data.class_names,
                                                             data.coarse_names),
        splits=splits, description=f"{original.title}, python version ({source}).",
        homepage=original.homepage, overwrite=overwrite,
        metadata=_metadata(origin, source, "CIFAR python pickles", original.holdout,
                           checksums=data.checksums))
    return path, origin, []


def _catalog_rows(name: str, rows: Iterable[dict]) -> Iterator[dict]:
    """An image-folder copy of CIFAR in the catalog's features: its file's path as the "id", the
    decoded pixels PNG-encoded; CIFAR-100's superclass unknown (-1, tfds' "no label")."""
    unknown = {"coarse_label": -1} if name == "cifar100" else {}
    for row in rows:
        yield {"id": row["file_name"], "image": png.encode(row["image"]),
               "label": row["label"], **unknown}


# An image folder's split is stored in a fixed shuffled order of its files (sorted by class, then
# name), not class by class: as in the original CIFAR files, any run of records (the first
# thousand test images, a batch read in stored order) is a sample of every class.
RECORD_ORDER_SEED = 0


def record_order(n: int) -> np.ndarray:
    """Stored record i of an image-folder split of n files is file record_order(n)[i] of the
    split's files sorted by class then name."""
    return np.random.default_rng(RECORD_ORDER_SEED).permutation(n)


def _write_folder(name: str, index: FolderIndex, data_dir: str | None, *, skip_bad: bool,
                  overwrite: bool, origin: str, title: str, holdout: int,
                  shape: tuple[int, int, int] | None, channels: int, skipped: list[str],
                  homepage: str = "", catalog: bool = False, **metadata) -> Prepared:
    """Writes an image-folder dataset, with `catalog` in the catalog's features of standard
    dataset `name` (else cnnjax's own); `skipped` (the files the survey found unreadable) grows by
    those that fail to decode when `skip_bad`. Each split is written in record_order."""
    index = dataclasses.replace(index, files={
        s: [f[i] for i in record_order(len(f))] for s, f in index.files.items()})

    def split_examples(split: str) -> Callable[[], Iterable[dict]]:
        def make() -> Iterable[dict]:
            rows = folder_examples(index, split, channels=channels, shape=shape,
                                   skip_bad=skip_bad, skipped=skipped)
            return _catalog_rows(name, rows) if catalog else rows
        return make

    if catalog:
        store, features = "PNG", tfds_store.catalog_features(name, index.classes)
    else:
        store = "decoded" if shape is not None else "encoded"
        features = tfds_store.image_features(class_names=index.classes, shape=shape,
                                             channels=channels, file_names=True)
    # `skipped` fills while the examples are written, before tfds saves the metadata: the
    # dataset records the files it left out.
    metadata.update(class_folders=list(index.classes), storage=store, skipped_files=skipped,
                    record_order=f"shuffled, seed {RECORD_ORDER_SEED}")
    path = tfds_store.write_dataset(
        name, data_dir, overwrite=overwrite, homepage=homepage, features=features,
        splits={s: split_examples(s) for s in index.files},
        description=f"{title}: image folders in {index.root}, stored {store}"
                    + (" (ids: the images' file paths)" if catalog else "")
                    + f"; records in a fixed shuffled order (cnnjax.data.prepare.record_order, "
                      f"seed {RECORD_ORDER_SEED}), not by class.",
        metadata=_metadata(origin, index.root, "image folder", holdout, **metadata))
    return path, origin, skipped


def _prepare_cifar_folder(name: str, source: pathlib.Path, data_dir: str | None, *,
                          skip_bad: bool, overwrite: bool) -> Prepared:
    original = ORIGINALS[name]
    index = scan_folder(source, reserved=DERIVED)
    if sorted(index.files) != ["test", "train"]:
        raise ValueError(f"{source}: a {original.title} image-folder copy has splits 'train' and "
                         f"'test', found {sorted(index.files)}")
    if name == "cifar10" and index.classes != CIFAR10_CLASSES:
        raise ValueError(f"{source}: CIFAR-10's class folders are {list(CIFAR10_CLASSES)} "
                         f"(its label order), found {list(index.classes)}")
    if name == "cifar100" and len(index.classes) != 100:
        raise ValueError(f"{source}: CIFAR-100 has 100 class folders, found {len(index.classes)}")
    found = survey(index, skip_bad)
    index.drop(set(found.bad))
    odd = {size: n for size, n in found.sizes.items() if size != (32, 32)}
    if odd or found.channels != 3:
        raise ValueError(f"{source}: {original.title} images are 32x32 RGB; found sizes "
                         f"{dict(found.sizes)} with {found.channels} channel(s)")
    for split, files in index.files.items():
        _check_count(original, split, len(files), source / split)
    qualities = set(found.jpeg_qualities)
    if set(found.formats) == {"JPEG"} and len(qualities) == 1 and None not in qualities:
        copy = f"JPEG q{qualities.pop()} copy"
    else:
        copy = "image-folder copy"
    return _write_folder(
        name, index, data_dir, skip_bad=skip_bad, overwrite=overwrite,
        origin=f"{original.title} ({copy})", title=f"{original.title} ({copy})",
        holdout=original.holdout, shape=(32, 32, 3), channels=3, homepage=original.homepage,
        skipped=list(found.bad.values()), catalog=True,
        formats=dict(found.formats), jpeg_qualities={str(q): n for q, n in
                                                     found.jpeg_qualities.items()})


def _prepare_imagefolder(name: str, source: pathlib.Path, data_dir: str | None, *,
                         skip_bad: bool, overwrite: bool) -> Prepared:
    index = scan_folder(source, reserved=DERIVED)
    found = survey(index, skip_bad)
    index.drop(set(found.bad))
    train = len(index.files.get("train", ()))
    return _write_folder(
        name, index, data_dir, skip_bad=skip_bad, overwrite=overwrite,
        origin=f"{name} (image folder {source.resolve()})", title=name,
        holdout=max(1, train // 10), shape=found.decoded_shape, channels=found.channels,
        skipped=list(found.bad.values()), formats=dict(found.formats))


def _catalog_jpeg(raw: bytes, where: str) -> tuple[bytes, bool]:
    """(the bytes to store, whether they were re-encoded) of one ImageNet image, decoded in full
    as a check (BadImage names `where`). tfds' imagenet2012 stores RGB JPEGs: like its builder
    (datasets/imagenet2012: CMYK_IMAGES, PNG_IMAGES), the few CMYK JPEGs and the PNG among the
    training images are re-encoded as RGB JPEG at quality 100 (here with PIL)."""
    pixels = decode_image(raw, where, 3)
    with Image.open(io.BytesIO(raw)) as im:
        if im.format == "JPEG" and im.mode != "CMYK":
            return raw, False
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=100)
    return out.getvalue(), True


def _checked_images(original: Original, split: str, examples: Iterable[Example],
                    where: pathlib.Path, reencoded: list[str]) -> Iterator[dict]:
    """The examples to store (_catalog_jpeg; `reencoded` collects the files re-encoded); the split
    size is compared with the published one at the end."""
    count = 0
    for example in examples:
        raw, changed = _catalog_jpeg(example.raw, example.where)
        if changed:
            reencoded.append(example.where)
        count += 1
        yield {"image": raw, "label": example.label, "file_name": example.file_name}
    _check_count(original, split, count, where)


def _prepare_imagenet(source: pathlib.Path, data_dir: str | None, overwrite: bool) -> Prepared:
    original = ORIGINALS["imagenet2012"]
    found = find_sources(source)
    checksums = [check_md5(path, original.md5[path.name])
                 for path in (found.train, found.val, found.labels)
                 if path.is_file() and path.name in original.md5]
    synsets = read_synsets(found.train)
    if len(synsets) != PUBLISHED_CLASSES:
        log.warning("%s: %d classes, the published %s has %d", found.train, len(synsets),
                    original.title, PUBLISHED_CLASSES)
    labels = read_val_labels(found.labels)
    reencoded: list[str] = []  # filled while writing, before tfds saves the metadata
    splits = {
        "train": lambda: _checked_images(original, "train", train_examples(found.train, synsets),
                                         found.train, reencoded),
        "validation": lambda: _checked_images(
            original, "validation", val_examples(found.val, labels, found.labels, synsets),
            found.val, reencoded)}
    origin = _origin(original.title, checksums)
    path = tfds_store.write_dataset(
        "imagenet2012", data_dir, overwrite=overwrite, homepage=original.homepage,
        features=tfds_store.catalog_features("imagenet2012", synsets),
        splits=splits, description=f"{original.title} from its tars ({source}), the JPEG files' "
                                   f"own bytes (CMYK and PNG files re-encoded as RGB JPEG).",
        metadata=_metadata(origin, source, "ILSVRC-2012 tars", original.holdout,
                           checksums=checksums, labels_file=found.labels.name,
                           storage="encoded", reencoded_to_rgb_jpeg=reencoded))
    return path, origin, []


def prepare(name: str, source: str | pathlib.Path, *, data_dir: str | None = None,
            dataset_name: str | None = None, download_first: bool = False,
            skip_bad: bool = False, overwrite: bool = False) -> Summary:
    """Prepares dataset `name` (one of PREPARABLE) from `source` into `data_dir`.

    `dataset_name` names an imagefolder dataset; `skip_bad` skips (and lists) unreadable images
    of image folders instead of stopping; `overwrite` replaces an existing copy once the new one
    is complete. Raises ValueError / FileNotFoundError naming the offending file.
    """
    if name not in PREPARABLE:
        raise ValueError(f"cannot prepare {name!r}; expected one of {list(PREPARABLE)}")
    source = pathlib.Path(source).expanduser()
    if name == "imagefolder":
        if not dataset_name:
            raise ValueError("imagefolder needs --name=NAME, the name to train it under")
        if download_first:
            raise ValueError("--download fetches standard datasets; an image folder is local")
        name = tfds_store.check_name(dataset_name)
        path, origin, skipped = _prepare_imagefolder(name, source, data_dir, skip_bad=skip_bad,
                                                     overwrite=overwrite)
    else:
        if dataset_name and dataset_name != name:
            raise ValueError(f"--name is for imagefolder; {name} is always stored as {name!r}")
        if download_first:
            download(name, source)
        if not source.exists():
            raise FileNotFoundError(f"--source {source} does not exist ({_SOURCES[name]})")
        if name in ("mnist", "fashion_mnist"):
            path, origin, skipped = _prepare_idx(name, source, data_dir, overwrite)
        elif name == "imagenet2012":
            path, origin, skipped = _prepare_imagenet(source, data_dir, overwrite)
        elif source.is_dir() and _is_image_folder(source):
            path, origin, skipped = _prepare_cifar_folder(name, source, data_dir,
                                                          skip_bad=skip_bad, overwrite=overwrite)
        else:
            path, origin, skipped = _prepare_cifar(name, source, data_dir, overwrite)
    sizes = tfds_store.open_dataset(name, data_dir, "").split_sizes
    return Summary(name, path, sizes, origin, skipped)


def from_tfds(name: str, data_dir: str | None = None) -> Summary:
    """Converts tfds' TFRecord copy of `name` in `data_dir` to array_record
    (cnnjax.data.from_tfds)."""
    path, sizes = convert(name, data_dir)
    return Summary(name, path, sizes, f"{ORIGINALS[name].title}, prepared by tensorflow-datasets",
                   [])


def _data_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data_dir", default=None,
                        help="tfds data_dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets)")


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    prog = "python -m cnnjax.data.prepare"
    if argv[:1] == [FROM_TFDS]:
        parser = argparse.ArgumentParser(
            prog=f"{prog} {FROM_TFDS}",
            description="Convert a copy tensorflow-datasets prepared as TFRecord to array_record.")
        parser.add_argument("name", choices=sorted(ORIGINALS))
        _data_dir_flag(parser)
        return parser.parse_args(argv[1:])
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     epilog=f"{prog} {FROM_TFDS} NAME [--data_dir=DIR]: convert "
                                            f"tfds' own TFRecord copy")
    parser.add_argument("name", choices=PREPARABLE)
    parser.add_argument("--source", required=True, help="folder (or archive) of original files")
    _data_dir_flag(parser)
    parser.add_argument("--download", action="store_true", help="fetch the originals first")
    parser.add_argument("--name", dest="dataset_name", help="imagefolder: the dataset's name")
    parser.add_argument("--skip-bad", action="store_true",
                        help="imagefolder / CIFAR image folders: skip unreadable images")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing copy")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        if argv[:1] == [FROM_TFDS]:
            summary = from_tfds(args.name, args.data_dir)
        else:
            summary = prepare(args.name, args.source, data_dir=args.data_dir,
                              dataset_name=args.dataset_name, download_first=args.download,
                              skip_bad=args.skip_bad, overwrite=args.overwrite)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
