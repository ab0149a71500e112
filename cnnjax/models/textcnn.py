"""TextCNN (Kim 2014, "Convolutional neural networks for sentence classification", sec. 2 and
Fig. 1): one layer of 1-D convolutions over word embeddings.

Token ids (N, L) -> embeddings (N, L, k) -> for each filter width h in 3, 4, 5: 100 convolutions
h x k (unpadded) + ReLU -> max over time -> concatenated 300 features -> dropout 0.5 -> linear
classifier (N, num_classes). A sentence needs at least max(widths) = 5 tokens (pad shorter ones).
This is the single-channel model (CNN-rand, or CNN-non-static once pre-trained vectors are put in
`params["embedding"]`). The paper's l2 max-norm constraint (s = 3) on the classifier's weight
vectors is a step of the optimiser, not part of the model.

Parameters: V k (embeddings) + sum over widths of (h k + 1) 100 + (300 + 1) num_classes. With the
defaults (k = 300, the word2vec size; V = 18,765, Kim's Table 1 vocabulary for MR; 2 classes):
5,629,500 + 360,300 + 602 = 5,990,402.
Initialisation: embeddings U(-0.25, 0.25), Kim's choice for words without pre-trained vectors;
convolutions and the classifier Glorot & Bengio uniform; biases zero.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax import ops
from cnnjax.models.registry import register
from cnnjax.nn import Conv1D, Dense, Dropout

def kim_embedding_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """U(-0.25, 0.25)."""
    return jax.random.uniform(key, shape, dtype, -0.25, 0.25)


class TextCNN(nn.Module):
    """Sentence classifier on int token ids (N, L), L >= max(widths) -> (N, num_classes) float32."""

    num_classes: int = 2
    vocab_size: int = 18_765
    embed_dim: int = 300
    widths: tuple[int, ...] = (3, 4, 5)
    feature_maps: int = 100
    dropout_rate: float = 0.5
    dtype: Any = None

    @nn.compact
    def __call__(self, tokens: jax.Array, train: bool = False) -> jax.Array:
        if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(f"textcnn needs integer token ids of shape (N, L), got shape "
                             f"{tuple(tokens.shape)} and dtype {tokens.dtype}")
        if tokens.shape[1] < max(self.widths):
            raise ValueError(f"textcnn needs sentences of at least {max(self.widths)} tokens (its "
                             f"widest filter), got {tokens.shape[1]}; pad shorter ones")
        table = self.param("embedding", kim_embedding_init, (self.vocab_size, self.embed_dim),
                           jnp.float32)
        x = jnp.take(table, tokens, axis=0).astype(self.dtype or table.dtype)
        features = []
        for h in self.widths:
            y = Conv1D(self.feature_maps, h, kernel_init=nn.initializers.glorot_uniform(),
                       dtype=self.dtype, name=f"conv{h}")(x)
            features.append(jnp.max(ops.relu(y), axis=1))  # max over time
        x = Dropout(self.dropout_rate)(jnp.concatenate(features, axis=-1), train)
        return Dense(self.num_classes, kernel_init=nn.initializers.glorot_uniform(),
                     dtype=self.dtype, name="fc")(x).astype(jnp.float32)


@register("textcnn", input_shape=(64,), num_classes=2, input_dtype="int32")
def textcnn(*, num_classes: int, **overrides) -> TextCNN:
    return TextCNN(num_classes=num_classes, **overrides)
