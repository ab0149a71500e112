"""AlexNet: the 2012 paper (Krizhevsky, Sutskever & Hinton, "ImageNet classification with deep
convolutional neural networks", sec. 3 and Fig. 2) and torchvision's single-tower variant.

`alexnet`, the paper's network on 227x227x3 (the paper says 224; 227 is what makes conv1's
11x11/4 arithmetic give its 55x55 maps): five convolutions 96-256-384-384-256, ReLU after each,
local response normalisation (k=2, n=5, alpha=1e-4, beta=0.75) after conv1 and conv2, overlapping
3x3/2 max-pooling after both and after conv5, then fc6 4096 -> fc7 4096 -> fc8 classes with
dropout 0.5 on fc6's and fc7's outputs. conv2, conv4 and conv5 see only the half of their input
maps on their own GPU: groups=2 here. 60,965,224 parameters for 1000 classes.
Initialisation (sec. 5): weights N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6 and fc7 (to give
the ReLUs positive inputs early on), 0 in the others.

`alexnet_tv`, torchvision's variant (Krizhevsky 2014, "One weird trick"): 64-192-384-256-256, one
tower, no LRN, adaptive 6x6 average pooling before the classifier (so any input of at least
63x63 works), dropout on the inputs of fc6 and fc7. 61,100,840 parameters. Module names are
torchvision's nn.Sequential slots (`features_3` for `features.3`), and the 6x6x256 maps are
flattened channel-major as torch does, so its weights load with `from_torch` unchanged.
Initialisation: PyTorch's default, which torchvision keeps: weights U(-1/sqrt(fan_in),
1/sqrt(fan_in)); biases zero here (torch draws them from the same range).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax import kernels, ops
from cnnjax.models.registry import register, require_min_size
from cnnjax.models.torch_weights import sequential_torch_key
from cnnjax.nn import Conv, Dense, Dropout

PAPER_INPUT = 227
PAPER_INIT = nn.initializers.normal(0.01)
# PyTorch's default for Conv2d/Linear weights: U(-b, b) with b = 1 / sqrt(fan_in).
TORCH_DEFAULT_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
HIDDEN = 4096

# The paper's convolutions: (name, maps, kernel, stride, padding, groups, bias starts at 1,
# what follows the ReLU: local response normalisation and/or 3x3/2 max-pooling).
PAPER_CONVS = (
    ("conv1", 96, 11, 4, 0, 1, False, ("lrn", "pool")),
    ("conv2", 256, 5, 1, 2, 2, True, ("lrn", "pool")),
    ("conv3", 384, 3, 1, 1, 1, False, ()),
    ("conv4", 384, 3, 1, 1, 2, True, ()),
    ("conv5", 256, 3, 1, 1, 2, True, ("pool",)),
)
# torchvision's convolutions: (Sequential slot, maps, kernel, stride, padding, 3x3/2 max-pool after).
TORCHVISION_CONVS = (
    (0, 64, 11, 4, 2, True),
    (3, 192, 5, 1, 2, True),
    (6, 384, 3, 1, 1, False),
    (8, 256, 3, 1, 1, False),
    (10, 256, 3, 1, 1, True),
)
TORCHVISION_MIN_INPUT = 63  # the smallest size whose conv5 maps survive the last 3x3/2 pool


class AlexNet(nn.Module):
    """The 2012 paper's two-tower network: (N, 227, 227, 3) -> (N, num_classes) float32 logits."""

    num_classes: int = 1000
    dropout_rate: float = 0.5
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if x.ndim != 4 or x.shape[1:3] != (PAPER_INPUT, PAPER_INPUT):
            raise ValueError(f"alexnet (the 2012 paper's) needs NHWC inputs of exactly "
                             f"{PAPER_INPUT}x{PAPER_INPUT}: fc6 expects conv5's 6x6x256 maps; got "
                             f"shape {tuple(x.shape)} (alexnet_tv accepts any size from "
                             f"{TORCHVISION_MIN_INPUT})")
        x = x.astype(self.dtype or x.dtype)
        for name, maps, k, stride, padding, groups, bias_one, after in PAPER_CONVS:
            x = ops.relu(Conv(maps, k, stride=stride, padding=padding, groups=groups,
                              kernel_init=PAPER_INIT,
                              bias_init=nn.initializers.ones if bias_one else nn.initializers.zeros,
                              dtype=self.dtype, name=name)(x))
            if "lrn" in after:
                x = ops.local_response_norm(x, size=5, alpha=1e-4, beta=0.75, k=2.0)
            if "pool" in after:
                x = kernels.max_pool2d(x, 3, stride=2)
        x = x.reshape(x.shape[0], -1)
        for name in ("fc6", "fc7"):
            x = ops.relu(Dense(HIDDEN, kernel_init=PAPER_INIT, bias_init=nn.initializers.ones,
                               dtype=self.dtype, name=name)(x))
            x = Dropout(self.dropout_rate)(x, train)
        return Dense(self.num_classes, kernel_init=PAPER_INIT, dtype=self.dtype,
                     name="fc8")(x).astype(jnp.float32)


class AlexNetTV(nn.Module):
    """torchvision's AlexNet: (N, H, W, 3), H, W >= 63 -> (N, num_classes) float32 logits."""

    num_classes: int = 1000
    dropout_rate: float = 0.5
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        require_min_size(x, TORCHVISION_MIN_INPUT, "alexnet_tv")
        x = x.astype(self.dtype or x.dtype)
        for slot, maps, k, stride, padding, pool in TORCHVISION_CONVS:
            x = ops.relu(Conv(maps, k, stride=stride, padding=padding,
                              kernel_init=TORCH_DEFAULT_INIT, dtype=self.dtype,
                              name=f"features_{slot}")(x))
            if pool:
                x = kernels.max_pool2d(x, 3, stride=2)
        x = ops.adaptive_avg_pool(x, 6)
        x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)  # torch's channel-major flatten
        for slot in (1, 4):
            x = Dropout(self.dropout_rate)(x, train)
            x = ops.relu(Dense(HIDDEN, kernel_init=TORCH_DEFAULT_INIT, dtype=self.dtype,
                               name=f"classifier_{slot}")(x))
        return Dense(self.num_classes, kernel_init=TORCH_DEFAULT_INIT, dtype=self.dtype,
                     name="classifier_6")(x).astype(jnp.float32)


@register("alexnet", input_shape=(PAPER_INPUT, PAPER_INPUT, 3))
def alexnet(*, num_classes: int, **overrides) -> AlexNet:
    return AlexNet(num_classes=num_classes, **overrides)


@register("alexnet_tv", torch_keys=sequential_torch_key)
def alexnet_tv(*, num_classes: int, **overrides) -> AlexNetTV:
    return AlexNetTV(num_classes=num_classes, **overrides)
