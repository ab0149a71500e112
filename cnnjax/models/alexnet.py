"""AlexNet: the 2012 paper (Krizhevsky, Sutskever & Hinton) and torchvision's single-tower variant.

`alexnet` (paper, 227x227x3): conv1 96@11x11/4 -> LRN -> max 3/2; conv2 256@5x5 pad 2, split in two
groups as on the two GPUs -> LRN -> max 3/2; conv3 384@3x3 (full, crosses the GPUs); conv4
384@3x3 (2 groups); conv5 256@3x3 (2 groups) -> max 3/2 -> 6x6x256; fc6 4096, fc7 4096 (dropout
0.5 each), fc8 classes. 60,965,224 parameters. Paper initialisation: weights N(0, 0.01); biases 1
in conv2, conv4, conv5 and the fully connected layers (to give ReLUs positive inputs), 0 elsewhere.
LRN with k=2, n=5, alpha=1e-4, beta=0.75.

`alexnet_tv` (torchvision): 64-192-384-256-256, no LRN, no groups, adaptive 6x6 pooling, so any
input of at least 63x63 works. 61,100,840 parameters; torchvision's module names.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax import ops
from cnnjax.models.registry import register, require_min_size
from cnnjax.models.torch_weights import sequential_torch_key
from cnnjax.nn import Conv, Dense, Dropout

PAPER_INIT = nn.initializers.normal(0.01)
ONES = nn.initializers.ones


class AlexNet(nn.Module):
    """The paper's network; conv2/4/5 use groups=2 (the two-GPU split)."""

    num_classes: int = 1000
    dropout_rate: float = 0.5
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if x.shape[1:3] != (227, 227):
            raise ValueError(f"alexnet (the paper's) needs 227x227 inputs, its fc6 expects 6x6x256; "
                             f"got {x.shape[1]}x{x.shape[2]} (alexnet_tv accepts any size >= 63)")
        x = x.astype(self.dtype or x.dtype)

        def conv(features, k, name, stride=1, padding=0, groups=1, bias_one=False):
            return Conv(features, k, stride=stride, padding=padding, groups=groups,
                        kernel_init=PAPER_INIT, bias_init=ONES if bias_one else nn.initializers.zeros,
                        dtype=self.dtype, name=name)

        x = ops.relu(conv(96, 11, "conv1", stride=4)(x))
        x = ops.max_pool(ops.local_response_norm(x), 3, stride=2)
        x = ops.relu(conv(256, 5, "conv2", padding=2, groups=2, bias_one=True)(x))
        x = ops.max_pool(ops.local_response_norm(x), 3, stride=2)
        x = ops.relu(conv(384, 3, "conv3", padding=1)(x))
        x = ops.relu(conv(384, 3, "conv4", padding=1, groups=2, bias_one=True)(x))
        x = ops.relu(conv(256, 3, "conv5", padding=1, groups=2, bias_one=True)(x))
        x = ops.max_pool(x, 3, stride=2).reshape(x.shape[0], -1)
        for name in ("fc6", "fc7"):
            x = ops.relu(Dense(4096, kernel_init=PAPER_INIT, bias_init=ONES, dtype=self.dtype, name=name)(x))
            x = Dropout(self.dropout_rate)(x, train)
        return Dense(self.num_classes, kernel_init=PAPER_INIT, bias_init=ONES, dtype=self.dtype,
                     name="fc8")(x).astype(jnp.float32)


class AlexNetTV(nn.Module):
    """torchvision's AlexNet, module names as its state_dict (features.N, classifier.N)."""

    num_classes: int = 1000
    dropout_rate: float = 0.5
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        require_min_size(x, 63, "alexnet_tv")
        x = x.astype(self.dtype or x.dtype)
        # (torch Sequential index, features, kernel, stride, padding, max-pool after)
        for index, features, k, stride, padding, pool in [(0, 64, 11, 4, 2, True), (3, 192, 5, 1, 2, True),
                                                         (6, 384, 3, 1, 1, False), (8, 256, 3, 1, 1, False),
                                                         (10, 256, 3, 1, 1, True)]:
            x = ops.relu(Conv(features, k, stride=stride, padding=padding, dtype=self.dtype,
                              name=f"features_{index}")(x))
            if pool:
                x = ops.max_pool(x, 3, stride=2)
        x = ops.adaptive_avg_pool(x, 6)
        # torch flattens NCHW: transpose so the classifier's weight order matches torchvision's.
        x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)
        for index in (1, 4):
            x = Dropout(self.dropout_rate)(x, train)
            x = ops.relu(Dense(4096, dtype=self.dtype, name=f"classifier_{index}")(x))
        return Dense(self.num_classes, dtype=self.dtype, name="classifier_6")(x).astype(jnp.float32)


@register("alexnet", input_shape=(227, 227, 3))
def alexnet(*, num_classes: int, **overrides) -> AlexNet:
    return AlexNet(num_classes=num_classes, **overrides)


@register("alexnet_tv", torch_keys=sequential_torch_key)
def alexnet_tv(*, num_classes: int, **overrides) -> AlexNetTV:
    return AlexNetTV(num_classes=num_classes, **overrides)
