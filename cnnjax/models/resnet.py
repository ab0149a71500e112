"""ResNets (He et al. 2016), their plain counterparts, CIFAR variants, pre-activation ResNets
(He et al. 2016b), Wide ResNet-50-2 (Zagoruyko & Komodakis 2016) and ResNeXt-50 32x4d
(Xie et al. 2017).

ImageNet models follow He et al. Table 1 (torchvision's layout: stride on the 3x3 convolution of
the bottleneck, "ResNet v1.5"); CIFAR models follow sec. 4.2: a 3x3 stem of 16 channels, three
stages of n blocks with 16/32/64 channels, option-A shortcuts, 6n + 2 layers.
Initialisation: He normal (fan-out) for convolutions (ops.residual.init_leaf and cnnjax.nn.Conv
with that initialiser), batch norm scale 1 / bias 0, the classifier PyTorch-style U(+-1/sqrt(fan_in)).
The blocks are cnnjax.nn.residual, i.e. the pure functions of cnnjax.ops.residual.
"""

from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax import kernels, ops
from cnnjax.models.registry import register
from cnnjax.models.torch_weights import default_torch_key
from cnnjax.nn import BatchNorm, Conv, Dense
from cnnjax.nn.layers import HE_FAN_OUT
from cnnjax.nn.residual import BasicBlock, BottleneckBlock, PreActBlock, PreActBottleneckBlock

# depth: (block, blocks per stage) -- He et al. 2016, Table 1.
IMAGENET_DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
                   50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3)),
                   152: ("bottleneck", (3, 8, 36, 3))}
IMAGENET_WIDTHS = (64, 128, 256, 512)
CIFAR_DEPTHS = (20, 32, 44, 56, 110)  # 6n + 2
CIFAR_WIDTHS = (16, 32, 64)
EXPANSION = {"basic": 1, "preact": 1, "bottleneck": 4, "preact_bottleneck": 4}
BLOCKS = {"basic": BasicBlock, "preact": PreActBlock, "bottleneck": BottleneckBlock,
          "preact_bottleneck": PreActBottleneckBlock}


# PyTorch's nn.Linear default weight init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
TORCH_LINEAR = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class ResNet(nn.Module):
    """block: "basic", "bottleneck", "preact" or "preact_bottleneck"; stage_sizes: blocks per
    stage; widths: each stage's base width (output = width x expansion); stem: "imagenet"
    (7x7/2 conv + 3x3/2 max-pool) or "cifar" (3x3 conv); shortcut: "B", "A" or "none";
    width_per_group / groups: bottleneck width = width * width_per_group / 64 * groups.
    Every downsampling layer is padded, so any input of at least 1x1 runs."""

    block: str
    stage_sizes: tuple[int, ...]
    num_classes: int = 1000
    widths: tuple[int, ...] = IMAGENET_WIDTHS
    stem: str = "imagenet"
    shortcut: str = "B"
    width_per_group: int = 64
    groups: int = 1
    remat: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        preact = self.block.startswith("preact")
        x = x.astype(self.dtype or x.dtype)
        if self.stem == "imagenet":
            x = Conv(self.widths[0], 7, stride=2, padding=3, use_bias=False, kernel_init=HE_FAN_OUT,
                     dtype=self.dtype, name="conv1")(x)
            if not preact:  # the pre-activation net normalises at the start of each block
                x = BatchNorm(activation="relu", dtype=self.dtype, name="bn1")(x, train)
            x = kernels.max_pool2d(x, 3, stride=2, padding=1)
        else:
            x = Conv(self.widths[0], 3, padding=1, use_bias=False, kernel_init=HE_FAN_OUT,
                     dtype=self.dtype, name="conv1")(x)
            if not preact:
                x = BatchNorm(activation="relu", dtype=self.dtype, name="bn1")(x, train)
        block_cls = BLOCKS[self.block]
        if self.remat:
            block_cls = nn.remat(block_cls, static_argnums=(2,))
        for i, (n, width) in enumerate(zip(self.stage_sizes, self.widths)):
            for j in range(n):
                kw = {}
                if self.block in ("bottleneck", "preact_bottleneck"):
                    kw["width"] = width * self.width_per_group // 64 * self.groups
                if self.block == "bottleneck":
                    kw["groups"] = self.groups
                x = block_cls(width * EXPANSION[self.block], stride=2 if (j == 0 and i > 0) else 1,
                              shortcut=self.shortcut, dtype=self.dtype, name=f"layer{i + 1}_{j}",
                              **kw)(x, train)
        if preact:
            x = BatchNorm(activation="relu", dtype=self.dtype, name="bn_final")(x, train)
        x = ops.global_avg_pool(x)
        return Dense(self.num_classes, kernel_init=TORCH_LINEAR, dtype=self.dtype,
                     name="fc")(x).astype(jnp.float32)


def torchvision_key(collection: str, path: tuple[str, ...]) -> str:
    """Flax path -> torchvision ResNet state_dict key: layer1_0 -> layer1.0, downsample.conv ->
    downsample.0, downsample.bn -> downsample.1."""
    key = default_torch_key(collection, path)
    key = re.sub(r"^layer(\d+)_(\d+)", r"layer\1.\2", key)
    return key.replace("downsample.conv.", "downsample.0.").replace("downsample.bn.", "downsample.1.")


def _builder(**fixed):
    def build(*, num_classes: int, **overrides) -> ResNet:
        return ResNet(num_classes=num_classes, **{**fixed, **overrides})
    return build


def _register_all() -> None:
    for depth, (block, sizes) in IMAGENET_DEPTHS.items():
        register(f"resnet{depth}", torch_keys=torchvision_key)(_builder(block=block, stage_sizes=sizes))
    for depth in (18, 34):  # He et al. Table 2: the same stacks without shortcuts
        register(f"plain{depth}")(_builder(block="basic", stage_sizes=IMAGENET_DEPTHS[depth][1],
                                           shortcut="none"))
    for depth in CIFAR_DEPTHS:
        n = (depth - 2) // 6
        cifar = dict(stage_sizes=(n, n, n), widths=CIFAR_WIDTHS, stem="cifar")
        register(f"cifar_resnet{depth}", input_shape=(32, 32, 3), num_classes=10)(
            _builder(block="basic", shortcut="A", **cifar))
        register(f"cifar_plain{depth}", input_shape=(32, 32, 3), num_classes=10)(
            _builder(block="basic", shortcut="none", **cifar))
    register("preact_resnet18")(_builder(block="preact", stage_sizes=(2, 2, 2, 2)))
    register("preact_resnet50")(_builder(block="preact_bottleneck", stage_sizes=(3, 4, 6, 3)))
    register("wide_resnet50_2", torch_keys=torchvision_key)(
        _builder(block="bottleneck", stage_sizes=(3, 4, 6, 3), width_per_group=128))
    register("resnext50_32x4d", torch_keys=torchvision_key)(
        _builder(block="bottleneck", stage_sizes=(3, 4, 6, 3), width_per_group=4, groups=32))


_register_all()
