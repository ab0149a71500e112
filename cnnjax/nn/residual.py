"""Flax residual blocks: thin wrappers that declare the parameter and batch-statistics trees of
cnnjax.ops.residual and call its pure functions, so each block has one implementation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import flax.linen as nn
import jax

from cnnjax.ops import residual as R


class _PureBlock(nn.Module):
    """Shared wrapper: `features` output channels, `stride`, `shortcut` ("A", "B", "none")."""

    features: int
    stride: int = 1
    shortcut: str = "B"
    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: Any = None

    shapes_fn: ClassVar[Callable[..., dict]]
    block_fn: ClassVar[Callable[..., tuple]]

    def shapes(self, cin: int) -> dict:
        return type(self).shapes_fn(cin, self.features, self.stride, self.shortcut)

    def block_kwargs(self) -> dict:
        return {}

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        shapes = self.shapes(x.shape[-1])
        params = {name: self.param(name, lambda key, sub=sub: R.init_from_shapes(key, sub))
                  for name, sub in shapes.items()}
        stats_vars = {name: self.variable("batch_stats", name, lambda s=s: s)
                      for name, s in R.stats_from_shapes(shapes).items()}
        if self.dtype is not None:
            x = x.astype(self.dtype)
        y, new = type(self).block_fn(
            params, x, stride=self.stride, train=train, shortcut=self.shortcut,
            batch_stats={k: v.value for k, v in stats_vars.items()}, momentum=self.momentum,
            eps=self.epsilon, **self.block_kwargs())
        if train and not self.is_initializing():
            for name, var in stats_vars.items():
                var.value = new[name]
        return y


class BasicBlock(_PureBlock):
    """ResNet-18/34 block (ops.residual.basic_block)."""

    shapes_fn = staticmethod(R.basic_block_shapes)
    block_fn = staticmethod(R.basic_block)


class PreActBlock(_PureBlock):
    """Pre-activation basic block (ops.residual.preact_block)."""

    shapes_fn = staticmethod(R.preact_block_shapes)
    block_fn = staticmethod(R.preact_block)


class BottleneckBlock(_PureBlock):
    """ResNet-50+ block (ops.residual.bottleneck_block): `width` of the 3x3 convolution, `groups`
    for ResNeXt."""

    width: int | None = None
    groups: int = 1
    shapes_fn = staticmethod(R.bottleneck_block_shapes)
    block_fn = staticmethod(R.bottleneck_block)

    def shapes(self, cin: int) -> dict:
        return R.bottleneck_block_shapes(cin, self.features, self.stride, self.shortcut,
                                         width=self.width, groups=self.groups)

    def block_kwargs(self) -> dict:
        return {"groups": self.groups}


class PreActBottleneckBlock(_PureBlock):
    """Pre-activation bottleneck (ops.residual.preact_bottleneck_block)."""

    width: int | None = None
    shapes_fn = staticmethod(R.preact_bottleneck_block_shapes)
    block_fn = staticmethod(R.preact_bottleneck_block)

    def shapes(self, cin: int) -> dict:
        return R.preact_bottleneck_block_shapes(cin, self.features, self.stride, self.shortcut,
                                                width=self.width)
