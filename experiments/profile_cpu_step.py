"""Per-operation breakdown of a CPU training step, cnnjax's (jax.profiler: one trace event per
XLA thunk, i.e. per fusion, custom call or copy) and PyTorch's (torch.profiler, self CPU time per
aten op), for CIFAR ResNet-20 and the airbench94 net.

    python experiments/profile_cpu_step.py --model=cifar_resnet20 --batch=128
    python experiments/profile_cpu_step.py --model=airbench94 --batch=512 --kernels=xla

cnnjax's thunks are grouped by what the compiled HLO says they hold (a oneDNN convolution pass,
a fusion with a reduction: batch-norm statistics and their backward sums, the loss; an
elementwise fusion: the normalisation, activations, residual additions, their derivatives, the
optimiser; pooling; copies) and by direction (the backward pass's ops carry `transpose(` in
their JAX name). PyTorch's ops are grouped by name (convolution, batch norm, activation, ...).
--threads=N runs oneDNN, PyTorch and (N=1) XLA on N threads, as experiments/benchmark.py does.
Times are per step: the events' durations over --steps traced steps, after warm-up; with both
cores XLA may run two thunks at once, so cnnjax's sum can exceed the step's wall time. Prints
two markdown tables (and the top entries of each side) and one JSON line; --record appends
them to experiments/results/cpu_step_profile.md with the date, the load average and the
command. The PyTorch side is channels_last float32 (the same nets as experiments/benchmark.py
and experiments/airbench94/bench.py).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import pathlib
import re
import shlex
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "airbench94"))

import jax  # noqa: E402
import numpy as np  # noqa: E402

# HLO instruction line: `%name = type opcode(...), ...`
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = .*? ([a-z][\w\-]*)\(")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%([\w.\-]+) ")


def hlo_index(text: str) -> tuple[dict[str, tuple[str, str, str]], dict[str, set[str]]]:
    """(instruction name -> (opcode, called computation or custom-call target, JAX op_name)
    for every instruction, computation name -> the opcodes it holds)."""
    instructions, opcodes, current = {}, collections.defaultdict(set), None
    for line in text.splitlines():
        head = _COMPUTATION.match(line)
        if head and line.rstrip().endswith("{"):
            current = head.group(1)
            continue
        m = _INSTRUCTION.match(line)
        if not m:
            continue
        name, opcode = m.groups()
        opcodes[current].add(opcode)
        callee = re.search(r'calls=%([\w.\-]+)', line) or re.search(
            r'custom_call_target="([^"]+)"', line)
        op_name = re.search(r'op_name="([^"]+)"', line)
        instructions[name] = (opcode, callee.group(1) if callee else "",
                              op_name.group(1) if op_name else "")
    return instructions, opcodes


def classify(name: str, instructions, opcodes) -> str:
    """A thunk's category: what it computes, and fwd/bwd."""
    opcode, callee, op_name = instructions.get(name, ("?", "", ""))
    direction = "bwd" if "transpose(" in op_name else "fwd"
    if opcode == "custom-call" and callee.startswith("cnnjax_onednn_"):
        return f"oneDNN {callee.removeprefix('cnnjax_onednn_')}"
    inner = opcodes.get(callee, set()) | {opcode}
    if "select-and-scatter" in inner:
        return "pool (select-and-scatter)"
    if "reduce-window" in inner:
        return f"pool (reduce-window) {direction}"
    if "convolution" in inner:
        return f"XLA convolution {direction}"
    if "dot" in inner:
        return f"dense (dot) {direction}"
    if "reduce" in inner:
        return f"reduction fusion {direction}"
    if opcode in ("copy", "transpose") or inner <= {"copy", "transpose", "parameter", "bitcast"}:
        return "copy/transpose"
    if opcode in ("fusion", "add", "multiply", "select", "maximum") or "fusion" in opcode:
        return f"elementwise fusion {direction}"
    return f"other ({opcode})"


def cnnjax_profile(step, hlo_text: str, steps: int) -> tuple[dict, dict, float]:
    """(category -> ms per step, thunk -> ms per step, wall ms per step) over `steps` steps."""
    instructions, opcodes = hlo_index(hlo_text)
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp, create_perfetto_trace=True)
        t = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - t) / steps * 1e3
        jax.profiler.stop_trace()
        trace = glob.glob(f"{tmp}/**/*.trace.json.gz", recursive=True)[0]
        with gzip.open(trace) as f:
            events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    per_thunk = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in instructions:
            per_thunk[e["name"]] += e.get("dur", 0) / 1e3 / steps
    per_category = collections.Counter()
    for name, ms in per_thunk.items():
        per_category[classify(name, instructions, opcodes)] += ms
    return per_category, per_thunk, wall


TORCH_GROUPS = (("convolution", ("conv", "mkldnn_convolution")),
                ("batch norm", ("batch_norm",)),
                ("activation", ("relu", "threshold", "gelu")),
                ("pooling", ("pool",)),
                ("optimizer", ("_foreach", "sgd", "lerp")),
                ("loss", ("cross_entropy", "log_softmax", "nll_loss")),
                ("add/mul/copy", ("add", "mul", "copy", "clone", "fill", "zero", "div", "sum",
                                  "pad", "empty")),
                ("dense", ("addmm", "mm", "linear")))


def torch_group(name: str) -> str:
    lower = name.lower()
    for group, keys in TORCH_GROUPS:
        if any(k in lower for k in keys):
            return group
    return "other"


def torch_profile(step, steps: int) -> tuple[dict, dict, float]:
    """(group -> self CPU ms per step, aten op -> self CPU ms per step, wall ms per step)."""
    import torch.profiler as tp
    with tp.profile(activities=[tp.ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - t) / steps * 1e3
    per_op = collections.Counter()
    for a in prof.key_averages():
        if a.self_cpu_time_total > 0:
            per_op[a.key] += a.self_cpu_time_total / 1e3 / steps
    per_group = collections.Counter()
    for name, ms in per_op.items():
        per_group[torch_group(name)] += ms
    return per_group, per_op, wall


def resnet20_steps(batch: int, kernels: str):
    from benchmark import CnnjaxRunner, TorchRunner
    j = CnnjaxRunner("cifar_resnet20", batch, None, "float32", 10, kernels)
    t = TorchRunner("cifar_resnet20", batch, None, "float32", 10)
    return lambda: j.run(1), j.compiled.as_text(), t._step


def airbench_steps(batch: int, kernels: str):
    import bench
    rng = np.random.default_rng(0)
    data = {"image": rng.random((batch, 32, 32, 3), np.float32),
            "label": rng.integers(0, 10, batch).astype(np.int32),
            "index": np.arange(batch, dtype=np.int32), "epoch": np.zeros(batch, np.int32)}
    jstep, _ = bench.cnnjax_step(data, {}, kernels)
    return jstep, jstep.hlo_text(), bench.torch_step(data, channels_last=True)


def table(title: str, rows: dict, wall: float) -> str:
    total = sum(rows.values())
    out = [f"| {title} | ms/step | share |", "|---|---|---|"]
    for k, v in sorted(rows.items(), key=lambda kv: -kv[1]):
        out.append(f"| {k} | {v:.1f} | {v / total:.0%} |")
    out.append(f"| **sum of events** | **{total:.1f}** | |")
    out.append(f"| step wall (traced) | {wall:.1f} | |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=("cifar_resnet20", "airbench94"), required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--kernels", default="auto", choices=("auto", "xla", "onednn"))
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--top", type=int, default=12, help="top entries listed per side")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for oneDNN, PyTorch and (when 1) XLA's Eigen operations")
    p.add_argument("--record", action="store_true")
    args = p.parse_args()
    if args.threads is not None:
        # Read when XLA's CPU client, libgomp and torch start (below).
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        if args.threads == 1:
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                       " --xla_cpu_multi_thread_eigen=false")
    if args.batch < 1 or args.steps < 1:
        sys.exit(f"error: --batch={args.batch} --steps={args.steps}; both must be >= 1")
    make = resnet20_steps if args.model == "cifar_resnet20" else airbench_steps
    jstep, hlo_text, tstep = make(args.batch, args.kernels)
    for _ in range(2):
        jstep()
        tstep()
    load_before = os.getloadavg()[0]
    jcat, jops, jwall = cnnjax_profile(jstep, hlo_text, args.steps)
    tcat, tops, twall = torch_profile(tstep, args.steps)
    load_after = os.getloadavg()[0]
    import torch
    text = "\n\n".join([
        table(f"cnnjax [{args.kernels}]", jcat, jwall),
        table("PyTorch channels_last", tcat, twall),
        table(f"cnnjax top {args.top} thunks", dict(jops.most_common(args.top)), jwall),
        table(f"PyTorch top {args.top} ops", dict(tops.most_common(args.top)), twall)])
    print(text)
    result = {"model": args.model, "batch": args.batch, "kernels": args.kernels,
              "cnnjax_ms": {k: round(v, 2) for k, v in jcat.items()},
              "torch_ms": {k: round(v, 2) for k, v in tcat.items()},
              "cnnjax_wall_ms": round(jwall, 1), "torch_wall_ms": round(twall, 1),
              "load_average_1min": [load_before, load_after], "torch_threads":
              torch.get_num_threads(), "jax": jax.__version__, "torch": torch.__version__}
    if args.record:
        path = HERE / "results" / "cpu_step_profile.md"
        new = not path.exists()
        with open(path, "a") as f:
            if new:
                f.write("# Per-op profile of the CPU train step, cnnjax vs PyTorch channels_last "
                        "(appended by `experiments/profile_cpu_step.py --record`)\n")
            f.write(f"\n## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
                    f"{args.model}, batch {args.batch}, kernels={args.kernels}\n\n"
                    f"`python experiments/profile_cpu_step.py "
                    f"{' '.join(shlex.quote(a) for a in sys.argv[1:])}`; load average "
                    f"{load_before:.1f} before, {load_after:.1f} after; JAX {jax.__version__}, "
                    f"torch {torch.__version__} ({torch.get_num_threads()} threads); "
                    f"{args.steps} traced steps each\n\n{text}\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
