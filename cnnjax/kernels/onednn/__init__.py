"""The CPU extension, XLA FFI custom calls compiled once per machine into one library (`build`):
oneDNN's convolutions (`conv.cc`, and `conv`: the differentiable JAX op), and the passes of the
batch-norm and pooling kernels (`norm_act.cc` / `norm_act`, `pool.cc` / `pool`), which
`cnnjax.kernels.batch_norm_act` and `cnnjax.kernels.pool` run on the CPU."""

from cnnjax.kernels.onednn.build import load
from cnnjax.kernels.onednn.conv import (ConvSpec, conv2d, conv2d_input_grad, has_bf16,
                                        implementation, unsupported)
