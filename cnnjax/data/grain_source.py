"""A prepared split read from disk with grain: the DataSource contract of cnnjax.data.source.

Batches are pure functions of (seed, step), as ArraySource's: the train order of epoch e is
np.random.default_rng((seed, e)).permutation over the split's examples, global batch `step` is
rows [i B, (i + 1) B) of its epoch's order (i = step mod steps_per_epoch; the remainder is
dropped), and process p of P reads rows [p B/P, (p + 1) B/P) of it. The step is the resumable
position: `batches(start_step=k)` starts at batch k without reading the ones before it, and P
processes read disjoint rows that together make each global batch. Eval is one pass in stored
order, the last batch padded (with example 0) and "mask" False on the padding.

grain runs it: a MapDataset of step numbers mapped to batches, each read by random access from
the tfds ArrayRecord data source (cnnjax.data.tfds_store); with worker_count > 0, grain worker
processes build whole batches (worker w of W builds batches w, w + W, ...) and hand them back
in step order, so the stream does not depend on the worker count.

A host augmentation (`augment`, (batch, rng) -> batch) runs in the workers on this process's
rows with randomness drawn from (seed, step): identical to ArraySource with one process. With
several processes each also mixes in its process_index, so which examples a batch holds never
depends on the process count but their augmented pixels do (ArraySource augments the global
batch instead, which here would mean every process reading every row).
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Iterator

import grain
import numpy as np
from absl import flags

from cnnjax.cores import usable_cores
from cnnjax.data.source import Augment, Batch, check_sharding, example_ids
from cnnjax.data.splits import resolve_split
from cnnjax.data.tfds_store import RecordDecoder, StoredDataset, open_dataset

# Train streams are endless; grain's MapDataset needs a length, so use one no run reaches.
_ENDLESS = 1 << 40
_AUGMENT_STREAM = 1 << 20  # the same (seed, 1 << 20, step) stream ArraySource augments with


@dataclasses.dataclass
class GrainSource:
    """Split `split` of a prepared dataset, restricted to record `indices` (ascending)."""

    name: str
    stored: StoredDataset
    split: str
    indices: np.ndarray
    batch_size: int
    train: bool
    seed: int = 0
    process_index: int = 0
    process_count: int = 1
    augment: Augment | None = None
    origin: str = ""
    worker_count: int = 0
    image_size: int = 224  # encoded (large) images only: the side of the central view

    def __post_init__(self):
        self.local_batch = check_sharding(self.batch_size, self.process_index, self.process_count)
        if self.worker_count < 0:
            raise ValueError(f"worker_count must be >= 0, got {self.worker_count}")
        if self.train and self.num_examples < self.batch_size:
            raise ValueError(f"{self.name}: batch_size {self.batch_size} exceeds the "
                             f"{self.num_examples} training examples")
        self.decoder = RecordDecoder(self.stored.features, self.image_size)
        self._records = None  # opened on first use, in whichever process reads
        self._order: tuple[int, np.ndarray] | None = None  # (epoch, permutation) last used

    def __getstate__(self) -> dict:
        # What grain sends to its worker processes: no open files, no cached permutation.
        return {**self.__dict__, "_records": None, "_order": None}

    @property
    def num_classes(self) -> int:
        return len(self.stored.class_names)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.stored.class_names

    @property
    def num_examples(self) -> int:
        return len(self.indices)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.decoder.shape)

    @property
    def input_dtype(self) -> np.dtype:
        """uint8: pixels travel as stored, and become float32 in [0, 1] on the device."""
        return np.dtype(np.uint8)

    @property
    def label_shape(self) -> tuple[int, ...]:
        return ()

    @property
    def steps_per_epoch(self) -> int:
        """Train: full global batches per epoch. Eval: batches in the one padded pass."""
        if self.train:
            return self.num_examples // self.batch_size
        return -(-self.num_examples // self.batch_size)

    def _read(self, rows: np.ndarray) -> Batch:
        if self._records is None:
            self._records = self.stored.records(self.split)
        return self.decoder(self._records.__getitems__(self.indices[rows].tolist()))

    def examples(self, rows: np.ndarray) -> Batch:
        """The examples at positions `rows` of the split, as evaluation reads them (no
        augmentation), in that order: random access, without reading the others."""
        return self._read(np.asarray(rows))

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng((self.seed, epoch)).permutation(
                self.num_examples))
        return self._order[1]

    def train_batch(self, step: int) -> Batch:
        """This process's rows of global train batch `step`, augmented when `augment` is set."""
        epoch, i = divmod(step, self.steps_per_epoch)
        start = i * self.batch_size + self.process_index * self.local_batch
        rows = self._epoch_order(epoch)[start:start + self.local_batch]
        batch = {**self._read(rows), **example_ids(rows, epoch)}
        if self.augment is not None:
            key = (self.seed, _AUGMENT_STREAM, step)
            if self.process_count > 1:
                key += (self.process_index,)
            batch = self.augment(batch, np.random.default_rng(key))
        return batch

    def eval_batch(self, j: int) -> Batch:
        """This process's rows of eval batch `j`, with "mask" False on the padding."""
        index = np.arange(j * self.batch_size, (j + 1) * self.batch_size)
        mask = index < self.num_examples
        lo = self.process_index * self.local_batch
        rows = slice(lo, lo + self.local_batch)
        batch = self._read(np.where(mask, index, 0)[rows])
        batch["mask"] = mask[rows]
        return batch

    def batches(self, start_step: int = 0) -> Iterator[Batch]:
        """Train: an endless stream from global step `start_step`. Eval: one padded pass."""
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {start_step}")
        if self.train:
            steps = grain.MapDataset.range(start_step, start_step + _ENDLESS).map(self.train_batch)
        else:
            steps = grain.MapDataset.range(self.steps_per_epoch).map(self.eval_batch)
        if self.worker_count:
            steps = steps.map(_contiguous)
        # One reading thread a step ahead per process; more would multiply batch memory.
        stream = steps.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2))
        if self.worker_count:
            if not flags.FLAGS.is_parsed():
                # grain's worker start-up reads its absl flags; outside an absl app (tests,
                # notebooks) take their defaults.
                flags.FLAGS.mark_as_parsed()
            stream = stream.mp_prefetch(grain.MultiprocessingOptions(
                num_workers=self.worker_count, per_worker_buffer_size=2),
                worker_init_fn=_ignore_sigint)
        iterator = iter(stream)
        try:
            for batch in iterator:
                if self.worker_count:
                    # Out of the shared memory the workers wrote it to, which is released (unlinked)
                    # at once: a consumer holding a batch (a device array may alias host memory on
                    # CPU) would otherwise keep it past the end, reported leaked at exit.
                    batch = {k: np.array(v) for k, v in batch.items()}
                yield batch
        finally:
            iterator.close()  # stops grain's worker processes and threads


def _contiguous(batch: Batch) -> Batch:
    """`batch` with C-contiguous arrays, built in the worker. grain hands only those over in
    shared memory and pickles any other array through the worker's pipe: a strided image batch
    (as the decoder and the augmentations make) then fills the pipe, and at shutdown the worker
    hangs flushing it until grain kills it (25 s per worker), leaking the batch's blocks."""
    return {k: np.ascontiguousarray(v) for k, v in batch.items()}


def _ignore_sigint(worker_index: int, worker_count: int) -> None:
    """Run in each grain worker: Ctrl-C in a terminal signals the whole process group, and the
    main process alone decides what happens (it checkpoints, then stops the workers)."""
    del worker_index, worker_count
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def default_worker_count() -> int:
    """Train-time grain workers when none are configured: one per core this process may use,
    which is SLURM's --cpus-per-task when set (SLURM_CPUS_PER_TASK; one task per GPU, so it is
    the cores of one GPU's input pipeline), else the cores of its CPU affinity."""
    return usable_cores()


def open_prepared(name: str, split: str, *, batch_size: int, train: bool, prepare_hint: str,
                  seed: int = 0, data_dir: str | None = None, process_index: int = 0,
                  process_count: int = 1, augment: Augment | None = None,
                  worker_count: int | None = None, holdout: int | None = None,
                  image_size: int = 224) -> GrainSource:
    """The GrainSource of split `split` of prepared dataset `name` in `data_dir`.

    `holdout` sizes the "holdout" / "train_minus_holdout" splits (default: the dataset's, in its
    metadata). `worker_count` defaults to default_worker_count() for training and 0 (read in this
    process) for evaluation, which is re-opened at every eval. Raises MissingDataset, whose message
    is `prepare_hint`'s command, when the dataset is not in `data_dir`.
    """
    stored = open_dataset(name, data_dir, prepare_hint)
    if holdout is None:
        holdout = stored.metadata["holdout"]
    stored_split, indices = resolve_split(split, stored.split_sizes, holdout)
    if worker_count is None:
        worker_count = default_worker_count() if train else 0
    return GrainSource(name, stored, stored_split, indices, batch_size, train, seed=seed,
                       process_index=process_index, process_count=process_count, augment=augment,
                       origin=stored.metadata["origin"], worker_count=worker_count,
                       image_size=image_size)

