"""How faithfully an autoencoder keeps the flare kernels: peak brightness and brightest-region area, per class.

A blurred flare is a wrong class, so the autoencoder of latent diffusion (:mod:`flaresynth.models.autoencoder`)
is judged on what decides the class, not only on a mean pixel error. On each image in DN/s, at its own
resolution, inside 1.3 solar radii (SDOMLv2's geometry, as :mod:`flaresynth.metrics.referee` measures):

* the **peak excess**: the brightest pixel minus the disk's median (the quiet level);
* the **brightest-region area**: pixels of the connected region around the peak standing above half of the
  peak excess (the referee's definition, at full resolution).

:func:`reconstruction_errors` compares originals and reconstructions per class: the peak error in dex
(log10 of 1 + excess; median of the absolute error, and the median signed error, negative when the
reconstruction is dimmer), the relative area error (median of |area_rec − area| / area, and signed), and the
mean absolute error in model space [-1, 1].
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import label

from flaresynth.errors import FlaresynthError
from flaresynth.metrics.referee import RSUN_FRACTION


def _geometry(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(xx - c, yy - c) / (RSUN_FRACTION * size)
    return r < 0.98, r < 1.3


def kernel_stats(images_dn_per_s) -> tuple[np.ndarray, np.ndarray]:
    """Peak excess (DN/s) and brightest-region area (pixels) of (N, H, W) images in DN/s (module docstring)."""
    arr = np.asarray(images_dn_per_s, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2]:
        raise FlaresynthError(f"kernel_stats: images of shape {arr.shape}, expected (N, S, S) in DN/s")
    disk, inside = _geometry(arr.shape[1])
    peaks, areas = np.zeros(len(arr)), np.zeros(len(arr))
    for i, img in enumerate(np.nan_to_num(arr)):
        excess = np.where(inside, img - np.median(img[disk]), 0.0)
        peak = float(excess.max())
        if peak <= 0:
            continue
        groups, _ = label(excess > 0.5 * peak)
        peaks[i], areas[i] = peak, float((groups == groups.flat[int(np.argmax(excess))]).sum())
    return peaks, areas


def reconstruction_errors(real, rec, labels, classes, transforms, channel: int = 0) -> dict:
    """Per-class (and ``all``) flare-kernel fidelity of reconstructions ``rec`` of images ``real`` in one channel.

    ``real``, ``rec``: (N, C, S, S) in model space; ``labels``: class index per image; ``transforms``: the
    per-channel intensity transforms; ``channel``: the index of the channel measured. Each entry: ``n``,
    ``peak_error_dex`` and ``peak_bias_dex``, ``area_error`` and ``area_bias`` (relative), ``l1`` (of that channel).
    """
    real, rec = np.asarray(real, dtype=np.float32), np.asarray(rec, dtype=np.float32)
    labels = np.asarray(labels)
    if real.shape != rec.shape or real.ndim != 4 or len(labels) != len(real):
        raise FlaresynthError(f"reconstruction_errors: shapes {real.shape}, {rec.shape} and {len(labels)} labels differ")
    inv = transforms[channel].inverse
    p_real, a_real = kernel_stats(inv(real[:, channel]))
    p_rec, a_rec = kernel_stats(inv(rec[:, channel]))
    d_peak = np.log10(1.0 + p_rec) - np.log10(1.0 + p_real)
    d_area = (a_rec - a_real) / np.maximum(a_real, 1.0)
    l1 = np.abs(rec[:, channel] - real[:, channel]).reshape(len(real), -1).mean(1)
    out = {}
    for name, sel in [("all", np.ones(len(real), bool))] + [(c, labels == k) for k, c in enumerate(classes)]:
        if not sel.any():
            continue
        out[name] = {
            "n": int(sel.sum()),
            "peak_error_dex": round(float(np.median(np.abs(d_peak[sel]))), 4),
            "peak_bias_dex": round(float(np.median(d_peak[sel])), 4),
            "area_error": round(float(np.median(np.abs(d_area[sel]))), 4),
            "area_bias": round(float(np.median(d_area[sel])), 4),
            "l1": round(float(l1[sel].mean()), 5),
        }
    return out


def format_table(errors: dict) -> str:
    """A markdown table of :func:`reconstruction_errors` (one row per class)."""
    lines = ["| class | n | peak error (dex) | peak bias (dex) | area error | area bias | L1 |",
             "|---|---|---|---|---|---|---|"]
    for c, e in errors.items():
        lines.append(f"| {c} | {e['n']} | {e['peak_error_dex']:.3f} | {e['peak_bias_dex']:+.3f} | "
                     f"{e['area_error']:.2f} | {e['area_bias']:+.2f} | {e['l1']:.4f} |")
    return "\n".join(lines)


__all__ = ["kernel_stats", "reconstruction_errors", "format_table"]
