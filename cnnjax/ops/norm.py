"""Normalisation and regularisation as pure functions (NHWC; channels on the last axis)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def batch_norm(x: jax.Array, scale: jax.Array | None, bias: jax.Array | None, *,
               mean: jax.Array | None = None, var: jax.Array | None = None, train: bool,
               eps: float = 1e-5, axis_name: str | None = None
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Batch normalisation over every axis but the last (Ioffe & Szegedy 2015).

    Args:
      x: (..., C) activations.
      scale, bias: (C,) affine parameters, or None for none.
      mean, var: (C,) running statistics; required when `train` is False.
      train: True normalises with the statistics of this batch; False with `mean`/`var`.
      axis_name: in `shard_map`/`pmap`, the mapped axis to average statistics over (synchronised BN).
    Returns:
      (y, mean, var): y like x; in training the (biased) batch statistics, computed in float32
      whatever x's dtype; in inference the given running statistics.
    """
    c = x.shape[-1]
    for name, p in (("scale", scale), ("bias", bias), ("mean", mean), ("var", var)):
        if p is not None and p.shape != (c,):
            raise ValueError(f"batch_norm {name} must have shape ({c},) for {c} channels, "
                             f"got {tuple(p.shape)}")
    x32 = x.astype(jnp.float32)
    if train:
        reduce = tuple(range(x.ndim - 1))
        mean = jnp.mean(x32, axis=reduce)
        if axis_name is not None:
            mean = lax.pmean(mean, axis_name)
        # Two passes (mean, then mean squared deviation) avoid E[x^2] - E[x]^2's cancellation.
        var = jnp.mean(jnp.square(x32 - mean), axis=reduce)
        if axis_name is not None:
            var = lax.pmean(var, axis_name)
    elif mean is None or var is None:
        raise ValueError("batch_norm with train=False needs the running mean and var")
    inv = lax.rsqrt(var.astype(jnp.float32) + eps)
    if scale is not None:
        inv = inv * scale.astype(jnp.float32)
    shift = -mean.astype(jnp.float32) * inv
    if bias is not None:
        shift = shift + bias.astype(jnp.float32)
    y = (x32 * inv + shift).astype(x.dtype)
    return y, mean, var


def dropout(key: jax.Array, x: jax.Array, rate: float, deterministic: bool) -> jax.Array:
    """Inverted dropout: zeroes each element with probability `rate`, scales the rest by
    1 / (1 - rate) so the expectation is unchanged; identity when `deterministic`."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate!r}")
    if deterministic or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def local_response_norm(x: jax.Array, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 2.0) -> jax.Array:
    """Local response normalisation across channels (Krizhevsky et al. 2012, sec. 3.3).

    b_c = a_c / (k + alpha * sum_{c' within size/2 of c} a_{c'}^2) ** beta, with the paper's
    constants as defaults. As in the paper (and unlike PyTorch, which divides alpha by `size`),
    alpha multiplies the plain sum.
    """
    if size < 1:
        raise ValueError(f"local_response_norm size must be >= 1, got {size!r}")
    sq = jnp.square(x.astype(jnp.float32))
    half = size // 2
    widths = ((0, 0),) * (x.ndim - 1) + ((half, size - 1 - half),)
    window = (1,) * (x.ndim - 1) + (size,)
    summed = lax.reduce_window(jnp.pad(sq, widths), 0.0, lax.add, window, (1,) * x.ndim, "VALID")
    return (x.astype(jnp.float32) / (k + alpha * summed) ** beta).astype(x.dtype)


def layer_norm(x: jax.Array, scale: jax.Array | None, bias: jax.Array | None, *,
               eps: float = 1e-6) -> jax.Array:
    """Normalises each example over its last axis (Ba et al. 2016): (..., D) -> (..., D);
    `scale`/`bias` are (D,) or None. Statistics in float32 whatever x's dtype."""
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * lax.rsqrt(var + eps)
    if scale is not None:
        y = y * scale.astype(jnp.float32)
    if bias is not None:
        y = y + bias.astype(jnp.float32)
    return y.astype(x.dtype)


def group_norm(x: jax.Array, num_groups: int, scale: jax.Array | None, bias: jax.Array | None,
               *, eps: float = 1e-5) -> jax.Array:
    """Group normalisation (Wu & He 2018): NHWC, statistics per example over H, W and each group
    of C / num_groups channels; `scale`/`bias` are (C,) or None."""
    n, *spatial, c = x.shape
    if num_groups < 1 or c % num_groups:
        raise ValueError(f"group_norm: num_groups={num_groups!r} must divide the {c} channels")
    g = x.astype(jnp.float32).reshape(n, *spatial, num_groups, c // num_groups)
    axes = tuple(range(1, g.ndim - 2)) + (g.ndim - 1,)
    mean = jnp.mean(g, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(g - mean), axis=axes, keepdims=True)
    y = ((g - mean) * lax.rsqrt(var + eps)).reshape(x.shape)
    if scale is not None:
        y = y * scale.astype(jnp.float32)
    if bias is not None:
        y = y + bias.astype(jnp.float32)
    return y.astype(x.dtype)


def weight_standardize(w: jax.Array, gain: jax.Array | None = None, *,
                       eps: float = 1e-6) -> jax.Array:
    """Scaled weight standardisation (Brock et al. 2021, NFNets, eq. 3).

    Each output filter of w (..., C_out) is standardised over all other axes (its fan-in N),
    then scaled by gain / sqrt(N): W_hat = gain * (W - mean) / (sqrt(var + eps) * sqrt(N)).
    `gain` is (C_out,) or None (1). The result preserves activation variance for a unit-variance
    input, which is what lets NFNets drop batch norm.
    """
    axes = tuple(range(w.ndim - 1))
    fan_in = 1
    for a in axes:
        fan_in *= w.shape[a]
    w32 = w.astype(jnp.float32)
    mean = jnp.mean(w32, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(w32 - mean), axis=axes, keepdims=True)
    scale = lax.rsqrt(var + eps) / jnp.sqrt(float(fan_in))
    if gain is not None:
        scale = scale * gain.astype(jnp.float32)
    return ((w32 - mean) * scale).astype(w.dtype)
