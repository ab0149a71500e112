"""Writers of small files in the real formats of the datasets' original distributions.

IDX (MNIST / Fashion-MNIST): magic 2051 / 2049, big-endian dimensions, gzip-compressed. CIFAR
python version: protocol-2 pickles of dicts with bytes keys (what Python 2's pickles load as
under encoding="bytes"), "data" a uint8 (n, 3072) array in R, G, B planes, in a tar.gz under the
original member names. Image folders: PNG and JPEG files written by PIL, plus a corrupt one.
Every writer returns the arrays it wrote, the tests' independent reference.
"""

from __future__ import annotations

import gzip
import io
import pathlib
import pickle
import tarfile

import numpy as np
from PIL import Image

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """An IDX file of a uint8 array: magic (0, 0, 0x08, ndim) unless given, dims, values."""
    array = np.ascontiguousarray(array, np.uint8)
    magic = 0x0800 | array.ndim if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def write_idx_dataset(root: pathlib.Path, n_train: int = 30, n_test: int = 12,
                      seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The four MNIST-named .gz IDX files in `root`; returns split -> (images (N, 28, 28),
    labels (N,))."""
    rng = np.random.default_rng(seed)
    names = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        (root / names[split][0]).write_bytes(gzip.compress(idx_bytes(images)))
        (root / names[split][1]).write_bytes(gzip.compress(idx_bytes(labels)))
        out[split] = (images, labels)
    return out


def cifar_pickle(images: np.ndarray, labels: dict[str, list[int]], **extra) -> bytes:
    """One CIFAR batch: images (n, 32, 32, 3) stored as (n, 3072) R, G, B planes."""
    data = np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1))
    batch = {b"data": data, b"batch_label": b"test batch",
             b"filenames": [f"img_{i}.png".encode() for i in range(len(images))]}
    batch.update({k.encode(): v for k, v in labels.items()})
    batch.update({k.encode(): v for k, v in extra.items()})
    return pickle.dumps(batch, protocol=2)


def _meta(variant: str) -> bytes:
    if variant == "cifar10":
        return pickle.dumps({b"label_names": [c.encode() for c in CIFAR10_CLASSES],
                             b"num_cases_per_batch": 10000, b"num_vis": 3072}, protocol=2)
    return pickle.dumps({b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                         b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]},
                        protocol=2)


def cifar_files(variant: str, per_file: int = 6, seed: int = 0):
    """(file name -> bytes, split -> (images, labels, coarse or None)) of a tiny CIFAR copy:
    CIFAR-10 has five train batches and a test batch, CIFAR-100 one train and one test file."""
    rng = np.random.default_rng(seed)
    train = [f"data_batch_{i}" for i in range(1, 6)] if variant == "cifar10" else ["train"]
    test = ["test_batch"] if variant == "cifar10" else ["test"]
    files = {"batches.meta" if variant == "cifar10" else "meta": _meta(variant)}
    expected = {}
    for split, names in (("train", train), ("test", test)):
        parts = []
        for name in names:
            images = rng.integers(0, 256, (per_file, 32, 32, 3), dtype=np.uint8)
            if variant == "cifar10":
                labels = rng.integers(0, 10, per_file).tolist()
                files[name] = cifar_pickle(images, {"labels": labels})
                parts.append((images, labels, None))
            else:
                fine = rng.integers(0, 100, per_file).tolist()
                coarse = rng.integers(0, 20, per_file).tolist()
                files[name] = cifar_pickle(images, {"fine_labels": fine, "coarse_labels": coarse})
                parts.append((images, fine, coarse))
        expected[split] = (np.concatenate([p[0] for p in parts]),
                           np.concatenate([p[1] for p in parts]),
                           None if variant == "cifar10" else np.concatenate([p[2] for p in parts]))
    return files, expected


def write_cifar_tar(path: pathlib.Path, files: dict[str, bytes], folder: str) -> pathlib.Path:
    """A .tar.gz holding `files` under `folder`/ (e.g. cifar-10-batches-py/)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in files.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def write_image(path: pathlib.Path, pixels: np.ndarray, **save_kw) -> pathlib.Path:
    """Saves uint8 (H, W) or (H, W, 3) pixels; the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **save_kw)
    return path


def write_image_folder(root: pathlib.Path, classes: tuple[str, ...], splits: dict[str, int],
                       sizes: list[tuple[int, int]], suffix: str = ".png", gray: bool = False,
                       seed: int = 0, **save_kw) -> dict[str, list[tuple[pathlib.Path, int]]]:
    """root/<split>/<class>/<k>.<suffix>: `splits[split]` images per class, sizes cycling
    through `sizes`; returns split -> [(path, label)] in class, then file order."""
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {}
    for split, per_class in splits.items():
        out[split] = []
        for label, cls in enumerate(classes):
            for k in range(per_class):
                h, w = sizes[k % len(sizes)]
                shape = (h, w) if gray else (h, w, 3)
                pixels = rng.integers(0, 256, shape, dtype=np.uint8)
                path = write_image(root / split / cls / f"{k:04d}{suffix}", pixels, **save_kw)
                out[split].append((path, label))
    return out


def truncate(path: pathlib.Path, keep: float = 0.5) -> None:
    """Cuts a file to the first `keep` fraction of its bytes."""
    raw = path.read_bytes()
    path.write_bytes(raw[:int(len(raw) * keep)])
