"""Images/s that each input pipeline delivers on this machine, as a training run consumes them.

    TFDS_DATA_DIR=... python experiments/bench_input.py [--batch=256] [--seconds=10] [--record]

Pipelines (a prepared dataset that is missing is reported with its `prepare` command):
- digits: the embedded scikit-learn digits, in memory.
- mnist: prepared MNIST read with grain (worker processes, one per core), no augmentation.
- cifar10 host: prepared CIFAR-10 with He et al.'s pad-4 / random-crop / flip in the grain
  workers (`dataset.augment_on="host"`).
- cifar10 records: the same records without augmentation: all the host does for a run that
  augments on the device (`dataset.augment_on="device"`, as configs/fast_cifar10.py trains), so
  this is the rate at which the host can feed a GPU.
- cifar10 device (this CPU): those records augmented by the jit-compiled crop/flip of
  cnnjax.data.augment after transfer to the device; on a CPU-only machine that device is the same
  two cores, so the augmentation competes with the reading.
- imagenet decode+crop: JPEG decoding plus the Inception random-resized crop and flip
  (cnnjax.data.imagenet.Views.train: decoded at reduced size where the crop allows, resized on
  uint8 RGB, uint8 out), and decoding plus the resize-256 / centre-224 evaluation view, in this
  one process: the rate per core, counted in images per second of this process's CPU time (so
  other jobs on the machine do not lower it). The JPEGs are generated (500x375, ImageNet's most
  common size, quality 90, smooth random content with noise) because ImageNet is not here.

Each stream is timed after a warm-up (worker start-up, compilation: at least 3 batches and 2
seconds) for --seconds, counting whole batches handed to the consumer. Prints a table; --record
appends it to experiments/results/input_pipelines.md with the date, machine and command.
"""

from __future__ import annotations

import argparse
import io
import itertools
import pathlib
import sys
import time
from collections.abc import Callable, Iterator

import jax
import numpy as np
from PIL import Image

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from provenance import append, section_header  # noqa: E402

from cnnjax import data  # noqa: E402
from cnnjax.data.augment import get_device_augment, get_host_augment  # noqa: E402
from cnnjax.data.imagenet import Views  # noqa: E402
from cnnjax.data.tfds_store import MissingDataset  # noqa: E402

RESULTS = HERE / "results" / "input_pipelines.md"
JPEG_SIZE = (500, 375)  # (width, height)


def stream_rate(batches: Iterator[dict], consume: Callable[[dict], object], seconds: float,
                warmup_batches: int = 3, warmup_seconds: float = 2.0) -> float:
    """Images/s of `batches` passed through `consume`, timed for `seconds` after a warm-up."""
    start, done = time.perf_counter(), 0
    while done < warmup_batches or time.perf_counter() - start < min(warmup_seconds, seconds):
        consume(next(batches))
        done += 1
    images, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        batch = next(batches)
        consume(batch)
        images += len(batch["label"])
    return images / (time.perf_counter() - start)


def _to_host(batch: dict) -> None:
    np.asarray(batch["image"]).sum()  # touch every pixel, as a transfer to the device does


def _device_augment(name: str) -> Callable[[dict], object]:
    augment = jax.jit(get_device_augment(name))
    step = itertools.count()

    def consume(batch: dict) -> None:
        key = jax.random.fold_in(jax.random.PRNGKey(0), next(step))
        augment(jax.device_put(batch["image"]), key).block_until_ready()
    return consume


def generated_jpegs(count: int, seed: int = 0) -> list[bytes]:
    """`count` JPEG files of JPEG_SIZE: smooth random colour fields plus pixel noise."""
    rng = np.random.default_rng(seed)
    width, height = JPEG_SIZE
    out = []
    for _ in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((width, height), Image.BICUBIC), np.float32)
        pixels = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def jpeg_rate(files: list[bytes], view: Callable[[bytes], np.ndarray], seconds: float) -> float:
    """Images per CPU-second of `view` (decoding included) on `files` (cyclically), run in this
    process for `seconds` of CPU time."""
    view(files[0])
    done, start = 0, time.process_time()
    while time.process_time() - start < seconds:
        view(files[done % len(files)])
        done += 1
    return done / (time.process_time() - start)


def measure(batch: int, seconds: float, data_dir: str | None,
            only: tuple[str, ...] | None = None) -> list[tuple[str, str]]:
    """(pipeline, images/s or why not measured) for every pipeline (or those named in `only`)."""
    rng = np.random.default_rng(0)
    views = Views()
    jpegs = generated_jpegs(16)

    def prepared(name: str, **kw):
        return data.create(name, "train", batch_size=batch, train=True, data_dir=data_dir, **kw)

    pipelines: dict[str, Callable[[], float]] = {
        "digits": lambda: stream_rate(
            data.create("digits", "train", batch_size=min(batch, 1000), train=True).batches(),
            _to_host, seconds),
        "mnist": lambda: stream_rate(prepared("mnist").batches(), _to_host, seconds),
        "cifar10 host": lambda: stream_rate(
            prepared("cifar10", augment=get_host_augment("pad_crop_flip")).batches(),
            _to_host, seconds),
        "cifar10 records": lambda: stream_rate(prepared("cifar10").batches(), _to_host, seconds),
        "cifar10 device (this CPU)": lambda: stream_rate(
            prepared("cifar10").batches(), _device_augment("pad_crop_flip"), seconds),
        "imagenet decode+crop (train, 1 core)": lambda: jpeg_rate(
            jpegs, lambda p: views.train(p, rng), seconds),
        "imagenet decode+resize+crop (eval, 1 core)": lambda: jpeg_rate(
            jpegs, views.eval, seconds),
    }
    unknown = set(only or ()) - set(pipelines)
    if unknown:
        raise ValueError(f"unknown pipelines {sorted(unknown)}; expected some of {list(pipelines)}")
    rows = []
    for name, run in pipelines.items():
        if only and name not in only:
            continue
        try:
            rows.append((name, f"{run():,.0f}"))
        except MissingDataset as e:
            rows.append((name, "not measured: " + " ".join(str(e).split())))
    return rows


def table(rows: list[tuple[str, str]], batch: int) -> str:
    lines = [f"| pipeline (batch {batch}) | images/s |", "|---|---|"]
    lines += [f"| {name} | {rate} |" for name, rate in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[tuple[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--data_dir", default=None, help="default: $TFDS_DATA_DIR")
    parser.add_argument("--only", action="append", help="measure this pipeline only (repeatable)")
    parser.add_argument("--record", action="store_true", help=f"append to {RESULTS}")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.seconds <= 0:
        parser.error(f"--batch must be >= 1 and --seconds > 0, got {args.batch}, {args.seconds}")
    rows = measure(args.batch, args.seconds, args.data_dir, tuple(args.only) if args.only else None)
    text = table(rows, args.batch)
    print(text)
    if args.record:
        section = section_header("experiments/bench_input.py",
                                 argv if argv is not None else sys.argv[1:])
        append(RESULTS, "Input pipelines: images/s delivered (bench_input.py)", section + text + "\n")
    return rows


if __name__ == "__main__":
    main()
