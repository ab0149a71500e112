"""Feature maps of any named layer, penultimate-layer features and nearest neighbours.

Layer names are those of `cnnjax.analysis.graph.trace` (and of the summary table): Flax module
paths such as "Conv_0", "features_0", "layer1_0/conv2", or "max_pool1" for parameter-free
pooling. A layer's output is its last op's (conv / dense: after the bias, before the
activation function); "NAME:in" is the layer's input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import numpy as np

from cnnjax.analysis import graph


def layer_fn(model, variables, names: Sequence[str]) -> Callable[[jax.Array], dict[str, jax.Array]]:
    """x (N, H, W, C) -> {name: that layer's output (N, ...)}; jit-compiled, differentiable."""
    names = list(names)
    return jax.jit(lambda x: graph.evaluate(model, variables, x, names))


def penultimate_layer(model, input_shape: Sequence[int]) -> str:
    """The name ("LAST:in") of the features the classifier's last dense layer maps: AlexNet's
    fc7 output for `alexnet`, the pooled features for a ResNet, the hidden layer for
    `simple_cnn` (after its ReLU)."""
    dense = [l.name for l in graph.trace(model, input_shape) if l.kind == "dense"]
    if not dense:
        raise ValueError(f"{type(model).__name__} has no dense layer to take the input of")
    return f"{dense[-1]}:in"


def compute(fn: Callable[[jax.Array], dict[str, jax.Array]], images: np.ndarray, name: str,
            batch_size: int = 256) -> np.ndarray:
    """Layer `name` of `fn` (from `layer_fn`) on all `images` (N, H, W, C), batched: (N, ...)
    float32 NumPy. The last batch is padded to `batch_size` so one compilation serves all."""
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        padded = np.concatenate([chunk, np.repeat(chunk[:1], batch_size - len(chunk), 0)])
        out.append(np.asarray(fn(padded)[name], np.float32)[:len(chunk)])
    return np.concatenate(out)


def nearest_neighbours(queries: np.ndarray, bank: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest rows of `bank` (M, D) to each row of `queries` (Q, D) by Euclidean
    distance, as in AlexNet's Fig. 4 (there on fc7 features). Returns (indices (Q, k), distances
    (Q, k)), nearest first; ties keep the lower index (stable sort)."""
    queries, bank = np.asarray(queries, np.float64), np.asarray(bank, np.float64)
    if queries.ndim != 2 or bank.ndim != 2 or queries.shape[1] != bank.shape[1]:
        raise ValueError(f"queries and bank must be (Q, D) and (M, D), got {queries.shape} and "
                         f"{bank.shape}")
    if not 1 <= k <= len(bank):
        raise ValueError(f"k must be in [1, {len(bank)}], got {k}")
    sq = (queries ** 2).sum(1)[:, None] + (bank ** 2).sum(1)[None, :] - 2 * queries @ bank.T
    dist = np.sqrt(np.maximum(sq, 0.0))
    index = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return index, np.take_along_axis(dist, index, axis=1)
