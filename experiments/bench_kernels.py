"""The Pallas kernels of cnnjax.kernels against XLA's lowering of their cnnjax.ops references.

    python experiments/bench_kernels.py            # on a GPU: writes experiments/results/kernels.md
    python experiments/bench_kernels.py --smoke    # any backend: tiny shapes, Pallas interpreter

Shapes are the layers of MobileNetV2, EfficientNet-B0 and ResNet-50 at 224x224 (batch 128 by
default), in float32 and bfloat16, forward and forward+backward (the forward output and all
gradients, so nothing is dead-code eliminated). Each function is jit-compiled, warmed up, then
timed as --rounds medians of --reps back-to-back calls ended by one block_until_ready: the
calls queue on the device, so the per-call time is the device's, not Python's dispatch.

"Ideal bytes" is the traffic of reading every operand once and writing every result once (for
batch_norm_act forward: x in, y out, as the issue's target counts it); GB/s and "% copy" divide
it by the time and by this GPU's measured copy bandwidth (a jit-compiled x * 2 over 1 GiB).
Targets (issue 6): depthwise fwd+bwd >= 2x XLA, pooling fwd+bwd >= 1.5x XLA, batch_norm_act
>= 85% of the copy bandwidth. With mobilenet_v2 registered, one training step is also timed
with kernels "xla" and "pallas" (experiments/benchmark.py's step).

Refuses to record anywhere but on a GPU; --smoke runs tiny shapes through the interpreter,
checks the kernels against the references and records nothing (tests/test_kernels_models.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import pathlib
import shlex
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cnnjax import kernels, models, ops  # noqa: E402
from cnnjax.kernels.batch_norm_act import reference as batch_norm_act_reference  # noqa: E402

RESULTS = HERE / "results" / "kernels.md"
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
TARGETS = {"depthwise_conv2d": ("speedup", 2.0), "max_pool2d": ("speedup", 1.5),
           "avg_pool2d": ("speedup", 1.5), "batch_norm_act": ("copy", 0.85)}


@dataclasses.dataclass(frozen=True)
class Case:
    """One layer: `op` of cnnjax.kernels on an (H, W, C) input; `where` names its models."""

    op: str
    where: str
    hwc: tuple[int, int, int]
    k: int = 3
    stride: int = 1
    padding: int = 0
    activation: str = "relu"
    residual: bool = False

    def label(self) -> str:
        h, w, c = self.hwc
        if self.op == "batch_norm_act":
            extra = f"{self.activation}{' +res' if self.residual else ''}"
        else:
            extra = f"{self.k}x{self.k}/{self.stride}"
        return f"{h}x{w}x{c} {extra}"


def _cases() -> list[Case]:
    dw = {}  # (h, c, k, s) -> models: MobileNetV2's 3x3 and EfficientNet-B0's 3x3/5x5 layers
    for where, layers in (
            ("MobileNetV2", [(112, 32, 3, 1), (112, 96, 3, 2), (56, 144, 3, 1), (56, 144, 3, 2),
                             (28, 192, 3, 1), (28, 192, 3, 2), (14, 384, 3, 1), (14, 576, 3, 1),
                             (14, 576, 3, 2), (7, 960, 3, 1)]),
            ("EfficientNet-B0", [(112, 32, 3, 1), (112, 96, 3, 2), (56, 144, 3, 1), (56, 144, 5, 2),
                                 (28, 240, 5, 1), (28, 240, 3, 2), (14, 480, 3, 1), (14, 480, 5, 1),
                                 (14, 672, 5, 1), (14, 672, 5, 2), (7, 1152, 5, 1),
                                 (7, 1152, 3, 1)])):
        for layer in layers:
            dw.setdefault(layer, []).append(where)
    cases = [Case("depthwise_conv2d", ", ".join(w), (h, h, c), k, s) for (h, c, k, s), w in dw.items()]
    cases += [Case("max_pool2d", "ResNet-50 stem", (112, 112, 64), 3, 2, 1),
              Case("avg_pool2d", "ResNet-50 stem shape", (112, 112, 64), 3, 2, 1),
              Case("avg_pool2d", "ResNet-50-D shortcut", (56, 56, 256), 2, 2, 0)]
    cases += [Case("batch_norm_act", "ResNet-50", (112, 112, 64)),
              Case("batch_norm_act", "ResNet-50", (56, 56, 256), residual=True),
              Case("batch_norm_act", "ResNet-50", (28, 28, 512), residual=True),
              Case("batch_norm_act", "ResNet-50", (7, 7, 2048), residual=True),
              Case("batch_norm_act", "MobileNetV2", (56, 56, 144), activation="relu6"),
              Case("batch_norm_act", "MobileNetV2", (28, 28, 32), activation="identity",
                   residual=True),
              Case("batch_norm_act", "EfficientNet-B0", (112, 112, 32), activation="swish"),
              Case("batch_norm_act", "EfficientNet-B0", (14, 14, 672), activation="swish")]
    return cases


SMOKE_CASES = [Case("depthwise_conv2d", "smoke", (9, 7, 20), 3, 2),
               Case("max_pool2d", "smoke", (9, 7, 20), 3, 2, 1),
               Case("avg_pool2d", "smoke", (9, 7, 20), 3, 2, 1),
               Case("batch_norm_act", "smoke", (5, 7, 20), activation="swish", residual=True)]


def _operation(case: Case, use_kernel: bool):
    """(f, parameter shapes): f(x, *params) computing the case with the kernel or reference."""
    c = case.hwc[2]
    if case.op == "depthwise_conv2d":
        f = kernels.depthwise_conv2d if use_kernel else functools.partial(
            ops.depthwise_conv2d, padding="SAME")
        return functools.partial(f, stride=case.stride), [(case.k, case.k, 1, c)]
    if case.op in ("max_pool2d", "avg_pool2d"):
        f = getattr(kernels, case.op) if use_kernel else (
            ops.max_pool if case.op == "max_pool2d" else ops.avg_pool)
        return functools.partial(f, window=case.k, stride=case.stride, padding=case.padding), []
    f = kernels.batch_norm_act if use_kernel else batch_norm_act_reference
    if case.residual:
        return (lambda x, s, b, r: f(x, s, b, residual=r, activation=case.activation),
                [(c,), (c,), "x"])
    return functools.partial(f, activation=case.activation), [(c,), (c,)]


def _inputs(case: Case, batch: int, dtype, shapes) -> list[jax.Array]:
    keys = jax.random.split(jax.random.PRNGKey(0), len(shapes) + 1)
    x = jax.random.normal(keys[0], (batch, *case.hwc), jnp.float32).astype(dtype)
    params = [x + 0.5 if s == "x" else jax.random.normal(k, s, jnp.float32)
              for k, s in zip(keys[1:], shapes)]
    return [x, *params]


def _program(case: Case, setting: kernels.Setting | None, backward: bool):
    """The jit-compiled forward, or forward and all gradients for the given output cotangents,
    under `setting` (None: the reference): f(args, cotangents)."""
    f, _ = _operation(case, setting is not None)

    def run(args, cotangents):
        if not backward:
            return f(*args)
        y, pullback = jax.vjp(f, *args)
        return y, pullback(cotangents)

    def traced(args, cotangents):
        if setting is None:
            return run(args, cotangents)
        with kernels.use(setting.kernels, interpret=setting.interpret):
            return run(args, cotangents)

    return jax.jit(traced)


def _cotangents(case: Case, args: list[jax.Array]):
    """Random output cotangents (a constant one would cancel in batch norm's gradient)."""
    f, _ = _operation(case, False)
    outs, tree = jax.tree_util.tree_flatten(jax.eval_shape(f, *args))
    keys = jax.random.split(jax.random.PRNGKey(1), len(outs))
    return jax.tree_util.tree_unflatten(tree, [
        jax.random.normal(k, o.shape, jnp.float32).astype(o.dtype) for k, o in zip(keys, outs)])


def _time(fn, args, reps: int, rounds: int) -> float:
    """Median seconds per call of `rounds` rounds of `reps` queued calls, after warm-up."""
    for _ in range(2):
        jax.block_until_ready(fn(*args))
    per_call = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(reps):
            out = fn(*args)
        jax.block_until_ready(out)
        per_call.append((time.perf_counter() - start) / reps)
    return statistics.median(per_call)


def _ideal_bytes_and_flops(case: Case, batch: int, itemsize: int, backward: bool) -> tuple[int, int]:
    h, w, c = case.hwc
    x = batch * h * w * c * itemsize
    if case.op == "batch_norm_act":
        r = x if case.residual else 0
        fwd = x + r + x  # x and the residual in, y out
        bwd = x + x + r + x + r  # x, dy and the residual in, dx and the residual's gradient out
        return fwd + (bwd if backward else 0), 0
    pad = case.padding if case.op != "depthwise_conv2d" else None
    ho = -(-h // case.stride) if pad is None else (h + 2 * pad - case.k) // case.stride + 1
    wo = -(-w // case.stride) if pad is None else (w + 2 * pad - case.k) // case.stride + 1
    y = batch * ho * wo * c * itemsize
    if case.op == "depthwise_conv2d":
        flops = 2 * case.k * case.k * batch * ho * wo * c
        wb = case.k * case.k * c * itemsize
        # forward x, w -> y; input gradient dy, w -> dx; filter gradient x, dy -> dw
        return (x + wb + y) * (3 if backward else 1), flops * (3 if backward else 1)
    if case.op == "max_pool2d" and backward:  # + the int8 window index, written and read
        index = y // itemsize
        return x + y + index + index + y + x, 0
    return (x + y) * (2 if backward else 1), 0


def copy_bandwidth() -> float:
    """Bytes/s of a jit-compiled x * 2 over 1 GiB of float32 (one read, one write)."""
    x = jnp.ones((2 ** 28,), jnp.float32)
    seconds = _time(jax.jit(lambda v: v * 2), (x,), reps=10, rounds=5)
    return 2 * x.nbytes / seconds


def _uses_kernel(fn, args) -> bool:
    """Whether fn's jaxpr holds a Pallas kernel's primitive (cnnjax.kernels)."""
    text = str(jax.make_jaxpr(fn)(*args))
    return any(f"{name}_fwd" in text for name in ("batch_norm_act", "max_pool2d", "avg_pool2d",
                                                    "depthwise_conv2d"))


def _max_error(a, b) -> float:
    leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    worst = 0.0
    for u, v in zip(leaves_a, leaves_b):
        u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
        worst = max(worst, float(np.max(np.abs(u - v)) / max(np.max(np.abs(v)), 1e-30)))
    return worst


def measure(cases: list[Case], batch: int, dtypes: list[str], setting: kernels.Setting,
            reps: int, rounds: int, bandwidth: float | None) -> list[dict]:
    """One row per (case, dtype, pass): times, speedup, bandwidth, and the kernel's error."""
    rows = []
    for case in cases:
        for dtype_name in dtypes:
            dtype = DTYPES[dtype_name]
            _, shapes = _operation(case, False)
            inputs = _inputs(case, batch, dtype, shapes)
            args = (inputs, _cotangents(case, inputs))
            for backward in (False, True):
                ref, ker = _program(case, None, backward), _program(case, setting, backward)
                t_ref, t_ker = _time(ref, args, reps, rounds), _time(ker, args, reps, rounds)
                moved, flops = _ideal_bytes_and_flops(case, batch, jnp.dtype(dtype).itemsize,
                                                      backward)
                row = {"op": case.op, "where": case.where, "layer": case.label(),
                       "dtype": dtype_name, "pass": "fwd+bwd" if backward else "fwd",
                       "xla_us": t_ref * 1e6, "pallas_us": t_ker * 1e6,
                       "speedup": t_ref / t_ker, "gbps": moved / t_ker / 1e9,
                       "gflops": flops / t_ker / 1e9, "kernel_ran": _uses_kernel(ker, args),
                       "interpreted": setting.interpret,
                       "max_rel_error": _max_error(ker(*args), ref(*args))}
                row["copy_fraction"] = moved / t_ker / bandwidth if bandwidth else None
                rows.append(row)
                print(_format_row(row), flush=True)
    return rows


def _target(row: dict) -> str:
    kind, value = TARGETS[row["op"]]
    if row["interpreted"] or (row["pass"] != "fwd+bwd" and kind == "speedup"):
        return ""  # interpreter timings mean nothing
    if not row["kernel_ran"]:
        return "fell back to XLA"
    if kind == "speedup":
        return f">= {value}x: {'met' if row['speedup'] >= value else 'missed'}"
    if row["copy_fraction"] is None:
        return ""
    return f">= {value:.0%} copy: {'met' if row['copy_fraction'] >= value else 'missed'}"


HEADER = ("| kernel | layer | models | dtype | pass | XLA us | Pallas us | speedup | Pallas GB/s | "
          "% copy | GFLOP/s | max rel err | target |")


def _format_row(row: dict) -> str:
    copy = f"{row['copy_fraction']:.0%}" if row["copy_fraction"] is not None else "-"
    flops = f"{row['gflops']:.0f}" if row["gflops"] else "-"
    return (f"| {row['op']} | {row['layer']} | {row['where']} | {row['dtype']} | {row['pass']} | "
            f"{row['xla_us']:.1f} | {row['pallas_us']:.1f} | {row['speedup']:.2f} | "
            f"{row['gbps']:.0f} | {copy} | {flops} | {row['max_rel_error']:.1e} | {_target(row)} |")


def _verdicts(rows: list[dict]) -> list[str]:
    """Per kernel: how often it beats XLA, and the default the measurements support."""
    lines = []
    for op in TARGETS:
        mine = [r for r in rows if r["op"] == op and r["pass"] == "fwd+bwd"]
        if not mine:
            continue
        wins = sum(r["speedup"] > 1.0 and r["kernel_ran"] for r in mine)
        verdict = "use pallas" if wins * 2 > len(mine) else "keep xla (pallas loses on most shapes)"
        lines.append(f"- {op}: faster than XLA in {wins} of {len(mine)} fwd+bwd rows -> {verdict}")
    return lines


def end_to_end(batch: int, dtype: str, steps: int) -> dict[str, float] | None:
    """images/s of a MobileNetV2 training step with kernels "xla" and "pallas" (None when the
    model is not registered)."""
    if "mobilenet_v2" not in models.list_models():
        return None
    import benchmark  # experiments/benchmark.py: the same training step as its table

    result = {}
    for choice in kernels.CHOICES:
        with kernels.use(choice):  # the step is traced and compiled inside the runner
            runner = benchmark.CnnjaxRunner("mobilenet_v2", batch, None, dtype, 1000)
        result[choice] = benchmark.summarize(runner.run(steps), batch)["median"]
    return result


def write(path: pathlib.Path, rows: list[dict], bandwidth: float, e2e, argv: list[str]) -> None:
    device = jax.devices()[0].device_kind
    command = "python experiments/bench_kernels.py " + " ".join(shlex.quote(a) for a in argv)
    lines = [f"# Pallas kernels vs XLA ({device})", "",
             f"Measured {datetime.datetime.now():%Y-%m-%d %H:%M} on {device}, JAX {jax.__version__}, "
             f"with `{command}`. Copy bandwidth (x * 2 over 1 GiB): {bandwidth / 1e9:.0f} GB/s. "
             "Times are medians per call; see the script's docstring for the method.", "",
             HEADER, "|" + "---|" * 13, *(_format_row(r) for r in rows), "", "## Verdicts", "",
             *_verdicts(rows), ""]
    if e2e is not None:
        lines += ["## MobileNetV2 training step (images/s, median)", "",
                  f"- xla: {e2e['xla']:.1f}; pallas: {e2e['pallas']:.1f}; "
                  f"ratio {e2e['pallas'] / e2e['xla']:.2f}", ""]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true",
                   help="tiny shapes in the Pallas interpreter on any backend; records nothing")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--ops", default=",".join(TARGETS), help="kernels to measure")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--e2e-steps", type=int, default=20, help="0 skips the MobileNetV2 step")
    p.add_argument("--out", type=pathlib.Path, default=RESULTS)
    args = p.parse_args(argv)
    dtypes, ops_wanted = args.dtypes.split(","), args.ops.split(",")
    if any(d not in DTYPES for d in dtypes) or any(o not in TARGETS for o in ops_wanted):
        p.error(f"--dtypes take {sorted(DTYPES)} and --ops {sorted(TARGETS)}, got "
                f"{args.dtypes!r} and {args.ops!r}")
    if min(args.batch, args.reps, args.rounds) < 1:
        p.error("--batch, --reps and --rounds must be >= 1")
    if args.smoke:
        print(HEADER)
        return measure([c for c in SMOKE_CASES if c.op in ops_wanted], 2, dtypes,
                       kernels.Setting("pallas", True), reps=1, rounds=1, bandwidth=None)
    if jax.default_backend() != "gpu":
        raise SystemExit(f"bench_kernels.py records GPU measurements only; the backend here is "
                         f"{jax.default_backend()!r}. Use --smoke to exercise it on this machine.")
    bandwidth = copy_bandwidth()
    print(f"{jax.devices()[0].device_kind}: copy bandwidth {bandwidth / 1e9:.0f} GB/s\n{HEADER}")
    rows = measure([c for c in _cases() if c.op in ops_wanted], args.batch, dtypes,
                   kernels.Setting("pallas", False), args.reps, args.rounds, bandwidth)
    e2e = end_to_end(args.batch, "bfloat16", args.e2e_steps) if args.e2e_steps else None
    print("\n".join(_verdicts(rows)))
    if e2e is not None:
        print(f"MobileNetV2 step images/s: {e2e}")
    write(args.out, rows, bandwidth, e2e, argv if argv is not None else sys.argv[1:])
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
