"""Running launch.py as a real subprocess and reading back what it wrote."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import time
from collections.abc import Sequence

import numpy as np
import orbax.checkpoint as ocp

from conftest import REPO_ROOT

SMOKE = f"{REPO_ROOT / 'configs' / 'default.py'}:smoke"


def launch_cmd(workdir, *flags, config=SMOKE) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "launch.py"), f"--config={config}",
            f"--workdir={workdir}", *flags]


def env(devices: int = 1, xla_flags: str = "") -> dict[str, str]:
    """The environment of a CPU subprocess with `devices` host devices (and more XLA flags)."""
    e = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    e["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} {xla_flags}".strip()
    return e


def run(workdir, *flags, devices=1, config=SMOKE, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(launch_cmd(workdir, *flags, config=config), env=env(devices),
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"launch.py exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def wait_for_checkpoint(root: pathlib.Path, pattern: str = "checkpoints/*", *, at_least: int = 0,
                        procs: Sequence[subprocess.Popen] = (), timeout: float = 600,
                        poll: float = 0.05) -> pathlib.Path:
    """The first committed checkpoint at step >= at_least (a directory named by its step) seen
    under root/pattern while every one of procs still runs.

    Any step from at_least on counts, never one exact step: a run keeps only its last
    `keep_checkpoints`, so on a fast machine a given step can be written and deleted between two
    polls (a CI run lost a test to that)."""
    deadline = time.time() + timeout
    while True:
        done = [p for p in root.glob(pattern)
                if p.name.isdigit() and int(p.name) >= at_least and p.is_dir()]
        ended = [p for p in procs if p.poll() is not None]
        if done and not ended:
            return min(done, key=lambda p: int(p.name))
        if ended or time.time() > deadline:
            for p in procs:
                p.kill()  # a process left waiting for an ended peer would never exit
            why = (f"exited {ended[0].returncode} before a checkpoint:\n{ended[0].communicate()}"
                   if ended else f"no checkpoint under {root}/{pattern} in {timeout} s")
            raise AssertionError(why)
        time.sleep(poll)


def eval_lines(workdir) -> list[dict]:
    lines = pathlib.Path(workdir, "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == "eval"]


def train_losses(workdir) -> list[float]:
    lines = pathlib.Path(workdir, "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["split"] == "train"]


def restore(workdir, step=None) -> dict:
    """A checkpoint read with Orbax directly (no cnnjax code) into host NumPy arrays, whatever
    device topology saved it. `step` defaults to the latest."""
    import jax

    root = pathlib.Path(workdir, "checkpoints").resolve()
    if step is None:
        step = max(int(p.name) for p in root.iterdir() if p.name.isdigit())
    path = root / str(step) / "default"
    checkpointer = ocp.StandardCheckpointer()
    meta = checkpointer.metadata(path)
    meta = getattr(getattr(meta, "item_metadata", meta), "tree", getattr(meta, "item_metadata", meta))
    target = jax.tree_util.tree_map(lambda m: np.zeros(m.shape, m.dtype), meta)
    return checkpointer.restore(path, target)


def final_params(workdir) -> dict:
    return restore(workdir)["params"]


def flat(tree) -> dict[str, np.ndarray]:
    out = {}
    for path, leaf in _walk(tree, ()):
        out["/".join(path)] = np.asarray(leaf)
    return out


def _walk(tree, prefix):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _walk(v, prefix + (str(k),))
    else:
        yield prefix, tree


def fingerprints(stdout: str) -> list[str]:
    return re.findall(r"params fingerprint (\w+)", stdout)
