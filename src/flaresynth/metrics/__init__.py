"""Evaluation metrics for generated solar images.

* :mod:`~flaresynth.metrics.features` — feature encoders (domain judge CNN, EfficientNet-Lite0, local CLIP /
  DINOv2 / Inception) behind one interface and one documented intensity mapping;
* :mod:`~flaresynth.metrics.frechet` — Fréchet distance (float64, stable square-root trace) and KID;
* :mod:`~flaresynth.metrics.cluster` — Hackstein et al. 2023 cluster error / distance / std with the
  real-vs-real benchmark;
* :mod:`~flaresynth.metrics.judge` — the judge classifier (its penultimate layer is the ``domain`` encoder);
* :mod:`~flaresynth.metrics.classification` — precision / recall / F1 / confusion matrix.

:mod:`flaresynth.evaluate` puts them together for ``flaresynth evaluate``.
"""
