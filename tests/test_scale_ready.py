"""Scale readiness proven on CPU from what XLA compiles: the collectives of the batch norms in a
training step sharded over 8 forced host devices (one each way per batch norm, against
flax.linen.BatchNorm's count), the accuracy of the sharded statistics against float64, and the
full gradient steps of ResNet-18/50, MobileNetV2 and EfficientNet-B0 exported for CUDA with
their Pallas kernels as Triton calls, and for CUDA and TPU on the XLA path."""

import functools
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import export
from jax.sharding import AbstractMesh, NamedSharding
from jax.sharding import PartitionSpec as P

from cnnjax import kernels, models
from cnnjax.train.state import init_state
from cnnjax.train.step import train_step
from conftest import REPO_ROOT
from kernel_checks import TRITON_CALL, cuda_module, triton_kernels_for_gpu


def _probe(*names: str) -> dict:
    """tests/sharded_batch_norm_probe.py in a subprocess with 8 forced host devices."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "tests")]),
           "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "sharded_batch_norm_probe.py"),
                          *names], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _check_batch_norm_collectives(counts: dict, extra_all_reduces: int) -> None:
    """Every collective an all-reduce, and each batch norm in exactly one forward and one backward
    of them: forward, its (8 blocks, 3, C) packed partials (shift, mean deviation, M2:
    ops.norm._moments); backward, its two (C,) gradient sums. XLA may combine the all-reduces
    of independent batch norms (a projection shortcut's and its block's) into one; the
    `extra_all_reduces` are the rest of the step (parameter gradients and metrics, combined)."""
    forward, backward, other = [], [], []
    for kind, shape in counts["ops"]:
        assert kind == "all-reduce", counts
        operands = re.findall(r"\w+\[[\d,]*\]", shape)
        partials = [re.fullmatch(r"f32\[8,3,(\d+)\]", op) for op in operands]
        sums = [re.fullmatch(r"f32\[(?:1,)*(\d+)\]", op) for op in operands]
        if all(partials):
            forward.append([int(m[1]) for m in partials])
        elif all(sums) and len(sums) % 2 == 0:
            backward.append([int(m[1]) for m in sums])
        else:
            other.append(shape)
    channels = counts["batch_norm_channels"]
    assert sorted(c for op in forward for c in op) == channels, counts
    assert sorted(c for op in backward for c in op) == sorted(channels * 2), counts
    assert len(forward) <= len(channels) and len(backward) <= len(channels), counts
    # At most: XLA's all-reduce combiner decides how the rest is grouped (it may differ by version).
    assert len(other) <= extra_all_reduces, other
    assert len(counts["ops"]) == counts["all-reduce"], counts  # every collective parsed
    assert counts["all-gather"] == counts["collective-permute"] == counts["all-to-all"] == 0
    assert counts["reduce-scatter"] == 0


@pytest.fixture(scope="module")
def resnet20_probe() -> dict:
    return _probe("cifar_resnet20")


def test_sharded_resnet20_step_has_one_collective_per_batch_norm_each_way(resnet20_probe):
    """The statistics' history on this probe: 77 all-reduces for the two-pass over the whole
    batch (commit e8b58ef), then 20 all-reduces and 76 all-gathers for per-example partials
    merged by one variadic reduction (4 all-gathers per batch norm), now 39 collectives."""
    counts = resnet20_probe["cifar_resnet20"]
    assert counts["batch_norms"] == 19  # He et al. 2016, sec. 4.2: 6n + 1 layers with n = 3
    assert counts["batch_norm_channels"] == [16] * 7 + [32] * 6 + [64] * 6
    _check_batch_norm_collectives(counts, extra_all_reduces=1)
    assert counts["all-reduce"] <= 2 * counts["batch_norms"] + 1, counts


def test_batch_norm_collectives_are_no_more_than_flax_linen_batch_norms(resnet20_probe):
    """The same conv-BN-ReLU stack with flax.linen.BatchNorm (E[x^2] - E[x]^2 statistics: one
    all-reduce forward and one backward per batch norm, so no better than ours in collectives,
    and without digits of the variance at |mean| >> std) as the reference."""
    ours, flax = resnet20_probe["stack_cnnjax"], resnet20_probe["stack_flax"]
    assert ours["batch_norms"] == flax["batch_norms"] == 6
    assert flax["all-gather"] == 0 and flax["all-reduce"] >= 2 * flax["batch_norms"], flax
    _check_batch_norm_collectives(ours, extra_all_reduces=1)
    assert ours["all-reduce"] + ours["all-gather"] <= flax["all-reduce"], (ours, flax)


def test_sharded_statistics_of_badly_centred_inputs_match_float64(resnet20_probe):
    """Mean 1e4, std 1, and each device's shard offset by 10 * device: float32 holds 1e4 only
    to 1e-3, so E[x^2] - E[x]^2 would lose the variance; the merged partials keep ~1e-6."""
    mean, var, ref_mean, ref_var = map(np.asarray, resnet20_probe["moments"])
    np.testing.assert_allclose(mean, ref_mean, rtol=0, atol=2e-3)  # float32 spacing at 1e4: 1e-3
    np.testing.assert_allclose(var, ref_var, rtol=1e-5)


def test_synchronised_statistics_under_shard_map_equal_the_global_ones(resnet20_probe):
    """ops.batch_moments(x, axis_name) merging per-device moments (one all-gather) equals NumPy's
    float64 statistics of the whole batch, and its gradient the analytic one, for devices with
    different spreads."""
    diff = resnet20_probe["shard_map"]
    assert diff["values"] <= 1e-5 * diff["scale"], diff
    assert diff["grads"] <= 1e-5 * diff["grad_scale"], diff


@pytest.mark.slow
def test_sharded_resnet50_step_has_one_collective_per_batch_norm_each_way():
    counts = _probe("resnet50")["resnet50"]
    assert counts["batch_norms"] == 53  # 1 stem + 16 blocks x 3 + 4 projections
    # 99 all-reduces on JAX 0.10.2: 49 forward and 49 backward (XLA pairs each projection's
    # batch norm with one of its block's, both ways), one for the parameter gradients and metrics.
    _check_batch_norm_collectives(counts, extra_all_reduces=1)


# --- Exported gradient steps -----------------------------------------------------------------

# Triton kernels in one training step (forward and backward), from the architecture:
# batch norm 4 (statistics, normalise; gradient sums, input gradient), max pool 2, depthwise 3
# (forward; input and filter gradients).
MODELS = {  # name: (batch norms, max pools, depthwise convolutions)
    "resnet18": (20, 1, 0),  # stem + 8 blocks x 2 + 3 projections
    "resnet50": (53, 1, 0),  # stem + 16 blocks x 3 + 4 projections
    "mobilenet_v2": (52, 0, 17),  # stem, 17 blocks (2 or 3 each: 1 x 2 + 16 x 3), head
    "efficientnet_b0": (49, 0, 16),  # stem, 16 MBConv (1 x 2 + 15 x 3), head
}
SLOW = {"resnet50", "mobilenet_v2", "efficientnet_b0"}


def _params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


def _step_and_specs(name: str, size: int = 32, mesh=None):
    """cnnjax.train.step.train_step of model `name` (SGD with momentum) and the abstract state
    and batch (2 images of size x size per device) it is traced with; with `mesh` (a "data"
    axis), the trainer's per-device step, the batch sharded and the state replicated."""
    model = models.create(name, num_classes=10)
    tx = optax.sgd(0.1, momentum=0.9)
    state = jax.eval_shape(lambda: init_state(model, tx, (size, size, 3), seed=0, use_ema=False))
    n = 2 * (1 if mesh is None else mesh.size)
    data = rep = None
    if mesh is not None:
        data, rep = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
        state = jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), state)
    batch = {"image": jax.ShapeDtypeStruct((n, size, size, 3), jnp.float32, sharding=data),
             "label": jax.ShapeDtypeStruct((n,), jnp.int32, sharding=data)}
    step = functools.partial(train_step, model=model, tx=tx,
                             schedule=optax.constant_schedule(0.1), seed=0, label_smoothing=0.0,
                             ema_decay=0.0, pass_loss=False, mesh=mesh)
    return step, (state, batch)


@pytest.mark.parametrize("name", _params(MODELS))
def test_gradient_step_exports_to_cuda_with_every_kernel_as_triton(monkeypatch, name):
    bns, pools, depthwise = MODELS[name]
    step, specs = _step_and_specs(name)
    with kernels.use("pallas"):
        found = triton_kernels_for_gpu(step, specs, monkeypatch)
    assert found == 4 * bns + 2 * pools + 3 * depthwise


@pytest.mark.slow
def test_8_device_gradient_step_exports_to_cuda_with_every_kernel_as_triton(monkeypatch):
    """The trainer's step over 8 GPUs (an abstract mesh: no devices needed), ResNet-18 per device
    in shard_map under kernels "auto": every Pallas kernel a Triton call, as on one device, and
    the only all-gathers the 20 batch norms' (8 devices, 3, C) statistics partials."""
    bns, pools, _ = MODELS["resnet18"]
    step, specs = _step_and_specs("resnet18", mesh=AbstractMesh((8,), ("data",)))
    with kernels.use("auto"):
        module = cuda_module(step, specs, monkeypatch)
    assert module.count(TRITON_CALL) == 4 * bns + 2 * pools
    gathers = re.findall(r"stablehlo\.all_gather.*?-> tensor<(\w+)>", module)
    assert len(gathers) == bns and all(re.fullmatch(r"8x3x\d+xf32", g) for g in gathers), gathers


@pytest.mark.parametrize("name", _params(["resnet18", "mobilenet_v2", "resnet50",
                                          "efficientnet_b0"]))
def test_xla_gradient_step_exports_to_cuda_and_tpu(name):
    step, specs = _step_and_specs(name)
    with kernels.use("xla"):  # "auto" would pick by the tracing host's backend (here the CPU)
        exported = export.export(jax.jit(step), platforms=["cuda", "tpu"])(*specs)
    assert exported.platforms == ("cuda", "tpu")
    assert TRITON_CALL not in exported.mlir_module()
