"""MLP-Mixer blocks (Tolstikhin et al. 2021, "MLP-Mixer: an all-MLP architecture for vision",
sec. 2 and Fig. 1), on token sequences (N, S, C): S patches of C channels.

Module and parameter names follow timm's `mlp_mixer.py` (norm1, mlp_tokens.fc1, ...), so timm's
state dicts load with `cnnjax.models.from_torch`. Initialisation as the paper's released code:
LeCun normal kernels, zero biases, layer norm scale 1 / bias 0.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnjax import ops
from cnnjax.nn.layers import Dense


class LayerNorm(nn.Module):
    """Layer normalisation over the last axis (`ops.layer_norm`): params `scale`, `bias` (D,)."""

    epsilon: float = 1e-6
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (d,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (d,), self.param_dtype)
        return ops.layer_norm(x.astype(self.dtype or x.dtype), scale, bias, eps=self.epsilon)


class MlpBlock(nn.Module):
    """Two dense layers with GELU between (exact erf form, as timm's nn.GELU; the paper's JAX code
    uses the tanh approximation): (..., D) -> (..., hidden) -> (..., D). Params `fc1`, `fc2`."""

    hidden: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = ops.gelu(Dense(self.hidden, dtype=self.dtype, name="fc1")(x))
        return Dense(x.shape[-1], dtype=self.dtype, name="fc2")(h)


class MixerBlock(nn.Module):
    """One Mixer layer, (N, S, C) -> (N, S, C):
      x = x + W2 gelu(W1 LayerNorm(x)^T)^T   (token mixing: an MLP over the S patches, shared by
                                             every channel, hidden width `tokens_hidden` = D_S)
      x = x + W4 gelu(W3 LayerNorm(x))       (channel mixing: an MLP over the C channels, shared by
                                             every patch, hidden width `channels_hidden` = D_C)
    The token-mixing MLP fixes S, so a model built for one resolution needs exactly it.
    """

    tokens_hidden: int
    channels_hidden: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = LayerNorm(dtype=self.dtype, name="norm1")(x).swapaxes(1, 2)
        x = x + MlpBlock(self.tokens_hidden, dtype=self.dtype, name="mlp_tokens")(y).swapaxes(1, 2)
        y = LayerNorm(dtype=self.dtype, name="norm2")(x)
        return x + MlpBlock(self.channels_hidden, dtype=self.dtype, name="mlp_channels")(y)
