"""Where XLA's CPU backend loses to PyTorch on a CIFAR ResNet-20 training step.

    python experiments/bench_conv_cpu.py [--batch=128] [--repeats=10] [--record]

For each 3x3 convolution shape of ResNet-20 (stage widths 16/32/64 at 32/16/8 pixels), times the
three convolutions of a training step, forward, input gradient and weight gradient, as XLA
compiles them (jax.vjp of lax.conv_general_dilated) and as PyTorch runs them
(aten.convolution_backward, channels_last), one after the other in one process; then the
alternative lowerings of the weight gradient tried in cnnjax (9 per-tap matrix products; one
im2col product). Prints a table and, with --record, appends it to
experiments/results/cpu_conv_breakdown.md with the machine, date and command. Medians over --repeats calls after a warm-up call.
"""

from __future__ import annotations

import argparse
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

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "cpu_conv_breakdown.md"
SHAPES = ((32, 16), (16, 32), (8, 64))  # (spatial size, channels) of ResNet-20's three stages
DN = ("NHWC", "HWIO", "NHWC")


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def _conv(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=DN)


def _dw_per_tap(x, g):
    """Weight gradient as 9 matrix products (C x NHW) @ (NHW x O), one per kernel tap."""
    h, w = g.shape[1:3]
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return jnp.stack([jnp.stack([jnp.einsum("nhwc,nhwo->co", xp[:, i:i + h, j:j + w], g)
                                 for j in range(3)]) for i in range(3)])


def _dw_im2col(x, g):
    """Weight gradient as one product of the (NHW x 9C) patch matrix with (NHW x O)."""
    n, h, w, c = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = jnp.concatenate([xp[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], -1)
    return lax.dot_general(cols.reshape(-1, 9 * c), g.reshape(-1, g.shape[-1]),
                           (((0,), (0,)), ((), ()))).reshape(3, 3, c, -1)


def measure(batch: int, repeats: int) -> list[dict]:
    import torch

    rows = []
    for size, ch in SHAPES:
        key = jax.random.PRNGKey(size)
        x = jax.random.normal(key, (batch, size, size, ch))
        w = jax.random.normal(jax.random.fold_in(key, 1), (3, 3, ch, ch))
        g = jax.random.normal(jax.random.fold_in(key, 2), (batch, size, size, ch))
        fwd = jax.jit(_conv)
        dx = jax.jit(lambda x, w, g: jax.vjp(_conv, x, w)[1](g)[0])
        dw = jax.jit(lambda x, w, g: jax.vjp(_conv, x, w)[1](g)[1])
        per_tap, im2col = jax.jit(_dw_per_tap), jax.jit(_dw_im2col)
        ref = np.asarray(dw(x, w, g))
        for alt in (per_tap, im2col):  # an alternative only counts if it computes the same
            np.testing.assert_allclose(np.asarray(alt(x, g)), ref, rtol=2e-3, atol=2e-2)
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
            "torch fwd": lambda: torch.nn.functional.conv2d(tx, tw, padding=1),
            "xla dx": lambda: dx(x, w, g).block_until_ready(),
            "torch dx": t_back([True, False, False]),
            "xla dw": lambda: dw(x, w, g).block_until_ready(),
            "torch dw": t_back([False, True, False]),
            "dw per-tap": lambda: per_tap(x, g).block_until_ready(),
            "dw im2col": lambda: im2col(x, g).block_until_ready(),
        }
        row = {"shape": f"{batch}x{size}x{size}x{ch} -> {ch}"}
        row.update({k: _median_ms(fn, repeats) for k, fn in timings.items()})
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    cols = ["xla fwd", "torch fwd", "xla dx", "torch dx", "xla dw", "torch dw", "dw per-tap",
            "dw im2col"]
    lines = ["| conv (3x3, stride 1) | " + " | ".join(f"{c} ms" for c in cols) +
             " | xla/torch fwd+dx+dw |", "|---" * (len(cols) + 2) + "|"]
    for r in rows:
        xla = r["xla fwd"] + r["xla dx"] + r["xla dw"]
        torch_ = r["torch fwd"] + r["torch dx"] + r["torch dw"]
        lines.append(f"| {r['shape']} | " + " | ".join(f"{r[c]:.1f}" for c in cols) +
                     f" | {xla / torch_:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    if jax.default_backend() != "cpu":
        raise SystemExit("bench_conv_cpu.py measures the CPU backend; run it with JAX_PLATFORMS=cpu")
    import torch
    text = table(measure(args.batch, args.repeats))
    print(text)
    if args.record:
        section = section_header("experiments/bench_conv_cpu.py", sys.argv[1:],
                                 f"torch {torch.__version__}")
        append(RESULTS, "XLA vs PyTorch convolutions on CPU (ResNet-20 shapes)",
               section + text + "\n")

if __name__ == "__main__":
    main()
