"""Every config in configs/ parses, its variants too, and builds its model and optimiser
(shapes only, through jax.eval_shape: nothing is trained or allocated)."""

import ast
import pathlib
import re

import jax
import pytest

from cnnjax.models import get_spec
from cnnjax.sweep.config_file import load_module
from cnnjax.train.state import init_state
from cnnjax.train.trainer import build_model_and_optimizer
from conftest import REPO_ROOT

CONFIGS = sorted((REPO_ROOT / "configs").glob("*.py"))


def _variants(path: pathlib.Path) -> list[str | None]:
    module = load_module(path)
    # A config lists its selectable variants in VARIANTS; every config has a smoke variant.
    return [None, *getattr(module, "VARIANTS", ("smoke",))]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_builds(path):
    module = load_module(path)
    for arg in _variants(path):
        config = module.get_config() if arg is None else module.get_config(arg)
        spec = get_spec(config.model.name)
        num_classes = config.dataset.get("num_classes", spec.num_classes)
        model, schedule, tx, total = build_model_and_optimizer(config, num_classes, 100)
        assert total > 0 and float(schedule(0)) >= 0.0
        shape = tuple(config.dataset.get("image_shape", spec.input_shape))
        state = jax.eval_shape(lambda: init_state(model, tx, shape, config.seed, use_ema=False,
                                                 input_dtype=spec.input_dtype))
        assert jax.tree_util.tree_leaves(state.params)
        if hasattr(module, "get_sweep"):
            assert len(module.get_sweep(arg)) > 0
        if hasattr(module, "get_search"):  # names Optuna knows, keys the config has
            module.get_search(arg).validate(config)


def test_every_config_states_its_launch_command_and_the_readme_names_only_real_configs():
    """Each config's docstring gives the command that launches it (the style rule for configs),
    and every configs/*.py the README mentions is a file the tests above build."""
    for path in CONFIGS:
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert f"launch.py --config=configs/{path.name}" in doc, f"{path.name}: no launch command"
    readme = (REPO_ROOT / "README.md").read_text()
    named = set(re.findall(r"configs/(\w+\.py)", readme))
    assert "default.py" in named and named <= {p.name for p in CONFIGS}, named - {p.name for p in CONFIGS}
