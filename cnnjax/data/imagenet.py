"""Reading prepared ImageNet-2012 (cnnjax.data.prepare imagenet2012): per-example preprocessing
of the stored JPEGs on the host, in grain's worker processes, into fixed-size uint8 batches.

Every image becomes an (S, S, 3) uint8 RGB view, S = `image_size`; the device turns it into
float32 and normalises it (config.dataset.mean / std), so a quarter of float32's bytes cross the
workers' shared memory and the host-to-device copy. The JPEG is decoded at a reduced size
where the view allows (PIL's draft mode: libjpeg's DCT scaling by 1/2, 1/4 or 1/8, keeping at
least the resolution the view needs, so a small crop of a large image decodes 4-64x fewer
pixels), and crops are resized once, on the uint8 RGB image (PIL, bilinear, antialiased).
Training views (`train_crop`), each mirrored with probability 1/2:
  "inception"     Szegedy et al. 2015 (sec. 6): a crop of 8-100% of the area with aspect ratio
                  in [3/4, 4/3] (cnnjax.data.augment.sample_crop_box), resized to S;
  "scale_jitter"  shorter side resized to a uniform random integer in `scale_range`, random S x S
                  crop (AlexNet: (256, 256); VGG: (256, 512); ResNet: (256, 480); at S = 224).
Evaluation views (`eval_crop`): shorter side resized to round(S / 0.875) (256 for 224), then
  "center"        the central S x S crop: batches (N, S, S, 3);
  "ten_crop"      four corners, centre and their mirror images: batches (N, 10, S, S, 3), whose
                  predicted probabilities the eval step averages.
Randomness comes from the generator GrainSource derives from (seed, step), so a batch is a pure
function of them; a host augmentation given to `open_imagenet` runs after the crops, on the
fixed-size batch (AlexNet's "lighting" is better run on the device: on the host it turns the
batch into float32).
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image
from tensorflow_datasets.proto import tf_example_pb2  # protobuf classes only, no TensorFlow

from cnnjax.data.augment import center_crop, sample_crop_box, shorter_side_shape, ten_crop
from cnnjax.data.grain_source import GrainSource, default_worker_count, open_prepared
from cnnjax.data.imagefolder import reading
from cnnjax.data.source import Augment, Batch

NAME = "imagenet2012"
EVAL_CROP_FRACTION = 0.875  # 224 / 256: the crop's share of the resized shorter side
TRAIN_CROPS = ("inception", "scale_jitter")
EVAL_CROPS = ("center", "ten_crop")
_WHERE = "_where"  # batch key of the records' file names, for errors; dropped by the views


def eval_resize(image_size: int) -> int:
    """The shorter side evaluation images are resized to: round(image_size / 0.875)."""
    return int(round(image_size / EVAL_CROP_FRACTION))


def _draft(im: Image.Image, scale: float) -> None:
    """Lets the JPEG decoder of `im` (opened, not yet loaded) reduce the image by a power of 2
    as long as it stays at least `scale` times its stored size; a no-op for other formats and
    for scale >= 1."""
    if scale < 1:
        width, height = im.size
        im.draft(None, (math.ceil(width * scale), math.ceil(height * scale)))


def _resized(im: Image.Image, stored: tuple[int, int], height: int, width: int,
             box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """uint8 RGB pixels of `box` (left, top, right, bottom in the coordinates of the `stored`
    (width, height); default all of it) of `im`, perhaps drafted smaller, resized to
    (height, width): one bilinear, antialiased PIL resize of the decoded RGB."""
    sx, sy = im.size[0] / stored[0], im.size[1] / stored[1]
    left, top, right, bottom = box if box is not None else (0, 0, *stored)
    return np.asarray(im.convert("RGB").resize(
        (width, height), Image.Resampling.BILINEAR,
        box=(left * sx, top * sy, right * sx, bottom * sy)))


@dataclasses.dataclass(frozen=True)
class Views:
    """How stored JPEGs become uint8 views (see module doc)."""

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

    def train(self, raw: bytes, rng: np.random.Generator, where: str = "image") -> np.ndarray:
        """One training view (S, S, 3) uint8 of an encoded image; BadImage names `where`."""
        size = self.image_size
        with reading(where), Image.open(io.BytesIO(raw)) as im:
            width, height = stored = im.size
            if self.train_crop == "inception":
                top, left, h, w = sample_crop_box(height, width, rng)
                _draft(im, size / min(h, w))
                view = _resized(im, stored, size, size, (left, top, left + w, top + h))
            else:
                shorter = int(rng.integers(self.scale_range[0], self.scale_range[1] + 1))
                new_h, new_w = shorter_side_shape(height, width, shorter)
                _draft(im, shorter / min(height, width))
                resized = _resized(im, stored, new_h, new_w)
                top = int(rng.integers(0, new_h - size + 1))
                left = int(rng.integers(0, new_w - size + 1))
                view = resized[top:top + size, left:left + size]
        return view[:, ::-1] if rng.random() < 0.5 else view

    def eval(self, raw: bytes, where: str = "image") -> np.ndarray:
        """The evaluation view(s) (S, S, 3) or (10, S, S, 3), uint8, of an encoded image."""
        shorter = eval_resize(self.image_size)
        with reading(where), Image.open(io.BytesIO(raw)) as im:
            width, height = stored = im.size
            _draft(im, shorter / min(height, width))
            resized = _resized(im, stored, *shorter_side_shape(height, width, shorter))
        crop = center_crop if self.eval_crop == "center" else ten_crop
        return crop(resized, self.image_size)


@dataclasses.dataclass
class ImageNetDecoder:
    """Serialized examples -> {"image", "label"}: the JPEG files (an object array, cropped by
    TrainViews with the step's randomness) or, with `evaluate`, the uint8 evaluation views."""

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
        files = np.empty(len(maps), object)
        files[:] = [m["image"].bytes_list.value[0] for m in maps]
        where = [f"{NAME} record {m['file_name'].bytes_list.value[0].decode()}" for m in maps]
        labels = np.array([m["label"].int64_list.value[0] for m in maps], np.int32)
        if not self.evaluate:
            return {"image": files, "label": labels, _WHERE: np.array(where, object)}
        images = np.stack([self.views.eval(f, w) for f, w in zip(files, where)]) if len(files) \
            else np.zeros((0, *self.shape), np.uint8)
        return {"image": images, "label": labels}


@dataclasses.dataclass(frozen=True)
class TrainViews:
    """The training augmentation GrainSource runs in its workers: JPEG files -> uint8 views,
    then `then` (another host augmentation) on the fixed-size batch."""

    views: Views
    then: Augment | None = None

    def __call__(self, batch: Batch, rng: np.random.Generator) -> Batch:
        batch = dict(batch)
        where = batch.pop(_WHERE)
        batch["image"] = np.stack([self.views.train(f, rng, w)
                                   for f, w in zip(batch["image"], where)])
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
