"""The dtype the ops accumulate in: float32 for float32 and narrower inputs (bfloat16, float16),
float64 for float64 inputs (with jax_enable_x64), so float64 references stay float64."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def compute_dtype(x: jax.Array) -> jnp.dtype:
    """The wider of float32 and x's dtype (float32 for integer x)."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        return jnp.dtype(jnp.float32)
    return jnp.promote_types(x.dtype, jnp.float32)
