"""Data parallelism over every device of every process: a Mesh with one `data` axis.

Parameters and optimiser state are replicated; batches are sharded along `data`. Each process
holds only its own rows of the global batch and assembles the global array from them.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator

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


def prefetch_to_device(batches: Iterator[dict[str, np.ndarray]], data_sharding: NamedSharding,
                       depth: int = 2) -> Iterator[dict[str, jax.Array]]:
    """`batches` as global device arrays, `depth` batches ahead of the consumer.

    Transfers are asynchronous: a batch is sent while the steps before it run, so a step never
    waits for its own input to be copied (depth 2: one in flight, one ready).
    """
    if depth < 1:
        raise ValueError(f"prefetch depth must be >= 1, got {depth}")
    queue: collections.deque = collections.deque()
    try:
        for batch in batches:
            queue.append(global_batch(batch, data_sharding))
            if len(queue) > depth:
                yield queue.popleft()
        while queue:
            yield queue.popleft()
    finally:
        if hasattr(batches, "close"):
            batches.close()  # a grain stream stops its workers
