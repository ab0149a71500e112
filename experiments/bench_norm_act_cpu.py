"""Training batch norm + activation on the CPU, in isolation: XLA's lowering of ops.batch_norm
(`kernels="xla"`), the CPU extension's kernel (`kernels="onednn"`) and PyTorch channels_last
(BatchNorm2d + the activation), forward alone and forward + backward, at airbench94's shapes
(batch 512) or those given, side by side in one process, median of --repeats.

    python experiments/bench_norm_act_cpu.py --activation=gelu --threads=2

Times are wall milliseconds per call; "fwd+bwd" returns y and the input gradient of a fixed
cotangent, so nothing is left out by dead-code elimination.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--activation", default="gelu",
                   choices=("identity", "relu", "relu6", "swish", "hard_swish", "gelu"))
    p.add_argument("--shapes", default="512x15x15x64,512x7x7x256,512x3x3x256",
                   help="comma-separated NxHxWxC")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS and torch threads")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    if args.threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # read when libgomp starts (below)
    try:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
        assert all(len(s) == 4 and min(s) > 0 for s in shapes)
    except (ValueError, AssertionError):
        sys.exit(f"error: --shapes={args.shapes!r}; expected NxHxWxC[,NxHxWxC...], e.g. 8x4x4x16")

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    import torch.nn.functional as F

    from cnnjax import kernels, ops

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch_act = {"identity": lambda z: z, "relu": F.relu, "relu6": F.relu6, "swish": F.silu,
                 "hard_swish": F.hardswish, "gelu": F.gelu}[args.activation]
    rows = []
    for shape in shapes:
        c = shape[-1]
        x = jax.random.normal(jax.random.PRNGKey(0), shape) * 2 + 1
        bias = jnp.zeros((c,))
        cot = jax.random.normal(jax.random.PRNGKey(1), shape)
        bn = lambda x, b: ops.batch_norm(x, None, b, train=True, eps=1e-12,
                                         activation=args.activation)[0]
        row = {"shape": "x".join(map(str, shape))}
        for name, switch in (("xla", "xla"), ("cpu_kernel", "onednn")):
            with kernels.use(switch):
                fwd = jax.jit(bn)
                fwd_bwd = jax.jit(lambda x, b, ct: (lambda out: (out[0], out[1](ct)[0]))(
                    jax.vjp(bn, x, b)))
                row[f"{name}_fwd"] = _median_ms(lambda: jax.block_until_ready(fwd(x, bias)),
                                                args.repeats)
                row[f"{name}_fwd_bwd"] = _median_ms(
                    lambda: jax.block_until_ready(fwd_bwd(x, bias, cot)), args.repeats)
        xt = torch.tensor(np.asarray(x)).permute(0, 3, 1, 2).contiguous(
            memory_format=torch.channels_last).requires_grad_(True)
        ct = torch.tensor(np.asarray(cot)).permute(0, 3, 1, 2).contiguous(
            memory_format=torch.channels_last)
        norm = torch.nn.BatchNorm2d(c, eps=1e-12)
        norm.weight.requires_grad_(False)

        def torch_fwd():
            with torch.no_grad():
                torch_act(norm(xt))

        def torch_fwd_bwd():
            xt.grad = None
            torch_act(norm(xt)).backward(ct)

        row["torch_fwd"] = _median_ms(torch_fwd, args.repeats)
        row["torch_fwd_bwd"] = _median_ms(torch_fwd_bwd, args.repeats)
        rows.append(row)
        print(f"{row['shape']:>14} {args.activation}: fwd ms xla {row['xla_fwd']:.1f}, cpu kernel "
              f"{row['cpu_kernel_fwd']:.1f}, torch {row['torch_fwd']:.1f} | fwd+bwd xla "
              f"{row['xla_fwd_bwd']:.1f}, cpu kernel {row['cpu_kernel_fwd_bwd']:.1f}, torch "
              f"{row['torch_fwd_bwd']:.1f}")
    print(json.dumps({"activation": args.activation, "threads": args.threads, "rows": rows,
                      "jax": jax.__version__, "torch": torch.__version__,
                      "load_average_1min": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
