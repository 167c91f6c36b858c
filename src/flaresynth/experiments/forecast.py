"""Experiment 2: a basic 24 h flare forecaster, trained with and without generated high-activity images.

Ramunno et al. 2024 (§6.2 of ``paper_spec.md``) train "a basic solar flare predictor" and report that generated
images of the rare, energetic classes improve TSS and HSS; label, architecture and split are not published.
Our documented choices:

* **label** = the dataset's ``flare24`` column: an M-or-larger flare (XRS-B ≥ 1e-5 W/m²) peaks in (t, t + 24 h]
  after the image time t (``flaresynth.dataset``). Rows whose ``peak24_flux`` is missing (the GOES record ends
  within 24 h, so the outcome is unknown; the builder writes ``flare24 = False`` there) are left out of every
  split, and the notes count them.
* **classifier**: the DeiT of :mod:`flaresynth.experiments.classifier` with 2 classes (0 = no ≥M flare,
  1 = ≥M flare within 24 h), the same training and model-selection rule (best epoch by balanced accuracy on the
  real val split, which for two classes is (TSS + 1)/2).
* **regimes**: ``real`` — the real training split; ``generated`` — plus generated images whose requested class
  is M or X (``high`` in activity3; or, for flux requests, a requested flux ≥ 1e-5 W/m²) added as positives.
  An image that shows an M flare in progress is a positive: the flux stays ≥ 1e-5 W/m² after t. Optionally
  (``--classical``) ``classical`` — plus flipped/rotated/brightened copies of real positives, the same count.
* **how many**: positives are added until they make ``--positive-fraction`` (default 0.5: as many positives as
  negatives) of the training set: ``n_add = ⌈(f·(P + N) − P) / (1 − f)⌉`` (0 if P already reaches f). Drawing,
  reuse of a small samples folder and mapping to the dataset's size/transform are as in
  :mod:`flaresynth.experiments.augment`.
* **scores** (:mod:`flaresynth.experiments.stats`): contingency table (TP, FP, FN, TN), TSS, HSS, POD, POFD and the
  climatological rate (fraction of positives in the test split), per seed and mean ± std over seeds. With no
  positive (or no negative) in the test split TSS is undefined and the output says so.

Output (atomically)::

    EXP/
      results.json        every number, per seed and regime, and mean ± std; counts; settings; notes
      results.md          TSS, HSS and the mean contingency table per regime
      forecast_skill.png  TSS and HSS per regime with error bars (std over seeds)
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from flaresynth.errors import FlaresynthError, input_error
from flaresynth.experiments.augment import (
    EXPERIMENT_FORMAT,
    RESULTS_JSON,
    RESULTS_MD,
    ClassicalAugmentation,
    GeneratedPool,
    check_samples,
    fmt,
    make_training_sets,
    versions,
)
from flaresynth.experiments.classifier import (
    ExperimentConfig,
    build_classifier,
    n_parameters,
    prepare_out,
    run_regimes,
)
from flaresynth.io import atomic_dir, write_json

FORECAST_CLASSES = ("quiet24", "flare24")
#: Requested classes whose generated images count as positives (≥ M in either scheme).
POSITIVE_CLASSES = ("M", "X", "high")
REGIME_TITLES = {
    "real": "Real data only",
    "classical": "Real + classical augmentation",
    "generated": "Real + generated ≥M images",
}


def forecast_labels(ds) -> tuple[np.ndarray, np.ndarray]:
    """``(y, known)``: 1 where an ≥M flare peaks within 24 h of the image, and whether that outcome is known.

    ``known`` is False where ``peak24_flux`` is missing (see the module docstring).
    """
    labels = ds.labels
    where = ds.path / "labels.csv"
    if "flare24" not in labels.columns:
        raise input_error(where, "column 'flare24'", "missing (expected the 24 h ≥M-flare label that `flaresynth dataset build` writes)")
    col = labels["flare24"]
    if col.dtype == bool:
        y = col.to_numpy(dtype=bool)
        known = np.ones(len(y), dtype=bool)
    else:
        text = col.astype(str).str.strip().str.lower()
        truth = {"true": True, "1": True, "1.0": True, "false": False, "0": False, "0.0": False}
        missing = text.isin(["", "nan", "none", "<na>"])
        bad = ~text.isin(list(truth)) & ~missing
        if bad.any():
            raise input_error(where, "column 'flare24'", f"value {col[bad].iloc[0]!r}: expected True or False")
        y = text.map(truth).fillna(False).to_numpy(dtype=bool)
        known = ~missing.to_numpy()
    if "peak24_flux" in labels.columns:
        import pandas as pd

        peak = pd.to_numeric(labels["peak24_flux"], errors="coerce").to_numpy(dtype=np.float64)
        known &= np.isfinite(peak)
    return y.astype(np.int64), known


def positives_to_add(n_pos: int, n_neg: int, fraction: float) -> int:
    """Smallest n ≥ 0 with ``(n_pos + n) / (n_pos + n_neg + n) ≥ fraction``."""
    if not 0 < fraction < 1:
        raise FlaresynthError(f"--positive-fraction {fraction}: expected a number between 0 and 1 (exclusive)")
    n = (fraction * (n_pos + n_neg) - n_pos) / (1 - fraction)
    return max(0, math.ceil(n - 1e-9))


def generated_positive(pool: GeneratedPool, classes) -> np.ndarray:
    """True for generated images whose requested class is M, X or high (≥ 1e-5 W/m² for flux requests)."""
    names = np.array([*classes, ""])  # index -1 (no class) maps to ""
    return np.isin(names[pool.labels], POSITIVE_CLASSES)


@dataclass
class ForecastConfig(ExperimentConfig):
    """Settings of the forecast experiment (plus those of :class:`ExperimentConfig`)."""

    positive_fraction: float = 0.5
    classical: bool = False
    augmentation: ClassicalAugmentation = field(default_factory=ClassicalAugmentation)

    def validate(self) -> None:
        super().validate()
        positives_to_add(1, 1, self.positive_fraction)


def run_forecast(data, out, generated=None, config: ForecastConfig | None = None, progress: bool = True, log=None) -> dict:
    """Run the 24 h forecast experiment and write EXP (see the module docstring); returns results.json's content.

    Without ``generated`` only the ``real`` regime (and ``classical`` if asked) runs.
    """
    from flaresynth.dataset import open_dataset
    from flaresynth.experiments.stats import aggregate_forecast, forecast_scores
    from flaresynth.samples import open_samples

    cfg = config or ForecastConfig()
    cfg.validate()
    t0 = time.perf_counter()
    out = Path(out)
    ds = open_dataset(data)
    spec = cfg.spec(ds.image_size, ds.images.shape[1], 2)
    spec.validate()
    y_all, known = forecast_labels(ds)
    gs = None
    if generated is not None:
        gs = open_samples(generated)
        check_samples(gs, ds)
    prepare_out(out, RESULTS_JSON)
    notes: list[str] = []
    if (~known).any():
        notes.append(f"{int((~known).sum())} images without a known 24 h outcome (peak24_flux missing) left out")
    train, val, test = (np.intersect1d(ds.split_indices(s), np.flatnonzero(known)) for s in ("train", "val", "test"))
    if len(train) == 0 or len(test) == 0:
        raise input_error(ds.path / "labels.csv", "split", f"{len(train)} train and {len(test)} test images with a known outcome: need both")
    n_pos, n_neg = int(y_all[train].sum()), int((1 - y_all[train]).sum())
    n_add = positives_to_add(n_pos, n_neg, cfg.positive_fraction)
    needed = np.array([0, n_add])
    regimes = ["real"] + (["classical"] if cfg.classical else []) + (["generated"] if gs is not None else [])

    pool = pool_labels = None
    gen_info = None
    if gs is not None:
        pool = GeneratedPool(gs, ds)
        positive = generated_positive(pool, ds.classes)
        if not positive.any():
            raise input_error(gs.path / "samples.csv", "label",
                              "no generated image of class M, X or high (the forecast adds those as positives)")
        pool_labels = np.where(positive, 1, -1)
        notes += pool.notes
        n_avail = int(positive.sum())
        gen_info = {"path": str(gs.path), "n": int(len(gs.images)), "generator": gs.manifest.get("generator"),
                    "positives_available": n_avail, "positives_added": n_add, "positives_distinct": min(n_add, n_avail)}
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
        notes.append("the test split has NO positive (no M-or-larger flare peaks within 24 h of any test image): "
                     "TSS is undefined and POD cannot be measured")
    elif n_test_pos == len(test):
        notes.append("the test split has NO negative: TSS is undefined")
    if log:
        for n in notes:
            log(n)

    x_real = np.asarray(ds.images[train], dtype=np.float32)
    val_xy = (np.asarray(ds.images[val], dtype=np.float32), y_all[val])
    test_xy = (np.asarray(ds.images[test], dtype=np.float32), y_all[test])

    def make_sets(seed):
        return make_training_sets(ds, train, y_all[train], needed, regimes, seed, pool=pool, pool_labels=pool_labels,
                                  augmentation=cfg.augmentation, real_images=x_real)

    runs = run_regimes(make_sets, regimes, spec, cfg, val_xy, test_xy, forecast_scores, progress=progress)
    summary = {r: aggregate_forecast([x["scores"] for x in runs if x["regime"] == r]) for r in regimes}
    for r in regimes:
        summary[r]["seconds_per_epoch"] = float(np.mean([x["training"]["seconds_per_epoch"] for x in runs if x["regime"] == r]))
    added = {r: (0 if r == "real" else n_add if (r == "generated" or n_pos > 0) else 0) for r in regimes}
    result = {
        "format": EXPERIMENT_FORMAT,
        "experiment": "forecast",
        "label": "flare24: an M-or-larger flare (XRS-B >= 1e-5 W/m2) peaks within 24 h after the image time",
        "data": {
            "path": str(ds.path), "data_hash": ds.manifest.get("data_hash"), "image_size": ds.image_size,
            "channels": ds.channels, "unknown_outcome": int((~known).sum()),
            "counts": {s: {"positive": int(y_all[idx].sum()), "negative": int(len(idx) - y_all[idx].sum())}
                       for s, idx in (("train", train), ("val", val), ("test", test))},
            "climatological_rate_test": n_test_pos / len(test),
        },
        "generated": gen_info,
        "positive_fraction": cfg.positive_fraction,
        "regimes": {r: {"title": REGIME_TITLES[r], "n_real": int(len(train)), "real_positive": n_pos, "real_negative": n_neg,
                        "added_positive": added[r], "positive_fraction": (n_pos + added[r]) / (len(train) + added[r])}
                    for r in regimes},
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
        result["figures"] = {"forecast_skill": Path(path).name}
        write_json(tmp / RESULTS_JSON, result)
        (tmp / RESULTS_MD).write_text(forecast_markdown(result))
    return result


def forecast_markdown(result: dict) -> str:
    """results.md of the forecast experiment."""
    s = result["summary"]
    regimes = list(result["regimes"])
    d = result["data"]
    m = result["model"]
    lines = [
        f"# 24 h flare forecast: {Path(d['path']).name}"
        + (f" + {Path(result['generated']['path']).name}" if result.get("generated") else ""),
        "",
        f"Label: {result['label']}. DeiT from scratch ({m['num_hidden_layers']} layers, hidden {m['hidden_size']}, "
        f"patch {m['patch_size']}), {result['settings']['epochs']} epochs, kept: {result['selection']}. "
        f"Mean ± std over {result['settings']['seeds']} seeds.",
        f"Test split: {d['counts']['test']['positive']} positive, {d['counts']['test']['negative']} negative; "
        f"climatological rate {d['climatological_rate_test']:.3f}.",
        "",
        "| Regime | training images (real + added positives) | TSS | HSS | TP | FP | FN | TN |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in regimes:
        info, c = result["regimes"][r], s[r]["contingency"]
        lines.append(f"| {info['title']} | {info['n_real']} + {info['added_positive']} | {fmt(s[r]['tss'])} | {fmt(s[r]['hss'])} | "
                     + " | ".join(fmt(c[k], digits=1) for k in ("tp", "fp", "fn", "tn")) + " |")
    lines += ["", "TSS = TP/(TP+FN) − FP/(FP+TN); HSS = 2(TP·TN − FN·FP) / [(TP+FN)(FN+TN) + (TP+FP)(FP+TN)]. "
              "\"undefined\": the test split lacks positives or negatives. Figure: forecast_skill.png."]
    if result.get("notes"):
        lines += ["", "Notes:", *[f"- {n}" for n in result["notes"]]]
    return "\n".join(lines) + "\n"
