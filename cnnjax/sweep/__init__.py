"""Hyperparameter sweeps: grids declared in configs (`get_sweep()`), run locally or on SLURM, and
summarised into tables and learning-curve plots (`python -m cnnjax.sweep summarize ROOT`)."""

from cnnjax.sweep.grid import Point, product, resolve_points, zip_
