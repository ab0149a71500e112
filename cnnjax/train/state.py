"""The train state: everything a checkpoint must hold to resume a run exactly.

Randomness is not stored: every key is a function of (seed, purpose, step) (cnnjax.train.rng)
and the data order is a function of (seed, step), so (state, config) determine the rest of the run.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from cnnjax.train import rng


@flax.struct.dataclass
class TrainState:
    """step: scalar int32; params / batch_stats: the model's collections (batch_stats {} when the
    model has none); opt_state: optax state; ema_params / ema_batch_stats: the exponential moving
    averages of params and of the batch-norm statistics ({} when EMA is disabled).

    The statistics are averaged with the weights (as timm's ModelEmaV2 averages every buffer):
    the live running statistics belong to the live weights, and pairing them with averaged
    weights normalises the averaged network's activations with the wrong mean and variance.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema_params: Any
    ema_batch_stats: Any

    def variables(self, use_ema: bool = False) -> dict:
        """The variables dict `model.apply` takes: the live weights and statistics, or with
        `use_ema` (when EMA is enabled) the averaged weights with the averaged statistics."""
        if use_ema and self.ema_params:
            params, stats = self.ema_params, self.ema_batch_stats
        else:
            params, stats = self.params, self.batch_stats
        return {"params": params, **({"batch_stats": stats} if stats else {})}


def init_state(model, tx: optax.GradientTransformation, input_shape: tuple[int, ...], seed: int,
               use_ema: bool, input_dtype: Any = jnp.float32) -> TrainState:
    """Initialises parameters from the run's PARAMS_INIT stream on a (1, *input_shape) dummy batch
    of `input_dtype` (int32 for token ids); the averages start at the initial values."""
    key = rng.stream_key(seed, rng.PARAMS_INIT)
    # Compiled as one computation: op-by-op, the initialisers of a deep model dispatch thousands
    # of small computations (ResNet-20 on CPU: several seconds un-jitted).
    init = jax.jit(lambda k: model.init({"params": k, "dropout": k},
                                        jnp.zeros((1, *input_shape), input_dtype), train=False))
    variables = init(key)
    params, stats = variables["params"], variables.get("batch_stats", {})
    copy = lambda tree: jax.tree_util.tree_map(jnp.copy, tree) if use_ema else {}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=stats,
                      opt_state=tx.init(params), ema_params=copy(params),
                      ema_batch_stats=copy(stats))
