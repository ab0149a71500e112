"""GoogLeNet, Inception v1 (Szegedy et al. 2015, "Going deeper with convolutions", Table 1 and
Fig. 3), as torchvision builds it so that its ImageNet weights load with `from_torch`.

Stem: 7x7/2 conv (64) -> 3x3/2 max-pool -> 1x1 conv (64) -> 3x3 conv (192) -> 3x3/2 max-pool;
nine inception modules 3a-3b, 4a-4e, 5a-5b (widths from Table 1) with max-pools after 3b and 4e;
global average pooling, dropout 40% and a linear classifier. With `aux_logits`, two auxiliary
classifiers (cnnjax.nn.InceptionAux) read the outputs of 4a and 4d; in training the model then
returns (logits, aux1, aux2), whose losses the trainer adds with weight 0.3 (sec. 5); in evaluation
it returns logits alone. Their parameters exist whenever `aux_logits` is set (they are created at
initialisation even with train=False).

torchvision's departures from the paper, kept for its weights: batch norm (eps 1e-3) after every
convolution instead of the two local response normalisations, 3x3 instead of 5x5 kernels in the
"5x5" branches (`wide_kernel=5` gives the paper's, 7,005,832 parameters), a 2x2/2 max-pool after 4e (3x3/2 in the
paper; both give 7x7 at 224), pooling with ceil_mode, and adaptive 4x4 pooling in the auxiliary
heads. Parameters for 1000 classes: 6,624,904, and 13,004,888 with the auxiliary heads.
torchvision's `transform_input` (re-normalising ImageNet-normalised input) is preprocessing and
not part of the model. Initialisation: the paper states none; torchvision's truncated normal with
std 0.01 for convolutions and linear layers, biases zero, batch norm scale 1 and bias 0.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax import kernels, ops
from cnnjax.models.registry import register, require_min_size
from cnnjax.models.torch_weights import sequential_torch_key
from cnnjax.nn import Dense, Dropout
from cnnjax.nn.inception import GOOGLENET_INIT, BasicConv, Inception, InceptionAux

# Table 1, after the stem: inception modules as (name, #1x1, #3x3 reduce, #3x3, #5x5 reduce,
# #5x5, pool proj) and max-pools as (name, window), stride 2, ceil_mode.
BODY = (
    ("inception3a", 64, 96, 128, 16, 32, 32),
    ("inception3b", 128, 128, 192, 32, 96, 64),
    ("maxpool3", 3),
    ("inception4a", 192, 96, 208, 16, 48, 64),
    ("inception4b", 160, 112, 224, 24, 64, 64),
    ("inception4c", 128, 128, 256, 24, 64, 64),
    ("inception4d", 112, 144, 288, 32, 64, 64),
    ("inception4e", 256, 160, 320, 32, 128, 128),
    ("maxpool4", 2),
    ("inception5a", 256, 160, 320, 32, 128, 128),
    ("inception5b", 384, 192, 384, 48, 128, 128),
)
# The auxiliary classifiers and the module whose output each reads.
AUX_HEADS = {"inception4a": "aux1", "inception4d": "aux2"}
# The smallest input whose maps survive the stem's and body's ceil-mode max-pools.
MIN_INPUT = 15


class GoogLeNet(nn.Module):
    """(N, H, W, 3), H, W >= 15 -> (N, num_classes) float32 logits, or in training with
    `aux_logits` the tuple (logits, aux1, aux2)."""

    num_classes: int = 1000
    aux_logits: bool = False
    wide_kernel: int = 3
    dropout_rate: float = 0.4
    aux_dropout_rate: float = 0.7
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False):
        require_min_size(x, MIN_INPUT, "googlenet")
        x = x.astype(self.dtype or x.dtype)
        x = BasicConv(64, 7, stride=2, padding=3, dtype=self.dtype, name="conv1")(x, train)
        x = kernels.max_pool2d(x, 3, stride=2, ceil_mode=True)
        x = BasicConv(64, 1, dtype=self.dtype, name="conv2")(x, train)
        x = BasicConv(192, 3, padding=1, dtype=self.dtype, name="conv3")(x, train)
        x = kernels.max_pool2d(x, 3, stride=2, ceil_mode=True)
        aux = []
        for name, *widths in BODY:
            if len(widths) == 1:
                x = kernels.max_pool2d(x, widths[0], stride=2, ceil_mode=True)
                continue
            x = Inception(*widths, wide_kernel=self.wide_kernel, dtype=self.dtype,
                          name=name)(x, train)
            run_aux = train or self.is_initializing()
            if self.aux_logits and name in AUX_HEADS and run_aux:
                aux.append(InceptionAux(self.num_classes, dropout_rate=self.aux_dropout_rate,
                                        dtype=self.dtype, name=AUX_HEADS[name])(x, train))
        x = Dropout(self.dropout_rate)(ops.global_avg_pool(x), train)
        logits = Dense(self.num_classes, kernel_init=GOOGLENET_INIT, dtype=self.dtype,
                       name="fc")(x).astype(jnp.float32)
        if self.aux_logits and train:
            return (logits, *(a.astype(jnp.float32) for a in aux))
        return logits


@register("googlenet", torch_keys=sequential_torch_key)
def googlenet(*, num_classes: int, **overrides) -> GoogLeNet:
    return GoogLeNet(num_classes=num_classes, **overrides)
