"""A run's own config: WORKDIR/config.json, which every launch.py run writes, as a ConfigDict.

This file is also an ml_collections config file (`--config=PATH/run_config.py:WORKDIR`), which
is how `launch.py --mode=eval` and the analysis CLI default to the run's config when no --config
is given: the command line's `--config.KEY=VALUE` overrides then apply on top of it, parsed and
type-checked as for any config file.
"""

from __future__ import annotations

import json
import pathlib

import ml_collections


def config_path(workdir: str | pathlib.Path) -> pathlib.Path:
    return pathlib.Path(workdir) / "config.json"


def load(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
    """WORKDIR/config.json as a ConfigDict; ValueError naming the file if it is missing or not
    JSON."""
    path = config_path(workdir)
    if not path.is_file():
        raise ValueError(f"{str(path)!r} not found: the workdir must be a launch.py run directory "
                         f"(or give --config=PATH.py)")
    try:
        return ml_collections.ConfigDict(json.loads(path.read_text()))
    except json.JSONDecodeError as e:
        raise ValueError(f"{str(path)!r} is not a run's config ({e})") from e


def get_config(workdir: str) -> ml_collections.ConfigDict:
    """The ml_collections entry point: `--config=.../run_config.py:WORKDIR`."""
    return load(workdir)


def flag_value(workdir: str | pathlib.Path) -> str:
    """The --config value that loads WORKDIR/config.json."""
    return f"{pathlib.Path(__file__).resolve()}:{workdir}"
