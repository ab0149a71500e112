"""Receptive-field arithmetic along one spatial axis (Araujo, Norris & Sim, "Computing receptive
fields of convolutional neural networks", Distill 2019).

Coordinates are input pixels of the unpadded input, 0-based; negative ones lie in the padding.
A unit i of a feature map sees the input pixels [lo + i * jump, hi + i * jump] (inclusive):

  size r = hi - lo + 1            receptive-field size
  jump S = prod of the strides    effective stride (distance in input pixels between neighbours)
  padding P = -lo                 effective padding (how far unit 0's field hangs over the edge)
  center of unit i = (lo + hi) / 2 + i * jump

One layer with kernel k, stride s, left padding p and dilation d maps (jump, lo, hi) to
(jump * s, lo - p * jump, hi + (d (k - 1) - p) * jump) (`AxisField.then`). Unrolled over a
single path of layers l = 1..L this is the article's closed form (its eqs. for r_0, S_0, P_0):

  r = 1 + sum_l d_l (k_l - 1) prod_{i<l} s_i,   S = prod_l s_l,   P = sum_l p_l prod_{i<l} s_i,

computed directly by `chain`. Only the left padding enters: right padding (and ceil_mode's
overhang) changes how many units there are, not where they look.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class Window:
    """One sliding-window op along one axis: kernel size, stride, (left, right) padding and
    kernel dilation, as the real op (conv_general_dilated / reduce_window) received them."""

    kernel: int
    stride: int = 1
    padding: tuple[int, int] = (0, 0)
    dilation: int = 1

    def __post_init__(self):
        if self.kernel < 1 or self.stride < 1 or self.dilation < 1:
            raise ValueError(f"kernel, stride and dilation must be >= 1, got {self}")


@dataclasses.dataclass(frozen=True)
class AxisField:
    """Receptive field along one axis of a feature map; `axis` is the input's spatial axis it
    runs along (0 = height, 1 = width)."""

    axis: int
    jump: int = 1
    lo: int = 0
    hi: int = 0

    @property
    def size(self) -> int:
        return self.hi - self.lo + 1

    @property
    def padding(self) -> int:
        return -self.lo

    @property
    def center(self) -> float:
        """Center of unit 0's field, in input pixels."""
        return (self.lo + self.hi) / 2

    def then(self, w: Window) -> AxisField:
        """The field after applying window op `w` to a map with this field."""
        extent = w.dilation * (w.kernel - 1)
        pad = w.padding[0]
        return AxisField(self.axis, self.jump * w.stride, self.lo - pad * self.jump,
                         self.hi + (extent - pad) * self.jump)

    def shifted(self, start: int, stride: int = 1) -> AxisField:
        """The field after taking every `stride`-th unit from unit `start` (a strided slice);
        a negative `start` is padding added on the left."""
        return AxisField(self.axis, self.jump * stride, self.lo + start * self.jump,
                         self.hi + start * self.jump)

    def union(self, other: AxisField) -> AxisField | None:
        """The field of a sum of two maps with these fields (Araujo et al.'s multi-path case);
        None when they are not aligned (different axis or jump)."""
        if (self.axis, self.jump) != (other.axis, other.jump):
            return None
        return AxisField(self.axis, self.jump, min(self.lo, other.lo), max(self.hi, other.hi))


def chain(windows: Sequence[Window]) -> tuple[int, int, int]:
    """(size r, jump S, effective padding P) after a single path of window ops, by the closed
    forms of Araujo et al. (module docstring). `chain([Window(3, padding=(1, 1))] * 3)` is
    (7, 1, 3): three stacked 3x3 convolutions see 7x7."""
    strides = [w.stride for w in windows]
    before = [math.prod(strides[:i]) for i in range(len(windows))]  # prod_{i<l} s_i
    size = 1 + sum(w.dilation * (w.kernel - 1) * b for w, b in zip(windows, before))
    padding = sum(w.padding[0] * b for w, b in zip(windows, before))
    return size, math.prod(strides), padding
