"""The one place where a higher layer offers faster implementations to the pure ops.

`cnnjax.kernels` (which `cnnjax.ops` never imports) registers, when it is imported, a kernel per
operation that has one; the op calls `kernel(name)` and, when one is registered and returns a
result, uses it instead of its XLA form. A kernel returns None to leave a call to XLA (the
kernels switch says "xla", or the arguments are ones it does not take).

Registered operations and their calling conventions:
- "conv": kernel(x, w, strides, padding, dilation, groups) with NHWC x, HWIO w and explicit
  padding ((top, bottom), (left, right)) returns the convolution; with `input_shape=(N, H, W, C)`
  it returns instead that convolution's input gradient (an input of input_shape) at the output
  cotangent x: the transposed convolution. (cnnjax.ops.conv)
- "batch_norm": kernel(x, scale, bias, residual, activation, eps, axis_name) returns (y, mean,
  var) of training-mode act(batch_norm(x) + residual), with statistics synchronised over the
  mapped axis `axis_name` (in shard_map) unless it is None. (cnnjax.ops.norm)
"""

from __future__ import annotations

from collections.abc import Callable

OPERATIONS = ("conv", "batch_norm")
_kernels: dict[str, Callable] = {}


def _checked(operation: str) -> str:
    if operation not in OPERATIONS:
        raise ValueError(f"no op takes a kernel named {operation!r}; expected one of {OPERATIONS}")
    return operation


def register_kernel(operation: str, kernel: Callable) -> None:
    """Makes `operation` offer each call to `kernel` first (replacing any kernel before)."""
    _kernels[_checked(operation)] = kernel


def kernel(operation: str) -> Callable | None:
    """The kernel registered for `operation`, or None."""
    return _kernels.get(_checked(operation))
