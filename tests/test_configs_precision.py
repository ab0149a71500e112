"""The ImageNet configs train in bfloat16 (convolutions in bfloat16; parameters, logits and
batch-norm statistics float32), and their `:fp32` variant differs only in dtype."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from cnnjax.sweep.config_file import load_module
from cnnjax.train.trainer import build_model_and_optimizer
from conftest import REPO_ROOT
from kernel_checks import matmul_operand_dtypes

IMAGENET = sorted((REPO_ROOT / "configs").glob("imagenet_*.py"))


def _dtypes(tree) -> set:
    return {jnp.dtype(leaf.dtype) for leaf in jax.tree_util.tree_leaves(tree)}


@pytest.mark.parametrize("path", IMAGENET, ids=[p.stem for p in IMAGENET])
def test_imagenet_config_is_bfloat16_with_float32_params_stats_and_logits(path):
    module = load_module(path)
    config, fp32 = module.get_config(), module.get_config("fp32")
    assert config.dtype == "bfloat16" and fp32.dtype == "float32"
    fp32.dtype = "bfloat16"
    assert fp32.to_dict() == config.to_dict()  # the variant changes nothing else
    smoke = module.get_config("smoke")
    assert smoke.dtype == "bfloat16"  # the smoke run trains the bfloat16 path
    model, *_ = build_model_and_optimizer(config, 1000, 100)
    x = jnp.zeros((2, *smoke.dataset.options.image_shape), jnp.float32)
    keys = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}
    variables = jax.eval_shape(lambda: model.init(keys, x, train=False))

    def apply(v):
        return model.apply(v, x, train=True, rngs={"dropout": keys["dropout"]},
                           mutable=["batch_stats"])

    out, updates = jax.eval_shape(apply, variables)
    assert _dtypes(variables["params"]) == {jnp.dtype(jnp.float32)}
    assert _dtypes(variables.get("batch_stats", {})) <= {jnp.dtype(jnp.float32)}
    assert _dtypes(updates) <= {jnp.dtype(jnp.float32)}
    assert _dtypes(out) == {jnp.dtype(jnp.float32)}  # logits (and auxiliary logits)
    # The convolutions really run in bfloat16 (XLA's, or oneDNN's custom calls under "auto").
    ops = matmul_operand_dtypes(jax.make_jaxpr(apply)(variables).jaxpr)
    convs = [dtype for op, dtype in ops if op != "dot_general"]
    assert convs and set(convs) == {"bfloat16"}
