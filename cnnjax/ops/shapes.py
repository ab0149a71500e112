"""Argument normalisation and output-size arithmetic shared by convolution and pooling.

Spatial arguments (`stride`, `dilation`, `window`) accept an int or an (h, w) pair; `padding`
accepts an int, an (h, w) pair, ((top, bottom), (left, right)) or one of "VALID", "SAME", "FULL".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

Padding = Union[int, str, Sequence[int], Sequence[Sequence[int]]]
PADDING_STRINGS = ("VALID", "SAME", "FULL")


def pair(value: int | Sequence[int], name: str, *, minimum: int = 1) -> tuple[int, int]:
    """Returns `value` as an (h, w) pair of ints >= `minimum`; `name` is used in the error."""
    if isinstance(value, int) and not isinstance(value, bool):
        out = (value, value)
    elif isinstance(value, Sequence) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        out = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(out) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return out


def explicit_padding(padding: Padding, spatial: Sequence[int], kernel: Sequence[int],
                     stride: Sequence[int], dilation: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Resolves any accepted `padding` form into ((lo, hi), ...) per spatial dimension.

    "SAME" pads so that out = ceil(n / stride) (the extra pixel, if odd, goes at the end, as in
    TensorFlow and XLA); "FULL" pads by the dilated kernel extent minus one on both sides, so every
    partial overlap of kernel and input produces an output.
    """
    nd = len(spatial)
    if isinstance(padding, str):
        mode = padding.upper()
        if mode not in PADDING_STRINGS:
            raise ValueError(f"padding string must be one of {PADDING_STRINGS}, got {padding!r}")
        if mode == "VALID":
            return ((0, 0),) * nd
        extents = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
        if mode == "FULL":
            return tuple((e - 1, e - 1) for e in extents)
        pads = []
        for n, e, s in zip(spatial, extents, stride):
            out = -(-n // s)
            total = max((out - 1) * s + e - n, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    if isinstance(padding, int) and not isinstance(padding, bool):
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding!r}")
        return ((padding, padding),) * nd
    if isinstance(padding, Sequence) and len(padding) == nd:
        if all(isinstance(p, int) and not isinstance(p, bool) for p in padding):
            if min(padding) < 0:
                raise ValueError(f"padding must be >= 0, got {padding!r}")
            return tuple((p, p) for p in padding)
        if all(isinstance(p, Sequence) and len(p) == 2 and all(isinstance(q, int) for q in p)
               for p in padding):
            if min(min(p) for p in padding) < 0:
                raise ValueError(f"padding must be >= 0, got {padding!r}")
            return tuple((int(p[0]), int(p[1])) for p in padding)
    raise ValueError(
        f"padding must be an int, {nd} ints, {nd} (lo, hi) pairs or one of {PADDING_STRINGS}, "
        f"got {padding!r}")


def conv_output_size(n: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                     *, exact: bool = False) -> int:
    """Output length of a convolution or pooling along one axis: floor((n + 2p - d(k-1) - 1)/s + 1).

    With `exact=True` a stride that does not tile the padded input (the lectures' 7x7 input,
    3x3 kernel, stride 3) raises ValueError instead of silently dropping the last rows.
    """
    for name, v, lo in (("n", n, 1), ("kernel", kernel, 1), ("stride", stride, 1),
                        ("padding", padding, 0), ("dilation", dilation, 1)):
        if not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    span = n + 2 * padding - dilation * (kernel - 1) - 1
    if span < 0:
        raise ValueError(f"kernel extent {dilation * (kernel - 1) + 1} exceeds the padded input "
                         f"{n + 2 * padding}")
    if exact and span % stride:
        raise ValueError(f"stride {stride} does not fit: (n + 2p - d(k-1) - 1) / s = "
                         f"({n} + {2 * padding} - {dilation * (kernel - 1)} - 1) / {stride} = "
                         f"{span / stride:.3g} is not an integer")
    return span // stride + 1
