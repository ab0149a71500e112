"""A 2-worker local sweep's training step time, before and after the workers split the cores.

Runs `launch.py --sweep --parallel=K` on configs/default.py:smoke (4 points: learning rate x
seed) with the code of two checkouts, alternating them round by round: `--before` (workers that
each take every core: XLA's pool and oneDNN's OpenMP team sized to the machine) and `--after`
(this checkout: each worker pinned to its share, cnnjax.sweep.launchers.core_shares). Reports
each point's median step time over its logged training intervals (the first, with the
compilation, left out) and the machine's load average around each sweep.

    python experiments/sweep_cores.py --before=/path/to/old/checkout [--rounds=2] [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

RESULTS = HERE / "results" / "sweep_cores.md"
FLAGS = ("--config.model.batch_norm=True", "--config.log_every_steps=4")


def step_times_ms(root: pathlib.Path) -> list[float]:
    """Each point's median training step time (ms) from its metrics.jsonl."""
    times = []
    for metrics in sorted(root.glob("*/metrics.jsonl")):
        rows = [json.loads(line) for line in metrics.read_text().splitlines()]
        train = [r for r in rows if r.get("split") == "train" and "images_per_sec" in r][1:]
        config = json.loads((metrics.parent / "config.json").read_text())
        times.append(statistics.median(1000 * config["batch_size"] / r["images_per_sec"]
                                       for r in train))
    return times


def sweep(repo: pathlib.Path, parallel: int) -> tuple[list[float], float, str]:
    """(step times per point, wall seconds, load averages before/after) of one sweep."""
    with tempfile.TemporaryDirectory() as root:
        load = os.getloadavg()[0]
        start = time.time()
        subprocess.run([sys.executable, str(repo / "launch.py"),
                        f"--config={repo / 'configs' / 'default.py'}:smoke", "--sweep",
                        f"--workdir={root}", f"--parallel={parallel}", *FLAGS], cwd=repo,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"}, check=True,
                       capture_output=True)
        wall = time.time() - start
        return step_times_ms(pathlib.Path(root)), wall, f"{load:.1f} / {os.getloadavg()[0]:.1f}"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, type=pathlib.Path,
                        help="a checkout whose sweep workers each take every core")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--record", action="store_true", help=f"append to {RESULTS}")
    args = parser.parse_args(argv)
    lines = ["| round | code | step ms per point | median | sweep wall s "
             "| load 1-min before / after |",
             "|---|---|---|---|---|---|"]
    medians: dict[str, list[float]] = {"before": [], "after": []}
    for r in range(args.rounds):
        for name, repo in (("before", args.before.resolve()), ("after", REPO)):
            times, wall, load = sweep(repo, args.parallel)
            medians[name].append(statistics.median(times))
            lines.append(f"| {r + 1} | {name} | {', '.join(f'{t:.1f}' for t in times)} | "
                         f"{medians[name][-1]:.1f} | {wall:.0f} | {load} |")
            print(lines[-1], flush=True)
    ratio = statistics.median(medians["before"]) / statistics.median(medians["after"])
    text = "\n".join(lines) + (f"\n\nStep time before / after (medians over rounds): "
                               f"{ratio:.2f}x\n")
    print(text)
    if args.record:
        import provenance
        provenance.append(RESULTS, "Sweep workers: step time before and after splitting the cores",
                          provenance.section_header("experiments/sweep_cores.py",
                                                    argv if argv is not None else sys.argv[1:])
                          + text)
    return text


if __name__ == "__main__":
    main()
