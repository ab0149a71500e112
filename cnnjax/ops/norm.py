"""Normalisation and regularisation as pure functions (NHWC; channels on the last axis)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from cnnjax.ops import hooks, mapping
from cnnjax.ops.activations import get_activation
from cnnjax.ops.precision import compute_dtype


def _chan_merge(a, b):
    """Merges two partials (count, shift K, mean deviation d, M2) of disjoint sets of rows, whose
    mean is K + d and M2 the sum of squared deviations from it (Chan et al. 1979).

    Exact in form, so no E[x^2] - E[x]^2 cancellation; and the mean is kept as a data value K
    plus a small d, so the difference of two partial means, (K_b - K_a) + (d_b - d_a), is not
    limited by the float32 spacing of a large mean (|mean| = 1e4 is spaced 1e-3 apart, which
    would cost M2 that much relative to the spread of the partial means). An empty partial
    (count 0: the reduction's identity) leaves the other as it is.
    """
    (na, ka, da, qa), (nb, kb, db, qb) = a, b
    n = na + nb
    frac = nb / jnp.maximum(n, 1.0)  # counts are whole numbers, so n < 1 means both are empty
    delta = (kb - ka) + (db - da)
    merged = (n, ka, da + delta * frac, qa + qb + delta * delta * na * frac)
    return tuple(jnp.where(na > 0, m, v) for m, v in zip(merged, b))


def _merge(parts: tuple[jax.Array, ...], count: int, axis: int) -> tuple[jax.Array, ...]:
    """Merges the (shift, mean deviation, M2) partials stacked along `axis`, each of `count`
    rows, into one per remaining position, by one reduction with Chan's merge as combiner."""
    counts = jnp.full(parts[0].shape, count, parts[0].dtype)
    zero = jnp.zeros((), parts[0].dtype)
    return lax.reduce((counts, *parts), (zero,) * 4, _chan_merge, (axis,))[1:]


def _exchange(parts: jax.Array) -> jax.Array:
    """parts (B, 3, C), one row per block, as an array every device holds whole.

    Each row is placed on the diagonal of a (B, B, 3, C) array of zeros, which is summed over
    its first axis: with the blocks sharded, XLA partitions that sum into one all-reduce of the
    packed (B, 3, C) partials, exact (each element is one partial plus zeros). An all-gather
    would need a mesh axis name, which plain jit over a sharded batch does not give; unsharded
    the sum is a local copy."""
    b = parts.shape[0]
    own = lax.broadcasted_iota(jnp.int32, (b, b), 0) == lax.broadcasted_iota(jnp.int32, (b, b), 1)
    return jnp.sum(jnp.where(own[:, :, None, None], parts[:, None], 0.0), axis=0)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _moments(x3: jax.Array, blocks: int) -> tuple[jax.Array, jax.Array]:
    """(mean, biased variance) in `compute_dtype(x3)` (float32; float64 for float64 x3) over
    axes 0 and 1 of x3 (N, R, C): N groups (the
    examples: the axis a data-parallel step shards) of R rows, in `blocks` blocks (below).

    Built so that under jit, with the batch sharded, it costs one collective (an all-reduce of
    (B, 3, C) partials) and keeps the accuracy of a two-pass:
      1. each group's partial (shift K, mean deviation d, M2), by a two-pass within the group
         about its first row K (a data value, so the deviations are small and exact in float32);
      2. the groups merged within each of B = gcd(N, device count) blocks of consecutive
         groups, by one reduction with Chan's merge (`_chan_merge`). A batch sharded D ways
         with D dividing B (D divides N, and the device count whenever the mesh spans all the
         devices) holds whole blocks on each device, so stages 1 and 2 stay within a shard;
      3. the block partials, packed as (B, 3, C) (the counts are static), exchanged once
         (`_exchange`) and merged on every device by the same reduction: PyTorch
         SyncBatchNorm's scheme, with the spread of the block means taken as (K_b - K_a) + (d_b
         - d_a), not from float32 means spaced 1e-3 apart at |mean| = 1e4.
    On one device B = 1: stage 3 exchanges and merges nothing (the result is that of one
    reduction over the N group partials). A D that does not divide B (a mesh over a part of the
    devices) is still exact, at the cost of resharding collectives. The exchanged array holds
    B x 3 x C floats, one non-zero row per block, so it grows with the device count (8 devices,
    2,048 channels: 196 KB per batch norm; flax's one-pass all-reduces 2 x C): at hundreds of
    devices the shard_map path (`axis_name`, an all-gather of (devices, 3, C)) moves less.
    B is fixed when the function is traced: a step exported on a host with another device count
    keeps that host's B (still exact, with more collectives). Measured alternatives: one
    variadic reduction over the sharded groups partitions into one all-gather per quantity (4),
    a two-pass over the whole batch into 2 dependent all-reduces, and the one-pass E[x^2] -
    E[x]^2 (one all-reduce) loses every digit of the variance when |mean| >> std;
    jax.experimental.custom_partitioning reaches one all-gather but has no vmap rule.
    """
    n, rows, _ = x3.shape
    packed = _exchange(_block_partials(x3, blocks))
    return _merged_moments(packed, n // blocks * rows)


def _block_partials(x3: jax.Array, blocks: int) -> jax.Array:
    """Stages 1 and 2 of `_moments`: the (shift K, mean deviation d, M2) partials of `blocks`
    blocks of consecutive groups of x3 (N, R, C), packed as (blocks, 3, C), in
    `compute_dtype(x3)`."""
    n, rows, c = x3.shape
    wide = x3.astype(compute_dtype(x3))
    shift = wide[:, 0]
    dev = wide - shift[:, None]
    group_d = jnp.mean(dev, axis=1)
    group_m2 = jnp.sum(jnp.square(dev - group_d[:, None]), axis=1)
    per_block = n // blocks
    parts = _merge(tuple(p.reshape(blocks, per_block, c) for p in (shift, group_d, group_m2)),
                   rows, axis=1)
    return jnp.stack(parts, axis=1)


def _merged_moments(packed: jax.Array, count: int) -> tuple[jax.Array, jax.Array]:
    """(mean, biased variance) of the rows of packed (B, 3, C) partials of `count` rows each."""
    k, d, m2 = _merge((packed[:, 0], packed[:, 1], packed[:, 2]), count, axis=0)
    return k + d, m2 / (packed.shape[0] * count)


@_moments.defjvp
def _moments_jvp(blocks, primals, tangents):
    (x3,), (dx3,) = primals, tangents
    mean, var = _moments(x3, blocks)
    return (mean, var), _moments_tangent(x3, mean, dx3)


@jax.checkpoint
def _moments_tangent(x3: jax.Array, mean: jax.Array, dx3: jax.Array
                     ) -> tuple[jax.Array, jax.Array]:
    """The tangents (d mean, d var), (C,) in `compute_dtype(x3)`, of `_moments` at x3
    (N, R, C) along dx3: means over axes 0 and 1 of dx and 2 (x - mean) dx, linear in dx3.
    Reverse mode transposes it into d mean / dx = 1 / M, d var / dx = 2 (x - mean) / M,
    elementwise: no reduction and no collective in the backward pass. Under jax.checkpoint its
    residuals are x3 and mean, not an extra copy of x - mean per batch norm (recomputed in the
    backward pass)."""
    dx = dx3.astype(compute_dtype(x3))
    centred = x3.astype(dx.dtype) - mean
    return jnp.mean(dx, axis=(0, 1)), 2.0 * jnp.mean(centred * dx, axis=(0, 1))


def merge_across(parts: jax.Array, count: int, axis_name: str) -> tuple[jax.Array, jax.Array]:
    """The mean and biased variance, (C,) in the partials' dtype, of a batch split in equal
    shares over mapped axis `axis_name` (in shard_map), from this device's partials `parts`
    (3, C) (shift K, mean deviation d, M2 of its `count` rows; d = 0 and K the mean will do):
    one all-gather of (devices, 3, C), merged on every device by Chan's formula as within one
    program (see `_moments`), so every device holds the same bits. Not differentiable: callers
    define the backward pass (`_synced_moments`; the Pallas batch-norm kernel)."""
    return _merged_moments(lax.all_gather(parts, axis_name), count)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _synced_moments(x3: jax.Array, axis_name: str) -> tuple[jax.Array, jax.Array]:
    """`_moments` of the batch whose equal shares x3 (N, R, C) the devices of mapped axis
    `axis_name` hold: this device's partials, exchanged once (`merge_across`). The tangents are
    this device's `_moments_tangent` averaged over the devices (one all-reduce of (2, C));
    reverse mode transposes that into one all-reduce of the statistics' cotangents, since every
    device's loss depends on every device's rows through them."""
    return merge_across(_block_partials(x3, 1)[0], x3.shape[0] * x3.shape[1], axis_name)


@_synced_moments.defjvp
def _synced_moments_jvp(axis_name, primals, tangents):
    (x3,), (dx3,) = primals, tangents
    mean, var = _synced_moments(x3, axis_name)
    t_mean, t_var = lax.pmean(jnp.stack(_moments_tangent(x3, mean, dx3)), axis_name)
    return (mean, var), (t_mean, t_var)


def batch_moments(x: jax.Array, axis_name: str | None = None) -> tuple[jax.Array, jax.Array]:
    """Mean and biased variance, float32 (float64 for float64 x), over every axis of x (..., C)
    but the last, from the examples' two-pass partials merged with Chan's formula (see
    `_moments`). Under jit with the batch sharded the statistics are global and cost one
    all-reduce of packed (B, 3, C) partials, B = gcd(batch, device count); the backward pass is
    elementwise (no collective).

    In `shard_map`, `axis_name` (a mapped axis over which the batch is split in equal shares)
    merges the devices' partials by the same formula: one all-gather of (devices, 3, C)
    forward, one all-reduce of (2, C) backward (`_synced_moments`).
    """
    if x.ndim < 2:
        raise ValueError(f"batch statistics need a batch axis and a channel axis, got shape "
                         f"{tuple(x.shape)}")
    x3 = x.reshape(x.shape[0], -1, x.shape[-1])
    if axis_name is not None:
        return _synced_moments(x3, axis_name)
    # Blocks matter only where XLA partitions the batch (jit over a sharded batch).
    return _moments(x3, math.gcd(x.shape[0], jax.device_count()))


def batch_norm(x: jax.Array, scale: jax.Array | None, bias: jax.Array | None, *,
               mean: jax.Array | None = None, var: jax.Array | None = None, train: bool,
               eps: float = 1e-5, axis_name: str | None = None,
               residual: jax.Array | None = None, activation: str = "identity"
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """act(batch_norm(x) + residual): batch normalisation over every axis but the last (Ioffe &
    Szegedy 2015), then an optional residual add and activation, in one function.

    This is cnnjax's only batch norm: the Flax layer (cnnjax.nn.BatchNorm) and the pure residual
    blocks (cnnjax.ops.residual) call it, and in training it runs the fused kernel (Pallas on a
    GPU, the CPU extension's on an x86-64 CPU) when the kernels switch says so
    (cnnjax.kernels.dispatch; with `axis_name` too, inside shard_map).

    Args:
      x: (..., C) activations; the first axis is the batch (see `batch_moments`).
      scale, bias: (C,) affine parameters, or None for none.
      mean, var: (C,) running statistics; required when `train` is False.
      train: True normalises with the statistics of this batch; False with `mean`/`var`.
      axis_name: in `shard_map`, the mapped axis to merge statistics over (synchronised BN);
        None takes the axis of an enclosing `cnnjax.ops.mapping.batch_split_over` (the
        trainer's steps), if any. Under jit with a sharded batch no axis is needed: the
        statistics are global.
      residual: optional array of x's shape added after the affine map (a residual block's sum).
      activation: a name of ops.ACTIVATIONS applied last ("identity": none).
    Returns:
      (y, mean, var): y like x, computed in float32 (float64 for float64 x) and rounded once;
      in training the (biased) batch statistics in that dtype (float32 for bfloat16 x); in
      inference the given running statistics.
    """
    c = x.shape[-1]
    for name, p in (("scale", scale), ("bias", bias), ("mean", mean), ("var", var)):
        if p is not None and p.shape != (c,):
            raise ValueError(f"batch_norm {name} must have shape ({c},) for {c} channels, "
                             f"got {tuple(p.shape)}")
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"batch_norm residual must have x's shape {tuple(x.shape)}, "
                         f"got {tuple(residual.shape)}")
    act = get_activation(activation)
    if train:
        if axis_name is None:
            axis_name = mapping.batch_axis()
        fused = hooks.kernel("batch_norm")  # the kernels, when cnnjax.kernels is imported
        if fused is not None:
            out = fused(x, scale, bias, residual, activation, eps, axis_name)
            if out is not None:
                return out
        mean, var = batch_moments(x, axis_name)
    elif mean is None or var is None:
        raise ValueError("batch_norm with train=False needs the running mean and var")
    wide = compute_dtype(x)
    inv = lax.rsqrt(var.astype(wide) + eps)
    if scale is not None:
        inv = inv * scale.astype(wide)
    shift = -mean.astype(wide) * inv
    if bias is not None:
        shift = shift + bias.astype(wide)
    z = x.astype(wide) * inv + shift
    if residual is not None:
        z = z + residual.astype(wide)
    return act(z).astype(x.dtype), mean, var


def update_running_stats(running_mean: jax.Array, running_var: jax.Array, mean: jax.Array,
                         var: jax.Array, momentum: float) -> tuple[jax.Array, jax.Array]:
    """The running statistics after one training batch: running = momentum * running +
    (1 - momentum) * batch (Flax's convention; momentum 0.9 is PyTorch's 0.1). The variance is
    the biased batch variance, as Flax keeps it."""
    return (momentum * running_mean + (1.0 - momentum) * mean,
            momentum * running_var + (1.0 - momentum) * var)


def dropout(key: jax.Array, x: jax.Array, rate: float, deterministic: bool) -> jax.Array:
    """Inverted dropout: zeroes each element with probability `rate`, scales the rest by
    1 / (1 - rate) so the expectation is unchanged; identity when `deterministic`. Within
    `cnnjax.ops.mapping.batch_split_over` (x (n, ...) this device's share of the batch), the
    mask is this device's rows of the whole batch's: the same as on one device."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate!r}")
    if deterministic or rate == 0.0:
        return x
    axis = mapping.batch_axis()
    if axis is None:
        keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    else:
        # This device's rows of the whole batch's mask, so the masks do not depend on the device
        # count (the bits of a row depend on the key, the shape and the row's index only).
        n = x.shape[0]
        whole = jax.random.bernoulli(key, 1.0 - rate, (n * lax.axis_size(axis), *x.shape[1:]))
        keep = lax.dynamic_slice_in_dim(whole, lax.axis_index(axis) * n, n)
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
    sq = jnp.square(x.astype(compute_dtype(x)))
    half = size // 2
    widths = ((0, 0),) * (x.ndim - 1) + ((half, size - 1 - half),)
    window = (1,) * (x.ndim - 1) + (size,)
    summed = lax.reduce_window(jnp.pad(sq, widths), 0.0, lax.add, window, (1,) * x.ndim, "VALID")
    return (x.astype(sq.dtype) / (k + alpha * summed) ** beta).astype(x.dtype)


def layer_norm(x: jax.Array, scale: jax.Array | None, bias: jax.Array | None, *,
               eps: float = 1e-6) -> jax.Array:
    """Normalises each example over its last axis (Ba et al. 2016): (..., D) -> (..., D);
    `scale`/`bias` are (D,) or None. Statistics in float32 (float64 for float64 x)."""
    wide = x.astype(compute_dtype(x))
    mean = jnp.mean(wide, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(wide - mean), axis=-1, keepdims=True)
    y = (wide - mean) * lax.rsqrt(var + eps)
    if scale is not None:
        y = y * scale.astype(wide.dtype)
    if bias is not None:
        y = y + bias.astype(wide.dtype)
    return y.astype(x.dtype)


def group_norm(x: jax.Array, num_groups: int, scale: jax.Array | None, bias: jax.Array | None,
               *, eps: float = 1e-5) -> jax.Array:
    """Group normalisation (Wu & He 2018): NHWC, statistics per example over H, W and each group
    of C / num_groups channels; `scale`/`bias` are (C,) or None."""
    n, *spatial, c = x.shape
    if num_groups < 1 or c % num_groups:
        raise ValueError(f"group_norm: num_groups={num_groups!r} must divide the {c} channels")
    g = x.astype(compute_dtype(x)).reshape(n, *spatial, num_groups, c // num_groups)
    axes = tuple(range(1, g.ndim - 2)) + (g.ndim - 1,)
    mean = jnp.mean(g, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(g - mean), axis=axes, keepdims=True)
    y = ((g - mean) * lax.rsqrt(var + eps)).reshape(x.shape)
    if scale is not None:
        y = y * scale.astype(g.dtype)
    if bias is not None:
        y = y + bias.astype(g.dtype)
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
    wide = w.astype(compute_dtype(w))
    mean = jnp.mean(wide, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(wide - mean), axis=axes, keepdims=True)
    scale = lax.rsqrt(var + eps) / jnp.sqrt(float(fan_in))
    if gain is not None:
        scale = scale * gain.astype(wide.dtype)
    return ((wide - mean) * scale).astype(w.dtype)
