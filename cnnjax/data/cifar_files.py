"""The CIFAR-10 / CIFAR-100 "python version": pickled batches, in the tar.gz or extracted.

Each batch is a pickled dict: "data" a uint8 (n, 3072) array, each row a 32x32 image as 1,024 red,
then 1,024 green, then 1,024 blue values in row-major order; "labels" (CIFAR-10) or "fine_labels"
and "coarse_labels" (CIFAR-100), n ints each. The meta file lists "label_names" (CIFAR-10) or
"fine_label_names" and "coarse_label_names" (CIFAR-100). The files were written by Python 2, so
they are read with encoding="latin1" (what NumPy needs for Python 2 arrays), and with an
unpickler that only admits the NumPy array constructors: a pickle can run arbitrary code otherwise.
"""

from __future__ import annotations

import dataclasses
import io
import pathlib
import pickle
import tarfile
import zlib

import numpy as np

from cnnjax.data.catalog import CIFAR_ARCHIVES, CIFAR_SPLIT_FILES, ORIGINALS
from cnnjax.data.checksums import check_md5

_PIXELS = 32 * 32 * 3
# NumPy's array reconstructors, and _codecs.encode, which protocol-2 pickles written by Python 3
# use for bytes.
_ALLOWED_GLOBALS = {("numpy.core.multiarray", "_reconstruct"),
                    ("numpy._core.multiarray", "_reconstruct"), ("numpy", "ndarray"),
                    ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"),
                    ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch holds "
                                         f"only NumPy arrays, lists, strings and numbers")
        return super().find_class(module, name)


@dataclasses.dataclass
class CifarData:
    """Both splits of a CIFAR dataset: images uint8 (N, 32, 32, 3), labels int64 (N,)."""

    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    class_names: tuple[str, ...]
    coarse_labels: dict[str, np.ndarray] | None = None  # CIFAR-100's 20 superclasses
    coarse_names: tuple[str, ...] = ()
    checksums: list[dict] = dataclasses.field(default_factory=list)


def _text(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _unpickle(raw: bytes, where: str) -> dict[str, object]:
    try:
        obj = _ArraysOnly(io.BytesIO(raw), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError) as e:
        raise ValueError(f"{where}: not a readable CIFAR pickle ({type(e).__name__}: {e}); "
                         f"is it truncated or corrupted?") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: a CIFAR batch is a dict, found {type(obj).__name__}")
    return {_text(k): v for k, v in obj.items()}


def _labels(batch: dict, key: str, n: int, num_classes: int, where: str) -> np.ndarray:
    if key not in batch:
        raise ValueError(f"{where}: no {key!r} entry (found {sorted(batch)})")
    labels = np.asarray(batch[key])
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{where}: {key!r} must be {n} integers, got shape {labels.shape} "
                         f"of {labels.dtype}")
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(np.argmax((labels < 0) | (labels >= num_classes)))
        raise ValueError(f"{where}: {key} {labels[bad]} at index {bad} is outside "
                         f"[0, {num_classes})")
    return labels.astype(np.int64)


def _batch(raw: bytes, where: str, keys: dict[str, int]) -> tuple[np.ndarray, list[np.ndarray]]:
    """(images (n, 32, 32, 3), one label array per key of `keys` (name -> class count))."""
    batch = _unpickle(raw, where)
    data = batch.get("data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != _PIXELS:
        shape = getattr(data, "shape", None)
        raise ValueError(f"{where}: 'data' must be a uint8 (n, {_PIXELS}) array, got "
                         f"{type(data).__name__} of shape {shape}")
    labels = [_labels(batch, k, len(data), c, where) for k, c in keys.items()]
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _names(meta: dict, key: str, count: int, where: str) -> tuple[str, ...]:
    names = meta.get(key)
    if not isinstance(names, list) or len(names) != count:
        raise ValueError(f"{where}: {key!r} must list {count} class names, got {names!r:.80}")
    return tuple(_text(n) for n in names)


class _Files:
    """The batch files of one copy, from the archive or an extracted folder, md5s checked."""

    def __init__(self, name: str, source: pathlib.Path):
        archive, folder = CIFAR_ARCHIVES[name]
        self.md5 = ORIGINALS[name].md5
        self.checksums: list[dict] = []
        self.archived: dict[str, bytes] | None = None
        if source.is_file() or (source / archive).is_file():
            self.where = source if source.is_file() else source / archive
            self.checksums.append(check_md5(self.where, self.md5[archive]))
            wanted = {f for files in CIFAR_SPLIT_FILES[name].values() for f in files}
            self.archived = {}
            try:  # one pass over the compressed stream
                with tarfile.open(self.where, "r:gz") as tar:
                    for member in tar:
                        base = pathlib.PurePosixPath(member.name).name
                        if member.isfile() and base in wanted:
                            self.archived[base] = tar.extractfile(member).read()
            except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
                raise ValueError(f"{self.where}: not a readable tar.gz ({e}); is it "
                                 f"truncated?") from e
        else:
            self.where = source / folder if (source / folder).is_dir() else source

    def read(self, file: str) -> tuple[bytes, str]:
        """(bytes, a description of where they come from) of batch file `file`."""
        if self.archived is not None:
            if file not in self.archived:
                raise ValueError(f"{self.where}: the archive has no {file!r}")
            return self.archived[file], f"{self.where}:{file}"
        path = self.where / file
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: expected the {file!r} batch of the CIFAR "
                                    f"python version (or its .tar.gz) in {self.where}")
        self.checksums.append(check_md5(path, self.md5[file]))
        return path.read_bytes(), str(path)


def read_cifar(name: str, source: pathlib.Path) -> CifarData:
    """Both splits of CIFAR `name` ("cifar10" or "cifar100") from `source`: the .tar.gz itself, a
    folder holding it, the extracted folder, or a folder holding the extracted folder."""
    if name not in CIFAR_ARCHIVES:
        raise ValueError(f"unknown CIFAR variant {name!r}; expected one of "
                         f"{sorted(CIFAR_ARCHIVES)}")
    files = _Files(name, source)
    split_files = CIFAR_SPLIT_FILES[name]
    meta = _unpickle(*files.read(split_files["meta"][0]))
    where = f"{files.where}:{split_files['meta'][0]}"
    if name == "cifar10":
        classes, coarse_names = _names(meta, "label_names", 10, where), ()
        keys = {"labels": 10}
    else:
        classes = _names(meta, "fine_label_names", 100, where)
        coarse_names = _names(meta, "coarse_label_names", 20, where)
        keys = {"fine_labels": 100, "coarse_labels": 20}
    out = CifarData({}, {}, classes, {} if name == "cifar100" else None, coarse_names)
    for split in ("train", "test"):
        parts = [_batch(*files.read(f), keys) for f in split_files[split]]
        out.images[split] = np.concatenate([p[0] for p in parts])
        out.labels[split] = np.concatenate([p[1][0] for p in parts])
        if out.coarse_labels is not None:
            out.coarse_labels[split] = np.concatenate([p[1][1] for p in parts])
    out.checksums = files.checksums
    return out
