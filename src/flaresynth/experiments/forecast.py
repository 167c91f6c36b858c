"""Experiment 2: a 24 h flare forecaster, trained with and without generated high-activity images.

Ramunno et al. 2024 (§6.2) train "a basic solar flare predictor" and report that generated images of the rare,
energetic classes improve TSS and HSS; label, architecture and split are not published. We follow the
forecasting literature's protocol instead (Bloomfield et al. 2012; Leka et al. 2019; SuryaBench):

* **data**: a forecast dataset (``flaresynth dataset build --task forecast``, :mod:`flaresynth.forecast_labels`):
  one image per issue time at a fixed cadence, label 1 when a ≥M1.0 flare *starts* in (t, t + 24 h], issue times
  during an ongoing ≥M flare excluded; splits by time blocks with buffers. A flare-image dataset is refused.
* **classifier**: the DeiT of :mod:`flaresynth.experiments.classifier` with 2 classes, the same training and
  epoch selection (best balanced accuracy on the val split).
* **regimes** (same real training split, same test split): ``real``; ``weighted`` — real with an
  inverse-frequency class-weighted loss (the fair baseline for rebalancing); ``classical`` — plus
  flipped/rotated/brightened copies of real positives; ``generated`` — plus generated images requested as M or X
  (``high``; flux ≥ 1e-5 W/m²) as positives; ``mixed`` — half generated, half classical. Positives are added
  until they make ``--positive-fraction`` of the training set, ``n_add = ⌈(f·(P + N) − P) / (1 − f)⌉``.
* **decision threshold**: chosen on the validation split only, as the probability that maximises its TSS; the
  test split is scored at that threshold (TSS, HSS, contingency table). Reported beside it, on the test split:
  TSS-max (the best TSS over all thresholds, an optimistic bound), the ROC curve and its AUC, the Brier skill
  score against the test split's climatological rate, and a reliability diagram.
* **error bars**: mean ± std over seeds, and a 95 % grouped bootstrap over the test split's independent units
  (issue times before one flare form one unit, the others their UTC day), with the number of independent flares
  behind the positives. Two regimes whose intervals overlap are "within noise".

Output (atomically)::

    EXP/
      results.json        every number, per seed and regime, mean ± std and intervals; counts; settings; notes
      results.md          the table per regime
      forecast_skill.png  TSS and HSS per regime (std over seeds)
      roc_reliability.png ROC curves and reliability diagram (seed-mean probabilities)
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from flaresynth.errors import FlaresynthError, input_error
from flaresynth.experiments.augment import (
    BOOTSTRAP_N,
    EXPERIMENT_FORMAT,
    RESULTS_JSON,
    RESULTS_MD,
    ClassicalAugmentation,
    GeneratedPool,
    check_samples,
    fmt,
    fmt_interval,
    make_training_sets,
    noise_verdicts,
    real_at_size,
    versions,
    working_size,
)
from flaresynth.experiments.classifier import (
    ExperimentConfig,
    build_classifier,
    n_parameters,
    prepare_out,
    run_regimes,
)
from flaresynth.forecast_labels import FORECAST_CLASSES
from flaresynth.io import atomic_dir, write_json

#: Requested classes whose generated images count as positives (≥ M in either scheme).
POSITIVE_CLASSES = ("M", "X", "high")
REGIME_TITLES = {
    "real": "Real data only",
    "weighted": "Real data, class-weighted loss",
    "classical": "Real + classical augmentation",
    "generated": "Real + generated ≥M images",
    "mixed": "Real + generated + classical",
}


def forecast_labels(ds) -> np.ndarray:
    """1 where a ≥M flare starts within the horizon of the issue time, from a forecast dataset; one-line error for
    any other dataset."""
    task = ds.manifest.get("task", "images")
    if task != "forecast" or tuple(ds.classes) != FORECAST_CLASSES:
        raise input_error(ds.path / "manifest.json", "task", f"{task!r}: `experiment forecast` needs a forecast "
                          "dataset (issue times labelled by flares starting in the next 24 h); build one with "
                          "`flaresynth dataset build --task forecast`")
    return (ds.label_index() == FORECAST_CLASSES.index("flare24")).astype(np.int64)


def positives_to_add(n_pos: int, n_neg: int, fraction: float) -> int:
    """Smallest n ≥ 0 with ``(n_pos + n) / (n_pos + n_neg + n) ≥ fraction``."""
    if not 0 < fraction < 1:
        raise FlaresynthError(f"--positive-fraction {fraction}: expected a number between 0 and 1 (exclusive)")
    n = (fraction * (n_pos + n_neg) - n_pos) / (1 - fraction)
    return max(0, math.ceil(n - 1e-9))


@dataclass
class ForecastConfig(ExperimentConfig):
    """Settings of the forecast experiment (plus those of :class:`ExperimentConfig`)."""

    positive_fraction: float = 0.5
    classical: bool = True
    augmentation: ClassicalAugmentation = field(default_factory=ClassicalAugmentation)

    def validate(self) -> None:
        super().validate()
        positives_to_add(1, 1, self.positive_fraction)


def run_forecast(data, out, generated=None, config: ForecastConfig | None = None, progress: bool = True, log=None) -> dict:
    """Run the 24 h forecast experiment and write EXP (see the module docstring); returns results.json's content.

    Without ``generated`` only the ``real``, ``weighted`` (and ``classical``) regimes run.
    """
    from flaresynth.dataset import open_dataset
    from flaresynth.experiments.stats import (
        aggregate_forecast,
        best_tss_threshold,
        event_groups,
        probabilistic_scores,
    )
    from flaresynth.samples import open_samples

    cfg = config or ForecastConfig()
    cfg.validate()
    t0 = time.perf_counter()
    out = Path(out)
    ds = open_dataset(data)
    y_all = forecast_labels(ds)
    gs = None
    size, notes, via = ds.image_size, [], None
    if generated is not None:
        gs = open_samples(generated)
        check_samples(gs, ds, check_classes=False)
        size, notes = working_size(gs, ds, cfg.allow_resize)
        via = int(gs.images.shape[-1]) if cfg.allow_resize else None
    spec = cfg.spec(size, ds.images.shape[1], 2)
    spec.validate()
    prepare_out(out, RESULTS_JSON)
    train, val, test = (ds.split_indices(s) for s in ("train", "val", "test"))
    if len(train) == 0 or len(test) == 0:
        raise input_error(ds.path / "labels.csv", "split", f"{len(train)} train and {len(test)} test issue times: need both")
    n_pos, n_neg = int(y_all[train].sum()), int((1 - y_all[train]).sum())
    n_add = positives_to_add(n_pos, n_neg, cfg.positive_fraction)
    needed = np.array([0, n_add])
    regimes = (["real", "weighted"] + (["classical"] if cfg.classical else []) + (["generated"] if gs is not None else [])
               + (["mixed"] if gs is not None and cfg.classical else []))

    pool = pool_labels = None
    gen_info = None
    if gs is not None:
        pool = GeneratedPool(gs, ds, size=size, labels=positive_request(gs, ds))
        positive = pool.labels == 1
        if not positive.any():
            raise input_error(gs.path / "samples.csv", "label",
                              "no generated image of class M, X or high (the forecast adds those as positives)")
        pool_labels = np.where(positive, 1, -1)
        notes += pool.notes
        n_avail = int(positive.sum())
        gen_info = {"path": str(gs.path), "n": int(len(gs.images)), "generator": gs.manifest.get("generator"),
                    "size": int(gs.images.shape[-1]), "positives_available": n_avail, "positives_added": n_add,
                    "positives_distinct": min(n_add, n_avail)}
        if n_add > n_avail:
            notes.append(f"generated: {n_add} positives needed but the samples folder holds {n_avail} of class "
                         f"M/X/high; each was reused up to {math.ceil(n_add / n_avail)} times")
    if cfg.classical and n_pos == 0 and n_add:
        notes.append("classical: the training split has no positive to augment; nothing added")
    if n_add == 0:
        notes.append(f"positives already make {n_pos / max(1, n_pos + n_neg):.1%} of the training split "
                     f"(≥ {cfg.positive_fraction:.0%}): no image added")
    n_test_pos = int(y_all[test].sum())
    if n_test_pos == 0:
        notes.append("the test split has NO positive (no ≥M flare starts within 24 h of any test issue time): "
                     "TSS is undefined and POD cannot be measured")
    elif n_test_pos == len(test):
        notes.append("the test split has NO negative: TSS is undefined")
    if len(val) == 0 or y_all[val].all() or not y_all[val].any():
        notes.append("the validation split lacks positives or negatives: the decision threshold stays at 0.5")
    if log:
        for n in notes:
            log(n)

    x_real = real_at_size(ds, train, size, via)
    val_xy = (real_at_size(ds, val, size, via), y_all[val])
    test_xy = (real_at_size(ds, test, size, via), y_all[test])

    def make_sets(seed):
        return make_training_sets(ds, train, y_all[train], needed, regimes, seed, pool=pool, pool_labels=pool_labels,
                                  augmentation=cfg.augmentation, real_images=x_real)

    def score(y_test, proba_test, y_val, proba_val):
        threshold = best_tss_threshold(y_val, proba_val[:, 1])[0] if len(y_val) else 0.5
        return probabilistic_scores(y_test, proba_test[:, 1], threshold)

    runs = run_regimes(make_sets, regimes, spec, cfg, val_xy, test_xy, score, progress=progress)
    test_labels = ds.labels.iloc[test]
    flare_ids = test_labels["next_flare_id"].fillna("").astype(str).to_numpy() if "next_flare_id" in test_labels else None
    groups = event_groups(test_labels["time"].to_numpy(), flare_ids)
    y_test = y_all[test]
    summary, mean_proba = {}, {}
    for r in regimes:
        mine = [x for x in runs if x["regime"] == r]
        summary[r] = aggregate_forecast([x["scores"] for x in mine])
        summary[r]["seconds_per_epoch"] = float(np.mean([x["training"]["seconds_per_epoch"] for x in mine]))
        probas = [x.pop("proba_test")[:, 1] for x in mine]
        for x, p in zip(mine, probas):
            x["test_probability"] = [round(float(v), 6) for v in p]
        preds = [p >= x["scores"]["threshold"] for x, p in zip(mine, probas)]
        summary[r]["intervals"] = forecast_intervals(y_test, preds, probas, groups, seed=cfg.seed)
        mean_proba[r] = np.mean(probas, axis=0)
    positives = y_test == 1
    independent = {
        "flares_behind_test_positives": int(len({f for f, p in zip(flare_ids, positives) if p and f})) if flare_ids is not None else None,
        "test_units": int(len(np.unique(groups))),
        "test_days": int(len(np.unique(test_labels["time"].str.slice(0, 10)))),
    }
    added = {r: (0 if r in ("real", "weighted") else n_add if (r in ("generated", "mixed") or n_pos > 0) else 0) for r in regimes}
    fc = ds.manifest.get("forecast") or {}
    result = {
        "format": EXPERIMENT_FORMAT,
        "experiment": "forecast",
        "label": fc.get("label", "a flare of at least M1.0 starts in (t, t + 24 h]"),
        "flux_convention": ds.manifest.get("flux_convention"),
        "data": {
            "path": str(ds.path), "data_hash": ds.manifest.get("data_hash"), "image_size": ds.image_size,
            "classifier_size": size,
            "channels": ds.channels, "issue_times": fc.get("issue_times"), "flare_list": fc.get("flare_list"),
            "split_rule": (ds.manifest.get("splits") or {}).get("rule"),
            "counts": {s: {"positive": int(y_all[idx].sum()), "negative": int(len(idx) - y_all[idx].sum())}
                       for s, idx in (("train", train), ("val", val), ("test", test))},
            "climatological_rate_test": n_test_pos / len(test),
            "independent": independent,
        },
        "generated": gen_info,
        "positive_fraction": cfg.positive_fraction,
        "regimes": {r: {"title": REGIME_TITLES[r], "n_real": int(len(train)), "real_positive": n_pos, "real_negative": n_neg,
                        "added_positive": added[r], "positive_fraction": (n_pos + added[r]) / (len(train) + added[r]),
                        "class_weighted": r == "weighted"}
                    for r in regimes},
        "threshold_rule": "the probability maximising TSS on the validation split (test never seen)",
        "bootstrap": {"unit": "issue times before one flare (its id), else their UTC day", "n_units": independent["test_units"],
                      "n_boot": BOOTSTRAP_N, "level": 0.95, "statistic": "seed mean, recomputed on each resample"},
        "settings": asdict(cfg),
        "model": {"architecture": "transformers.DeiTForImageClassification", **asdict(spec),
                  "parameters": n_parameters(build_classifier(spec, 0))},
        "selection": "best epoch by balanced accuracy = (TSS+1)/2 on the real val split"
                     if len(val) and cfg.selection == "best-val" else "last epoch",
        "runs": runs,
        "summary": summary,
        "notes": notes,
        "versions": versions(),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    from flaresynth.experiments import plots

    with atomic_dir(out, overwrite=True) as tmp:
        path = plots.skill_scores(summary, regimes, REGIME_TITLES, tmp / "forecast_skill.png",
                                  title=f"24 h ≥M forecast on the test split ({cfg.seeds} seeds)",
                                  subtitle=f"test: {n_test_pos} positive of {len(test)}, climatological rate "
                                           f"{n_test_pos / len(test):.3f}")
        roc = plots.roc_reliability(y_test, mean_proba, REGIME_TITLES, tmp / "roc_reliability.png")
        result["figures"] = {"forecast_skill": Path(path).name, "roc_reliability": Path(roc).name}
        write_json(tmp / RESULTS_JSON, result)
        (tmp / RESULTS_MD).write_text(forecast_markdown(result))
    return result


def positive_request(gs, ds) -> np.ndarray:
    """1 for generated images requested as M, X or high (or a flux ≥ 1e-5 W/m²), -1 for the others."""
    from flaresynth.labels import flux_to_letter_index

    labels = gs.table["label"].fillna("").astype(str).to_numpy()
    positive = np.isin(labels, POSITIVE_CLASSES)
    if "requested_flux" in gs.table.columns:
        import pandas as pd

        flux = pd.to_numeric(gs.table["requested_flux"], errors="coerce").to_numpy(dtype=np.float64)
        by_flux = flux_to_letter_index(np.where(np.isfinite(flux) & (flux > 0), flux, np.nan)) >= 3  # M, X
        positive |= (labels == "") & by_flux
    return np.where(positive, 1, -1)


def forecast_intervals(y_true, predictions, probabilities, groups, n_boot: int = BOOTSTRAP_N, seed: int = 0) -> dict:
    """Grouped-bootstrap 95 % intervals of TSS and HSS (at each seed's threshold) and of the BSS."""
    from flaresynth.experiments.stats import forecast_scores, grouped_bootstrap, seed_mean

    def bss(yt, p):
        c = yt.mean() if len(yt) else 0.0
        return None if c in (0.0, 1.0) else 1.0 - np.mean((p - yt) ** 2) / (c * (1 - c))

    return {
        "tss": grouped_bootstrap(seed_mean(lambda yt, yp: forecast_scores(yt, yp)["tss"], y_true, predictions), groups, n_boot, seed),
        "hss": grouped_bootstrap(seed_mean(lambda yt, yp: forecast_scores(yt, yp)["hss"], y_true, predictions), groups, n_boot, seed),
        "bss": grouped_bootstrap(seed_mean(bss, y_true, probabilities), groups, n_boot, seed),
    }


def forecast_markdown(result: dict) -> str:
    """results.md of the forecast experiment."""
    s = result["summary"]
    regimes = list(result["regimes"])
    d = result["data"]
    m = result["model"]
    ind = d.get("independent", {})
    conv = (result.get("flux_convention") or {}).get("description", "not recorded")
    lines = [
        f"# 24 h flare forecast: {Path(d['path']).name}"
        + (f" + {Path(result['generated']['path']).name}" if result.get("generated") else ""),
        "",
        f"Label: {result['label']} (flux convention: {conv}). DeiT from scratch ({m['num_hidden_layers']} layers, "
        f"hidden {m['hidden_size']}, patch {m['patch_size']}), {result['settings']['epochs']} epochs, kept: "
        f"{result['selection']}. Decision threshold: {result['threshold_rule']}. Mean ± std over "
        f"{result['settings']['seeds']} seeds, then the 95 % grouped-bootstrap interval.",
        f"Test split: {d['counts']['test']['positive']} positive issue times from "
        f"{ind.get('flares_behind_test_positives', '?')} independent flares, {d['counts']['test']['negative']} "
        f"negative, over {ind.get('test_days', '?')} days; climatological rate {d['climatological_rate_test']:.3f}.",
        "",
        "| Regime | training images (real + added positives) | TSS | HSS | TSS-max (test, optimistic) | BSS | ROC AUC | threshold | TP | FP | FN | TN |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in regimes:
        info, c, ci = result["regimes"][r], s[r]["contingency"], s[r].get("intervals", {})
        lines.append(
            f"| {info['title']} | {info['n_real']} + {info['added_positive']} | {fmt(s[r]['tss'])} {fmt_interval(ci.get('tss'))} | "
            f"{fmt(s[r]['hss'])} {fmt_interval(ci.get('hss'))} | {fmt(s[r]['tss_max'])} | "
            f"{fmt(s[r]['bss'])} {fmt_interval(ci.get('bss'))} | {fmt(s[r]['auc'])} | {fmt(s[r]['threshold'])} | "
            + " | ".join(fmt(c[k], digits=1) for k in ("tp", "fp", "fn", "tn")) + " |")
    verdicts = noise_verdicts(s, regimes, "tss", REGIME_TITLES)
    if verdicts:
        lines += ["", "TSS against the real-only regime: " + "; ".join(verdicts) + "."]
    lines += ["", "TSS = TP/(TP+FN) − FP/(FP+TN); HSS = 2(TP·TN − FN·FP) / [(TP+FN)(FN+TN) + (TP+FP)(FP+TN)]; "
              "BSS = 1 − Brier / Brier of the test split's climatological rate. TSS-max is the best TSS over all "
              "thresholds on the test split itself (an upper bound, not a forecast). \"undefined\": the test split "
              "lacks positives or negatives. \"within noise\": the bootstrap intervals overlap. "
              "Figures: forecast_skill.png, roc_reliability.png."]
    if result.get("notes"):
        lines += ["", "Notes:", *[f"- {n}" for n in result["notes"]]]
    return "\n".join(lines) + "\n"
