"""Per-layer table of a model: output shape, parameters, activations and multiply-adds.

Rows are the layers `cnnjax.analysis.graph.trace` finds (the input, conv, dense, norm, pooling
and global-pooling layers), for ONE example. Conventions:

- weights: the kernel a conv / dense layer contracts with, without bias: the lectures' "weights"
  column (VGG-16's conv1_1: 3*3*3*64 = 1,728; fc6: 7*7*512*4096 = 102,760,448).
- params: every `params` scalar the layer owns, biases included (conv1_1: 1,728 + 64 = 1,792);
  the total is every scalar of the `params` collection (VGG-16: 138,357,544). Batch norm's
  running statistics are counted apart, as `state`.
- activations: scalars of each row's output, the input row included; bytes at the output's
  dtype. Activation functions work in place and get no row, as in the lecture's table. For
  VGG-16 at 224x224 the rows sum to 15,237,608 activations per image (61 MB in float32;
  tests/test_analysis_summary.py checks it row by row). The lecture's total of "24M activations,
  ~96 MB per image" does not follow from its own rows, which sum to this 15.2M.
- macs: multiply-accumulates of the conv / dense contractions, counting only kernel taps that
  land on real input, not on zero padding: XLA's cost-analysis convention, so FLOPs = 2 * MACs
  can be checked against `jax.jit(f).lower(x).cost_analysis()`. Elementwise work (bias,
  activations, pooling comparisons, normalisation) is not counted; XLA counts it, so its FLOPs
  are a little higher (1.7% for `simple_cnn` on 8x8 digits, checked in the tests).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from cnnjax.analysis import graph


@dataclasses.dataclass(frozen=True)
class Summary:
    """The layer rows and the totals per example (see the module docstring for conventions)."""

    layers: tuple[graph.Layer, ...]
    total_params: int
    total_state: int

    @property
    def total_weights(self) -> int:
        return sum(layer.weights for layer in self.layers)

    @property
    def total_activations(self) -> int:
        return sum(layer.activations for layer in self.layers)

    @property
    def total_activation_bytes(self) -> int:
        return sum(layer.activation_bytes for layer in self.layers)

    @property
    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def total_flops(self) -> int:
        return 2 * self.total_macs

    def layer(self, name: str) -> graph.Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"no layer {name!r}; layers are {[l.name for l in self.layers]}")

    def to_markdown(self) -> str:
        """A Markdown table, one row per layer, then the totals."""
        head = ("| layer | kind | output | weights | params | activations | bytes | MACs |\n"
                "|---|---|---|---:|---:|---:|---:|---:|\n")
        rows = [f"| {l.name} | {l.kind} | {'x'.join(map(str, l.output_shape))} | {l.weights:,} | "
                f"{l.params:,} | {l.activations:,} | {_bytes(l.activation_bytes)} | {l.macs:,} |"
                for l in self.layers]
        total = (f"| **total** | | | {self.total_weights:,} | {self.total_params:,} | "
                 f"{self.total_activations:,} | {_bytes(self.total_activation_bytes)} | "
                 f"{self.total_macs:,} |")
        notes = (f"\nParameters: {self.total_params:,} (plus {self.total_state:,} running "
                 f"statistics). Activations per example: {self.total_activations:,} "
                 f"({_bytes(self.total_activation_bytes)}, forward pass only). FLOPs: "
                 f"{self.total_flops:,} (2 x MACs; taps on zero padding not counted).\n")
        return head + "\n".join(rows + [total]) + "\n" + notes


def _bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def summary(model, input_shape: Sequence[int], *, input_dtype=jnp.float32,
            variables=None) -> Summary:
    """The layer table of `model` on one example of `input_shape` (no batch axis, e.g.
    (224, 224, 3)). Works on any Flax model applied as `model.apply(variables, x, train=False)`;
    nothing is computed (shapes only), so VGG-16 takes a fraction of a second."""
    if variables is None:
        variables = graph.abstract_variables(model, input_shape, input_dtype)
    layers = graph.trace(model, input_shape, input_dtype=input_dtype, variables=variables)
    sizes = {collection: sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))
             for collection, tree in variables.items()}
    return Summary(tuple(layers), sizes.get("params", 0),
                   sum(n for c, n in sizes.items() if c != "params"))
