"""The dtype the ops accumulate in: float32 for float32 and narrower inputs (bfloat16, float16),
float64 for float64 inputs (with jax_enable_x64), so float64 references stay float64."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def compute_dtype(*arrays: jax.Array) -> jnp.dtype:
    """The widest of float32 and the arrays' floating dtypes (None entries ignored)."""
    return jnp.result_type(jnp.float32, *(a.dtype for a in arrays
                                          if a is not None and jnp.issubdtype(a.dtype,
                                                                               jnp.floating)))
