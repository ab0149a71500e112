"""oneDNN's CPU convolutions as XLA FFI custom calls: `conv.cc` (the handlers), `build` (compiles
and registers them once per machine), `conv` (the differentiable JAX op)."""

from cnnjax.kernels.onednn.build import load
from cnnjax.kernels.onednn.conv import (ConvSpec, conv2d, conv2d_input_grad, has_bf16,
                                        implementation, unsupported)
