"""2-D convolution on oneDNN (CPU) through XLA FFI custom calls, differentiable to any order.

`conv2d(x, w, strides, padding, dilation, groups)` equals `lax.conv_general_dilated(x, w,
strides, padding, rhs_dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"),
feature_group_count=groups)`: x (N, H, W, C), w (kh, kw, C // groups, O), explicit padding
((top, bottom), (left, right)), float32 (or bfloat16 where the CPU has AVX512-BF16/AMX).
`conv2d_input_grad(dy, w, input_shape, ...)` is its input gradient on its own: the transposed
convolution (`cnnjax.ops.conv_transpose2d` computes through it).

The three passes are custom calls (`conv.cc`): forward (x, w) -> y, input gradient (dy, w) -> dx
and weight gradient (x, dy) -> dw. Each is bilinear and joined to the other two by a custom VJP
(the transpose of each pass is the other two), so gradients of any order run on oneDNN.
Forward-mode differentiation (jvp, jax.hessian) is not defined for custom VJPs and raises JAX's
error. Under vmap each call runs once per mapped element (`vmap_method="sequential"`). Under jit
with operands sharded over several CPU devices, XLA gathers them and every device computes the
whole convolution (custom calls have no partitioning rule): right, but no faster than one device.

Threads: oneDNN (the GNU OpenMP build) runs an OpenMP team of omp_get_max_threads() threads
(OMP_NUM_THREADS, default the cores) started from the XLA thread that makes the call, which
waits for it; XLA's own intra-op pool is not used, and an XLA operation scheduled concurrently
with the call shares the cores with the team.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools

import jax
import numpy as np

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


def _call(pass_name: str, spec: ConvSpec, a: jax.Array, b: jax.Array, shape) -> jax.Array:
    out = jax.ShapeDtypeStruct(shape, a.dtype)
    return jax.ffi.ffi_call(build.target_name(pass_name), out, vmap_method="sequential")(
        a, b, **spec.attributes())


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _forward(spec: ConvSpec, x: jax.Array, w: jax.Array) -> jax.Array:
    return _call("forward", spec, x, w, spec.output_shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _input_grad(spec: ConvSpec, dy: jax.Array, w: jax.Array) -> jax.Array:
    return _call("input_grad", spec, dy, w, spec.input_shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _weight_grad(spec: ConvSpec, x: jax.Array, dy: jax.Array) -> jax.Array:
    return _call("weight_grad", spec, x, dy, spec.kernel_shape)


# <g, forward(x, w)> = <input_grad(g, w), x> = <weight_grad(x, g), w>: each pass's VJP is the
# other two passes.
_forward.defvjp(lambda spec, x, w: (_forward(spec, x, w), (x, w)),
                lambda spec, res, g: (_input_grad(spec, g, res[1]), _weight_grad(spec, res[0], g)))
_input_grad.defvjp(lambda spec, dy, w: (_input_grad(spec, dy, w), (dy, w)),
                   lambda spec, res, g: (_forward(spec, g, res[1]), _weight_grad(spec, g, res[0])))
_weight_grad.defvjp(lambda spec, x, dy: (_weight_grad(spec, x, dy), (x, dy)),
                    lambda spec, res, g: (_input_grad(spec, res[1], g), _forward(spec, res[0], g)))


def _require_extension() -> None:
    reason = build.load()[1]
    if reason is not None:
        raise RuntimeError(f"oneDNN convolutions unavailable: {reason}")


def conv2d(x: jax.Array, w: jax.Array, strides: tuple[int, int],
           padding: tuple[tuple[int, int], tuple[int, int]], dilation: tuple[int, int],
           groups: int, *, any_activations: bool = False) -> jax.Array:
    """(N, H, W, C) x (kh, kw, C // groups, O) -> (N, H', W', O) on oneDNN; see the module
    docstring, for arguments where `unsupported(x, w)` is None. Raises RuntimeError where the
    extension is unavailable (`build.load()` says why)."""
    _require_extension()
    spec = ConvSpec.create(x.shape, w.shape, strides, padding, dilation, groups, any_activations)
    return _forward(spec, x, w)


def conv2d_input_grad(dy: jax.Array, w: jax.Array, input_shape: tuple[int, int, int, int],
                      strides: tuple[int, int],
                      padding: tuple[tuple[int, int], tuple[int, int]],
                      dilation: tuple[int, int], groups: int) -> jax.Array:
    """The input gradient of `conv2d(x, w, ...)` for x of `input_shape` at the output cotangent
    dy, i.e. the transposed convolution of dy; differentiable like `conv2d`. dy's shape must be
    conv2d's output shape."""
    _require_extension()
    spec = ConvSpec.create(input_shape, w.shape, strides, padding, dilation, groups)
    if spec.output_shape != tuple(dy.shape):
        raise ValueError(f"dy has shape {tuple(dy.shape)}, the convolution of an input "
                         f"{tuple(input_shape)} gives {spec.output_shape}")
    return _input_grad(spec, dy, w)


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
