"""Wall-clock time from launch to a target test accuracy, over several seeds.

    python experiments/time_to_accuracy.py --config=configs/fast_cifar10.py --target=0.94 \
        --seeds=0,1,2,3,4 --root=runs/fast_cifar10 [--record=experiments/fast_cifar10/results.md] \
        [-- --config.num_epochs=10 ...]

Runs `launch.py --config=CONFIG --workdir=ROOT/seed_N --config.seed=N` once per seed, each in a
fresh workdir (an existing one is refused: a resumed run would not time a launch), reading its
progress lines as they are printed. The clock starts when the process is started, so it includes
Python and JAX start-up, compilation, data loading and the evaluations run on the way, as "from
launch to accuracy" means. Reports per seed the time and step of the first evaluation at or above
--target, the final accuracy and the total wall time; then the mean and sample standard deviation
over the seeds that reached the target. Arguments after `--` go to launch.py unchanged.
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import re
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from provenance import append, section_header  # noqa: E402

LAUNCH = HERE.parent / "launch.py"
EVAL_LINE = re.compile(r"^eval\s+step (\d+) .*\| top-1 ([0-9.]+)")


def time_one(config: str, workdir: pathlib.Path, seed: int, target: float,
             extra: list[str]) -> dict:
    """One launch: {seed, seconds_to_target, step_to_target, final_accuracy, wall_seconds}
    (the *_to_target entries None when the target was never reached)."""
    if workdir.exists():
        raise ValueError(f"{workdir} already exists; time_to_accuracy times fresh launches only "
                         f"(choose another --root or remove it)")
    command = [sys.executable, str(LAUNCH), f"--config={config}", f"--workdir={workdir}",
               f"--config.seed={seed}", *extra]
    start = time.perf_counter()
    row = {"seed": seed, "seconds_to_target": None, "step_to_target": None,
           "final_accuracy": None}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1) as process:
        tail = collections.deque(maxlen=20)  # the last lines, for an error message
        for line in process.stdout:
            tail.append(line)
            match = EVAL_LINE.match(line)
            if not match:
                continue
            accuracy = float(match.group(2))
            row["final_accuracy"] = accuracy
            if row["seconds_to_target"] is None and accuracy >= target:
                row["seconds_to_target"] = time.perf_counter() - start
                row["step_to_target"] = int(match.group(1))
    if process.returncode != 0:
        raise RuntimeError(f"seed {seed}: launch.py exited with {process.returncode}:\n"
                           + "".join(tail))
    row["wall_seconds"] = time.perf_counter() - start
    return row


def table(rows: list[dict], target: float) -> str:
    def fmt(value, spec):
        return "not reached" if value is None else format(value, spec)

    lines = [f"| seed | time to {100 * target:g}% (s) | step | final accuracy (%) | wall (s) |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['seed']} | {fmt(r['seconds_to_target'], '.1f')} | "
              f"{fmt(r['step_to_target'], 'd')} | {100 * r['final_accuracy']:.2f} | "
              f"{r['wall_seconds']:.1f} |" for r in rows]
    reached = [r["seconds_to_target"] for r in rows if r["seconds_to_target"] is not None]
    spread = f" +- {statistics.stdev(reached):.1f}" if len(reached) > 1 else ""
    mean = f"{statistics.mean(reached):.1f} s{spread}" if reached else "-"
    finals = [100 * r["final_accuracy"] for r in rows]
    lines += ["", f"Reached {100 * target:g}%: {len(reached)} of {len(rows)} seeds; time to "
                  f"target (mean +- sd over those): {mean}; final accuracy "
                  f"{statistics.mean(finals):.2f}%"
                  + (f" +- {statistics.stdev(finals):.2f}" if len(finals) > 1 else "")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    ours = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="configs/X.py[:ARG], as launch.py takes")
    parser.add_argument("--target", type=float, required=True, help="test accuracy in (0, 1]")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--root", type=pathlib.Path, required=True,
                        help="workdirs go to ROOT/seed_N")
    parser.add_argument("--record", type=pathlib.Path, help="append the table to this file")
    args = parser.parse_args(ours)
    if not 0 < args.target <= 1:
        parser.error(f"--target is a test accuracy in (0, 1], got {args.target}")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    rows = []
    for seed in seeds:
        rows.append(time_one(args.config, args.root / f"seed_{seed}", seed, args.target, extra))
        print(f"seed {seed}: {rows[-1]}", flush=True)
    text = table(rows, args.target)
    print(text)
    if args.record:
        append(args.record, f"Time to accuracy: {args.config}",
               section_header("experiments/time_to_accuracy.py", argv) + text + "\n")
    return rows


if __name__ == "__main__":
    main()
