"""Figures of the application experiments (matplotlib ``Figure`` objects, no pyplot state, saved as PNG).

* :func:`per_class_accuracy` — the paper's chart (AGU-2023 slide 8, "Average accuracy per class"): per class,
  one bar per training regime, height = mean test accuracy (recall) over seeds, error bar = std over seeds;
* :func:`confusion_matrices` — each regime's mean confusion matrix over seeds, rows normalised to 1;
* :func:`skill_scores` — the forecast's TSS and HSS per regime with error bars.

Error bars are the std over seeds, cut at the score's bounds (accuracy in [0, 100] %, TSS and HSS ≤ 1).
Undefined values (a class absent from the test split, TSS without positives) get no bar and the text "n/a".
Every function returns the path it wrote.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

REGIME_COLOURS = {"real": "#4c72b0", "classical": "#dd8452", "generated": "#55a868"}


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def _grouped_bars(ax, groups: Sequence[str], regimes: Sequence[str], titles: Mapping[str, str], stats, scale: float,
                  value_format: str = "{:.2f}", bounds: tuple[float, float] = (-np.inf, np.inf)) -> None:
    """Bars of ``stats[regime][group]`` ({"mean", "std"} or None) grouped by ``groups``, each labelled with its mean."""
    width = 0.8 / max(1, len(regimes))
    x = np.arange(len(groups))
    for j, regime in enumerate(regimes):
        pos = x + (j - (len(regimes) - 1) / 2) * width
        for i, g in enumerate(groups):
            st = stats[regime].get(g) or {}
            mean, std = st.get("mean"), st.get("std")
            label = titles.get(regime, regime) if i == 0 else None
            if mean is None:
                ax.bar(pos[i], 0, width, color=REGIME_COLOURS.get(regime, f"C{j}"), label=label)
                ax.text(pos[i], 0, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
                continue
            # error bars stop at the score's bounds (accuracy in [0, 1], TSS/HSS ≤ 1)
            down, up = min(std or 0, mean - bounds[0]), min(std or 0, bounds[1] - mean)
            ax.bar(pos[i], mean * scale, width, yerr=[[down * scale], [up * scale]], capsize=3, ecolor="0.25",
                   error_kw={"elinewidth": 1}, color=REGIME_COLOURS.get(regime, f"C{j}"), label=label)
            # the value sits at the foot of its bar, clear of the error bar
            ax.text(pos[i], 0, value_format.format(mean * scale), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, groups)


def per_class_accuracy(summary: Mapping, classes: Sequence[str], regimes: Sequence[str], titles: Mapping[str, str], path,
                       title: str = "Average accuracy per class", support: Mapping[str, int] | None = None) -> Path:
    """Grouped bar chart of per-class test accuracy (%) per regime, error bars = std over seeds.

    ``support`` (test images per class), when given, is written under each class name.
    """
    fig = _figure(max(5.0, 1.3 * len(classes) + 2), 4.0)
    ax = fig.add_subplot()
    stats = {r: summary[r]["per_class_accuracy"] for r in regimes}
    _grouped_bars(ax, list(classes), regimes, titles, stats, 100.0, "{:.0f}", bounds=(0.0, 1.0))
    if support is not None:
        ax.set_xticks(range(len(classes)), [f"{c}\n({support.get(c, 0)} test)" for c in classes])
    ax.set_ylim(0, 105)
    ax.set_xlabel("class")
    ax.set_ylabel("accuracy (recall) on the real test split, %")
    ax.set_title(title)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=len(regimes), fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def confusion_matrices(summary: Mapping, classes: Sequence[str], regimes: Sequence[str], titles: Mapping[str, str], path) -> Path:
    """One panel per regime: the mean confusion matrix over seeds, each row divided by its total."""
    k = len(classes)
    fig = _figure(3.3 * len(regimes), 3.4)
    axes = fig.subplots(1, len(regimes), squeeze=False)[0]
    for ax, regime in zip(axes, regimes):
        m = np.asarray(summary[regime]["confusion_mean"], dtype=np.float64)
        rows = m.sum(axis=1, keepdims=True)
        norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
        ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.6 else "black")
        ax.set_xticks(range(k), classes)
        ax.set_yticks(range(k), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(titles.get(regime, regime), fontsize=9)
    return _save(fig, path)


def skill_scores(summary: Mapping, regimes: Sequence[str], titles: Mapping[str, str], path, title: str = "24 h forecast skill",
                 subtitle: str | None = None) -> Path:
    """TSS and HSS (mean ± std over seeds) per regime; ``subtitle`` e.g. the climatological rate."""
    fig = _figure(5.5, 3.8)
    ax = fig.add_subplot()
    stats = {r: {"TSS": summary[r]["tss"], "HSS": summary[r]["hss"]} for r in regimes}
    _grouped_bars(ax, ["TSS", "HSS"], regimes, titles, stats, 1.0, bounds=(-np.inf, 1.0))
    lows = [st["mean"] - (st["std"] or 0) for r in regimes for st in stats[r].values() if st and st.get("mean") is not None]
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylim(min([-0.1, *lows]) - 0.05, 1.0)
    ax.set_ylabel("score on the real test split (1 = perfect)")
    ax.set_title(title + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=len(regimes), fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def roc_reliability(y_true, probabilities: Mapping[str, np.ndarray], titles: Mapping[str, str], path) -> Path:
    """ROC curves and a reliability diagram of each regime's seed-mean forecast probabilities on the test split."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y = np.asarray(y_true).astype(bool)
    fig = _figure(9.0, 4.0)
    ax_roc, ax_rel = fig.subplots(1, 2)
    edges = np.linspace(0, 1, 11)
    for r, p in probabilities.items():
        label = titles.get(r, r)
        if y.any() and not y.all():
            fpr, tpr, _ = roc_curve(y, p)
            ax_roc.plot(fpr, tpr, label=f"{label} (AUC {roc_auc_score(y, p):.2f})", linewidth=1.2)
        b = np.clip(np.digitize(p, edges[1:-1]), 0, 9)
        filled = [k for k in range(10) if (b == k).any()]
        ax_rel.plot([p[b == k].mean() for k in filled], [y[b == k].mean() for k in filled], marker="o", markersize=3,
                    linewidth=1.0, label=label)
    for ax in (ax_roc, ax_rel):
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    if len(y):
        ax_rel.axhline(y.mean(), color="black", linewidth=0.6, linestyle="--", label="climatology (test)")
    ax_roc.set_xlabel("false positive rate (POFD)")
    ax_roc.set_ylabel("true positive rate (POD)")
    ax_roc.set_title("ROC, test split", fontsize=10)
    ax_rel.set_xlabel("forecast probability")
    ax_rel.set_ylabel("observed frequency")
    ax_rel.set_title("reliability, test split", fontsize=10)
    if ax_roc.get_legend_handles_labels()[0]:
        ax_roc.legend(fontsize=7, loc="lower right")
    else:
        ax_roc.text(0.5, 0.5, "undefined: the test split lacks\npositives or negatives", ha="center", va="center")
    ax_rel.legend(fontsize=7, loc="upper left")
    return _save(fig, path)
