"""Reading prepared ImageNet-2012 (cnnjax.data.prepare imagenet2012): per-example preprocessing
of the stored JPEGs on the host, in grain's worker processes, into fixed-size batches.

Every image is decoded with PIL to RGB uint8 and turned into an (S, S, 3) float32 view in [0, 1],
S = `image_size`; normalisation (config.dataset.mean / std) follows on the device.
Training views (`train_crop`), each mirrored with probability 1/2:
  "inception"     Szegedy et al. 2015 (sec. 6): a crop of 8-100% of the area with aspect ratio
                  in [3/4, 4/3], resized to S (cnnjax.data.augment.random_resized_crop);
  "scale_jitter"  shorter side resized to a uniform random integer in `scale_range`, random S x S
                  crop (AlexNet: (256, 256); VGG: (256, 512); ResNet: (256, 480); at S = 224).
Evaluation views (`eval_crop`): shorter side resized to round(S / 0.875) (256 for 224), then
  "center"        the central S x S crop: batches (N, S, S, 3);
  "ten_crop"      four corners, centre and their mirror images: batches (N, 10, S, S, 3), whose
                  predicted probabilities the eval step averages.
Randomness comes from the generator GrainSource derives from (seed, step), so a batch is a pure
function of them; a host augmentation given to `open_imagenet` (e.g. AlexNet's "lighting") runs
after the crops, on the fixed-size batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from tensorflow_datasets.proto import tf_example_pb2  # protobuf classes only, no TensorFlow

from cnnjax.data.augment import (center_crop, random_resized_crop, resize_shorter,
                                 scale_jitter_crop, ten_crop)
from cnnjax.data.grain_source import GrainSource, default_worker_count, open_prepared
from cnnjax.data.imagefolder import decode_image
from cnnjax.data.source import Augment, Batch

NAME = "imagenet2012"
EVAL_CROP_FRACTION = 0.875  # 224 / 256: the crop's share of the resized shorter side
TRAIN_CROPS = ("inception", "scale_jitter")
EVAL_CROPS = ("center", "ten_crop")


def eval_resize(image_size: int) -> int:
    """The shorter side evaluation images are resized to: round(image_size / 0.875)."""
    return int(round(image_size / EVAL_CROP_FRACTION))


@dataclasses.dataclass(frozen=True)
class Views:
    """How decoded uint8 (H, W, 3) images become float32 views in [0, 1] (see module doc)."""

    image_size: int = 224
    train_crop: str = "inception"
    scale_range: tuple[int, int] = (256, 480)
    eval_crop: str = "center"

    def __post_init__(self):
        if not isinstance(self.image_size, int) or self.image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {self.image_size!r}")
        if self.train_crop not in TRAIN_CROPS:
            raise ValueError(f"train_crop must be one of {TRAIN_CROPS}, got {self.train_crop!r}")
        if self.eval_crop not in EVAL_CROPS:
            raise ValueError(f"eval_crop must be one of {EVAL_CROPS}, got {self.eval_crop!r}")
        low, high = self.scale_range
        if not self.image_size <= low <= high:
            raise ValueError(f"scale_range {tuple(self.scale_range)} must satisfy image_size "
                             f"({self.image_size}) <= min <= max")

    def eval_shape(self) -> tuple[int, ...]:
        size = (self.image_size, self.image_size, 3)
        return size if self.eval_crop == "center" else (10, *size)

    def train(self, pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One training view (S, S, 3) of uint8 pixels (H, W, 3)."""
        if self.train_crop == "inception":
            view = random_resized_crop(pixels, rng, self.image_size)
            view = view[:, ::-1] if rng.random() < 0.5 else view
        else:
            view = scale_jitter_crop(pixels, rng, scale_range=tuple(self.scale_range),
                                     crop=self.image_size)
        return np.clip(view * np.float32(1 / 255), 0.0, 1.0)

    def eval(self, pixels: np.ndarray) -> np.ndarray:
        """The evaluation view(s) of uint8 pixels (H, W, 3): (S, S, 3) or (10, S, S, 3)."""
        resized = resize_shorter(pixels, eval_resize(self.image_size)) * np.float32(1 / 255)
        crop = center_crop if self.eval_crop == "center" else ten_crop
        return np.clip(crop(resized, self.image_size), 0.0, 1.0)


@dataclasses.dataclass
class ImageNetDecoder:
    """Serialized examples -> {"image", "label"}: decoded uint8 images of any size (an object
    array, for the training crops) or, with `evaluate`, the fixed-size evaluation views."""

    views: Views
    evaluate: bool

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one example's image in a finished batch."""
        if self.evaluate:
            return self.views.eval_shape()
        return (self.views.image_size, self.views.image_size, 3)

    def __call__(self, records: Sequence[bytes]) -> Batch:
        maps = [tf_example_pb2.Example.FromString(r).features.feature for r in records]
        images = np.empty(len(maps), object)
        for i, m in enumerate(maps):
            where = f"{NAME} record {m['file_name'].bytes_list.value[0].decode()}"
            images[i] = decode_image(m["image"].bytes_list.value[0], where, 3)
        if self.evaluate:
            images = np.stack([self.views.eval(p) for p in images]) if len(images) \
                else np.zeros((0, *self.shape), np.float32)
        labels = np.array([m["label"].int64_list.value[0] for m in maps], np.int32)
        return {"image": images, "label": labels}


@dataclasses.dataclass(frozen=True)
class TrainViews:
    """The training augmentation GrainSource runs in its workers: decoded images -> views, then
    `then` (another host augmentation) on the fixed-size batch."""

    views: Views
    then: Augment | None = None

    def __call__(self, batch: Batch, rng: np.random.Generator) -> Batch:
        batch = {**batch, "image": np.stack([self.views.train(p, rng) for p in batch["image"]])}
        return self.then(batch, rng) if self.then is not None else batch


@dataclasses.dataclass
class ImageNetSource(GrainSource):
    """A GrainSource of prepared ImageNet whose examples are preprocessed by `views`."""

    views: Views = dataclasses.field(default_factory=Views)

    def __post_init__(self):
        super().__post_init__()
        self.decoder = ImageNetDecoder(self.views, evaluate=not self.train)
        if self.train:
            self.augment = TrainViews(self.views, then=self.augment)


def open_imagenet(name: str, split: str, *, image_size: int = 224,
                  train_crop: str = "inception", scale_range: Sequence[int] = (256, 480),
                  eval_crop: str = "center", worker_count: int | None = None,
                  **kw) -> ImageNetSource:
    """The ImageNetSource of split `split` ("train", "validation", "holdout",
    "train_minus_holdout") of prepared ImageNet; `kw` as cnnjax.data.grain_source.open_prepared.

    Unlike other prepared datasets, evaluation also decodes in default_worker_count() worker
    processes unless `worker_count` says otherwise: 50,000 JPEGs per evaluation.
    """
    views = Views(image_size, train_crop, tuple(scale_range), eval_crop)
    if worker_count is None:
        worker_count = default_worker_count()
    source = open_prepared(name, split, worker_count=worker_count, image_size=image_size, **kw)
    fields = {f.name: getattr(source, f.name) for f in dataclasses.fields(GrainSource)}
    return ImageNetSource(**fields, views=views)
