"""What the lectures show about CNNs, computed for any model, one module per analysis:

  summary          per-layer parameters, activations and multiply-adds (`summary.summary`)
  receptive_field  per-layer receptive fields (`receptive_field.receptive_field`)
  graph, fields    the layer tracer both are built on, and receptive-field arithmetic
  features         feature maps of any named layer, penultimate features, nearest neighbours
  attribution      saliency and occlusion sensitivity
  adversarial      FGSM, PGD, accuracy against epsilon
  activation_max   gradient ascent on the input with jitter, L2 decay and blur
  equivariance     change of feature maps and pooled features under input shifts
  plots            the matplotlib pictures
  visualize        the CLI: `python -m cnnjax.analysis.visualize --workdir=RUN --what=... --out=DIR`

Submodules are imported by name (`from cnnjax.analysis.summary import summary`); this package
re-exports nothing, so `summary` and `receptive_field` stay the modules.
"""
