"""The 8x8 handwritten digits bundled with scikit-learn (1,797 images, 10 classes).

The embedded default dataset: no download. Split: a permutation of the 1,797 examples drawn with
NumPy's default_rng(20240601); the first 1,437 (80%) train, the last 360 test. Pixel values 0..16
are scaled to [0, 1]; images are (8, 8, 1).
"""

from __future__ import annotations

import numpy as np

SPLIT_SEED = 20240601
NUM_TRAIN = 1437


def load_digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 (N, 8, 8, 1) in [0, 1], labels int32 (N,)) of split "train" or "test"."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn, read from disk

    if split not in ("train", "test"):
        raise ValueError(f"digits has splits 'train' and 'test', got {split!r}")
    data = load_digits()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(data.target))
    index = order[:NUM_TRAIN] if split == "train" else order[NUM_TRAIN:]
    images = (data.images[index] / 16.0).astype(np.float32)[..., None]
    return images, data.target[index].astype(np.int32)
