"""One registry that creates any model by name.

A family module registers a builder with `@register(name, ...)`; `create(name, num_classes=...,
**overrides)` returns the Flax module. Every model is applied as
`model.apply(variables, x, train=bool, rngs=...)` on NHWC input.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable

import flax.linen as nn

# Maps a Flax variable (collection, path) to the torch state_dict key holding it; see torch_weights.
TorchKeyFn = Callable[[str, tuple[str, ...]], str]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about a model besides how to build it.

    input_shape: the paper's input without the batch axis ((H, W, C) for images, (L,) for token
      ids), used for parameter counts and conversion.
    num_classes: the paper's default class count.
    torch_keys: for models with PyTorch weights (torchvision/timm), the key mapping.
    input_dtype: "float32" for images, "int32" for token ids.
    """

    name: str
    builder: Callable[..., nn.Module]
    input_shape: tuple[int, ...]
    num_classes: int
    torch_keys: TorchKeyFn | None
    input_dtype: str = "float32"


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, *, input_shape: tuple[int, ...] = (224, 224, 3),
             num_classes: int = 1000, torch_keys: TorchKeyFn | None = None,
             input_dtype: str = "float32"):
    """Decorator registering `builder(num_classes=..., **overrides) -> nn.Module` under `name`."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(name, builder, tuple(input_shape), num_classes, torch_keys,
                                    input_dtype)
        return builder

    return decorate


def get_spec(name: str) -> ModelSpec:
    """The registered spec of `name`; an unknown name raises ValueError with close matches."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (see cnnjax.models.list_models() for "
                         f"all {len(_REGISTRY)})") from None


def create(name: str, *, num_classes: int | None = None, **overrides) -> nn.Module:
    """Builds model `name` with `num_classes` (default: the paper's) and field overrides such as
    `dtype=jnp.bfloat16`."""
    spec = get_spec(name)
    return spec.builder(num_classes=spec.num_classes if num_classes is None else num_classes,
                        **overrides)


def list_models() -> list[str]:
    """Every registered model name, sorted."""
    return sorted(_REGISTRY)


def require_min_size(x, minimum: int, model: str) -> None:
    """Raises ValueError naming the minimum when an NHWC input is smaller than minimum x minimum.

    `minimum` must be the model's true minimum: the smallest square input for which every layer's
    output is non-empty (at least 1x1). Models whose every downsampling layer is padded have none
    (any input of at least 1x1 runs) and do not call this. Models built for one input size
    (LeNet-5, AlexNet, the Mixers: a dense layer fixes the feature-map size) check that size
    exactly instead. tests/test_models_registry.py derives each family's minimum from its layer
    list with the textbook output-size formula.
    """
    if min(x.shape[1:3]) < minimum:
        raise ValueError(f"{model} needs inputs of at least {minimum}x{minimum}, got "
                         f"{x.shape[1]}x{x.shape[2]}")
