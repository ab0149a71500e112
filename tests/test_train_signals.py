"""Ctrl-C as a user meets it: the terminal signals SIGINT to the whole process group (launch.py
and its grain workers); the run saves a checkpoint at the next step boundary, says so in one
line and exits 130, with the workers stopped quietly; a second Ctrl-C stops at once."""

import os
import re
import signal
import subprocess
import time

import pytest

import data_files
import train_helpers as th
from cnnjax.data.prepare import prepare
from cnnjax.train.distributed import PreemptionNotice


@pytest.mark.slow  # two grain worker processes start; `make test-slow` runs it
def test_ctrl_c_with_grain_workers_saves_once_quietly_and_exits_130(tmp_path):
    data_files.write_idx_dataset(tmp_path / "src", n_train=128, n_test=16)
    prepare("mnist", tmp_path / "src", data_dir=str(tmp_path / "tfds"))
    workdir = tmp_path / "run"
    # 50 epochs of 2 steps: the signal sent at the step-2 checkpoint lands with ~98 steps to go,
    # so a run exiting 0 is a handler that swallowed the signal.
    flags = ("--config.dataset.name=mnist", f"--config.dataset.data_dir={tmp_path / 'tfds'}",
             "--config.num_epochs=50",  # grain workers: one per core (the default)
             "--config.checkpoint_every_steps=2", "--config.eval_every_steps=1000")
    proc = subprocess.Popen(th.launch_cmd(workdir, *flags), env=th.env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    th.wait_for_checkpoint(workdir, procs=[proc], timeout=300)
    os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C in a terminal: every process of the group
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    saved = re.findall(r"^Ctrl-C: saved a checkpoint at step (\d+); relaunch the same command "
                       r"to resume$", out, re.MULTILINE)
    assert len(saved) == 1, out
    step = int(saved[0])
    assert 2 <= step < 100 and (workdir / "checkpoints" / str(step)).is_dir()
    assert th.restore(workdir, step)["step"] == step
    # Nothing else on stderr: no traceback from the main process or the worker, no leak report.
    assert err.strip() == "", err


def test_a_second_ctrl_c_interrupts_at_once():
    before = signal.getsignal(signal.SIGINT)  # pytest-xdist's workers ignore SIGINT
    notice = PreemptionNotice()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # the handler runs in the main thread between bytecodes
        assert notice.reached(1) and notice.signal == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    finally:
        notice.restore()
    assert signal.getsignal(signal.SIGINT) is before
