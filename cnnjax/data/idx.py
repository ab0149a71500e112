"""IDX files (the MNIST / Fashion-MNIST format), gzip-compressed or raw, read with strict checks.

An IDX file is a 4-byte big-endian magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the values in C order. Both datasets use
unsigned bytes (type 0x08): magic 2051 for (N, rows, cols) images and 2049 for (N,) labels.
"""

from __future__ import annotations

import gzip
import pathlib
import zlib

import numpy as np

IMAGES_MAGIC = 0x0803  # 2051: unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x0801  # 2049: unsigned bytes, 1 dimension
_GZIP_HEAD = b"\x1f\x8b"


def _file_bytes(path: pathlib.Path) -> bytes:
    raw = path.read_bytes()
    if not raw.startswith(_GZIP_HEAD):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:  # truncated or corrupted gzip stream
        raise ValueError(f"{path}: not a valid gzip file ({e}); is it truncated?") from e


def read_idx(path: pathlib.Path, magic: int) -> np.ndarray:
    """The uint8 array stored in IDX file `path`, whose magic number must be `magic`.

    Raises ValueError naming the file for a wrong magic number, a header that does not fit, or a
    data size that differs from the header's dimensions (a truncated or padded file).
    """
    data = _file_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: {len(data)} bytes, too short for an IDX header")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: IDX magic number {found}, expected {magic}")
    ndim = data[3]
    start = 4 + 4 * ndim
    if len(data) < start:
        raise ValueError(f"{path}: the IDX header needs {start} bytes, the file has {len(data)}")
    dims = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(dims))
    if len(data) - start != size:
        raise ValueError(f"{path}: {len(data) - start} data bytes after the header, but its "
                         f"dimensions {dims} need {size} (truncated or padded file)")
    return np.frombuffer(data, np.uint8, offset=start).reshape(dims)


def read_idx_pair(images_path: pathlib.Path, labels_path: pathlib.Path, *,
                  image_hw: tuple[int, int], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, H, W, 1), labels int64 (N,)) of one split's image and label files.

    Checks the images' (H, W) against `image_hw`, equal counts, and labels in [0, num_classes).
    """
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if images.shape[1:] != tuple(image_hw):
        raise ValueError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, "
                         f"expected {image_hw[0]}x{image_hw[1]}")
    if len(images) != len(labels):
        raise ValueError(f"{images_path} holds {len(images)} images but {labels_path} holds "
                         f"{len(labels)} labels")
    if labels.size and labels.max() >= num_classes:
        bad = int(np.argmax(labels >= num_classes))
        raise ValueError(f"{labels_path}: label {labels[bad]} at index {bad} is outside "
                         f"[0, {num_classes})")
    return images[..., None], labels.astype(np.int64)
