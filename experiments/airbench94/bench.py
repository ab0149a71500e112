"""Seconds per airbench94 epoch (48 steps of 1,024), cnnjax vs the PyTorch implementation,
measured alternately in one process.

    python experiments/airbench94/bench.py --rounds=3 --steps=2
    python experiments/airbench94/bench.py --batch=512 --torch-format=channels_last

cnnjax: the compiled train step of `configs/airbench94.py` itself (device augmentation, summed
loss, Nesterov SGD with the per-parameter rules, Lookahead-EMA), built by the trainer, on a fixed
random batch. PyTorch: experiments/airbench94/torch_airbench.py's network, optimiser and loss
(forward, backward, step) on the same batch, float32, NCHW or with --torch-format=channels_last PyTorch's NHWC (the
network and its input in torch.channels_last: the layout a PyTorch user who wants CPU speed
picks). Both with the process's threads, or with --threads=N on N (OMP_NUM_THREADS for oneDNN
and PyTorch, and for N=1 XLA's Eigen operations on one thread too: with --threads=1 the CPU
seconds are the work of a step, whatever else shares the cores). --batch sets the batch (default 1,024, the config's;
the seconds per epoch are then for 48 steps of that batch).
Each round times --steps steps of one framework and then of the other (after one untimed warm-up
step each; cnnjax's compile is reported separately). Prints per-step wall and CPU seconds, their
medians over rounds, and the ratios (cnnjax / PyTorch: above 1 means cnnjax is slower), then one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import torch_airbench  # noqa: E402
from cnnjax.sweep.config_file import load_module  # noqa: E402
from cnnjax.train import trainer  # noqa: E402
from cnnjax.train.sharding import global_batch, make_mesh, shardings  # noqa: E402
from cnnjax.train.step import compile_steps  # noqa: E402

STEPS_PER_EPOCH = 48


def cnnjax_step(batch_np: dict, xla_options: dict[str, str], kernels: str | None):
    """(step() running one compiled train step, compile seconds); step.hlo_text() is the
    compiled step's HLO (for experiments/profile_cpu_step.py)."""
    config = load_module(HERE.parents[1] / "configs" / "airbench94.py").get_config()
    config.compiler_options = xla_options
    if kernels:
        config.model.kernels = kernels
    config.batch_size = len(batch_np["label"])
    config.dataset.name = "synthetic"
    config.dataset.options = {"image_shape": (32, 32, 3), "num_classes": 10,
                              "num_examples": 2 * config.batch_size}
    config.whitening_init = None  # random data: the whitening's cost is not the step's
    train_ds, _, model, schedule, tx, _ = trainer.build(config)
    mesh = make_mesh()
    data_sharding, replicated = shardings(mesh)
    state = jax.device_put(trainer.initial_state(config, model, tx, train_ds.image_shape,
                                               train_ds.input_dtype, train_ds.num_classes),
                           replicated)
    train_fn, _ = compile_steps(model, tx, schedule, config, train_ds.num_classes, mesh,
                                data_sharding, replicated)
    batch = global_batch(batch_np, data_sharding)
    holder = {"state": state}
    t0 = time.perf_counter()
    holder["state"], m = train_fn(holder["state"], batch)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0

    def step():
        holder["state"], metrics = train_fn(holder["state"], batch)
        jax.block_until_ready(metrics)

    step.hlo_text = lambda: train_fn.lower(holder["state"], batch).compile().as_text()
    return step, compile_s


def torch_step(batch_np: dict, channels_last: bool):
    net = torch_airbench.Net()
    opt = torch_airbench.make_optimizer(net, {**torch_airbench.HYP,
                                              "batch_size": len(batch_np["label"])})
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.2, reduction="none")
    x = torch.from_numpy(batch_np["image"]).permute(0, 3, 1, 2).contiguous()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(batch_np["label"].astype(np.int64))
    net.train()

    def step():
        loss = loss_fn(net(x), y).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def timed(step, n: int) -> tuple[float, float]:
    """(wall, CPU) seconds per step over n steps."""
    w, c = time.perf_counter(), time.process_time()
    for _ in range(n):
        step()
    return (time.perf_counter() - w) / n, (time.process_time() - c) / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--xla-option", action="append", default=[], metavar="KEY=VALUE",
                   help="compile cnnjax's step with this XLA option (repeatable), e.g. "
                        "xla_cpu_experimental_ynn_fusion_type= for Eigen convolutions")
    p.add_argument("--kernels", choices=("auto", "xla", "onednn", "pallas"), default=None,
                   help="cnnjax.kernels.dispatch backend (default: the config's)")
    p.add_argument("--batch", type=int, default=1024, help="examples per step")
    p.add_argument("--torch-format", choices=("nchw", "channels_last"), default="nchw",
                   help="PyTorch's activation layout")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for oneDNN, PyTorch and (when 1) XLA's Eigen operations")
    args = p.parse_args()
    if args.threads is not None:
        if args.threads < 1:
            sys.exit(f"error: --threads={args.threads}; expected >= 1")
        # Read when XLA's CPU client and libgomp start, below.
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
        if args.threads == 1:
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                       " --xla_cpu_multi_thread_eigen=false")
    bad = [o for o in args.xla_option if "=" not in o]
    if bad:
        sys.exit(f"error: --xla-option {bad[0]!r}; expected KEY=VALUE")
    xla_options = dict(o.split("=", 1) for o in args.xla_option)
    if args.rounds < 1 or args.steps < 1 or args.batch < 1:
        sys.exit(f"error: --rounds={args.rounds} --steps={args.steps} --batch={args.batch}; "
                 f"each must be >= 1")
    rng = np.random.default_rng(0)
    n = args.batch
    batch = {"image": rng.random((n, 32, 32, 3), np.float32),
             "label": rng.integers(0, 10, n).astype(np.int32),
             "index": np.arange(n, dtype=np.int32), "epoch": np.zeros(n, np.int32)}
    jstep, compile_s = cnnjax_step(batch, xla_options, args.kernels)
    tstep = torch_step(batch, args.torch_format == "channels_last")
    tstep()  # warm-up
    jstep()
    rows = {"cnnjax": [], "torch": []}
    for r in range(args.rounds):
        for name, step in (("cnnjax", jstep), ("torch", tstep)):
            rows[name].append(timed(step, args.steps))
            wall, cpu = rows[name][-1]
            print(f"round {r} {name:6s} {wall:7.2f} s/step wall {cpu:7.2f} s/step CPU", flush=True)
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
           for k, v in rows.items()}
    result = {
        "cnnjax_s_per_epoch_wall": round(med["cnnjax"][0] * STEPS_PER_EPOCH, 1),
        "torch_s_per_epoch_wall": round(med["torch"][0] * STEPS_PER_EPOCH, 1),
        "ratio_wall": round(med["cnnjax"][0] / med["torch"][0], 3),
        "ratio_cpu": round(med["cnnjax"][1] / med["torch"][1], 3),
        "cnnjax_compile_s": round(compile_s, 1),
        "rounds": args.rounds, "steps": args.steps, "batch": args.batch,
        "torch_format": args.torch_format, "threads": args.threads, "xla_options": xla_options,
        "kernels": args.kernels or "config", "jax": jax.__version__,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "machine": torch_airbench.machine(), "load_average_1min": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python " + " ".join(sys.argv),
    }
    print(f"per epoch: cnnjax {result['cnnjax_s_per_epoch_wall']} s, PyTorch "
          f"{result['torch_s_per_epoch_wall']} s (wall, medians); cnnjax/PyTorch "
          f"{result['ratio_wall']} wall, {result['ratio_cpu']} CPU")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
