"""The benchmark harness runs (checking that it works, not timing): two small models, tiny batch,
with the PyTorch comparison."""

import json
import sys

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "experiments"))
import benchmark  # noqa: E402


@pytest.mark.parametrize("model", ["lenet5", "cifar_resnet20"])
def test_harness_runs_and_reports(model, capsys):
    result = benchmark.main([f"--model={model}", "--batch=4", "--steps=2", "--compare=torch"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == result
    assert {"model", "batch", "device", "cnnjax_images_per_sec", "torch_images_per_sec", "ratio"} <= set(result)
    assert result["cnnjax_images_per_sec"] > 0 and result["torch_images_per_sec"] > 0
    assert result["ratio"] == pytest.approx(result["cnnjax_images_per_sec"] / result["torch_images_per_sec"], rel=1e-2)


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        benchmark.main(["--model=lenet5", "--batch=0"])


@pytest.mark.slow  # ~60 CPU-seconds; in make test-slow (CI)
def test_xla_options_remat_and_kernels_reach_the_step():
    # XLA's memory-minimising scheduler must shrink the plan of the same step: proof that the
    # option reaches the compile and that the planned-memory figure measures the plan (with XLA's
    # own convolutions, whose buffers the scheduler can overlap).
    argv = ["--model=cifar_resnet20", "--batch=32", "--steps=1", "--rounds=1", "--kernels=xla"]
    plain = benchmark.main(argv)
    lean = benchmark.main(argv + ["--xla-option=xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"])
    assert lean["xla_options"] == {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}
    assert 0 < lean["planned_memory_mb"] < 0.8 * plain["planned_memory_mb"]
    remat = benchmark.main(["--model=cifar_resnet20", "--batch=4", "--steps=1", "--rounds=1",
                            "--remat", "--kernels=pallas"])
    assert remat["remat"] and remat["kernels"] == "pallas" and remat["cnnjax_images_per_sec"] > 0
    for bad in (["--model=lenet5", "--batch=2", "--remat"], ["--model=lenet5", "--batch=2", "--xla-option=x"]):
        with pytest.raises(SystemExit):
            benchmark.main(bad)
