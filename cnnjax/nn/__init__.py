"""Flax layers and blocks, each computing through `cnnjax.ops` (and `cnnjax.kernels`)."""

from cnnjax.nn.layers import BatchNorm, Conv, Dense, Dropout, StochasticDepth
from cnnjax.nn.conv1d import Conv1D
from cnnjax.nn.inception import BasicConv, Inception, InceptionAux, NaiveInception
from cnnjax.nn.unet import DoubleConv, DownBlock, UpBlock, UpConv
from cnnjax.nn.residual import BasicBlock, BottleneckBlock, PreActBlock, PreActBottleneckBlock
from cnnjax.nn.nfnet import NFBlock, ScaledStdConv
from cnnjax.nn.squeeze_excite import SqueezeExcitation
from cnnjax.nn.mixer import LayerNorm, MixerBlock, MlpBlock
from cnnjax.nn.mobile import (DepthwiseSeparable, InvertedResidual, MBConv, MobileNetV3Block,
                              conv_norm_act, make_divisible)
