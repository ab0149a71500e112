"""cnnjax: convolutional neural networks in JAX/Flax.

Layers, lowest first (a lower one never imports a higher one): `ops` (pure functions), `kernels`
(Pallas), `nn` and `models` (Flax), `data`, `train`, `analysis`.
"""

__version__ = "0.1.0"
