"""PNG files that decode as a copy: how cnnjax stores the catalog's PNG-encoded small images.

tfds' catalog stores CIFAR and MNIST images as PNG. A PNG written by PIL or TensorFlow filters
every row (mostly Paeth) and deflates it, which PIL takes ~0.2 ms to undo for a 32x32 image:
several times what a training step's host side can spend. `encode` writes standard PNGs (8-bit
grayscale or RGB, not interlaced, signature, IHDR, one IDAT, IEND, chunk CRC-32s) whose rows
carry filter type 0 (none) and whose zlib stream uses stored (uncompressed) blocks, so any PNG
reader (PIL, OpenCV, tfds) reads them and `decode_stored` turns a batch of them into pixels by a
zlib pass over stored blocks each and one reshape. array_record compresses the records anyway.
Any other PNG (e.g. in a copy tfds wrote) makes `decode_stored` return None: decode with PIL.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {1: 0, 3: 2}  # channels -> PNG colour type (0 grayscale, 2 RGB)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data)))


def encode(pixels: np.ndarray) -> bytes:
    """PNG bytes of uint8 pixels (H, W, 1) or (H, W, 3): unfiltered rows, stored deflate blocks."""
    height, width, channels = pixels.shape
    if pixels.dtype != np.uint8 or channels not in _COLOR_TYPES:
        raise ValueError(f"expected uint8 pixels (H, W, 1 or 3), got {pixels.dtype} {pixels.shape}")
    rows = np.zeros((height, 1 + width * channels), np.uint8)  # column 0: filter type 0
    rows[:, 1:] = pixels.reshape(height, width * channels)
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPES[channels], 0, 0, 0)
    return (SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 0))
            + _chunk(b"IEND", b""))


def decode_stored(raws: Sequence[bytes], shape: tuple[int, int, int]) -> np.ndarray | None:
    """uint8 pixels (n, *shape) of PNGs as `encode` writes them for images of `shape` (H, W, C):
    8-bit, not interlaced, one IDAT chunk, every row unfiltered; None when any file is another
    kind of PNG (or damaged: PIL then names the problem)."""
    height, width, channels = shape
    if channels not in _COLOR_TYPES:
        return None
    # Signature and IHDR up to the interlace method; the IHDR CRC is left to zlib's own check.
    head = SIGNATURE + struct.pack(">I4sIIBBBBB", 13, b"IHDR", width, height, 8,
                                   _COLOR_TYPES[channels], 0, 0, 0)
    rows = []
    for raw in raws:
        if not raw.startswith(head) or raw[37:41] != b"IDAT":
            return None
        (length,) = struct.unpack_from(">I", raw, 33)
        try:
            rows.append(zlib.decompress(raw[41:41 + length]))
        except zlib.error:
            return None
    row = 1 + width * channels
    if any(len(r) != height * row for r in rows):
        return None
    pixels = np.frombuffer(b"".join(rows), np.uint8).reshape(len(rows), height, row)
    if pixels[:, :, 0].any():
        return None
    return pixels[:, :, 1:].reshape(len(rows), height, width, channels)
