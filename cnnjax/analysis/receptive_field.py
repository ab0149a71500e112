"""Receptive field size, effective stride (jump) and offset of every layer of any image model.

Follows Araujo, Norris & Sim, "Computing receptive fields of convolutional neural networks",
Distill 2019 (arithmetic in `cnnjax.analysis.fields`). Per layer and per spatial axis:
  size     r: input pixels a unit of this layer's output sees (a 3x3 conv: 3; three: 7);
  jump     S: input pixels between neighbouring units, the product of the strides so far;
  padding  P: how far the field of unit 0 hangs over the input's top / left edge;
  center   of unit 0's field, -P + (r - 1) / 2; unit i's is center + i S.
Kernel sizes, strides, paddings and dilations are those of the real ops in the model's jaxpr
(`cnnjax.analysis.graph`), and multi-path graphs (residual additions) take the union of their
branches' fields, Araujo et al.'s rule for arbitrary graphs. Layers after a flatten, a dense
layer or a global pool see the whole input ("global").

Comparison with the article's published table (its library run on TF-Slim models; receptive
field / effective stride / effective padding of the last feature map before the classifier):
  alexnet_v2    195 / 32 / 64    ours `alexnet` (the 2012 paper's) pool5: 195 / 32 / 64
  vgg_16        212 / 32 / 90    ours `vgg16` pool5: 212 / 32 / 90
  resnet_v1_50  483 / 32 / 239   ours `resnet50` (torchvision's layout): 427 / 32 / 213
The ResNet-50 figures differ because the architectures differ, not the definitions: TF-Slim's
resnet_v1 subsamples in the LAST unit of stages 1-3 (stride on its 3x3 conv), torchvision in
the FIRST unit of stages 2-4, so Slim runs more 3x3 convolutions at the coarser jumps (larger
field), and Slim's "SAME" 3x3/2 max-pool pads (0, 1) where torchvision pads (1, 1) (P 239 vs
213). A model built with Slim's layout gives 483 / 32 / 239 here
(tests/test_analysis_receptive_field.py). Sizes count whole pixels, padding included, as the
article does; the "effective" receptive field (the pixels that actually matter, Luo et al.
2016) is smaller.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax.numpy as jnp

from cnnjax.analysis import graph


@dataclasses.dataclass(frozen=True)
class LayerField:
    """The receptive field of one layer's output; size, jump, padding and center are (height,
    width) pairs, None when the layer is global or undefined (`note` says which and why)."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    windows: tuple
    size: tuple[int, int] | None
    jump: tuple[int, int] | None
    padding: tuple[int, int] | None
    center: tuple[float, float] | None
    note: str = ""


def _row(layer: graph.Layer) -> LayerField:
    field = layer.field
    axes = {} if isinstance(field, str) else {a.axis: a for a in field if a is not None}
    if isinstance(field, str) or set(axes) != {0, 1}:
        note = field if isinstance(field, str) else graph.GLOBAL
        return LayerField(layer.name, layer.kind, layer.output_shape, layer.windows, None, None,
                          None, None, note)
    h, w = axes[0], axes[1]
    return LayerField(layer.name, layer.kind, layer.output_shape, layer.windows,
                      (h.size, w.size), (h.jump, w.jump), (h.padding, w.padding),
                      (h.center, w.center))


def receptive_field(model, input_shape: Sequence[int], *, variables=None) -> list[LayerField]:
    """The receptive field of every layer of `model` on NHWC input of `input_shape` (no batch
    axis, e.g. (224, 224, 3)), first the input (size 1). Nothing is computed (shapes only)."""
    if len(input_shape) != 3:
        raise ValueError(f"receptive fields need an image input shape (H, W, C), got "
                         f"{tuple(input_shape)}")
    return [_row(layer) for layer in graph.trace(model, input_shape, input_dtype=jnp.float32,
                                                 variables=variables)]


def network_field(fields: Sequence[LayerField]) -> LayerField:
    """The field of the last layer that still has one: the network's receptive field in the
    article's sense (its last feature map before global pooling or the classifier)."""
    local = [f for f in fields if f.size is not None]
    if not local:
        raise ValueError("no layer has a local receptive field")
    return local[-1]


def to_markdown(fields: Sequence[LayerField]) -> str:
    """A Markdown table: layer, kind, output, window ops, size, jump, padding, center."""

    def pair(v) -> str:
        if v is None:
            return ""
        return f"{v[0]:g}" if v[0] == v[1] else f"{v[0]:g}x{v[1]:g}"

    def window(ws) -> str:
        if not ws:
            return ""
        w = ws[0]
        text = f"{w.kernel}/{w.stride} pad {w.padding[0]},{w.padding[1]}"
        return text + (f" dil {w.dilation}" if w.dilation > 1 else "")

    lines = ["| layer | kind | output | window (k/s) | size | jump | padding | center |",
             "|---|---|---|---|---:|---:|---:|---:|"]
    for f in fields:
        size = pair(f.size) if f.size is not None else f.note
        lines.append(f"| {f.name} | {f.kind} | {'x'.join(map(str, f.output_shape))} | "
                     f"{window(f.windows)} | {size} | {pair(f.jump)} | {pair(f.padding)} | "
                     f"{pair(f.center)} |")
    return "\n".join(lines) + "\n"
