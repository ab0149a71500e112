"""jax.shard_map across JAX versions, for every layer that maps a function over devices (the
device pipeline's per-shard mixing, the train step's per-device statistics)."""

from __future__ import annotations

from collections.abc import Callable

import jax
from jax.sharding import Mesh


def shard_map(f: Callable, mesh: Mesh, in_specs, out_specs) -> Callable:
    """jax.shard_map without its replication check (callers pmean by hand or keep outputs
    sharded); the check's flag is `check_vma` in newer JAX, `check_rep` in the experimental
    module of older ones."""
    try:
        return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    except (AttributeError, TypeError):
        from jax.experimental.shard_map import shard_map as legacy
        return legacy(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)
