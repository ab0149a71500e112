"""Sweep grids: the list of override dicts a config's `get_sweep()` returns, and their run names.

A sweep is a list of dicts mapping dotted config keys to values, e.g.
`product(zip_(**{"optimizer.learning_rate": [0.1, 0.05]}), **{"model.depth": [20, 56]})`.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

Overrides = dict[str, Any]


def product(*grids: Sequence[Overrides], **axes: Sequence[Any]) -> list[Overrides]:
    """Cartesian product of sub-grids and keyword axes (dotted keys passed as `**{"a.b": [...]}`).

    `product(**{"a": [1, 2], "b": [3]})` == `[{"a": 1, "b": 3}, {"a": 2, "b": 3}]`.
    """
    factors = list(grids) + [[{key: v} for v in values] for key, values in axes.items()]
    points = []
    for combo in itertools.product(*factors):
        merged: Overrides = {}
        for part in combo:
            clash = set(merged) & set(part)
            if clash:
                raise ValueError(f"sweep axes set the same key twice: {sorted(clash)}")
            merged.update(part)
        points.append(merged)
    return points


def zip_(**axes: Sequence[Any]) -> list[Overrides]:
    """Axes that vary together: `zip_(a=[1, 2], b=[3, 4])` == `[{"a": 1, "b": 3}, {"a": 2, "b": 4}]`."""
    lengths = {key: len(values) for key, values in axes.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"zip_ axes must have equal lengths, got {lengths}")
    return [dict(zip(axes, values)) for values in zip(*axes.values())]


@dataclasses.dataclass(frozen=True)
class Point:
    """One run of a sweep: its directory name under the sweep root and its config overrides."""

    name: str
    overrides: Overrides

    def flags(self) -> list[str]:
        """The overrides as `launch.py` flags: `--config.KEY=VALUE`."""
        return [f"--config.{key}={format_value(value)}" for key, value in self.overrides.items()]


def format_value(value: Any) -> str:
    """Formats a value the way ml_collections' config flags parse it back."""
    if isinstance(value, (list, tuple)):
        return "(" + ",".join(format_value(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return str(value)


def _short(key: str, all_keys: Sequence[str]) -> str:
    leaf = key.rsplit(".", 1)[-1]
    # The leaf alone reads best; keep the full key when two axes share a leaf name.
    return leaf if sum(k.rsplit(".", 1)[-1] == leaf for k in all_keys) == 1 else key


def run_name(overrides: Mapping[str, Any], all_keys: Sequence[str]) -> str:
    """A readable directory name such as `learning_rate=0.05,depth=56`."""
    if not overrides:
        return "base"
    parts = [f"{_short(k, all_keys)}={format_value(v)}" for k, v in overrides.items()]
    return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", ",".join(parts))


def check_key(config: ml_collections.ConfigDict, key: str) -> None:
    node: Any = config
    for i, part in enumerate(key.split(".")):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            where = ".".join(key.split(".")[:i]) or "the config"
            allowed = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            raise ValueError(f"sweep override {key!r}: {where} has no field {part!r}; "
                             f"fields there: {allowed}")
        node = node[part]


def resolve_points(config: ml_collections.ConfigDict, sweep: Sequence[Overrides]) -> list[Point]:
    """Validates a sweep against its config and names every point.

    Raises ValueError for an empty sweep, a key the config lacks (listing the fields it has),
    or two points with the same name.
    """
    if not sweep:
        raise ValueError("the sweep expands to zero points; get_sweep() must return at least one "
                         "override dict")
    keys = list(dict.fromkeys(k for point in sweep for k in point))
    for key in keys:
        check_key(config, key)
    points = [Point(run_name(o, keys), dict(o)) for o in sweep]
    seen: dict[str, Overrides] = {}
    for p in points:
        if p.name in seen:
            raise ValueError(f"two sweep points have the same run name {p.name!r}: "
                             f"{seen[p.name]} and {p.overrides}")
        seen[p.name] = p.overrides
    return points
