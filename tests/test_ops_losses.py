"""Cross-entropy and top-k accuracy against float64 formulas and PyTorch."""

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


def test_top_k_accuracy_by_hand():
    logits = jnp.asarray([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5], [0.3, 0.3, 0.4]])
    labels = jnp.asarray([2, 0, 0, 1])
    # top-1: only example 1; top-2: examples 0, 1 and 3 (0.3 ties 0.3 but only 0.4 is higher).
    assert float(ops.top_k_accuracy(logits, labels, 1)) == 0.25
    assert float(ops.top_k_accuracy(logits, labels, 2)) == 0.75
    assert float(ops.top_k_accuracy(logits, labels, 1, mask=jnp.asarray([False, True, False, False]))) == 1.0
    with pytest.raises(ValueError, match="k must be"):
        ops.top_k_accuracy(logits, labels, 4)
