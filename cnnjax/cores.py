"""The CPU cores this process was given: SLURM's --cpus-per-task when set (SLURM_CPUS_PER_TASK),
else its CPU affinity (`taskset`, a cgroup's cpuset, or a sweep worker's share of the cores)."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """How many cores this process may use (at least 1)."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores or 1)
