"""Patch whitening (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU", sec. 3.2):
the first convolution of airbench is fixed to whiten the input's k x k patches."""

from __future__ import annotations

import numpy as np


def image_patches(images: np.ndarray, kernel_size: int) -> np.ndarray:
    """Every k x k patch of NHWC `images` (stride 1, no padding), flattened in HWC order:
    (N * (H-k+1) * (W-k+1), k * k * C), float64."""
    if images.ndim != 4:
        raise ValueError(f"image_patches needs NHWC images, got shape {images.shape}")
    x = np.asarray(images, np.float64)
    n, h, w, c = x.shape
    k = kernel_size
    if not 1 <= k <= min(h, w):
        raise ValueError(f"kernel_size must be in [1, {min(h, w)}], got {kernel_size}")
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))  # N H' W' C k k
    return windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, k * k * c)


def patch_whitening_kernel(images: np.ndarray, kernel_size: int = 2,
                           eps: float = 5e-4) -> np.ndarray:
    """The whitening convolution's kernel (k, k, C, 2 k^2 C), HWIO, float32.

    With P the (uncentred) second-moment matrix of the images' k x k patches and P = V diag(l) V^T,
    filter i (eigenvalues in decreasing order) is v_i / sqrt(l_i + eps) and filter k^2 C + i its
    negative, so (before the bias) the first k^2 C outputs on these patches have second moments
    diag(l / (l + eps)), close to the identity for l >> eps.
    """
    patches = image_patches(images, kernel_size)
    cov = patches.T @ patches / len(patches)
    eigval, eigvec = np.linalg.eigh(cov)
    eigval, eigvec = eigval[::-1], eigvec[:, ::-1]
    filters = eigvec / np.sqrt(eigval + eps)  # (k k C, k k C): column i is filter i
    c = images.shape[-1]
    kernel = filters.reshape(kernel_size, kernel_size, c, -1)
    return np.concatenate([kernel, -kernel], axis=-1).astype(np.float32)
