"""2-D convolution on oneDNN (CPU) through XLA FFI custom calls, differentiable to any order.

`conv2d(x, w, strides, padding, dilation, groups)` equals `lax.conv_general_dilated(x, w,
strides, padding, rhs_dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"),
feature_group_count=groups)`: x (N, H, W, C), w (kh, kw, C // groups, O), explicit padding
((top, bottom), (left, right)), float32 (or bfloat16 where the CPU has AVX512-BF16/AMX).
`conv2d_input_grad(dy, w, input_shape, ...)` is its input gradient on its own: the transposed
convolution (`cnnjax.ops.conv_transpose2d` computes through it).

The three passes are JAX primitives (`cnnjax.kernels.primitive`), lowered on the CPU to the
custom calls of `conv.cc` (forward (x, w) -> y, input gradient (dy, w) -> dx, weight gradient
(x, dy) -> dw) and on any other platform (an export for a GPU) to XLA's convolution. Each pass is
bilinear, and its transpose w.r.t. either operand is one of the other two passes, so every
transformation runs on oneDNN: reverse mode (gradients of any order) runs the backward passes,
forward mode (jvp, jacfwd, jax.hessian, linearize) computes a tangent as two convolutions. Under
vmap a pass makes one call: a vmapped batch (the weights not vmapped) folds into the batch axis;
vmapped weights (per-example weights, per-example weight gradients) fold into the feature groups,
one grouped convolution with B * groups groups. Under jit with operands sharded over several CPU
devices, XLA gathers them and every device computes the whole convolution (custom calls have no
partitioning rule): right, but no faster than one device.

Threads: oneDNN (the GNU OpenMP build) runs an OpenMP team of omp_get_max_threads() threads
(OMP_NUM_THREADS, default the cores) started from the XLA thread that makes the call, which
waits for it; XLA's own intra-op pool is not used, and an XLA operation scheduled concurrently
with the call shares the cores with the team.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.interpreters import ad, batching

from cnnjax.kernels import primitive
from cnnjax.kernels.onednn import build

PASSES = ("forward", "input_grad", "weight_grad")


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """The static description of one convolution: shapes (NHWC input, HWIO kernel, NHWC output),
    strides, explicit padding ((top, bottom), (left, right)), dilation and feature groups;
    any_activations: oneDNN chooses the activations' memory format too (reordering them around
    every call) rather than working on NHWC, for measuring that choice (see conv.cc)."""

    input_shape: tuple[int, int, int, int]
    kernel_shape: tuple[int, int, int, int]
    output_shape: tuple[int, int, int, int]
    strides: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]
    dilation: tuple[int, int]
    groups: int
    any_activations: bool = False

    @classmethod
    def create(cls, input_shape, kernel_shape, strides, padding, dilation, groups,
               any_activations: bool = False) -> ConvSpec:
        n, h, w, _ = input_shape
        kh, kw, _, o = kernel_shape
        size = [(s + lo + hi - d * (k - 1) - 1) // st + 1 for s, k, st, (lo, hi), d in
                zip((h, w), (kh, kw), strides, padding, dilation)]
        return cls(tuple(input_shape), tuple(kernel_shape), (n, size[0], size[1], o),
                   tuple(strides), tuple(tuple(p) for p in padding), tuple(dilation), groups,
                   any_activations)

    def attributes(self) -> dict[str, np.ndarray]:
        return {"input_shape": np.array(self.input_shape, np.int64),
                "kernel_shape": np.array(self.kernel_shape, np.int64),
                "output_shape": np.array(self.output_shape, np.int64),
                "strides": np.array(self.strides, np.int64),
                "padding": np.array(self.padding, np.int64).reshape(-1),
                "dilation": np.array(self.dilation, np.int64),
                "groups": np.int64(self.groups), "any_activations": self.any_activations}


def _ffi(pass_name: str, shape_of: str) -> Callable:
    """The pass as the custom call of `conv.cc`, with output shape `getattr(spec, shape_of)`."""
    def call(a: jax.Array, b: jax.Array, *, spec: ConvSpec) -> jax.Array:
        out = jax.ShapeDtypeStruct(getattr(spec, shape_of), a.dtype)
        return jax.ffi.ffi_call(build.target_name(pass_name), out)(a, b, **spec.attributes())
    return call


def _xla_forward(x: jax.Array, w: jax.Array, *, spec: ConvSpec) -> jax.Array:
    return lax.conv_general_dilated(x, w, spec.strides, spec.padding, rhs_dilation=spec.dilation,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=spec.groups)


def _xla_input_grad(dy: jax.Array, w: jax.Array, *, spec: ConvSpec) -> jax.Array:
    x = jax.ShapeDtypeStruct(spec.input_shape, dy.dtype)
    return jax.linear_transpose(lambda x: _xla_forward(x, w, spec=spec), x)(dy)[0]


def _xla_weight_grad(x: jax.Array, dy: jax.Array, *, spec: ConvSpec) -> jax.Array:
    w = jax.ShapeDtypeStruct(spec.kernel_shape, dy.dtype)
    return jax.linear_transpose(lambda w: _xla_forward(x, w, spec=spec), w)(dy)[0]


def _pass(pass_name: str, reference: Callable, shape_of: str):
    """The primitive of one pass: oneDNN on the CPU, `reference` (XLA) elsewhere."""
    return primitive.define(
        build.target_name(pass_name), reference, {"cpu": _ffi(pass_name, shape_of)},
        abstract_eval=lambda a, b, *, spec: jax.core.ShapedArray(getattr(spec, shape_of),
                                                                 a.dtype))


forward_p = _pass("forward", _xla_forward, "output_shape")  # (x, w) -> y
input_grad_p = _pass("input_grad", _xla_input_grad, "input_shape")  # (dy, w) -> dx
weight_grad_p = _pass("weight_grad", _xla_weight_grad, "kernel_shape")  # (x, dy) -> dw

# Each pass is bilinear, and <g, forward(x, w)> = <input_grad(g, w), x> = <weight_grad(x, g), w>:
# each pass's transpose w.r.t. either operand is one of the other two passes. The JVP of each
# (defbilinear) is the pass applied to each tangent: two kernel calls.
ad.defbilinear(forward_p,
               lambda g, x, w, *, spec: input_grad_p.bind(g, w, spec=spec),
               lambda g, x, w, *, spec: weight_grad_p.bind(x, g, spec=spec))
ad.defbilinear(input_grad_p,
               lambda g, dy, w, *, spec: forward_p.bind(g, w, spec=spec),
               lambda g, dy, w, *, spec: weight_grad_p.bind(g, dy, spec=spec))
ad.defbilinear(weight_grad_p,
               lambda g, x, dy, *, spec: input_grad_p.bind(dy, g, spec=spec),
               lambda g, x, dy, *, spec: forward_p.bind(x, g, spec=spec))


def _folded_spec(spec: ConvSpec, n: int, groups_factor: int) -> ConvSpec:
    """spec with the batch n and (feature groups, channels) multiplied by groups_factor."""
    (_, h, w, c), (kh, kw, cg, o) = spec.input_shape, spec.kernel_shape
    return ConvSpec.create((n, h, w, groups_factor * c), (kh, kw, cg, groups_factor * o),
                           spec.strides, spec.padding, spec.dilation,
                           groups_factor * spec.groups, spec.any_activations)


def _batching(prim, activations: int | None):
    """The batching rule of pass `prim`: where only operand `activations` (an NHWC operand whose
    batch axis the pass maps over) is vmapped, the vmapped axis folds into its batch: one call
    on B * N images. Otherwise (vmapped weights, or both operands of the weight gradient) the
    vmapped axis folds into the feature groups: one grouped convolution with B * groups groups
    (an unbatched operand is broadcast first)."""
    def rule(args, dims, *, spec: ConvSpec):
        if activations is not None and dims[1 - activations] is None:
            x = jnp.moveaxis(args[activations], dims[activations], 0)
            size, n = x.shape[0], x.shape[1]
            folded = list(args)
            folded[activations] = x.reshape(size * n, *x.shape[2:])
            out = prim.bind(*folded, spec=_folded_spec(spec, size * n, 1))
            return out.reshape(size, n, *out.shape[1:]), 0
        a, b = primitive.at_front(args, dims)
        size = a.shape[0]
        out = prim.bind(primitive.channels_in(a), primitive.channels_in(b),
                        spec=_folded_spec(spec, spec.input_shape[0], size))
        return primitive.channels_out(out, size), 0
    return rule


batching.primitive_batchers[forward_p] = _batching(forward_p, 0)
batching.primitive_batchers[input_grad_p] = _batching(input_grad_p, 0)
batching.primitive_batchers[weight_grad_p] = _batching(weight_grad_p, None)


def conv2d(x: jax.Array, w: jax.Array, strides: tuple[int, int],
           padding: tuple[tuple[int, int], tuple[int, int]], dilation: tuple[int, int],
           groups: int, *, any_activations: bool = False) -> jax.Array:
    """(N, H, W, C) x (kh, kw, C // groups, O) -> (N, H', W', O) on oneDNN; see the module
    docstring, for arguments where `unsupported(x, w)` is None. Raises RuntimeError where the
    extension is unavailable (`build.load()` says why)."""
    build.require()
    spec = ConvSpec.create(x.shape, w.shape, strides, padding, dilation, groups, any_activations)
    return forward_p.bind(x, w, spec=spec)


def conv2d_input_grad(dy: jax.Array, w: jax.Array, input_shape: tuple[int, int, int, int],
                      strides: tuple[int, int],
                      padding: tuple[tuple[int, int], tuple[int, int]],
                      dilation: tuple[int, int], groups: int) -> jax.Array:
    """The input gradient of `conv2d(x, w, ...)` for x of `input_shape` at the output cotangent
    dy, i.e. the transposed convolution of dy; differentiable like `conv2d`. dy's shape must be
    conv2d's output shape."""
    build.require()
    spec = ConvSpec.create(input_shape, w.shape, strides, padding, dilation, groups)
    if spec.output_shape != tuple(dy.shape):
        raise ValueError(f"dy has shape {tuple(dy.shape)}, the convolution of an input "
                         f"{tuple(input_shape)} gives {spec.output_shape}")
    return input_grad_p.bind(dy, w, spec=spec)


def unsupported(x: jax.Array, w: jax.Array) -> str | None:
    """Why oneDNN cannot compute this convolution (of `cnnjax.ops.conv2d`'s validated
    arguments), or None."""
    if x.dtype != w.dtype or x.dtype not in (np.float32, jax.numpy.bfloat16):
        return f"dtypes {x.dtype}/{w.dtype} (oneDNN takes float32, or bfloat16 with AVX512-BF16)"
    if x.dtype == jax.numpy.bfloat16 and not has_bf16():
        return "bfloat16 needs a CPU with AVX512-BF16 or AMX (this one has neither)"
    if 0 in x.shape or 0 in w.shape:
        return f"empty operand (shapes {tuple(x.shape)}, {tuple(w.shape)})"
    return None


@functools.cache
def has_bf16() -> bool:
    """Whether the CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16), where oneDNN's bf16
    convolutions are fast; elsewhere bfloat16 convolutions stay on XLA."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def implementation(pass_name: str, spec: ConvSpec, dtype=np.float32) -> str:
    """The name of the implementation oneDNN picked for a pass of `spec` (e.g. "brg:avx2",
    "jit:avx2", "ref:any"), creating (and caching) the primitive."""
    lib, reason = build.load()
    if lib is None:
        raise RuntimeError(f"oneDNN unavailable: {reason}")
    n, h, w, c = spec.input_shape
    kh, kw, _, o = spec.kernel_shape
    shape = (ctypes.c_int64 * 10)(n, h, w, c, kh, kw, o, spec.groups, *spec.output_shape[1:3])
    conf = (ctypes.c_int64 * 8)(*spec.strides, *np.array(spec.padding).reshape(-1), *spec.dilation)
    out = ctypes.create_string_buffer(256)
    rc = lib.CnnjaxOnednnImplName(PASSES.index(pass_name), int(np.dtype(dtype) != np.float32),
                                  int(spec.any_activations), shape, conf, out, 256)
    if rc:
        raise RuntimeError(f"oneDNN cannot create the {pass_name} primitive: {out.value.decode()}")
    return out.value.decode()
