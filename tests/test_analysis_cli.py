"""The analysis CLI end to end on a workdir written by a short real launch.py run."""

from __future__ import annotations

import shutil
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import train_helpers as th
from conftest import REPO_ROOT
from test_analysis_plots import assert_png

from cnnjax.analysis import adversarial
from cnnjax.analysis.visualize import WHATS, load_run

PICTURES = ["filters", "feature_maps", "activation_max", "saliency", "occlusion", "neighbours",
            "accuracy_vs_eps", "adversarial", "equivariance", "curves"]


def visualize(*flags) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnjax.analysis.visualize", *flags],
                          env=th.env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    th.run(workdir)
    return workdir


def test_restored_run_reproduces_its_final_eval(run_dir):
    run = load_run(run_dir)
    x, y = run.test
    accuracy = float(np.mean(np.argmax(np.asarray(run.logits_fn()(jnp.asarray(x))), -1) == y))
    assert accuracy == pytest.approx(th.eval_lines(run_dir)[-1]["accuracy"], abs=1e-6)
    assert run.input_shape == (8, 8, 1) and len(run.train[1]) == 1437 and len(y) == 360


@pytest.fixture(scope="module")
def normalised_dir(tmp_path_factory):
    """A run trained on digits padded to 12x12 and normalised with mean 0.3, std 0.4."""
    workdir = tmp_path_factory.mktemp("normalised")
    th.run(workdir, "--config.dataset.pad_to=12", "--config.dataset.mean=(0.3,)",
           "--config.dataset.std=(0.4,)")
    return workdir


def _numpy_preprocess(pixels: np.ndarray) -> np.ndarray:
    """normalised_dir's evaluation preprocessing, in float64 NumPy."""
    return (np.pad(np.float64(pixels), ((0, 0), (2, 2), (2, 2), (0, 0))) - 0.3) / 0.4


def test_restored_run_sees_the_runs_padding_and_normalisation(normalised_dir):
    """A run trained on padded, normalised digits: load_run gives the model those inputs
    (checked against NumPy padding and normalisation of the stored pixels) and reproduces the
    run's own final evaluation with them."""
    tmp_path = normalised_dir
    run = load_run(tmp_path)
    raw = load_run(tmp_path, preprocess=False)
    want = (np.pad(raw.test[0], ((0, 0), (2, 2), (2, 2), (0, 0))) - 0.3) / 0.4
    np.testing.assert_allclose(run.test[0], want, rtol=1e-6, atol=1e-6)
    assert raw.test[0].shape[1:] == (8, 8, 1) and run.input_shape == (12, 12, 1)
    x, y = run.test
    accuracy = float(np.mean(np.argmax(np.asarray(run.logits_fn()(jnp.asarray(x))), -1) == y))
    assert accuracy == pytest.approx(th.eval_lines(tmp_path)[-1]["accuracy"], abs=1e-6)


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_attack_budgets_are_pixels_through_the_normalisation(normalised_dir, attack):
    """eps = 8/255 in pixels: the largest change of a stored pixel is eps (NumPy), which is
    eps / std = 0.078 in the normalised input the model sees, not eps itself."""
    run = load_run(normalised_dir, max_test=64)
    raw = load_run(normalised_dir, max_test=64, preprocess=False).test[0]
    np.testing.assert_array_equal(run.test_pixels, raw)
    eps = 8 / 255
    fn = adversarial.fgsm if attack == "fgsm" else adversarial.pgd
    x, y = run.test_pixels, run.test[1]
    adv = np.asarray(fn(run.pixel_logits_fn(), x, y, eps, clip=(0.0, 1.0)), np.float64)
    delta = adv - np.float64(x)
    assert np.max(np.abs(delta)) == pytest.approx(eps, rel=1e-5)
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    moved = _numpy_preprocess(adv) - _numpy_preprocess(x)
    assert np.max(np.abs(moved)) == pytest.approx(eps / 0.4, rel=1e-5)
    # The model's own preprocessing of the pixels equals NumPy's: the attack saw that model.
    np.testing.assert_allclose(run.test[0], _numpy_preprocess(x), rtol=1e-6, atol=1e-6)
    # And it is an attack: accuracy under it drops (the clean accuracy of the run is > 0.8).
    acc = lambda images: np.mean(np.argmax(np.asarray(run.pixel_logits_fn()(images)), -1) == y)
    assert acc(adv) < acc(x)


def test_every_output_of_a_run(run_dir, tmp_path):
    other = tmp_path / "other_run"  # a second run for the learning curves: the same metrics
    other.mkdir()
    shutil.copy(run_dir / "metrics.jsonl", other / "metrics.jsonl")
    out = tmp_path / "out"
    proc = visualize(f"--workdir={run_dir}", f"--workdir={other}", f"--what={','.join(WHATS)}",
                     f"--out={out}", "--steps=20", "--max_examples=100", "--num=3",
                     "--epsilons=0,0.1,0.3")
    assert proc.returncode == 0, proc.stderr
    # Progress of the long steps: every chunk of activation maximisation, every attack and eps.
    assert "activation_max: step 20/20" in proc.stdout
    for attack in ("fgsm", "pgd"):
        for eps in ("0", "0.1", "0.3"):
            assert f"adversarial: {attack} eps {eps}/1: accuracy" in proc.stdout
    for name in PICTURES:
        assert_png(out / f"{name}.png")
    summary = (out / "summary.md").read_text()
    assert "| Conv_0 | conv | 8x8x32 | 288 | 320 |" in summary and "53,002" in summary
    # By hand: 3x3 conv 3, 2x2/2 pool 4 (jump 2), 3x3 conv 4 + 2 x 2 = 8, pool 8 + 2 = 10.
    fields = (out / "receptive_field.md").read_text()
    assert "Network receptive field (layer max_pool2): 10x10, jump 4" in fields
    assert "| eps (of [0, 1]) | fgsm | pgd |" in (out / "adversarial.md").read_text()


def test_any_registered_model_without_a_run(tmp_path):
    proc = visualize("--model=vgg16", "--what=summary,receptive_field", f"--out={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    assert "138,357,544" in (tmp_path / "summary.md").read_text()
    assert "(layer max_pool5): 212x212, jump 32, padding 90" in (tmp_path / "receptive_field.md").read_text()


def test_bad_requests_fail_clearly(tmp_path):
    proc = visualize("--model=vgg16", "--what=summary,filtres", f"--out={tmp_path}")
    assert proc.returncode == 2 and "unknown --what ['filtres']" in proc.stderr
    with pytest.raises(ValueError, match="config.json"):
        load_run(tmp_path)
