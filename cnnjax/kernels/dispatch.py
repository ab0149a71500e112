"""The switch between XLA's lowering of the `cnnjax.ops` references and the Pallas kernels.

`kernels` is "xla" (the default: every entry point computes its `cnnjax.ops` reference) or
"pallas" (the kernels, where they can run). Set it for a block of code with `use(...)`, for the
whole process with `set_default(...)`, or for a model with `KernelScoped(model, ...)` (what
`config.model.kernels` does). The choice is read when a function is traced: a jit-compiled
function keeps the choice it was traced under.

Under "pallas" a kernel runs compiled on a GPU; elsewhere (CPU, TPU) the entry point falls back
to the reference unless `interpret` is set, which runs the kernel in the Pallas interpreter on
any backend (slow; for tests). Shapes and dtypes a kernel does not handle fall back too. Every
fallback logs one warning per distinct reason, so it is visible once and never floods the log.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

import jax

from cnnjax.kernels import tiling

CHOICES = ("xla", "pallas")
logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Setting:
    """kernels: "xla" or "pallas"; interpret: run the kernels in the Pallas interpreter."""

    kernels: str = "xla"
    interpret: bool = False


def _checked(kernels: str, interpret: bool) -> Setting:
    if kernels not in CHOICES:
        raise ValueError(f"unknown kernels {kernels!r}; expected one of {CHOICES}")
    if not isinstance(interpret, bool):
        raise ValueError(f"interpret must be a bool, got {interpret!r}")
    return Setting(kernels, interpret)


_default = Setting()
_scoped: contextvars.ContextVar[Setting | None] = contextvars.ContextVar("cnnjax_kernels",
                                                                       default=None)
_logged: set[str] = set()


def current() -> Setting:
    """The setting in force: the innermost `use`, else the process default."""
    scoped = _scoped.get()
    return _default if scoped is None else scoped


def set_default(kernels: str, *, interpret: bool = False) -> None:
    """Sets the process-wide choice (outside any `use` block)."""
    global _default
    _default = _checked(kernels, interpret)


@contextlib.contextmanager
def use(kernels: str, *, interpret: bool = False) -> Iterator[Setting]:
    """Within the block, entry points compute with `kernels` ("xla" or "pallas")."""
    token = _scoped.set(_checked(kernels, interpret))
    try:
        yield current()
    finally:
        _scoped.reset(token)


def log_once(message: str) -> None:
    """Logs `message` as a warning the first time it is seen in this process."""
    if message not in _logged:
        _logged.add(message)
        logger.warning(message)


def kernel_mode(op: str, unsupported: str | None, interpret: bool) -> bool | None:
    """How entry point `op` computes now: None -> its XLA reference, False -> the compiled
    kernel, True -> the kernel in the Pallas interpreter.

    The kernel runs when the call passes `interpret=True` or the switch says "pallas", unless
    `unsupported` (the reason the kernel cannot take these arguments) is set, Pallas' Triton
    API is missing, or the backend is not a GPU and nothing asked for the interpreter.
    """
    setting = current()
    if not interpret and setting.kernels != "pallas":
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

