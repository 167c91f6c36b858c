"""Application experiments: do generated images help a classifier and a 24 h flare forecaster?

* :mod:`~flaresynth.experiments.augment` — real only vs real + classical augmentation vs real + generated images,
  per-class accuracy of a DeiT (Ramunno et al. 2024 §6.1);
* :mod:`~flaresynth.experiments.forecast` — a ≥M-in-24 h forecaster with and without generated M/X images,
  TSS and HSS (§6.2);
* :mod:`~flaresynth.experiments.classifier` — the DeiT factory and the training loop both share;
* :mod:`~flaresynth.experiments.stats` — the scores; :mod:`~flaresynth.experiments.plots` — the figures.

Command line: ``flaresynth experiment augment|forecast``.
"""
