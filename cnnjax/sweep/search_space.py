"""A hyperparameter search declared in a config file's `get_search()`: what Optuna samples and how.

    from cnnjax.sweep.search_space import Search, categorical, log_uniform, uniform
    def get_search(arg=None):
        return Search(space={"optimizer.learning_rate": log_uniform(1e-3, 10.0),
                             "model.dropout_rate": uniform(0.0, 0.5)},
                      objective="accuracy", direction="maximize", sampler="tpe",
                      num_trials=16, pruner="successive_halving")

The space maps dotted config keys to Optuna distributions; samplers and pruners are Optuna's,
chosen by name (SAMPLERS, PRUNERS) with keyword arguments passed through.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import optuna
from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,
                                  IntDistribution)

from cnnjax.sweep.grid import check_key

SAMPLERS = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
            "grid": optuna.samplers.GridSampler, "cmaes": optuna.samplers.CmaEsSampler,
            "gp": optuna.samplers.GPSampler, "qmc": optuna.samplers.QMCSampler,
            "nsgaii": optuna.samplers.NSGAIISampler,
            "bruteforce": optuna.samplers.BruteForceSampler}
PRUNERS = {"none": optuna.pruners.NopPruner,
           "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
           "hyperband": optuna.pruners.HyperbandPruner, "median": optuna.pruners.MedianPruner,
           "percentile": optuna.pruners.PercentilePruner,
           "threshold": optuna.pruners.ThresholdPruner}
DIRECTIONS = ("maximize", "minimize")


def uniform(low: float, high: float) -> FloatDistribution:
    """Floats uniform in [low, high]."""
    return FloatDistribution(low, high)


def log_uniform(low: float, high: float) -> FloatDistribution:
    """Floats whose logarithm is uniform in [log low, log high] (low > 0)."""
    return FloatDistribution(low, high, log=True)


def integer(low: int, high: int, step: int = 1, log: bool = False) -> IntDistribution:
    """Integers in [low, high] (both included), every `step`-th, or log-uniform."""
    return IntDistribution(low, high, log=log, step=step)


def categorical(choices: Sequence[Any]) -> CategoricalDistribution:
    """One of `choices` (None, bool, int, float or str; Optuna stores them as they are)."""
    return CategoricalDistribution(tuple(choices))


@dataclasses.dataclass(frozen=True)
class Search:
    """A search: distributions over dotted config keys, the eval metric to optimise, Optuna's
    sampler and pruner by name (with their keyword arguments), and the number of trials.

    The pruner sees the objective metric at every evaluation (`step` = the training step);
    `num_trials` counts every trial that started, failed ones included, as Optuna's
    `study.optimize(n_trials=...)` does. `seed` seeds the sampler (see make_sampler).
    """

    space: Mapping[str, BaseDistribution]
    objective: str = "accuracy"
    direction: str = "maximize"
    sampler: str = "tpe"
    num_trials: int = 16
    pruner: str = "none"
    sampler_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    pruner_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    seed: int = 0
    # Parameter dicts tried first, in order (Optuna's enqueue_trial), e.g. the config's defaults.
    first_trials: Sequence[Mapping[str, Any]] = ()

    def validate(self, config: ml_collections.ConfigDict) -> None:
        """ValueError naming the first bad field: unknown names, keys the config lacks, or a
        grid sampler over a non-categorical distribution."""
        if not self.space:
            raise ValueError("get_search() space is empty; give at least one dotted config key")
        for key, dist in self.space.items():
            check_key(config, key)
            if not isinstance(dist, BaseDistribution):
                raise ValueError(f"search space {key!r}: expected an Optuna distribution "
                                 f"(uniform, log_uniform, integer, categorical), got {dist!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown search sampler {self.sampler!r}; expected one of "
                             f"{sorted(SAMPLERS)}")
        if self.pruner not in PRUNERS:
            raise ValueError(f"unknown search pruner {self.pruner!r}; expected one of "
                             f"{sorted(PRUNERS)}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"search direction must be one of {DIRECTIONS}, got "
                             f"{self.direction!r}")
        if self.num_trials < 1:
            raise ValueError(f"search num_trials must be >= 1, got {self.num_trials}")
        for params in self.first_trials:
            unknown = sorted(set(params) - set(self.space))
            if unknown:
                raise ValueError(f"search first_trials keys {unknown} are not in the space "
                                 f"{sorted(self.space)}")
        if self.sampler == "grid":
            bad = [k for k, d in self.space.items() if not isinstance(d, CategoricalDistribution)]
            if bad:
                raise ValueError(f"the grid sampler needs categorical distributions; {bad} are not")

    def make_sampler(self, worker: int) -> optuna.samplers.BaseSampler:
        """The sampler of worker `worker`: seeded with seed + worker, so that workers do not
        draw the same random points; the grid sampler with `seed` in every worker, since its
        seed also orders the grid and every worker must number the grid alike."""
        kwargs = dict(self.sampler_kwargs)
        if self.sampler == "grid":
            kwargs.setdefault("search_space", {k: list(d.choices) for k, d in self.space.items()})
            return SAMPLERS["grid"](seed=self.seed, **kwargs)
        return SAMPLERS[self.sampler](seed=self.seed + worker, **kwargs)

    def make_pruner(self) -> optuna.pruners.BasePruner:
        return PRUNERS[self.pruner](**self.pruner_kwargs)
