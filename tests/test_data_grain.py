"""Reading prepared datasets with grain (cnnjax.data.grain_source): the DataSource contract of
cnnjax.data.source checked against NumPy references written here: the documented per-epoch
order, determinism, resuming at any step, disjoint process shards covering the epoch, eval
padding, grain worker processes giving the same stream, the held-out split, the augmentation
hook (against ArraySource), and the trainer building from a prepared dataset."""

from __future__ import annotations

import numpy as np
import pytest

from cnnjax import data
from cnnjax.data import tfds_store
from cnnjax.data.grain_source import GrainSource
from cnnjax.data.source import ArraySource

N_TRAIN, N_TEST, SHAPE = 37, 11, (4, 5, 3)


def _arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose first pixel is the example's index (to identify it), labels i mod 3."""
    images = np.random.default_rng(seed).integers(0, 256, (n, *SHAPE), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(n)
    return images, (np.arange(n) % 3).astype(np.int64)


TRAIN, TEST = _arrays(N_TRAIN, 0), _arrays(N_TEST, 1)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("tfds")

    def rows(arrays):
        return lambda: ({"image": x, "label": int(y)} for x, y in zip(*arrays))

    tfds_store.write_dataset(
        "toy", root, features=tfds_store.image_features(class_names=("a", "b", "c"), shape=SHAPE),
        splits={"train": rows(TRAIN), "test": rows(TEST)}, description="test set",
        metadata={"origin": "toy arrays", "holdout": 7})
    return str(root)


def _source(data_dir, split="train", **kw) -> GrainSource:
    kw = {"batch_size": 8, "train": split != "test", "worker_count": 0, **kw}
    return data.create("toy", split, data_dir=data_dir, **kw)


def _take(source, n, start=0) -> list[dict]:
    stream = source.batches(start_step=start)
    out = [next(stream) for _ in range(n)]
    stream.close()
    return out


def _ids(batch) -> list[int]:
    return batch["image"][:, 0, 0, 0].astype(int).tolist()


def test_shapes_and_metadata(data_dir):
    ds = _source(data_dir)
    assert isinstance(ds, GrainSource)
    assert (ds.num_examples, ds.steps_per_epoch, ds.image_shape) == (N_TRAIN, 4, SHAPE)
    assert ds.num_classes == 3 and ds.class_names == ("a", "b", "c") and ds.origin == "toy arrays"
    batch = _take(ds, 1)[0]
    assert batch["image"].dtype == np.uint8 and batch["image"].shape == (8, *SHAPE)
    assert ds.input_dtype == np.uint8 and batch["label"].dtype == np.int32


def _documented_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """np.random.default_rng((seed, epoch)).permutation(n), re-derived without calling it: the
    PCG64 stream seeded by SeedSequence((seed, epoch)), and NumPy's Fisher-Yates shuffle from the
    last position down, each j uniform in [0, i] by masked rejection on 32-bit draws (a 64-bit
    output supplies its low half, then its high half)."""
    bits = np.random.PCG64(np.random.SeedSequence((seed, epoch)))
    high: list[int] = []

    def next32() -> int:
        if high:
            return high.pop()
        word = int(bits.random_raw())
        high.append(word >> 32)
        return word & 0xFFFFFFFF

    order = list(range(n))
    for i in range(n - 1, 0, -1):
        mask = (1 << i.bit_length()) - 1
        j = next32() & mask
        while j > i:
            j = next32() & mask
        order[i], order[j] = order[j], order[i]
    return np.asarray(order)


def test_train_order_is_the_documented_permutation_per_epoch(data_dir):
    seed, bs = 3, 8
    got = _take(_source(data_dir, seed=seed), 10)  # 2.5 epochs of 4 steps
    for step, batch in enumerate(got):
        epoch, i = divmod(step, N_TRAIN // bs)
        rows = _documented_order(seed, epoch, N_TRAIN)[i * bs:(i + 1) * bs]
        np.testing.assert_array_equal(batch["image"], TRAIN[0][rows])  # the stored uint8
        np.testing.assert_array_equal(batch["label"], TRAIN[1][rows])
    for epoch in range(2):  # within an epoch no example repeats
        ids = sum((_ids(b) for b in got[4 * epoch:4 * epoch + 4]), [])
        assert len(set(ids)) == 32


def test_same_seed_same_batches_other_seed_other(data_dir):
    a, b = _take(_source(data_dir, seed=5), 6), _take(_source(data_dir, seed=5), 6)
    c = _take(_source(data_dir, seed=6), 6)
    assert [_ids(x) for x in a] == [_ids(x) for x in b]
    assert [_ids(x) for x in a] != [_ids(x) for x in c]


@pytest.mark.parametrize("start", [1, 4, 9])
def test_resuming_at_step_n_continues_exactly(data_dir, start):
    reference = _take(_source(data_dir, seed=2), start + 4)[start:]
    resumed = _take(_source(data_dir, seed=2), 4, start=start)
    for r, g in zip(reference, resumed):
        np.testing.assert_array_equal(r["image"], g["image"])
        np.testing.assert_array_equal(r["label"], g["label"])


def test_two_processes_see_disjoint_halves_that_cover_the_epoch(data_dir):
    whole = _take(_source(data_dir, seed=1), 4)
    shards = [_take(_source(data_dir, seed=1, process_index=p, process_count=2), 4)
              for p in range(2)]
    seen = []
    for step in range(4):
        first, second = _ids(shards[0][step]), _ids(shards[1][step])
        assert len(first) == len(second) == 4 and not set(first) & set(second)
        assert first + second == _ids(whole[step])
        seen += first + second
    assert len(seen) == len(set(seen)) == 32 and set(seen) <= set(range(N_TRAIN))


def test_eval_is_one_padded_pass_in_order(data_dir):
    ds = _source(data_dir, "test")
    batches = list(ds.batches())
    assert ds.steps_per_epoch == 2 and len(batches) == 2
    # Padding repeats example 0.
    assert sum((_ids(b) for b in batches), []) == list(range(N_TEST)) + [0] * 5
    assert [b["mask"].tolist() for b in batches] == [[True] * 8, [True] * 3 + [False] * 5]
    halves = [list(_source(data_dir, "test", process_index=p, process_count=2).batches())
              for p in range(2)]
    for j in range(2):
        assert _ids(halves[0][j]) + _ids(halves[1][j]) == _ids(batches[j])
        assert halves[0][j]["mask"].tolist() + halves[1][j]["mask"].tolist() == \
            batches[j]["mask"].tolist()


def test_grain_worker_processes_give_the_same_stream(data_dir):
    in_process = _take(_source(data_dir, seed=4), 5, start=3)
    workers = _take(_source(data_dir, seed=4, worker_count=2), 5, start=3)
    assert [_ids(b) for b in workers] == [_ids(b) for b in in_process]


def test_holdout_splits_are_fixed_disjoint_and_cover_train(data_dir):
    held = _source(data_dir, "holdout", train=False, batch_size=7)
    rest = _source(data_dir, "train_minus_holdout", train=False, batch_size=30)
    assert (held.num_examples, rest.num_examples) == (7, 30)  # the dataset's default
    a, b = set(_ids(next(held.batches()))), set(_ids(next(rest.batches())))
    assert len(a) == 7 and len(b) == 30 and not a & b and a | b == set(range(N_TRAIN))
    again = _source(data_dir, "holdout", train=False, batch_size=7, seed=99)
    assert set(_ids(next(again.batches()))) == a
    assert _source(data_dir, "holdout", train=False, holdout=5).num_examples == 5
    trainable = _source(data_dir, "train_minus_holdout", seed=0)
    assert set(sum((_ids(x) for x in _take(trainable, 3)), [])) <= b
    with pytest.raises(ValueError, match="holdout must be in"):
        _source(data_dir, "holdout", train=False, holdout=N_TRAIN)
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        _source(data_dir, "valid", train=False)


def _flip_some(batch, rng):
    """Mirrors each image whose uniform draw is below 0.5, and returns the draws as "u"."""
    u = rng.random(len(batch["image"]))
    images = np.where((u < 0.5)[:, None, None, None], batch["image"][:, :, ::-1], batch["image"])
    return {**batch, "image": images, "u": u}


def test_augment_hook_runs_per_batch_with_randomness_from_seed_and_step(data_dir):
    """Each batch is augmented once, on the rows of the documented order, with draws that are a
    function of (seed, step): the same when resumed there or built by worker processes, fresh
    at every step and for another seed; and as ArraySource's (the documented equivalence)."""
    got = _take(_source(data_dir, seed=7, augment=_flip_some), 6)
    for step, batch in enumerate(got):
        epoch, i = divmod(step, 4)
        source = TRAIN[0][_documented_order(7, epoch, N_TRAIN)[i * 8:(i + 1) * 8]]
        flip = batch["u"] < 0.5
        want = np.where(flip[:, None, None, None], source[:, :, ::-1], source)
        np.testing.assert_array_equal(batch["image"], want)
    draws = np.stack([b["u"] for b in got])
    assert 0.3 < np.mean(draws < 0.5) < 0.7
    assert len({tuple(d) for d in draws}) == 6  # fresh draws at every step
    for start in (2, 5):
        resumed = _take(_source(data_dir, seed=7, augment=_flip_some), 1, start=start)[0]
        np.testing.assert_array_equal(resumed["u"], draws[start])
    workers = _take(_source(data_dir, seed=7, augment=_flip_some, worker_count=2), 6)
    np.testing.assert_array_equal(np.stack([b["u"] for b in workers]), draws)
    other = _take(_source(data_dir, seed=8, augment=_flip_some), 1)[0]
    assert not np.array_equal(other["u"], draws[0])
    reference = ArraySource("toy", TRAIN[0], TRAIN[1].astype(np.int32), 3,
                            batch_size=8, train=True, seed=7, augment=_flip_some).batches()
    for g in got:
        r = next(reference)
        np.testing.assert_array_equal(g["image"], r["image"])
        np.testing.assert_array_equal(g["u"], r["u"])


def _strided_large(batch, rng):
    """Each image tiled to 128 x 160 pixels and mirrored: a 480 KB batch as a strided view,
    the kind the decoder and the translations hand over."""
    del rng
    return {**batch, "image": np.tile(batch["image"], (1, 32, 32, 1))[:, :, ::-1]}


def test_workers_stop_at_once_when_closed_with_large_strided_batches(data_dir):
    """Two workers whose batches are larger than a pipe's buffer and not C-contiguous, their
    queues full when the stream is closed: the close takes well under grain's 25-s kill timeout
    (50 s before the batches were made contiguous in the workers) and leaves no worker behind;
    the batches are those of the in-process stream."""
    import multiprocessing
    import time

    stream = _source(data_dir, seed=3, augment=_strided_large, worker_count=2).batches()
    got = [next(stream) for _ in range(2)]
    time.sleep(3)  # the workers fill their queues and block on their pipes
    start = time.perf_counter()
    stream.close()
    assert time.perf_counter() - start < 10
    assert not [p for p in multiprocessing.active_children() if "grain" in p.name]
    want = _take(_source(data_dir, seed=3, augment=_strided_large), 2)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g["image"], w["image"])


def test_bad_arguments(data_dir):
    with pytest.raises(ValueError, match="exceeds the 37 training examples"):
        _source(data_dir, batch_size=64)
    with pytest.raises(ValueError, match="not divisible"):
        _source(data_dir, batch_size=9, process_count=2)
    with pytest.raises(ValueError, match="worker_count"):
        _source(data_dir, worker_count=-1)
    with pytest.raises(ValueError, match="start_step"):
        next(_source(data_dir).batches(start_step=-1))


def test_trainer_builds_from_a_prepared_dataset(data_dir):
    from cnnjax.sweep.config_file import load_module
    from cnnjax.train.trainer import build
    from conftest import REPO_ROOT

    config = load_module(REPO_ROOT / "configs" / "default.py").get_config()
    config.dataset.name, config.dataset.data_dir, config.batch_size = "toy", data_dir, 8
    config.dataset.options = {"worker_count": 0}
    train_ds, eval_ds, *_ = build(config)
    assert isinstance(train_ds, GrainSource) and isinstance(eval_ds, GrainSource)
    assert train_ds.num_classes == 3 and train_ds.image_shape == SHAPE
    assert eval_ds.num_examples == N_TEST and train_ds.steps_per_epoch == 4


@pytest.mark.slow
def test_launch_trains_on_a_prepared_dataset_with_grain_workers(tmp_path):
    import data_files
    from cnnjax.data.prepare import prepare
    from train_helpers import eval_lines, run

    data_files.write_idx_dataset(tmp_path / "src", n_train=256, n_test=64)
    prepare("mnist", tmp_path / "src", data_dir=str(tmp_path / "tfds"))
    proc = run(tmp_path / "run", "--config.dataset.name=mnist",
               f"--config.dataset.data_dir={tmp_path / 'tfds'}")  # default: grain workers
    assert "simple_cnn on mnist (MNIST (a copy whose MD5 differs" in proc.stdout
    assert eval_lines(tmp_path / "run")[-1]["step"] == 8  # 2 epochs of 256 / 64
    # The workers' shared memory is released: Python's resource tracker reports none leaked.
    assert "leaked" not in proc.stderr, proc.stderr
