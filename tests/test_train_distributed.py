"""Data parallelism: 8 fake CPU devices vs 1 (a run, and one batch-norm step against NumPy's
statistics), per-device batch norm, two processes training together."""

import pathlib
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

import reference
import train_helpers as th

STEPS = ("--config.num_train_steps=12", "--config.log_every_steps=1", "--config.eval_every_steps=12",
         "--config.checkpoint_every_steps=12")


def test_eight_devices_give_the_one_device_loss_trajectory(tmp_path):
    th.run(tmp_path / "one", *STEPS, devices=1)
    th.run(tmp_path / "eight", *STEPS, devices=8)
    np.testing.assert_allclose(th.train_losses(tmp_path / "eight"), th.train_losses(tmp_path / "one"),
                               rtol=2e-5)


@pytest.fixture(scope="module")
def bn_step(tmp_path_factory) -> dict[str, np.ndarray]:
    """tests/bn_devices.py's one step on 1 device, 8 with synchronised and 8 with per-device BN."""
    out = tmp_path_factory.mktemp("bn") / "bn.npz"
    proc = subprocess.run([sys.executable, str(pathlib.Path(__file__).with_name("bn_devices.py")),
                           str(out)], env=th.env(8), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(np.load(out))


def _first_bn_input(bn_step) -> np.ndarray:
    """simple_cnn's first batch-norm input: the bias-free 3x3 SAME convolution, in float64."""
    return reference.conv2d(bn_step["x"], bn_step["init/params/Conv_0/kernel"], pads=((1, 1), (1, 1)))


def _tree(bn_step, prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in bn_step.items() if k.startswith(prefix)}


def test_synchronised_batch_norm_on_8_devices_equals_1_device(bn_step):
    """Loss, updated parameters (SGD with momentum from the same start: the same gradients) and
    running statistics of one step agree between 8 devices and 1, and the statistics are those
    of the whole global batch (running = 0.9 running + 0.1 batch, biased variance)."""
    np.testing.assert_allclose(bn_step["sync8/loss"], bn_step["one_device/loss"], rtol=1e-6)
    for part in ("params", "batch_stats"):
        one, eight = _tree(bn_step, f"one_device/{part}/"), _tree(bn_step, f"sync8/{part}/")
        assert one.keys() == eight.keys() and len(one) >= 4
        for k in one:
            np.testing.assert_allclose(eight[k], one[k], rtol=1e-5, atol=1e-7, err_msg=k)
        # The step moved every leaf, so the comparison covers the gradients and the statistics.
        init = _tree(bn_step, f"init/{part}/")
        assert all(not np.allclose(one[k], init[k], rtol=0, atol=1e-6) for k in one), part
    h = _first_bn_input(bn_step)
    np.testing.assert_allclose(bn_step["sync8/batch_stats/BatchNorm_0/mean"], 0.1 * h.mean((0, 1, 2)),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(bn_step["sync8/batch_stats/BatchNorm_0/var"],
                               0.9 + 0.1 * h.var((0, 1, 2)), rtol=1e-5)


def test_per_device_batch_norm_averages_the_statistics_of_each_device_shard(bn_step):
    """per_device_batch_norm=True: each of the 8 devices normalises its own 8 rows; the running
    statistics are the average of the shards' statistics (NumPy over the shards), and the update
    differs from the synchronised one."""
    shards = _first_bn_input(bn_step).reshape(8, 8, *_first_bn_input(bn_step).shape[1:])
    np.testing.assert_allclose(bn_step["local8/batch_stats/BatchNorm_0/mean"],
                               0.1 * shards.mean((1, 2, 3)).mean(0), rtol=1e-5, atol=1e-7)
    local_var = 0.9 + 0.1 * shards.var((1, 2, 3)).mean(0)
    np.testing.assert_allclose(bn_step["local8/batch_stats/BatchNorm_0/var"], local_var, rtol=1e-5)
    sync_var = bn_step["sync8/batch_stats/BatchNorm_0/var"]
    # The spread between the shard means is missing from the per-device variance.
    assert np.all(local_var <= sync_var + 1e-6) and np.max(sync_var - local_var) > 1e-2
    assert not np.allclose(bn_step["local8/loss"], bn_step["sync8/loss"], rtol=1e-5)
    assert not np.allclose(bn_step["local8/params/Dense_1/kernel"],
                           bn_step["sync8/params/Dense_1/kernel"], rtol=1e-4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dumped_train_step(dump: pathlib.Path) -> str:
    """The optimised HLO of the train step that XLA dumped (--xla_dump_to) in one process."""
    files = list(dump.glob("*jit_train_step*after_optimizations.txt"))
    assert len(files) == 1, sorted(p.name for p in dump.iterdir())
    return files[0].read_text()


def test_two_processes_train_together_like_one(tmp_path):
    """Two processes of one CPU device each, simple_cnn with batch norm under kernels "auto":
    each computes its rows per device with oneDNN's convolutions (read in the HLO XLA dumps),
    the batch norms synchronised across the processes; the result equals one process's."""
    port = _free_port()
    flags = (*STEPS, "--config.model.batch_norm=True")
    dumps = [tmp_path / f"hlo{i}" for i in range(2)]
    procs = [subprocess.Popen(
        th.launch_cmd(tmp_path / "multi", *flags, f"--coordinator_address=127.0.0.1:{port}",
                      "--num_processes=2", f"--process_id={i}"),
        env=th.env(1, f"--xla_dump_to={dumps[i]} --xla_dump_hlo_module_re=jit_train_step"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    prints = [th.fingerprints(o) for o in outs]
    assert len(prints[0]) == 1 and prints[0] == prints[1]  # bit-identical on both processes
    for dump in dumps:
        hlo = _dumped_train_step(dump)
        calls = re.findall(r'custom_call_target="cnnjax_onednn_(\w+)"', hlo)
        # simple_cnn's 2 convolutions: forward, weight gradient, and the second's input gradient;
        # its 2 batch norms' 4 passes; its 2 max pools' forward (with argmax) and backward.
        assert sum(c in ("forward", "input_grad", "weight_grad") for c in calls) == 5, calls
        assert calls.count("norm_act") == 8 and calls.count("pool") == 4, calls
        # Its 2 batch norms' statistics partials (2 processes, 3, C) are the only all-gathers.
        gathered = re.findall(r"= f32\[(\d+,3,\d+)\]\S* all-gather", hlo)
        assert sorted(gathered) == ["2,3,32", "2,3,64"], gathered
        assert hlo.count(" all-gather(") + hlo.count(" all-gather-start(") == 2
    th.run(tmp_path / "single", *flags)
    multi, single = th.flat(th.final_params(tmp_path / "multi")), th.flat(th.final_params(tmp_path / "single"))
    for k in single:
        np.testing.assert_allclose(multi[k], single[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_sigterm_to_one_of_two_processes_stops_both_at_the_same_step(tmp_path):
    """JAX's preemption sync point (no per-step gather): SIGTERM to process 1 alone makes both
    save one checkpoint at the step they agree on and exit 143."""
    import signal

    port = _free_port()
    flags = ("--config.num_train_steps=2000", "--config.checkpoint_every_steps=6",
             "--config.log_every_steps=5", "--config.eval_every_steps=2000")
    procs = [subprocess.Popen(
        th.launch_cmd(tmp_path / "multi", *flags, f"--coordinator_address=127.0.0.1:{port}",
                      "--num_processes=2", f"--process_id={i}"),
        env=th.env(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    th.wait_for_checkpoint(tmp_path / "multi", procs=procs, timeout=300)
    procs[1].send_signal(signal.SIGTERM)
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [143, 143], outs
    steps = [int(o.split("SIGTERM: saved a checkpoint at step ")[1].split(";")[0]) for o in outs]
    assert steps[0] == steps[1] < 2000, outs
    assert (tmp_path / "multi" / "checkpoints" / str(steps[0])).is_dir()
