"""The splits a prepared dataset offers: those stored, and a held-out validation split from train.

"train", "test" (and any other stored split, e.g. an image folder's "validation") are read as
stored. "holdout" is a fixed random subset of `holdout` training examples and
"train_minus_holdout" the remaining ones: the permutation np.random.default_rng(HOLDOUT_SEED)
.permutation(num_train) gives the holdout as its first `holdout` entries, so the same examples
are held out on every machine and in every run, whatever the training seed. The default size is
the dataset's (cnnjax.data.catalog: 5,000, i.e. CIFAR-10's 45,000 / 5,000 of He et al. 2016,
sec. 4.2; image folders: a tenth of train); the `holdout` option of `create` overrides it.
"""

from __future__ import annotations

import numpy as np

HOLDOUT_SEED = 2016
HOLDOUT = "holdout"
TRAIN_MINUS_HOLDOUT = "train_minus_holdout"
DERIVED = (HOLDOUT, TRAIN_MINUS_HOLDOUT)


def resolve_split(split: str, split_sizes: dict[str, int], holdout: int) -> tuple[str, np.ndarray]:
    """(the stored split to read, the record indices of `split` within it, ascending)."""
    if split in DERIVED:
        if "train" not in split_sizes:
            raise ValueError(f"split {split!r} is carved from 'train', which this dataset lacks "
                             f"(it has {sorted(split_sizes)})")
        n = split_sizes["train"]
        if not 0 < holdout < n:
            raise ValueError(f"holdout must be in [1, {n - 1}] for a train split of {n} "
                             f"examples, got {holdout}")
        order = np.random.default_rng(HOLDOUT_SEED).permutation(n)
        chosen = order[:holdout] if split == HOLDOUT else order[holdout:]
        return "train", np.sort(chosen)
    if split not in split_sizes:
        raise ValueError(f"unknown split {split!r}; this dataset has {sorted(split_sizes)}, "
                         f"plus {list(DERIVED)} carved from 'train'")
    return split, np.arange(split_sizes[split])
