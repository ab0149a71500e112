"""The one shard_map call of every layer that maps a function over devices (the device
pipeline's per-shard mixing, the train and eval steps' per-device model), below both of them;
and the scope that tells the ops inside such a function that the batch is split over devices."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import jax
from jax.sharding import Mesh

# A JAX user context (like the kernels switch): its value is part of jit's cache key, so a jitted
# function called inside and outside the block traces twice instead of reusing the other trace.
_batch_axis = jax.make_user_context(default_value=None)


def shard_map(f: Callable, mesh: Mesh, in_specs, out_specs) -> Callable:
    """jax.shard_map without its replication check: the callers pmean by hand or keep their
    outputs sharded."""
    return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)


@contextlib.contextmanager
def batch_split_over(axis_name: str) -> Iterator[None]:
    """Within the block, ops traced inside a shard_map over `axis_name` treat axis 0 of their
    inputs as this device's equal share of a batch split over that mapped axis, so they compute
    what they would on the whole batch: `ops.batch_norm` synchronises its statistics (one
    collective each way) and `ops.dropout` keeps this device's rows of the whole batch's mask.
    Read when a function is traced, and part of jit's cache key (like the kernels switch)."""
    if not isinstance(axis_name, str) or not axis_name:
        raise ValueError(f"batch_split_over needs a mesh axis name, got {axis_name!r}")
    with _batch_axis(axis_name):
        yield


def batch_axis() -> str | None:
    """The mapped axis the batch is split over (`batch_split_over`), or None."""
    return _batch_axis.value
