"""Flax layers and blocks, each computing through `cnnjax.ops` (and `cnnjax.kernels`)."""

from cnnjax.nn.layers import BatchNorm, Conv, Dense, Dropout
from cnnjax.nn.residual import BasicBlock, BottleneckBlock, PreActBlock, PreActBottleneckBlock
