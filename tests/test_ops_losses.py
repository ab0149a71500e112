"""Cross-entropy and top-k accuracy against float64 formulas and PyTorch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from cnnjax import ops


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_matches_pytorch(smoothing):
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((8, 10)) * 5).astype(np.float32)
    labels = rng.integers(0, 10, 8)
    got = ops.softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), label_smoothing=smoothing)
    want = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(labels),
                                             label_smoothing=smoothing, reduction="none")
    np.testing.assert_allclose(np.asarray(got), want.numpy(), rtol=1e-5, atol=1e-6)


def test_cross_entropy_soft_targets_and_large_logits():
    logits = jnp.asarray([[1000.0, 0.0], [0.0, 0.0]])
    targets = jnp.asarray([[0.5, 0.5], [1.0, 0.0]])
    np.testing.assert_allclose(np.asarray(ops.softmax_cross_entropy(logits, targets)), [500.0, np.log(2)], rtol=1e-6)
    with pytest.raises(ValueError, match="class ids"):
        ops.softmax_cross_entropy(logits, jnp.asarray([0.0, 1.0]))


def _top_k_by_sorting(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """The stated rule by sorting each row: NaN ranks above everything and the label sorts after
    every class it ties with; correct iff the label's logit is finite and its rank is < k."""
    out = np.zeros(len(labels), bool)
    for n, (row, label) in enumerate(zip(logits.astype(np.float64), labels)):
        if not np.isfinite(row[label]):
            continue
        key = np.where(np.isnan(row), np.inf, row)
        order = np.lexsort((np.arange(len(row)) == label, -key))  # last key is the primary one
        out[n] = int(np.flatnonzero(order == label)[0]) < k
    return out


def test_top_k_with_ties_and_non_finite_logits_against_sorting():
    rng = np.random.default_rng(0)
    # Integer logits in a small range: most rows have ties, many at the top-k boundary.
    logits = rng.integers(-2, 3, (400, 6)).astype(np.float32)
    logits[:40] = 0.0  # a zero-initialised head: every logit equal
    special = rng.integers(0, 6, (120, 2))
    for row, (col, kind) in zip(range(40, 400, 3), special):
        logits[row, col] = (np.nan, np.inf, -np.inf)[kind % 3]
    logits[390:] = np.nan  # a diverged model
    labels = rng.integers(0, 6, 400)
    for k in range(1, 7):
        got = np.asarray(ops.top_k_correct(jnp.asarray(logits), jnp.asarray(labels), k))
        np.testing.assert_array_equal(got, _top_k_by_sorting(logits, labels, k), err_msg=f"k={k}")
    for k in (1, 5):  # all-equal and NaN rows never count as correct below k = K
        assert float(ops.top_k_accuracy(jnp.zeros((4, 6)), jnp.arange(4), k)) == 0.0
        assert float(ops.top_k_accuracy(jnp.full((4, 6), jnp.nan), jnp.arange(4), k)) == 0.0


@pytest.mark.parametrize("k", [1, 3, 5])
def test_top_k_matches_torch_topk_without_ties(k):
    rng = np.random.default_rng(k)
    logits = rng.standard_normal((256, 10)).astype(np.float32)
    assert all(len(set(row)) == 10 for row in logits)  # tie-free
    labels = rng.integers(0, 10, 256)
    top = torch.topk(torch.tensor(logits), k, dim=-1).indices.numpy()
    want = (top == labels[:, None]).any(axis=1)
    got = ops.top_k_correct(jnp.asarray(logits), jnp.asarray(labels), k)
    np.testing.assert_array_equal(np.asarray(got), want)
    mask = rng.random(256) < 0.5
    np.testing.assert_allclose(float(ops.top_k_accuracy(jnp.asarray(logits), jnp.asarray(labels), k,
                                                        mask=jnp.asarray(mask))),
                               want[mask].mean(), rtol=1e-6)
    with pytest.raises(ValueError, match="k must be"):
        ops.top_k_accuracy(jnp.asarray(logits), jnp.asarray(labels), 11)


def test_cross_entropy_in_float64_for_float64_logits():
    rng = np.random.default_rng(1)
    logits, labels = rng.standard_normal((4, 7)) * 3, np.array([0, 3, 6, 2])
    shifted = logits - logits.max(-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    targets = np.eye(7)[labels] * 0.9 + 0.1 / 7
    with jax.enable_x64(True):
        got = ops.softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(labels),
                                        label_smoothing=0.1)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got), -(targets * log_p).sum(-1), rtol=0, atol=1e-13)
