"""A small synthetic segmentation set: coloured shapes on a noisy background, with their masks.

For `unet` (per-pixel classification) without downloading a segmentation dataset. Each image
(S, S, 3) in [0, 1] has a background of uniform grey level plus Gaussian noise and 1-3 shapes,
each of one class, one random colour, a random position and size:
  class 1 disk (radius r), class 2 axis-aligned square (side 2r), class 3 triangle (apex up,
  base 2r, height 2r); class 0 is the background.
The mask (S, S) int32 holds each pixel's class; a later shape covers an earlier one in both the
image and the mask. A pixel belongs to a shape when its centre lies inside it (centres at
integer coordinates + 0.5). Train and test draw from different seeds; generation is
deterministic in (seed, split).
"""

from __future__ import annotations

import numpy as np

CLASSES = ("background", "disk", "square", "triangle")
NUM_EXAMPLES = {"train": 2048, "test": 512}


def shape_mask(kind: int, cy: float, cx: float, r: float, size: int) -> np.ndarray:
    """(size, size) bool: the pixels whose centres lie inside shape `kind` (1, 2 or 3) of
    centre (cy, cx) and radius (half-side, half-base) r."""
    y, x = np.mgrid[0:size, 0:size] + 0.5
    if kind == 1:
        return (y - cy) ** 2 + (x - cx) ** 2 <= r * r
    if kind == 2:
        return (np.abs(y - cy) <= r) & (np.abs(x - cx) <= r)
    if kind == 3:
        # Apex at (cy - r, cx), base from (cy + r, cx - r) to (cy + r, cx + r).
        depth = (y - (cy - r)) / (2 * r)  # 0 at the apex, 1 at the base
        return (depth >= 0) & (depth <= 1) & (np.abs(x - cx) <= depth * r)
    raise ValueError(f"shape kind must be 1 (disk), 2 (square) or 3 (triangle), got {kind!r}")


def shapes_arrays(num_examples: int, size: int, seed: int,
                  noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 (N, size, size, 3) in [0, 1], masks int32 (N, size, size))."""
    if size < 16:
        raise ValueError(f"shapes images need size >= 16, got {size}")
    if num_examples < 1:
        raise ValueError(f"num_examples must be >= 1, got {num_examples}")
    rng = np.random.default_rng(seed)
    images = np.empty((num_examples, size, size, 3), np.float32)
    masks = np.zeros((num_examples, size, size), np.int32)
    for i in range(num_examples):
        image = np.full((size, size, 3), rng.uniform(0.2, 0.8), np.float32)
        for _ in range(rng.integers(1, 4)):
            kind = int(rng.integers(1, len(CLASSES)))
            r = rng.uniform(size / 10, size / 4)
            cy, cx = rng.uniform(r, size - r, 2)
            inside = shape_mask(kind, cy, cx, r, size)
            image[inside] = rng.uniform(0.0, 1.0, 3)
            masks[i][inside] = kind
        image += rng.normal(0.0, noise, image.shape).astype(np.float32)
        images[i] = np.clip(image, 0.0, 1.0)
    return images, masks
