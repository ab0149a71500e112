"""Pure functions on arrays: NHWC activations (NWC in 1-D), HWIO kernels, no Flax, no state."""

from cnnjax.ops.activations import (ACTIVATIONS, SELU_ALPHA, SELU_LAMBDA, elu, get_activation,
                                    leaky_relu, log_softmax, prelu, relu, selu, sigmoid, softmax,
                                    tanh)
from cnnjax.ops.conv import PADDING_MODES, conv2d, pad_spatial
from cnnjax.ops.norm import batch_norm, dropout, local_response_norm
from cnnjax.ops.shapes import explicit_padding, pair
