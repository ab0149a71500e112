"""The `DataSource` every dataset returns, and its in-memory implementation.

Batches are pure functions of (seed, step): train order is a fresh permutation per epoch drawn
from (seed, epoch), so `batches(start_step=k)` resumes exactly without replaying k batches.
`batch_size` is the global batch; process p of P gets rows [p B/P, (p + 1) B/P) of every global
batch, so concatenating the processes' slices in order gives the single-process batch.
Train batches also carry each example's row in the split ("index") and the epoch ("epoch"), both
(B,) int32, for augmentations that follow an example across epochs (alternating flip).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import numpy as np

Batch = dict[str, np.ndarray]
# An augmentation maps (batch, rng) -> batch; it runs on the host, per global batch.
Augment = Callable[[Batch, np.random.Generator], Batch]


def example_ids(rows: np.ndarray, epoch: int) -> Batch:
    """The "index" (row in the split) and "epoch" entries of a train batch, (B,) int32 each."""
    return {"index": np.asarray(rows, np.int32), "epoch": np.full(len(rows), epoch, np.int32)}


def check_sharding(batch_size: int, process_index: int, process_count: int) -> int:
    """Returns the per-process batch size; raises ValueError for an invalid split."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
    if batch_size % process_count:
        raise ValueError(f"global batch_size {batch_size} is not divisible by the "
                         f"{process_count} processes")
    return batch_size // process_count


@dataclasses.dataclass
class ArraySource:
    """A split held in memory as arrays: images (N, H, W, C) float32 and labels (N,) int32.

    Two other forms train the same way: token ids (N, L) int32 as "images" (text, for textcnn),
    and per-pixel labels (N, H, W) int32 (segmentation, for unet). Other per-example arrays go in
    `extra`.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    batch_size: int
    train: bool
    seed: int = 0
    process_index: int = 0
    process_count: int = 1
    augment: Augment | None = None
    origin: str = ""
    extra: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.local_batch = check_sharding(self.batch_size, self.process_index, self.process_count)
        if len(self.images) != len(self.labels):
            raise ValueError(f"{self.name}: {len(self.images)} images but {len(self.labels)} labels")
        if self.train and len(self.images) < self.batch_size:
            raise ValueError(f"{self.name}: batch_size {self.batch_size} exceeds the "
                             f"{len(self.images)} training examples")

    @property
    def num_examples(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    @property
    def input_dtype(self) -> np.dtype:
        """float32 for images, int32 for token ids."""
        return self.images.dtype

    @property
    def label_shape(self) -> tuple[int, ...]:
        """() for one class per example, (H, W) for one per pixel."""
        return tuple(self.labels.shape[1:])

    @property
    def steps_per_epoch(self) -> int:
        """Train: full global batches per epoch (the remainder is dropped, reshuffled next epoch).
        Eval: batches in the one padded pass."""
        if self.train:
            return self.num_examples // self.batch_size
        return -(-self.num_examples // self.batch_size)

    def _gather(self, index: np.ndarray) -> Batch:
        batch = {"image": self.images[index], "label": self.labels[index]}
        batch.update({k: v[index] for k, v in self.extra.items()})
        return batch

    def examples(self, rows: np.ndarray) -> Batch:
        """The examples at positions `rows` of the split, as evaluation reads them (no
        augmentation), in that order."""
        return self._gather(np.asarray(rows))

    def _local(self, batch: Batch) -> Batch:
        lo = self.process_index * self.local_batch
        return {k: v[lo:lo + self.local_batch] for k, v in batch.items()}

    def batches(self, start_step: int = 0) -> Iterator[Batch]:
        """Train: an endless stream starting at global step `start_step`. Eval: one pass in
        order, the last batch padded (repeating example 0) with "mask" False on the padding."""
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {start_step}")
        if self.train:
            yield from self._train_batches(start_step)
        else:
            yield from self._eval_batches()

    def _train_batches(self, start_step: int) -> Iterator[Batch]:
        per_epoch, step = self.steps_per_epoch, start_step
        while True:
            epoch, i = divmod(step, per_epoch)
            order = np.random.default_rng((self.seed, epoch)).permutation(self.num_examples)
            rows = order[i * self.batch_size:(i + 1) * self.batch_size]
            batch = {**self._gather(rows), **example_ids(rows, epoch)}
            if self.augment is not None:
                # Augment the GLOBAL batch from (seed, step) so every process draws the same
                # randomness and the result does not depend on the process count.
                batch = self.augment(batch, np.random.default_rng((self.seed, 1 << 20, step)))
            yield self._local(batch)
            step += 1

    def _eval_batches(self) -> Iterator[Batch]:
        for start in range(0, self.num_examples, self.batch_size):
            index = np.arange(start, start + self.batch_size)
            mask = index < self.num_examples
            batch = self._gather(np.where(mask, index, 0))
            batch["mask"] = mask
            yield self._local(batch)
