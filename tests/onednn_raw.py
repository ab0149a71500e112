"""Calls one pass of the oneDNN extension on NumPy arrays outside XLA (`CnnjaxOnednnRun` in
cnnjax/kernels/onednn/conv.cc): the tests' way to run it from many threads or over many shapes
without compiling a program per shape."""

from __future__ import annotations

import ctypes

import numpy as np

from cnnjax.kernels.onednn import build
from cnnjax.kernels.onednn.conv import PASSES, ConvSpec


def run(spec: ConvSpec, pass_name: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float32 (x, w) -> y, (dy, w) -> dx or (x, dy) -> dw of `spec`; raises RuntimeError with
    the extension's one-line reason."""
    lib, reason = build.load()
    if lib is None:
        raise RuntimeError(reason)
    shape = {"forward": spec.output_shape, "input_grad": spec.input_shape,
             "weight_grad": spec.kernel_shape}[pass_name]
    a, b = (np.ascontiguousarray(v, np.float32) for v in (a, b))
    out = np.empty(shape, np.float32)
    n, h, w, c = spec.input_shape
    kh, kw, _, o = spec.kernel_shape
    shape10 = (ctypes.c_int64 * 10)(n, h, w, c, kh, kw, o, spec.groups, *spec.output_shape[1:3])
    conf8 = (ctypes.c_int64 * 8)(*spec.strides, *np.array(spec.padding).reshape(-1),
                                 *spec.dilation)
    err = ctypes.create_string_buffer(512)
    ptr = lambda v: v.ctypes.data_as(ctypes.c_void_p)
    if lib.CnnjaxOnednnRun(PASSES.index(pass_name), 0, int(spec.any_activations), shape10, conf8,
                           ptr(a), ptr(b), ptr(out), err, 512):
        raise RuntimeError(err.value.decode())
    return out
