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

Each is made by ``flaresynth train --preset demo`` (``cevae-demo`` for the ceVAE; the conditioning set in
the config) on the dataset its ``provenance.json`` names; the folder's ``README.md`` says how.
"""

from __future__ import annotations

from pathlib import Path

from flaresynth.errors import FlaresynthError

#: Shipped-run name -> folder under this package.
SHIPPED: dict[str, str] = {
    "demo:discrete": "demo-discrete",
    "demo:continuous": "demo-continuous",
    "demo:embedding": "demo-embedding",
    "demo:cevae": "demo-cevae",
}

HERE = Path(__file__).resolve().parent


def available() -> dict[str, Path]:
    """Shipped runs present in this installation: name -> run folder."""
    found = {}
    for name, folder in SHIPPED.items():
        path = HERE / folder
        if (path / "model" / "flaresynth.json").is_file():
            found[name] = path
    return found


def is_shipped_name(run: str) -> bool:
    """True for strings of the form ``demo:...`` (a shipped-run name rather than a path)."""
    prefix, sep, _ = str(run).partition(":")
    return bool(sep) and prefix == "demo"


def resolve(name: str) -> Path:
    """Folder of the shipped run ``name``; a one-line error listing the shipped runs when it is absent."""
    have = available()
    if name in have:
        return have[name]
    listing = ", ".join(sorted(have)) if have else "none are installed yet"
    if name not in SHIPPED:
        raise FlaresynthError(f"--run {name}: unknown shipped run (names: {', '.join(SHIPPED)}; installed: {listing})")
    raise FlaresynthError(
        f"--run {name}: no shipped weights in {HERE / SHIPPED[name]} (shipped runs installed: {listing}); "
        "train a run with `flaresynth train --preset demo` and pass its folder"
    )


__all__ = ["SHIPPED", "available", "is_shipped_name", "resolve"]
