"""First-step compile time and planned memory of every registered model's training step.

    python experiments/compile_times.py [--models=all|name,name] [--batch=2] [--limit-s=60] [--record]

For each model, builds the same jit-compiled training step as experiments/benchmark.py (forward,
backward, SGD-momentum update) at its registered input size and `--batch`, and reports the
seconds to lower and compile it, the bytes of its buffers in XLA's plan (benchmark.py's
planned_memory_bytes), and the seconds of one step after the warm-up step (checking that the
compiled step runs). Compile time barely depends on the batch; the planned
memory does. Prints a table, flags any compile over --limit-s (issue 10's bound for ResNet-152
on CPU) and exits non-zero if one is over; --record appends the table to
experiments/results/compile_times.md with the machine, date and command.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchmark import CnnjaxRunner  # noqa: E402
from provenance import append, section_header  # noqa: E402

from cnnjax import models  # noqa: E402

RESULTS = HERE / "results" / "compile_times.md"


def measure(name: str, batch: int) -> dict:
    """Compile seconds, planned MB and one step's seconds of `name`'s training step."""
    spec = models.get_spec(name)
    runner = CnnjaxRunner(name, batch, None, "float32", spec.num_classes)
    step_s = runner.run(1)[0]
    return {"model": name, "input": "x".join(map(str, spec.input_shape)),
            "compile_s": runner.compile_s, "planned_mb": runner.planned_memory / 2 ** 20,
            "step_s": step_s}


def table(rows: list[dict], batch: int) -> str:
    lines = [f"| model | input | compile s (training step) | XLA plan MB at batch {batch} "
             f"| one step s |", "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['input']} | {r['compile_s']:.1f} | {r['planned_mb']:,.0f} | "
              f"{r['step_s']:.3f} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="all", help="'all' or comma-separated registered names")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--limit-s", type=float, default=60.0)
    p.add_argument("--record", action="store_true")
    args = p.parse_args(argv)
    names = models.list_models() if args.models == "all" else args.models.split(",")
    unknown = sorted(set(names) - set(models.list_models()))
    if unknown:
        p.error(f"--models: unknown {unknown}; registered: {models.list_models()}")
    if args.batch < 1:
        p.error(f"--batch must be >= 1, got {args.batch}")
    rows = []
    start = time.perf_counter()
    for name in names:
        rows.append(measure(name, args.batch))
        r = rows[-1]
        print(f"{name}: compile {r['compile_s']:.1f} s, plan {r['planned_mb']:,.0f} MB", flush=True)
        jax.clear_caches()  # each model's executables are dropped before the next compiles
    text = table(rows, args.batch)
    slow = [r["model"] for r in rows if r["compile_s"] > args.limit_s]
    summary = (f"\nSlowest compile: {max(rows, key=lambda r: r['compile_s'])['model']}; "
               f"over {args.limit_s:g} s: {', '.join(slow) or 'none'}. "
               f"Total wall time {time.perf_counter() - start:.0f} s.\n")
    print(text + summary)
    if args.record:
        append(RESULTS, "Training-step compile time and planned memory of every model",
               section_header("experiments/compile_times.py",
                              argv if argv is not None else sys.argv[1:]) + text + summary)
    if slow:
        raise SystemExit(f"compile time over {args.limit_s:g} s: {slow}")
    return rows


if __name__ == "__main__":
    main()
