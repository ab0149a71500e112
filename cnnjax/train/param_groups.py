"""Per-parameter rules of an optimiser, selected by regular expressions on parameter paths
("block1/norm1/bias": the Flax path joined by "/", matched with re.search).

`scale_matching`: multiplies the gradients of matching parameters, before weight decay and
momentum, so for SGD their learning rate is multiplied and their decay is not (Jordan 2024's
batch-norm biases at 64x). `freeze_matching`: from a given epoch on, matching parameters get
no update at all (airbench's frozen whitening kernel, epoch 0, and its bias, epoch 3).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


def path_name(path: tuple) -> str:
    """'block1/norm1/bias' for a tree_util key path."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def matching(params: Any, pattern: str) -> Any:
    """A tree of bools like `params`: True where the parameter's path matches `pattern`."""
    regex = re.compile(pattern)
    return jax.tree_util.tree_map_with_path(lambda p, _: bool(regex.search(path_name(p))), params)


def _checked(params: Any, rules: Sequence[tuple[str, float]], what: str) -> list:
    masks = []
    for pattern, value in rules:
        mask = matching(params, pattern)
        if not any(jax.tree_util.tree_leaves(mask)):
            names = [path_name(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
            raise ValueError(f"optimizer.{what} pattern {pattern!r} matches no parameter; the "
                             f"parameters are {names}")
        masks.append((mask, value))
    return masks


def scale_matching(rules: Sequence[tuple[str, float]]) -> optax.GradientTransformation:
    """Multiplies the gradient of every parameter matching rule (pattern, factor) by factor."""

    def init(params):
        _checked(params, rules, "lr_multipliers")
        return optax.EmptyState()

    def update(updates, state, params=None):
        for mask, factor in _checked(updates, rules, "lr_multipliers"):
            updates = jax.tree_util.tree_map(lambda u, m: u * factor if m else u, updates, mask)
        return updates, state

    return optax.GradientTransformation(init, update)


class FreezeState(NamedTuple):
    count: jax.Array


def freeze_matching(rules: Sequence[tuple[str, float]],
                    steps_per_epoch: int) -> optax.GradientTransformation:
    """Zeroes the update of every parameter matching rule (pattern, epoch) from step
    round(epoch x steps_per_epoch) on (counting updates from 0; epoch 0: always frozen)."""
    limits = [(pattern, int(round(epoch * steps_per_epoch))) for pattern, epoch in rules]

    def init(params):
        _checked(params, limits, "freeze")
        return FreezeState(jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        for mask, limit in _checked(updates, limits, "freeze"):
            keep = state.count < limit
            updates = jax.tree_util.tree_map(
                lambda u, m: jnp.where(keep, u, jnp.zeros_like(u)) if m else u, updates, mask)
        return updates, FreezeState(state.count + 1)

    return optax.GradientTransformation(init, update)
