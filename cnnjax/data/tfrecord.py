"""TFRecord files read without TensorFlow: the framing checked, the records' bytes returned.

A TFRecord file is a sequence of records, each
    length     uint64, little-endian
    length_crc uint32, little-endian: the masked CRC-32C of the 8 length bytes
    data       `length` bytes (here a serialized tf.train.Example)
    data_crc   uint32, little-endian: the masked CRC-32C of the data
(TensorFlow's record_writer.cc; the mask is cnnjax.data.crc32c.masked). A record that does not fit
in the file, or whose length or data CRC differs, raises CorruptRecord naming the file, the
record's number and its byte offset.
"""

from __future__ import annotations

import os
import pathlib
import struct

import numpy as np

from cnnjax.data.crc32c import crc32c_ranges, masked

HEADER = 12  # length + length_crc
FOOTER = 4  # data_crc


class CorruptRecord(ValueError):
    """A TFRecord file whose framing is broken; the message names the file and byte offset."""


def _stored_crcs(buffer: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The little-endian uint32 values at byte offsets `at`."""
    parts = [buffer[at + i].astype(np.uint32) << np.uint32(8 * i) for i in range(4)]
    return parts[0] | parts[1] | parts[2] | parts[3]


def _check_lengths(path: pathlib.Path, buffer: np.ndarray, offsets: list[int]) -> None:
    """Raises CorruptRecord for the first record among `offsets` whose length CRC is wrong."""
    at = np.asarray(offsets, np.int64)
    found = masked(crc32c_ranges(buffer, at, np.full(len(at), 8)))
    bad = np.flatnonzero(found != _stored_crcs(buffer, at + 8))
    if len(bad):
        raise CorruptRecord(f"{path}: record {bad[0]} at byte offset {offsets[bad[0]]}: the length "
                            f"field's CRC does not match (corrupt length)")


def read_records(path: str | os.PathLike) -> list[bytes]:
    """The records of TFRecord file `path`, in order, every length and data CRC checked."""
    path = pathlib.Path(path)
    raw = path.read_bytes()
    buffer = np.frombuffer(raw, np.uint8)
    offsets, lengths, position = [], [], 0
    while position < len(raw):
        offsets.append(position)
        if len(raw) - position < HEADER:
            _check_lengths(path, buffer, offsets[:-1])  # a corrupt length before misaligns
            raise CorruptRecord(f"{path}: record {len(offsets) - 1} at byte offset {position}: "
                                f"{len(raw) - position} bytes left, a record header has {HEADER} "
                                f"(truncated file)")
        (length,) = struct.unpack_from("<Q", raw, position)
        end = position + HEADER + length + FOOTER
        if end > len(raw):
            # A corrupt length anywhere before (or here) misaligns what follows: name the first.
            _check_lengths(path, buffer, offsets)
            raise CorruptRecord(f"{path}: record {len(offsets) - 1} at byte offset {position}: "
                                f"its {length} bytes of data run past the end of the file "
                                f"({len(raw)} bytes; truncated file)")
        lengths.append(length)
        position = end
    if not offsets:
        return []
    _check_lengths(path, buffer, offsets)
    starts = np.asarray(offsets, np.int64) + HEADER
    sizes = np.asarray(lengths, np.int64)
    bad = np.flatnonzero(masked(crc32c_ranges(buffer, starts, sizes))
                         != _stored_crcs(buffer, starts + sizes))
    if len(bad):
        raise CorruptRecord(f"{path}: record {bad[0]} at byte offset {offsets[bad[0]]}: the data's "
                            f"CRC does not match (corrupt data)")
    return [raw[s:s + n] for s, n in zip(starts.tolist(), lengths)]
