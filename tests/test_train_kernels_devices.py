"""The kernels on 8 devices (forced host devices, tests/kernels_devices_probe.py in a subprocess):
the trainer's steps compute the model per device inside shard_map, so kernels "auto" keeps
oneDNN's convolutions on N CPU devices (and the Pallas kernels on N GPUs); the 8-device run
equals the 1-device run and the XLA path, the batch norms are synchronised with one collective
each way and no activation is gathered; the Pallas batch-norm kernel synchronised inside
shard_map against PyTorch in float64. The training runs are slow tests (CI's `make test-slow`);
the trainer's 8-device path is also in the fast suite through tests/test_train_distributed.py
(simple_cnn, with dropout and with batch norm) and tests/test_train_sharded_mix.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import reference
import train_helpers as th
from conftest import REPO_ROOT
from kernel_checks import assert_close


def _probe(tmp_path_factory, part: str) -> tuple[dict, dict[str, np.ndarray]]:
    path = tmp_path_factory.mktemp("kernels_devices") / "probe.npz"
    env = {**th.env(8), "PYTHONPATH": f"{REPO_ROOT}:{REPO_ROOT / 'tests'}"}
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "kernels_devices_probe.py"),
                           str(path), part], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), dict(np.load(path))


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> tuple[dict, dict[str, np.ndarray]]:
    """The training runs (slow: about 30 CPU-seconds of compiling)."""
    return _probe(tmp_path_factory, "trainer")


@pytest.fixture(scope="module")
def bn_probe(tmp_path_factory) -> dict[str, np.ndarray]:
    """The batch-norm checks (a few CPU-seconds)."""
    return _probe(tmp_path_factory, "batch_norm")[1]


def _tree(arrays: dict, prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


@pytest.mark.slow
def test_auto_keeps_onednn_in_the_8_device_train_and_eval_steps(probe):
    """Every convolution's forward, weight gradient and input gradient (but the stem's, whose
    input is the data) is a oneDNN call in the compiled 8-device steps, as on 1 device, and
    every training batch norm's four passes (statistics, normalise; gradient sums, input
    gradient) are the CPU kernel's calls; evaluation normalises with the running statistics on
    XLA."""
    out, _ = probe
    convs, norms = out["convolutions"], len(out["batch_norm_channels"])
    assert convs == 7  # ResNet-8: the stem and 3 stages of one basic block (option A shortcuts)
    for run in ("auto8", "auto1"):
        assert out[f"{run}_train_hlo"]["onednn"] == 3 * convs - 1, run
        assert out[f"{run}_eval_hlo"]["onednn"] == convs, run
        assert out[f"{run}_train_hlo"]["batch_norm_calls"] == 4 * norms, run
        assert out[f"{run}_eval_hlo"]["batch_norm_calls"] == 0, run
    for step in ("train", "eval"):
        assert out[f"xla8_{step}_hlo"]["onednn"] == out[f"xla8_{step}_hlo"]["batch_norm_calls"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("run", ["auto8", "xla8"])
def test_8_device_steps_gather_no_activation_and_sync_each_batch_norm_once_each_way(probe, run):
    """Train step: forward, one all-gather of the (8 devices, 3, C) statistics partials per batch
    norm (ops.norm.merge_across); backward, one all-reduce of the (2, C) cotangents of the
    statistics; the rest one gradient and metric reduction (XLA's combiner may split it in two
    or merge a batch norm's all-reduce into it). Eval step: one all-reduce of the sums."""
    out, _ = probe
    channels = out["batch_norm_channels"]
    assert channels == [16, 16, 16, 32, 32, 64, 64]
    hlo = out[f"{run}_train_hlo"]
    gathered, stats_cotangents, other = [], [], []
    for kind, shape in hlo["ops"]:
        operands = re.findall(r"\w+\[[\d,]*\]", shape)
        if kind == "all-gather":
            match = re.fullmatch(r"f32\[8,3,(\d+)\]", shape)
            assert match, (kind, shape)  # statistics only: never an activation
            gathered.append(int(match[1]))
            continue
        assert kind == "all-reduce", (kind, shape)
        for op in operands:
            match = re.fullmatch(r"f32\[2,(\d+)\]", op)
            if match:
                stats_cotangents.append(int(match[1]))
        if not all(re.fullmatch(r"f32\[2,\d+\]", op) for op in operands):
            other.append(shape)
    assert sorted(gathered) == sorted(stats_cotangents) == channels, hlo
    assert len(other) <= 2, other
    assert len(hlo["ops"]) <= 2 * len(channels) + 1, hlo["ops"]
    assert hlo["reduce-scatter"] == hlo["collective-permute"] == hlo["all-to-all"] == 0
    assert out[f"{run}_eval_hlo"]["ops"] == [["all-reduce", "(f32[], f32[], f32[], f32[])"]]


@pytest.mark.slow
def test_3_steps_on_8_devices_equal_1_device_and_the_xla_path(probe):
    """Loss of each step, parameters and running statistics after 3 SGD steps: oneDNN on 8
    devices against oneDNN on 1 and XLA on 8 (float32: relative to each leaf's largest value);
    the eval sums too. Each device's rows have their own brightness, so per-device statistics
    would differ (test_train_distributed checks that mode)."""
    _, arrays = probe
    for other in ("auto1", "xla8"):
        np.testing.assert_allclose(arrays["auto8/loss"], arrays[f"{other}/loss"], rtol=1e-5)
        for part in ("params", "batch_stats", "eval"):
            got, want = _tree(arrays, f"auto8/{part}/"), _tree(arrays, f"{other}/{part}/")
            assert got.keys() == want.keys() and got, part
            for k in want:
                assert_close(got[k], want[k], np.float32, f"{other} {part} {k}", tol=5e-5)
    init = _tree(arrays, "init/params/")
    moved = _tree(arrays, "auto8/params/")
    assert all(not np.allclose(moved[k], init[k], rtol=0, atol=1e-6) for k in init)
    assert arrays["auto8/eval/count"] == 16


@pytest.mark.slow
def test_8_device_running_statistics_are_the_whole_batch_statistics(probe):
    """After the first step, the stem's batch norm holds 0.9 * initial + 0.1 * the statistics of
    the stem convolution of the whole batch (NumPy float64), not the per-device mean."""
    _, arrays = probe
    h = reference.conv2d(arrays["x0"], arrays["init/params/conv1/kernel"], pads=((1, 1), (1, 1)))
    stats = _tree(arrays, "auto8/step1/batch_stats/bn1/")
    np.testing.assert_allclose(stats["mean"], 0.1 * h.mean((0, 1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * h.var((0, 1, 2)), rtol=1e-5)
    per_device = h.reshape(8, -1, h.shape[-1]).var(axis=1).mean(axis=0)
    assert np.max(np.abs(h.var((0, 1, 2)) - per_device)) > 0.05  # the check can see the difference


def _torch_batch_norm(arrays: dict) -> dict[str, np.ndarray]:
    """relu(batch_norm(x) * scale + bias + residual) over the whole batch in float64, and the
    gradients of sum(y * cotangent) + mean . w_mean + var . w_var."""
    t = {k: torch.tensor(arrays[f"bn/{k}"], dtype=torch.float64, requires_grad=True)
         for k in ("x", "scale", "bias", "residual")}
    mean = t["x"].mean(dim=(0, 1, 2))
    var = ((t["x"] - mean) ** 2).mean(dim=(0, 1, 2))
    xhat = (t["x"] - mean) / torch.sqrt(var + 1e-5)
    y = torch.relu(xhat * t["scale"] + t["bias"] + t["residual"])
    loss = ((y * torch.tensor(arrays["bn/cotangent"], dtype=torch.float64)).sum()
            + (mean * torch.tensor(arrays["bn/w_mean"], dtype=torch.float64)).sum()
            + (var * torch.tensor(arrays["bn/w_var"], dtype=torch.float64)).sum())
    loss.backward()
    return {"y": y.detach().numpy(), "mean": mean.detach().numpy(), "var": var.detach().numpy(),
            **{f"d{k}": t[k].grad.numpy() for k in ("x", "scale", "bias", "residual")}}


@pytest.mark.parametrize("run", ["pallas8", "cpu8", "xla8"])
def test_synchronised_batch_norm_in_shard_map_matches_torch_float64(bn_probe, run):
    """ops.batch_norm inside shard_map over 8 devices (the batch split over them), on the Pallas
    kernel (interpret mode) and the CPU kernel (their statistics and backward passes per device,
    exchanged once each way) and on XLA: values and gradients equal the whole batch's in
    PyTorch float64."""
    arrays = bn_probe
    assert arrays[f"bn/{run}/kernel_calls"] == (0 if run == "xla8" else 2)
    want = _torch_batch_norm(arrays)
    for k, v in want.items():
        assert_close(arrays[f"bn/{run}/{k}"], v, np.float32, f"{run} {k}", tol=1e-5)


def test_synchronised_statistics_of_badly_centred_inputs_match_float64(bn_probe):
    """Mean 1e4, std 1, each device's share offset by 10 * device: the devices' (shift, mean
    deviation, M2) partials merged by Chan's formula keep ~1e-6 of the variance, where merging
    float32 (mean, var) pairs would lose digits to the 1e-3 spacing of the means."""
    arrays = bn_probe
    x64 = arrays["centred/x"].astype(np.float64)
    ref_mean = x64.mean(axis=(0, 1, 2))
    np.testing.assert_allclose(arrays["centred/mean"], ref_mean, rtol=0, atol=2e-3)
    np.testing.assert_allclose(arrays["centred/var"], ((x64 - ref_mean) ** 2).mean(axis=(0, 1, 2)),
                               rtol=1e-5)
