"""Residual blocks as pure functions of explicit parameters and state (no Flax).

Every block is `f(params, x, *, stride, train, batch_stats, ...) -> (y, new_batch_stats)` on NHWC
input, with `params` / `batch_stats` plain nested dicts. `init_*` creates them (He et al. 2015
normal initialisation for convolutions, fan-out mode as torchvision; batch-norm scale 1, bias 0,
running mean 0, var 1). The Flax blocks in cnnjax.nn.residual declare exactly these trees.

Keys and shapes (C_in input channels, C output channels, w the bottleneck width):
  basic_block (He et al. 2016, Fig. 2 left):
    conv1 {kernel (3, 3, C_in, C)}, bn1 {scale, bias (C,)}, conv2 {kernel (3, 3, C, C)}, bn2 {(C,)}
  bottleneck_block (Fig. 5 right; C = 4 w for ResNet-50): conv1 (1, 1, C_in, w), bn1 (w,),
    conv2 (3, 3, w / groups, w) with `groups` (ResNeXt), bn2 (w,), conv3 (1, 1, w, C), bn3 (C,)
  preact_block (He et al. 2016b, identity mappings): bn1 (C_in,), conv1 (3, 3, C_in, C), bn2 (C,),
    conv2 (3, 3, C, C); its shortcut projection is a convolution without batch norm.
  preact_bottleneck_block: bn1 (C_in,), conv1 (1, 1, C_in, w), bn2 (w,), conv2 (3, 3, w, w),
    bn3 (w,), conv3 (1, 1, w, C); projection as preact_block.
  shortcut: "B" projection (1x1 conv, stride s, + bn) when the shape changes, identity otherwise:
    downsample {conv {kernel (1, 1, C_in, C)}, bn {(C,)}}; "A" parameter-free (strided identity,
    zero-padded channels); "none" no shortcut at all (the plain networks of Fig. 3).
batch_stats holds {mean, var} for every bn key above.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from cnnjax.ops.conv import conv2d
from cnnjax.ops.norm import batch_norm, update_running_stats

SHORTCUTS = ("A", "B", "none")
Params = dict
BatchStats = dict


# --- Parameter shapes, shared by init_* and the Flax wrappers -------------------------------

def conv_shape(kh: int, kw: int, cin: int, cout: int) -> dict:
    return {"kernel": (kh, kw, cin, cout)}


def bn_shape(c: int) -> dict:
    return {"scale": (c,), "bias": (c,)}


def _needs_projection(cin: int, cout: int, stride: int) -> bool:
    return stride != 1 or cin != cout


def _check_shortcut(shortcut: str) -> None:
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")


def basic_block_shapes(cin: int, cout: int, stride: int, shortcut: str = "B") -> dict:
    _check_shortcut(shortcut)
    shapes = {"conv1": conv_shape(3, 3, cin, cout), "bn1": bn_shape(cout),
              "conv2": conv_shape(3, 3, cout, cout), "bn2": bn_shape(cout)}
    if shortcut == "B" and _needs_projection(cin, cout, stride):
        shapes["downsample"] = {"conv": conv_shape(1, 1, cin, cout), "bn": bn_shape(cout)}
    return shapes


def bottleneck_block_shapes(cin: int, cout: int, stride: int, shortcut: str = "B", *,
                            width: int | None = None, groups: int = 1) -> dict:
    _check_shortcut(shortcut)
    width = cout // 4 if width is None else width
    if width % groups:
        raise ValueError(f"bottleneck width {width} is not divisible by groups={groups}")
    shapes = {"conv1": conv_shape(1, 1, cin, width), "bn1": bn_shape(width),
              "conv2": conv_shape(3, 3, width // groups, width), "bn2": bn_shape(width),
              "conv3": conv_shape(1, 1, width, cout), "bn3": bn_shape(cout)}
    if shortcut == "B" and _needs_projection(cin, cout, stride):
        shapes["downsample"] = {"conv": conv_shape(1, 1, cin, cout), "bn": bn_shape(cout)}
    return shapes


def preact_block_shapes(cin: int, cout: int, stride: int, shortcut: str = "B") -> dict:
    _check_shortcut(shortcut)
    shapes = {"bn1": bn_shape(cin), "conv1": conv_shape(3, 3, cin, cout), "bn2": bn_shape(cout),
              "conv2": conv_shape(3, 3, cout, cout)}
    if shortcut == "B" and _needs_projection(cin, cout, stride):
        shapes["downsample"] = {"conv": conv_shape(1, 1, cin, cout)}
    return shapes


def preact_bottleneck_block_shapes(cin: int, cout: int, stride: int, shortcut: str = "B", *,
                                   width: int | None = None) -> dict:
    _check_shortcut(shortcut)
    width = cout // 4 if width is None else width
    shapes = {"bn1": bn_shape(cin), "conv1": conv_shape(1, 1, cin, width), "bn2": bn_shape(width),
              "conv2": conv_shape(3, 3, width, width), "bn3": bn_shape(width),
              "conv3": conv_shape(1, 1, width, cout)}
    if shortcut == "B" and _needs_projection(cin, cout, stride):
        shapes["downsample"] = {"conv": conv_shape(1, 1, cin, cout)}
    return shapes


# --- Initialisation -----------------------------------------------------------------------

def init_leaf(key: jax.Array, name: str, shape: tuple[int, ...]) -> jax.Array:
    """He normal (fan-out) for kernels, ones for scales, zeros for biases."""
    if name == "kernel":
        fan_out = shape[0] * shape[1] * shape[3]
        return jax.random.normal(key, shape, jnp.float32) * jnp.sqrt(2.0 / fan_out)
    return (jnp.ones if name == "scale" else jnp.zeros)(shape, jnp.float32)


def init_from_shapes(key: jax.Array, shapes: dict) -> dict:
    """A parameter tree of the given leaf shapes, each leaf from its own key."""
    out = {}
    for i, (name, sub) in enumerate(sorted(shapes.items())):
        k = jax.random.fold_in(key, i)
        out[name] = init_from_shapes(k, sub) if isinstance(sub, dict) else init_leaf(k, name, sub)
    return out


def stats_from_shapes(shapes: dict) -> dict:
    """Running statistics {mean 0, var 1} for every batch-norm entry (those with a `scale`)."""
    out = {}
    for name, sub in shapes.items():
        if isinstance(sub, dict) and "scale" in sub:
            out[name] = {"mean": jnp.zeros(sub["scale"], jnp.float32),
                         "var": jnp.ones(sub["scale"], jnp.float32)}
        elif isinstance(sub, dict) and any(isinstance(v, dict) for v in sub.values()):
            nested = stats_from_shapes(sub)
            if nested:
                out[name] = nested
    return out


def _initializer(shapes_fn: Callable[..., dict]) -> Callable[..., tuple[Params, BatchStats]]:
    def init(key: jax.Array, cin: int, cout: int, *, stride: int = 1, shortcut: str = "B",
             **kw) -> tuple[Params, BatchStats]:
        shapes = shapes_fn(cin, cout, stride, shortcut, **kw)
        return init_from_shapes(key, shapes), stats_from_shapes(shapes)
    init.__doc__ = f"(params, batch_stats) of a {shapes_fn.__name__[:-7]} (see the module doc)."
    return init


init_basic_block = _initializer(basic_block_shapes)
init_bottleneck_block = _initializer(bottleneck_block_shapes)
init_preact_block = _initializer(preact_block_shapes)
init_preact_bottleneck_block = _initializer(preact_bottleneck_block_shapes)


# --- The blocks ---------------------------------------------------------------------------

def _check_params(params: Params, expected: dict, where: str, prefix: str = "") -> None:
    for name, sub in expected.items():
        path = f"{prefix}{name}"
        if name not in params:
            raise ValueError(f"{where}: params lack {path!r} (expected keys {sorted(expected)})")
        if isinstance(sub, dict):
            _check_params(params[name], sub, where, f"{path}.")
        elif tuple(params[name].shape) != tuple(sub):
            raise ValueError(f"{where}: parameter {path!r} has shape {tuple(params[name].shape)}, "
                             f"expected {tuple(sub)}")


def _bn(params, stats, name, x, train, momentum, eps, new_stats, *, activation="identity",
        residual=None):
    """act(bn(x) + residual) through ops.batch_norm (the fused kernel under kernels "pallas")."""
    p = params[name]
    s = stats.get(name, {}) if stats else {}
    y, mean, var = batch_norm(x, p["scale"], p["bias"], mean=s.get("mean"), var=s.get("var"),
                              train=train, eps=eps, residual=residual, activation=activation)
    if train:
        mean, var = update_running_stats(s["mean"], s["var"], mean, var, momentum)
        new_stats[name] = {"mean": mean, "var": var}
    elif s:
        new_stats[name] = s
    return y


def _conv(params, name, x, stride=1, padding=0, groups=1):
    return conv2d(x, params[name]["kernel"].astype(x.dtype), stride=stride, padding=padding,
                  groups=groups)


def shortcut_a(x: jax.Array, cout: int, stride: int) -> jax.Array:
    """Option A (He et al. 2016, sec. 3.3): subsample by `stride`, zero-pad the new channels."""
    y = x[:, ::stride, ::stride, :]
    extra = cout - x.shape[-1]
    if extra < 0:
        raise ValueError(f"option-A shortcut cannot reduce channels {x.shape[-1]} -> {cout}")
    return jnp.pad(y, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))


def _shortcut(params, stats, x, cout, stride, shortcut, train, momentum, eps, new_stats):
    if shortcut == "none":
        return None
    if "downsample" in params:
        ds_stats = stats.get("downsample", {}) if stats else {}
        ds_new: dict = {}
        y = _conv(params["downsample"], "conv", x, stride=stride)
        if "bn" in params["downsample"]:
            y = _bn(params["downsample"], ds_stats, "bn", y, train, momentum, eps, ds_new)
            new_stats["downsample"] = ds_new
        return y
    if _needs_projection(x.shape[-1], cout, stride):
        if shortcut == "B":
            raise ValueError("shortcut 'B' needs a downsample projection in params")
        return shortcut_a(x, cout, stride)
    return x


def _prepare(params, x, batch_stats, train, expected, where):
    if x.ndim != 4:
        raise ValueError(f"{where}: input must be NHWC, got shape {tuple(x.shape)}")
    _check_params(params, expected, where)
    if not train and not batch_stats:
        raise ValueError(f"{where}: inference (train=False) needs batch_stats")


def basic_block(params: Params, x: jax.Array, *, stride: int = 1, train: bool,
                batch_stats: BatchStats, shortcut: str = "B", momentum: float = 0.9,
                eps: float = 1e-5) -> tuple[jax.Array, BatchStats]:
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); conv1 carries the stride."""
    cout = params["conv1"]["kernel"].shape[-1]
    _prepare(params, x, batch_stats, train,
             basic_block_shapes(x.shape[-1], cout, stride, shortcut), "basic_block")
    new: dict = {}
    y = _bn(params, batch_stats, "bn1", _conv(params, "conv1", x, stride, 1), train, momentum, eps,
            new, activation="relu")
    s = _shortcut(params, batch_stats, x, cout, stride, shortcut, train, momentum, eps, new)
    # The residual add and the ReLU are fused into bn2 (one kernel under kernels "pallas").
    y = _bn(params, batch_stats, "bn2", _conv(params, "conv2", y, 1, 1), train, momentum, eps, new,
            activation="relu", residual=s)
    return y, new


def bottleneck_block(params: Params, x: jax.Array, *, stride: int = 1, train: bool,
                     batch_stats: BatchStats, shortcut: str = "B", groups: int = 1,
                     momentum: float = 0.9, eps: float = 1e-5) -> tuple[jax.Array, BatchStats]:
    """1x1 reduce -> 3x3 (stride, groups) -> 1x1 expand, each with batch norm, plus the shortcut.
    The stride sits on the 3x3 convolution (ResNet v1.5, as torchvision)."""
    width, cout = params["conv1"]["kernel"].shape[-1], params["conv3"]["kernel"].shape[-1]
    _prepare(params, x, batch_stats, train,
             bottleneck_block_shapes(x.shape[-1], cout, stride, shortcut, width=width,
                                     groups=groups), "bottleneck_block")
    new: dict = {}
    y = _bn(params, batch_stats, "bn1", _conv(params, "conv1", x), train, momentum, eps, new,
            activation="relu")
    y = _bn(params, batch_stats, "bn2", _conv(params, "conv2", y, stride, 1, groups), train,
            momentum, eps, new, activation="relu")
    s = _shortcut(params, batch_stats, x, cout, stride, shortcut, train, momentum, eps, new)
    y = _bn(params, batch_stats, "bn3", _conv(params, "conv3", y), train, momentum, eps, new,
            activation="relu", residual=s)
    return y, new


def preact_block(params: Params, x: jax.Array, *, stride: int = 1, train: bool,
                 batch_stats: BatchStats, shortcut: str = "B", momentum: float = 0.9,
                 eps: float = 1e-5) -> tuple[jax.Array, BatchStats]:
    """Pre-activation: conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut, no activation after the
    sum. A projection shortcut takes the pre-activated input, as in He et al.'s code."""
    cout = params["conv1"]["kernel"].shape[-1]
    _prepare(params, x, batch_stats, train,
             preact_block_shapes(x.shape[-1], cout, stride, shortcut), "preact_block")
    new: dict = {}
    pre = _bn(params, batch_stats, "bn1", x, train, momentum, eps, new, activation="relu")
    y = _conv(params, "conv1", pre, stride, 1)
    y = _bn(params, batch_stats, "bn2", y, train, momentum, eps, new, activation="relu")
    y = _conv(params, "conv2", y, 1, 1)
    source = pre if "downsample" in params else x
    s = _shortcut(params, batch_stats, source, cout, stride, shortcut, train, momentum, eps, new)
    return (y if s is None else y + s), new


def preact_bottleneck_block(params: Params, x: jax.Array, *, stride: int = 1, train: bool,
                            batch_stats: BatchStats, shortcut: str = "B", momentum: float = 0.9,
                            eps: float = 1e-5) -> tuple[jax.Array, BatchStats]:
    """Pre-activation bottleneck: each of the 1x1, 3x3 (stride) and 1x1 convolutions is preceded
    by batch norm and ReLU; the sum is not activated."""
    width, cout = params["conv1"]["kernel"].shape[-1], params["conv3"]["kernel"].shape[-1]
    _prepare(params, x, batch_stats, train,
             preact_bottleneck_block_shapes(x.shape[-1], cout, stride, shortcut, width=width),
             "preact_bottleneck_block")
    new: dict = {}
    pre = _bn(params, batch_stats, "bn1", x, train, momentum, eps, new, activation="relu")
    y = _conv(params, "conv1", pre)
    y = _bn(params, batch_stats, "bn2", y, train, momentum, eps, new, activation="relu")
    y = _conv(params, "conv2", y, stride, 1)
    y = _bn(params, batch_stats, "bn3", y, train, momentum, eps, new, activation="relu")
    y = _conv(params, "conv3", y)
    source = pre if "downsample" in params else x
    s = _shortcut(params, batch_stats, source, cout, stride, shortcut, train, momentum, eps, new)
    return (y if s is None else y + s), new
