"""The one shard_map call of every layer that maps a function over devices (the device
pipeline's per-shard mixing, the train step's per-device statistics), below both of them."""

from __future__ import annotations

from collections.abc import Callable

import jax
from jax.sharding import Mesh


def shard_map(f: Callable, mesh: Mesh, in_specs, out_specs) -> Callable:
    """jax.shard_map without its replication check: the callers pmean by hand or keep their
    outputs sharded."""
    return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
