"""Pure functions on arrays: NHWC activations (NWC in 1-D), HWIO kernels, no Flax, no state
(except `hooks`, where cnnjax.kernels registers its faster convolution and batch norm)."""

from cnnjax.ops.activations import (ACTIVATIONS, SELU_ALPHA, SELU_LAMBDA, elu, gelu, get_activation,
                                    hard_sigmoid, hard_swish, leaky_relu, log_softmax, prelu, relu,
                                    relu6, selu, sigmoid, softmax, swish, tanh)
from cnnjax.ops.conv import (PADDING_MODES, conv1d, conv2d, conv_transpose2d, convolve2d,
                             correlate2d, depthwise_conv2d, pad_spatial, separable_conv2d)
from cnnjax.ops.losses import softmax_cross_entropy, top_k_accuracy, top_k_correct
from cnnjax.ops.norm import (batch_moments, batch_norm, dropout, group_norm, layer_norm,
                             local_response_norm, update_running_stats, weight_standardize)
from cnnjax.ops.pool import (adaptive_avg_pool, avg_pool, global_avg_pool, global_max_pool,
                             lp_pool, max_pool)
from cnnjax.ops.residual import (basic_block, bottleneck_block, init_basic_block,
                                 init_bottleneck_block, init_preact_block,
                                 init_preact_bottleneck_block, preact_block,
                                 preact_bottleneck_block, shortcut_a)
from cnnjax.ops.shapes import conv_output_size, explicit_padding, pair
