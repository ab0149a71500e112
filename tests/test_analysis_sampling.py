"""The analysis tools on a split stored class by class (as CIFAR-10 prepared from class folders
was before records were shuffled): they analyse a seeded random sample across the classes, whose
accuracy is the model's on those examples, and panels that show several classes by name."""

from __future__ import annotations

import numpy as np
import pytest

import train_helpers as th
from conftest import REPO_ROOT
from test_analysis_trained import _numpy_forward

from cnnjax.analysis import adversarial
from cnnjax.analysis.sampling import panel_order, sample_rows
from cnnjax.analysis.visualize import load_run
from cnnjax.data import tfds_store
from cnnjax.data.digits import load_digits_split

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@pytest.fixture(scope="module")
def sorted_run(tmp_path_factory):
    """A short run on the digits stored sorted by class; returns (workdir, {split: (uint8
    images, labels) as stored})."""
    from cnnjax.sweep.config_file import load_module
    from cnnjax.train.trainer import train

    root = tmp_path_factory.mktemp("sorted")
    stored = {}
    for split in ("train", "test"):
        images, labels = load_digits_split(split)
        order = np.argsort(labels, kind="stable")
        stored[split] = (np.round(images[order] * 255).astype(np.uint8), labels[order])
    rows = lambda split: lambda: ({"image": x, "label": int(y)} for x, y in zip(*stored[split]))
    tfds_store.write_dataset(
        "digits_sorted", root / "tfds", features=tfds_store.image_features(
            class_names=NAMES, shape=(8, 8, 1), channels=1),
        splits={s: rows(s) for s in stored}, description="the digits, sorted by class",
        metadata={"origin": "digits sorted by class", "holdout": 100})
    config = load_module(REPO_ROOT / "configs" / "default.py").get_config("smoke")
    config.dataset.name, config.dataset.data_dir = "digits_sorted", str(root / "tfds")
    config.dataset.options = {"worker_count": 0}
    train(config, root / "run")
    return root / "run", stored


def test_analysis_accuracy_on_a_class_sorted_copy_is_the_models_on_the_same_examples(sorted_run):
    workdir, stored = sorted_run
    images, labels = stored["test"]
    run = load_run(workdir, max_train=200, max_test=180, seed=0)
    rows = np.random.default_rng(0).permutation(360)[:180]  # the documented sample
    np.testing.assert_array_equal(run.test_rows, rows)
    np.testing.assert_array_equal(run.test[1], labels[rows])
    assert len(set(labels[:180].tolist())) <= 6  # what the first records would have given
    assert set(run.test[1].tolist()) == set(range(10))
    assert set(run.train[1].tolist()) == set(range(10))  # the neighbours' bank too
    # What adversarial.md reports at eps 0, against a float64 NumPy forward pass of the
    # checkpoint's parameters (read with Orbax alone) on the same stored images.
    got = adversarial.accuracy_vs_eps(run.pixel_logits_fn(), run.test_pixels, run.test[1], [0.0],
                                      attack="fgsm", clip=(0.0, 1.0))[0]
    logits = _numpy_forward(th.restore(workdir)["params"], images[rows] / 255.0)["Dense_1"]
    want = np.mean(np.argmax(logits, -1) == labels[rows])
    assert got == pytest.approx(want, abs=1e-6)  # float32 count / 180 against float64
    assert 0.3 < want < 1.0  # a trained model, not one that predicts one class


def test_panels_show_one_image_per_class_first_named():
    labels = np.array([3, 3, 3, 1, 3, 1, 7, 2])
    np.testing.assert_array_equal(panel_order(labels, 5), [0, 3, 6, 7, 1])
    np.testing.assert_array_equal(panel_order(labels, 3), [0, 3, 6])
    assert len(sample_rows(360, None, 0)) == 360 and len(sample_rows(10, 50, 1)) == 10


def test_the_cli_states_its_sample_and_names_classes(sorted_run):
    workdir, _ = sorted_run
    run = load_run(workdir, max_train=50, max_test=40, seed=3)
    shown = run.test[1][panel_order(run.test[1], 4)]
    assert len(set(shown.tolist())) == 4
    assert [run.label(y) for y in shown] == [NAMES[y] for y in shown]
    assert run.sample_note() == ("40 of the 360 test images and 50 of the 1437 training images, "
                                 "random samples (--seed=3)")
