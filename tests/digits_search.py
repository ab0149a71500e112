"""A search config for the tests: configs/default.py's smoke digits run cut to 24 steps with an
evaluation every 4, and a grid over 12 learning rates from 0.01 to 10 (SGD on these digits
diverges to chance accuracy above about 1; see test_sweep_search.py).

    --config=tests/digits_search.py:PRUNER[:LR,LR,...]

PRUNER is "successive_halving" or "none"; the optional learning rates replace the grid.
The grid sampler's seed 1 makes the first two trials (one per worker) learning rates 0.05 and
0.1, which learn; so every diverging trial meets two learning ones at its first evaluation.
"""

import importlib.util
import pathlib

from cnnjax.sweep.search_space import Search, categorical

LEARNING_RATES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 3.0, 5.0, 7.0, 10.0)
TOTAL_STEPS = 24
EVAL_EVERY = 4

_spec = importlib.util.spec_from_file_location(
    "_default_config", pathlib.Path(__file__).resolve().parents[1] / "configs" / "default.py")
_default = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_default)


def get_config(arg: str):
    c = _default.get_config("smoke")
    c.num_train_steps = TOTAL_STEPS
    c.log_every_steps = c.eval_every_steps = c.checkpoint_every_steps = EVAL_EVERY
    c.schedule.warmup_epochs = 0.0  # a diverging learning rate shows from the first steps
    return c


def get_search(arg: str) -> Search:
    pruner, _, rates = arg.partition(":")
    rates = tuple(float(r) for r in rates.split(",")) if rates else LEARNING_RATES
    return Search(space={"optimizer.learning_rate": categorical(rates)}, objective="accuracy",
                  sampler="grid", num_trials=len(rates), pruner=pruner, seed=1,
                  pruner_kwargs={"min_resource": EVAL_EVERY, "reduction_factor": 3}
                  if pruner == "successive_halving" else {})
