"""Tiling shared by the Pallas kernels: block sizes, masked tile access, launching.

The kernels target Pallas' Triton backend (NVIDIA and AMD GPUs) and run on any backend through
the Pallas interpreter. Conventions common to all of them:

- Activations are viewed as (rows, [W,] C) arrays with channels last, so the channel axis is
  the contiguous one: a tile is (rows or columns, BC channels) and every row of a tile is one
  contiguous run of BC * itemsize bytes (128 bytes: a whole cache line / four 32-byte sectors).
- Triton needs power-of-two tile shapes, while CNN shapes (56, 28, 14, 7, 144 channels, ...)
  are not: tiles are rounded up to powers of two and the overhang is masked on load (the
  masked lanes read a neutral value) and on store (the masked lanes are not written). Arrays
  are never padded in HBM, so no extra pass over memory is spent on padding.
- Tiles are addressed by integer index vectors per axis (row scalar, column vector, channel
  vector), the form Triton turns into one pointer tensor; index vectors are `start + arange`,
  which lets Triton prove contiguity along channels and emit vectorised loads.
- Arithmetic accumulates in float32 whatever the storage dtype (bf16 and fp16 in, fp32 inside).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

try:  # Masked loads/stores and compiler parameters live in Pallas' Triton module.
    from jax.experimental.pallas import triton as _pl_triton

    _masked_load, _masked_store = _pl_triton.load, _pl_triton.store
    _CompilerParams = _pl_triton.CompilerParams
    UNAVAILABLE: str | None = None
except (ImportError, AttributeError) as e:  # pragma: no cover - depends on the JAX version
    UNAVAILABLE = f"this JAX ({jax.__version__}) has no Pallas Triton load/store ({e})"

# Bytes of one channel run in a tile: a 128-byte cache line.
LINE_BYTES = 128
# Programs to aim for in grid-reduction kernels: a few waves on a ~100-SM GPU, so every SM has
# work while the per-program partial results stay few.
TARGET_PROGRAMS = 512
SUPPORTED_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (n >= 1)."""
    return 1 << (max(n, 1) - 1).bit_length()


def channel_block(c: int, itemsize: int) -> int:
    """Channels per tile: a power of two, at most one cache line of them, preferring the largest
    block that wastes at most 1/8 of the lanes on the channel overhang (144 channels in bf16
    -> 16: 9 full blocks, where 64 would leave a third of the last block empty)."""
    block = min(max(LINE_BYTES // itemsize, 16), next_pow2(c))
    while block > 16 and (-c % block) * 8 > c:
        block //= 2
    return block


def span_block(n: int, bc: int, elements: int) -> int:
    """Rows (or columns) per tile: a power of two, no more than n rounded up, and about
    `elements` / bc of them, so a tile holds ~`elements` values (registers per thread bounded)."""
    return max(1, min(next_pow2(n), next_pow2(max(elements // bc, 1))))


def unsupported_dtype(*arrays: jax.Array) -> str | None:
    """The reason an array's dtype is not handled by the kernels, or None."""
    for a in arrays:
        if a is not None and a.dtype not in SUPPORTED_DTYPES:
            return f"dtype {a.dtype} (the kernels take float32, bfloat16 and float16)"
    return None


def arange(start, size: int) -> jax.Array:
    """start + [0, size) as int32: an index vector Triton knows is contiguous."""
    return start + jnp.arange(size, dtype=jnp.int32)


def fori_loop(n: int, body: Callable[[jax.Array, Any], Any], init: Any) -> Any:
    """lax.fori_loop over i = 0 .. n-1 with an int32 index, also under jax_enable_x64 (where
    Python-int bounds would make it int64 and mix with the int32 program ids and indices)."""
    return lax.fori_loop(jnp.int32(0), jnp.int32(n), body, init)


def div(a, b: int):
    """a // b for non-negative int32 a (truncating lax.div: jnp's floor division emits
    sign fix-ups that the Triton lowering rejects for some operand types)."""
    return lax.div(a, jnp.int32(b))


def rem(a, b: int):
    """a % b for non-negative int32 a (see `div`)."""
    return lax.rem(a, jnp.int32(b))


def load(ref, index: tuple, mask: jax.Array, other: float) -> jax.Array:
    """The tile of `ref` at `index` (scalars and broadcasting index arrays); `other` where
    `mask` is False (those addresses are never read, so they may lie outside the array)."""
    return _masked_load(ref.at[index], mask=mask, other=other)


def store(ref, index: tuple, value: jax.Array, mask: jax.Array) -> None:
    """Writes `value` to `ref` at `index` where `mask` is True. Masked-out lanes must not alias
    a real lane of the same store (the interpreter scatters them with their old value)."""
    _masked_store(ref.at[index], value.astype(ref.dtype), mask=mask)


def launch(kernel: Callable, *, grid: Sequence[int], out_shape, interpret: bool, name: str,
           num_warps: int = 4) -> Callable:
    """pl.pallas_call for the Triton backend (chosen by its compiler parameters; JAX's default
    GPU backend is Mosaic GPU), or the Pallas interpreter when `interpret`."""
    return pl.pallas_call(kernel, grid=tuple(grid), out_shape=out_shape, interpret=interpret,
                          compiler_params=_CompilerParams(num_warps=num_warps),
                          name=name)
