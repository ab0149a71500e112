"""Equivariance of convolutional feature maps and invariance of pooled features under shifts.

A convolution commutes with translation: shifting the input by s pixels shifts a layer's map by
s / jump units (jump = the layer's effective stride), up to what enters or leaves at the
borders. Striding breaks this for shifts that are not multiples of the jump, and global
average pooling turns equivariance into invariance. `shift_response` measures all three on
real images:

  map_change      ||F(T_s x) - F(x)|| / ||F(x)||: how much the raw map changes;
  aligned_change  the same after moving F(x) by s / jump units, on the columns both maps
                  cover (NaN when s is not a multiple of the jump): ~0 means equivariant;
  pooled_change   ||g(T_s x) - g(x)|| / ||g(x)|| with g the spatial mean of F: ~0 means
                  invariant.

T_s moves the image content s pixels right (s < 0: left), filling with zeros; norms are over
the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from cnnjax.analysis import graph
from cnnjax.analysis.features import layer_fn


def translate(x: np.ndarray, shift: int, axis: int = 2) -> np.ndarray:
    """x (N, H, W, C) with its content moved `shift` units along `axis` (2: right), zero-filled."""
    x = np.asarray(x)
    out = np.zeros_like(x)
    n = x.shape[axis]
    if abs(shift) >= n:
        return out
    src = [slice(None)] * x.ndim
    dst = [slice(None)] * x.ndim
    src[axis] = slice(max(-shift, 0), n - max(shift, 0))
    dst[axis] = slice(max(shift, 0), n - max(-shift, 0))
    out[tuple(dst)] = x[tuple(src)]
    return out


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def layer_jump(model, input_shape: Sequence[int], layer: str) -> int:
    """The effective stride along the width of `layer`'s output; ValueError unless it is a
    spatial map."""
    for row in graph.trace(model, input_shape):
        if row.name == layer:
            axes = [] if isinstance(row.field, str) else [a for a in row.field if a is not None and a.axis == 1]
            if not axes:
                raise ValueError(f"layer {layer!r} is not a spatial map (its field is "
                                 f"{row.field!r}); pick a conv or pooling layer")
            return axes[0].jump
    raise ValueError(f"unknown layer {layer!r}")


def shift_response(model, variables, images: np.ndarray, layer: str,
                   shifts: Sequence[int]) -> dict[str, np.ndarray]:
    """The three measures above for every horizontal shift in `shifts`, on `images`
    (N, H, W, C). Returns {"shift", "map_change", "aligned_change", "pooled_change"}, each
    (len(shifts),), and "jump" (the layer's effective stride)."""
    images = np.asarray(images, np.float32)
    jump = layer_jump(model, images.shape[1:], layer)
    fn = layer_fn(model, variables, [layer])
    base = np.asarray(fn(jnp.asarray(images))[layer])
    if base.ndim != 4:
        raise ValueError(f"layer {layer!r} output has shape {base.shape}; expected (N, h, w, C)")
    result = {k: [] for k in ("map_change", "aligned_change", "pooled_change")}
    for s in shifts:
        moved = np.asarray(fn(jnp.asarray(translate(images, s)))[layer])
        result["map_change"].append(_rel(moved, base))
        result["pooled_change"].append(_rel(moved.mean(axis=(1, 2)), base.mean(axis=(1, 2))))
        if s % jump:
            result["aligned_change"].append(np.nan)
        else:
            k, w = s // jump, base.shape[2]
            if abs(k) >= w:
                result["aligned_change"].append(np.nan)
                continue
            # Compare on the columns both maps cover: moved[:, :, j + k] vs base[:, :, j].
            cols = slice(max(-k, 0), w - max(k, 0))
            cols_moved = slice(max(k, 0), w - max(-k, 0))
            result["aligned_change"].append(_rel(moved[:, :, cols_moved], base[:, :, cols]))
    out = {k: np.array(v) for k, v in result.items()}
    out["shift"] = np.array(list(shifts))
    out["jump"] = np.array(jump)
    return out
