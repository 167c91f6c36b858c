"""Experiment 1: does filling rare classes with generated images help a classifier more than classical augmentation?

Ramunno et al. 2024 (and Ramunno's AGU Fall Meeting 2023 talk, slide 8) train a DeiT to classify flare images under three
regimes and compare the average accuracy per class. We do the same, with every unpublished choice documented:

* **regimes** (all on the SAME real training split, tested on the SAME real test split, never on generated
  images):

  1. ``real`` — the real training images only (imbalanced, as the Sun makes them);
  2. ``classical`` — real + copies of real images of each class, each copy randomly flipped (left-right and
     up-down, each with probability ½), rotated by a uniform angle in ±10° and brightened by a log-uniform
     factor in [1/1.2, 1.2], until every class holds ``target`` images;
  3. ``generated`` — real + generated images whose *requested* class is that class, until every class holds
     ``target`` images.

* **target** = ``--target-per-class``, by default the largest real class count of the training split, so
  regimes 2 and 3 are balanced and see exactly the same number of images per class and per epoch (the fair
  comparison is 2 vs 3; regime 1 sees fewer steps per epoch). A class with more real images than the target
  keeps all of them (real images are never dropped). A class that cannot be filled (no real image to augment,
  no generated image of it) stays short, and the notes say so.
* **drawing** (seeded by the run's seed): images are drawn without replacement while the pool lasts; if a
  class needs more than the pool holds the pool is reused (a fresh permutation each pass) and the number of
  distinct images is recorded, so over-reuse of a small samples folder is visible.
* **classical augmentation** runs in physical units, with torch ops (no torchvision): model space → DN/s
  (the dataset's inverse intensity transform), flips, rotation by ``affine_grid``/``grid_sample`` (bilinear;
  the corners that enter the frame are 0 DN/s, i.e. the clip floor, as off-disk sky), brightness × factor,
  back to model space (which clips to the transform's [lo, hi]). Flipped Suns rotate the wrong way and have
  their poles swapped — it is the textbook baseline the paper compares against, not a physical model.
* **generated images** come from a samples folder (:mod:`flaresynth.samples`); their requested class is the
  ``label`` column, or the class of ``requested_flux`` where the label is empty. If their intensity transform or
  size differs from the dataset's they are mapped into the dataset's model space through DN/s: inverse
  transform → :func:`flaresynth.transforms.resize` (area mean when shrinking, bilinear when enlarging) →
  the dataset's forward transform — the path a dataset built at that size would have taken.
* **several channels** (a dataset built with ``--channels``): the classifier takes all C channels
  (``in_channels`` = C), each channel goes through its own transform, a classical copy flips, turns and
  brightens all channels of an image together, and a samples folder must hold the dataset's channels (same
  names, same order).

Classifier, training and model selection: :mod:`flaresynth.experiments.classifier`. Scores:
:mod:`flaresynth.experiments.stats`. Output (written atomically)::

    EXP/
      results.json            every number: per seed and regime, and mean ± std over seeds; counts; settings
      results.md              the table (per-class accuracy, balanced accuracy, macro-F1) as mean ± std
      per_class_accuracy.png  the paper's bar chart: accuracy per class, three regimes, error bars = std
      confusion.png           row-normalised mean confusion matrix of each regime
"""

from __future__ import annotations

import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from flaresynth import __version__
from flaresynth.errors import FlaresynthError, input_error
from flaresynth.experiments.classifier import ExperimentConfig, n_parameters, prepare_out, run_regimes
from flaresynth.io import atomic_dir, write_json
from flaresynth.transforms import channel_transforms

EXPERIMENT_FORMAT = "flaresynth-experiment/1"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
REGIMES = ("real", "weighted", "classical", "generated", "mixed")
REGIME_TITLES = {
    "real": "Only true data",
    "weighted": "Only true data, class-weighted loss",
    "classical": "True + classical augmentation",
    "generated": "True + generated data",
    "mixed": "True + generated + classical",
}
#: Bootstrap resamples behind every interval.
BOOTSTRAP_N = 1000
#: Where each training image came from (``TrainingSet.origin``).
ORIGINS = ("real", "classical", "generated")


# ------------------------------------------------------------------------------------------ generated images
def check_samples(gs, ds, check_classes: bool = True) -> None:
    """One-line errors when a samples folder cannot feed a classifier of this dataset."""
    classes = list(ds.classes)
    extra = [c for c in gs.classes if c not in classes] if check_classes else []
    if extra:
        raise input_error(gs.path / "manifest.json", "classes", f"{extra[0]!r} is not a class of the dataset {ds.path} ({', '.join(classes)})")
    labels = sorted({str(c) for c in gs.table["label"]} - {""} - set(classes)) if check_classes else []
    if labels:
        raise input_error(gs.path / "samples.csv", "label", f"{labels[0]!r} is not a class of the dataset {ds.path} ({', '.join(classes)})")
    if gs.images.shape[-1] > ds.image_size:
        raise input_error(gs.path / "samples.npy", "size", f"{gs.images.shape[-1]} px, larger than the dataset's "
                          f"{ds.image_size} px images: build the dataset at the generator's size (--size)")
    if gs.images.shape[1] != ds.images.shape[1]:
        raise input_error(gs.path / "samples.npy", "channels", f"{gs.images.shape[1]}, but the dataset {ds.path} has "
                          f"{ds.images.shape[1]} ({', '.join(ds.channels)})")
    names = gs.manifest.get("channels")  # absent in folders of older samplers: the dataset's, as many as it has
    if names is not None and list(names) != list(ds.channels):
        raise input_error(gs.path / "manifest.json", "channels", f"{', '.join(names)}, but the dataset {ds.path} has "
                          f"{', '.join(ds.channels)} (the same channels in the same order are needed)")
    if gs.images.shape[-1] != gs.images.shape[-2]:
        raise input_error(gs.path / "samples.npy", "shape", f"{tuple(gs.images.shape[-2:])}: expected square images")
    if len(gs.images) == 0:
        raise input_error(gs.path / "samples.npy", None, "holds no image")


def requested_class_index(gs, classes, scheme: str) -> np.ndarray:
    """Dataset class index of each generated image's requested class: its label, else its requested flux's class.

    -1 where neither is given.
    """
    from flaresynth.labels import flux_to_label_index

    lookup = {c: i for i, c in enumerate(classes)}
    labels = gs.table["label"].fillna("").astype(str).to_numpy()
    idx = np.array([lookup.get(c, -1) for c in labels], dtype=np.int64)
    if "requested_flux" in gs.table.columns:
        import pandas as pd

        flux = pd.to_numeric(gs.table["requested_flux"], errors="coerce").to_numpy(dtype=np.float64)
        from_flux = flux_to_label_index(np.where(np.isfinite(flux) & (flux > 0), flux, np.nan), scheme)
        idx = np.where((labels == "") & (from_flux >= 0), from_flux, idx)
    return idx


class GeneratedPool:
    """The generated images of a samples folder, mapped on demand into a dataset's model space and size."""

    def __init__(self, gs, ds, size: int | None = None, labels: np.ndarray | None = None):
        self.gs = gs
        self.size = int(size or ds.image_size)
        self.labels = requested_class_index(gs, ds.classes, ds.scheme) if labels is None else np.asarray(labels)
        self.target_transforms = ds.transforms()  # one per channel
        self.source_transforms = channel_transforms(gs.manifest.get("transform", ds.manifest["transform"]),
                                                    gs.images.shape[1], str(gs.path / "manifest.json"))
        self.notes: list[str] = []
        differ = [(s.to_dict(), t.to_dict()) for s, t in zip(self.source_transforms, self.target_transforms)
                  if s.to_dict() != t.to_dict()]
        self.identity = not differ and gs.images.shape[-1] == self.size
        if differ:
            self.notes.append("generated images mapped from transform " + "; ".join(f"{a} to the dataset's {b}" for a, b in differ)
                              + " (through DN/s)")
        if gs.images.shape[-1] != self.size:
            self.notes.append(f"generated images resized from {gs.images.shape[-1]} to {self.size} px "
                              "(inverse transform to DN/s, flaresynth.transforms.resize, forward transform)")

    def take(self, indices: np.ndarray, chunk: int = 256) -> np.ndarray:
        """float32 (len(indices), C, size, size) images in the dataset's model space."""
        from flaresynth.transforms import resize

        indices = np.asarray(indices, dtype=np.int64)
        c = self.gs.images.shape[1]
        out = np.empty((len(indices), c, self.size, self.size), dtype=np.float32)
        for start in range(0, len(indices), chunk):
            x = np.asarray(self.gs.images[indices[start : start + chunk]], dtype=np.float32)
            if not self.identity:
                x = per_channel(self.target_transforms, resize(per_channel(self.source_transforms, x, inverse=True), self.size))
            out[start : start + len(x)] = x
        return out


def working_size(gs, ds, allow_resize: bool) -> tuple[int, list[str]]:
    """Side (px) at which the classifier runs, and a note: the generator's size by default (real images are
    brought down to it, so no sharpness cue tells real from generated); with ``allow_resize`` the dataset's size,
    generated images upsampled and real images sent down to the generator's size and back up (the same path)."""
    g, d = int(gs.images.shape[-1]), ds.image_size
    if g == d:
        return d, []
    if allow_resize:
        return d, [f"--allow-resize: generated {g} px images upsampled to the dataset's {d} px; real images sent "
                   f"down to {g} px and back up, so both went through the same resolution"]
    return g, [f"the classifier runs at the generator's {g} px: real {d} px images brought down to it (through DN/s)"]


def real_at_size(ds, rows, size: int, via: int | None = None) -> np.ndarray:
    """Real images of ``rows`` at ``size`` px (model space), resampled through DN/s; ``via``: first down to that
    size (the path generated images took with --allow-resize)."""
    from flaresynth.transforms import resample

    x = np.asarray(ds.images[np.asarray(rows, dtype=np.int64)], dtype=np.float32)
    t = ds.transforms()
    if via is not None and via < x.shape[-1]:
        x = resample(x, t, via)
    return resample(x, t, size)


# ----------------------------------------------------------------------------------- classical augmentation
@dataclass
class ClassicalAugmentation:
    """Random flips, small rotations and brightness changes (see the module docstring)."""

    flips: bool = True
    rotation_deg: float = 10.0
    brightness: float = 0.2  # factor drawn log-uniformly in [1/(1+b), 1+b]


def per_channel(transforms, x, inverse: bool = False):
    """Model space -> DN/s (``inverse``) or back of (N, C, H, W) images (numpy or torch), each channel through its
    own transform; ``transforms``: a list of one per channel, or one :class:`~flaresynth.transforms.IntensityTransform`
    for every channel."""
    if not isinstance(transforms, (list, tuple)):
        return transforms.inverse(x) if inverse else transforms.forward(x)
    parts = [(t.inverse if inverse else t.forward)(x[:, c]) for c, t in enumerate(transforms)]
    if hasattr(x, "detach"):  # torch
        import torch

        return torch.stack(parts, dim=1)
    return np.stack(parts, axis=1)


def classical_augment(x, transform, params: ClassicalAugmentation, generator):
    """Augmented copies of model-space images ``x`` (torch float32 (N, C, H, W)), drawn with ``generator``.

    Works in DN/s through ``transform`` (an :class:`~flaresynth.transforms.IntensityTransform`, or a list of one
    per channel) so that the rotation interpolates intensities, not logarithms, and brightness is a
    multiplicative factor. Several channels move together: one flip, angle and brightness factor per image.
    """
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    dn = per_channel(transform, x, inverse=True).to(torch.float32)
    if params.flips:
        h = torch.rand(n, generator=generator) < 0.5
        v = torch.rand(n, generator=generator) < 0.5
        dn = torch.where(h[:, None, None, None], dn.flip(-1), dn)
        dn = torch.where(v[:, None, None, None], dn.flip(-2), dn)
    if params.rotation_deg:
        angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(params.rotation_deg)
        cos, sin = torch.cos(angle), torch.sin(angle)
        zero = torch.zeros_like(cos)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        grid = F.affine_grid(theta, list(dn.shape), align_corners=False)
        dn = F.grid_sample(dn, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if params.brightness:
        log_b = math.log(1.0 + params.brightness)
        factor = torch.exp((torch.rand(n, generator=generator) * 2 - 1) * log_b)
        dn = dn * factor[:, None, None, None]
    return per_channel(transform, dn)


# ------------------------------------------------------------------------------------------- training sets
@dataclass
class TrainingSet:
    """The training images of one regime: real ones first, then the added ones."""

    regime: str
    images: np.ndarray  # float32 (N, C, H, W), model space
    labels: np.ndarray  # int64 class index
    origin: np.ndarray  # int8 index into ORIGINS
    source: np.ndarray  # dataset row (real, classical: the augmented original) or samples row (generated)
    class_weights: np.ndarray | None = None  # cross-entropy weights (regime "weighted"), None = unweighted

    def counts(self, n_classes: int) -> dict:
        """Images per class index, by origin (lists of length n_classes)."""
        return {o: np.bincount(self.labels[self.origin == i], minlength=n_classes).tolist() for i, o in enumerate(ORIGINS)}


def draw(pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` items of ``pool``: a random permutation, repeated (each pass freshly shuffled) if ``n > len(pool)``."""
    pool = np.asarray(pool)
    if n <= 0:
        return pool[:0]
    if len(pool) == 0:
        raise ValueError("cannot draw from an empty pool")
    passes = [rng.permutation(pool) for _ in range(math.ceil(n / len(pool)))]
    return np.concatenate(passes)[:n]


def fill_counts(real_counts, target: int) -> np.ndarray:
    """Images to add per class so each reaches ``target`` (0 where the real count already reaches it)."""
    return np.maximum(0, int(target) - np.asarray(real_counts, dtype=np.int64))


def make_training_sets(
    ds,
    rows: np.ndarray,
    labels: np.ndarray,
    needed: np.ndarray,
    regimes,
    seed: int,
    pool: GeneratedPool | None = None,
    pool_labels: np.ndarray | None = None,
    augmentation: ClassicalAugmentation | None = None,
    real_images: np.ndarray | None = None,
) -> dict[str, TrainingSet]:
    """The training set of each regime for one seed.

    Parameters
    ----------
    ds : the dataset folder (for its images and intensity transform).
    rows, labels : dataset rows of the real training images and their class index (the same for every regime).
    needed : images to add per class index (regimes ``classical`` and ``generated``).
    pool, pool_labels : generated images and the class index each may fill (-1: none); needed for ``generated``.
    real_images : ``ds.images[rows]`` if already loaded (saves reading it again for every seed).
    """
    import torch

    augmentation = augmentation or ClassicalAugmentation()
    rows = np.asarray(rows, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    x_real = np.asarray(ds.images[rows], dtype=np.float32) if real_images is None else real_images
    sets: dict[str, TrainingSet] = {}
    needed = np.asarray(needed, dtype=np.int64)
    for regime in regimes:
        added_x, added_y, added_src, added_origin = [], [], [], []
        if regime == "mixed":  # half of each class's images generated, half classical (the other fills a gap)
            have_gen = (np.bincount(pool_labels[pool_labels >= 0], minlength=len(needed)) > 0
                        if pool_labels is not None else np.zeros(len(needed), bool))
            have_cla = np.bincount(labels, minlength=len(needed)) > 0
            n_gen = np.where(have_cla, (needed + 1) // 2, needed) * have_gen
            parts = (("classical", needed - n_gen), ("generated", n_gen))
        elif regime in ("classical", "generated"):
            parts = ((regime, needed),)
        elif regime in ("real", "weighted"):
            parts = ()
        else:
            raise ValueError(f"unknown regime {regime!r}")
        for kind, counts in parts:
            if kind == "classical":
                rng = np.random.default_rng([seed, 1])
                gen = torch.Generator().manual_seed(int(seed))
                transform = ds.transforms()
                for c, n in enumerate(counts):
                    have = np.flatnonzero(labels == c)
                    if n <= 0 or len(have) == 0:
                        continue
                    pick = draw(have, int(n), rng)
                    for start in range(0, len(pick), 256):
                        part = torch.from_numpy(x_real[pick[start : start + 256]])
                        added_x.append(classical_augment(part, transform, augmentation, gen).numpy())
                    added_y.append(np.full(len(pick), c, dtype=np.int64))
                    added_src.append(rows[pick])
                    added_origin.append(np.full(len(pick), ORIGINS.index("classical"), np.int8))
            else:
                if pool is None or pool_labels is None:
                    raise ValueError(f"the {regime!r} regime needs a pool of generated images")
                rng = np.random.default_rng([seed, 2])
                for c, n in enumerate(counts):
                    have = np.flatnonzero(pool_labels == c)
                    if n <= 0 or len(have) == 0:
                        continue
                    pick = draw(have, int(n), rng)
                    added_x.append(pool.take(pick))
                    added_y.append(np.full(len(pick), c, dtype=np.int64))
                    added_src.append(pick)
                    added_origin.append(np.full(len(pick), ORIGINS.index("generated"), np.int8))
        weights = None
        if regime == "weighted":  # inverse class frequency, N / (K · N_c), over the classes present
            n_c = np.bincount(labels, minlength=len(needed)).astype(np.float64)
            present = n_c > 0
            weights = np.where(present, len(labels) / (present.sum() * np.maximum(n_c, 1)), 0.0)
        sets[regime] = TrainingSet(
            regime=regime,
            images=np.concatenate([x_real, *added_x]) if added_x else x_real,
            labels=np.concatenate([labels, *added_y]),
            origin=np.concatenate([np.zeros(len(rows), np.int8), *added_origin]),
            source=np.concatenate([rows, *added_src]),
            class_weights=weights,
        )
    return sets


def fill_report(labels, needed, pool_labels, classes, regimes) -> tuple[dict, list[str]]:
    """Per regime and class: real, added and distinct added images; plus notes on classes left short."""
    labels = np.asarray(labels)
    real = np.bincount(labels, minlength=len(classes))
    info, notes = {}, []
    for regime in regimes:
        pooled = (np.bincount(pool_labels[pool_labels >= 0], minlength=len(classes)) if pool_labels is not None
                  else np.zeros(len(classes), dtype=np.int64))
        available = {"classical": real, "generated": pooled, "mixed": real + pooled}.get(
            regime, np.zeros(len(classes), dtype=np.int64))
        added = np.where(available > 0, needed, 0) if regime not in ("real", "weighted") else np.zeros(len(classes), dtype=np.int64)
        distinct = np.minimum(added, available)
        info[regime] = {
            "title": REGIME_TITLES.get(regime, regime),
            "real": {c: int(real[i]) for i, c in enumerate(classes)},
            "added": {c: int(added[i]) for i, c in enumerate(classes)},
            "added_distinct": {c: int(distinct[i]) for i, c in enumerate(classes)},
            "total": {c: int(real[i] + added[i]) for i, c in enumerate(classes)},
            "n_real": int(real.sum()),
            "n_added": int(added.sum()),
        }
        for i, c in enumerate(classes):
            if regime not in ("real", "weighted") and needed[i] > 0 and available[i] == 0:
                what = {"classical": "real training image to augment", "generated": "generated image requested as it",
                        "mixed": "real training image nor generated image of it"}[regime]
                notes.append(f"{regime}: class {c} has no {what}; left at {int(real[i])} instead of {int(real[i] + needed[i])}")
            elif regime == "generated" and added[i] > distinct[i]:
                notes.append(f"generated: class {c} needed {int(added[i])} images but the samples folder holds "
                             f"{int(distinct[i])}; each was reused up to {math.ceil(added[i] / distinct[i])} times")
    return info, notes


# ---------------------------------------------------------------------------------------------- the run
@dataclass
class AugmentConfig(ExperimentConfig):
    """Settings of the augmentation experiment (plus those of :class:`ExperimentConfig`)."""

    target_per_class: int | None = None
    augmentation: ClassicalAugmentation = field(default_factory=ClassicalAugmentation)

    def validate(self) -> None:
        super().validate()
        if self.target_per_class is not None and self.target_per_class < 1:
            raise FlaresynthError(f"--target-per-class {self.target_per_class}: expected at least 1")


def run_augment(data, generated, out, config: AugmentConfig | None = None, progress: bool = True, log=None) -> dict:
    """Run the augmentation experiment and write EXP (see the module docstring); returns results.json's content.

    Parameters
    ----------
    data : dataset folder (its train split trains, its val split selects the epoch, its test split scores).
    generated : samples folder whose requested classes are classes of the dataset.
    out : experiment folder to write (replaced only if it is an earlier experiment folder).
    """
    from flaresynth.dataset import check_task, open_dataset
    from flaresynth.experiments.stats import (
        aggregate_classification,
        classification_intervals,
        classification_scores,
        event_groups,
    )
    from flaresynth.samples import open_samples

    cfg = config or AugmentConfig()
    cfg.validate()
    t0 = time.perf_counter()
    out = Path(out)
    check_task(data, "images", "flaresynth experiment augment")
    ds = open_dataset(data)
    gs = open_samples(generated)
    check_samples(gs, ds)
    prepare_out(out, RESULTS_JSON)
    classes = list(ds.classes)
    k = len(classes)
    size, size_notes = working_size(gs, ds, cfg.allow_resize)
    via = int(gs.images.shape[-1]) if cfg.allow_resize else None
    spec = cfg.spec(size, ds.images.shape[1], k)
    spec.validate()
    y_all = ds.label_index()
    train, val, test = (ds.split_indices(s) for s in ("train", "val", "test"))
    if len(train) == 0 or len(test) == 0:
        raise input_error(ds.path / "labels.csv", "split", f"{len(train)} train and {len(test)} test images: need both")
    real_counts = np.bincount(y_all[train], minlength=k)
    target = int(cfg.target_per_class or real_counts.max())
    needed = fill_counts(real_counts, target)
    pool = GeneratedPool(gs, ds, size=size)
    regimes_info, notes = fill_report(y_all[train], needed, pool.labels, classes, REGIMES)
    notes = size_notes + pool.notes + notes
    if (pool.labels < 0).any():
        notes.append(f"{int((pool.labels < 0).sum())} generated images have no requested class and were not used")
    if log:
        for n in notes:
            log(n)
    x_real = real_at_size(ds, train, size, via)
    val_xy = (real_at_size(ds, val, size, via), y_all[val])
    test_xy = (real_at_size(ds, test, size, via), y_all[test])

    def make_sets(seed):
        return make_training_sets(ds, train, y_all[train], needed, REGIMES, seed, pool=pool, pool_labels=pool.labels,
                                  augmentation=cfg.augmentation, real_images=x_real)

    runs = run_regimes(make_sets, list(REGIMES), spec, cfg, val_xy, test_xy,
                       lambda yt, pt, yv, pv: classification_scores(yt, pt.argmax(axis=1), classes), progress=progress)
    summary = {r: aggregate_classification([x["scores"] for x in runs if x["regime"] == r], classes) for r in REGIMES}
    # grouped bootstrap over the test split's independent units (flare events; days for quiet frames)
    test_labels = ds.labels.iloc[test]
    groups = event_groups(test_labels["time"].to_numpy(), test_labels.get("event_id", pd.Series([""] * len(test))).to_numpy())
    y_test = y_all[test]
    independent = {c: int(len(np.unique(groups[y_test == i]))) for i, c in enumerate(classes)}
    for r in REGIMES:
        preds = [x.pop("proba_test").argmax(axis=1) for x in runs if x["regime"] == r]
        for x, p in zip([x for x in runs if x["regime"] == r], preds):
            x["test_predictions"] = p.tolist()
        summary[r]["intervals"] = classification_intervals(y_test, preds, groups, classes, seed=cfg.seed)
    for r in REGIMES:
        summary[r]["seconds_per_epoch"] = _mean([x["training"]["seconds_per_epoch"] for x in runs if x["regime"] == r])

    from flaresynth.experiments.classifier import build_classifier

    result = {
        "format": EXPERIMENT_FORMAT,
        "experiment": "augment",
        "data": {**_data_info(ds, y_all, classes), "independent_units_test": independent,
                 "flux_convention": ds.manifest.get("flux_convention"),
                 "split_rule": (ds.manifest.get("splits") or {}).get("rule")},
        "bootstrap": {"unit": "flare event (flare frames) or UTC day (other frames) of the test split",
                      "n_units": int(len(np.unique(groups))), "n_boot": BOOTSTRAP_N, "level": 0.95,
                      "statistic": "the metric averaged over seeds, recomputed on each resample"},
        "generated": {"path": str(gs.path), "n": int(len(gs.images)), "generator": gs.manifest.get("generator"),
                      "size": int(gs.images.shape[-1]), "classifier_size": size, "allow_resize": cfg.allow_resize,
                      "available": {c: int((pool.labels == i).sum()) for i, c in enumerate(classes)}},
        "target_per_class": target,
        "regimes": regimes_info,
        "settings": asdict(cfg),
        "model": {"architecture": "transformers.DeiTForImageClassification", **asdict(spec),
                  "parameters": n_parameters(build_classifier(spec, 0))},
        "selection": "best epoch by balanced accuracy on the real val split" if len(val) and cfg.selection == "best-val"
                     else "last epoch",
        "runs": runs,
        "summary": summary,
        "notes": notes,
        "versions": versions(),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    from flaresynth.experiments import plots

    with atomic_dir(out, overwrite=True) as tmp:
        figures = {
            "per_class_accuracy": plots.per_class_accuracy(summary, classes, REGIMES, REGIME_TITLES, tmp / "per_class_accuracy.png",
                                                           title=f"Average accuracy per class ({cfg.seeds} seeds, test split)",
                                                           support=result["data"]["counts"]["test"]),
            "confusion": plots.confusion_matrices(summary, classes, REGIMES, REGIME_TITLES, tmp / "confusion.png"),
        }
        result["figures"] = {k_: Path(v).name for k_, v in figures.items()}
        write_json(tmp / RESULTS_JSON, result)
        (tmp / RESULTS_MD).write_text(augment_markdown(result))
    return result


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _data_info(ds, y_all, classes) -> dict:
    return {
        "path": str(ds.path),
        "data_hash": ds.manifest.get("data_hash"),
        "scheme": ds.scheme,
        "classes": list(classes),
        "image_size": ds.image_size,
        "channels": ds.channels,
        "counts": {s: {c: int((y_all[ds.split_indices(s)] == i).sum()) for i, c in enumerate(classes)}
                   for s in ("train", "val", "test")},
    }


def versions() -> dict:
    """Versions of the packages behind the numbers (recorded in results.json)."""
    import importlib.metadata as md

    v = {"flaresynth": __version__, "python": platform.python_version()}
    for pkg in ("numpy", "torch", "transformers"):
        try:
            v[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return v


def fmt(stat: dict, percent: bool = False, digits: int = 3) -> str:
    """``mean ± std`` of a :func:`~flaresynth.experiments.stats.mean_std` dict; "undefined" without a value."""
    if stat is None or stat.get("mean") is None:
        return "undefined"
    scale, unit = (100.0, " %") if percent else (1.0, "")
    d = 1 if percent else digits
    return f"{stat['mean'] * scale:.{d}f} ± {stat['std'] * scale:.{d}f}{unit}"


def fmt_interval(ci: dict | None, percent: bool = False, digits: int = 3) -> str:
    """``[low, high]`` of a :func:`~flaresynth.experiments.stats.grouped_bootstrap` interval."""
    if not ci or ci.get("low") is None:
        return "[undefined]"
    scale, d = (100.0, 1) if percent else (1.0, digits)
    return f"[{ci['low'] * scale:.{d}f}, {ci['high'] * scale:.{d}f}]"


def noise_verdicts(summary: dict, regimes, key: str, titles: dict, baseline: str = "real") -> list[str]:
    """"<regime>: within noise / above / below" against ``baseline`` by overlap of the bootstrap intervals."""
    from flaresynth.experiments.stats import intervals_overlap

    base = summary.get(baseline, {}).get("intervals", {}).get(key)
    out = []
    for r in regimes:
        if r == baseline:
            continue
        ci = summary[r].get("intervals", {}).get(key)
        overlap = intervals_overlap(base, ci)
        if overlap is None:
            continue
        verdict = "within noise" if overlap else ("above" if ci["low"] > base["high"] else "below")
        out.append(f"{titles.get(r, r)}: {verdict}")
    return out


def augment_markdown(result: dict) -> str:
    """results.md of the augmentation experiment."""
    classes = result["data"]["classes"]
    s = result["summary"]
    m = result["model"]
    regimes = list(result["regimes"])
    titles = [result["regimes"][r]["title"] for r in regimes]
    test = result["data"]["counts"]["test"]
    lines = [
        f"# Augmentation experiment: {Path(result['data']['path']).name} + {Path(result['generated']['path']).name}",
        "",
        f"DeiT classifier trained from scratch ({m['num_hidden_layers']} layers, hidden {m['hidden_size']}, "
        f"patch {m['patch_size']}, {m['parameters'] / 1e6:.2f} M parameters) for {result['settings']['epochs']} epochs; "
        f"kept: {result['selection']}. Tested on the real test split ({sum(test.values())} images). "
        f"Mean ± std over {result['settings']['seeds']} seeds. Target per class: {result['target_per_class']}.",
        "",
        "## Accuracy per class (recall) on the real test split",
        "",
        "| Class (test images) | " + " | ".join(titles) + " |",
        "|---|" + "---|" * len(regimes),
    ]
    units = result["data"].get("independent_units_test", {})
    for c in classes:
        lines.append(f"| {c} ({test[c]}; {units.get(c, '?')} independent) | "
                     + " | ".join(fmt(s[r]["per_class_accuracy"][c], percent=True) for r in regimes) + " |")
    for key, name in (("balanced_accuracy", "balanced accuracy"), ("macro_f1", "macro-F1"), ("accuracy", "accuracy (all images)")):
        cells = []
        for r in regimes:
            ci = s[r].get("intervals", {}).get(key)
            cells.append(fmt(s[r][key], percent=key != "macro_f1") + (" " + fmt_interval(ci, percent=key != "macro_f1") if ci else ""))
        lines.append(f"| **{name}** | " + " | ".join(cells) + " |")
    if all("intervals" in s[r] for r in regimes):
        lines += ["", "## F1 per class with 95 % grouped-bootstrap intervals", "",
                  "| Class | " + " | ".join(titles) + " |", "|---|" + "---|" * len(regimes)]
        for c in classes:
            lines.append(f"| {c} | " + " | ".join(f"{fmt(s[r]['per_class_f1'][c])} {fmt_interval(s[r]['intervals']['per_class_f1'][c])}"
                                              for r in regimes) + " |")
        verdicts = noise_verdicts(s, regimes, "balanced_accuracy", REGIME_TITLES)
        if verdicts:
            lines += ["", "Against the real-only regime (balanced accuracy): " + "; ".join(verdicts) + "."]
        b = result.get("bootstrap", {})
        lines += ["", f"Intervals: 95 % percentile bootstrap over {b.get('n_units', '?')} independent units of the "
                  f"test split ({b.get('unit', '')}), {b.get('n_boot', '?')} resamples; the statistic is the seed "
                  "mean. \"within noise\": the two intervals overlap."]
    lines += ["", "## Training images per class (real + added)", "",
              "| Regime | " + " | ".join(classes) + " | total | seconds/epoch |", "|---|" + "---|" * (len(classes) + 2)]
    for r in regimes:
        info = result["regimes"][r]
        cells = [f"{info['real'][c]} + {info['added'][c]}" for c in classes]
        lines.append(f"| {info['title']} | " + " | ".join(cells) + f" | {info['n_real'] + info['n_added']} | "
                     f"{s[r]['seconds_per_epoch']:.3g} |")
    lines += ["", "Per-class accuracy is undefined for a class absent from the test split. Balanced accuracy and "
              "macro-F1 average over the classes present in the test split. Figures: per_class_accuracy.png, confusion.png."]
    if result.get("notes"):
        lines += ["", "Notes:", *[f"- {n}" for n in result["notes"]]]
    return "\n".join(lines) + "\n"
