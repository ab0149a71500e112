"""Which pixels a prediction depends on: saliency (input gradients) and occlusion sensitivity.

`logits_fn` maps images (N, H, W, C) to logits (N, K), e.g.
`lambda x: model.apply(variables, x, train=False)`. `target` is the class to explain per
image, (N,) int; None takes the predicted class.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

LogitsFn = Callable[[jax.Array], jax.Array]


def _targets(logits_fn: LogitsFn, x: jax.Array, target) -> jax.Array:
    if target is None:
        return jnp.argmax(logits_fn(x), axis=-1)
    target = jnp.asarray(target)
    if target.shape != (x.shape[0],):
        raise ValueError(f"target must hold one class per image, shape ({x.shape[0]},), got "
                         f"{tuple(target.shape)}")
    return target


def saliency(logits_fn: LogitsFn, x: jax.Array, target=None) -> jax.Array:
    """Simonyan et al. (2014): |d logit_target / d x|, max over channels: (N, H, W)."""
    x = jnp.asarray(x)
    target = _targets(logits_fn, x, target)

    def score(x):
        logits = logits_fn(x)
        return jnp.take_along_axis(logits, target[:, None], axis=1).sum()

    return jnp.abs(jax.jit(jax.grad(score))(x)).max(axis=-1)


def occlusion(logits_fn: LogitsFn, x: jax.Array, target=None, *, patch: int = 3, stride: int = 1,
              fill: float = 0.0, chunk: int = 64) -> np.ndarray:
    """Zeiler & Fergus (2014) occlusion sensitivity: the drop in the target class's probability
    when a patch x patch square is set to `fill`, for every patch position.

    Returns (N, P_h, P_w) with P = (H - patch) // stride + 1; entry (i, j) is the drop when the
    square with top-left corner (i * stride, j * stride) is occluded (positive: the prediction
    needed those pixels). Positions are evaluated `chunk` at a time.
    """
    x = jnp.asarray(x)
    n, h, w, _ = x.shape
    if not 1 <= patch <= min(h, w) or stride < 1:
        raise ValueError(f"patch must be in [1, {min(h, w)}] and stride >= 1, got patch={patch}, "
                         f"stride={stride}")
    target = _targets(logits_fn, x, target)
    rows, cols = np.arange(0, h - patch + 1, stride), np.arange(0, w - patch + 1, stride)
    corners = np.array([(r, c) for r in rows for c in cols])

    def prob(images):
        p = jax.nn.softmax(logits_fn(images), axis=-1)
        return jnp.take_along_axis(p, target[:, None], axis=1)[:, 0]

    @jax.jit
    def occluded_probs(corners):
        yy, xx = jnp.arange(h)[:, None], jnp.arange(w)[None, :]

        def one(corner):
            inside = ((yy >= corner[0]) & (yy < corner[0] + patch) &
                      (xx >= corner[1]) & (xx < corner[1] + patch))[None, :, :, None]
            return prob(jnp.where(inside, fill, x))

        return jax.lax.map(one, corners)

    base = np.asarray(prob(x))
    drops = []
    for start in range(0, len(corners), chunk):
        block = corners[start:start + chunk]
        padded = np.concatenate([block, np.repeat(block[:1], chunk - len(block), 0)])
        drops.append(base[None] - np.asarray(occluded_probs(jnp.asarray(padded)))[:len(block)])
    return np.concatenate(drops).T.reshape(n, len(rows), len(cols))
