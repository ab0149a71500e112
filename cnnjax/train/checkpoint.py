"""Orbax checkpoints of the TrainState under WORKDIR/checkpoints.

Keeps the last `keep` checkpoints plus the best by eval accuracy. Saves are asynchronous; Orbax
writes into a temporary directory and renames it when complete, so a run killed mid-save never
leaves a half-written checkpoint as the latest.
"""

from __future__ import annotations

import pathlib

import jax
import orbax.checkpoint as ocp

from cnnjax.train.state import TrainState


class Checkpointer:
    def __init__(self, workdir: pathlib.Path, keep: int):
        policy = ocp.checkpoint_managers.AnyPreservationPolicy([
            ocp.checkpoint_managers.LatestN(keep),
            ocp.checkpoint_managers.BestN(get_metric_fn=lambda m: m["accuracy"], n=1,
                                          reverse=False, keep_checkpoints_without_metrics=False),
        ])
        options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=True)
        self.manager = ocp.CheckpointManager((workdir / "checkpoints").resolve(), options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, state: TrainState, eval_metrics: dict | None = None) -> None:
        step = int(jax.device_get(state.step))
        if step in self.manager.all_steps():
            return
        self.manager.save(step, args=ocp.args.StandardSave(state),
                          metrics={"accuracy": float(eval_metrics["accuracy"])} if eval_metrics else None)

    def restore(self, abstract_state: TrainState, step: int | None = None) -> TrainState:
        step = self.latest_step() if step is None else step
        return self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
