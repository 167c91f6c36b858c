"""Scores of the application experiments: per-class accuracy, macro-F1, TSS, HSS, and mean ± std over seeds.

Multi-class (the augmentation experiment, Ramunno et al. 2024 §6.1 / AGU-2023 slide 8 "average accuracy per
class"):

* the **confusion matrix** ``C[i, j]`` counts test images of true class ``i`` predicted as ``j``;
* **per-class accuracy** of class ``c`` = ``C[c, c] / Σ_j C[c, j]``, i.e. its recall; undefined (``None``)
  when the test split holds no image of ``c``;
* **balanced accuracy** = mean per-class accuracy over the classes present in the test split;
* **macro-F1** = mean over the same classes of ``F1_c = 2 P_c R_c / (P_c + R_c)`` (``P_c`` precision,
  ``R_c`` recall; 0 when ``P_c + R_c = 0``). Classes absent from the test split are left out of both means
  (as in :mod:`flaresynth.metrics.classification`), but predictions *into* them still cost the others recall.

Binary forecast (§6.2; "≥ M within 24 h" is our documented label), from the contingency table
(TP hits, FP false alarms, FN misses, TN correct negatives)::

    TSS = TP / (TP + FN) − FP / (FP + TN)                          (Hanssen & Kuipers; Bloomfield et al. 2012)
    HSS = 2 (TP·TN − FN·FP) / [(TP + FN)(FN + TN) + (TP + FP)(FP + TN)]       (Heidke; Barnes et al. 2016)

TSS is undefined (``None``) when the test split has no positive or no negative; HSS when its denominator is 0.
The **climatological rate** is the fraction of positives in the test split (what an always-"yes" forecast
would hit, and the base rate behind HSS's "random forecast").

Spread over seeds: ``mean ± std`` with the *sample* standard deviation (``ddof=1``; 0 for a single seed),
over the seeds where the value is defined; ``n`` says how many that was.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


# -------------------------------------------------------------------------------------------- multi-class
def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) int64 counts, rows = true class, columns = predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ")
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (y_true, y_pred), 1)
    return m


def balanced_accuracy(y_true, y_pred, n_classes: int) -> float:
    """Mean recall over the classes present in ``y_true`` (NaN if ``y_true`` is empty)."""
    m = confusion_matrix(y_true, y_pred, n_classes)
    support = m.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float((np.diag(m)[present] / support[present]).mean())


def classification_scores(y_true, y_pred, classes: Sequence[str]) -> dict:
    """Per-class accuracy (recall), precision and F1, macro-F1, balanced and plain accuracy, confusion matrix.

    Returns a JSON-ready dict; per-class values are ``None`` where undefined (class absent from the test split).
    """
    k = len(classes)
    m = confusion_matrix(y_true, y_pred, k)
    support = m.sum(axis=1)
    predicted = m.sum(axis=0)
    tp = np.diag(m).astype(np.float64)
    present = support > 0
    recall = np.divide(tp, support, out=np.zeros(k), where=present)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    n = int(support.sum())
    return {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else None,
        "balanced_accuracy": float(recall[present].mean()) if present.any() else None,
        "macro_f1": float(f1[present].mean()) if present.any() else None,
        "per_class_accuracy": {c: (float(recall[i]) if present[i] else None) for i, c in enumerate(classes)},
        "per_class_f1": {c: (float(f1[i]) if present[i] else None) for i, c in enumerate(classes)},
        "per_class_precision": {c: (float(precision[i]) if predicted[i] > 0 else None) for i, c in enumerate(classes)},
        "support": {c: int(support[i]) for i, c in enumerate(classes)},
        "confusion": m.tolist(),
        "macro_over": [c for c, ok in zip(classes, present) if ok],
    }


# ------------------------------------------------------------------------------------------------- binary
def contingency(y_true, y_pred) -> dict:
    """TP, FP, FN, TN of boolean (or 0/1) forecasts ``y_pred`` against outcomes ``y_true``."""
    t = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    if t.shape != p.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} differ")
    return {"tp": int((t & p).sum()), "fp": int((~t & p).sum()), "fn": int((t & ~p).sum()), "tn": int((~t & ~p).sum())}


def tss(tp: int, fp: int, fn: int, tn: int) -> float | None:
    """True skill statistic ``TP/(TP+FN) − FP/(FP+TN)`` in [-1, 1]; ``None`` without positives or negatives."""
    if tp + fn == 0 or fp + tn == 0:
        return None
    return tp / (tp + fn) - fp / (fp + tn)


def hss(tp: int, fp: int, fn: int, tn: int) -> float | None:
    """Heidke skill score ``2(TP·TN − FN·FP) / [(TP+FN)(FN+TN) + (TP+FP)(FP+TN)]``; ``None`` if 0/0."""
    denom = (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)
    if denom == 0:
        return None
    return 2.0 * (tp * tn - fn * fp) / denom


def forecast_scores(y_true, y_pred) -> dict:
    """Contingency table, TSS, HSS, POD, POFD, accuracy and the climatological rate of a binary forecast."""
    table = contingency(y_true, y_pred)
    tp, fp, fn, tn = table["tp"], table["fp"], table["fn"], table["tn"]
    n = tp + fp + fn + tn
    return {
        "contingency": table,
        "n": n,
        "tss": tss(tp, fp, fn, tn),
        "hss": hss(tp, fp, fn, tn),
        "pod": tp / (tp + fn) if tp + fn else None,  # probability of detection (hit rate, recall)
        "pofd": fp / (fp + tn) if fp + tn else None,  # probability of false detection
        "accuracy": (tp + tn) / n if n else None,
        "climatological_rate": (tp + fn) / n if n else None,
    }


# ---------------------------------------------------------------------------------------------- over seeds
def mean_std(values) -> dict:
    """``{"mean", "std", "n"}`` of the defined (non-None, finite) values; sample std (ddof=1), 0 for one value."""
    v = np.array([float(x) for x in values if x is not None and np.isfinite(float(x))], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size)}


def aggregate_classification(runs: Sequence[dict], classes: Sequence[str]) -> dict:
    """Mean ± std over seeds of :func:`classification_scores` results (one dict per seed)."""
    conf = np.array([r["confusion"] for r in runs], dtype=np.float64)
    return {
        "per_class_accuracy": {c: mean_std([r["per_class_accuracy"][c] for r in runs]) for c in classes},
        "per_class_f1": {c: mean_std([r["per_class_f1"][c] for r in runs]) for c in classes},
        "macro_f1": mean_std([r["macro_f1"] for r in runs]),
        "balanced_accuracy": mean_std([r["balanced_accuracy"] for r in runs]),
        "accuracy": mean_std([r["accuracy"] for r in runs]),
        "confusion_mean": conf.mean(axis=0).tolist(),
        "confusion_std": (conf.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros_like(conf[0])).tolist(),
        "n_seeds": len(runs),
    }


def aggregate_forecast(runs: Sequence[dict]) -> dict:
    """Mean ± std over seeds of :func:`forecast_scores` results, including each contingency cell."""
    keys = ("tss", "hss", "pod", "pofd", "accuracy", "climatological_rate", "tss_max", "bss", "brier", "threshold")
    out = {key: mean_std([r.get(key) for r in runs]) for key in keys}
    out["auc"] = mean_std([(r.get("roc") or {}).get("auc") for r in runs])
    out["contingency"] = {cell: mean_std([r["contingency"][cell] for r in runs]) for cell in ("tp", "fp", "fn", "tn")}
    out["n_seeds"] = len(runs)
    return out


# ------------------------------------------------------------------------------------- probabilistic forecast
def best_tss_threshold(y_true, p) -> tuple[float, float | None]:
    """The probability threshold that maximises TSS on (y_true, p), and that TSS (for the validation split).

    Forecast "yes" when ``p >= threshold``. Candidates are the distinct values of ``p`` (scikit-learn's
    ``roc_curve``); ties go to the highest threshold. Without positives or negatives: (0.5, None).
    """
    from sklearn.metrics import roc_curve

    y = np.asarray(y_true).astype(bool)
    if y.all() or not y.any():
        return 0.5, None
    fpr, tpr, thr = roc_curve(y, np.asarray(p, dtype=np.float64))
    k = int(np.argmax(tpr - fpr))
    return float(min(1.0, thr[k])), float(tpr[k] - fpr[k])


def probabilistic_scores(y_true, p, threshold: float) -> dict:
    """Scores of forecast probabilities ``p`` against outcomes ``y_true``:

    * at ``threshold`` (chosen on the validation split): :func:`forecast_scores` (TSS, HSS, contingency table);
    * ``tss_max``: the best TSS over all thresholds **on this split itself** (an upper bound, not a forecast);
    * ``roc``: false and true positive rates (scikit-learn ``roc_curve``) and the ROC AUC;
    * ``brier`` = mean (p − y)²; ``bss`` = 1 − brier / brier_clim, the reference being the constant forecast of
      this split's climatological rate c (brier_clim = c (1 − c)); undefined when c is 0 or 1;
    * ``reliability``: mean forecast probability and observed frequency in 10 equal-width bins (with counts).
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    y = np.asarray(y_true).astype(bool)
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    out = forecast_scores(y, p >= threshold)
    out["threshold"] = float(threshold)
    both = y.any() and not y.all()
    out["tss_max"] = best_tss_threshold(y, p)[1] if both else None
    if both:
        fpr, tpr, _ = roc_curve(y, p)
        out["roc"] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": float(roc_auc_score(y, p))}
    else:
        out["roc"] = None
    brier = float(np.mean((p - y) ** 2)) if len(y) else None
    c = float(y.mean()) if len(y) else None
    out["brier"] = brier
    out["bss"] = 1.0 - brier / (c * (1 - c)) if brier is not None and c not in (None, 0.0, 1.0) else None
    edges = np.linspace(0, 1, 11)
    b = np.clip(np.digitize(p, edges[1:-1]), 0, 9)
    out["reliability"] = {
        "bin_edges": edges.tolist(),
        "n": np.bincount(b, minlength=10).tolist(),
        "mean_forecast": [float(p[b == k].mean()) if (b == k).any() else None for k in range(10)],
        "observed_frequency": [float(y[b == k].mean()) if (b == k).any() else None for k in range(10)],
    }
    return out


# --------------------------------------------------------------------------------------- grouped bootstrap
def grouped_bootstrap(metric, groups, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile interval of ``metric(rows)`` over a bootstrap that resamples whole **groups** (flare events,
    days), not rows: frames of one event are strongly correlated, so resampling them one by one would treat
    near-copies as independent evidence and narrow the interval.

    ``groups``: one group id per row; ``metric(rows)`` gets an int array of row indices (groups drawn with
    replacement, each contributing all its rows) and returns a number or None (undefined on that resample).
    Returns ``{"low", "high", "level", "n_groups", "n_boot", "n_defined"}`` (low/high None if too few resamples
    are defined).
    """
    groups = np.asarray(groups)
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(uniq), len(uniq))
        rows = np.concatenate([members[g] for g in pick]) if len(pick) else np.array([], dtype=np.int64)
        v = metric(rows)
        if v is not None and np.isfinite(v):
            values.append(float(v))
    alpha = (1 - level) / 2
    ok = len(values) >= max(10, n_boot // 2)
    return {"low": float(np.quantile(values, alpha)) if ok else None,
            "high": float(np.quantile(values, 1 - alpha)) if ok else None,
            "level": level, "n_groups": int(len(uniq)), "n_boot": int(n_boot), "n_defined": len(values)}


def intervals_overlap(a: dict | None, b: dict | None) -> bool | None:
    """True when two bootstrap intervals overlap ("within noise"); None when either is undefined."""
    if not a or not b or a.get("low") is None or b.get("low") is None:
        return None
    return a["low"] <= b["high"] and b["low"] <= a["high"]


def event_groups(times, event_ids=None) -> np.ndarray:
    """Bootstrap group of each row: its flare event where it has one, else its UTC day (``YYYY-MM-DD``).

    Rows of one event are one group; rows of one day without an event are one group. Groups linked by an event
    that spans two days stay separate (an event is already one unit).
    """
    days = utc_days(times)
    if event_ids is None:
        return days
    ev = np.asarray(event_ids, dtype=object)
    has = np.array([bool(e) and str(e) != "nan" for e in ev])
    return np.where(has, np.char.add("event:", ev.astype(str)), np.char.add("day:", days.astype(str)))


def utc_days(times) -> np.ndarray:
    """UTC day (``YYYY-MM-DD``) of ISO time strings or datetime64 values."""
    return pd.to_datetime(pd.Series(np.asarray(times)), utc=True, format="mixed").dt.strftime("%Y-%m-%d").to_numpy()


def seed_mean(fn, y_true, predictions):
    """``metric(rows)`` for :func:`grouped_bootstrap`: ``fn(y_true[rows], pred[rows])`` averaged over the seeds'
    predictions (one array per seed), None if undefined for every seed."""
    y_true = np.asarray(y_true)

    def metric(rows):
        values = [fn(y_true[rows], np.asarray(p)[rows]) for p in predictions]
        values = [v for v in values if v is not None and np.isfinite(v)]
        return float(np.mean(values)) if values else None

    return metric


def classification_intervals(y_true, predictions, groups, classes, n_boot: int = 1000, seed: int = 0) -> dict:
    """Grouped-bootstrap 95 % intervals of balanced accuracy, macro-F1 and each class's F1 (seed means)."""
    k = len(classes)

    def f1_of(c):
        return lambda yt, yp: (classification_scores(yt, yp, classes)["per_class_f1"][classes[c]])

    out = {
        "balanced_accuracy": grouped_bootstrap(seed_mean(lambda yt, yp: classification_scores(yt, yp, classes)["balanced_accuracy"],
                                                         y_true, predictions), groups, n_boot, seed),
        "macro_f1": grouped_bootstrap(seed_mean(lambda yt, yp: classification_scores(yt, yp, classes)["macro_f1"],
                                                y_true, predictions), groups, n_boot, seed),
        "per_class_f1": {classes[c]: grouped_bootstrap(seed_mean(f1_of(c), y_true, predictions), groups, n_boot, seed)
                         for c in range(k)},
    }
    return out


def day_groups(times, event_ids=None) -> np.ndarray:
    """Group id of each row: its UTC day, except that every frame of a flare event takes the day of the event's
    first frame, so an event never straddles two groups (and days are never chained through events).

    Used where two sets must share no day (the real-vs-real benchmark halves): frames of one day show nearly the
    same disk, and an event's frames must not be split between the sets either.
    """
    days = utc_days(times).astype(object)
    if event_ids is not None:
        ev = pd.Series(np.asarray(event_ids, dtype=object)).fillna("").astype(str).to_numpy()
        first_day: dict[str, str] = {}
        for i in np.argsort(np.asarray(times).astype(str), kind="stable"):
            if ev[i]:
                days[i] = first_day.setdefault(ev[i], days[i])
    uniq, inverse = np.unique(days.astype(str), return_inverse=True)
    return inverse
