"""Orbax checkpoints of the TrainState under WORKDIR/checkpoints.

Keeps the last `keep` checkpoints plus the best by eval accuracy. Saves are asynchronous; Orbax
writes into a temporary directory and renames it when complete, so a run killed mid-save never
leaves a half-written checkpoint as the latest. A checkpoint that is damaged anyway (a file
truncated by a full disk, a filesystem without atomic renames) is skipped on restore: the newest
checkpoint that reads is used, and in training the damaged one is moved, intact as found, to
WORKDIR/checkpoints_unreadable/<step>, out of reach of Orbax's retention policy and of the later
save of the same step.
"""

from __future__ import annotations

import pathlib
import sys

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from cnnjax.train.state import TrainState

UNREADABLE_DIR = "checkpoints_unreadable"


def _reason(error: Exception) -> str:
    """The first line of an error, without TensorStore's spec dump, at most 200 characters."""
    text = str(error).split(" [tensorstore_spec")[0].strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {first[:200]}"


class Checkpointer:
    def __init__(self, workdir: pathlib.Path, keep: int):
        policy = ocp.checkpoint_managers.AnyPreservationPolicy([
            ocp.checkpoint_managers.LatestN(keep),
            ocp.checkpoint_managers.BestN(get_metric_fn=lambda m: m["accuracy"], n=1,
                                          reverse=False, keep_checkpoints_without_metrics=False),
        ])
        options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=True)
        self.workdir = pathlib.Path(workdir)
        self.manager = ocp.CheckpointManager((self.workdir / "checkpoints").resolve(),
                                             options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, state: TrainState, eval_metrics: dict | None = None) -> None:
        step = int(jax.device_get(state.step))
        if step in self.manager.all_steps():
            return
        self.manager.save(step, args=ocp.args.StandardSave(state),
                          metrics={"accuracy": float(eval_metrics["accuracy"])} if eval_metrics else None)

    def restore(self, abstract_state: TrainState, step: int) -> TrainState:
        """Checkpoint `step`; raises whatever Orbax raises when it does not read."""
        return self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

    def restore_newest_readable(self, abstract_state: TrainState,
                                set_aside: bool = False) -> TrainState | None:
        """The newest checkpoint that reads, or None when there is none.

        Each checkpoint newer than it that fails to read is reported on stderr in one line (its
        step and the error). With `set_aside` (training, which saves again) those are moved to
        WORKDIR/checkpoints_unreadable/ so that neither retention nor a new save of the same
        step touches them; nothing is ever deleted. When no checkpoint reads (a config that
        does not match the run, rather than damage), nothing is moved and ValueError names the
        newest one's error.
        """
        failed: list[tuple[int, str]] = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                state = self.restore(abstract_state, step)
            except Exception as e:  # any failure to read: Orbax, TensorStore and JSON raise many types
                failed.append((step, _reason(e)))
                continue
            for bad, reason in failed:
                where = self._set_aside(bad) if set_aside else None
                if jax.process_index() == 0:
                    kept = f"moved to {where}" if where else "left in place"
                    print(f"warning: checkpoint of step {bad} does not read ({reason}); using "
                          f"step {step} instead; the unreadable one is kept, {kept}",
                          file=sys.stderr, flush=True)
            if failed and set_aside:
                if jax.process_count() > 1:
                    multihost_utils.sync_global_devices("cnnjax_checkpoints_set_aside")
                self.manager.reload()
            return state
        if failed:
            step, reason = failed[0]
            raise ValueError(f"no checkpoint in {str(self.workdir / 'checkpoints')!r} reads "
                             f"(newest, step {step}: {reason}); is this the config of the run "
                             f"that wrote them? Nothing was changed")
        return None

    def _set_aside(self, step: int) -> pathlib.Path:
        """Moves checkpoint `step` to WORKDIR/checkpoints_unreadable/<step>[.N]; returns where."""
        target = self.workdir / UNREADABLE_DIR / str(step)
        suffix = 1
        while target.exists():
            suffix += 1
            target = self.workdir / UNREADABLE_DIR / f"{step}.{suffix}"
        if jax.process_index() == 0:
            target.parent.mkdir(parents=True, exist_ok=True)
            (self.workdir / "checkpoints" / str(step)).rename(target)
        return target

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
