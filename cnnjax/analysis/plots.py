"""Matplotlib pictures of the analyses, each written as a PNG (Agg backend, no display needed).

Images are (H, W, C) with C = 1 (shown in grey) or 3 (RGB), values in [0, 1] unless said
otherwise; every function returns the path it wrote.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PathLike = str | pathlib.Path


def _show(ax, image: np.ndarray, title: str = "", normalize: bool = False, cmap=None) -> None:
    """One image on `ax`: (H, W, 1) or (H, W) in grey (or `cmap`), (H, W, 3) as RGB;
    `normalize` stretches its own range to [0, 1] first."""
    image = np.asarray(image, np.float32)
    if normalize:
        lo, hi = image.min(), image.max()
        image = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        # Images in [0, 1] keep their scale; maps with their own colormap are autoscaled.
        ax.imshow(image, cmap=cmap or "gray", **({} if cmap else {"vmin": 0.0, "vmax": 1.0}))
    else:
        ax.imshow(np.clip(image, 0, 1))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def _grid(n: int, cols: int | None = None) -> tuple[int, int]:
    cols = cols or math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def _save(fig, path: PathLike) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def filter_grid(kernel: np.ndarray, path: PathLike, title: str = "") -> pathlib.Path:
    """First-layer filters, kernel (kh, kw, C_in, C_out): one tile per output channel, each
    scaled to its own range; RGB when C_in = 3, else the mean over input channels in grey."""
    kernel = np.asarray(kernel, np.float32)
    if kernel.ndim != 4:
        raise ValueError(f"kernel must be (kh, kw, C_in, C_out), got shape {kernel.shape}")
    n = kernel.shape[-1]
    rows, cols = _grid(n)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 0.9 + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < n:
            tile = kernel[..., i] if kernel.shape[2] == 3 else kernel[..., i].mean(-1)
            _show(ax, tile, normalize=True)
        else:
            ax.axis("off")
    fig.suptitle(title or f"{n} filters, {kernel.shape[0]}x{kernel.shape[1]}", fontsize=9)
    return _save(fig, path)


def feature_maps(maps: np.ndarray, path: PathLike, image: np.ndarray | None = None,
                 title: str = "", max_maps: int = 32) -> pathlib.Path:
    """The first `max_maps` channels of maps (h, w, C), each on its own colour scale
    (diverging: red positive, blue negative), after the input `image` if given."""
    maps = np.asarray(maps, np.float32)
    if maps.ndim != 3:
        raise ValueError(f"maps must be (h, w, C), got shape {maps.shape}")
    n = min(maps.shape[-1], max_maps)
    tiles = n + (image is not None)
    rows, cols = _grid(tiles)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.1 + 0.4), squeeze=False)
    flat = list(axes.flat)
    if image is not None:
        _show(flat.pop(0), image, "input")
    for i, ax in enumerate(flat):
        if i < n:
            m = maps[..., i]
            bound = max(np.abs(m).max(), 1e-12)
            ax.imshow(m, cmap="RdBu_r", vmin=-bound, vmax=bound)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(str(i), fontsize=6)
        else:
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def image_row(images: np.ndarray, titles: Sequence[str], path: PathLike, title: str = "",
              normalize: bool = True) -> pathlib.Path:
    """Images (N, H, W, C) side by side (activation maximisation results)."""
    n = len(images)
    rows, cols = _grid(n, min(n, 8))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.4, rows * 1.5 + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < n:
            _show(ax, images[i], titles[i], normalize=normalize)
        else:
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def heatmaps(images: np.ndarray, maps: np.ndarray, titles: Sequence[str], map_title: str,
             path: PathLike, diverging: bool = False) -> pathlib.Path:
    """One row per image: the image (N, H, W, C) and its map (N, h, w) (saliency: autoscaled
    "hot"; `diverging` maps such as occlusion's probability drops: red +, blue -)."""
    n = len(images)
    fig, axes = plt.subplots(n, 2, figsize=(3.6, 1.8 * n + 0.3), squeeze=False)
    for i in range(n):
        _show(axes[i, 0], images[i], titles[i])
        if diverging:
            bound = max(float(np.abs(maps[i]).max()), 1e-12)
            axes[i, 1].imshow(maps[i], cmap="RdBu_r", vmin=-bound, vmax=bound)
            axes[i, 1].set_xticks([])
            axes[i, 1].set_yticks([])
            axes[i, 1].set_title(map_title, fontsize=7)
        else:
            _show(axes[i, 1], maps[i], map_title, cmap="hot")
    fig.tight_layout()
    return _save(fig, path)


def neighbours(queries: np.ndarray, found: np.ndarray, distances: np.ndarray, path: PathLike,
               labels: Sequence[str] | None = None) -> pathlib.Path:
    """AlexNet Fig. 4 style: each row a query image (Q, H, W, C) then its k nearest training
    images found (Q, k, H, W, C) with their feature-space distances (Q, k)."""
    q, k = found.shape[:2]
    fig, axes = plt.subplots(q, k + 1, figsize=((k + 1) * 1.0, q * 1.1 + 0.3), squeeze=False)
    for i in range(q):
        _show(axes[i, 0], queries[i], "query" + (f" ({labels[i]})" if labels else ""))
        for j in range(k):
            _show(axes[i, j + 1], found[i, j], f"d={distances[i, j]:.2f}")
    fig.tight_layout()
    return _save(fig, path)


def adversarial_panel(images: np.ndarray, labels: Sequence[int | str], adversarial: np.ndarray,
                      clean_pred: Sequence[int | str], clean_conf: Sequence[float],
                      adv_pred: Sequence[int | str], adv_conf: Sequence[float], eps: float,
                      path: PathLike) -> pathlib.Path:
    """One row per image: original (with its class), perturbation (adversarial - original,
    scaled to +-eps), adversarial, with the predicted classes (numbers or names) and
    confidences."""
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(5.0, 1.7 * n + 0.3), squeeze=False)
    for i in range(n):
        _show(axes[i, 0], images[i],
              f"{labels[i]}: pred {clean_pred[i]} ({clean_conf[i]:.0%})")
        delta = np.asarray(adversarial[i] - images[i], np.float32)
        delta = delta[..., 0] if delta.shape[-1] == 1 else delta.mean(-1)
        axes[i, 1].imshow(delta, cmap="RdBu_r", vmin=-max(eps, 1e-12), vmax=max(eps, 1e-12))
        axes[i, 1].set_xticks([])
        axes[i, 1].set_yticks([])
        axes[i, 1].set_title(f"perturbation (eps={eps:g})", fontsize=7)
        _show(axes[i, 2], adversarial[i], f"pred {adv_pred[i]} ({adv_conf[i]:.0%})")
    fig.tight_layout()
    return _save(fig, path)


def accuracy_vs_eps(epsilons: Sequence[float], curves: Mapping[str, Sequence[float]],
                    path: PathLike) -> pathlib.Path:
    """Accuracy against the L-infinity budget eps, one line per attack."""
    fig, ax = plt.subplots(figsize=(4.5, 3.3))
    for name, acc in curves.items():
        ax.plot(epsilons, 100 * np.asarray(acc), marker="o", label=name)
    ax.set_xlabel("eps (L-infinity)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def equivariance(result: Mapping[str, np.ndarray], layer: str, path: PathLike) -> pathlib.Path:
    """The measures of `cnnjax.analysis.equivariance.shift_response` against the shift."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    s = result["shift"]
    ax.plot(s, result["map_change"], marker="o", label="feature map, raw")
    aligned = np.asarray(result["aligned_change"], np.float64)
    ok = ~np.isnan(aligned)
    ax.plot(s[ok], aligned[ok], marker="s", label=f"feature map, moved by shift/{int(result['jump'])}")
    ax.plot(s, result["pooled_change"], marker="^", label="spatially pooled")
    ax.set_xlabel("input shift (pixels, horizontal)")
    ax.set_ylabel("relative change")
    ax.set_title(f"layer {layer}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def learning_curves(runs: Mapping[str, Sequence[Mapping]], path: PathLike) -> pathlib.Path:
    """He et al. (2016) Fig. 1 style: train error (thin, dashed) and test error (bold) in %
    against iterations, one colour per run; `runs` maps a name to its metrics.jsonl records
    (dicts with step, split and accuracy)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for i, (name, records) in enumerate(runs.items()):
        color = f"C{i % 10}"
        for split, style in (("train", dict(lw=0.8, ls="--")), ("eval", dict(lw=2.0))):
            points = [(r["step"], 100 * (1 - r["accuracy"])) for r in records
                      if r.get("split") == split and "accuracy" in r]
            if points:
                label = f"{name} ({'train' if split == 'train' else 'test'})"
                ax.plot(*zip(*points), color=color, label=label, **style)
    ax.set_xlabel("iteration")
    ax.set_ylabel("error (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
