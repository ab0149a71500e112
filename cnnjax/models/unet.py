"""U-Net (Ronneberger, Fischer & Brox 2015, "U-Net: convolutional networks for biomedical image
segmentation", Fig. 1): a fully convolutional encoder-decoder for per-pixel classification.

Contracting path: two 3x3 convolutions + ReLU at 64 channels, then four down blocks (2x2 max-pool,
two 3x3 convolutions doubling the channels: 128, 256, 512, 1024). Expansive path: four up blocks
(2x2 up-convolution halving the channels, concatenation with the contracting path's maps at that
resolution, two 3x3 convolutions), then a 1x1 convolution to `num_classes` scores per pixel.
(N, H, W, C) -> (N, H, W, num_classes) float32 logits, for any H, W divisible by 16 (the four
halvings); e.g. trained at 176x176 and applied at 256x256 with the same parameters.

The one departure from the paper: its 3x3 convolutions are unpadded (a 572x572 tile gives 388x388
scores and skip maps are cropped); here they are zero-padded so output and input sizes agree.
Parameters with the paper's widths, a 1-channel input and 2 classes: 31,030,658 (the first
convolution has 9 x C_in x 64 + 64 of them; each further input channel adds 576).
Initialisation is the paper's, described in cnnjax.nn.unet; the final 1x1 convolution uses the
same rule (std sqrt(2 / 64)).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax.models.registry import register
from cnnjax.nn import Conv
from cnnjax.nn.unet import UNET_CONV_INIT, DoubleConv, DownBlock, UpBlock

# Channels at each resolution, from the input's down to the bottleneck (Fig. 1).
WIDTHS = (64, 128, 256, 512, 1024)


class UNet(nn.Module):
    """`widths`: channels per resolution level (len(widths) - 1 halvings)."""

    num_classes: int = 2
    widths: tuple[int, ...] = WIDTHS
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no dropout or batch norm here
        factor = 2 ** (len(self.widths) - 1)
        if x.ndim != 4 or x.shape[1] % factor or x.shape[2] % factor or min(x.shape[1:3]) < factor:
            raise ValueError(f"unet needs NHWC inputs with height and width divisible by {factor} "
                             f"(so at least {factor}x{factor}), got shape {tuple(x.shape)}")
        x = x.astype(self.dtype or x.dtype)
        x = DoubleConv(self.widths[0], dtype=self.dtype, name="inc")(x)
        skips = []
        for i, width in enumerate(self.widths[1:]):
            skips.append(x)
            x = DownBlock(width, dtype=self.dtype, name=f"down{i + 1}")(x)
        for i, (width, skip) in enumerate(zip(reversed(self.widths[:-1]), reversed(skips))):
            x = UpBlock(width, dtype=self.dtype, name=f"up{i + 1}")(x, skip)
        return Conv(self.num_classes, 1, kernel_init=UNET_CONV_INIT, dtype=self.dtype,
                    name="outc")(x).astype(jnp.float32)


@register("unet", input_shape=(256, 256, 1), num_classes=2)
def unet(*, num_classes: int, **overrides) -> UNet:
    return UNet(num_classes=num_classes, **overrides)
