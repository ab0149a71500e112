"""Every picture is written as a valid, non-blank PNG (PIL reads it, its pixels vary)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnjax.analysis import plots


def assert_png(path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"), np.float64)
    assert pixels.shape[0] > 50 and pixels.shape[1] > 50 and pixels.std() > 0


RNG = np.random.default_rng(0)
IMAGES = RNG.random((3, 8, 8, 1)).astype(np.float32)
RGB = RNG.random((2, 16, 16, 3)).astype(np.float32)

CASES = {
    "filters_grey": lambda p: plots.filter_grid(RNG.normal(size=(3, 3, 1, 32)), p),
    "filters_rgb": lambda p: plots.filter_grid(RNG.normal(size=(11, 11, 3, 8)), p, "conv1"),
    "feature_maps": lambda p: plots.feature_maps(RNG.normal(size=(8, 8, 12)), p, IMAGES[0], "Conv_0"),
    "image_row": lambda p: plots.image_row(RGB, ["a", "b"], p, "activation maximisation"),
    "saliency": lambda p: plots.heatmaps(IMAGES, RNG.random((3, 8, 8)), ["1", "2", "3"], "saliency", p),
    "occlusion": lambda p: plots.heatmaps(IMAGES, RNG.normal(size=(3, 4, 4)), ["1", "2", "3"],
                                          "occlusion", p, diverging=True),
    "neighbours": lambda p: plots.neighbours(IMAGES[:2], np.stack([IMAGES] * 2), RNG.random((2, 3)), p,
                                             ["3", "7"]),
    "adversarial": lambda p: plots.adversarial_panel(IMAGES, [1, 2, 3], np.clip(IMAGES + 0.1, 0, 1),
                                                     [1, 2, 3], [0.9, 0.8, 0.7], [4, 5, 6],
                                                     [0.6, 0.5, 0.4], 0.1, p),
    "accuracy_vs_eps": lambda p: plots.accuracy_vs_eps([0, 0.1, 0.2], {"fgsm": [0.9, 0.5, 0.2],
                                                                        "pgd": [0.9, 0.3, 0.0]}, p),
    "equivariance": lambda p: plots.equivariance(
        {"shift": np.arange(-2, 3), "map_change": RNG.random(5), "pooled_change": RNG.random(5),
         "aligned_change": np.array([0.1, np.nan, 0.0, np.nan, 0.1]), "jump": np.array(2)}, "pool", p),
    "curves": lambda p: plots.learning_curves(
        {"a": [{"step": s, "split": sp, "accuracy": 0.5 + s / 40} for s in (5, 10, 15)
               for sp in ("train", "eval")], "b": [{"step": 10, "split": "eval", "accuracy": 0.7}]}, p),
}


@pytest.mark.parametrize("name", list(CASES))
def test_picture_is_a_valid_nonblank_png(name, tmp_path):
    path = CASES[name](tmp_path / "sub" / f"{name}.png")
    assert path == tmp_path / "sub" / f"{name}.png"
    assert_png(path)


def test_bad_shapes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="kernel must be"):
        plots.filter_grid(np.zeros((3, 3, 4)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="maps must be"):
        plots.feature_maps(np.zeros((8, 8)), tmp_path / "x.png")
