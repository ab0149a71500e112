"""Converts PyTorch (torchvision / timm) state dicts into cnnjax variables.

Layouts: torch convolution weights are (O, I/groups, kh, kw) -> HWIO (kh, kw, I/groups, O);
linear weights (out, in) -> (in, out); batch-norm weight/bias/running_mean/running_var ->
scale/bias/mean/var. Each family supplies only the key mapping (ModelSpec.torch_keys).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from flax.core import unfreeze

from cnnjax.models.registry import create, get_spec

# Bookkeeping buffers torch keeps that have no counterpart here.
_IGNORED_SUFFIXES = ("num_batches_tracked",)


def default_torch_key(collection: str, path: tuple[str, ...]) -> str:
    """Joins module names with dots and renames the leaf the way torch names it."""
    leaf = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
            "var": "running_var"}.get(path[-1], path[-1])
    return ".".join(path[:-1] + (leaf,))


def sequential_torch_key(collection: str, path: tuple[str, ...]) -> str:
    """For models whose Flax modules are named after torch nn.Sequential slots: `features_3`
    -> `features.3`, `classifier_6` -> `classifier.6`."""
    key = default_torch_key(collection, path)
    return re.sub(r"(^|\.)([A-Za-z]\w*?)_(\d+)(?=\.)", r"\1\2.\3", key)


def torch_to_jax_layout(value: np.ndarray, leaf: str, target_ndim: int) -> np.ndarray:
    """Transposes one torch tensor into the layout of the Flax leaf named `leaf`."""
    if leaf == "kernel" and value.ndim == 4:
        return value.transpose(2, 3, 1, 0)
    if leaf == "kernel" and value.ndim == 3 and target_ndim == 3:  # Conv1d (O, I, k) -> (k, I, O)
        return value.transpose(2, 1, 0)
    if leaf == "kernel" and value.ndim == 2:
        return value.T
    if value.ndim == 4 and target_ndim == 1 and value.shape[1:] == (1, 1, 1):
        return value.reshape(-1)  # a per-output-channel factor, e.g. timm's ScaledStdConv2d gain
    return value


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch here
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def from_torch(name: str, state_dict: Mapping[str, Any], *, num_classes: int | None = None,
               **overrides) -> dict:
    """Builds the variables of model `name` from a torch `state_dict` (tensors or arrays).

    Raises ValueError naming the first missing key, the first key whose shape does not match
    (with both shapes), or the keys the model does not use: a state dict of another model fails.
    """
    spec = get_spec(name)
    if spec.torch_keys is None:
        raise ValueError(f"model {name!r} has no PyTorch weight mapping")
    model = create(name, num_classes=num_classes, **overrides)
    template = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                                 jnp.zeros((1,) + spec.input_shape), train=False))
    flat = traverse_util.flatten_dict(unfreeze(template))
    used, out = set(), {}
    for (collection, *path), leaf_shape in flat.items():
        key = spec.torch_keys(collection, tuple(path))
        if key not in state_dict:
            raise ValueError(f"state dict lacks key {key!r} (needed for {collection}/"
                             f"{'/'.join(path)}, shape {tuple(leaf_shape.shape)})")
        value = torch_to_jax_layout(_to_numpy(state_dict[key]), path[-1], len(leaf_shape.shape))
        if value.shape != tuple(leaf_shape.shape):
            raise ValueError(f"state dict key {key!r} has shape {value.shape} after conversion, "
                             f"model {name!r} expects {tuple(leaf_shape.shape)} for "
                             f"{collection}/{'/'.join(path)}")
        used.add(key)
        out[(collection, *path)] = jnp.asarray(value, dtype=leaf_shape.dtype)
    unused = sorted(k for k in state_dict if k not in used and not k.endswith(_IGNORED_SUFFIXES))
    if unused:
        raise ValueError(f"state dict has {len(unused)} keys model {name!r} does not use, "
                         f"first {unused[0]!r}: is it a state dict of another model?")
    return traverse_util.unflatten_dict(out)
