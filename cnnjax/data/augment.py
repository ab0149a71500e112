"""The papers' preprocessing and augmentation, on the host (NumPy) and on the device (jax.numpy).

Conventions: images are NHWC, float32 in [0, 1] or uint8 in [0, 255] (the prepared datasets'
pixels, which stay uint8 until the device), before normalisation (per-image functions take one
HWC array); crops, flips, padding and resizing keep the dtype, `lighting` returns float32 in
[0, 1] units; augmentation runs before `normalize`, so padding is black, as in the papers. Host
functions draw from a `np.random.Generator`, device functions from a `jax.random` key; both are
deterministic in their randomness source, which the data sources derive from (seed, step).

Small images (CIFAR, MNIST): `pad_crop_flip` (He et al. 2016, sec. 4.2: 4-pixel padding, random
32x32 crop, horizontal flip), on the host or, as `pad_crop_flip_device`, inside the jitted train
step. ImageNet: `random_resized_crop` (Szegedy et al. 2015's Inception crop: area 8-100%, aspect
3/4-4/3), `resize_center_crop` (256 -> 224 evaluation), `scale_jitter_crop` (Simonyan & Zisserman
2015: shorter side S uniform in [256, 512], random 224 crop), `lighting` (Krizhevsky et al. 2012,
sec. 4.1: PCA colour noise), `ten_crop` (four corners and centre, and their mirror images).
Batch mixing (`mixup`, Zhang et al. 2018; `cutmix`, Yun et al. 2019) produces soft labels and runs
on the device in the train step.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from cnnjax.data.flip_translate import translate_reflect

Batch = dict[str, np.ndarray]

# ImageNet RGB statistics used by AlexNet-style "lighting" noise: eigenvalues and eigenvectors
# (columns) of the covariance of [0, 1] pixel values over the training set, as published with
# fb.resnet.torch (Gross & Wilber 2016) and used by torchvision's reference recipes.
IMAGENET_EIGVAL = np.array([0.2175, 0.0188, 0.0045], np.float32)
IMAGENET_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                            [-0.5808, -0.0045, -0.8140],
                            [-0.5836, -0.6948, 0.4203]], np.float32)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_unit_range(images: np.ndarray | jax.Array) -> np.ndarray | jax.Array:
    """uint8 pixels in [0, 255] -> float32 in [0, 1] (times 1/255, on the host for NumPy arrays,
    on the device for jax ones); images of another dtype are returned as they are. The one
    conversion every reader of prepared (uint8) datasets uses, so all see the same values."""
    if images.dtype != np.uint8:
        return images
    return images.astype(np.float32) * np.float32(1 / 255)


def _check_nhwc(images: np.ndarray | jax.Array, what: str) -> None:
    if images.ndim != 4:
        raise ValueError(f"{what} needs NHWC images, got shape {tuple(images.shape)}")


def normalize(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(x - mean) / std per channel (last axis); `mean`/`std` have one entry per channel."""
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    if mean.shape != (images.shape[-1],) or std.shape != mean.shape:
        raise ValueError(f"normalize: mean {mean.tolist()} and std {std.tolist()} need one value "
                         f"per channel; images have {images.shape[-1]} channels")
    if np.any(std <= 0):
        raise ValueError(f"normalize: std must be positive, got {std.tolist()}")
    return ((images - mean) / std).astype(np.float32)


def pad_crop_flip(images: np.ndarray, rng: np.random.Generator, *, pad: int = 4,
                  flip: bool = True) -> np.ndarray:
    """Zero-pad by `pad`, crop back to the original size at a random offset, mirror half.

    (N, H, W, C) -> (N, H, W, C); each example draws its own offsets and flip. Vectorised: one
    padded copy of the batch and one gather, fast enough for > 20k CIFAR images/s per core.
    """
    _check_nhwc(images, "pad_crop_flip")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    top = rng.integers(0, 2 * pad + 1, n)
    left = rng.integers(0, 2 * pad + 1, n)
    rows = top[:, None] + np.arange(h)  # (N, H)
    cols = left[:, None] + np.arange(w)  # (N, W)
    if flip:
        mirrored = rng.random(n) < 0.5
        cols = np.where(mirrored[:, None], cols[:, ::-1], cols)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def pad_crop_flip_device(images: jax.Array, key: jax.Array, *, pad: int = 4,
                         flip: bool = True) -> jax.Array:
    """`pad_crop_flip` as jit-able jax.numpy, for augmenting inside the compiled train step.

    Crops with a per-example dynamic_slice under vmap, which XLA compiles to one gather.
    """
    _check_nhwc(images, "pad_crop_flip_device")
    n, h, w, c = images.shape
    k_top, k_left, k_flip = jax.random.split(key, 3)
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    top = jax.random.randint(k_top, (n,), 0, 2 * pad + 1)
    left = jax.random.randint(k_left, (n,), 0, 2 * pad + 1)
    crop = jax.vmap(lambda img, t, l: jax.lax.dynamic_slice(img, (t, l, 0), (h, w, c)))
    out = crop(padded, top, left)
    if flip:
        mirrored = jax.random.bernoulli(k_flip, 0.5, (n,))
        out = jnp.where(mirrored[:, None, None, None], out[:, :, ::-1], out)
    return out


def sample_crop_box(height: int, width: int, rng: np.random.Generator, *,
                    scale: tuple[float, float] = (0.08, 1.0),
                    ratio: tuple[float, float] = (3 / 4, 4 / 3),
                    attempts: int = 10) -> tuple[int, int, int, int]:
    """An Inception-style crop box (top, left, h, w): area fraction uniform in `scale`, aspect
    ratio w/h log-uniform in `ratio`. After `attempts` misses it falls back to the largest
    centred box whose aspect ratio lies in `ratio`."""
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
    area = height * width
    for _ in range(attempts):
        target = area * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        w = int(round(np.sqrt(target * aspect)))
        h = int(round(np.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif aspect > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of one HWC image with PIL, antialiased when shrinking. uint8 RGB or
    grey images are resized in one pass as such (uint8 out, rounded); float images channel by
    channel in PIL's 32-bit float mode (float32 out)."""
    size = (width, height)
    if image.dtype == np.uint8 and image.shape[-1] in (1, 3):
        mode = "RGB" if image.shape[-1] == 3 else "L"
        flat = image if mode == "RGB" else image[..., 0]
        out = np.asarray(Image.fromarray(np.ascontiguousarray(flat), mode).resize(
            size, Image.Resampling.BILINEAR))
        return out.reshape(height, width, image.shape[-1])
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], np.float32))
                           .resize(size, Image.Resampling.BILINEAR))
                for c in range(image.shape[-1])]
    return np.stack(channels, axis=-1).astype(np.float32)


def shorter_side_shape(height: int, width: int, shorter: int) -> tuple[int, int]:
    """(height, width) after resizing the shorter side to `shorter`, keeping the aspect ratio."""
    s = shorter / min(height, width)
    return max(shorter, int(round(height * s))), max(shorter, int(round(width * s)))


def random_resized_crop(image: np.ndarray, rng: np.random.Generator, size: int, *,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
    """One HWC image -> a random `sample_crop_box` crop resized to (size, size, C)."""
    top, left, h, w = sample_crop_box(image.shape[0], image.shape[1], rng, scale=scale,
                                      ratio=ratio)
    return _resize(image[top:top + h, left:left + w], size, size)


def resize_shorter(image: np.ndarray, shorter: int) -> np.ndarray:
    """Resizes one HWC image so its shorter side is `shorter`, keeping the aspect ratio."""
    return _resize(image, *shorter_side_shape(image.shape[0], image.shape[1], shorter))


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central (size, size) window of one HWC image at least that large."""
    h, w = image.shape[:2]
    if min(h, w) < size:
        raise ValueError(f"center_crop: image {h}x{w} is smaller than the crop {size}x{size}")
    top, left = (h - size) // 2, (w - size) // 2
    return image[top:top + size, left:left + size]


def resize_center_crop(image: np.ndarray, *, resize: int = 256, crop: int = 224) -> np.ndarray:
    """The standard ImageNet evaluation view: shorter side to `resize`, central `crop`."""
    return center_crop(resize_shorter(image, resize), crop)


def scale_jitter_crop(image: np.ndarray, rng: np.random.Generator, *,
                      scale_range: tuple[int, int] = (256, 512), crop: int = 224,
                      flip: bool = True) -> np.ndarray:
    """VGG's multi-scale training: shorter side S ~ U[scale_range], random `crop`, flip."""
    resized = resize_shorter(image, int(rng.integers(scale_range[0], scale_range[1] + 1)))
    h, w = resized.shape[:2]
    top, left = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    out = resized[top:top + crop, left:left + crop]
    return out[:, ::-1] if flip and rng.random() < 0.5 else out


def lighting(images: np.ndarray, rng: np.random.Generator, *, alpha_std: float = 0.1,
             eigval: np.ndarray = IMAGENET_EIGVAL, eigvec: np.ndarray = IMAGENET_EIGVEC
             ) -> np.ndarray:
    """AlexNet's PCA colour augmentation: adds eigvec @ (alpha * eigval) to every pixel of an
    image, alpha ~ N(0, alpha_std^2) per image and component. (N, H, W, 3) -> same shape,
    float32 in [0, 1] units (uint8 pixels are divided by 255 first)."""
    _check_nhwc(images, "lighting")
    if images.shape[-1] != 3:
        raise ValueError(f"lighting needs RGB images, got {images.shape[-1]} channels")
    images = to_unit_range(images)
    alpha = rng.normal(0.0, alpha_std, (images.shape[0], 3)).astype(np.float32)
    shift = (alpha * eigval) @ eigvec.T  # (N, 3): sum_j eigvec[:, j] alpha_j eigval_j
    return (images + shift[:, None, None, :]).astype(np.float32)


def lighting_device(images: jax.Array, key: jax.Array, *, alpha_std: float = 0.1) -> jax.Array:
    """`lighting` as jit-able jax.numpy on float images in [0, 1] units, for the train step (so
    ImageNet's views can travel as uint8)."""
    _check_nhwc(images, "lighting_device")
    if images.shape[-1] != 3:
        raise ValueError(f"lighting needs RGB images, got {images.shape[-1]} channels")
    alpha = alpha_std * jax.random.normal(key, (images.shape[0], 3), jnp.float32)
    shift = (alpha * IMAGENET_EIGVAL) @ IMAGENET_EIGVEC.T
    return images + shift[:, None, None, :].astype(images.dtype)


def ten_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The 10-crop test views of one HWC image: four corners and the centre, then the same five
    of the mirror image. Returns (10, size, size, C)."""
    h, w = image.shape[:2]
    if min(h, w) < size:
        raise ValueError(f"ten_crop: image {h}x{w} is smaller than the crop {size}x{size}")
    corners = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size),
               ((h - size) // 2, (w - size) // 2)]
    crops = [image[t:t + size, l:l + size] for t, l in corners]
    return np.stack(crops + [c[:, ::-1] for c in crops])


def mixup(images: jax.Array, labels: jax.Array, key: jax.Array, *, alpha: float,
          num_classes: int) -> tuple[jax.Array, jax.Array]:
    """Mixes the batch with its reverse: lam x + (1 - lam) x[::-1], lam ~ Beta(alpha, alpha) per
    batch. Returns (images, soft labels (N, num_classes)). The train step applies it to each
    device's shard (cnnjax.data.device_pipeline)."""
    lam = jax.random.beta(key, alpha, alpha)
    one_hot = jax.nn.one_hot(labels, num_classes)
    return (lam * images + (1 - lam) * images[::-1],
            lam * one_hot + (1 - lam) * one_hot[::-1])


def cutmix(images: jax.Array, labels: jax.Array, key: jax.Array, *, alpha: float,
           num_classes: int) -> tuple[jax.Array, jax.Array]:
    """Pastes a box of the reversed batch into each image; the box area is 1 - lam of the image,
    lam ~ Beta(alpha, alpha), centred uniformly and clipped at the borders. The soft labels are
    weighted by the area actually pasted. Returns (images, soft labels (N, num_classes)). The
    train step applies it to each device's shard (cnnjax.data.device_pipeline)."""
    _check_nhwc(images, "cutmix")
    n, h, w, _ = images.shape
    k_lam, k_y, k_x = jax.random.split(key, 3)
    lam = jax.random.beta(k_lam, alpha, alpha)
    cut = jnp.sqrt(1.0 - lam)
    cy = jax.random.randint(k_y, (), 0, h)
    cx = jax.random.randint(k_x, (), 0, w)
    half_h, half_w = (cut * h / 2).astype(jnp.int32), (cut * w / 2).astype(jnp.int32)
    y0, y1 = jnp.clip(cy - half_h, 0, h), jnp.clip(cy + half_h, 0, h)
    x0, x1 = jnp.clip(cx - half_w, 0, w), jnp.clip(cx + half_w, 0, w)
    rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
    inside = ((rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1))[None, :, :, None]
    pasted = ((y1 - y0) * (x1 - x0)) / (h * w)
    one_hot = jax.nn.one_hot(labels, num_classes)
    return (jnp.where(inside, images[::-1], images),
            (1 - pasted) * one_hot + pasted * one_hot[::-1])


# Named augmentations, as configs select them (`config.dataset.augment`, with `augment_pad`).
def _flip_host(x: np.ndarray, rng: np.random.Generator, pad: int) -> np.ndarray:
    del pad
    return np.where(rng.random(len(x))[:, None, None, None] < 0.5, x[:, :, ::-1], x)


def _flip_device(x: jax.Array, key: jax.Array, pad: int) -> jax.Array:
    del pad
    return jnp.where(jax.random.bernoulli(key, 0.5, (x.shape[0], 1, 1, 1)), x[:, :, ::-1], x)


HOST_AUGMENTS = {
    "pad_crop_flip": lambda x, rng, pad: pad_crop_flip(x, rng, pad=pad),  # He et al.'s CIFAR one
    "pad_crop": lambda x, rng, pad: pad_crop_flip(x, rng, pad=pad, flip=False),  # digits: no flip
    "flip": _flip_host,
    "lighting": lambda x, rng, pad: lighting(x, rng),  # AlexNet's PCA colour noise, std 0.1
}
DEVICE_AUGMENTS = {
    "pad_crop_flip": lambda x, key, pad: pad_crop_flip_device(x, key, pad=pad),
    "pad_crop": lambda x, key, pad: pad_crop_flip_device(x, key, pad=pad, flip=False),
    "flip": _flip_device,
    "lighting": lambda x, key, pad: lighting_device(x, key),
    "translate_reflect": translate_reflect,
}
HostAugment = Callable[[Batch, np.random.Generator], Batch]


def get_host_augment(name: str, pad: int = 4) -> HostAugment:
    """The named augmentation as a host batch function (batch, rng) -> batch; ValueError lists
    the known names."""
    if name not in HOST_AUGMENTS:
        raise ValueError(f"unknown augmentation {name!r}; expected one of "
                         f"{sorted(HOST_AUGMENTS)} (or 'none')")
    fn = HOST_AUGMENTS[name]
    return lambda batch, rng: {**batch, "image": fn(batch["image"], rng, pad)}


def get_device_augment(name: str, pad: int = 4) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The named augmentation as a jit-able (images, key) -> images function."""
    if name not in DEVICE_AUGMENTS:
        raise ValueError(f"unknown augmentation {name!r} on the device; expected one of "
                         f"{sorted(DEVICE_AUGMENTS)} (or 'none')")
    fn = DEVICE_AUGMENTS[name]
    return lambda images, key: fn(images, key, pad)
