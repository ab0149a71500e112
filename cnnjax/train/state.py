"""The train state: everything a checkpoint must hold to resume a run exactly.

Randomness is not stored: dropout keys are fold_in(PRNGKey(seed), step) and the data order is a
function of (seed, step), so (state, config) determine the rest of the run.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """step: scalar int32; params / batch_stats: the model's collections (batch_stats {} when the
    model has none); opt_state: optax state; ema_params: the EMA of params ({} when disabled)."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema_params: Any

    def variables(self, use_ema: bool = False) -> dict:
        """The variables dict `model.apply` takes."""
        params = self.ema_params if use_ema and self.ema_params else self.params
        return {"params": params, **({"batch_stats": self.batch_stats} if self.batch_stats else {})}


def init_state(model, tx: optax.GradientTransformation, input_shape: tuple[int, ...], seed: int,
               use_ema: bool, input_dtype: Any = jnp.float32) -> TrainState:
    """Initialises parameters from PRNGKey(seed) on a (1, *input_shape) dummy batch of
    `input_dtype` (int32 for token ids)."""
    key = jax.random.PRNGKey(seed)
    variables = model.init({"params": key, "dropout": key},
                           jnp.zeros((1, *input_shape), input_dtype), train=False)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                      ema_params=jax.tree_util.tree_map(jnp.copy, params) if use_ema else {})
