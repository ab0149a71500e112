"""CRC-32C (Castagnoli), the checksum of TFRecord files, over many byte ranges of a buffer at once.

The reflected CRC with polynomial 0x82F63B78, initial register and final XOR 0xFFFFFFFF (RFC 3720,
appendix B.4: crc32c(b"123456789") == 0xE3069283). No CRC-32C package is installed and a Python
loop over bytes runs at about a megabyte a second, so the ranges are vectorised using the CRC's
linearity over GF(2): with raw(m) the register after the bytes m starting from 0, and Z_n the
linear map "n zero bytes through the register",
  raw(a || b) = Z_len(b)(raw(a)) ^ raw(b);  from 0xFFFFFFFF the register is Z_len(m)(~0) ^ raw(m);
and leading zero bytes leave raw unchanged. Every range is left-padded with zeros to whole
BLOCK-byte blocks; the blocks' raw registers are computed together (a loop over the blocks' 4-byte
words), each is moved to its range's end with Z (applied as four 256-entry tables per power of two
of the shift) and XOR-reduced per range.
"""

from __future__ import annotations

import functools

import numpy as np

POLY = 0x82F63B78
BLOCK = 64
_MASK_DELTA = 0xA282EAD8


def _byte_table() -> np.ndarray:
    """T[b]: the register after byte b went through a zero register (reflected, 8 steps)."""
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ np.uint32(POLY), t >> 1).astype(np.uint32)
    return t


_TABLE = _byte_table()


def _apply(tables: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A linear map of 32-bit registers given as its images of each byte: tables (4, 256)."""
    return (tables[0][x & 0xFF] ^ tables[1][(x >> 8) & 0xFF] ^ tables[2][(x >> 16) & 0xFF]
            ^ tables[3][x >> 24])


def _tables_of(function) -> np.ndarray:
    byte_values = np.arange(256, dtype=np.uint32)
    return np.stack([function(byte_values << np.uint32(8 * j)) for j in range(4)])


@functools.lru_cache(maxsize=None)
def _zeros(k: int) -> np.ndarray:
    """The tables of Z_(2**k): 2**k zero bytes through the register."""
    if k == 0:
        return _tables_of(lambda x: _TABLE[x & 0xFF] ^ (x >> 8))
    half = _zeros(k - 1)
    return _tables_of(lambda x: _apply(half, _apply(half, x)))


def _shift(registers: np.ndarray, zero_bytes: np.ndarray) -> np.ndarray:
    """Z_n(register) for each register and its n (int64 arrays of one length)."""
    out = registers.copy()
    for k in range(int(zero_bytes.max(initial=0)).bit_length()):
        chosen = ((zero_bytes >> k) & 1).astype(bool)
        if chosen.any():
            out[chosen] = _apply(_zeros(k), out[chosen])
    return out


def crc32c_ranges(buffer: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """uint32 CRC-32C of buffer[starts[i] : starts[i] + lengths[i]] for every i.

    `buffer` is uint8 (n,); `starts`, `lengths` int arrays of one length, ranges inside `buffer`.
    """
    starts = np.asarray(starts, np.int64)
    lengths = np.asarray(lengths, np.int64)
    blocks = -(-lengths // BLOCK)
    first_block = np.cumsum(blocks) - blocks
    padded = np.zeros((int(blocks.sum()), BLOCK), np.uint8)
    flat = padded.reshape(-1)
    pads = blocks * BLOCK - lengths
    for start, length, block, pad in zip(starts.tolist(), lengths.tolist(), first_block.tolist(),
                                         pads.tolist()):
        at = block * BLOCK + pad
        flat[at:at + length] = buffer[start:start + length]
    # Four bytes at a time: a little-endian word w through register r leaves Z_4(r ^ w).
    words = padded.view("<u4").astype(np.uint32)
    registers = np.zeros(len(padded), np.uint32)
    for column in range(BLOCK // 4):
        registers = _apply(_zeros(2), registers ^ words[:, column])
    # Blocks after each block within its range, moved over in zero bytes.
    owner = np.repeat(np.arange(len(lengths)), blocks)
    after = first_block[owner] + blocks[owner] - 1 - np.arange(len(padded))
    registers = _shift(registers, after * BLOCK)
    raw = np.zeros(len(lengths), np.uint32)
    nonempty = blocks > 0
    if nonempty.any():
        raw[nonempty] = np.bitwise_xor.reduceat(registers, first_block[nonempty])
    initial = _shift(np.full(len(lengths), 0xFFFFFFFF, np.uint32), lengths)
    return raw ^ initial ^ np.uint32(0xFFFFFFFF)


def crc32c(data: bytes) -> int:
    """CRC-32C of one byte string."""
    return int(crc32c_ranges(np.frombuffer(data, np.uint8), [0], [len(data)])[0])


def masked(crc: np.ndarray) -> np.ndarray:
    """TFRecord's masked CRC: rotated right by 15 bits plus 0xA282EAD8 (mod 2**32), uint32."""
    crc = np.asarray(crc, np.uint32)
    return ((crc >> 15) | (crc << 17)) + np.uint32(_MASK_DELTA)
