"""Exact resume: a launch.py run killed (SIGKILL at a checkpoint, or SIGTERM) and relaunched with
the same command ends bit-identical to an uninterrupted run: parameters and eval lines."""

import pathlib
import re
import signal
import subprocess

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


def _assert_same_run(workdir, reference):
    assert th.eval_lines(workdir) == th.eval_lines(reference)  # bit for bit: exact floats
    got, want = th.flat(th.final_params(workdir)), th.flat(th.final_params(reference))
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_sigkill_after_a_checkpoint_then_relaunch(reference, tmp_path):
    proc = subprocess.Popen(th.launch_cmd(tmp_path, *FLAGS), env=th.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    th.wait_for_checkpoint(tmp_path, at_least=12, procs=[proc], timeout=300)
    proc.send_signal(signal.SIGKILL)
    # The kill landed on a running process (a run that had already finished exits 0), and the
    # relaunch resumes from a checkpoint before the end, so it has steps left to redo.
    assert proc.wait() == -signal.SIGKILL
    out = th.run(tmp_path, *FLAGS).stdout
    resumed = re.search(r": (\d+) steps of .*resuming at step (\d+)", out)
    assert resumed, out
    assert 12 <= int(resumed[2]) < int(resumed[1]), resumed[0]
    _assert_same_run(tmp_path, reference)


def test_sigterm_saves_at_a_step_boundary_and_exits_143(tmp_path):
    # 10 epochs (220 steps): the signal sent at the step-6 checkpoint lands with ~200 steps to go
    # even on a fast machine, so a run exiting 0 is a handler that swallowed SIGTERM: a failure.
    flags = (*FLAGS, "--config.num_epochs=10")
    reference = tmp_path / "uninterrupted"
    th.run(reference, *flags)
    workdir = tmp_path / "preempted"
    proc = subprocess.Popen(th.launch_cmd(workdir, *flags), env=th.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    th.wait_for_checkpoint(workdir, procs=[proc], timeout=300)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    assert "SIGTERM: saved a checkpoint at step" in out
    out = th.run(workdir, *flags).stdout
    assert "resuming at step" in out
    _assert_same_run(workdir, reference)


def _files(path: pathlib.Path) -> dict[str, bytes]:
    return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}


def test_corrupt_latest_checkpoint_is_skipped_kept_and_the_run_finishes_from_the_older_one(
        reference, tmp_path):
    # A checkpoint every step: asynchronous writes follow one another, so the SIGKILL most
    # likely lands in one (its temporary directory, which Orbax ignores, stays behind).
    flags = (*FLAGS, "--config.checkpoint_every_steps=1")
    proc = subprocess.Popen(th.launch_cmd(tmp_path, *flags), env=th.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    th.wait_for_checkpoint(tmp_path, at_least=12, procs=[proc], timeout=300)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # it landed on a running process, with saves to come
    root = tmp_path / "checkpoints"
    steps = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit())
    latest, older = steps[-1], steps[-2]
    # Damage the latest as a full disk would: truncate its data files and its array metadata.
    bad = root / str(latest)
    for f in [*(bad / "default").rglob("d/*"), bad / "default" / "_METADATA"]:
        f.write_bytes(f.read_bytes()[:f.stat().st_size // 2])
    damaged = _files(bad)

    proc = th.run(tmp_path, *flags)
    warnings = [l for l in proc.stderr.splitlines() if l.startswith("warning:")]
    assert len(warnings) == 1 and f"checkpoint of step {latest} does not read" in warnings[0]
    assert f"using step {older}" in warnings[0] and "Traceback" not in proc.stderr
    assert f"resuming at step {older}" in proc.stdout
    _assert_same_run(tmp_path, reference)
    # The damaged checkpoint is on disk byte for byte, untouched by 30 later saves and retention.
    assert _files(tmp_path / "checkpoints_unreadable" / str(latest)) == damaged


def test_eval_skips_a_corrupt_latest_checkpoint_without_moving_it(reference, tmp_path):
    import shutil

    shutil.copytree(reference, tmp_path, dirs_exist_ok=True)
    root = tmp_path / "checkpoints"
    older, latest = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit())[-2:]
    (root / str(latest) / "default" / "_METADATA").write_text("")  # "Expecting value: line 1"
    proc = th.run(tmp_path, "--mode=eval", *FLAGS)
    assert f"checkpoint of step {latest} does not read" in proc.stderr
    assert f"eval of step {older}:" in proc.stdout and (tmp_path / f"eval_step_{older}.json").is_file()
    assert (root / str(latest) / "default" / "_METADATA").is_file()  # left where it was


def test_no_readable_checkpoint_is_one_line_and_moves_nothing(reference, tmp_path):
    import shutil

    shutil.copytree(reference, tmp_path, dirs_exist_ok=True)
    root = tmp_path / "checkpoints"
    steps = sorted(p.name for p in root.iterdir() if p.name.isdigit())
    for step in steps:
        (root / step / "default" / "_METADATA").write_text("")
    proc = th.run(tmp_path, *FLAGS, check=False)
    assert proc.returncode == 2 and "no checkpoint in" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert sorted(p.name for p in root.iterdir() if p.name.isdigit()) == steps
    assert not (tmp_path / "checkpoints_unreadable").exists()


def test_relaunching_a_finished_run_changes_nothing(reference, tmp_path):
    th.run(tmp_path, *FLAGS)
    before = th.eval_lines(tmp_path)
    th.run(tmp_path, *FLAGS)
    assert th.eval_lines(tmp_path) == before
