"""The layers of any Flax model, read from the jaxpr of its forward pass.

`trace(model, input_shape)` traces `model.apply(variables, x, train=False)` on one example
(batch 1; abstract, nothing is computed) and walks the jaxpr, inlining nested calls (jit,
custom_jvp/vjp, remat). Kernel sizes, strides, paddings and dilations are read from the real
ops (`conv_general_dilated`, `reduce_window*`), so pure-op layers inside blocks (the
convolutions of `cnnjax.ops.residual`) are seen like Flax modules. A layer (row) is one of:

  input        the input itself;
  conv, dense  a conv_general_dilated / dot_general whose other operand comes from the model's
               variables (its kernel), with the elementwise ops of the same Flax module that
               follow (the bias);
  norm         elementwise ops combining the activations with another module's variables
               (batch norm's scale and shift with its running statistics); "elementwise" when
               none of them is a running statistic or a scale;
  max_pool, avg_pool, pool   a reduce_window with window or stride > 1 on a spatial axis;
  global_avg_pool, global_max_pool   a sum / max over exactly the spatial axes.

Everything else (activations, reshapes, residual additions, dropout, local response
normalisation, constant linear maps such as adaptive average pooling's bin matrices) belongs to
no layer. A layer's output is that of its last op (for conv and dense: after the bias, before
the activation function).

Names: a layer with variables is named by its Flax module path ("features_0",
"layer1_0/conv1": the path of its variables minus the leaf name); a parameter-free layer by the
enclosing module scope and a per-kind counter ("max_pool1", "layer1_0/max_pool1").

Receptive fields are propagated through every op (`cnnjax.analysis.fields`): per array axis
either an `AxisField` (a spatial axis of the input), None (not spatial), or for the whole
array the string "global" (every unit sees the whole input: after a flatten, a dense layer or a
global pool) or "undefined: <why>" (an op this analysis does not model, e.g. a transposed
convolution). Residual additions take the union of their branches' fields (Araujo et al.'s
multi-path rule). Only 4-D NHWC inputs have spatial axes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from cnnjax import kernels
from cnnjax.analysis.fields import AxisField, Window

GLOBAL = "global"
# Call-like primitives whose body is inlined: their semantics is their jaxpr.
_CALLS = {"pjit", "jit", "closed_call", "core_call", "checkpoint", "remat", "remat2"}
# Custom-derivative calls: inlined for the analysis, but bound whole for values (keeping their
# derivative rules) unless a layer lies inside.
_CUSTOM_CALLS = {"custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"}
_REDUCE_WINDOW = {"reduce_window_max": "max_pool", "reduce_window_sum": "avg_pool",
                  "reduce_window_min": "pool", "reduce_window": "pool"}
_REDUCE = {"reduce_sum": "global_avg_pool", "reduce_max": "global_max_pool",
           "reduce_min": "global_pool", "reduce_prod": "global_pool", "argmax": "global_pool",
           "argmin": "global_pool", "reduce_and": "global_pool", "reduce_or": "global_pool"}
# Same-shape primitives that are not elementwise: their fields are not the union of inputs'.
_NOT_ELEMENTWISE = {"rev", "cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp", "sort",
                    "argsort", "gather", "scatter", "scatter-add", "scatter_add", "scatter_mul",
                    "scatter_min", "scatter_max", "dynamic_slice", "dynamic_update_slice",
                    "select_and_scatter_add", "select_and_gather_add", "fft", "top_k",
                    "cond", "while", "scan", "custom_linear_solve", "pallas_call",
                    # the Pallas kernels' primitives (cnnjax.kernels)
                    "batch_norm_act_fwd", "max_pool2d_fwd", "avg_pool2d_fwd",
                    "depthwise_conv2d_fwd"}

Field = Any  # tuple[AxisField | None, ...] (one entry per array axis) | str


@dataclasses.dataclass
class Layer:
    """One row of the model's layer table (see the module docstring for what a row is).

    output_shape: the layer's output without the batch axis, e.g. (224, 224, 64).
    weights: scalars of the kernel a conv / dense contracts with (no bias).
    params: scalars of every `params` leaf first used by this layer (kernel, bias, scale, ...);
      each leaf is counted once, by the first layer that uses it.
    state: scalars of other collections first used here (batch norm's running statistics).
    macs: multiply-accumulates per example of its conv / dense contraction, counting only the
      taps that fall on real input (not on zero padding), as XLA's cost analysis does.
    windows: for conv and pooling rows, the op's Window along each input spatial axis
      (height, width) that it slides over; () otherwise.
    field: the receptive field of the output (module docstring).
    """

    name: str
    kind: str
    module: tuple[str, ...] | None
    output_shape: tuple[int, ...]
    dtype: np.dtype
    weights: int = 0
    params: int = 0
    state: int = 0
    macs: int = 0
    windows: tuple[Window, ...] = ()
    field: Field = None

    @property
    def activations(self) -> int:
        """Scalars of the output per example."""
        return math.prod(self.output_shape)

    @property
    def activation_bytes(self) -> int:
        return self.activations * np.dtype(self.dtype).itemsize


@dataclasses.dataclass(frozen=True)
class _Info:
    """What the walk knows of one jaxpr value: the variable leaves it is computed from (when it
    does not depend on the input), whether it depends on the input, its receptive field and the
    layer whose output it carries."""

    leaves: frozenset = frozenset()
    from_input: bool = False
    field: Field = None
    row: int | None = None


_CONST = _Info()


def _undefined(why: str) -> str:
    return f"undefined: {why}"


def _union(fields: Sequence[Field], ndim: int) -> Field:
    """Field of an elementwise combination of arrays with these fields (same rank or scalars)."""
    strs = [f for f in fields if isinstance(f, str)]
    if strs:
        return next((f for f in strs if f != GLOBAL), GLOBAL)
    out: list[AxisField | None] = [None] * ndim
    for f in fields:
        if len(f) != ndim:
            continue  # a scalar operand
        for i, a in enumerate(f):
            if a is None:
                continue
            if out[i] is None:
                out[i] = a
            else:
                merged = out[i].union(a)
                if merged is None:
                    return _undefined(f"adding maps with misaligned fields {out[i]} and {a}")
                out[i] = merged
    return tuple(out)


def _spatial(field: Field) -> bool:
    return isinstance(field, tuple) and any(a is not None for a in field)


def _conv_field(eqn, field: Field) -> Field:
    p = eqn.params
    lhs_spec, _, out_spec = p["dimension_numbers"]
    if field[lhs_spec[0]] is not None or field[lhs_spec[1]] is not None:
        return _undefined("convolution over a spatial axis used as batch or features")
    out: list[AxisField | None] = [None] * len(out_spec)
    for i, (la, oa, w) in enumerate(zip(lhs_spec[2:], out_spec[2:], _conv_windows(eqn))):
        if field[la] is None:
            continue
        if p["lhs_dilation"][i] != 1:
            return _undefined("transposed (input-dilated) convolution")
        out[oa] = field[la].then(w)
    return tuple(out)


def _conv_windows(eqn) -> tuple[Window, ...]:
    """The Window of a conv_general_dilated along each of its spatial axes, in order."""
    p = eqn.params
    lhs_spec, rhs_spec, _ = p["dimension_numbers"]
    rhs_shape = eqn.invars[1].aval.shape
    return tuple(Window(rhs_shape[rhs_spec[2 + i]], p["window_strides"][i],
                        tuple(p["padding"][i]), p["rhs_dilation"][i])
                 for i in range(len(lhs_spec) - 2))


def _reduce_window_axes(eqn) -> list[tuple[int, Window]]:
    """(array axis, Window) of every axis a reduce_window slides over with window or stride > 1."""
    p = eqn.params
    return [(i, Window(k, s, tuple(pad), d))
            for i, (k, s, pad, d) in enumerate(zip(p["window_dimensions"], p["window_strides"],
                                                   p["padding"], p["window_dilation"]))
            if k > 1 or s > 1]


def _reduce_window_field(eqn, field: Field) -> Field:
    out = list(field)
    for i, w in _reduce_window_axes(eqn):
        if field[i] is None:
            continue
        if eqn.params["base_dilation"][i] != 1:
            return _undefined("base-dilated reduce_window")
        out[i] = field[i].then(w)
    return tuple(out)


def _dot_field(eqn, fields: list[Field]) -> Field:
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    ndims = [v.aval.ndim for v in eqn.invars]
    out_ndim = eqn.outvars[0].aval.ndim
    lhs_free = ndims[0] - len(lc) - len(lb)
    mapped = []
    for side, (f, contract, batch) in enumerate(zip(fields, (lc, rc), (lb, rb))):
        if f is None:
            continue
        if isinstance(f, str):
            return f
        if any(f[a] is not None for a in contract):
            return GLOBAL
        # Output axes: the batch axes, then lhs's free axes, then rhs's.
        free = [a for a in range(ndims[side]) if a not in contract and a not in batch]
        full: list[AxisField | None] = [f[a] for a in batch] + [None] * (out_ndim - len(batch))
        offset = len(lb) + (0 if side == 0 else lhs_free)
        for k, a in enumerate(free):
            full[offset + k] = f[a]
        mapped.append(tuple(full))
    return _union(mapped, out_ndim)


def _reshape_field(eqn, field: Field) -> Field:
    """A spatial axis survives a reshape when the sizes before it multiply to the same number
    and its size is unchanged (then its index is unchanged); otherwise it is merged: global."""
    old, new = eqn.invars[0].aval.shape, eqn.params["new_sizes"]
    if eqn.params.get("dimensions") is not None:
        return GLOBAL if _spatial(field) else (None,) * len(new)
    out: list[AxisField | None] = [None] * len(new)
    for i, a in enumerate(field):
        if a is None:
            continue
        before = math.prod(old[:i])
        j = next((j for j in range(len(new)) if math.prod(new[:j]) == before and new[j] == old[i]),
                 None)
        if j is None:
            return GLOBAL
        out[j] = a
    return tuple(out)


def _broadcast_field(eqn, field: Field) -> Field:
    shape, dims = eqn.params["shape"], eqn.params["broadcast_dimensions"]
    old = eqn.invars[0].aval.shape
    out: list[AxisField | None] = [None] * len(shape)
    for i, d in enumerate(dims):
        if field[i] is not None and old[i] == 1 and shape[d] != 1:
            return _undefined("broadcast of a spatial axis")
        out[d] = field[i]
    return tuple(out)


def _field(eqn, ins: list[_Info]) -> Field:
    """The receptive field of eqn's (first) output, from its inputs' fields."""
    prim = eqn.primitive.name
    fields = [i.field if i.from_input else None for i in ins]
    live = [f for f in fields if f is not None]
    strs = [f for f in live if isinstance(f, str)]
    if prim == "dot_general":
        return _dot_field(eqn, fields)
    if strs:
        return next((f for f in strs if f != GLOBAL), GLOBAL)
    f0 = next(f for f in fields if f is not None)
    if prim == "conv_general_dilated":
        if fields[1] is not None:
            return _undefined("convolution with an input-dependent kernel")
        return _conv_field(eqn, f0)
    if prim in _REDUCE_WINDOW:
        return _reduce_window_field(eqn, f0)
    if prim in _REDUCE:
        axes = eqn.params["axes"]
        if any(f0[a] is not None for a in axes):
            return GLOBAL
        return tuple(a for i, a in enumerate(f0) if i not in axes)
    if prim == "reshape":
        return _reshape_field(eqn, f0)
    if prim == "broadcast_in_dim":
        return _broadcast_field(eqn, f0)
    if prim == "transpose":
        return tuple(f0[i] for i in eqn.params["permutation"])
    if prim == "squeeze":
        dims = eqn.params["dimensions"]
        if any(f0[d] is not None for d in dims):
            return GLOBAL
        return tuple(a for i, a in enumerate(f0) if i not in dims)
    if prim == "slice":
        strides = eqn.params["strides"] or (1,) * len(f0)
        return tuple(a and a.shifted(s, st)
                     for a, s, st in zip(f0, eqn.params["start_indices"], strides))
    if prim == "pad":
        if fields[1] is not None:
            return _undefined("padding with an input-dependent value")
        out = []
        for a, (lo, _, interior) in zip(f0, eqn.params["padding_config"]):
            if a is not None and interior:
                return _undefined("interior padding of a spatial axis")
            out.append(a and a.shifted(-lo))
        return tuple(out)
    if prim == "split":
        if f0[eqn.params["axis"]] is not None:
            return _undefined("split along a spatial axis")
        return f0
    if prim == "concatenate":
        d = eqn.params["dimension"]
        if any(f[d] is not None for f in live):
            return _undefined("concatenation along a spatial axis")
        return _union(live, len(f0))
    out_shape = eqn.outvars[0].aval.shape
    same = all(v.aval.shape in (out_shape, ()) for v, f in zip(eqn.invars, fields) if f is not None)
    if prim in _NOT_ELEMENTWISE or not same:
        return _undefined(f"primitive {prim!r}")
    return _union(live, len(out_shape))


def _sub_jaxpr(eqn):
    """(jaxpr, consts) of an inlinable call eqn, or None."""
    prim = eqn.primitive.name
    if prim not in _CALLS and prim not in _CUSTOM_CALLS:
        return None
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        sub = eqn.params.get(key)
        if sub is None:
            continue
        jaxpr, consts = (sub.jaxpr, sub.consts) if isinstance(sub, jcore.ClosedJaxpr) else (sub, ())
        if isinstance(jaxpr, jcore.Jaxpr) and len(jaxpr.invars) == len(eqn.invars):
            return jaxpr, consts
    return None


class _Walk:
    """One walk over a model's jaxpr; with `values` it also computes every value (jit- and
    grad-compatible) and keeps each layer's output and input."""

    def __init__(self, leaf_paths: list[tuple[str, ...]], leaf_sizes: list[int], values: bool):
        self.paths, self.sizes, self.values = leaf_paths, leaf_sizes, values
        self.layers: list[Layer] = []
        self.counted: set[int] = set()
        self.names: dict[str, int] = {}  # layer name -> times used
        self.kinds: dict[str, int] = {}  # scope/kind of parameter-free layers -> count
        self.outputs: dict[int, Any] = {}
        self.inputs: dict[int, Any] = {}

    # -- layers ---------------------------------------------------------------------------
    def _module(self, leaves: frozenset) -> tuple[str, ...]:
        return min(self.paths[i][1:-1] for i in leaves)

    def _unique(self, name: str) -> str:
        n = self.names.get(name, 0) + 1
        self.names[name] = n
        return name if n == 1 else f"{name}#{n}"

    @staticmethod
    def _scope(stack: str) -> str:
        """The Flax module path of a name stack: flax names the root module first (its class,
        e.g. "VGG"), then the submodules; jitted helper functions add "jit(...)" entries."""
        parts = [p for p in stack.split("/") if p and not p.startswith(("jit(", "pjit("))]
        return "/".join(parts[1:])

    def _count(self, layer: Layer, leaves: frozenset) -> int:
        """Adds the not yet counted leaves to the layer; returns the params scalars added."""
        added = 0
        for i in sorted(leaves - self.counted):
            self.counted.add(i)
            if self.paths[i][0] == "params":
                layer.params += self.sizes[i]
                added += self.sizes[i]
            else:
                layer.state += self.sizes[i]
        return added

    def _new(self, kind: str, module: tuple[str, ...] | None, name: str, aval) -> int:
        self.layers.append(Layer(self._unique(name), kind, module, tuple(aval.shape[1:]),
                                 np.dtype(aval.dtype)))
        return len(self.layers) - 1

    def _assign(self, eqn, ins: list[_Info], stack: str) -> tuple[int | None, bool]:
        """(layer, owned): the layer eqn's output is the output of (a new one, or one it
        extends; owned=True), or the layer its first activation input carries (owned=False)."""
        prim = eqn.primitive.name
        x_ins = [i for i in ins if i.from_input]
        p_leaves = frozenset().union(*(i.leaves for i in ins if not i.from_input))
        carried = x_ins[0].row
        aval = eqn.outvars[0].aval
        if p_leaves and prim in ("conv_general_dilated", "dot_general") and len(x_ins) == 1:
            module = self._module(p_leaves)
            kind = "conv" if prim == "conv_general_dilated" else "dense"
            row = self._new(kind, module, "/".join(module) or kind, aval)
            layer = self.layers[row]
            layer.weights = self._count(layer, p_leaves)
            layer.macs = _macs(eqn)
            if kind == "conv":
                layer.windows = _conv_windows(eqn)
            return row, True
        if p_leaves:
            module = self._module(p_leaves)
            if carried is not None and self.layers[carried].module == module:
                row = carried
                self.layers[row].output_shape = tuple(aval.shape[1:])
                self.layers[row].dtype = np.dtype(aval.dtype)
            else:
                stats = any(self.paths[i][0] != "params" or self.paths[i][-1] == "scale"
                            for i in p_leaves)
                row = self._new("norm" if stats else "elementwise", module,
                                "/".join(module) or "elementwise", aval)
            self._count(self.layers[row], p_leaves)
            return row, True
        f_in = x_ins[0].field
        if prim in _REDUCE_WINDOW and _spatial(f_in):
            slid = [(i, w) for i, w in _reduce_window_axes(eqn) if f_in[i] is not None]
            if slid:
                kind = _REDUCE_WINDOW[prim]
                row = self._new(kind, None, self._prefixed(stack, kind), aval)
                self.layers[row].windows = tuple(w for _, w in slid)
                return row, True
        if prim in _REDUCE and _spatial(f_in):
            spatial_axes = {i for i, a in enumerate(f_in) if a is not None}
            if set(eqn.params["axes"]) == spatial_axes:
                kind = _REDUCE[prim]
                return self._new(kind, None, self._prefixed(stack, kind), aval), True
        return carried, False

    def _prefixed(self, stack: str, kind: str) -> str:
        scope = self._scope(stack)
        base = f"{scope}/{kind}" if scope else kind
        self.kinds[base] = self.kinds.get(base, 0) + 1
        return f"{base}{self.kinds[base]}"

    # -- walking --------------------------------------------------------------------------
    def run(self, jaxpr: jcore.Jaxpr, consts, in_infos: list[_Info], in_vals: list,
            stack: str = "") -> tuple[list[_Info], list]:
        env: dict[Any, tuple[_Info, Any]] = {}

        def read(v):
            if isinstance(v, jcore.Literal):
                return _CONST, v.val
            return env[v]

        for v, c in zip(jaxpr.constvars, consts):
            env[v] = (_CONST, c)
        for v, info, val in zip(jaxpr.invars, in_infos, in_vals):
            env[v] = (info, val)
        for eqn in jaxpr.eqns:
            ins, vals = zip(*map(read, eqn.invars)) if eqn.invars else ((), ())
            inner = f"{stack}/{eqn.source_info.name_stack}" if stack else str(eqn.source_info.name_stack)
            out_infos, out_vals = self._eqn(eqn, list(ins), list(vals), inner)
            for v, info, val in zip(eqn.outvars, out_infos, out_vals):
                if not isinstance(v, jcore.DropVar):
                    env[v] = (info, val)
        outs = [read(v) for v in jaxpr.outvars]
        return [o[0] for o in outs], [o[1] for o in outs]

    def _bind(self, eqn, vals: list) -> list:
        if not self.values:
            return [None] * len(eqn.outvars)
        bind = eqn.primitive.get_bind_params(eqn.params)
        # JAX < 0.8 returns (subfuns, params), later versions the params alone.
        subfuns, params = bind if isinstance(bind, tuple) else ((), bind)
        out = eqn.primitive.bind(*subfuns, *vals, **params)
        return list(out) if eqn.primitive.multiple_results else [out]

    def _eqn(self, eqn, ins: list[_Info], vals: list, stack: str) -> tuple[list[_Info], list]:
        sub = _sub_jaxpr(eqn)
        if sub is not None:
            before = len(self.layers)
            infos, outs = self.run(sub[0], sub[1], ins, vals, stack)
            if eqn.primitive.name in _CUSTOM_CALLS and len(self.layers) == before:
                outs = self._bind(eqn, vals)  # keeps the custom derivative rule
            return infos, outs
        outs = self._bind(eqn, vals)
        if not any(i.from_input for i in ins):
            leaves = frozenset().union(*(i.leaves for i in ins))
            return [_Info(leaves=leaves)] * len(eqn.outvars), outs
        field = _field(eqn, ins)
        row, owned = self._assign(eqn, ins, stack)
        if owned:
            self.layers[row].field = field
            if self.values:
                self.outputs[row] = outs[0]
                if row not in self.inputs:
                    self.inputs[row] = next(v for i, v in zip(ins, vals) if i.from_input)
        return [_Info(from_input=True, field=field, row=row)] * len(eqn.outvars), outs


def _valid_taps(n: int, out: int, w: Window, input_dilation: int) -> int:
    """Sum over the `out` output positions of the kernel taps that land on one of the n real
    input positions (not on padding, not between the samples of an input-dilated axis)."""
    starts = np.arange(out)[:, None] * w.stride - w.padding[0]
    q = starts + np.arange(w.kernel)[None, :] * w.dilation
    real = (q >= 0) & (q <= (n - 1) * input_dilation) & (q % input_dilation == 0)
    return int(real.sum())


def _macs(eqn) -> int:
    """Multiply-accumulates per example of a conv_general_dilated or dot_general eqn."""
    out = eqn.outvars[0].aval
    if eqn.primitive.name == "dot_general":
        (lc, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval.shape
        batch = out.shape[0] if out.ndim else 1
        return math.prod(out.shape) * math.prod(lhs[a] for a in lc) // max(batch, 1)
    p = eqn.params
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    lhs, rhs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
    taps = 1
    for i, w in enumerate(_conv_windows(eqn)):
        taps *= _valid_taps(lhs[lhs_spec[2 + i]], out.shape[out_spec[2 + i]], w,
                            p["lhs_dilation"][i])
    # The kernel's input-feature axis already holds C_in / groups.
    return taps * rhs[rhs_spec[1]] * rhs[rhs_spec[0]]


def _flat_variables(variables) -> tuple[list[tuple[str, ...]], list, Any]:
    flat, treedef = jax.tree_util.tree_flatten_with_path(variables)
    paths = [tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
             for path, _ in flat]
    return paths, [leaf for _, leaf in flat], treedef


def abstract_variables(model, input_shape: Sequence[int], input_dtype=jnp.float32):
    """The model's variables as ShapeDtypeStructs (nothing allocated), from a batch-1 init."""
    key = jax.random.PRNGKey(0)
    x = jax.ShapeDtypeStruct((1, *input_shape), input_dtype)
    return jax.eval_shape(lambda x: model.init({"params": key, "dropout": key}, x, train=False), x)


def _walk(model, variables, x, values: bool) -> _Walk:
    paths, leaves, treedef = _flat_variables(variables)
    # The walk reads XLA's own primitives (conv_general_dilated, ...), not oneDNN/Pallas calls.
    with kernels.use("xla"):
        closed = jax.make_jaxpr(
            lambda leaves, x: model.apply(jax.tree_util.tree_unflatten(treedef, leaves), x,
                                          train=False))(leaves, x)
    walk = _Walk(paths, [math.prod(np.shape(leaf)) for leaf in leaves], values)
    if x.ndim == 4:
        field = (None, AxisField(0), AxisField(1), None)
    else:
        field = _undefined(f"input of rank {x.ndim}; receptive fields need NHWC images")
    walk.layers.append(Layer("input", "input", None, tuple(x.shape[1:]), np.dtype(x.dtype),
                             field=field))
    in_infos = [_Info(leaves=frozenset([i])) for i in range(len(leaves))]
    in_infos.append(_Info(from_input=True, field=field, row=0))
    vals = list(leaves) + [x] if values else [None] * (len(leaves) + 1)
    walk.run(closed.jaxpr, closed.consts, in_infos, vals)
    if values:
        walk.outputs[0] = x
    return walk


def trace(model, input_shape: Sequence[int], *, input_dtype=jnp.float32,
          variables=None) -> list[Layer]:
    """The layers of `model` on one example of `input_shape` (no batch axis, e.g. (224, 224, 3)),
    first the input. `variables` defaults to the shapes of a fresh init."""
    if variables is None:
        variables = abstract_variables(model, input_shape, input_dtype)
    x = jax.ShapeDtypeStruct((1, *input_shape), input_dtype)
    return _walk(model, variables, x, values=False).layers


def evaluate(model, variables, x: jax.Array, names: Sequence[str]) -> dict[str, jax.Array]:
    """Outputs of the named layers of `model` (names as in `trace`) on the batch x (N, ...):
    {name: (N, *output_shape)}. "NAME:in" gives the input of layer NAME instead (its first
    op's activation operand: for a dense layer, the features it maps). Differentiable and
    jit-compatible (x may be a tracer)."""
    walk = _walk(model, variables, x, values=True)
    index = {layer.name: i for i, layer in enumerate(walk.layers)}
    out = {}
    for name in names:
        base, _, part = name.partition(":")
        if base not in index or part not in ("", "in") or (part and index[base] not in walk.inputs):
            raise ValueError(f"unknown layer {name!r}; layers are {list(index)} (add ':in' for "
                             f"a conv/dense/pool layer's input)")
        out[name] = (walk.inputs if part else walk.outputs)[index[base]]
    return out
