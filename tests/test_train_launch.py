"""launch.py's contract: outputs in the workdir, clear errors before anything is written."""

import json
import math
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import train_helpers as th
from conftest import REPO_ROOT


def test_workdir_outputs_and_eval_mode(tmp_path):
    out = th.run(tmp_path).stdout
    assert "done: test accuracy" in out and str(tmp_path) in out
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"]["name"] == "simple_cnn" and config["dataset"]["name"] == "digits"
    records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    evals = [r for r in records if r["split"] == "eval"]
    assert train and evals
    assert {"step", "split", "loss", "accuracy", "learning_rate", "images_per_sec"} <= set(train[0])
    assert {"step", "split", "loss", "accuracy", "top5_accuracy"} <= set(evals[-1])
    assert evals[-1]["step"] == 44  # 2 epochs of 1,437 // 64 = 22 steps
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    # --mode=eval restores the latest checkpoint and reproduces the final eval exactly.
    th.run(tmp_path, "--mode=eval")
    result = json.loads((tmp_path / "eval_step_44.json").read_text())
    assert result["accuracy"] == evals[-1]["accuracy"] and result["loss"] == evals[-1]["loss"]


def test_unknown_override_key_fails_before_writing(tmp_path):
    proc = th.run(tmp_path / "w", "--config.optimizer.lr=0.1", check=False)
    assert proc.returncode != 0 and "lr" in proc.stderr
    assert not (tmp_path / "w").exists()


def test_wrong_override_type_fails_before_writing(tmp_path):
    proc = th.run(tmp_path / "w", "--config.batch_size=big", check=False)
    assert proc.returncode != 0 and "batch_size" in proc.stderr
    assert not (tmp_path / "w").exists()


def test_unknown_model_and_dataset_list_what_exists(tmp_path):
    proc = th.run(tmp_path / "m", "--config.model.name=simple_cnm", check=False)
    assert proc.returncode == 2 and "simple_cnn" in proc.stderr and not (tmp_path / "m").exists()
    proc = th.run(tmp_path / "d", "--config.dataset.name=digitz", check=False)
    assert proc.returncode == 2 and "digits" in proc.stderr and not (tmp_path / "d").exists()


def test_workdir_of_another_run_is_refused_and_kept(tmp_path):
    th.run(tmp_path, "--config.num_epochs=1")
    before = (tmp_path / "metrics.jsonl").read_text()
    proc = th.run(tmp_path, "--config.dataset.name=synthetic", check=False)
    assert proc.returncode == 2 and "holds a run of dataset 'digits'" in proc.stderr
    assert (tmp_path / "metrics.jsonl").read_text() == before


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_good_checkpoint(tmp_path):
    """The loss of step s is the first non-finite one: the run exits 3 naming s, the checkpoint
    of step s - 1 (one per step here) is the latest on disk, restores with Orbax alone to finite
    parameters at step s - 1, and metrics.jsonl logs steps 1 .. s - 1 with finite losses."""
    proc = th.run(tmp_path, "--config.optimizer.learning_rate=1e12", "--config.checkpoint_every_steps=1",
                  "--config.log_every_steps=1", check=False)
    assert proc.returncode == 3, proc.stderr
    found = re.search(r"at step (\d+)", proc.stderr)
    assert found and "checkpoint" in proc.stderr, proc.stderr
    bad = int(found.group(1))
    assert bad >= 2  # the first loss comes from the finite initial parameters
    kept = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert kept and kept[-1] == bad - 1, (kept, bad)
    restored = th.restore(tmp_path, bad - 1)
    assert int(restored["step"]) == bad - 1
    leaves = list(th.flat(restored["params"]).values())
    assert leaves and all(np.all(np.isfinite(leaf)) for leaf in leaves)
    train = [r for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
             if r["split"] == "train"]
    assert [r["step"] for r in train] == list(range(1, bad))
    assert all(math.isfinite(r["loss"]) for r in train)


def test_host_and_device_augmentation_and_mixing_train(tmp_path):
    """Shifts by up to 1 pixel (the digits are 8x8 and not mirror-symmetric: no flips) and
    cutmix, on the host or on the device: both change what is trained on (the mixed targets keep
    the training loss well above a plain run's), they are the same augmentation in law (their
    loss curves agree within 0.1 at every logged step), and the model still learns."""
    th.run(tmp_path / "plain")
    plain = th.train_losses(tmp_path / "plain")
    curves = {}
    for where in ("host", "device"):
        th.run(tmp_path / where, "--config.dataset.augment=pad_crop",
               "--config.dataset.augment_pad=1",
               f"--config.dataset.augment_on={where}", "--config.dataset.mix=cutmix",
               "--config.dataset.mix_alpha=0.4")
        curves[where] = th.train_losses(tmp_path / where)
        assert len(curves[where]) == len(plain) and curves[where][-1] > plain[-1] + 0.5
        assert th.eval_lines(tmp_path / where)[-1]["accuracy"] > 0.45  # chance: 0.1
    np.testing.assert_allclose(curves["host"], curves["device"], atol=0.1)


def test_unknown_augmentation_or_mixing_fails_before_writing(tmp_path):
    proc = th.run(tmp_path / "a", "--config.dataset.augment=crop", check=False)
    assert proc.returncode == 2 and "unknown augmentation 'crop'" in proc.stderr
    proc = th.run(tmp_path / "m", "--config.dataset.mix=mixup", check=False)
    assert proc.returncode == 2 and "mix_alpha > 0" in proc.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "m").exists()


def test_normalisation_with_the_wrong_channel_count_fails_before_writing(tmp_path):
    proc = th.run(tmp_path / "n", "--config.dataset.mean=(0.5,0.5,0.5)",
                  "--config.dataset.std=(0.2,0.2,0.2)", check=False)
    assert proc.returncode == 2 and "3 values but the images have 1 channels" in proc.stderr
    assert not (tmp_path / "n").exists()


# Each bad input: (flags, config, a phrase naming the bad value). None for config: the smoke config.
_BAD_INPUTS = {
    "unknown config file": ((), "configs/no_such_config.py", "no_such_config.py' not found"),
    "unknown config file with an override": (("--config.seed=3",), "configs/no_such_config.py",
                                             "no_such_config.py' not found"),
    "bad config argument": ((), "configs/default.py:smok", "got 'smok'"),
    "misspelled override": (("--config.optimizer.learnig_rate=0.1",), None,
                            "no key 'learnig_rate'; did you mean 'learning_rate'"),
    "model keys of another model": (("--config.model.name=lenet5",), None,
                                    "does not take the config's model keys ['batch_norm', "
                                    "'dropout_rate']"),
    "dataset not prepared": (("--config.dataset.data_dir={tmp}/empty",),
                             "configs/lenet5_mnist.py", "dataset 'mnist' is not in"),
    "config file with a syntax error": ((), "{tmp}/broken.py",
                                        "cannot load --config={tmp}/broken.py: SyntaxError"),
}


def _assert_one_line_error(proc, phrase, status=2):
    assert proc.returncode == status, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr and phrase in lines[0], lines


@pytest.mark.parametrize("case", sorted(_BAD_INPUTS))
def test_bad_input_is_one_line_with_nothing_written(tmp_path, case):
    flags, config, phrase = _BAD_INPUTS[case]
    flags = [f.format(tmp=tmp_path) for f in flags]
    (tmp_path / "broken.py").write_text("def get_config(:\n    return None\n")
    config = str(REPO_ROOT / config.format(tmp=tmp_path)) if config else th.SMOKE
    proc = th.run(tmp_path / "w", *flags, config=config, check=False)
    _assert_one_line_error(proc, phrase.format(tmp=tmp_path))  # exit status 2: bad input
    assert not (tmp_path / "w").exists()


def test_debug_flag_keeps_the_traceback(tmp_path):
    proc = th.run(tmp_path / "w", "--config.model.name=lenet5", "--debug", check=False)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "batch_norm" in proc.stderr


def test_unwritable_workdir_is_one_line(tmp_path):
    # A file where the workdir's parent should be: writing fails for root too (unlike chmod).
    (tmp_path / "file").write_text("")
    proc = th.run(tmp_path / "file" / "w", check=False)
    _assert_one_line_error(proc, "cannot write to workdir", status=1)


def test_nan_stop_before_any_checkpoint_says_there_is_none(tmp_path):
    proc = th.run(tmp_path, "--config.optimizer.learning_rate=1e12", "--config.log_every_steps=1",
                  check=False)
    _assert_one_line_error(proc, "no checkpoint was saved before it", status=3)
    assert "None" not in proc.stderr


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 44-step smoke run, copied by each test that changes it."""
    workdir = tmp_path_factory.mktemp("finished")
    th.run(workdir)
    return workdir


def _copy(src, dst):
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return dst


def test_eval_with_the_config_of_another_model_is_one_line(finished, tmp_path):
    workdir = _copy(finished, tmp_path / "w")
    proc = th.run(workdir, "--mode=eval", "--config.model.batch_norm=True", check=False)
    assert proc.returncode == 2
    _assert_one_line_error(proc, "holds a run with different ['model']")
    assert not list(workdir.glob("eval_step_*.json"))


def test_eval_without_config_uses_the_runs_own_with_overrides_on_top(finished, tmp_path):
    workdir = _copy(finished, tmp_path / "w")
    launch = [sys.executable, str(REPO_ROOT / "launch.py"), "--mode=eval", f"--workdir={workdir}"]
    proc = subprocess.run(launch, env=th.env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    want = th.eval_lines(finished)[-1]
    got = json.loads((workdir / "eval_step_44.json").read_text())
    assert (got["loss"], got["accuracy"]) == (want["loss"], want["accuracy"])
    # An override on top that makes it another model is refused, as with --config.
    proc = subprocess.run([*launch, "--config.model.batch_norm=True"], env=th.env(),
                          capture_output=True, text=True, timeout=600)
    _assert_one_line_error(proc, "holds a run with different ['model']")


def test_eval_prints_the_result_before_a_failed_write(finished, tmp_path):
    workdir = _copy(finished, tmp_path / "w")
    (workdir / "eval_step_44.json").mkdir()  # unwritable as a file, for root too
    proc = th.run(workdir, "--mode=eval", check=False)
    want = th.eval_lines(finished)[-1]
    assert f"eval of step 44: loss {want['loss']:.4f}, accuracy {want['accuracy']:.4f}" in proc.stdout
    _assert_one_line_error(proc, "the result is printed above", status=1)  # not bad input


def test_longer_relaunch_of_a_finished_run_is_refused_unless_extended(finished, tmp_path):
    workdir = _copy(finished, tmp_path / "w")
    before = {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()}
    proc = th.run(workdir, "--config.num_epochs=3", check=False)
    assert proc.returncode == 2
    _assert_one_line_error(proc, "holds a run of 44 steps; this config asks for 66")
    assert {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()} == before
    proc = th.run(workdir, "--config.num_epochs=3", "--extend")
    assert "--extend: run length 44 -> 66 steps" in proc.stdout
    assert "resuming at step 44" in proc.stdout and th.eval_lines(workdir)[-1]["step"] == 66
    assert json.loads((workdir / "config.json").read_text())["num_epochs"] == 3
    assert [json.loads(p.read_text())["num_epochs"] for p in workdir.glob("config.*.json")] == [2]


def test_run_and_sweep_directories_are_ignored_by_git():
    ignored = (REPO_ROOT / ".gitignore").read_text().splitlines()
    assert "/runs/" in ignored and "/sweeps/" in ignored  # the README's example workdirs
