"""Every config's `smoke` variant trains its few steps end to end (data, model, optimiser,
schedule, evaluation, checkpoint) through the real trainer, and reports finite metrics."""

import math

import pytest

from cnnjax.sweep.config_file import load_module
from cnnjax.train import trainer
from conftest import REPO_ROOT

CONFIGS = sorted((REPO_ROOT / "configs").glob("*.py"))
# Smoke runs of the >100M-parameter ImageNet models take minutes on 2 CPU cores; GoogLeNet's and
# EfficientNet-B0's compile for over 60 s.
SLOW = {"imagenet_vgg16", "imagenet_alexnet", "imagenet_googlenet", "imagenet_efficientnet_b0"}


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p.stem in SLOW
                                  else p for p in CONFIGS], ids=[p.stem for p in CONFIGS])
def test_smoke_variant_trains(path, tmp_path):
    config = load_module(path).get_config("smoke")
    result = trainer.train(config, tmp_path)
    assert math.isfinite(result["loss"]) and 0.0 <= result["accuracy"] <= 1.0
    assert (tmp_path / "metrics.jsonl").is_file() and (tmp_path / "checkpoints").is_dir()


def test_compiler_options_reach_the_compiled_steps(tmp_path):
    config = load_module(REPO_ROOT / "configs" / "default.py").get_config("smoke")
    config.compiler_options = {"xla_no_such_option": "1"}
    with pytest.raises(Exception, match="xla_no_such_option"):
        trainer.train(config, tmp_path / "bad")
    config.compiler_options = {"xla_cpu_experimental_ynn_fusion_type": ""}
    assert math.isfinite(trainer.train(config, tmp_path / "good")["loss"])
