"""Precision, recall, F1 and the confusion matrix of a classifier's predictions (scikit-learn underneath).

Conventions (Ramunno et al. 2024 report F1, precision and recall; macro averaging per the paper's summary):

* per class ``c``: precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2 P R / (P + R); 0 where undefined
  (no prediction of ``c``, or P + R = 0) rather than a warning;
* **macro** averages run over the classes present in the true labels (support > 0). A class that was never
  requested (no generated image of it) or is absent from the real test split would otherwise add a
  meaningless 0 to the mean. Predictions *into* such a class still count against the true classes' recall;
* the confusion matrix has true classes as rows and predicted classes as columns, in class order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def classification_report(y_true, y_pred, classes: Sequence[str]) -> dict:
    """Per-class and macro precision / recall / F1, accuracy and the confusion matrix.

    Parameters
    ----------
    y_true, y_pred : integer class indices into ``classes`` (same length).
    classes : class names.

    Returns a JSON-ready dict: ``precision``, ``recall``, ``f1``, ``accuracy`` (macro values, floats),
    ``per_class`` (``{name: {precision, recall, f1, support}}``), ``confusion`` (list of rows, true × predicted),
    ``classes``, ``macro_over`` (the classes the macro mean ran over) and ``n``.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ")
    k = len(classes)
    labels = np.arange(k)
    if len(y_true) == 0:
        return {"n": 0, "precision": float("nan"), "recall": float("nan"), "f1": float("nan"), "accuracy": float("nan"),
                "per_class": {}, "confusion": np.zeros((k, k), dtype=int).tolist(), "classes": list(classes), "macro_over": []}
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    present = support > 0
    return {
        "n": int(len(y_true)),
        "precision": float(p[present].mean()),
        "recall": float(r[present].mean()),
        "f1": float(f[present].mean()),
        "accuracy": float(np.mean(y_true == y_pred)),
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
            for i, c in enumerate(classes)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "classes": list(classes),
        "macro_over": [c for c, ok in zip(classes, present) if ok],
    }
