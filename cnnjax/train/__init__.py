"""Training: state, jit-compiled sharded steps, optax optimisers, Orbax checkpoints, metrics."""

from cnnjax.train.trainer import evaluate_workdir, train
