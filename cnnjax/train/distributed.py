"""Multi-process start-up (`jax.distributed.initialize()` when a cluster is named) and the
preemption notice the training loop polls at every step boundary.

A cluster is named by SLURM (a job step with more than one task: JAX reads SLURM's environment)
or explicitly by flags/environment (coordinator address, process count and id), as for two local
processes on 127.0.0.1. On CPU, cross-process collectives go through gloo.
"""

from __future__ import annotations

import os
import signal

import jax
from jax.experimental import multihost_utils


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


class PreemptionNotice:
    """Whether the loop must checkpoint and stop at this step: the cluster asked (SIGTERM) or, in
    a one-process run, the user pressed Ctrl-C (SIGINT).

    One process: a handler records the signal, read at the next step boundary (`reached`); a
    second Ctrl-C raises KeyboardInterrupt at once, without waiting for the step.
    Several processes: JAX's preemption sync manager, which jax.distributed starts. Its notifier
    catches SIGTERM on any process, the coordination service tells the others and they agree on
    one step every process reaches (the largest step any has announced, plus one), so all save
    the same checkpoint. Polling it is a local read: no device work and no collective per step,
    unlike gathering every process's flag (process_allgather) at every step, which is a
    device-to-host round trip that stalls the pipeline of queued steps. No Python handler is
    installed then, since it would replace the notifier's (Ctrl-C keeps Python's default).
    """

    _SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signal: signal.Signals | None = None  # the first signal received
        self._multi_process = jax.process_count() > 1
        if not self._multi_process:
            self._previous = {s: signal.signal(s, self._handle) for s in self._SIGNALS}

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signal = self.signal or signal.Signals(signum)

    def reached(self, step: int) -> bool:
        """True at the step where every process must save and stop; call at every step."""
        if self._multi_process and multihost_utils.reached_preemption_sync_point(step):
            self.signal = signal.SIGTERM  # the only signal the notifier catches
        return self.signal is not None

    def restore(self) -> None:
        """Puts back the handlers that were there before (one process)."""
        if not self._multi_process:
            for s, handler in self._previous.items():
                signal.signal(s, handler)
