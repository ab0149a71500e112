"""One entry point for every dataset: `create(name, split, *, batch_size, train, ...)`."""

from __future__ import annotations

import difflib
import pathlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from cnnjax.data import shapes, text
from cnnjax.data.digits import load_digits_split
from cnnjax.data.imagefolder import folder_arrays
from cnnjax.data.source import ArraySource
from cnnjax.data.synthetic import synthetic_arrays

if TYPE_CHECKING:
    from cnnjax.data.grain_source import GrainSource


def _digits(split: str, **kw) -> ArraySource:
    images, labels = load_digits_split(split)
    return ArraySource("digits", images, labels, 10, origin="scikit-learn digits (8x8)", **kw)


def _synthetic(split: str, *, image_shape=(32, 32, 3), num_classes: int = 10,
               num_examples: int = 1024, **kw) -> ArraySource:
    # Train and test draw from different seeds so they are different examples.
    images, labels = synthetic_arrays(num_examples, tuple(image_shape), num_classes,
                                      seed=kw["seed"] * 2 + (split != "train"))
    return ArraySource("synthetic", images, labels, num_classes, origin="random", **kw)


def _check_split(name: str, split: str, known: dict) -> None:
    if split not in known:
        raise ValueError(f"{name} has splits {sorted(known)}, got {split!r}")


def _shapes(split: str, *, image_size: int = 64, num_examples: int | None = None,
            **kw) -> ArraySource:
    _check_split("shapes", split, shapes.NUM_EXAMPLES)
    images, masks = shapes.shapes_arrays(num_examples or shapes.NUM_EXAMPLES[split], image_size,
                                         seed=kw["seed"] * 2 + (split != "train"))
    return ArraySource("shapes", images, masks, len(shapes.CLASSES),
                       origin="generated shapes with per-pixel masks", **kw)


def _keywords(split: str, *, vocab_size: int = 2000, num_classes: int = 4, max_len: int = 64,
              num_examples: int | None = None, **kw) -> ArraySource:
    _check_split("keywords", split, text.NUM_EXAMPLES)
    tokens, labels = text.keyword_arrays(num_examples or text.NUM_EXAMPLES[split],
                                         vocab_size=vocab_size, num_classes=num_classes,
                                         max_len=max_len, seed=kw["seed"] * 2 + (split != "train"))
    return ArraySource("keywords", tokens, labels, num_classes,
                       origin="generated keyword sentences (token ids)", **kw)


def _folder(split: str, *, source: str = "", origin: str = "", **kw) -> ArraySource:
    if not source:
        raise ValueError("dataset 'folder' needs options.source: a folder SOURCE/<split>/<class>/"
                         "<image> or its .npz pack (cnnjax.data.imagefolder.pack_folder)")
    images, labels, classes = folder_arrays(pathlib.Path(source), split)
    return ArraySource("folder", images, labels, len(classes),
                       origin=origin or f"image folder {source}", **kw)


# "folder" decodes a class-folder tree of one image size into memory (no tfds or grain needed):
# for small sets, or a machine without those packages (experiments/gpu_pack.py).
_BUILDERS: dict[str, Callable[..., ArraySource]] = {
    "digits": _digits, "synthetic": _synthetic, "shapes": _shapes, "keywords": _keywords,
    "folder": _folder}
# tfds' catalog datasets, prepared from their original files into data_dir by
# cnnjax.data.prepare (or by tfds itself), read with grain; any other name prepared there (an
# image folder) is opened the same way.
_PREPARED = ("cifar10", "cifar100", "fashion_mnist", "imagenet2012", "mnist")


def _open_prepared(name: str, split: str, data_dir: str | None, **kw):
    from cnnjax.data.grain_source import open_prepared  # imports tfds + grain: only when used
    from cnnjax.data.imagenet import NAME as IMAGENET, open_imagenet
    from cnnjax.data.prepare import prepare_command

    opener = open_imagenet if name == IMAGENET else open_prepared
    return opener(name, split, data_dir=data_dir, prepare_hint=prepare_command(name, data_dir),
                  **kw)


def _is_prepared(name: str, data_dir: str | None) -> bool:
    from cnnjax.data.tfds_store import is_prepared

    return is_prepared(name, data_dir)


def list_datasets() -> list[str]:
    """Every dataset name `create` accepts."""
    return sorted((*_BUILDERS, *_PREPARED))


def create(name: str, split: str, *, batch_size: int, train: bool, seed: int = 0,
           data_dir: str | None = None, process_index: int = 0, process_count: int = 1,
           **options) -> ArraySource | GrainSource:
    """The DataSource of dataset `name`, split `split` (see cnnjax.data.source for the contract).

    `options` are dataset-specific (e.g. synthetic's image_shape, num_classes, num_examples;
    shapes' image_size, num_examples (cnnjax.data.shapes); keywords' vocab_size, num_classes,
    max_len, num_examples (cnnjax.data.text); folder's source (and origin, a label for results):
    cnnjax.data.imagefolder.folder_arrays;
    prepared datasets' worker_count, holdout, image_size: cnnjax.data.grain_source.open_prepared;
    imagenet2012's crops: cnnjax.data.imagenet.open_imagenet).
    `data_dir` (default $TFDS_DATA_DIR, else ~/tensorflow_datasets) holds prepared datasets; one
    missing there raises MissingDataset (a FileNotFoundError) naming both ways to get it (the
    `prepare` command, or a copy tfds prepared; tfds' TFRecord copy: the command converting it).
    """
    kw = dict(batch_size=batch_size, train=train, seed=seed, process_index=process_index,
              process_count=process_count, **options)
    if name in _PREPARED or (name not in _BUILDERS and _is_prepared(name, data_dir)):
        return _open_prepared(name, split, data_dir, **kw)
    if name not in _BUILDERS:
        close = difflib.get_close_matches(name, list_datasets(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown dataset {name!r}{hint}; known: {list_datasets()}, or an image "
                         f"folder prepared under that name with: python -m cnnjax.data.prepare "
                         f"imagefolder --source=DIR --name={name} --data_dir=DATA_DIR")
    del data_dir  # in-memory datasets need none
    return _BUILDERS[name](split, **kw)
