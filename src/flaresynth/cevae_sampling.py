"""The ceVAE as a class-conditional baseline generator: per-class latent Gaussians, decoded.

``flaresynth sample --run RUN`` on a ceVAE run (``kind: cevae``) comes here (:func:`sample_cevae`); it writes
the same samples folder as the DDPM sampler (:func:`flaresynth.samples.write_samples`: float32 model-space
array, ``samples.csv`` with ``label``/``requested_flux``/``seed``, manifest, FITS files in DN/s with the DDPM
sampler's AIA-like header, PNG grid), so evaluation treats both generators alike.

Requests are those of the DDPM sampler (:func:`flaresynth.sampling.build_requests`): classes of the run's
scheme, or XRS-B fluxes, which use the Gaussian of the flux's class (the ceVAE has no continuous condition).
Image i draws its latent z = m_k + L_k ε from N(m_k, Σ_k) of its class k (fitted on the training latents at the
end of training, ``RUN/model/latent_classes.npz``; see :mod:`flaresynth.models.cevae`) with ε from
``torch.Generator().manual_seed(seed + i)``, then decodes z and clips to [-1, 1]. So an image depends on its
seed only, not on its batch (up to the last bits of the batched decoder).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from flaresynth import __version__
from flaresynth.errors import FlaresynthError
from flaresynth.models.cevae import LATENT_FILE, CeVAE, ClassGaussians, decode, load_cevae

#: What the manifest and the FITS headers call this sampler.
SAMPLER_NAME = "cevae-class-gaussian"


@dataclass
class CevaeRun:
    """A trained ceVAE run opened for sampling (the fields :func:`~flaresynth.sampling.build_requests` reads)."""

    path: Path
    model: CeVAE
    meta: dict
    gaussians: ClassGaussians
    device: torch.device

    kind = "cevae"

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.meta["classes"])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.model.in_channels, self.model.sample_size, self.model.sample_size)

    def transforms(self):
        """One intensity transform per channel (model space <-> DN/s)."""
        from flaresynth.transforms import IntensityTransform

        t = self.meta["transform"]
        items = t if isinstance(t, list) else [t] * self.image_shape[0]
        return [IntensityTransform.from_dict(d, source=str(self.path / "model" / "flaresynth.json")) for d in items]


def load_cevae_run(run: str | Path, device: str | None = None) -> CevaeRun:
    """Open a ceVAE run folder (or its model folder) for sampling: EMA weights and class Gaussians."""
    from flaresynth.sampling import pick_device

    dev = pick_device(device)
    model, meta, folder = load_cevae(run, dev)
    gauss = ClassGaussians.load(folder / LATENT_FILE)
    if tuple(gauss.classes) != tuple(meta["classes"]):
        raise FlaresynthError(f"{folder / LATENT_FILE}: classes {gauss.classes} differ from the model's {meta['classes']}")
    return CevaeRun(path=Path(run), model=model, meta=meta, gaussians=gauss, device=dev)


def latents(run: CevaeRun, table: pd.DataFrame) -> np.ndarray:
    """(N, z_dim) float64 latents of a request table: row i from its class's Gaussian and its seed."""
    z = np.zeros((len(table), run.gaussians.dim))
    flux_class = table["flux_class"].to_numpy()
    seeds = table["seed"].to_numpy()
    for c in dict.fromkeys(flux_class):
        rows = np.flatnonzero(flux_class == c)
        z[rows] = run.gaussians.sample(run.gaussians.index(str(c)), seeds[rows])
    return z


def generate_cevae(run: CevaeRun, table: pd.DataFrame, batch_size: int | None = None) -> np.ndarray:
    """Images for a request table: float32 (N, C, H, W) in [-1, 1]."""
    if batch_size is not None and batch_size < 1:
        raise FlaresynthError(f"--batch-size {batch_size!r}: expected a whole number >= 1")
    z = torch.from_numpy(latents(run, table)).float()
    return decode(run.model, z, run.device, batch_size=batch_size or 64).numpy()


def sample_cevae(run: str | Path, out: str | Path, classes=None, fluxes=None, per_class: int = 8, seed: int = 0,
                 batch_size: int | None = None, device: str | None = None, fits: bool = True, grid: bool = True,
                 overwrite: bool = False) -> Path:
    """Generate images from a ceVAE run and write a samples folder; returns its path.

    Parameters as :func:`flaresynth.sampling.sample` (which dispatches here for a ceVAE run); there is no
    sampler, step count or guidance.
    """
    from flaresynth.samples import write_samples
    from flaresynth.sampling import NOMINAL_DATE_OBS, build_requests, image_writer

    out = Path(out)
    if out.exists() and not overwrite:
        raise FlaresynthError(f"{out}: exists; choose another --out (or pass overwrite)")
    model = load_cevae_run(run, device)
    table = build_requests(model, classes, fluxes, per_class, seed)
    images = generate_cevae(model, table, batch_size)
    model_id = model.meta.get("model_id", model.path.name)
    channels = list(model.meta.get("channels") or ["171A"])
    header = {
        "SAMPLER": (SAMPLER_NAME, "ceVAE: class latent Gaussian, decoded"),
        "NSTEPS": (1, "one decoder pass"),
        "CONDKIND": ("cevae", "generator: ceVAE baseline"),
    }
    extra = image_writer(images, table, model.transforms(), channels, model.meta["scheme"], model_id,
                         lambda row: header, f"{model_id} | ceVAE class-Gaussian latents", fits=fits, grid=grid)

    manifest = {
        "generator": "flaresynth-cevae",
        "classes": list(model.classes),
        "scheme": model.meta["scheme"],
        "transform": model.meta["transform"],
        "channels": channels,
        "image_size": int(model.image_shape[-1]),
        "sampler": SAMPLER_NAME,
        "steps": 1,
        "guidance": None,
        "seed": int(seed),
        "per_class": int(per_class),
        "model_id": model_id,
        "run": str(model.path),
        "conditioning": "cevae",
        "latent_classes": model.gaussians.summary(),
        "ema_weights": bool(model.meta.get("ema_weights", True)),
        "date_obs": f"{NOMINAL_DATE_OBS} (nominal J2000 epoch; synthetic images have no observation time)",
        "device": str(model.device),
        "flaresynth_version": __version__,
    }
    return write_samples(out, images, table, manifest, extra=extra, overwrite=overwrite)


def overview_figure(run: str | Path, data: str | Path, path: str | Path, per_class: int = 6, split: str = "test",
                    seed: int = 0) -> Path:
    """PNG of what a ceVAE does, per class: real images of ``split``, their reconstructions (decoded latent
    means), and class-Gaussian samples (seeds ``seed``..). Classes without real images in the split are left
    out of the first two rows."""
    from flaresynth.dataset import open_dataset
    from flaresynth.models.cevae import encode_means
    from flaresynth.sampling import build_requests, save_grid
    from flaresynth.train import channel_transforms
    from flaresynth.transforms import resample

    model = load_cevae_run(run)
    ds = open_dataset(data)
    idx = ds.split_indices(split)
    labels = np.asarray(ds.labels["label"].astype(str))[idx]
    rng = np.random.default_rng(seed)
    images, rows = [], []
    for c in model.classes:
        have = idx[labels == c]
        if len(have):
            pick = np.sort(rng.choice(have, min(per_class, len(have)), replace=False))
            real = resample(np.asarray(ds.images[pick]), channel_transforms(ds), model.image_shape[-1])
            rec = decode(model.model, encode_means(model.model, torch.from_numpy(real), model.device), model.device)
            images += [real, rec.numpy()]
            rows += [f"{c} real"] * len(pick) + [f"{c} recon."] * len(pick)
        table = build_requests(model, [c], None, per_class, seed)
        images.append(generate_cevae(model, table))
        rows += [f"{c} sample"] * per_class
    save_grid(np.concatenate(images), rows, Path(path),
              title=f"ceVAE: real {split} / reconstruction / class-Gaussian sample")
    return Path(path)


__all__ = ["CevaeRun", "SAMPLER_NAME", "load_cevae_run", "latents", "generate_cevae", "sample_cevae",
           "overview_figure"]
