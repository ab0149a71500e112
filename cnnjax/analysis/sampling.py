"""Which examples the analysis tools look at: a seeded random sample of a split, never its first
records (a split stored class by class would give one class), and panels that show one example
per class before repeating any."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def sample_rows(num_examples: int, limit: int | None, seed: int) -> np.ndarray:
    """Positions in a split of `num_examples` of a uniform random sample of `limit` of them (all
    when `limit` is None or larger), in the sample's random order:
    np.random.default_rng(seed).permutation(num_examples)[:limit]."""
    if num_examples < 1:
        raise ValueError(f"cannot sample from an empty split (num_examples {num_examples})")
    if limit is not None and limit < 1:
        raise ValueError(f"the number of examples to sample must be >= 1, got {limit}")
    return np.random.default_rng(seed).permutation(num_examples)[:limit]


def panel_order(labels: np.ndarray, num: int) -> np.ndarray:
    """Indices of `num` of `labels` (int, (N,)) for a panel: the first example of each class in
    order of appearance, then the second of each, and so on, so that a panel of up to
    (number of classes) images shows as many classes."""
    labels = np.asarray(labels)
    rank = np.zeros(len(labels), np.int64)  # how many earlier examples share the class
    seen: dict[int, int] = {}
    for i, y in enumerate(labels.tolist()):
        rank[i] = seen.get(y, 0)
        seen[y] = rank[i] + 1
    return np.lexsort((np.arange(len(labels)), rank))[:num]


def label_text(label: int, class_names: Sequence[str]) -> str:
    """A class's name when the dataset names its classes, else its number."""
    label = int(label)
    return class_names[label] if 0 <= label < len(class_names) else str(label)
