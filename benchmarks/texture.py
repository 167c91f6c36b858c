"""Texture of the simulated 171 Å Sun against the real AIA frame sunpy ships; prints JSON.

The real frame is ``aia_171_level1.fits`` (sunpy.data.test, 2011-02-15 00:00 UTC, 128 px), brought to
SDOMLv2's geometry at 128 px by :func:`flaresynth.sources.aia_fits.read_aia_fits` (DN/s). Simulated frames:
``--frames`` frames of a simulated Sun around the same date (all confounders, seed ``--seed``), one a day,
rendered at 512 px and block-averaged to 128 px. Statistics, each for the real frame and per simulated frame:

* **radial profile**: median DN/s in annuli of the solar radius; ``radial_max_dex`` = the largest |log10
  ratio| simulated/real over the annuli, ``offlimb_disk_dex`` = the same for the ratio of the 1.05-1.1 R☉
  median to the disk median;
* **histogram**: two-sample Kolmogorov-Smirnov distance between the on-disk (r < 0.95 R☉) log10 intensities;
* **power spectrum**: slope of the azimuthally averaged power spectrum of the (mean-subtracted) 128-px image
  over k = 4-40 cycles per image, in log-log.

Usage: ``python benchmarks/texture.py [--frames 8] [--seed 0] [--figure docs/real_vs_simulated_171.png]``;
``--figure`` also draws the real frame beside three simulated ones (same colour map and stretch) with the
radial profiles and power spectra. Statements about the simulated Sun only.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from scipy.stats import ks_2samp
from sunpy.data.test import get_test_filepath

from flaresynth.sources.aia_fits import read_aia_fits
from flaresynth.sources.simulate.sun import SimulatedSun, deg_cor

SIZE = 128
ANNULI = ((0.0, 0.5), (0.5, 0.8), (0.8, 0.95), (0.95, 1.0), (1.0, 1.05), (1.05, 1.1), (1.1, 1.2), (1.3, 1.4))


def _radius() -> np.ndarray:
    c = (SIZE - 1) / 2.0
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    return np.hypot(xx - c, yy - c) / ((976.0 / 4.8) * SIZE / 512)


def statistics(img: np.ndarray) -> dict:
    """Radial medians, on-disk log intensities and the power-spectrum slope of one 128-px frame (DN/s)."""
    r = _radius()
    radial = [float(np.median(img[(r >= lo) & (r < hi)])) for lo, hi in ANNULI]
    disk = np.log10(np.clip(img[r < 0.95], 1.0, None))
    centred = img - img.mean()
    power = np.abs(np.fft.fftshift(np.fft.fft2(centred))) ** 2
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    k = np.hypot(xx - SIZE // 2, yy - SIZE // 2).astype(int)
    profile = np.bincount(k.ravel(), power.ravel()) / np.bincount(k.ravel())
    ks = np.arange(4, 41)
    slope = float(np.polyfit(np.log10(ks), np.log10(profile[ks]), 1)[0])
    return {"radial": radial, "disk_log": disk, "slope": slope, "spectrum": profile[1:SIZE // 2],
            "offlimb_disk": radial[5] / float(np.median(img[r < 0.95]))}


def figure(real_img: np.ndarray, sim_imgs: list[np.ndarray], real: dict, sims: list[dict], path: str) -> None:
    """The real frame beside simulated ones (sunpy's AIA 171 colour map, one log stretch), radial profiles and
    power spectra: what the numbers of :func:`main` summarise, for a reader who would rather look."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import sunpy.visualization.colormaps  # noqa: F401 - registers the sdoaia colour maps with matplotlib
    from matplotlib.colors import LogNorm

    norm = LogNorm(vmin=5.0, vmax=float(np.percentile(real_img, 99.9)))
    shown = sim_imgs[:3]
    fig, axes = plt.subplots(1, len(shown) + 3, figsize=(3.0 * (len(shown) + 3), 3.3))
    for ax, img, title in zip(axes, [real_img, *shown],
                              ["real AIA 171 Å (sunpy test file)"] + [f"simulated, day {i + 1}" for i in range(len(shown))]):
        ax.imshow(np.clip(img, 5.0, None), cmap="sdoaia171", norm=norm, origin="lower")
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()
    centres = [(lo + hi) / 2 for lo, hi in ANNULI]
    ax = axes[-2]
    for i, s in enumerate(sims):
        ax.plot(centres, s["radial"], color="tab:orange", alpha=0.5, label="simulated" if i == 0 else None)
    ax.plot(centres, real["radial"], color="k", lw=2, label="real")
    ax.set_yscale("log")
    ax.set_xlabel("r / R☉")
    ax.set_ylabel("median DN/s in annulus")
    ax.legend(fontsize=7)
    ax = axes[-1]
    k = np.arange(1, SIZE // 2)
    for i, s in enumerate(sims):
        ax.loglog(k, s["spectrum"], color="tab:orange", alpha=0.5, label="simulated" if i == 0 else None)
    ax.loglog(k, real["spectrum"], color="k", lw=2, label="real")
    ax.axvspan(4, 40, color="0.9", zorder=0)
    ax.set_xlabel("k (cycles per 128 px)")
    ax.set_ylabel("azimuthal mean power")
    ax.legend(fontsize=7)
    fig.suptitle("Simulated Sun (a testbed) against one real AIA 171 Å frame, 128 px; shaded: the slope's range",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", default=None, help="also draw real vs simulated frames into this PNG")
    args = parser.parse_args(argv)
    real_img, _ = read_aia_fits(get_test_filepath("aia_171_level1.fits"), out_size=SIZE)
    real = statistics(real_img.astype(np.float64))
    sun = SimulatedSun("2011-02-10", args.frames + 1, seed=args.seed)
    frames, sim_imgs, sim_stats = [], [], []
    for day in range(args.frames):
        when = np.array([sun.start + np.timedelta64(day, "D")])
        img = sun.render(day + 0.5, deg_cor=float(deg_cor(when)[0]))
        small = img.astype(np.float64).reshape(SIZE, 4, SIZE, 4).mean(axis=(1, 3))
        sim = statistics(small)
        sim_imgs.append(small)
        sim_stats.append(sim)
        frames.append({
            "radial_max_dex": float(np.max(np.abs(np.log10(np.array(sim["radial"]) / np.array(real["radial"]))))),
            "offlimb_disk_dex": float(abs(np.log10(sim["offlimb_disk"] / real["offlimb_disk"]))),
            "ks_disk_log_intensity": float(ks_2samp(sim["disk_log"], real["disk_log"]).statistic),
            "spectrum_slope": sim["slope"],
        })
    summary = {k: float(np.mean([f[k] for f in frames])) for k in frames[0]}
    result = {
        "real": {"file": "sunpy.data.test aia_171_level1.fits", "radial_medians_dn_s": real["radial"],
                 "annuli_rsun": ANNULI, "spectrum_slope": real["slope"]},
        "simulated_mean": summary,
        "simulated_frames": frames,
        "note": "simulated Sun only; says how close its texture is to one real frame, nothing about the real Sun",
    }
    if args.figure:
        figure(real_img.astype(np.float64), sim_imgs, real, sim_stats, args.figure)
        result["figure"] = args.figure
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
