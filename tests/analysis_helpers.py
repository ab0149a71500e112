"""A small CNN trained on the digits once per test process, for the analysis tests."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnjax import data, models, ops

STEPS = 200


@functools.lru_cache(maxsize=1)
def trained_digits():
    """(model, variables, (train images, labels), (test images, labels)): simple_cnn after
    STEPS steps of SGD with momentum on the 1,437 training digits (about 97% test accuracy)."""
    train = data.create("digits", "train", batch_size=64, train=False)
    test = data.create("digits", "test", batch_size=64, train=False)
    model = models.create("simple_cnn", num_classes=10, dropout_rate=0.0)
    variables = jax.jit(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)),
                                           train=False))()
    tx = optax.sgd(0.05, momentum=0.9)
    opt_state = tx.init(variables["params"])

    @jax.jit
    def step(params, opt_state, x, y):
        loss = lambda p: ops.softmax_cross_entropy(model.apply({"params": p}, x), y).mean()
        grads = jax.grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    params = variables["params"]
    rng = np.random.default_rng(0)
    for _ in range(STEPS):
        index = rng.integers(0, train.num_examples, 64)
        params, opt_state = step(params, opt_state, train.images[index], train.labels[index])
    return (model, {"params": params}, (train.images, train.labels), (test.images, test.labels))
