"""Test-time augmentation views with the weights their logits are averaged with.

"mirror_translate" is airbench's level-2 TTA (Jordan 2024, sec. 3.7): the image and its mirror
weigh 1/4 each; the image translated by one pixel up-left and down-right (reflection padding,
as `cnnjax.data.flip_translate.translate_reflect`) and the mirrors of those 1/8 each. "mirror"
is the first two with 1/2 each.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

TTA_WEIGHTS = {"mirror": (0.5, 0.5),
               "mirror_translate": (0.25, 0.25, 0.125, 0.125, 0.125, 0.125)}


def tta_views(images: jax.Array, kind: str) -> jax.Array:
    """NHWC `images` -> views (N, V, H, W, C) in the order of TTA_WEIGHTS[kind]; view 0 is the
    image itself."""
    if kind not in TTA_WEIGHTS:
        raise ValueError(f"unknown test-time augmentation {kind!r}; expected one of "
                         f"{sorted(TTA_WEIGHTS)}")
    if images.ndim != 4:
        raise ValueError(f"test-time augmentation needs single images (N, H, W, C), got shape "
                         f"{tuple(images.shape)}")
    views = [images, images[:, :, ::-1]]
    if kind == "mirror_translate":
        h, w = images.shape[1:3]
        padded = jnp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
        for shifted in (padded[:, :h, :w], padded[:, 2:, 2:]):
            views += [shifted, shifted[:, :, ::-1]]
    return jnp.stack(views, axis=1)


def tta_weights(kind: str) -> np.ndarray:
    """(V,) float32 weights of the views of `tta_views(images, kind)`, summing to 1."""
    return np.asarray(TTA_WEIGHTS[kind], np.float32)


def average_logits(logits: jax.Array, kind: str) -> jax.Array:
    """(N, V, K) logits of the views -> (N, K), their weighted mean."""
    return jnp.einsum("nvk,v->nk", logits, jnp.asarray(tta_weights(kind)))
