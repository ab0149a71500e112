"""Independent float64 NumPy references for the tests: direct loops over kernel taps, written from
the textbook definitions, sharing no code with cnnjax."""

from __future__ import annotations

import math

import numpy as np

_NUMPY_PAD = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def same_pads(n: int, k: int, s: int, d: int) -> tuple[int, int]:
    """TensorFlow's SAME rule: output ceil(n / s), the odd pixel at the end."""
    out = math.ceil(n / s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


def conv2d(x, w, b=None, stride=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1), groups=1,
           mode="zeros"):
    """out[n, i, j, o] = sum_{u, v, c} xp[n, i s + u d, j s + v d, g(o) C_g + c] w[u, v, c, o]."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), mode=_NUMPY_PAD[mode])
    kh, kw, cin_g, cout = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    ho = (xp.shape[1] - dh * (kh - 1) - 1) // sh + 1
    wo = (xp.shape[2] - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((x.shape[0], ho, wo, cout))
    cout_g = cout // groups
    for u in range(kh):
        for v in range(kw):
            patch = xp[:, u * dh: u * dh + sh * (ho - 1) + 1: sh, v * dw: v * dw + sw * (wo - 1) + 1: sw]
            for g in range(groups):
                out[..., g * cout_g:(g + 1) * cout_g] += np.einsum(
                    "nhwc,co->nhwo", patch[..., g * cin_g:(g + 1) * cin_g],
                    w[u, v, :, g * cout_g:(g + 1) * cout_g])
    if b is not None:
        out += np.asarray(b, np.float64)
    return out


def pool2d(x, window, stride, pads, reduce):
    """Pooling by explicit windows; `reduce` gets each (N, kh, kw, C) window as a float64 array
    with padding marked NaN, so the caller decides how padding counts."""
    x = np.asarray(x, np.float64)
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=np.nan)
    (kh, kw), (sh, sw) = window, stride
    ho = (xp.shape[1] - kh) // sh + 1
    wo = (xp.shape[2] - kw) // sw + 1
    out = np.zeros((x.shape[0], ho, wo, x.shape[3]))
    for i in range(ho):
        for j in range(wo):
            out[:, i, j] = reduce(xp[:, i * sh:i * sh + kh, j * sw:j * sw + kw])
    return out


def torch_max_pool_hvp(x, v, window, stride, padding) -> np.ndarray:
    """PyTorch's double backward (float64): the Hessian of sum(max_pool2d(x) ** 2) times v,
    for NHWC arrays x and v."""
    import torch

    def nchw(a):
        return torch.tensor(np.asarray(a, np.float64)).permute(0, 3, 1, 2)

    xt = nchw(x).requires_grad_()
    y = torch.nn.functional.max_pool2d(xt, window, stride, padding)
    (g,) = torch.autograd.grad((y ** 2).sum(), xt, create_graph=True)
    (h,) = torch.autograd.grad((g * nchw(v)).sum(), xt)
    return h.permute(0, 2, 3, 1).numpy()


def max_pool_hvp_cases(seed: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, x, v) for max-pooling second derivatives, NHWC float32: the issue's 2x2 tie
    ([[1, 1], [0, 0]], direction e0), small integers (ties in most windows), distinct random
    values, and small integers with NaNs."""
    rng = np.random.default_rng(seed)
    tie = np.array([1.0, 1.0, 0.0, 0.0], np.float32).reshape(1, 2, 2, 1)
    e0 = np.array([1.0, 0.0, 0.0, 0.0], np.float32).reshape(1, 2, 2, 1)
    ints = rng.integers(0, 3, (2, 6, 6, 2)).astype(np.float32)
    nans = ints.copy()
    nans[rng.random(nans.shape) < 0.1] = np.nan
    v = rng.standard_normal(ints.shape).astype(np.float32)
    return [("tie", tie, e0), ("integers", ints, v),
            ("random", rng.standard_normal(ints.shape).astype(np.float32), v), ("nans", nans, v)]
