"""The record of how a sweep or search root was launched, so that a relaunch with another
command is refused instead of mixing two experiments under one root."""

from __future__ import annotations

import json
import pathlib
from typing import Any

from cnnjax.sweep.launchers import write_json

SWEEP_FILE = "sweep.json"
SEARCH_FILE = "search.json"


def check_or_write(root: pathlib.Path, filename: str, record: dict[str, Any]) -> None:
    """Writes ROOT/filename the first time; later raises ValueError (one line) when `record`
    differs from the one written, naming the fields that differ and their two values."""
    path = root / filename
    if path.is_file():
        old = json.loads(path.read_text())
        changed = {k: (old.get(k), record.get(k)) for k in sorted(set(old) | set(record))
                   if old.get(k) != record.get(k)}
        if changed:
            detail = "; ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in changed.items())
            raise ValueError(f"{str(root)!r} was launched with another command ({detail}); "
                             f"relaunch it with the same flags or use another --workdir "
                             f"(nothing was changed)")
        return
    root.mkdir(parents=True, exist_ok=True)
    write_json(path, record)


def read(root: pathlib.Path, filename: str) -> dict[str, Any] | None:
    """The record written by check_or_write, or None."""
    path = root / filename
    return json.loads(path.read_text()) if path.is_file() else None
