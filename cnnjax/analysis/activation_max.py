"""Activation maximisation: gradient ascent on the input for a chosen unit or class.

The usual regularisers (Erhan et al. 2009; Simonyan et al. 2014; Yosinski et al. 2015;
Mordvintsev et al. 2015): random jitter (the image is rolled by up to `jitter` pixels before
each gradient, so the result does not rely on exact pixel alignment), L2 decay (x *= 1 - l2
each step, pulling pixels towards 0: the background of [0, 1] images, the mean of standardised
ones) and a Gaussian blur every `blur_every` steps (suppressing high-frequency patterns). Steps
are normalised gradient ascent, x += lr * g / mean|g| per image. Images are NHWC and stay
inside `clip`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax import ops
from cnnjax.analysis import graph

Objective = Callable[[jax.Array], jax.Array]


def unit_objective(model, variables, layer: str, units: int | Sequence[int]) -> Objective:
    """x (N, H, W, C) -> (N,): image i's activation of unit units[i] of layer `layer` (names as
    in `cnnjax.analysis.graph.trace`; one int applies to every image), so one optimisation
    visualises several units: entry u of a (N, F) output (the last dense layer gives the class
    logits), channel u at the central position of a (N, h, w, C) map."""

    def objective(x):
        y = graph.evaluate(model, variables, x, [layer])[layer]
        chosen = jnp.broadcast_to(jnp.asarray(units), (x.shape[0],))
        bad = [u for u in np.atleast_1d(units) if not 0 <= u < y.shape[-1]]
        if bad:
            raise ValueError(f"layer {layer!r} has {y.shape[-1]} units, got {bad}")
        if y.ndim == 4:
            y = y[:, y.shape[1] // 2, y.shape[2] // 2]
        elif y.ndim != 2:
            raise ValueError(f"layer {layer!r} output has shape {tuple(y.shape)}; expected "
                             f"(N, F) or (N, h, w, C)")
        return jnp.take_along_axis(y, chosen[:, None], axis=1)[:, 0]

    return objective


def gaussian_blur(x: jax.Array, sigma: float) -> jax.Array:
    """Blurs each channel of x (N, H, W, C) with a Gaussian of std `sigma` pixels (kernel
    2 ceil(2 sigma) + 1 wide, zero padding, same size out)."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    radius = math.ceil(2 * sigma)
    t = np.arange(-radius, radius + 1)
    g = np.exp(-t ** 2 / (2 * sigma ** 2))
    k2 = np.outer(g, g) / np.outer(g, g).sum()
    c = x.shape[-1]
    w = jnp.asarray(np.tile(k2[:, :, None, None], (1, 1, 1, c)), x.dtype)
    return ops.depthwise_conv2d(x, w, padding="SAME")


def maximize(objective: Objective, x0: jax.Array, *, key: jax.Array, steps: int = 100,
             lr: float = 0.05, jitter: int = 1, l2: float = 1e-3, blur_every: int = 4,
             blur_sigma: float = 0.5, clip: tuple[float, float] = (0.0, 1.0),
             report: Callable[[int, np.ndarray], None] | None = None
             ) -> tuple[jax.Array, np.ndarray]:
    """Gradient ascent on `objective` (x (N, H, W, C) -> (N,)) from x0.

    Returns (the optimised images (N, H, W, C), the objective of the un-jittered image before
    each step and after the last, (steps + 1, N)). `blur_every=0` disables blurring. The steps
    run in up to 10 chunks; `report(steps done, objective (N,))` is called after each.
    """
    if steps < 1 or lr <= 0 or jitter < 0 or not 0 <= l2 < 1 or blur_every < 0:
        raise ValueError(f"need steps >= 1, lr > 0, jitter >= 0, 0 <= l2 < 1, blur_every >= 0; "
                         f"got steps={steps}, lr={lr}, jitter={jitter}, l2={l2}, "
                         f"blur_every={blur_every}")
    grad = jax.grad(lambda x, shift: objective(jnp.roll(x, shift, axis=(1, 2))).sum())

    def step(x, inputs):
        i, k = inputs
        shift = jax.random.randint(k, (2,), -jitter, jitter + 1)
        g = grad(x, (shift[0], shift[1]))
        g = g / (jnp.mean(jnp.abs(g), axis=(1, 2, 3), keepdims=True) + 1e-12)
        x = (x + lr * g) * (1.0 - l2)
        if blur_every:
            x = jnp.where((i + 1) % blur_every == 0, gaussian_blur(x, blur_sigma), x)
        x = jnp.clip(x, *clip)
        return x, objective(x)

    # Chunks of one scan each: the same steps (index and key per step) as one long scan, with a
    # point between chunks to report progress; at most two chunk lengths are compiled.
    chunk = jax.jit(lambda x, index, keys: jax.lax.scan(step, x, (index, keys)))
    keys, size = jax.random.split(key, steps), math.ceil(steps / 10)
    x = jnp.asarray(x0)
    history = [np.asarray(objective(x))[None]]
    for start in range(0, steps, size):
        stop = min(start + size, steps)
        x, values = chunk(x, jnp.arange(start, stop), keys[start:stop])
        history.append(np.asarray(values))
        if report is not None:
            report(stop, history[-1][-1])
    return x, np.concatenate(history)
