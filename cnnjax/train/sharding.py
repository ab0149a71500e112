"""Data parallelism over every device of every process: a Mesh with one `data` axis.

Parameters and optimiser state are replicated; batches are sharded along `data`. Each process
holds only its own rows of the global batch and assembles the global array from them.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def make_mesh() -> Mesh:
    """A 1-D mesh over all devices of all processes."""
    return Mesh(np.asarray(jax.devices()), ("data",))


def shardings(mesh: Mesh) -> tuple[NamedSharding, NamedSharding]:
    """(data sharding for batches, replicated sharding for state and metrics)."""
    return NamedSharding(mesh, P("data")), NamedSharding(mesh, P())


def check_batch(batch_size: int, mesh: Mesh) -> None:
    """The global batch must split evenly over devices."""
    if batch_size % mesh.size:
        raise ValueError(f"batch_size {batch_size} is not divisible by the {mesh.size} devices")


def global_batch(local: dict[str, np.ndarray], data_sharding: NamedSharding) -> dict[str, jax.Array]:
    """Assembles this process's rows into global arrays sharded along `data`."""
    return {k: jax.make_array_from_process_local_data(data_sharding, v) for k, v in local.items()}
