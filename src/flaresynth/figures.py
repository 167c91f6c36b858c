"""Figures of an evaluation: what the numbers in metrics.md are about, for a person to look at.

* :func:`class_grid` — per class, real images beside generated ones, in the channel's AIA colour map
  (sunpy's ``sdoaia171`` for 171 Å) on the model's log scale ([-1, 1] = [log10 5, log10 3500] DN/s for 171 Å);
  for several channels one grid per channel and an RGB composite (:func:`rgb_composite`: red 211, green 193,
  blue 171 Å, as in the SDO press images);
* :func:`channel_class_grid` — several channels: per class one real and one generated image side by side in
  every channel (each channel on its own fixed scale, shared by real and generated) and the RGB composite, the
  images picked by :func:`channel_class_layout`;
* :func:`std_maps` — per class, the per-pixel standard deviation over the images of that class, real above
  generated (the "Std A … Std X" slides of Ramunno's talk): where a generator varies too little (mode
  collapse) or in the wrong places shows here;
* :func:`tsne_figure` — t-SNE (scikit-learn) of real and generated feature vectors, coloured by class, real as
  dots and generated as crosses;
* :func:`class_distribution` — images per class in each split of the dataset, and generated;
* :func:`save_grid` — the grid of a samples folder and of the training-time snapshots: one row per label.

Figures are drawn on :class:`matplotlib.figure.Figure` objects (no pyplot state, no window) and saved as PNG.
Every function returns the path it wrote (``channel_class_figure`` the figure itself, for inspection).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import sunpy.visualization.colormaps  # noqa: F401  (registers the sdoaia* colour maps with matplotlib)
from matplotlib.figure import Figure

CLASS_COLOURS = ("#4c72b0", "#55a868", "#c4b000", "#dd8452", "#c44e52", "#8172b3", "#937860", "#da8bc3")


def aia171_cmap():
    """sunpy's AIA 171 Å colour map."""
    return matplotlib.colormaps["sdoaia171"]


def channel_cmap(channel: str = "171A"):
    """sunpy's AIA colour map of ``channel`` (``"94A"`` -> ``sdoaia94``); 171 Å's for a channel it lacks."""
    digits = "".join(ch for ch in str(channel) if ch.isdigit())
    name = f"sdoaia{digits or 171}"
    return matplotlib.colormaps[name if name in matplotlib.colormaps else "sdoaia171"]


#: Channels of the RGB composite (red, green, blue), as in the SDO press images.
RGB_CHANNELS = ("211A", "193A", "171A")


def main_channel(channels: Sequence[str]) -> tuple[int, str]:
    """Index and name of the channel a one-channel figure of several shows: 171 Å (the paper's) by name, else
    the first."""
    channels = list(channels) or ["171A"]
    c = channels.index("171A") if "171A" in channels else 0
    return c, channels[c]


def rgb_composite(images, channels: Sequence[str], rgb: Sequence[str] = RGB_CHANNELS) -> np.ndarray:
    """(N, H, W, 3) RGB in [0, 1] of model-space images (N, C, H, W): red, green, blue = the ``rgb`` channels.

    Scaling: each channel's model space (its own log10 DN/s range mapped to [-1, 1] by its intensity transform)
    taken linearly to [0, 1], ``(x + 1) / 2``, clipped. So each colour is a log stretch between that channel's
    transform limits (e.g. 211 Å 7-3500 DN/s, 193 Å 20-5500, 171 Å 5-3500): the same per-channel log scaling
    the SDO press composites use, with fixed limits rather than per-image ones, so real and generated images
    are drawn alike."""
    images = np.asarray(images, dtype=np.float32)
    pos = [list(channels).index(c) for c in rgb]
    return np.clip((np.moveaxis(images[:, pos], 1, -1) + 1.0) / 2.0, 0.0, 1.0)


def _panel(ax, images, i: int, channel: int = 0, cmap=None, rgb_channels: Sequence[str] | None = None, **kw) -> None:
    """Draw image ``i`` of model-space ``images`` (N, C, H, W) on ``ax``: channel ``channel`` in ``cmap`` on the
    fixed scale [-1, 1] (the channel's transform limits, so every image of a channel is drawn alike), or with
    ``rgb_channels`` (the names of all the images' channels) the composite of :func:`rgb_composite`."""
    if rgb_channels is not None:
        ax.imshow(rgb_composite(images[i : i + 1], rgb_channels)[0], origin="lower", **kw)
    else:
        ax.imshow(np.asarray(images[i, channel]), cmap=cmap, vmin=-1, vmax=1, origin="lower", **kw)


def _figure(width: float, height: float):
    return Figure(figsize=(width, height), layout="constrained")


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _pick(labels: np.ndarray, c: int, n: int, rng) -> np.ndarray:
    idx = np.flatnonzero(labels == c)
    return np.sort(rng.choice(idx, min(n, len(idx)), replace=False)) if len(idx) else idx


def class_grid(real, real_labels, generated, generated_labels, classes: Sequence[str], path, n_per_class: int = 4,
               seed: int = 0, channel: int = 0, channel_name: str | None = None,
               rgb_channels: Sequence[str] | None = None) -> Path:
    """Rows = classes; left ``n_per_class`` random real images, right as many generated ones: channel ``channel``
    in its AIA colour map (``channel_name``, default 171 Å's), or with ``rgb_channels`` (the names of all the
    images' channels) the 211/193/171 Å composite of :func:`rgb_composite`. The same seed picks the same images."""
    rng = np.random.default_rng(seed)
    cmap = channel_cmap(channel_name or "171A")
    k, n = len(classes), n_per_class
    fig = _figure(1.3 * (2 * n) + 0.6, 1.35 * k + 0.5)
    axes = fig.subplots(k, 2 * n, squeeze=False)
    for row, c in enumerate(classes):
        for side, (images, labels) in enumerate(((real, real_labels), (generated, generated_labels))):
            chosen = _pick(np.asarray(labels), row, n, rng)
            for j in range(n):
                ax = axes[row, side * n + j]
                ax.set_xticks([])
                ax.set_yticks([])
                if j < len(chosen):
                    _panel(ax, images, chosen[j], channel, cmap, rgb_channels)
                else:
                    ax.set_facecolor("0.9")
                if row == 0 and j == 0:
                    ax.set_title("real" if side == 0 else "generated", loc="left", fontsize=10)
            axes[row, 0].set_ylabel(c, rotation=0, labelpad=14, fontsize=11)
    what = ("RGB = 211/193/171 Å" if rgb_channels is not None else channel_name) or ""
    fig.suptitle("Real (left) and generated (right) images per class" + (f", {what}" if what else ""))
    return _save(fig, path)


#: Column name of the RGB composite in :func:`channel_class_layout`.
RGB_COLUMN = "RGB 211/193/171"


def channel_class_layout(real_labels, generated_labels, classes: Sequence[str], channels: Sequence[str],
                         seed: int = 0) -> dict:
    """What :func:`channel_class_grid` shows: ``rows`` (the classes), ``columns`` (the channels, then
    :data:`RGB_COLUMN` when 211, 193 and 171 Å are all present; each column a real and a generated panel) and, per
    row, the index of the ``real`` and the ``generated`` image drawn (picked at random with ``seed``; ``None``
    when the class has no image in that set)."""
    rng = np.random.default_rng(seed)
    columns = list(channels) + ([RGB_COLUMN] if set(RGB_CHANNELS) <= set(channels) else [])
    picks: dict = {"real": [], "generated": []}
    for row in range(len(classes)):
        for side, labels in (("real", real_labels), ("generated", generated_labels)):
            chosen = _pick(np.asarray(labels), row, 1, rng)
            picks[side].append(int(chosen[0]) if len(chosen) else None)
    return {"rows": list(classes), "columns": columns, "channels": list(channels), **picks}


def channel_class_grid(real, generated, layout: dict, path, ranges: dict | None = None) -> Path:
    """Rows = classes, one column pair per channel (real left, generated right) and one for the RGB composite,
    as :func:`channel_class_layout` laid out (:func:`channel_class_figure`); saved to ``path``."""
    return _save(channel_class_figure(real, generated, layout, ranges), path)


def channel_class_figure(real, generated, layout: dict, ranges: dict | None = None) -> Figure:
    """The figure of :func:`channel_class_grid`: one subfigure per column of ``layout``, each with a real and a
    generated panel per class. Each channel is drawn in its AIA colour map on its own fixed scale, [-1, 1] in
    model space = its transform's [lo, hi] DN/s (``ranges``: ``{channel: (lo, hi)}``, printed over the column),
    the same for real and generated images, so brightness compares across the pair and down the rows."""
    rows, columns, channels = layout["rows"], layout["columns"], layout["channels"]
    k = len(rows)
    fig = _figure(2.0 * len(columns) + 0.5, 1.05 * k + 0.9)
    # the first column pair also holds the class names: a little wider, so its panels are as large as the others
    subs = np.atleast_1d(fig.subfigures(1, len(columns), wspace=0.02, width_ratios=[1.12] + [1.0] * (len(columns) - 1)))
    for sub, column in zip(subs, columns):
        rgb = column == RGB_COLUMN
        c = None if rgb else channels.index(column)
        cmap = None if rgb else channel_cmap(column)
        axes = sub.subplots(k, 2, squeeze=False, gridspec_kw={"wspace": 0.02, "hspace": 0.02})
        for row in range(k):
            for side, (name, images) in enumerate((("real", real), ("generated", generated))):
                ax = axes[row, side]
                ax.set_xticks([])
                ax.set_yticks([])
                i = layout[name][row]
                if i is None:
                    ax.set_facecolor("0.9")
                    ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes, fontsize=7)
                else:
                    _panel(ax, images, i, c, cmap, channels if rgb else None)
                if row == 0:
                    ax.set_title("real" if side == 0 else "generated", fontsize=8)
            if sub is subs[0]:
                axes[row, 0].set_ylabel(rows[row], rotation=0, labelpad=12, fontsize=11)
        title = f"{column[:-1]} Å"
        if rgb:
            title = "RGB composite\nred 211, green 193, blue 171 Å"
        elif ranges and column in ranges:
            lo, hi = ranges[column]
            title += f"\n{lo:g}–{hi:g} DN/s (log)"
        sub.suptitle(title, fontsize=9)
    fig.suptitle("Per class: a real and a generated image in every channel (each channel on its own fixed scale)",
                 fontsize=10)
    return fig


def std_maps(real, real_labels, generated, generated_labels, classes: Sequence[str], path, channel: int = 0) -> Path:
    """Per-class per-pixel standard deviation (model-space units) of real (top) and generated (bottom) images,
    channel ``channel``."""
    k = len(classes)
    maps = {}
    for name, images, labels in (("real", real, real_labels), ("generated", generated, generated_labels)):
        labels = np.asarray(labels)
        for c in range(k):
            idx = np.flatnonzero(labels == c)
            maps[name, c] = np.asarray(images[idx, channel], dtype=np.float64).std(axis=0) if len(idx) >= 2 else None
    finite = [m for m in maps.values() if m is not None]
    vmax = max((float(m.max()) for m in finite), default=1.0) or 1.0
    fig = _figure(2.0 * k + 1.0, 4.4)
    axes = fig.subplots(2, k, squeeze=False)
    image = None
    for r, name in enumerate(("real", "generated")):
        for c in range(k):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            m = maps[name, c]
            if m is None:
                ax.set_facecolor("0.9")
                ax.text(0.5, 0.5, "< 2 images", ha="center", va="center", transform=ax.transAxes, fontsize=8)
            else:
                image = ax.imshow(m, cmap="magma", vmin=0, vmax=vmax, origin="lower")
            if r == 0:
                ax.set_title(f"Std {classes[c]}")
        axes[r, 0].set_ylabel(name)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="pixel std (model units)")
    fig.suptitle("Per-class pixel standard deviation")
    return _save(fig, path)


def tsne_figure(real_features, real_labels, generated_features, generated_labels, classes: Sequence[str], path,
                title: str = "t-SNE of features", seed: int = 0, max_points: int = 1500) -> Path:
    """t-SNE of real and generated features together (at most ``max_points``, split evenly between the sets)."""
    # scikit-learn only when a t-SNE is drawn: importing sklearn.manifold costs 2.6 s of CPU time here (measured),
    # which every user of the grids and the other figures would pay
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(seed)
    half = max_points // 2
    r_idx = np.sort(rng.choice(len(real_features), min(half, len(real_features)), replace=False))
    g_idx = np.sort(rng.choice(len(generated_features), min(half, len(generated_features)), replace=False))
    x = np.concatenate([np.asarray(real_features)[r_idx], np.asarray(generated_features)[g_idx]]).astype(np.float64)
    labels = np.concatenate([np.asarray(real_labels)[r_idx], np.asarray(generated_labels)[g_idx]])
    is_gen = np.r_[np.zeros(len(r_idx), bool), np.ones(len(g_idx), bool)]
    # standardise, then PCA to <= 50 dimensions first (the usual t-SNE recipe; faster, less noise)
    x = (x - x.mean(0)) / (x.std(0) + 1e-12)
    if x.shape[1] > 50 and x.shape[0] > 50:
        x = PCA(n_components=50, random_state=seed).fit_transform(x)
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3.0)))
    # One OpenMP thread: on a shared CPU sklearn's multi-threaded t-SNE spins and runs 5-30x slower; 500
    # iterations are plenty for a picture of <= 1500 points.
    with threadpool_limits(1):
        y = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, max_iter=500).fit_transform(x)
    fig = _figure(6.4, 5.2)
    ax = fig.subplots()
    for c, name in enumerate(classes):
        colour = CLASS_COLOURS[c % len(CLASS_COLOURS)]
        for gen, marker, label in ((False, "o", f"{name} real"), (True, "x", f"{name} generated")):
            sel = (labels == c) & (is_gen == gen)
            if sel.any():
                ax.scatter(y[sel, 0], y[sel, 1], s=14, marker=marker, color=colour, alpha=0.7, label=label,
                           linewidths=1.0 if gen else 0)
    other = labels < 0
    if other.any():
        ax.scatter(y[other, 0], y[other, 1], s=10, marker=".", color="0.5", label="no class")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, ncol=2, loc="best", markerscale=1.2)
    ax.set_title(title)
    return _save(fig, path)


def class_distribution(counts: dict, classes: Sequence[str], path, generated: dict | None = None,
                       title: str = "Images per class") -> Path:
    """Grouped bars: ``counts`` maps a split name to ``{class: n}``; ``generated`` is one more group."""
    groups = {k: v for k, v in counts.items() if k != "all"}
    if generated is not None:
        groups["generated"] = generated
    fig = _figure(1.2 * len(classes) + 3.0, 3.6)
    ax = fig.subplots()
    width = 0.8 / max(len(groups), 1)
    x = np.arange(len(classes))
    for i, (name, row) in enumerate(groups.items()):
        values = [int(row.get(c, 0)) for c in classes]
        bars = ax.bar(x + (i - (len(groups) - 1) / 2) * width, values, width, label=name)
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks(x, list(classes))
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def save_grid(images: np.ndarray, row_labels: list[str], path: Path, title: str = "", n_cols: int | None = None,
              channels: Sequence[str] | None = None, show: str | None = None) -> None:
    """PNG grid of model-space images (N, C, H, W) whose channels are named ``channels``, one row per distinct
    label: channel ``show`` (default :func:`main_channel`: 171 Å, the paper's, else the first) in its AIA
    colour map (sunpy's ``sdoaia171`` for 171 Å), or with ``show="rgb"`` the 211/193/171 Å composite of
    :func:`rgb_composite`. No ``channels`` (a one-channel model's meta) means one 171 Å channel."""
    channels = list(channels or []) or ["171A"]
    rgb = show == "rgb"
    plane, channel = (channels.index(show), show) if show and not rgb else main_channel(channels)
    groups: dict[str, list[int]] = {}
    for i, lab in enumerate(row_labels):
        groups.setdefault(lab, []).append(i)
    n_cols = n_cols or max(len(v) for v in groups.values())
    n_rows = len(groups)
    width = 1.2 * n_cols + 0.8
    if title:
        title = "\n".join(textwrap.wrap(title, width=max(20, int(width * 13))))
    top = 0.25 + 0.18 * title.count("\n") if title else 0.05
    fig = Figure(figsize=(width, 1.2 * n_rows + top))
    cmap = channel_cmap(channel)
    for r, (lab, idx) in enumerate(groups.items()):
        for c in range(n_cols):
            ax = fig.add_subplot(n_rows, n_cols, r * n_cols + c + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if c < len(idx):
                _panel(ax, images, idx[c], plane, cmap, channels if rgb else None, interpolation="nearest")
            if c == 0:
                ax.set_ylabel(lab, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=8)
    height = 1.2 * n_rows + top
    fig.subplots_adjust(left=0.8 / width, right=0.99, bottom=0.01, top=1 - top / height, wspace=0.04, hspace=0.04)
    fig.savefig(path, dpi=100)
