"""MLP-Mixer S/16, B/16, L/16 (Tolstikhin et al. 2021, "MLP-Mixer: an all-MLP architecture for
vision", Table 1), at 224x224 as timm's `mixer_*16_224`.

A 16x16/16 convolution ("per-patch fully-connected") embeds the 14 x 14 = 196 patches into C
channels; L Mixer layers (cnnjax.nn.mixer.MixerBlock: token-mixing MLP of hidden width D_S,
channel-mixing MLP of hidden width D_C, each after a layer norm, with a skip connection); a
final layer norm, global average pooling over the patches, a linear classifier. Counts for
1000 classes: S/16 18,528,264, B/16 59,880,472, L/16 208,196,168.

The token-mixing MLP has one weight per patch, so a model built for 224x224 accepts exactly
224x224 (another size is another model: build it with `image_size=`).

Initialisation as the paper's released JAX code: LeCun normal kernels and zero biases for the
patch embedding and the MLPs, layer norm scale 1 / bias 0, and a zero classifier (so the first
step trains only the classifier, as in the paper's code). Departure: GELU is the exact erf form
(timm's; the released code uses the tanh approximation).
"""

from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax.models.registry import register
from cnnjax.models.torch_weights import sequential_torch_key
from cnnjax.nn import Conv, Dense
from cnnjax.nn.mixer import LayerNorm, MixerBlock

PATCH = 16
IMAGE_SIZE = 224
# name: (layers L, hidden size C, token-mixing MLP width D_S, channel-mixing MLP width D_C),
# Table 1.
CONFIGS = {"s16": (8, 512, 256, 2048), "b16": (12, 768, 384, 3072), "l16": (24, 1024, 512, 4096)}
LECUN = nn.initializers.lecun_normal()


class MlpMixer(nn.Module):
    """(N, image_size, image_size, 3) -> (N, num_classes) float32 logits."""

    num_layers: int = CONFIGS["s16"][0]
    hidden: int = CONFIGS["s16"][1]
    tokens_hidden: int = CONFIGS["s16"][2]
    channels_hidden: int = CONFIGS["s16"][3]
    num_classes: int = 1000
    patch: int = PATCH
    image_size: int = IMAGE_SIZE
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no dropout or batch statistics
        size = self.image_size
        if x.shape[1:3] != (size, size):
            raise ValueError(f"MLP-Mixer with {self.patch}x{self.patch} patches built for "
                             f"{size}x{size} takes inputs of exactly {size}x{size} (its "
                             f"token-mixing MLP fixes the number of patches), got "
                             f"{x.shape[1]}x{x.shape[2]}")
        if size % self.patch:
            raise ValueError(f"image_size={size} is not a multiple of the patch size {self.patch}")
        x = Conv(self.hidden, self.patch, stride=self.patch, kernel_init=LECUN, dtype=self.dtype,
                 name="stem_proj")(x.astype(self.dtype or x.dtype))
        x = x.reshape(x.shape[0], -1, self.hidden)  # (N, patches in row-major order, C)
        for i in range(self.num_layers):
            x = MixerBlock(self.tokens_hidden, self.channels_hidden, dtype=self.dtype,
                           name=f"blocks_{i}")(x)
        x = LayerNorm(dtype=self.dtype, name="norm")(x)
        x = jnp.mean(x, axis=1)
        return Dense(self.num_classes, kernel_init=nn.initializers.zeros, dtype=self.dtype,
                     name="head")(x).astype(jnp.float32)


def timm_mixer_key(collection: str, path: tuple[str, ...]) -> str:
    """Flax path -> timm MlpMixer state_dict key: blocks_3 -> blocks.3, stem_proj -> stem.proj."""
    return re.sub(r"^stem_proj\.", "stem.proj.", sequential_torch_key(collection, path))


def _builder(num_layers: int, hidden: int, tokens_hidden: int, channels_hidden: int):
    def build(*, num_classes: int, **overrides) -> MlpMixer:
        return MlpMixer(**{"num_layers": num_layers, "hidden": hidden,
                           "tokens_hidden": tokens_hidden, "channels_hidden": channels_hidden,
                           "num_classes": num_classes, **overrides})
    return build


def _register_all() -> None:
    for name, config in CONFIGS.items():
        register(f"mixer_{name}", input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
                 torch_keys=timm_mixer_key)(_builder(*config))


_register_all()
