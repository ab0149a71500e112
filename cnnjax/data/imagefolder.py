"""Folders of images, one per class: DIR/<split>/<class>/*.{jpg,jpeg,png} (suffixes in any case).

Classes are the class folders' names in sorted order, label i the i-th; every split must have the
same classes and every class folder at least one image (other files are ignored). Images are
checked by decoding them fully with PIL, so a truncated or corrupt file is caught (and named)
while preparing, not while training. A set is stored "decoded" (raw uint8 pixels) when all its
images have one size of at most DECODED_MAX_SIDE pixels a side, else "encoded" (the files' own
bytes, decoded when read); it has one channel when every image is grayscale, else three (RGB).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import pathlib
import re
from collections.abc import Iterator, Sequence

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DECODED_MAX_SIDE = 64
_GRAY_MODES = {"1", "L", "I", "I;16", "F"}
_SPLIT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# The JPEG standard's luminance quantization table (ITU-T T.81, Annex K, Table K.1), which
# libjpeg scales by its quality setting.
_JPEG_LUMA = np.array([16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
                       14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
                       18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
                       49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99])


class BadImage(ValueError):
    """An image file that cannot be read in full; the message names the file."""


@dataclasses.dataclass
class FolderIndex:
    """The images of a class-folder tree: split -> [(path, label)], by class then file name."""

    root: pathlib.Path
    classes: tuple[str, ...]
    files: dict[str, list[tuple[pathlib.Path, int]]]

    def relative(self, path: pathlib.Path) -> str:
        return path.relative_to(self.root).as_posix()

    def drop(self, bad: set[pathlib.Path]) -> None:
        """Removes the files in `bad` from every split."""
        self.files = {s: [(p, y) for p, y in f if p not in bad] for s, f in self.files.items()}


def _subfolders(path: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_folder(root: pathlib.Path, reserved: Sequence[str] = ()) -> FolderIndex:
    """Indexes ROOT/<split>/<class>/<image>; ValueError for a missing split or class structure,
    classes that differ between splits, an empty class folder, or a split named in `reserved`."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder (expected {root}/<split>/<class>/<image>)")
    splits = _subfolders(root)
    if not splits:
        raise ValueError(f"{root}: no split folders; expected {root}/<split>/<class>/<image>, "
                         f"e.g. {root}/train/cat/0001.jpg")
    classes: dict[str, list[str]] = {}
    for split in splits:
        if not _SPLIT_NAME.fullmatch(split.name) or split.name in reserved:
            raise ValueError(f"{split}: split names must be letters, digits and underscores and "
                             f"not one of {list(reserved)}, got {split.name!r}")
        classes[split.name] = [c.name for c in _subfolders(split)]
        if not classes[split.name]:
            raise ValueError(f"{split}: a split without class folders (expected "
                             f"{split}/<class>/<image>)")
    first = splits[0].name
    for name, found in classes.items():
        if found != classes[first]:
            missing = sorted(set(classes[first]) - set(found))
            extra = sorted(set(found) - set(classes[first]))
            raise ValueError(f"{root}: classes differ between splits {first!r} and {name!r}: "
                             f"{name!r} lacks {missing} and has extra {extra}")
    files = {}
    for split in splits:
        files[split.name] = []
        for label, cls in enumerate(classes[first]):
            folder = split / cls
            images = sorted(p for p in folder.iterdir()
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise ValueError(f"{folder}: empty class folder (no {'/'.join(IMAGE_SUFFIXES)} "
                                 f"files)")
            files[split.name] += [(p, label) for p in images]
    return FolderIndex(root, tuple(classes[first]), files)


def jpeg_quality(luma_table: Sequence[int]) -> int | None:
    """The libjpeg quality (1-100) whose scaling of the standard luminance table gives
    `luma_table`, or None for a non-standard table. Compared as sorted values, so the table's
    order (zigzag or natural) does not matter."""
    found = np.sort(np.asarray(luma_table))
    for q in range(100, 0, -1):
        scale = 5000 // q if q < 50 else 200 - 2 * q
        if np.array_equal(np.sort(np.clip((_JPEG_LUMA * scale + 50) // 100, 1, 255)), found):
            return q
    return None


@dataclasses.dataclass
class Survey:
    """What the image headers say: sizes, channels, JPEG qualities; and the unreadable files."""

    sizes: collections.Counter  # (height, width) -> count
    channels: int
    formats: collections.Counter
    jpeg_qualities: collections.Counter  # quality (None: non-standard tables) -> count
    bad: dict[pathlib.Path, str]

    @property
    def decoded_shape(self) -> tuple[int, int, int] | None:
        """(H, W, C) when the set is stored decoded (one small size), else None."""
        if len(self.sizes) == 1:
            (h, w), = self.sizes
            if max(h, w) <= DECODED_MAX_SIDE:
                return h, w, self.channels
        return None


def survey(index: FolderIndex, skip_bad: bool) -> Survey:
    """Reads every image's header; an unreadable one raises BadImage unless `skip_bad`, in which
    case it is listed in `bad` (the caller drops it)."""
    sizes, formats, qualities = collections.Counter(), collections.Counter(), collections.Counter()
    gray, bad = True, {}
    for path, _ in (item for files in index.files.values() for item in files):
        try:
            with Image.open(path) as im:
                sizes[(im.height, im.width)] += 1
                formats[im.format] += 1
                gray &= im.mode in _GRAY_MODES
                if im.format == "JPEG":
                    qualities[jpeg_quality(im.quantization[0]) if im.quantization else None] += 1
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            if not skip_bad:
                raise BadImage(f"{path}: not a readable image ({e})") from e
            bad[path] = f"{path}: not a readable image ({e})"
    return Survey(sizes, 1 if gray else 3, formats, qualities, bad)


def decode_image(raw: bytes, where: str, channels: int) -> np.ndarray:
    """uint8 (H, W, channels) pixels of an encoded image, fully decoded; BadImage names `where`."""
    with reading(where), Image.open(io.BytesIO(raw)) as im:
        pixels = np.asarray(im.convert("L" if channels == 1 else "RGB"))
    return pixels.reshape(*pixels.shape[:2], channels)


@contextlib.contextmanager
def reading(where: str) -> Iterator[None]:
    """Turns PIL's errors on an unreadable or truncated image into BadImage naming `where`."""
    try:
        yield
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadImage(f"{where}: unreadable or truncated image ({e})") from e


def folder_examples(index: FolderIndex, split: str, *, channels: int,
                    shape: tuple[int, int, int] | None, skip_bad: bool,
                    skipped: list[str]) -> Iterator[dict]:
    """Examples {"image", "label", "file_name"} of `split`: decoded pixels when `shape` is given
    (every image must have it), else the file's bytes after checking they decode. A file that
    does not decode raises BadImage, or with `skip_bad` is appended to `skipped` and left out."""
    for path, label in index.files[split]:
        raw = path.read_bytes()
        try:
            pixels = decode_image(raw, str(path), channels)
            if shape is not None and pixels.shape != tuple(shape):
                raise BadImage(f"{path}: image is {pixels.shape}, the others are {tuple(shape)}")
        except BadImage as e:
            if not skip_bad:
                raise
            skipped.append(str(e))
            continue
        yield {"image": pixels if shape is not None else raw, "label": label,
               "file_name": index.relative(path)}


def pack_folder(root: pathlib.Path, out: pathlib.Path) -> dict[str, int]:
    """Writes the files of every split of the class-folder tree `root` into one .npz `out`
    (their bytes, unchanged, concatenated: one file to copy instead of thousands); returns the
    number of files per split. `folder_arrays` decodes either form."""
    index = scan_folder(pathlib.Path(root))
    arrays: dict[str, np.ndarray] = {"classes": np.array(index.classes)}
    for split, files in index.files.items():
        raw = [path.read_bytes() for path, _ in files]
        arrays[f"{split}/bytes"] = np.frombuffer(b"".join(raw), np.uint8)
        arrays[f"{split}/offsets"] = np.cumsum([0] + [len(r) for r in raw])
        arrays[f"{split}/labels"] = np.array([label for _, label in files], np.int32)
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial.npz")
    np.savez(partial, **arrays)
    partial.replace(out)  # nothing half-written under the final name
    return {split: len(files) for split, files in index.files.items()}


def folder_arrays(source: pathlib.Path, split: str
                  ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(uint8 images (N, H, W, C), int32 labels (N,), class names) of split `split` of a
    class-folder tree SOURCE/<split>/<class>/<image> or of its `pack_folder` .npz, decoded in
    memory with PIL (no tfds, no grain). Every image must have the first one's size."""
    source = pathlib.Path(source)
    if source.suffix == ".npz":
        with np.load(source) as pack:
            classes = tuple(str(c) for c in pack["classes"])
            if f"{split}/labels" not in pack:
                splits = sorted({k.split("/")[0] for k in pack.files if "/" in k})
                raise ValueError(f"{source} has splits {splits}, got {split!r}")
            data, offsets = pack[f"{split}/bytes"].tobytes(), pack[f"{split}/offsets"]
            labels = pack[f"{split}/labels"]
        raw = [(data[a:b], f"{source}[{split} #{i}]")
               for i, (a, b) in enumerate(zip(offsets[:-1], offsets[1:]))]
    else:
        index = scan_folder(source)
        if split not in index.files:
            raise ValueError(f"{source} has splits {sorted(index.files)}, got {split!r}")
        classes = index.classes
        raw = [(path.read_bytes(), str(path)) for path, _ in index.files[split]]
        labels = np.array([label for _, label in index.files[split]], np.int32)
    if not raw:
        raise ValueError(f"{source}: split {split!r} has no images")
    with Image.open(io.BytesIO(raw[0][0])) as im:
        channels = 1 if im.mode in _GRAY_MODES else 3
    images = []
    for r, where in raw:
        images.append(decode_image(r, where, channels))
        if images[-1].shape != images[0].shape:
            raise BadImage(f"{where}: image is {images[-1].shape}, the first is {images[0].shape}")
    return np.stack(images), labels.astype(np.int32), classes
