"""Cross-channel consistency: do an image's AIA channels agree with each other as real ones do?

Each channel of a generated image can be plausible on its own while the set is not (a 94 Å flare kernel where
171 Å shows a quiet Sun). The per-channel metrics cannot see that; this one compares, class by class, the
**channel ratios in the brightest region** of generated and real images.

Brightest region (:func:`brightest_region`): each channel in DN/s is divided by its own on-disk median (its
quiet level), so every channel weighs alike whatever its DN/s scale (94 Å is ~1 % of 171 Å on a quiet Sun);
the sum of these contrasts over the channels, smoothed by a 3×3 mean, peaks at the region the channels
together make brightest (a flare, else the brightest active region). The region is the square of side
``2·w + 1`` around that peak, ``w = max(1, round(size / 32))`` (5×5 px at 64 px, ~38″ a side at SDOMLv2's
geometry: the size of an active-region core), looked for within 1.1 solar radii of the disk centre (SDOMLv2:
radius 976″ = 0.397 of the width), so limb flares count.

Ratios (:func:`region_ratios`): ``log10(mean DN/s of channel X / mean DN/s of 171 Å)`` over that region for
every channel X present besides 171 Å (94/171, 131/171, 193/171, 211/171...). Their dependence on
temperature is what makes them consistent or not (the hot lines of 94 and 131 Å rise against 171 Å in a
flare; 193/171 rises with active-region temperature; Boerner et al. 2012, Solar Physics 275, 41).

Comparison (:func:`ratio_distance`): for each class and each ratio, the 1-Wasserstein distance (in dex:
"the ratio is off by this many decades", scipy's ``wasserstein_distance``) between the two sets' values of
that class; the metric is the mean over ratios and over the classes with at least 2 images in both sets.
:func:`consistency_metric` runs it over the evaluation's resampling plan: generated against the reference
half and, at the same size, the other real half against it (the real-vs-real benchmark). A third number,
real images with channels shuffled across images of their class (:func:`shuffle_channels_within_class`, each
channel's own distribution unchanged), shows what a fully inconsistent generator would score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import uniform_filter
from scipy.stats import wasserstein_distance

from flaresynth.errors import FlaresynthError

REFERENCE_CHANNEL = "171A"
RSUN_FRACTION = (976.0 / 4.8) / 512.0  # solar radius / image width (SDOMLv2)
SEARCH_RADIUS = 1.1  # solar radii: limb flares stand partly above the limb


def ratio_names(channels: Sequence[str]) -> list[str]:
    """Names of the ratios measured for ``channels`` (``"94A/171A"``...); empty without 171 Å or another channel."""
    if REFERENCE_CHANNEL not in channels:
        return []
    return [f"{c}/{REFERENCE_CHANNEL}" for c in channels if c != REFERENCE_CHANNEL]


def _disk(size: int, radius: float) -> np.ndarray:
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size]
    return np.hypot(xx - c, yy - c) < radius * RSUN_FRACTION * size


def brightest_region(dn: np.ndarray) -> tuple[np.ndarray, int]:
    """Centre (row, col) of each image's brightest region and the half-width ``w`` of its square (module docstring).

    ``dn``: (N, C, H, W) intensities in DN/s (positive, as the inverse intensity transform gives them).
    """
    dn = np.asarray(dn, dtype=np.float64)
    n, _, h, w = dn.shape
    if h != w or h < 8:
        raise FlaresynthError(f"channel ratios: images of shape {dn.shape[1:]}: expected square images of at least 8 px")
    on_disk = _disk(h, 1.0)
    search = _disk(h, SEARCH_RADIUS)
    quiet = np.median(dn[:, :, on_disk], axis=-1)[..., None, None]  # (N, C, 1, 1)
    contrast = (dn / np.maximum(quiet, 1e-12)).sum(axis=1)  # (N, H, W)
    smooth = uniform_filter(contrast, size=(1, 3, 3), mode="nearest")
    smooth[:, ~search] = -np.inf
    flat = smooth.reshape(n, -1).argmax(axis=1)
    return np.stack(np.unravel_index(flat, (h, w)), axis=1), max(1, int(round(h / 32)))


def region_ratios(dn: np.ndarray, channels: Sequence[str]) -> np.ndarray:
    """(N, R) log10 ratios of each channel to 171 Å in each image's brightest region (order of :func:`ratio_names`)."""
    names = ratio_names(channels)
    dn = np.asarray(dn, dtype=np.float64)
    if dn.ndim != 4 or dn.shape[1] != len(channels):
        raise FlaresynthError(f"channel ratios: images of shape {dn.shape}: expected (N, {len(channels)}, H, W)")
    if not names:
        return np.zeros((len(dn), 0))
    centres, half = brightest_region(dn)
    h = dn.shape[-1]
    means = np.empty(dn.shape[:2])
    for i, (r, c) in enumerate(centres):
        box = dn[i, :, max(r - half, 0) : min(r + half + 1, h), max(c - half, 0) : min(c + half + 1, h)]
        means[i] = box.mean(axis=(-2, -1))
    ref = list(channels).index(REFERENCE_CHANNEL)
    others = [k for k, ch in enumerate(channels) if ch != REFERENCE_CHANNEL]
    return np.log10(np.maximum(means[:, others], 1e-12)) - np.log10(np.maximum(means[:, [ref]], 1e-12))


def ratio_distance(ratios_a, labels_a, ratios_b, labels_b, n_classes: int, names: Sequence[str]) -> tuple[float, dict]:
    """Mean 1-Wasserstein distance (dex) between two sets' ratios, per class and ratio (module docstring).

    Returns (mean, ``{class index: {ratio name: distance}}``); NaN when no class has 2 images in both sets.
    """
    ratios_a, ratios_b = np.asarray(ratios_a), np.asarray(ratios_b)
    labels_a, labels_b = np.asarray(labels_a), np.asarray(labels_b)
    per: dict = {}
    values = []
    for k in range(n_classes):
        a, b = ratios_a[labels_a == k], ratios_b[labels_b == k]
        if len(a) < 2 or len(b) < 2:
            continue
        per[k] = {name: float(wasserstein_distance(a[:, j], b[:, j])) for j, name in enumerate(names)}
        values += list(per[k].values())
    return (float(np.mean(values)) if values else float("nan")), per


def shuffle_channels_within_class(images: np.ndarray, labels, seed: int = 0) -> np.ndarray:
    """Copy of ``images`` (N, C, H, W) whose every channel is permuted independently among the images of the same
    class: each channel's own distribution per class is unchanged, the channels of one image no longer belong
    together (the "inconsistent generator" of the module docstring)."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    out = images.copy()
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        if len(idx) < 2:
            continue
        for c in range(images.shape[1]):
            perm = rng.permutation(idx)
            # a derangement where possible, so no image keeps its own channel by chance
            while len(idx) > 1 and np.any(perm == idx):
                perm = rng.permutation(idx)
            out[idx, c] = images[perm, c]
    return out


def consistency_metric(real_ratios, real_labels, gen_ratios, gen_labels, plan, classes: Sequence[str],
                       names: Sequence[str], shuffled_ratios=None) -> dict:
    """The cross-channel metric over an evaluation's resampling ``plan`` (indices into the real and generated sets).

    Returns ``{"value", "std", "benchmark", "benchmark_std", "shuffled", "shuffled_std", "per_class",
    "per_ratio"}``: mean ± std over resamplings of :func:`ratio_distance` of the generated draw, of the other real
    half (benchmark) and, when ``shuffled_ratios`` (ratios of the real images with channels shuffled within their
    class, aligned with ``real_ratios``) is given, of the benchmark half shuffled, each against the reference half.
    """
    k = len(classes)
    runs = {"generated": [], "benchmark": [], "shuffled": []}
    per = {"generated": [], "benchmark": []}
    for p in plan:
        ref, bench, gen = p["reference"], p["benchmark"], p["generated"]
        value, detail = ratio_distance(real_ratios[ref], real_labels[ref], gen_ratios[gen], gen_labels[gen], k, names)
        runs["generated"].append(value)
        per["generated"].append(detail)
        value, detail = ratio_distance(real_ratios[ref], real_labels[ref], real_ratios[bench], real_labels[bench], k, names)
        runs["benchmark"].append(value)
        per["benchmark"].append(detail)
        if shuffled_ratios is not None:
            runs["shuffled"].append(ratio_distance(real_ratios[ref], real_labels[ref], shuffled_ratios[bench],
                                                   real_labels[bench], k, names)[0])

    def stat(v):
        v = np.asarray(v, dtype=np.float64)
        v = v[np.isfinite(v)]
        if not len(v):
            return None, None
        return float(v.mean()), (float(v.std()) if len(v) > 1 else None)

    def table(details):
        """Mean over resamplings of each (class, ratio) distance."""
        out: dict = {}
        for d in details:
            for c, row in d.items():
                for name, value in row.items():
                    out.setdefault(classes[c], {}).setdefault(name, []).append(value)
        return {c: {n: float(np.mean(v)) for n, v in row.items()} for c, row in out.items()}

    g, b, s = stat(runs["generated"]), stat(runs["benchmark"]), stat(runs["shuffled"])
    per_class = {"generated": table(per["generated"]), "benchmark": table(per["benchmark"])}
    per_ratio = {which: {n: float(np.mean([row[n] for row in t.values()])) if t else None for n in names}
                 for which, t in per_class.items()}
    return {"value": g[0], "std": g[1], "benchmark": b[0], "benchmark_std": b[1], "shuffled": s[0],
            "shuffled_std": s[1], "per_class": per_class, "per_ratio": per_ratio, "ratios": list(names),
            "per_resampling": runs}
