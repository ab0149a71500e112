"""LARS, layer-wise adaptive rate scaling (You, Gitman & Ginsburg 2017, "Large batch training of
convolutional networks", Algorithm 1 and eq. 6), as an optax transformation.

Per parameter leaf (a layer's kernel, say) w with gradient g, at step t with global learning rate
gamma_t (the schedule), momentum m, weight decay beta and trust coefficient eta:

    lambda = eta ||w|| / (||g|| + beta ||w||)         the local learning rate
    v     <- m v + gamma_t lambda (g + beta w)
    w     <- w - v

- The weight decay enters the trust ratio's denominator as beta ||w|| (optax.lars, which this
  replaces, adds beta w to g first and divides by ||g + beta w||).
- The learning rate multiplies inside the momentum buffer, as in Algorithm 1: after a change of
  gamma_t the old steps in v keep their old rate (PyTorch's SGD would rescale all of v).
- `nesterov`: the step is gamma_t lambda (g + beta w) + m v with the updated v (TensorFlow's
  ApplyMomentum with use_nesterov, which its LARS optimisers call).
- lambda is 1 when ||w|| or ||g|| is 0 (a zero-initialised layer, a layer without gradient), as
  in TensorFlow 1's tf.contrib.opt.LARSOptimizer: the step is then gamma_t (g + beta w).
- Leaves outside `mask` get neither the decay nor the trust ratio: v <- m v + gamma_t g. The paper
  says nothing of biases and batch-norm parameters; leaving them out of both is the common
  practice of LARS implementations: TensorFlow's LARSOptimizer (a `skip_list` that excludes a
  variable from both, its documentation recommending ['batch_normalization', 'bias']) and
  SimCLR's (Chen et al. 2020, google-research/simclr: layer adaptation is excluded wherever
  weight decay is, unless told otherwise). cnnjax uses one mask for both, the weight-decay mask
  of cnnjax.train.optim (1-D leaves left out unless decay_norm_and_bias).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class LarsState(NamedTuple):
    count: jax.Array  # updates done: the schedule's step
    velocity: Any     # v, one leaf per parameter


def lars(learning_rate: optax.ScalarOrSchedule, *, weight_decay: float = 0.0,
         mask: Callable[[Any], Any] = lambda params: jax.tree_util.tree_map(lambda _: True, params),
         trust_coefficient: float = 1e-3, momentum: float = 0.9,
         nesterov: bool = False) -> optax.GradientTransformation:
    """The whole LARS update (decay, trust ratio, learning rate, momentum, sign): `update(grads,
    state, params)` returns the step to add to `params`. `mask(params)` is a tree of Python bools,
    True for the leaves that are decayed and adapted."""
    for what, value in (("weight_decay", weight_decay), ("trust_coefficient", trust_coefficient),
                        ("momentum", momentum)):
        if value < 0:
            raise ValueError(f"lars: {what} must be >= 0, got {value}")

    def init(params):
        return LarsState(jnp.zeros((), jnp.int32), jax.tree_util.tree_map(jnp.zeros_like, params))

    def direction(g, w, adapted: bool):
        """(lambda, the vector it scales) for one leaf."""
        if not adapted:
            return jnp.ones((), g.dtype), g
        w_norm, g_norm = jnp.linalg.norm(w), jnp.linalg.norm(g)
        both = (w_norm > 0) & (g_norm > 0)
        denominator = jnp.where(both, g_norm + weight_decay * w_norm, 1.0)
        ratio = jnp.where(both, trust_coefficient * w_norm / denominator, 1.0)
        return ratio.astype(g.dtype), g + weight_decay * w

    def update(grads, state, params=None):
        if params is None:
            raise ValueError("lars needs the parameters: call update(grads, state, params)")
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        adapted = mask(params)

        def step_of(g, w, flag):
            ratio, d = direction(g, w, flag)
            return (lr * ratio * d).astype(g.dtype)

        steps = jax.tree_util.tree_map(step_of, grads, params, adapted)
        velocity = jax.tree_util.tree_map(lambda v, s: momentum * v + s, state.velocity, steps)
        if nesterov:
            updates = jax.tree_util.tree_map(lambda s, v: -(s + momentum * v), steps, velocity)
        else:
            updates = jax.tree_util.tree_map(jnp.negative, velocity)
        return updates, LarsState(optax.safe_increment(state.count), velocity)

    return optax.GradientTransformation(init, update)
