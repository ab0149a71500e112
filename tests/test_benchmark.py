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
