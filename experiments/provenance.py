"""Where a recorded benchmark figure came from: date, machine, library versions and command.

Every `--record` of an experiments/ script appends a section that starts with `section_header`,
so a results file keeps each measurement with what produced it and never loses an earlier one.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import platform
import shlex

import jax


def machine() -> str:
    """'<CPU model or arch>, <n> cores[, <accelerator>]' of this process's machine."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    device = jax.devices()[0]
    accel = "" if device.platform == "cpu" else f", {device.device_kind}"
    return f"{cpu}, {cores} cores{accel}"


def section_header(script: str, argv: list[str], extra: str = "") -> str:
    """A Markdown section title and provenance line for one recorded run of `script`."""
    command = " ".join(shlex.quote(a) for a in ["python", script, *argv])
    versions = f"JAX {jax.__version__}" + (f", {extra}" if extra else "")
    return (f"\n## {datetime.datetime.now():%Y-%m-%d %H:%M} — {machine()}\n\n"
            f"{versions}; `{command}`\n\n")


def append(path: pathlib.Path, title: str, section: str) -> None:
    """Appends `section` to the results file `path`, creating it with `title` first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(f"# {title}\n")
    with path.open("a") as f:
        f.write(section)
