"""Small trained runs shipped with the package, addressed as ``--run demo:discrete`` and the like.

A shipped run is an ordinary run folder (``config.yaml``, ``provenance.json``, ``model/``; no checkpoints)
stored as ``flaresynth/pretrained/<folder>/``:

=============================  =============================  ==============================================
name                           folder                         conditioning
=============================  =============================  ==============================================
``demo:discrete``              ``demo-discrete/``             GOES class (A, B, C, M, X)
``demo:continuous``            ``demo-continuous/``           log10 XRS-B flux
``demo:embedding``             ``demo-embedding/``            class + ceVAE embedding (encoder ``demo:cevae``)
``demo:cevae``                 ``demo-cevae/``                none (the ceVAE baseline; class Gaussians in latent space)
``demo:discrete-student``      ``demo-discrete-student/``     as ``demo:discrete``: its distilled few-step student
``demo:continuous-student``    ``demo-continuous-student/``   as ``demo:continuous``: its distilled few-step student
=============================  =============================  ==============================================

Opening one (and listing those installed) is :mod:`flaresynth.runs`' business: ``open_run("demo:discrete")``,
:func:`flaresynth.runs.shipped_runs`. Each is made by ``flaresynth train`` (the preset and dataset in its ``config.yaml`` and ``provenance.json``;
the folder's ``README.md`` says how); a student by ``flaresynth distill --run demo:discrete --out RUN2 --steps 4``
(:mod:`flaresynth.distill`), which samples in its own few DDIM steps with w as an input. A name is listed as
installed only when its folder holds a model, so a student folder can be added later without code changes;
``flaresynth demo`` samples a generator from its student when that is installed.
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
}
#: The prefix that marks a shipped-run name (``demo:...``) rather than a path.
PREFIX = "demo"

HERE = Path(__file__).resolve().parent

__all__ = ["SHIPPED", "PREFIX", "HERE"]
