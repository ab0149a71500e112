"""Where XLA's CPU backend loses to PyTorch on a CIFAR ResNet-20 training step.

    python experiments/bench_conv_cpu.py [--batch=128] [--repeats=10] [--threads=N] [--record]

For each 3x3 convolution shape of ResNet-20 (stage widths 16/32/64 at 32/16/8 pixels), times the
three convolutions of a training step, forward, input gradient and weight gradient, as XLA
compiles them (jax.vjp of lax.conv_general_dilated), as cnnjax's oneDNN custom calls run them
(cnnjax.kernels.onednn, jit-compiled like XLA's: "onednn" on NHWC activations, as cnnjax does;
"onednn any" with oneDNN choosing the activations' format too, reordered around each call) and as
PyTorch runs them (aten.convolution_backward, channels_last), in one process, the twelve
alternating call by call for --repeats rounds after a warm-up call each. The oneDNN results are checked against XLA's first.
--threads=N runs oneDNN and PyTorch on N threads (OMP_NUM_THREADS, torch.set_num_threads) and,
for N=1, XLA's convolutions on one (--xla_cpu_multi_thread_eigen=false), which on a machine shared with other jobs keeps the timings from
measuring how the scheduler treats one library's thread team; --cpu-time times with the process's
CPU time instead of the wall clock (with --threads=1: the work done, not the waits for a core). Prints the medians and, with --record, appends them to experiments/results/cpu_conv_breakdown.md
with the machine, date and command.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from provenance import append, section_header  # noqa: E402

from cnnjax.kernels import onednn  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "cpu_conv_breakdown.md"
SHAPES = ((32, 16), (16, 32), (8, 64))  # (spatial size, channels) of ResNet-20's three stages
DN = ("NHWC", "HWIO", "NHWC")


def _medians_ms(fns: dict, repeats: int, clock=time.perf_counter) -> dict[str, float]:
    """Median ms per call of each function, timed in turn, one call of each per round."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = clock()
            fn()
            times[name].append(clock() - t)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def _conv(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=DN)


def _onednn(x, w):
    return onednn.conv2d(x, w, (1, 1), ((1, 1), (1, 1)), (1, 1), 1)


def _onednn_any(x, w):
    return onednn.conv2d(x, w, (1, 1), ((1, 1), (1, 1)), (1, 1), 1, any_activations=True)


def _passes(conv):
    """Jitted forward, input gradient and weight gradient of `conv`."""
    return (jax.jit(conv), jax.jit(lambda x, w, g: jax.vjp(conv, x, w)[1](g)[0]),
            jax.jit(lambda x, w, g: jax.vjp(conv, x, w)[1](g)[1]))


def measure(batch: int, repeats: int, clock=time.perf_counter) -> list[dict]:
    import torch

    rows = []
    for size, ch in SHAPES:
        key = jax.random.PRNGKey(size)
        x = jax.random.normal(key, (batch, size, size, ch))
        w = jax.random.normal(jax.random.fold_in(key, 1), (3, 3, ch, ch))
        g = jax.random.normal(jax.random.fold_in(key, 2), (batch, size, size, ch))
        fwd, dx, dw = _passes(_conv)
        o_fwd, o_dx, o_dw = _passes(_onednn)
        a_fwd, a_dx, a_dw = _passes(_onednn_any)
        # The oneDNN passes only count if they compute what XLA does.
        for ref, *alts in ((fwd(x, w), o_fwd(x, w), a_fwd(x, w)),
                           (dx(x, w, g), o_dx(x, w, g), a_dx(x, w, g)),
                           (dw(x, w, g), o_dw(x, w, g), a_dw(x, w, g))):
            scale = float(jnp.abs(ref).max())
            for alt in alts:
                np.testing.assert_allclose(np.asarray(alt), np.asarray(ref), rtol=0,
                                           atol=1e-5 * scale)
        tx = torch.from_numpy(np.asarray(x)).permute(0, 3, 1, 2).contiguous(
            memory_format=torch.channels_last)
        tw = torch.from_numpy(np.asarray(w)).permute(3, 2, 0, 1).contiguous()
        tg = torch.from_numpy(np.asarray(g)).permute(0, 3, 1, 2).contiguous(
            memory_format=torch.channels_last)

        def t_back(mask):
            return lambda: torch.ops.aten.convolution_backward(
                tg, tx, tw, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)

        timings = {
            "xla fwd": lambda: fwd(x, w).block_until_ready(),
            "onednn fwd": lambda: o_fwd(x, w).block_until_ready(),
            "onednn any fwd": lambda: a_fwd(x, w).block_until_ready(),
            "torch fwd": lambda: torch.nn.functional.conv2d(tx, tw, padding=1),
            "xla dx": lambda: dx(x, w, g).block_until_ready(),
            "onednn dx": lambda: o_dx(x, w, g).block_until_ready(),
            "onednn any dx": lambda: a_dx(x, w, g).block_until_ready(),
            "torch dx": t_back([True, False, False]),
            "xla dw": lambda: dw(x, w, g).block_until_ready(),
            "onednn dw": lambda: o_dw(x, w, g).block_until_ready(),
            "onednn any dw": lambda: a_dw(x, w, g).block_until_ready(),
            "torch dw": t_back([False, True, False]),
        }
        row = {"shape": f"{batch}x{size}x{size}x{ch} -> {ch}"}
        row.update(_medians_ms(timings, repeats, clock))
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    libs, passes = ("xla", "onednn", "onednn any", "torch"), ("fwd", "dx", "dw")
    cols = [f"{lib} {p}" for p in passes for lib in libs]
    rows = rows + [{"shape": "all three shapes", **{c: sum(r[c] for r in rows) for c in cols}}]
    lines = ["| conv (3x3, stride 1) | " + " | ".join(f"{c} ms" for c in cols) +
             " | xla/onednn fwd+dx+dw | onednn any/onednn | onednn/torch |",
             "|---" * (len(cols) + 4) + "|"]
    for r in rows:
        total = {lib: sum(r[f"{lib} {p}"] for p in passes) for lib in libs}
        lines.append(f"| {r['shape']} | " + " | ".join(f"{r[c]:.1f}" for c in cols) +
                     f" | {total['xla'] / total['onednn']:.2f} | "
                     f"{total['onednn any'] / total['onednn']:.2f} | "
                     f"{total['onednn'] / total['torch']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for every library (default: each library's own)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time with the process's CPU time (use with --threads=1)")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    if args.threads is not None:
        # Read when XLA's CPU client and libgomp (loaded with oneDNN) start, both below.
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        if args.threads == 1:
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                       " --xla_cpu_multi_thread_eigen=false")
    if jax.default_backend() != "cpu":
        raise SystemExit("bench_conv_cpu.py measures the CPU backend; run it with JAX_PLATFORMS=cpu")
    if onednn.load()[1] is not None:
        raise SystemExit(f"oneDNN is unavailable: {onednn.load()[1]}")
    import torch
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.cpu_time else time.perf_counter
    text = table(measure(args.batch, args.repeats, clock))
    print(text)
    if args.record:
        section = section_header("experiments/bench_conv_cpu.py", sys.argv[1:],
                                 f"torch {torch.__version__}")
        append(RESULTS, "XLA vs PyTorch convolutions on CPU (ResNet-20 shapes)",
               section + text + "\n")

if __name__ == "__main__":
    main()
