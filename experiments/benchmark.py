"""Training-step throughput of cnnjax, side by side with PyTorch in the same run.

    python experiments/benchmark.py --model=cifar_resnet20 --batch=128 --compare=torch --steps=20

Measures the full training step (forward, backward, SGD-momentum update) on synthetic data
already on the device, after warm-up: median and spread of images/s over --steps steps, the
first step's compile time, memory (the step's buffers as XLA plans them, and the
measured peak: the device's on a GPU, the process's resident set on CPU) and, on a GPU, model
FLOPs utilisation against a bf16 matrix rate measured in the same run. --kernels runs the model
under that cnnjax.kernels switch ("auto", the default: Pallas on a GPU, oneDNN's convolutions on an
x86-64 CPU; "xla", "pallas", "onednn"); --also-kernels=xla times a second cnnjax step under that
switch, alternating with the first; --threads=N runs oneDNN and PyTorch on N threads
(OMP_NUM_THREADS, torch.set_num_threads) and, for N=1, XLA's Eigen operations on one;
--cpu-time times steps with the process's CPU time (with --threads=1: the work of a step, not
the waits for a core on a shared machine); --remat rematerialises each residual block in the backward
pass (config.remat);
--xla-option KEY=VALUE (repeatable) compiles the step with that XLA option, as
config.compiler_options does for training. With --compare=torch the same architecture in PyTorch
(torchvision/timm when installed, else experiments/torch_models.py; channels_last; bf16 autocast
on GPU; torch.compile where it works, eager otherwise) is measured in the same run, the two
alternating in rounds. Prints a table and, last, one JSON line. --record appends the result to
experiments/results/benchmarks.md with device, date and command.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import resource
import shlex
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import optax

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cnnjax import kernels, models  # noqa: E402
from cnnjax.data.synthetic import device_batch  # noqa: E402
from cnnjax.train.state import init_state  # noqa: E402
from cnnjax.train.step import train_step  # noqa: E402

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# What a timed step is measured with: the wall clock, or with --cpu-time the process's CPU time.
STEP_CLOCK = time.perf_counter


def _peak_memory_bytes() -> int:
    stats = jax.devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # host RSS on CPU


def planned_memory_bytes(compiled: jax.stages.Compiled) -> int:
    """Bytes of a compiled step's buffers in XLA's plan (arguments + outputs + temporaries -
    donated aliases): what decides whether a batch fits, independent of allocator caching."""
    # Summed by hand: the stats' own peak_memory_in_bytes leaves the temporaries out on CPU.
    stats = compiled.memory_analysis()
    return int(stats.argument_size_in_bytes + stats.output_size_in_bytes
               + stats.temp_size_in_bytes - stats.alias_size_in_bytes)


def matmul_rate() -> float:
    """bf16 matrix-product FLOP/s measured on this device (the MFU denominator)."""
    n = 8192
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.bfloat16)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    times = []
    for _ in range(10):
        t = time.perf_counter()
        f(a).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times)


class CnnjaxRunner:
    """One jit-compiled training step of a cnnjax model, reusing cnnjax.train's step."""

    def __init__(self, name: str, batch: int, size: int | None, dtype: str, num_classes: int,
                 kernel_choice: str = "auto", remat: bool = False,
                 compiler_options: dict[str, str] | None = None):
        spec = models.get_spec(name)
        shape = spec.input_shape if size is None else (size, size, spec.input_shape[-1])
        overrides = {"dtype": DTYPES[dtype]} if dtype != "float32" else {}
        if remat:
            overrides["remat"] = True
        model = models.create(name, num_classes=num_classes, **overrides)
        self.model = kernels.KernelScoped(model, kernel_choice)
        self.tx = optax.sgd(0.01, momentum=0.9)
        input_dtype = jnp.dtype(spec.input_dtype)
        self.state = init_state(self.model, self.tx, shape, 0, use_ema=False,
                                input_dtype=input_dtype)
        x = jax.ShapeDtypeStruct((batch, *shape), input_dtype)
        out = jax.eval_shape(lambda v, x: self.model.apply(v, x, train=False),
                             self.state.variables(), x)
        # Segmentation models (U-Net) score every pixel: (N, H, W, classes) logits.
        self.batch = device_batch(batch, shape, num_classes, dtype=input_dtype,
                                  label_shape=out.shape[1:-1])
        step = lambda s, b: train_step(s, b, model=self.model, tx=self.tx,
                                       schedule=optax.constant_schedule(0.01), seed=0,
                                       label_smoothing=0.0, ema_decay=0.0, pass_loss=False)
        self.step = jax.jit(step, donate_argnums=0, compiler_options=compiler_options or {})
        t = time.perf_counter()
        self.compiled = self.step.lower(self.state, self.batch).compile()
        self.compile_s = time.perf_counter() - t
        self.planned_memory = planned_memory_bytes(self.compiled)
        cost = self.compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        self.flops = float(cost.get("flops", 0.0)) if cost else 0.0
        self.run(1)

    def run(self, steps: int) -> list[float]:
        times = []
        for _ in range(steps):
            t = STEP_CLOCK()
            self.state, metrics = self.compiled(self.state, self.batch)
            jax.block_until_ready(metrics["loss"])
            times.append(STEP_CLOCK() - t)
        return times


class TorchRunner:
    def __init__(self, name: str, batch: int, size: int | None, dtype: str, num_classes: int):
        import torch
        import torch_models

        spec = models.get_spec(name)
        h, w, c = spec.input_shape if size is None else (size, size, spec.input_shape[-1])
        self.torch = torch
        if os.environ.get("OMP_NUM_THREADS"):
            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = torch_models.create(name, num_classes).to(self.device)
        self.model = self.model.to(memory_format=torch.channels_last)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.x = torch.randn(batch, c, h, w, device=self.device).to(memory_format=torch.channels_last)
        self.y = torch.randint(0, num_classes, (batch,), device=self.device)
        self.amp = self.device == "cuda" and dtype == "bfloat16"
        self.mode = "eager"
        step = self._step
        if self.device == "cuda":
            try:
                step = torch.compile(self._step)
                self.mode = "compile"
            except Exception:  # noqa: BLE001 -- torch.compile failing is reported, not fatal
                self.mode = "eager"
        self.fn = step
        t = time.perf_counter()
        try:
            self.run(1)
        except Exception:  # noqa: BLE001 -- a compile failure falls back to eager, as documented
            self.fn, self.mode = self._step, "eager"
            self.run(1)
        self.compile_s = time.perf_counter() - t

    def _step(self):
        torch = self.torch
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.amp):
            out = self.model(self.x)
            out = out.logits if hasattr(out, "logits") else out
            loss = torch.nn.functional.cross_entropy(out, self.y)
        loss.backward()
        self.opt.step()
        return loss

    def run(self, steps: int) -> list[float]:
        times = []
        for _ in range(steps):
            t = STEP_CLOCK()
            self.fn()
            if self.device == "cuda":
                self.torch.cuda.synchronize()
            times.append(STEP_CLOCK() - t)
        return times


def summarize(times: list[float], batch: int) -> dict:
    ips = sorted(batch / t for t in times)
    return {"median": statistics.median(ips), "min": ips[0], "max": ips[-1]}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--kernels", choices=kernels.CHOICES, default="auto")
    p.add_argument("--also-kernels", choices=kernels.CHOICES, default=None,
                   help="also time the cnnjax step under this kernels switch (alternating)")
    p.add_argument("--remat", action="store_true", help="rematerialise each block (ResNets)")
    p.add_argument("--xla-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an XLA compile option for the cnnjax step (repeatable)")
    p.add_argument("--compare", choices=["none", "torch"], default="none")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2, help="alternations of cnnjax and torch")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--threads", type=int, default=None,
                   help="threads for oneDNN, PyTorch and (when 1) XLA's Eigen operations")
    p.add_argument("--cpu-time", action="store_true", help="time steps in process CPU time")
    p.add_argument("--record", action="store_true", help="append to experiments/results/benchmarks.md")
    args = p.parse_args(argv)
    if args.threads is not None:
        # Read when XLA's CPU client and libgomp (loaded with oneDNN or torch) start, below.
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        if args.threads == 1:
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                       " --xla_cpu_multi_thread_eigen=false")
    global STEP_CLOCK
    STEP_CLOCK = time.process_time if args.cpu_time else time.perf_counter
    if args.steps < 1 or args.batch < 1:
        p.error(f"--steps and --batch must be >= 1, got {args.steps} and {args.batch}")
    num_classes = args.num_classes or models.get_spec(args.model).num_classes
    bad = [o for o in args.xla_option if "=" not in o]
    if bad:
        p.error(f"--xla-option must be KEY=VALUE, got {bad}")
    options = dict(o.split("=", 1) for o in args.xla_option)
    if args.remat and "remat" not in models.create(args.model).__dataclass_fields__:
        p.error(f"--remat: model {args.model!r} has no remat option (the ResNets have)")

    runners = {"cnnjax": CnnjaxRunner(args.model, args.batch, args.image_size, args.dtype,
                                      num_classes, args.kernels, args.remat, options)}
    if args.also_kernels:
        runners["also"] = CnnjaxRunner(args.model, args.batch, args.image_size, args.dtype,
                                       num_classes, args.also_kernels, args.remat, options)
    if args.compare == "torch":
        runners["torch"] = TorchRunner(args.model, args.batch, args.image_size, args.dtype, num_classes)
    per_round = max(args.steps // args.rounds, 1)
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(args.rounds):
        for name, runner in runners.items():
            times[name] += runner.run(per_round)
    device = jax.devices()[0].device_kind if jax.default_backend() != "cpu" else "cpu"
    result = {"model": args.model, "batch": args.batch, "device": device, "dtype": args.dtype,
              "kernels": args.kernels, "remat": args.remat, "xla_options": options,
              "threads": args.threads, "clock": "cpu" if args.cpu_time else "wall"}
    if args.also_kernels:
        result["also_kernels"] = args.also_kernels
    rows = []
    for name, runner in runners.items():
        s = summarize(times[name], args.batch)
        result[f"{name}_images_per_sec"] = round(s["median"], 1)
        rows.append((name, s, runner.compile_s, getattr(runner, "mode", "jit")))
    cj = runners["cnnjax"]
    result["compile_s"] = round(cj.compile_s, 2)
    result["planned_memory_mb"] = round(cj.planned_memory / 2 ** 20, 1)
    result["peak_memory_mb"] = round(_peak_memory_bytes() / 2 ** 20, 1)
    if jax.default_backend() == "gpu" and cj.flops:
        step_s = statistics.median(times["cnnjax"])
        result["mfu"] = round(cj.flops / step_s / matmul_rate(), 4)
    if "torch" in runners:
        result["ratio"] = round(result["cnnjax_images_per_sec"] / result["torch_images_per_sec"], 3)
        result["torch_mode"] = runners["torch"].mode  # "compile", or "eager" where it failed
    if "also" in runners:
        result["kernels_ratio"] = round(result["cnnjax_images_per_sec"] /
                                        result["also_images_per_sec"], 3)
        result["also_compile_s"] = round(runners["also"].compile_s, 2)
        result["also_planned_memory_mb"] = round(runners["also"].planned_memory / 2 ** 20, 1)

    print(f"{args.model}, batch {args.batch}, {args.dtype}, {device}, {len(times['cnnjax'])} timed steps each")
    print(f"{'':14} {'images/s (median)':>18} {'min':>9} {'max':>9} {'first step s':>13}  mode")
    for name, s, compile_s, mode in rows:
        name = {"cnnjax": f"cnnjax[{args.kernels}]",
                "also": f"cnnjax[{args.also_kernels}]"}.get(name, name)
        print(f"{name:14} {s['median']:18,.1f} {s['min']:9,.1f} {s['max']:9,.1f} {compile_s:13.2f}  {mode}")
    if args.record:
        record(result, argv if argv is not None else sys.argv[1:])
    print(json.dumps(result))
    return result


def record(result: dict, argv: list[str]) -> None:
    path = HERE / "results" / "benchmarks.md"
    path.parent.mkdir(exist_ok=True)
    if not path.exists():
        path.write_text("# Benchmarks (measured; appended by `experiments/benchmark.py --record`)\n\n"
                        "| date | device | model | batch | dtype | cnnjax img/s | torch img/s | ratio | "
                        "compile s | XLA plan MB | JAX | command |\n"
                        "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    command = "python experiments/benchmark.py " + " ".join(shlex.quote(a) for a in argv)
    rows = [(result["kernels"], result["cnnjax_images_per_sec"], result.get("ratio", ""),
             result["compile_s"], result["planned_memory_mb"])]
    if "also_kernels" in result:  # the second switch's step, against the same torch figure
        torch_ips = result.get("torch_images_per_sec")
        rows.append((result["also_kernels"], result["also_images_per_sec"],
                     round(result["also_images_per_sec"] / torch_ips, 3) if torch_ips else "",
                     result["also_compile_s"], result["also_planned_memory_mb"]))
    how = "".join([f", {result['threads']} thread(s)" if result["threads"] else "",
                   ", images per CPU-second" if result["clock"] == "cpu" else ""])
    with open(path, "a") as f:
        for choice, ips, ratio, compile_s, planned_mb in rows:
            f.write(f"| {datetime.date.today()} | {result['device']} | {result['model']} "
                    f"[kernels={choice}{how}] | {result['batch']} | {result['dtype']} | {ips} | "
                    f"{result.get('torch_images_per_sec', '')} | {ratio} | "
                    f"{compile_s} | {planned_mb} | {jax.__version__} | `{command}` |\n")


if __name__ == "__main__":
    main()
