"""Per-example gradients (vmap of grad) of cifar_resnet20 on the CPU: oneDNN against XLA.

    PYTHONPATH=. python experiments/per_example_grads.py [--batch=32] [--repeats=10] [--record]

(from the repository root: `PYTHONPATH=.` makes it import this checkout's cnnjax, not an
installed one.)

Compiles jit(vmap(grad(loss), (None, 0, 0))) of cifar_resnet20 on 32x32x3 inputs (batch norm in
inference mode, with running statistics: per-example gradients through batch statistics would
mix the examples) once with kernels="onednn" and once with kernels="xla", checks the oneDNN
gradients against XLA's, checks that the oneDNN program runs every convolution as one oneDNN call
per pass (the vmapped axis folded into the batch, or into the feature groups for the per-example
weight gradients; no loop over the examples, no XLA convolution), then times the two alternating
call by call for --repeats rounds, with the wall clock and with the process's CPU time (all its
threads: the work done, less sensitive than the wall clock to other jobs on the machine). Prints
the medians and the 1-minute load average and, with --record, appends them to
experiments/results/per_example_grads.md with the machine, date and command.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from provenance import append, section_header  # noqa: E402

from cnnjax import kernels, models  # noqa: E402
from cnnjax.kernels import onednn  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "per_example_grads.md"


def per_example_grads(model, kernel_choice: str):
    """jit of (params, batch_stats, x (B, 32, 32, 3), labels (B,)) -> per-example gradients,
    every parameter with a leading axis B, traced under kernels=kernel_choice."""
    scoped = kernels.KernelScoped(model, kernel_choice)

    def loss(params, stats, x, label):
        logits = scoped.apply({"params": params, "batch_stats": stats}, x[None], train=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, label[None]).mean()

    return jax.jit(jax.vmap(jax.grad(loss), (None, None, 0, 0)))


def _calls(hlo: str) -> dict[str, int]:
    """Number of custom calls per oneDNN target, and of XLA convolutions and loops, in `hlo`."""
    found = {p: len(re.findall(f'custom_call_target="cnnjax_onednn_{p}"', hlo))
             for p in onednn.conv.PASSES}
    found["xla convolution"] = len(re.findall(r" convolution\(", hlo))
    found["while loops"] = len(re.findall(r" while\(", hlo))
    return found


def measure(batch: int, repeats: int) -> tuple[dict, dict, dict]:
    """(median ms per call, wall and CPU, per path; the oneDNN program's call counts; the XLA
    program's)."""
    model = models.create("cifar_resnet20", num_classes=10)
    x = jax.random.normal(jax.random.PRNGKey(0), (batch, 32, 32, 3))
    labels = jnp.arange(batch) % 10
    variables = jax.jit(lambda x: model.init(jax.random.PRNGKey(1), x, train=False))(x[:2])
    args = (variables["params"], variables["batch_stats"], x, labels)
    fns = {choice: per_example_grads(model, choice) for choice in ("onednn", "xla")}
    compiled = {k: f.lower(*args).compile() for k, f in fns.items()}
    counts = {k: _calls(c.as_text()) for k, c in compiled.items()}
    ours, ref = (jax.block_until_ready(compiled[k](*args)) for k in ("onednn", "xla"))
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0,
                                   atol=1e-4 * float(np.abs(b).max()) + 1e-7)
    times = {f"{k} {clock}": [] for k in compiled for clock in ("wall", "cpu")}
    for _ in range(repeats):
        for k, c in compiled.items():
            wall, cpu = time.perf_counter(), time.process_time()
            jax.block_until_ready(c(*args))
            times[f"{k} wall"].append(time.perf_counter() - wall)
            times[f"{k} cpu"].append(time.process_time() - cpu)
    medians = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    return medians, counts["onednn"], counts["xla"]


def report(batch: int, medians: dict, onednn_calls: dict, xla_calls: dict) -> str:
    load = os.getloadavg()[0]
    lines = [f"Per-example gradients of cifar_resnet20, batch {batch}, 32x32x3 (median ms per "
             f"call; load average {load:.1f} at the end):", "",
             "| path | wall ms | CPU ms | compiled program |", "|---|---|---|---|"]
    for k, calls in (("onednn", onednn_calls), ("xla", xla_calls)):
        described = ", ".join(f"{n} {what}" for what, n in calls.items())
        lines.append(f"| {k} | {medians[f'{k} wall']:.1f} | {medians[f'{k} cpu']:.1f} | "
                     f"{described} |")
    lines += ["", f"XLA / oneDNN: wall {medians['xla wall'] / medians['onednn wall']:.2f}, "
                  f"CPU time {medians['xla cpu'] / medians['onednn cpu']:.2f}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    if jax.default_backend() != "cpu":
        raise SystemExit("per_example_grads.py measures the CPU backend; run it with "
                         "JAX_PLATFORMS=cpu")
    if onednn.load()[1] is not None:
        raise SystemExit(f"oneDNN is unavailable: {onednn.load()[1]}")
    medians, onednn_calls, xla_calls = measure(args.batch, args.repeats)
    text = report(args.batch, medians, onednn_calls, xla_calls)
    print(text)
    if args.record:
        append(RESULTS, "Per-example gradients (vmap of grad) on CPU: oneDNN vs XLA",
               section_header("experiments/per_example_grads.py", sys.argv[1:]) + text + "\n")


if __name__ == "__main__":
    main()
