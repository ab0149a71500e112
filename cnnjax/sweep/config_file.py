"""Loads an experiment config file the way `launch.py --config=PATH[:ARG]` does."""

from __future__ import annotations

import importlib.util
import pathlib
import types
from typing import Any

import ml_collections


def split_spec(spec: str) -> tuple[pathlib.Path, str | None]:
    """'configs/x.py:depth=56' -> (Path('configs/x.py'), 'depth=56')."""
    path, _, arg = spec.partition(":")
    return pathlib.Path(path), (arg or None)


def load_module(path: pathlib.Path) -> types.ModuleType:
    """Imports a config file by path; raises ValueError when it does not exist."""
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"_cnnjax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _call(fn: Any, arg: str | None) -> Any:
    return fn() if arg is None else fn(arg)


def load_config(spec: str) -> ml_collections.ConfigDict:
    """`get_config(ARG)` (or `get_config()`) of the file named by `spec`."""
    path, arg = split_spec(spec)
    return _call(load_module(path).get_config, arg)


def load_sweep(spec: str) -> list[dict[str, Any]]:
    """`get_sweep(ARG)` (or `get_sweep()`) of the file named by `spec`; ValueError if it has none."""
    path, arg = split_spec(spec)
    module = load_module(path)
    if not hasattr(module, "get_sweep"):
        raise ValueError(f"config file {str(path)!r} defines no get_sweep(); a sweep needs one")
    return list(_call(module.get_sweep, arg))


def load_search(spec: str):
    """`get_search(ARG)` (or `get_search()`) of the file named by `spec`, a
    cnnjax.sweep.search_space.Search; ValueError if the file has none or returns something else."""
    from cnnjax.sweep.search_space import Search  # Optuna is imported only by searches.

    path, arg = split_spec(spec)
    module = load_module(path)
    if not hasattr(module, "get_search"):
        raise ValueError(f"config file {str(path)!r} defines no get_search(); a search needs one")
    search = _call(module.get_search, arg)
    if not isinstance(search, Search):
        raise ValueError(f"get_search() of {str(path)!r} returned {type(search).__name__}, "
                         f"expected cnnjax.sweep.search_space.Search")
    return search
