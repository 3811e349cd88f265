"""Multimodal fusion: registration and resampling, visual fusion, decision-level ensembles,
and alignment of several inputs before a multi-input model.

- :mod:`.registration`: rigid / affine / B-spline registration (SimpleITK, Mattes MI) and
  ``resample_to`` (alignment by world coordinates only).
- :mod:`.blend`: alpha blend, checkerboard and colour overlay volumes and PNGs.
- :mod:`.ensemble`: mean / weighted / vote / STAPLE fusion of probability or label maps, uncertainty.
- :mod:`.align`: ``align_inputs`` for multi-input models.
"""
