"""cnnjax.ops.mapping: the batch-split scope that ops read at trace time."""

import jax
import jax.numpy as jnp
import pytest

from cnnjax.ops import mapping


def test_the_batch_split_scope_is_part_of_jits_cache_key():
    # Ops read `batch_split_over` at trace time (batch norm synchronises, dropout slices its
    # mask): a function jitted outside the scope must trace again inside it, and back.
    f = jax.jit(lambda x: x + (1.0 if mapping.batch_axis() == "data" else 0.0))
    x = jnp.zeros(2)
    assert float(f(x)[0]) == 0.0
    with mapping.batch_split_over("data"):
        assert float(f(x)[0]) == 1.0
        with mapping.batch_split_over("model"):
            assert mapping.batch_axis() == "model" and float(f(x)[0]) == 0.0
        assert mapping.batch_axis() == "data"
    assert float(f(x)[0]) == 0.0 and mapping.batch_axis() is None


def test_batch_split_over_rejects_a_missing_axis_name():
    with pytest.raises(ValueError, match="needs a mesh axis name, got ''"):
        with mapping.batch_split_over(""):
            pass
