"""Where a search's Optuna study lives and what its trials are on disk.

A search root DIR holds `search.json` (the launch command's config, shared overrides and
storage), the study (Optuna's journal file `DIR/study.journal` unless a database URL was given)
and one ordinary cnnjax workdir per trial, `DIR/trial_NNNN`.
"""

from __future__ import annotations

import pathlib
import shlex
import sys
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage

from cnnjax.sweep import root_record
from cnnjax.sweep.grid import Point
from cnnjax.sweep.launchers import LAUNCH_PY

STUDY_NAME = "cnnjax"
JOURNAL_FILE = "study.journal"


def storage(root: pathlib.Path, url: str | None) -> optuna.storages.BaseStorage | str:
    """The study's storage: the journal file ROOT/study.journal (safe on network filesystems:
    it locks with a symlink, not SQLite's POSIX locks), or the database URL given."""
    if url:
        return url
    return JournalStorage(JournalFileBackend(str(root / JOURNAL_FILE)))


def record(root: pathlib.Path, spec: str, overrides: Sequence[str], url: str | None) -> None:
    """Records the launch command in ROOT/search.json; refuses (ValueError, one line) a relaunch
    with another config, other shared overrides or another storage."""
    root_record.check_or_write(root, root_record.SEARCH_FILE,
                               {"config": spec, "overrides": list(overrides), "storage": url,
                                "study_name": STUDY_NAME})


def load(root: pathlib.Path) -> tuple[optuna.Study, dict[str, Any]]:
    """The study of a search root and its launch record; ValueError if ROOT holds no search."""
    rec = root_record.read(root, root_record.SEARCH_FILE)
    if rec is None:
        raise ValueError(f"{str(root)!r} holds no search ({root_record.SEARCH_FILE} missing)")
    study = optuna.load_study(study_name=rec["study_name"], storage=storage(root, rec["storage"]))
    return study, rec


def trial_workdir(root: pathlib.Path, number: int) -> pathlib.Path:
    return root / f"trial_{number:04d}"


def trial_command(root: pathlib.Path, rec: dict[str, Any], number: int,
                  params: dict[str, Any]) -> str:
    """The `launch.py` command that trains trial `number` alone, as an ordinary run."""
    argv = [sys.executable, str(LAUNCH_PY), f"--config={rec['config']}",
            f"--workdir={trial_workdir(root, number)}", *rec["overrides"],
            *Point(str(number), params).flags()]
    return shlex.join(argv)
