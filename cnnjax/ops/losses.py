"""Classification losses and metrics on logits (N, K) and integer labels (N,) or targets (N, K)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cnnjax.ops.activations import log_softmax
from cnnjax.ops.precision import compute_dtype


def _targets(labels: jax.Array, num_classes: int, dtype: jnp.dtype) -> jax.Array:
    if labels.ndim == 1:
        if not jnp.issubdtype(labels.dtype, jnp.integer):
            raise ValueError(f"1-D labels must be integer class ids, got dtype {labels.dtype}")
        return jax.nn.one_hot(labels, num_classes, dtype=dtype)
    if labels.ndim == 2 and labels.shape[-1] == num_classes:
        return labels.astype(dtype)
    raise ValueError(f"labels must be (N,) class ids or (N, {num_classes}) targets, got shape "
                     f"{tuple(labels.shape)}")


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array, *,
                          label_smoothing: float = 0.0) -> jax.Array:
    """Per-example cross-entropy -sum_k t_k log softmax(logits)_k, shape (N,).

    `labels` are class ids (N,) or target distributions (N, K) (mixup, cutmix). With
    `label_smoothing` = e the targets become (1 - e) t + e / K (Szegedy et al. 2016).
    Computed in float32 (float64 for float64 logits) through a max-shifted log-softmax, stable
    for large logits.
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, K), got shape {tuple(logits.shape)}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    k = logits.shape[-1]
    wide = compute_dtype(logits)
    t = _targets(labels, k, wide)
    if label_smoothing:
        t = (1.0 - label_smoothing) * t + label_smoothing / k
    return -jnp.sum(t * log_softmax(logits.astype(wide)), axis=-1)


def top_k_correct(logits: jax.Array, labels: jax.Array, k: int = 1) -> jax.Array:
    """Per example, whether the label is among the k highest logits, shape (N,) bool.

    The rule: correct iff the label's logit is finite and fewer than k other classes have a
    logit >= it or NaN. So a tie at the boundary counts against the prediction (all-equal
    logits score 0 for k < K, as a zero-initialised head must), a NaN logit beats the label,
    and a NaN or infinite label logit is never correct (an all-NaN row, a diverged model,
    scores 0). Soft targets (N, K) are scored against their dominant class.
    """
    if not 1 <= k <= logits.shape[-1]:
        raise ValueError(f"k must be in [1, {logits.shape[-1]}], got {k!r}")
    if labels.ndim == 2:
        labels = jnp.argmax(labels, axis=-1)
    label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    others = jnp.arange(logits.shape[-1]) != labels[:, None]
    beaten_by = others & ((logits >= label_logit) | jnp.isnan(logits))
    return (jnp.sum(beaten_by, axis=-1) < k) & jnp.isfinite(label_logit[:, 0])


def top_k_accuracy(logits: jax.Array, labels: jax.Array, k: int = 1,
                   mask: jax.Array | None = None) -> jax.Array:
    """Fraction of examples whose label is in the top k; `mask` (N,) bool excludes padding."""
    correct = top_k_correct(logits, labels, k).astype(jnp.float32)
    if mask is None:
        return jnp.mean(correct)
    mask = mask.astype(jnp.float32)
    return jnp.sum(correct * mask) / jnp.maximum(jnp.sum(mask), 1.0)
