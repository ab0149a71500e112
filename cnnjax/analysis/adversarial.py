"""Adversarial examples under an L-infinity budget: FGSM, PGD and accuracy against epsilon.

`logits_fn` maps images (N, H, W, C) to logits (N, K); `labels` are (N,) int class ids; pixel
values stay inside `clip` (the data's range, [0, 1] for the digits). `eps` is in the units of
the images given: to state budgets in pixels, attack the stored pixels and put the
normalisation inside `logits_fn` (as `cnnjax.analysis.visualize` does). The loss attacked is the
softmax cross-entropy of the true label (`cnnjax.ops.softmax_cross_entropy`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax import ops

LogitsFn = Callable[[jax.Array], jax.Array]


def _loss_grad(logits_fn: LogitsFn, x: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example input gradients of the cross-entropy (the sum decouples the examples)."""
    return jax.grad(lambda x: ops.softmax_cross_entropy(logits_fn(x), labels).sum())(x)


def _check(eps: float, clip: tuple[float, float]) -> None:
    if isinstance(eps, (int, float)) and eps < 0:  # a traced eps (under jit) is not checked
        raise ValueError(f"eps must be >= 0, got {eps}")
    if clip[0] >= clip[1]:
        raise ValueError(f"clip must be (low, high) with low < high, got {clip}")


def fgsm(logits_fn: LogitsFn, x: jax.Array, labels: jax.Array, eps: float, *,
         clip: tuple[float, float] = (0.0, 1.0)) -> jax.Array:
    """Goodfellow et al. (2015): x + eps * sign(grad_x loss), clipped to `clip`. (N, H, W, C)."""
    _check(eps, clip)
    x = jnp.asarray(x)
    return jnp.clip(x + eps * jnp.sign(_loss_grad(logits_fn, x, labels)), *clip)


def pgd(logits_fn: LogitsFn, x: jax.Array, labels: jax.Array, eps: float, *, steps: int = 10,
        step_size: float | None = None, random_start: bool = False, key: jax.Array | None = None,
        clip: tuple[float, float] = (0.0, 1.0)) -> jax.Array:
    """Madry et al. (2018): `steps` signed-gradient steps of `step_size` (default 2.5 eps /
    steps), each followed by projection onto the eps-ball around x and onto `clip`. With
    `random_start` it starts from a uniform point of the ball (needs `key`). (N, H, W, C)."""
    _check(eps, clip)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    x = jnp.asarray(x)
    step_size = 2.5 * eps / steps if step_size is None else step_size
    adv = x
    if random_start:
        if key is None:
            raise ValueError("random_start=True needs a PRNG key")
        adv = jnp.clip(x + jax.random.uniform(key, x.shape, x.dtype, -eps, eps), *clip)

    def step(adv, _):
        adv = adv + step_size * jnp.sign(_loss_grad(logits_fn, adv, labels))
        return jnp.clip(jnp.clip(adv, x - eps, x + eps), *clip), None

    return jax.lax.scan(step, adv, None, length=steps)[0]


def accuracy(logits_fn: LogitsFn, x: jax.Array, labels: jax.Array) -> float:
    return float(jnp.mean(jnp.argmax(logits_fn(x), axis=-1) == jnp.asarray(labels)))


def accuracy_vs_eps(logits_fn: LogitsFn, x: jax.Array, labels: jax.Array,
                    epsilons: Sequence[float], attack: str = "fgsm",
                    report: Callable[[float, float], None] | None = None,
                    **kwargs) -> np.ndarray:
    """Accuracy on the attacked images for each eps in `epsilons` (eps = 0 is the clean
    accuracy); `attack` is "fgsm" or "pgd", `kwargs` go to it; `report(eps, accuracy)` is
    called as each eps is done. Returns (len(epsilons),)."""
    attacks = {"fgsm": fgsm, "pgd": pgd}
    if attack not in attacks:
        raise ValueError(f"attack must be one of {sorted(attacks)}, got {attack!r}")
    for eps in epsilons:
        _check(float(eps), kwargs.get("clip", (0.0, 1.0)))
    run = jax.jit(lambda x, eps: attacks[attack](logits_fn, x, labels, eps, **kwargs))
    result = []
    for eps in epsilons:
        result.append(accuracy(logits_fn, run(x, eps), labels))
        if report is not None:
            report(float(eps), result[-1])
    return np.array(result)
