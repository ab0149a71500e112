"""One command for a GPU lease: the Pallas kernels, ResNet-50 against PyTorch, a CIFAR-10 run.

    python experiments/gpu_pack.py --pack-data=../shared/data/cifar10_jpeg  # here, once
    python experiments/gpu_pack.py --results=$OUT          # on one GPU (meant to end in 8 min)
    python experiments/gpu_pack.py --dry-run               # any CPU, toy sizes, records nothing

How to run it with the device tool (wheels, carry list, time budget): experiments/gpu_pack.md.

Stages, in order, each timed:
1. kernels: every Pallas kernel of cnnjax.kernels (depthwise convolution, max/avg pooling, fused
   batch norm + activation + residual), compiled for the GPU, against XLA's lowering of its
   cnnjax.ops reference, forward and forward+backward in float32 and bfloat16 on the first
   --kernel-shapes layer shapes of each (experiments/bench_kernels.py's table and timing):
   times of both, and the worst error relative to the reference's largest value, which must
   stay within 1e-5 (float32) and 2e-2 (bfloat16).
2. resnet50: the bfloat16 training step of ResNet-50 (224x224, --batch) against PyTorch's
   (torchvision ResNet-50, bf16 autocast, channels_last, torch.compile), alternating in rounds
   (experiments/benchmark.py): images/s of each and cnnjax's MFU (XLA's FLOP count of the step
   over the bf16 matrix rate measured in the run); PyTorch's MFU is the same FLOPs per image at
   its rate.
3. cifar10: --config trained to its end on the CIFAR-10 JPEG copy (the class folders of
   ../shared/data/cifar10_jpeg, carried as one .npz made by --pack-data), decoded into memory
   (no tensorflow-datasets or grain: the GPU machine has neither): wall time (decoding, compiling
   and training) and test accuracy. Results on this copy are labelled "CIFAR-10 (JPEG q75 copy)".

4. airbench94_muon: the CIFAR-10 record's recipe (configs/airbench94_muon.py, bfloat16) and its
   PyTorch port (experiments/airbench94/torch_airbench_muon.py: bfloat16 autocast,
   channels_last, torch.compile, as a speed-aware PyTorch user runs it) on the same GPU and the
   same JPEG copy, one after the other: wall time to the end (the port's after its data is on
   the GPU; cnnjax's including decoding and compiling) and TTA / plain accuracy; the record is
   94.01% in 2.59 s on an A100 (fp16, 200-run mean, the original CIFAR-10 files).

Every figure goes to RESULTS/gpu_pack.md (a section appended with the date, GPU, JAX and torch
versions and the command) and RESULTS/gpu_pack.jsonl (one JSON object per run). The exit status
is 1 if a kernel missed its tolerance or fell back to XLA (after writing).

--dry-run runs the same stages on CPU at toy sizes (the kernels in the Pallas interpreter on
bench_kernels' smoke shapes in float32, ResNet-50 on 32x32 batches of 2 (PyTorch eager: no
torch.compile on CPU), the config on a generated 10-class
JPEG folder of 32x32 images packed and decoded the same way); it records only with --results.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

import jax
import numpy as np
from PIL import Image

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import bench_kernels  # noqa: E402
import benchmark  # noqa: E402
from provenance import append, section_header  # noqa: E402

from cnnjax import kernels  # noqa: E402
from cnnjax.data.imagefolder import pack_folder  # noqa: E402

DEFAULT_DATA = REPO / ".gpu_data" / "cifar10_jpeg.npz"
# tests/kernel_checks.py's 1e-5 for float32; for bfloat16 twice its 1e-2: these inputs run
# through reductions and their gradients at bfloat16's rounding step of 2^-8.
TOLERANCE = {"float32": 1e-5, "bfloat16": 2e-2}
CIFAR_ORIGIN = "CIFAR-10 (JPEG q75 copy)"


def kernel_stage(dry_run: bool, shapes_per_kernel: int, batch: int) -> list[dict]:
    """bench_kernels rows (times, errors) with "ok": within tolerance and the kernel ran."""
    dtypes = list(TOLERANCE)
    if dry_run:  # the interpreter is slow: float32 only
        cases, batch, dtypes = bench_kernels.SMOKE_CASES, 2, ["float32"]
        setting, reps, rounds = kernels.Setting("pallas", True), 1, 1
    else:
        cases = []
        for op in bench_kernels.TARGETS:
            cases += [c for c in bench_kernels._cases() if c.op == op][:shapes_per_kernel]
        setting, reps, rounds = kernels.Setting("pallas", False), 10, 3
    print(bench_kernels.HEADER, flush=True)
    rows = bench_kernels.measure(cases, batch, dtypes, setting, reps, rounds, bandwidth=None)
    for row in rows:
        row["tolerance"] = TOLERANCE[row["dtype"]]
        row["ok"] = bool(row["kernel_ran"] and row["max_rel_error"] <= row["tolerance"])
    return rows


def resnet_stage(dry_run: bool, batch: int, steps: int) -> dict:
    """experiments/benchmark.py's result for the bf16 ResNet-50 step against PyTorch."""
    argv = ["--model=resnet50", "--dtype=bfloat16", "--compare=torch"]
    argv += (["--batch=2", "--image-size=32", "--steps=2", "--rounds=1"] if dry_run else
             [f"--batch={batch}", f"--steps={steps}", "--rounds=3"])
    result = benchmark.main(argv)
    if "mfu" in result and result.get("torch_images_per_sec"):
        # Same architecture, same FLOPs per image: MFU scales with images/s.
        result["torch_mfu"] = round(result["mfu"] / result["ratio"], 4)
    result["command"] = "python experiments/benchmark.py " + " ".join(argv)
    return result


def toy_jpeg_folder(root: pathlib.Path, per_class: tuple[int, int] = (8, 2)) -> pathlib.Path:
    """A CIFAR-shaped class-folder tree: 10 classes of 32x32 JPEGs (quality 75), each class a
    different mean colour so a few steps can learn something."""
    rng = np.random.default_rng(0)
    for split, count in zip(("train", "test"), per_class):
        for k in range(10):
            folder = root / split / f"class{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = np.clip(rng.normal(25 * k, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.jpg", quality=75)
    return root


def cifar_stage(config_spec: str, data: pathlib.Path, workdir: pathlib.Path,
                dtype: str | None = None) -> dict:
    """Trains `config_spec` (in `dtype` if given) to its end on the packed JPEG folder `data`;
    time and accuracy."""
    from cnnjax.sweep.config_file import load_config  # ml_collections: carried as a wheel
    from cnnjax.train import trainer

    config = load_config(config_spec)
    config.dtype = dtype or config.dtype
    ds = config.dataset
    changed = {k: ds.get(k) for k in ("name", "train_split", "eval_split")}
    ds.name, ds.data_dir, ds.train_split, ds.eval_split = "folder", "", "train", "test"
    ds.options = {"source": str(data), "origin": CIFAR_ORIGIN}
    start = time.perf_counter()
    result = trainer.train(config, workdir)
    seconds = time.perf_counter() - start
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    last = [json.loads(line) for line in lines][-1]
    return {"config": config_spec, "dataset": CIFAR_ORIGIN, "replaced": changed,
            "wall_s": round(seconds, 1), "test_accuracy": result["accuracy"],
            "test_loss": result["loss"], "steps": last["step"], "batch_size": config.batch_size,
            "dtype": config.dtype, "plain_accuracy": result.get("plain_accuracy")}


def muon_stage(dry_run: bool, config_spec: str, data: pathlib.Path,
               workdir: pathlib.Path) -> dict:
    """airbench94_muon in cnnjax (bfloat16) and in the PyTorch port (bf16 autocast,
    channels_last, compiled) on the same GPU; dry run: the smoke config and 8 port steps of 16
    on the CPU in float32."""
    sys.path.insert(0, str(HERE / "airbench94"))
    import torch
    import torch_airbench_muon
    from cnnjax.data.imagefolder import folder_arrays

    cnnjax_run = cifar_stage(config_spec, data, workdir, None if dry_run else "bfloat16")
    arrays = {}
    for split in ("train", "test"):
        arrays[f"{split}_x"], labels, _ = folder_arrays(data, split)
        arrays[f"{split}_y"] = labels.astype(np.int64)
    hyp = dict(torch_airbench_muon.HYP)
    if dry_run:
        hyp.update(batch_size=16, epochs=2, whiten_bias_epochs=1, whiten_samples=32)
    device = "cpu" if dry_run else "cuda"
    start = time.perf_counter()
    port = torch_airbench_muon.train(arrays, seed=0, hyp=hyp, device=device, amp=not dry_run,
                                     compile=not dry_run, max_steps=8 if dry_run else None,
                                     log=lambda line: print(line, flush=True))
    seconds = time.perf_counter() - start
    return {"cnnjax": cnnjax_run,
            "torch": {"wall_s": round(seconds, 1), "test_accuracy": port["test_accuracy_tta"],
                      "plain_accuracy": port["test_accuracy"], "steps": port["steps"],
                      "batch_size": hyp["batch_size"], "torch": torch.__version__,
                      "mode": "fp32 eager" if dry_run else "bf16 autocast, channels_last, "
                                                          "torch.compile"}}


def _device() -> str:
    device = jax.devices()[0]
    return "cpu" if device.platform == "cpu" else device.device_kind


def report(results: dict) -> str:
    """Markdown of one pack run."""
    lines = [f"Stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in results["stage_s"].items())
             + f"; total {results['total_s']:.0f}.", "", "### Pallas kernels against XLA", "",
             bench_kernels.HEADER.rstrip(" |") + " | tolerance | ok |",
             "|" + "---|" * 15]
    for row in results["kernels"]:
        lines.append(bench_kernels._format_row(row).rstrip(" |") +
                     f" | {row['tolerance']:.0e} | {'yes' if row['ok'] else 'NO'} |")
    r = results["resnet50"]
    lines += ["", "### ResNet-50 training step, bfloat16", "",
              "| batch | cnnjax img/s | torch img/s | cnnjax / torch | cnnjax MFU | torch MFU | "
              "cnnjax first step s | torch mode |", "|---|---|---|---|---|---|---|---|",
              f"| {r['batch']} | {r['cnnjax_images_per_sec']} | {r['torch_images_per_sec']} | "
              f"{r['ratio']} | {r.get('mfu', '-')} | {r.get('torch_mfu', '-')} | "
              f"{r['compile_s']} | {r.get('torch_mode', '')} |", "", f"`{r['command']}`"]
    c = results["cifar10"]
    lines += ["", f"### {c['config']} on {c['dataset']}", "",
              "| steps | batch | dtype | wall s (decode + compile + train + evals) | "
              "test accuracy | test loss |", "|---|---|---|---|---|---|",
              f"| {c['steps']} | {c['batch_size']} | {c['dtype']} | {c['wall_s']} | "
              f"{c['test_accuracy']:.4f} | {c['test_loss']:.4f} |", ""]
    m = results["airbench94_muon"]
    lines += ["", f"### airbench94_muon on {CIFAR_ORIGIN}: cnnjax and the PyTorch port", "",
              "| run | steps | batch | wall s | TTA accuracy | plain accuracy |",
              "|---|---|---|---|---|---|",
              f"| cnnjax ({m['cnnjax']['dtype']}; decode + compile + train + eval) | "
              f"{m['cnnjax']['steps']} | {m['cnnjax']['batch_size']} | {m['cnnjax']['wall_s']} | "
              f"{m['cnnjax']['test_accuracy']:.4f} | {m['cnnjax']['plain_accuracy']:.4f} |",
              f"| PyTorch {m['torch']['torch']} ({m['torch']['mode']}; train + eval) | "
              f"{m['torch']['steps']} | {m['torch']['batch_size']} | {m['torch']['wall_s']} | "
              f"{m['torch']['test_accuracy']:.4f} | {m['torch']['plain_accuracy']:.4f} |", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, toy sizes; records nothing "
                   "unless --results is given")
    p.add_argument("--config", default="configs/airbench94.py",
                   help="the CIFAR-10 config (path[:variant]) trained in stage 3")
    p.add_argument("--muon-config", default="configs/airbench94_muon.py",
                   help="the airbench94_muon config (path[:variant]) of stage 4")
    p.add_argument("--data", type=pathlib.Path, default=DEFAULT_DATA,
                   help="the CIFAR-10 JPEG copy: its --pack-data .npz, or the class folders")
    p.add_argument("--pack-data", type=pathlib.Path, metavar="FOLDER",
                   help="pack the class folders FOLDER into --data and stop")
    p.add_argument("--results", type=pathlib.Path, default=None,
                   help="where gpu_pack.md/.jsonl are appended (default experiments/results; "
                   "none for --dry-run)")
    p.add_argument("--kernel-shapes", type=int, default=2, help="layer shapes per kernel")
    p.add_argument("--kernel-batch", type=int, default=64)
    p.add_argument("--batch", type=int, default=256, help="ResNet-50 batch")
    p.add_argument("--steps", type=int, default=30, help="timed ResNet-50 steps of each")
    p.add_argument("--workdir", type=pathlib.Path, default=None,
                   help="the CIFAR run's workdir (default: a fresh temporary folder)")
    args = p.parse_args(argv)
    if args.pack_data is not None:
        if not args.pack_data.is_dir():
            p.error(f"--pack-data {args.pack_data} is not a folder (expected FOLDER/<split>/"
                    f"<class>/<image>, e.g. ../shared/data/cifar10_jpeg)")
        counts = pack_folder(args.pack_data, args.data)
        size = args.data.stat().st_size / 2 ** 20
        print(f"packed {counts} files of {args.pack_data} into {args.data} ({size:.1f} MiB)")
        return {"packed": counts}
    if min(args.kernel_shapes, args.kernel_batch, args.batch, args.steps) < 1:
        p.error("--kernel-shapes, --kernel-batch, --batch and --steps must be >= 1")
    if not args.dry_run and jax.default_backend() != "gpu":
        p.error(f"the pack measures a GPU; the backend here is {jax.default_backend()!r} "
                f"(use --dry-run to exercise it on this machine)")
    if not args.dry_run and not args.data.exists():
        p.error(f"--data {args.data} not found; make it where the CIFAR-10 JPEG copy is: python "
                f"experiments/gpu_pack.py --pack-data=../shared/data/cifar10_jpeg")
    results_dir = args.results if args.results is not None else (
        None if args.dry_run else HERE / "results")

    stage_s, results, start = {}, {"device": _device(), "jax": jax.__version__}, time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        data = args.data
        if args.dry_run:
            data = tmp / "toy.npz"
            pack_folder(toy_jpeg_folder(tmp / "toy"), data)
        t = time.perf_counter()
        results["kernels"] = kernel_stage(args.dry_run, args.kernel_shapes, args.kernel_batch)
        stage_s["kernels"] = time.perf_counter() - t
        t = time.perf_counter()
        results["resnet50"] = resnet_stage(args.dry_run, args.batch, args.steps)
        stage_s["resnet50"] = time.perf_counter() - t
        t = time.perf_counter()
        results["cifar10"] = cifar_stage(args.config, data, args.workdir or tmp / "cifar_run")
        stage_s["cifar10"] = time.perf_counter() - t
        t = time.perf_counter()
        results["airbench94_muon"] = muon_stage(args.dry_run, args.muon_config, data,
                                                (args.workdir or tmp / "cifar_run").with_name(
                                                    "muon_run"))
        stage_s["airbench94_muon"] = time.perf_counter() - t
    results["stage_s"] = {k: round(v, 1) for k, v in stage_s.items()}
    results["total_s"] = round(time.perf_counter() - start, 1)
    try:
        import torch
        results["torch"] = torch.__version__
    except ImportError:
        results["torch"] = "absent"
    text = report(results)
    print(text)
    if results_dir is not None:
        header = section_header("experiments/gpu_pack.py", argv if argv is not None else
                                sys.argv[1:], extra=f"torch {results['torch']}"
                                + (", DRY RUN (CPU, toy sizes)" if args.dry_run else ""))
        append(results_dir / "gpu_pack.md", "GPU measurement pack (experiments/gpu_pack.py)",
               header + text + "\n")
        with (results_dir / "gpu_pack.jsonl").open("a") as f:
            f.write(json.dumps(results, default=float) + "\n")
    bad = [f"{r['op']} {r['layer']} {r['dtype']} {r['pass']}" for r in results["kernels"]
           if not r["ok"]]
    if bad:
        print(f"kernels outside tolerance or not run: {bad}", file=sys.stderr)
        raise SystemExit(1)
    return results


if __name__ == "__main__":
    main()
