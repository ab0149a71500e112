"""Exact resume: a launch.py run killed (SIGKILL at a checkpoint, or SIGTERM) and relaunched with
the same command ends bit-identical to an uninterrupted run: parameters and eval lines."""

import pathlib
import signal
import subprocess
import time

import numpy as np
import pytest

import train_helpers as th

# Frequent checkpoints and evals so the kill lands mid-run with work after it.
FLAGS = ("--config.checkpoint_every_steps=6", "--config.eval_every_steps=11",
         "--config.log_every_steps=5")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    th.run(workdir, *FLAGS)
    return workdir


def _wait_for_checkpoint(workdir: pathlib.Path, proc: subprocess.Popen, step: int) -> None:
    deadline = time.time() + 300
    while not (workdir / "checkpoints" / str(step)).is_dir():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)


def _assert_same_run(workdir, reference):
    assert th.eval_lines(workdir) == th.eval_lines(reference)  # bit for bit: exact floats
    got, want = th.flat(th.final_params(workdir)), th.flat(th.final_params(reference))
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_sigkill_after_a_checkpoint_then_relaunch(reference, tmp_path):
    proc = subprocess.Popen(th.launch_cmd(tmp_path, *FLAGS), env=th.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    _wait_for_checkpoint(tmp_path, proc, 12)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out = th.run(tmp_path, *FLAGS).stdout
    assert "resuming at step" in out
    _assert_same_run(tmp_path, reference)


def test_sigterm_saves_at_a_step_boundary_and_exits_143(reference, tmp_path):
    proc = subprocess.Popen(th.launch_cmd(tmp_path, *FLAGS), env=th.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    _wait_for_checkpoint(tmp_path, proc, 6)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before SIGTERM arrived")  # a 44-step run on a fast machine
    assert proc.returncode == 143, out
    assert "SIGTERM: saved a checkpoint at step" in out
    out = th.run(tmp_path, *FLAGS).stdout
    assert "resuming at step" in out
    _assert_same_run(tmp_path, reference)


def test_relaunching_a_finished_run_changes_nothing(reference, tmp_path):
    th.run(tmp_path, *FLAGS)
    before = th.eval_lines(tmp_path)
    th.run(tmp_path, *FLAGS)
    assert th.eval_lines(tmp_path) == before
