"""The switch between XLA's lowering of the `cnnjax.ops` references, the Pallas kernels and the
CPU extension (oneDNN's convolutions, cnnjax's batch-norm and pooling kernels).

`kernels` is one of
- "auto" (the default): the Pallas kernels on a GPU, the CPU extension on an x86-64 CPU, XLA's
  lowering of the references otherwise, on any number of devices;
- "xla": every entry point and convolution computes its `cnnjax.ops` reference with XLA;
- "pallas": the Pallas kernels, where they can run (convolutions other than depthwise on XLA);
- "onednn": on the CPU, the CPU extension (`cnnjax.kernels.onednn`): every convolution of
  `cnnjax.ops` (conv2d and everything built on it) on oneDNN, every training batch norm
  (`ops.batch_norm`, with its residual add and activation) and the pooling entry points on the
  extension's kernels; the rest on XLA.
On several devices the kernels run per device inside `shard_map`, as cnnjax.train's steps
compute the model (the batch norms synchronised over the mapped axis): neither the Pallas calls
nor the CPU custom calls define a sharding rule, so under plain jit over a sharded batch XLA
would gather the whole batch to every call.

Set it for a block of code with `use(...)`, for the whole process with `set_default(...)`, or for
a model with `KernelScoped(model, ...)` (what `config.model.kernels` does). The choice is read
when a function is traced, and it is part of jit's cache key (a JAX user context): `jax.jit(f)`
called under `use("onednn")` and then under `use("xla")` traces and compiles twice, once each.

Under "pallas" a kernel runs compiled on a GPU; elsewhere (CPU, TPU) the entry point falls back
to the reference unless `interpret` is set, which runs the kernel in the Pallas interpreter on
any backend (slow; for tests). Shapes and dtypes a kernel does not handle fall back too. Under
"auto" and "onednn" on the CPU backend, `conv_backend` (registered in `cnnjax.ops.hooks` by
`cnnjax.kernels`) sends each convolution to oneDNN and `cpu_kernel` the batch norms and pooling
to the extension's kernels; where the extension cannot be built or loaded (not x86-64 Linux, no
C++ compiler, no oneDNN wheel, a failed build) or a kernel does not take the arguments (float64
or float16, an activation it does not fuse), they stay on XLA. Every fallback logs one warning
per distinct reason, so it is visible once and never floods the log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

import jax

from cnnjax.kernels import onednn, tiling

CHOICES = ("auto", "xla", "pallas", "onednn")
logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Setting:
    """kernels: one of CHOICES; interpret: run the Pallas kernels in the Pallas interpreter."""

    kernels: str = "auto"
    interpret: bool = False


def _checked(kernels: str, interpret: bool) -> Setting:
    if kernels not in CHOICES:
        raise ValueError(f"unknown kernels {kernels!r}; expected one of {CHOICES}")
    if not isinstance(interpret, bool):
        raise ValueError(f"interpret must be a bool, got {interpret!r}")
    return Setting(kernels, interpret)


# The setting lives in a JAX user context: its value (the process default, or the innermost
# `use` of this thread) is part of the key of jit's tracing, lowering and compilation caches, so a
# function traced under two settings gives two programs.
_setting = jax.make_user_context(default_value=Setting())
_logged: set[str] = set()


def current() -> Setting:
    """The setting in force: the innermost `use`, else the process default."""
    return _setting.value


def set_default(kernels: str, *, interpret: bool = False) -> None:
    """Sets the process-wide choice (outside any `use` block)."""
    _setting.set_global(_checked(kernels, interpret))


@contextlib.contextmanager
def use(kernels: str, *, interpret: bool = False) -> Iterator[Setting]:
    """Within the block (in this thread), entry points compute with `kernels` (one of
    CHOICES)."""
    with _setting(_checked(kernels, interpret)):
        yield current()


def log_once(message: str) -> None:
    """Logs `message` as a warning the first time it is seen in this process."""
    if message not in _logged:
        _logged.add(message)
        logger.warning(message)


def kernel_mode(op: str, unsupported: str | None, interpret: bool) -> bool | None:
    """How entry point `op` computes now: None -> its XLA reference, False -> the compiled
    kernel, True -> the kernel in the Pallas interpreter.

    The kernel runs when the call passes `interpret=True`, the switch says "pallas", or it says
    "auto" and the backend is a GPU (or `use("auto", interpret=True)`), unless `unsupported`
    (the reason the kernel cannot take these arguments) is set, Pallas' Triton API is missing,
    or the backend is not a GPU and nothing asked for the interpreter.
    """
    setting = current()
    pallas = setting.kernels == "pallas" or (
        setting.kernels == "auto" and (setting.interpret or jax.default_backend() == "gpu"))
    if not interpret and not pallas:
        return None
    interpret = interpret or setting.interpret
    reason = unsupported or tiling.UNAVAILABLE
    if reason is None and not interpret and jax.default_backend() != "gpu":
        reason = (f"backend {jax.default_backend()!r} cannot compile the Triton kernels "
                  f"(interpret=True runs them in the Pallas interpreter)")
    if reason is not None:
        log_once(f"cnnjax.kernels.{op} falls back to the XLA reference: {reason}")
        return None
    return interpret


def _extension_loads() -> bool:
    """Whether the CPU extension is built and loaded (`onednn.load`); if not, logs why once."""
    reason = onednn.load()[1]
    if reason is not None:
        log_once(f"cnnjax.kernels: the CPU extension is unavailable, every convolution, batch "
                 f"norm and pooling runs on XLA: {reason}")
    return reason is None


def conv_backend(x: jax.Array, w: jax.Array, strides: tuple[int, int],
                 padding: tuple[tuple[int, int], tuple[int, int]], dilation: tuple[int, int],
                 groups: int, input_shape: tuple[int, ...] | None = None) -> jax.Array | None:
    """`cnnjax.ops.conv`'s backend: the NHWC/HWIO convolution (or with `input_shape`, its input
    gradient at cotangent x: a transposed convolution) on oneDNN when the switch says "auto" or
    "onednn", the backend is the CPU and oneDNN takes it; else None (XLA computes it).

    The first convolution traced builds or loads the extension (`onednn.load`); if that fails,
    its reason is logged once and every convolution stays on XLA.
    """
    setting = current()
    if setting.kernels not in ("auto", "onednn"):
        return None
    if jax.default_backend() != "cpu":
        if setting.kernels == "onednn":
            log_once(f"cnnjax.kernels: convolutions run on XLA: oneDNN computes on the CPU, the "
                     f"backend is {jax.default_backend()!r}")
        return None
    if not _extension_loads():
        return None
    reason = onednn.unsupported(x, w)
    if reason is not None:
        log_once(f"cnnjax.kernels: a convolution runs on XLA, oneDNN does not take its {reason}")
        return None
    if input_shape is not None:
        return onednn.conv2d_input_grad(x, w, input_shape, strides, padding, dilation, groups)
    return onednn.conv2d(x, w, strides, padding, dilation, groups)


def cpu_kernel(op: str, unsupported: str | None) -> bool:
    """Whether entry point `op` runs its CPU kernel (the CPU extension's, `cnnjax.kernels.onednn`):
    the switch says "auto" or "onednn", the backend is the CPU, the extension loads and
    `unsupported` (why the kernel cannot take these arguments) is None. Logs once why not where
    the switch asked for it."""
    if current().kernels not in ("auto", "onednn") or jax.default_backend() != "cpu":
        return False
    if not _extension_loads():
        return False
    if unsupported is not None:
        log_once(f"cnnjax.kernels.{op} falls back to the XLA reference: {unsupported}")
        return False
    return True


class KernelScoped:
    """A model whose `init` and `apply` run under `use(kernels, interpret=...)`; any other
    attribute is the wrapped model's. Parameters and their names are the wrapped model's."""

    def __init__(self, model: Any, kernels: str, interpret: bool = False):
        self.model = model
        self.setting = _checked(kernels, interpret)

    def init(self, *args, **kwargs):
        with use(self.setting.kernels, interpret=self.setting.interpret):
            return self.model.init(*args, **kwargs)

    def apply(self, *args, **kwargs):
        with use(self.setting.kernels, interpret=self.setting.interpret):
            return self.model.apply(*args, **kwargs)

    def __getattr__(self, name: str):
        if name == "model":  # not yet set (copy/unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.model, name)

    def __repr__(self) -> str:
        return f"KernelScoped({self.model!r}, kernels={self.setting.kernels!r})"

