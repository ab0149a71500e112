"""Multi-process start-up: `jax.distributed.initialize()` when a cluster is named.

A cluster is named by SLURM (a job step with more than one task: JAX reads SLURM's environment)
or explicitly by flags/environment (coordinator address, process count and id), as for two local
processes on 127.0.0.1. On CPU, cross-process collectives go through gloo.
"""

from __future__ import annotations

import os

import jax


def slurm_tasks() -> int:
    """Number of tasks in the current SLURM job step (1 outside SLURM)."""
    return int(os.environ.get("SLURM_STEP_NUM_TASKS", os.environ.get("SLURM_NTASKS", "1")))


def maybe_initialize(coordinator: str = "", num_processes: int = 0, process_id: int = -1) -> bool:
    """Initialises jax.distributed if a cluster is named; returns whether it did."""
    explicit = bool(coordinator) and num_processes > 1
    if not explicit and slurm_tasks() <= 1:
        return False
    # Must precede any backend initialisation, so it cannot ask which backend is in use; it only
    # affects the CPU client.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if explicit:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id)
    else:
        jax.distributed.initialize()
    return True
