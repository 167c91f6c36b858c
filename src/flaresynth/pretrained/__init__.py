"""Small trained runs shipped with the package, addressed as ``--run demo:discrete`` and the like.

A shipped run is an ordinary run folder (``config.yaml``, ``provenance.json``, ``model/``; no checkpoints)
stored as ``flaresynth/pretrained/<folder>/``:

=============================  =============================  ==============================================
name                           folder                         what it is
=============================  =============================  ==============================================
``demo:discrete``              ``demo-discrete/``             generator: GOES class (A, B, C, M, X)
``demo:continuous``            ``demo-continuous/``           generator: log10 XRS-B flux
``demo:embedding``             ``demo-embedding/``            generator: class + ceVAE embedding (encoder ``demo:cevae``)
``demo:cevae``                 ``demo-cevae/``                generator: the ceVAE baseline (class Gaussians in latent space)
``demo:discrete-student``      ``demo-discrete-student/``     as ``demo:discrete``: its distilled few-step student
                                                              (``--method trajectory``, from the 64/128/128
                                                              teacher, 2026-12-07)
``demo:continuous-student``    ``demo-continuous-student/``   as ``demo:continuous``: its distilled few-step student
                                                              (likewise)
``demo:autoencoder``           ``demo-autoencoder/``          not a generator: the 64 px <-> 16x16x4 autoencoder
                                                              every latent run above decodes with
``demo:multichannel``          ``demo-multichannel/``         generator: GOES class, five AIA channels at once
                                                              (94, 131, 171, 193, 211 Å); holds its own
                                                              5-channel autoencoder; not used by ``flaresynth demo``
``demo:activity3``             ``demo-activity3/``            generator: activity level (low, medium, high) at
                                                              128 px; holds its own 128 px autoencoder; not used
                                                              by ``flaresynth demo``
=============================  =============================  ==============================================

Beside the runs, ``demo-judges/`` (:data:`JUDGES`) holds the judge CNNs :mod:`flaresynth.metrics.judge` trains on
the demo's dataset (seeds 0, 1, 2 at 64 px, one folder each, named by the dataset's data hash): not runs, but the
instrument the generators are scored with. A judge trained from a seed is the same on every run on one CPU model
and differs on another, so shipping them makes the demo's judge-based figures the same on every machine (and saves
the demo the ~4 minutes of training them); ``flaresynth demo`` uses them when its dataset has their data hash and
trains its own otherwise (or with ``--train-judges``). ``demo-judges/README.md`` says how they were made.

Opening one (and listing those installed) is :mod:`flaresynth.runs`' business: ``open_run("demo:discrete")``,
:func:`flaresynth.runs.shipped_runs` (every installed name, the autoencoder included: it opens like any run, and
``flaresynth sample`` refuses it in one line; a caller wanting generators checks the model kind). Each is made by
``flaresynth train`` (the preset and dataset in its ``config.yaml`` and ``provenance.json``;
the folder's ``README.md`` says how); a student by ``flaresynth distill --run demo:discrete --out RUN2 --steps 4 --method trajectory``
(:mod:`flaresynth.distill`), which samples in its own few steps with w as an input. A name is listed as
installed only when its folder holds a model, so a student folder can be added later without code changes;
``flaresynth demo`` samples a generator from its student when that is installed.

The latent runs share one autoencoder. A run ``flaresynth train`` writes keeps a copy in ``RUN/autoencoder/`` (so
the folder needs nothing else); a shipped latent run instead names a shipped autoencoder run in its
``model/flaresynth.json`` (``latent.autoencoder: demo:autoencoder``, :func:`flaresynth.runs.latent_autoencoder_folder`),
so the package holds those weights once. The autoencoder's id recorded next to that name is still checked on
opening. To ship another latent run: if its autoencoder is already shipped, drop the run's ``autoencoder/`` and
set that field to the autoencoder's name; if several shipped runs would share a new one, add its model folder
as a run here first (``model/``, ``config.yaml``, ``provenance.json``) under a new name in :data:`SHIPPED`; a run
whose autoencoder nobody else uses keeps it in its own ``autoencoder/`` (``demo:multichannel``, ``demo:activity3``). ``tests/test_runs.py``
checks that no two shipped folders hold the same weights file.

Every shipped run's weights are stored in float16 (:func:`flaresynth.runs.store_half` on the run folder before it
is copied here; ``weights_dtype: float16`` in its ``flaresynth.json``), half the bytes of the float32 that training
writes: that is how the 4.4 M-parameter teachers and students fit the package's 60 MB (``tests/test_runs.py``).
Every loader casts them back to float32, so a shipped run computes in float32 with its weights rounded; sampling
moves by ~1e-4 on the [-1, 1] image scale (``docs/latent_diffusion.md``, "Session 37"). The judges stay float32.
"""

from __future__ import annotations

from pathlib import Path

#: Shipped-run name -> folder under this package.
SHIPPED: dict[str, str] = {
    "demo:discrete": "demo-discrete",
    "demo:continuous": "demo-continuous",
    "demo:embedding": "demo-embedding",
    "demo:cevae": "demo-cevae",
    "demo:discrete-student": "demo-discrete-student",
    "demo:continuous-student": "demo-continuous-student",
    "demo:autoencoder": "demo-autoencoder",
    "demo:multichannel": "demo-multichannel",
    "demo:activity3": "demo-activity3",
}
#: The folder of the shipped judges (:func:`flaresynth.metrics.judge.shipped_judge`).
JUDGES = "demo-judges"
#: The prefix that marks a shipped-run name (``demo:...``) rather than a path.
PREFIX = "demo"

HERE = Path(__file__).resolve().parent

__all__ = ["SHIPPED", "JUDGES", "PREFIX", "HERE"]
