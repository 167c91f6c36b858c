"""An independent physical referee: the GOES XRS-B flux an observer would read off a 171 Å image.

It uses nothing of the simulated Sun (no function, constant or template of it): only what anyone could measure
on an SDOMLv2-like image in DN/s, and a relation to the X-ray flux fitted on labelled images it is then not
scored on (:func:`fit_referee`; :mod:`flaresynth.evaluate` fits it on the dataset's training split and scores
the test split and the generated images). This is the observers' approach of relating AIA EUV brightness to
GOES flux by regression on past events, rather than inverting a forward model.

What it measures (:func:`measure`), on the image brought to 32×32 by an area mean, clipped to [5, 3500] DN/s
(the range the model transform keeps), inside 1.3 solar radii (SDOMLv2's geometry: radius 976″ at
4.8″/px at 512 px, disk centred):

* the disk's median (the quiet level) and the **integrated excess** over it (sum of the positive excess, in
  DN/s·px² at 512 px, so sizes agree);
* the **brightest region**: the peak excess, and the area and integrated excess of the connected region
  around the peak standing above half of it;
* the **excess above 4× the quiet level** (the bright kernels' share).

The map to log10 flux is a gradient-boosted regression on these (log) features (:func:`fit_referee`).
On the simulated Sun its F1 on the real test frames is an upper bound of nothing in particular: it says how
well the label can be read from the image at all, with the confounders (limb flares, EUV delays and scatter,
exposure control) making that harder, as on real AIA data.

**Hot channels.** Where a dataset holds 94 Å and/or 131 Å (Fe XVIII at ~7 MK, Fe XXI at ~11 MK: the flare
plasma itself, Boerner et al. 2012), :mod:`flaresynth.evaluate` fits a second referee the same way on those
channels (:func:`fit_referee` on (N, K, H, W) images: the same :func:`measure` features of each hot channel,
clipped to that channel's own model range, side by side), so the X-ray flux is also read where a flare is
brightest, not only through 171 Å's late, indirect response.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import label
from sklearn.ensemble import HistGradientBoostingRegressor

from flaresynth.errors import FlaresynthError

GRID = 32
CLIP = (5.0, 3500.0)
RSUN_FRACTION = (976.0 / 4.8) / 512.0  # solar radius / image width (SDOMLv2)
N_FEATURES = 6


def _to_grid(images: np.ndarray, clip=CLIP) -> np.ndarray:
    """(N, H, W) -> (N, GRID, GRID) area mean (exact for fractional factors), clipped to ``clip``."""
    n, h, w = images.shape
    if (h, w) != (GRID, GRID):
        images = _area_matrix(h, GRID) @ images @ _area_matrix(w, GRID).T
    return np.clip(images, *clip)


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of an area-weighted mean (bilinear-like spreading when enlarging)."""
    s = n_in / n_out
    lo = np.arange(n_out)[:, None] * s
    j = np.arange(n_in)[None, :]
    m = np.clip(np.minimum(lo + s, j + 1) - np.maximum(lo, j), 0.0, None)
    return m / m.sum(axis=1, keepdims=True)


def _geometry() -> tuple[np.ndarray, np.ndarray]:
    c = (GRID - 1) / 2.0
    yy, xx = np.mgrid[0:GRID, 0:GRID]
    r = np.hypot(xx - c, yy - c) / (RSUN_FRACTION * GRID)
    return r < 0.98, r < 1.3


def measure(images_dn_per_s, clip=CLIP) -> np.ndarray:
    """(N, 6) log10 features of (N, H, W) or (H, W) images in DN/s: integrated excess, peak excess, area and
    excess of the brightest region, excess above 4× the quiet level, quiet level. See the module docstring.

    ``clip``: the (lo, hi) DN/s range kept, 171 Å's by default; another channel passes its own (its model
    transform's range), so a faint channel such as 94 Å keeps its quiet level."""
    arr = np.asarray(images_dn_per_s, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or min(arr.shape[1:]) < 8:
        raise FlaresynthError(f"referee: image of shape {arr.shape}: expected (H, W) or (N, H, W) in DN/s")
    arr = np.nan_to_num(arr, nan=clip[0], posinf=clip[1], neginf=clip[0])
    disk, inside = _geometry()
    px_area = (512.0 / GRID) ** 2
    out = np.empty((arr.shape[0], N_FEATURES))
    for i, img in enumerate(_to_grid(arr, clip)):
        quiet = float(np.median(img[disk]))
        excess = np.where(inside, img - quiet, 0.0)
        peak = float(excess.max())
        groups, _ = label(excess > 0.5 * peak) if peak > 0 else (np.zeros_like(excess, int), 0)
        brightest = groups == groups.flat[int(np.argmax(excess))] if peak > 0 else np.zeros_like(inside)
        out[i] = (
            np.log10(1.0 + px_area * np.clip(excess, 0, None).sum()),
            np.log10(1.0 + max(peak, 0.0)),
            np.log10(1.0 + brightest.sum()),
            np.log10(1.0 + px_area * np.clip(excess[brightest], 0, None).sum()),
            np.log10(1.0 + px_area * np.clip(img - 4.0 * quiet, 0, None)[inside].sum()),
            np.log10(quiet),
        )
    return out


def measure_channels(images_dn_per_s, clips=None) -> np.ndarray:
    """:func:`measure` of each channel of (N, K, H, W) images in DN/s, side by side: (N, 6·K). ``clips``: one
    (lo, hi) range per channel (default 171 Å's for every channel). (N, H, W) input is one channel."""
    arr = np.asarray(images_dn_per_s)
    if arr.ndim != 4:
        return measure(arr, (clips or [CLIP])[0])
    clips = list(clips) if clips is not None else [CLIP] * arr.shape[1]
    if len(clips) != arr.shape[1]:
        raise FlaresynthError(f"referee: {len(clips)} clip ranges for {arr.shape[1]} channels")
    return np.hstack([measure(arr[:, k], clips[k]) for k in range(arr.shape[1])])


@dataclass
class Referee:
    """A fitted map from the measured features (:func:`measure`, one block per channel) to log10 XRS-B flux."""

    model: HistGradientBoostingRegressor
    n_fit: int
    clips: list | None = None  # per channel (lo, hi) DN/s; None: one 171 Å-like channel

    def estimate_flux(self, images_dn_per_s) -> np.ndarray:
        """XRS-B flux (W/m²) for (N, H, W) images in DN/s, or (N, K, H, W) for a referee fitted on K channels
        (any size: brought to 32×32 by an area mean)."""
        return 10.0 ** np.clip(self.model.predict(measure_channels(images_dn_per_s, self.clips)), -9.0, -2.0)


def fit_referee(images_dn_per_s, flux, clips=None) -> Referee:
    """Fit the referee on images (DN/s) with known XRS-B fluxes (W/m²; non-finite or <= 0 are left out).

    ``images_dn_per_s``: (N, H, W) one channel, or (N, K, H, W) several (e.g. the hot 94 and 131 Å channels),
    each measured alike with its own ``clips`` range and the features put side by side.
    The map is scikit-learn's histogram gradient-boosted trees (least squares on log10 flux, fixed seed; leaves
    of 20 images, or a quarter of the images below 80, so a small fit is not a constant): it
    learns the quiet and active-region background and the flare kernels' contribution without a formula
    chosen for this simulator.
    """
    flux = np.asarray(flux, dtype=np.float64)
    ok = np.isfinite(flux) & (flux > 0)
    if ok.sum() < 10:
        raise FlaresynthError(f"referee: {int(ok.sum())} labelled images to fit on; need at least 10")
    clips = [tuple(c) for c in clips] if clips is not None else None
    feats = measure_channels(np.asarray(images_dn_per_s)[ok], clips)
    # scikit-learn's default leaf of 20 images allows no split below 40 and would fit a constant: small fits get
    # leaves of a quarter of their images (at least 2, as 10 images are required above; from 80 on, the default)
    leaf = min(20, int(ok.sum()) // 4)
    model = HistGradientBoostingRegressor(min_samples_leaf=leaf, random_state=0).fit(feats, np.log10(flux[ok]))
    return Referee(model, int(ok.sum()), clips)
