"""Small trained runs shipped with the package, addressed as ``--run demo:discrete`` and the like.

A shipped run is an ordinary run folder (``config.yaml``, ``provenance.json``, ``model/``; no checkpoints)
stored as ``flaresynth/pretrained/<folder>/``:

=====================  =====================  =========================================
name                   folder                 conditioning
=====================  =====================  =========================================
``demo:discrete``      ``demo-discrete/``     GOES class (A, B, C, M, X)
``demo:continuous``    ``demo-continuous/``   log10 XRS-B flux
``demo:embedding``     ``demo-embedding/``    class + ceVAE embedding (encoder ``demo:cevae``)
``demo:cevae``         ``demo-cevae/``        none (the ceVAE baseline; class Gaussians in latent space)
=====================  =====================  =========================================

Opening one (and listing those installed) is :mod:`flaresynth.runs`' business: ``open_run("demo:discrete")``,
:func:`flaresynth.runs.shipped_runs`. Each is made by ``flaresynth train --preset demo`` (``cevae-demo`` for the ceVAE; the conditioning set in
the config) on the dataset its ``provenance.json`` names; the folder's ``README.md`` says how.
"""

from __future__ import annotations

from pathlib import Path

#: Shipped-run name -> folder under this package.
SHIPPED: dict[str, str] = {
    "demo:discrete": "demo-discrete",
    "demo:continuous": "demo-continuous",
    "demo:embedding": "demo-embedding",
    "demo:cevae": "demo-cevae",
}
#: The prefix that marks a shipped-run name (``demo:...``) rather than a path.
PREFIX = "demo"

HERE = Path(__file__).resolve().parent

__all__ = ["SHIPPED", "PREFIX", "HERE"]
