"""One entry point for every dataset: `create(name, split, *, batch_size, train, ...)`."""

from __future__ import annotations

import difflib
from collections.abc import Callable

from cnnjax.data.digits import load_digits_split
from cnnjax.data.source import ArraySource
from cnnjax.data.synthetic import synthetic_arrays


def _digits(split: str, **kw) -> ArraySource:
    images, labels = load_digits_split(split)
    return ArraySource("digits", images, labels, 10, origin="scikit-learn digits (8x8)", **kw)


def _synthetic(split: str, *, image_shape=(32, 32, 3), num_classes: int = 10,
               num_examples: int = 1024, **kw) -> ArraySource:
    # Train and test draw from different seeds so they are different examples.
    images, labels = synthetic_arrays(num_examples, tuple(image_shape), num_classes,
                                      seed=kw["seed"] * 2 + (split != "train"))
    return ArraySource("synthetic", images, labels, num_classes, origin="random", **kw)


_BUILDERS: dict[str, Callable[..., ArraySource]] = {"digits": _digits, "synthetic": _synthetic}


def list_datasets() -> list[str]:
    """Every dataset name `create` accepts."""
    return sorted(_BUILDERS)


def create(name: str, split: str, *, batch_size: int, train: bool, seed: int = 0,
           data_dir: str | None = None, process_index: int = 0, process_count: int = 1,
           **options) -> ArraySource:
    """The DataSource of dataset `name`, split `split` (see cnnjax.data.source for the contract).

    `options` are dataset-specific (e.g. synthetic's image_shape, num_classes, num_examples).
    """
    if name not in _BUILDERS:
        close = difflib.get_close_matches(name, _BUILDERS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown dataset {name!r}{hint}; known: {list_datasets()}")
    del data_dir  # in-memory datasets need none
    return _BUILDERS[name](split, batch_size=batch_size, train=train, seed=seed,
                           process_index=process_index, process_count=process_count, **options)
