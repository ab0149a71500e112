"""The part of the input pipeline that runs on the accelerator, inside the compiled steps.

Batches arrive from the host as images in [0, 1], float32, or as uint8 pixels in [0, 255] (the
prepared datasets: a quarter of the bytes through the grain workers' shared memory and the
host-to-device copy), which become float32 in [0, 1] first, on the device. They are then
zero-padded to a fixed size (`pad_to`: LeNet-5's 32x32 from MNIST's 28x28), augmented
(`augment`, training only, see cnnjax.data.augment.DEVICE_AUGMENTS), normalised per channel
(`mean`, `std`) and, in training, mixed (`mix`: mixup or cutmix, giving soft labels). In
evaluation, `flip_tta` adds each image's mirror image as a second view (the eval step averages
the views' probabilities). Every random draw comes from the key the train step passes, a
function of (seed, step), so a resumed run repeats them exactly.

Mixing pairs examples within each device's shard of the batch (`mesh`: the batch sharded along
its "data" axis): with D devices and m = N / D rows each, row s m + r is mixed with row
s m + (m - 1 - r), the mirror position in its own shard, and every device uses the same mixing
weight (and, for cutmix, box). Pairing across the global batch (x[::-1]) would move every image
to another device each step (an all-to-all of the batch); within shards nothing moves. With one
device this is x[::-1], as before.
`alternating_flip` (cnnjax.data.flip_translate) mirrors a fixed half of the examples on even
epochs and the rest on odd ones, before `augment`; its half comes from the run's fixed key.
`tta` (cnnjax.data.tta) gives weighted views whose logits the eval step averages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from cnnjax.data.augment import cutmix, get_device_augment, mixup, to_unit_range
from cnnjax.data.flip_translate import alternating_flip
from cnnjax.data.tta import TTA_WEIGHTS, tta_views
from cnnjax.ops.mapping import shard_map

MIXES = ("none", "mixup", "cutmix")


@dataclasses.dataclass(frozen=True)
class DevicePipeline:
    """What `config.dataset` asks of the device; the identity when every field is unset."""

    pad_to: int = 0
    augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    mix: str = "none"
    mix_alpha: float = 0.0
    num_classes: int = 0
    flip_tta: bool = False
    mesh: Mesh | None = None  # the batch's "data" axis, to mix within each device's shard
    alternating_flip: bool = False
    tta: str = "none"

    def __post_init__(self):
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ValueError(f"dataset.mean {list(self.mean)} and dataset.std {list(self.std)} "
                             f"must give one value per channel, std > 0")
        if self.mix not in MIXES or (self.mix != "none" and not self.mix_alpha > 0):
            raise ValueError(f"dataset.mix must be one of {MIXES} with mix_alpha > 0, got "
                             f"mix={self.mix!r}, mix_alpha={self.mix_alpha!r}")
        if self.tta != "none" and (self.tta not in TTA_WEIGHTS or self.flip_tta):
            raise ValueError(f"dataset.tta must be 'none' or one of {sorted(TTA_WEIGHTS)}, and "
                             f"flip_tta off with it; got tta={self.tta!r}, "
                             f"flip_tta={self.flip_tta}")
        if self.pad_to < 0:
            raise ValueError(f"dataset.pad_to must be >= 0 (0: no padding), got {self.pad_to}")

    @property
    def active(self) -> bool:
        return bool(self.pad_to or self.augment or self.mean or self.mix != "none"
                    or self.flip_tta or self.alternating_flip or self.tta != "none")

    def output_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The (H, W, C) the model sees for host images of `image_shape`; checks the channels."""
        if self.mean and len(self.mean) != image_shape[-1]:
            raise ValueError(f"dataset.mean/std have {len(self.mean)} values but the images have "
                             f"{image_shape[-1]} channels")
        if self.pad_to and min(image_shape[:2]) > self.pad_to:
            raise ValueError(f"dataset.pad_to={self.pad_to} is smaller than the images "
                             f"{image_shape[0]}x{image_shape[1]}")
        if self.pad_to:
            return (self.pad_to, self.pad_to, image_shape[-1])
        return tuple(image_shape)

    def _pad(self, images: jax.Array) -> jax.Array:
        if not self.pad_to:
            return images
        h, w = images.shape[-3:-1]
        top, left = (self.pad_to - h) // 2, (self.pad_to - w) // 2
        spec = [(0, 0)] * (images.ndim - 3) + [(top, self.pad_to - h - top),
                                               (left, self.pad_to - w - left), (0, 0)]
        return jnp.pad(images, spec)

    @staticmethod
    def output_dtype(host_dtype) -> jnp.dtype:
        """The dtype the model sees for host images of `host_dtype` (uint8 becomes float32)."""
        dtype = jnp.dtype(host_dtype)
        return jnp.dtype(jnp.float32) if dtype == jnp.uint8 else dtype

    def _normalize(self, images: jax.Array) -> jax.Array:
        if not self.mean:
            return images
        return (images - jnp.asarray(self.mean, jnp.float32)) / jnp.asarray(self.std, jnp.float32)

    def train(self, batch: dict, key: jax.Array, run_key: jax.Array | None = None) -> dict:
        """Pad, augment, normalise, mix a training batch {"image", "label"} (+ "index" and
        "epoch" for the alternating flip, whose half is drawn from `run_key`, fixed per run)."""
        k_aug, k_mix = jax.random.split(key)
        images, labels = self._pad(to_unit_range(batch["image"])), batch["label"]
        if self.alternating_flip:
            if "index" not in batch or run_key is None:
                raise ValueError("dataset.alternating_flip needs train batches with 'index' and "
                                 "'epoch' (the data sources give them) and the run's key")
            images = alternating_flip(images, batch["index"], batch["epoch"], run_key)
        if self.augment is not None:
            images = self.augment(images, k_aug)
        images = self._normalize(images)
        if self.mix != "none":
            images, labels = self._mix(images, labels, k_mix)
        return {**batch, "image": images, "label": labels}

    def _mix(self, images: jax.Array, labels: jax.Array, key: jax.Array
             ) -> tuple[jax.Array, jax.Array]:
        """mixup/cutmix of each device's shard with itself (see the module docstring)."""
        fn = mixup if self.mix == "mixup" else cutmix

        def local(x, y, k):
            return fn(x, y, k, alpha=self.mix_alpha, num_classes=self.num_classes)

        if self.mesh is None or self.mesh.size == 1:
            return local(images, labels, key)
        return shard_map(local, self.mesh, in_specs=(P("data"), P("data"), P()),
                         out_specs=(P("data"), P("data")))(images, labels, key)

    def eval(self, images: jax.Array) -> jax.Array:
        """Pad and normalise evaluation images (N, H, W, C) or views (N, V, H, W, C); with
        `flip_tta`, images (N, H, W, C) become views (N, 2, H, W, C): as given and mirrored."""
        images = self._normalize(self._pad(to_unit_range(images)))
        if self.flip_tta:
            if images.ndim != 4:
                raise ValueError(f"flip_tta needs single images (N, H, W, C), got shape "
                                 f"{tuple(images.shape)}")
            images = jnp.stack([images, images[:, :, ::-1]], axis=1)
        if self.tta != "none":
            images = tta_views(images, self.tta)
        return images


def from_config(ds: ml_collections.ConfigDict, num_classes: int) -> DevicePipeline:
    """The device pipeline of `config.dataset` (augmentation only with augment_on="device")."""
    augment = None
    if ds.get("augment", "none") != "none" and ds.get("augment_on", "host") == "device":
        augment = get_device_augment(ds.augment, pad=ds.get("augment_pad", 4))
    return DevicePipeline(pad_to=ds.get("pad_to", 0), augment=augment,
                          mean=tuple(ds.get("mean") or ()), std=tuple(ds.get("std") or ()),
                          mix=ds.get("mix", "none"), mix_alpha=ds.get("mix_alpha", 0.0),
                          num_classes=num_classes, flip_tta=ds.get("flip_tta", False),
                          alternating_flip=ds.get("alternating_flip", False),
                          tta=ds.get("tta", "none"))

