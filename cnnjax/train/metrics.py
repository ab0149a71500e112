"""Where metrics go: WORKDIR/metrics.jsonl, TensorBoard event files, and the console.

Each metrics.jsonl line is one JSON object with `step`, `split` ("train" or "eval") and values.
Only process 0 writes. On resume, lines past the restored step (written by the interrupted run
after its last checkpoint) are dropped, because the resumed run writes them again identically.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time
from collections.abc import Callable
from typing import Any

import jax


def read_jsonl(path: pathlib.Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl; a torn last line (killed mid-write) is skipped."""
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


class MetricsWriter:
    def __init__(self, workdir: pathlib.Path, resume_step: int, enabled: bool):
        self.enabled = enabled
        self.path = workdir / "metrics.jsonl"
        self._tb = None
        if not enabled:
            return
        kept = [r for r in read_jsonl(self.path) if r["step"] <= resume_step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        from tensorboardX import SummaryWriter
        # purge_step discards events the interrupted run logged past the checkpoint.
        self._tb = SummaryWriter(str(workdir / "tensorboard"), purge_step=resume_step or None)

    def write(self, step: int, split: str, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, "split": split, **{k: float(v) for k, v in values.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for k, v in values.items():
            self._tb.add_scalar(f"{split}/{k}", float(v), step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


class TrainTimer:
    """Seconds spent training, for images/s: `pause(state)` before evaluating or checkpointing,
    `resume()` after. The first window after a (re)start includes compilation."""

    def __init__(self, step: int, clock: Callable[[], float] | None = None):
        self._clock, self._step, self._seconds = clock or time.perf_counter, step, 0.0
        self._since: float | None = self._clock()

    def pause(self, ready: Any = None) -> None:
        """Stops the clock once `ready` (the train state) is computed: the steps still queued
        on the device are training time."""
        if self._since is not None:
            jax.block_until_ready(ready)
            self._seconds += self._clock() - self._since
            self._since = None

    def resume(self) -> None:
        if self._since is None:
            self._since = self._clock()

    def images_per_sec(self, step: int, batch_size: int) -> float:
        """Images per training second since the last call (or the start), up to `step`, whose
        metrics were just fetched (so the step has finished)."""
        running = self._since is not None
        self.pause()
        rate = (step - self._step) * batch_size / max(self._seconds, 1e-9)
        self._step, self._seconds = step, 0.0
        if running:
            self.resume()
        return rate


class Progress:
    """A progress line a person can follow: step, loss, accuracy, images/s, ETA."""

    def __init__(self, start_step: int, total_steps: int, enabled: bool):
        self.first, self.total, self.enabled = start_step, total_steps, enabled
        self.start = time.time()

    def train(self, step: int, m: dict[str, float]) -> None:
        if not self.enabled:
            return
        done = max(step - self.first, 1)  # steps run by this process, not before a resume
        eta = (time.time() - self.start) / done * (self.total - step)
        print(f"step {step:>7}/{self.total} | loss {m['loss']:.4f} | acc {m['accuracy']:.3f} | "
              f"lr {m['learning_rate']:.3g} | {m['images_per_sec']:,.0f} img/s | "
              f"ETA {time.strftime('%H:%M:%S', time.gmtime(max(eta, 0)))}", flush=True)

    def eval(self, step: int, epoch: float, m: dict[str, float]) -> None:
        if not self.enabled:
            return
        top5 = f" | top-5 {m['top5_accuracy']:.4f}" if "top5_accuracy" in m else ""
        print(f"eval  step {step} (epoch {epoch:.1f}) | loss {m['loss']:.4f} | "
              f"top-1 {m['accuracy']:.4f}{top5}", file=sys.stdout, flush=True)
