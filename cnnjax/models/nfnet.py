"""NFNet-F0 and F1 (Brock et al. 2021, "High-performance large-scale image recognition without
normalization"): ResNet-like nets with no batch norm, as DeepMind released them and as timm's
`dm_nfnet_f0` / `dm_nfnet_f1` load those weights.

Architecture (the paper's Table 1 and Fig. 1; the released code for the rest): a stem of four
3x3 scaled-WS convolutions with 16, 32, 64, 128 channels and strides 2, 1, 1, 2, gamma-GELU
between them; four stages of NF bottleneck blocks (cnnjax.nn.nfnet.NFBlock) with widths 256,
512, 1536, 1536, depths (1, 2, 6, 3) x k (k = 1 for F0, 2 for F1), strides 1, 2, 2, 2,
bottleneck ratio 0.5, group width 128, SE ratio 0.5, alpha 0.2; a final 1x1 convolution to
2 x 1536 = 3072 channels, gamma-GELU, global average pooling, dropout, linear classifier. Every
convolution has a bias and a gain and pads "SAME" (TensorFlow's rule). beta of each block is
1 / sqrt(expected variance of its input): 1 after the stem and after each stage's first block,
growing by alpha^2 per block. Counts for 1000 classes: F0 71,489,284, F1 132,634,256 (timm's).
Inputs: the paper trains F0 at 192x192 and tests at 256x256 (F1: 224 / 320); any input of at
least 32x32 works (five halvings).

Regularisation (Table 1 and the released config): dropout 0.2 (F0) / 0.3 (F1) before the
classifier; stochastic depth whose rate grows linearly from 0 to r * (n - 1) / n over the n
blocks, as DeepMind's code, with r = 0.25 in the released config. Pass
`drop_path_rate=STOCHASTIC_DEPTH` for it: the default is 0 (as timm's) because with a small batch
it can drop a block for every example, leaving that block without a gradient for the step.

Initialisation: convolution kernels Kaiming normal with fan-in and gain 1, biases 0, gains 1
(timm's and DeepMind's); classifier N(0, 0.01) with bias 0; the scalar `skipinit_gain` of each
block 0 as in the released models (SkipInit: every residual branch starts switched off, and only
the gains get a gradient at the first step). `skip_gain_init=1.0` gives the NF-ResNet regime of
Brock et al. 2021a instead, where each block adds alpha^2 to the variance at init. GELU is the exact erf form (timm's; DeepMind's
JAX code uses jax.nn.gelu's tanh approximation).
"""

from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax import ops
from cnnjax.models.registry import register
from cnnjax.models.torch_weights import default_torch_key
from cnnjax.nn import Dense, Dropout
from cnnjax.nn.nfnet import NFBlock, ScaledStdConv, gamma_gelu

STEM_WIDTHS = (16, 32, 64, 128)
STEM_STRIDES = (2, 1, 1, 2)
STAGE_WIDTHS = (256, 512, 1536, 1536)
STAGE_STRIDES = (1, 2, 2, 2)
BASE_DEPTHS = (1, 2, 6, 3)
FINAL_MULT = 2  # final 1x1 convolution to 2 x the last stage width
ALPHA = 0.2
STOCHASTIC_DEPTH = 0.25  # the released training config's rate r
# variant: (depth multiplier k, train resolution, test resolution, dropout) -- Table 1.
VARIANTS = {"f0": (1, 192, 256, 0.2), "f1": (2, 224, 320, 0.3)}
HEAD_INIT = nn.initializers.normal(0.01)


class NFNet(nn.Module):
    """(N, H, W, 3) of any size (the strided layers are SAME-padded) -> (N, num_classes) float32
    logits. `stage_depths` are the NF blocks per stage; `drop_path_rate` the stochastic-depth
    rate the last block approaches."""

    stage_depths: tuple[int, ...] = BASE_DEPTHS
    num_classes: int = 1000
    dropout_rate: float = 0.2
    drop_path_rate: float = 0.0
    skip_gain_init: float = 0.0
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.astype(self.dtype or x.dtype)
        for i, (width, stride) in enumerate(zip(STEM_WIDTHS, STEM_STRIDES)):
            if i:
                x = gamma_gelu(x)
            x = ScaledStdConv(width, 3, stride=stride, dtype=self.dtype,
                              name=f"stem_conv{i + 1}")(x)
        n_blocks, index, expected_var = sum(self.stage_depths), 0, 1.0
        for s, (depth, width, stride) in enumerate(zip(self.stage_depths, STAGE_WIDTHS,
                                                       STAGE_STRIDES)):
            for b in range(depth):
                x = NFBlock(width, stride=stride if b == 0 else 1, alpha=ALPHA,
                            beta=expected_var ** -0.5,
                            drop_path_rate=self.drop_path_rate * index / n_blocks,
                            skip_gain_init=self.skip_gain_init, dtype=self.dtype,
                            name=f"stages_{s}_{b}")(x, train)
                # The first block of a stage normalises its shortcut input: variance restarts at 1.
                expected_var = (1.0 if b == 0 else expected_var) + ALPHA ** 2
                index += 1
        x = ScaledStdConv(FINAL_MULT * STAGE_WIDTHS[-1], 1, dtype=self.dtype, name="final_conv")(x)
        x = ops.global_avg_pool(gamma_gelu(x))
        x = Dropout(self.dropout_rate)(x, train)
        return Dense(self.num_classes, kernel_init=HEAD_INIT, dtype=self.dtype,
                     name="head_fc")(x).astype(jnp.float32)


def timm_nfnet_key(collection: str, path: tuple[str, ...]) -> str:
    """Flax path -> timm NormFreeNet state_dict key: stem_conv1 -> stem.conv1, stages_2_3 ->
    stages.2.3, downsample_conv -> downsample.conv, head_fc -> head.fc; `gain` and
    `skipinit_gain` keep their names."""
    key = default_torch_key(collection, path)
    key = re.sub(r"^stages_(\d+)_(\d+)", r"stages.\1.\2", key)
    key = re.sub(r"^(stem|head)_", r"\1.", key)
    return key.replace("downsample_conv.", "downsample.conv.")


def _builder(depth_mult: int, dropout: float):
    def build(*, num_classes: int, **overrides) -> NFNet:
        depths = tuple(depth_mult * d for d in BASE_DEPTHS)
        return NFNet(**{"stage_depths": depths, "dropout_rate": dropout,
                        "num_classes": num_classes, **overrides})
    return build


def _register_all() -> None:
    for variant, (k, train_res, _test_res, dropout) in VARIANTS.items():
        register(f"nfnet_{variant}", input_shape=(train_res, train_res, 3),
                 torch_keys=timm_nfnet_key)(_builder(k, dropout))


_register_all()
