"""Data parallelism: 8 fake CPU devices vs 1, per-device batch norm, two processes training together."""

import socket
import subprocess

import numpy as np

import train_helpers as th

STEPS = ("--config.num_train_steps=12", "--config.log_every_steps=1", "--config.eval_every_steps=12",
         "--config.checkpoint_every_steps=12")


def test_eight_devices_give_the_one_device_loss_trajectory(tmp_path):
    th.run(tmp_path / "one", *STEPS, devices=1)
    th.run(tmp_path / "eight", *STEPS, devices=8)
    np.testing.assert_allclose(th.train_losses(tmp_path / "eight"), th.train_losses(tmp_path / "one"),
                               rtol=2e-5)


def test_per_device_batch_norm_averages_per_device_statistics(tmp_path):
    """After one step, the running mean is the same either way (equal shards: the mean of shard
    means is the global mean) but per-device variances miss the spread between shard means, so
    the per-device running variance is smaller."""
    one = ("--config.num_train_steps=1", "--config.model.batch_norm=True", "--config.log_every_steps=1",
           "--config.eval_every_steps=1", "--config.checkpoint_every_steps=1")
    th.run(tmp_path / "sync", *one, devices=8)
    th.run(tmp_path / "local", *one, "--config.per_device_batch_norm=True", devices=8)
    stats = {}
    for name in ("sync", "local"):
        stats[name] = th.restore(tmp_path / name, 1)["batch_stats"]["BatchNorm_0"]
    np.testing.assert_allclose(stats["local"]["mean"], stats["sync"]["mean"], rtol=1e-4, atol=1e-6)
    assert np.all(np.asarray(stats["local"]["var"]) <= np.asarray(stats["sync"]["var"]) + 1e-7)
    assert np.any(np.asarray(stats["local"]["var"]) < np.asarray(stats["sync"]["var"]) - 1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_together_like_one(tmp_path):
    port = _free_port()
    procs = [subprocess.Popen(
        th.launch_cmd(tmp_path / "multi", *STEPS, f"--coordinator_address=127.0.0.1:{port}",
                      "--num_processes=2", f"--process_id={i}"),
        env=th.env(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    prints = [th.fingerprints(o) for o in outs]
    assert len(prints[0]) == 1 and prints[0] == prints[1]  # bit-identical on both processes
    th.run(tmp_path / "single", *STEPS)
    multi, single = th.flat(th.final_params(tmp_path / "multi")), th.flat(th.final_params(tmp_path / "single"))
    for k in single:
        np.testing.assert_allclose(multi[k], single[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_sigterm_to_one_of_two_processes_stops_both_at_the_same_step(tmp_path):
    """JAX's preemption sync point (no per-step gather): SIGTERM to process 1 alone makes both
    save one checkpoint at the step they agree on and exit 143."""
    import signal
    import time

    port = _free_port()
    flags = ("--config.num_train_steps=2000", "--config.checkpoint_every_steps=6",
             "--config.log_every_steps=5", "--config.eval_every_steps=2000")
    procs = [subprocess.Popen(
        th.launch_cmd(tmp_path / "multi", *flags, f"--coordinator_address=127.0.0.1:{port}",
                      "--num_processes=2", f"--process_id={i}"),
        env=th.env(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    deadline = time.time() + 300
    while not (tmp_path / "multi" / "checkpoints" / "6").is_dir():
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [143, 143], outs
    steps = [int(o.split("SIGTERM: saved a checkpoint at step ")[1].split(";")[0]) for o in outs]
    assert steps[0] == steps[1] < 2000, outs
    assert (tmp_path / "multi" / "checkpoints" / str(steps[0])).is_dir()
