"""Lookahead-style EMA (Jordan 2024, airbench, sec. 3.5, after Zhang et al. 2019's Lookahead):
every `every` steps the weights are replaced by an exponential moving average of themselves,
ema <- decay ema + (1 - decay) weights, weights <- ema, with decay = base^every (step/total)^power
(0 at the start, base^every near the end); after the last step the weights become the average.
Batch-norm running statistics are averaged and copied back the same way, as airbench does for
its whole state_dict.

The average lives in the optimiser state (`lookahead_ema` is the last transformation of the
optax chain), so checkpoints hold it and resumed runs are exact. The parameters go through the
transformation's updates; the statistics, which optax never sees, through `sync_batch_stats`,
which the train step calls after the update, and `attach_batch_stats`, which puts their initial
average in the state.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class LookaheadState(NamedTuple):
    count: jax.Array       # updates done, including this one after `update`
    ema_params: Any
    ema_stats: Any         # {} until attach_batch_stats
    synced: jax.Array      # whether the last update synchronised
    decay: jax.Array       # the decay of that synchronisation


def lookahead_decay(count: jax.Array, every: int, total: int, base: float = 0.95,
                    power: float = 3.0) -> tuple[jax.Array, jax.Array]:
    """(sync, decay) after update number `count` (1-based): a sync every `every` updates with
    decay base^every (count/total)^power, and a final one at `total` with decay 1 (the average
    itself) unless `total` is itself a multiple of `every`."""
    periodic = count % every == 0
    sync = periodic | (count == total)
    ratio = count.astype(jnp.float32) / total
    decay = jnp.where(periodic, base ** every * ratio ** power, 1.0)
    return sync, decay


def _lerp(ema: Any, new: Any, decay: jax.Array) -> Any:
    return jax.tree_util.tree_map(lambda e, n: e + (1.0 - decay) * (n - e), ema, new)


def lookahead_ema(every: int, total_steps: int, base: float = 0.95,
                  power: float = 3.0) -> optax.GradientTransformation:
    """The Lookahead-EMA as the last step of an optax chain: on sync steps the update takes the
    parameters to the new average instead of to the optimiser's point."""
    if every < 1 or total_steps < 1:
        raise ValueError(f"lookahead needs every >= 1 and total_steps >= 1, got every={every}, "
                         f"total_steps={total_steps}")

    def init(params):
        return LookaheadState(jnp.zeros((), jnp.int32), jax.tree_util.tree_map(jnp.copy, params),
                              {}, jnp.zeros((), bool), jnp.zeros((), jnp.float32))

    def update(updates, state, params):
        count = state.count + 1
        sync, decay = lookahead_decay(count, every, total_steps, base, power)
        fast = optax.apply_updates(params, updates)
        ema = jax.tree_util.tree_map(lambda e, n: jnp.where(sync, n, e), state.ema_params,
                                     _lerp(state.ema_params, fast, decay))
        updates = jax.tree_util.tree_map(lambda u, e, p: jnp.where(sync, e - p, u), updates, ema,
                                         params)
        return updates, state._replace(count=count, ema_params=ema, synced=sync, decay=decay)

    return optax.GradientTransformation(init, update)


def _is_lookahead(node: Any) -> bool:
    return isinstance(node, LookaheadState)


def attach_batch_stats(opt_state: Any, batch_stats: Any) -> Any:
    """`opt_state` with the lookahead's statistics average started at `batch_stats`."""
    return jax.tree_util.tree_map(
        lambda n: n._replace(ema_stats=jax.tree_util.tree_map(jnp.copy, batch_stats))
        if _is_lookahead(n) else n, opt_state, is_leaf=_is_lookahead)


def sync_batch_stats(opt_state: Any, batch_stats: Any) -> tuple[Any, Any]:
    """After an update: (batch_stats, opt_state) with the statistics averaged and copied back
    when that update synchronised the parameters; unchanged without a lookahead."""
    found = [n for n in jax.tree_util.tree_leaves(opt_state, is_leaf=_is_lookahead)
             if _is_lookahead(n)]
    if not found or not batch_stats:
        return batch_stats, opt_state
    la = found[0]
    if not la.ema_stats:
        raise ValueError("the lookahead's batch-statistics average was never started: call "
                         "cnnjax.train.lookahead.attach_batch_stats on the initial state")
    ema = jax.tree_util.tree_map(lambda e, n: jnp.where(la.synced, n, e), la.ema_stats,
                                 _lerp(la.ema_stats, batch_stats, la.decay))
    new_stats = jax.tree_util.tree_map(lambda e, s: jnp.where(la.synced, e, s), ema, batch_stats)
    opt_state = jax.tree_util.tree_map(lambda n: n._replace(ema_stats=ema) if _is_lookahead(n)
                                       else n, opt_state, is_leaf=_is_lookahead)
    return new_stats, opt_state
