"""``flaresynth evaluate``: compare a samples folder with the real dataset it imitates.

Reads a dataset folder (:mod:`flaresynth.dataset`) and a samples folder (:mod:`flaresynth.samples`) and
writes, atomically, an evaluation folder::

    EVAL/
      metrics.json   every number, with settings, notes and per-class / per-cluster detail
      metrics.md     the paper-shaped table: metric | generated | real-vs-real benchmark | ideal
      judge/         the judge CNN, when it was trained here (reused by the next run into EVAL)
      judge_seed<n>/ the ensemble's other judges (``judges`` > 1), likewise
      figures/       class_grid.png, std_maps.png, tsne_<encoder>.png, class_distribution.png (several channels:
                     also class_grid_<ch>.png, rgb_grid.png, channel_class_grid.png)

``metrics.json["metrics"]`` maps each metric name to ``{"value", "std", "benchmark", "benchmark_std",
"benchmark_kind", "ideal"}`` (``None`` where undefined). Names: ``CE_<enc>``, ``CD_<enc>``, ``CS_<enc>``,
``FD_<enc>`` (``FID`` for Inception only), ``KID_<enc>`` for each encoder ``<enc>`` in ``domain``, ``effnet``,
``clip``, ``dinov2``, ``inception``; ``F1_judge``, ``precision_judge``, ``recall_judge``, ``accuracy_judge``;
``F1_judge_ensemble`` and its three companions and ``FD_domain_ensemble`` with ``judges`` > 1; the same four with ``_referee`` when the
referee ran (``_referee_hot`` for the hot-channel referee). On
several channels also ``<metric>_<channel>`` for the per-channel judges and encoders (``F1_judge_94A``,
``FD_domain_171A``...) and ``XC_ratios`` (cross-channel consistency). ``details`` holds per-cluster values, per-class
precision/recall/F1, confusion matrices, the encoders' weights hashes and the judge's training record.

What is compared (Ramunno et al. 2024):

* **Distribution metrics, per feature encoder** (:mod:`flaresynth.metrics.features`): cluster error,
  distance and std (CE/CD/CS, :mod:`flaresynth.metrics.cluster`), Fréchet distance and KID
  (:mod:`flaresynth.metrics.frechet`). The real images are those of ``--split`` (default ``test``: never seen
  by the judge or, if the generator was trained on ``train``, by the generator). Every resampling splits them
  into two random halves: half A is the reference; the generated set and half B (the **real-vs-real
  benchmark**) are each compared with A at the same sample size ``min(|B|, N_generated)`` — FD is biased
  upwards at small sizes, so only same-size numbers can be set side by side. Values are mean ± std over
  ``--repeats`` resamplings (KID: the std is its spread over 100 random subsets, averaged over the
  resamplings). ``FD_<encoder>_all`` (in ``details``) is the FD of all generated against all real images.
* **Judge F1** (:mod:`flaresynth.metrics.judge`): a CNN trained on the real training split classifies the
  generated images; precision / recall / F1 (macro over requested classes) against the *requested* class,
  beside the same judge on the real test split (the ceiling). One judge is a noisy instrument: its real-test F1
  moves with nothing but its training seed. ``judges`` = J > 1 trains J − 1 more (seeds ``seed + 1`` ...,
  kept in ``EVAL/judge_seed<n>``, with ``--judge PATH`` at ``PATH_seed<n>``) and scores the generated and the
  real test images with their **ensemble** (mean softmax probabilities): ``F1_judge_ensemble`` beside the
  ensemble's own ceiling, and each judge's F1 and ceiling in ``details.judge_ensemble``. ``FD_domain`` and the
  other ``_domain`` metrics stay in the first judge's features (an ensemble has no single feature space), but one
  judge's features move FD too (the same images have measured 1.6-6.3× their real-vs-real benchmark under three
  judges of one recipe): ``FD_domain_ensemble`` is FD_domain in every judge's features on the same resamplings,
  averaged over the judges (its benchmark likewise), with each judge's FD, benchmark and ratio in
  ``details.FD_domain_judges``. Samples
  with no requested class (an unconditional generator) get the first judge only.
* **Physical referee** (simulated Sun only): :mod:`flaresynth.metrics.referee`, fitted on the training split, turns each image,
  mapped back to DN/s, into an XRS-B flux; its GOES class against the requested one gives a second,
  physics-based F1, beside the referee on the real test images.

Image size: everything runs at the generated images' size. When the real images have another size they are
brought to it through physical units: inverse intensity transform to DN/s, :func:`flaresynth.transforms.resize`
(area-weighted mean when shrinking, bilinear when enlarging), forward transform — the same path a dataset
built at that size would have taken. If the samples folder's intensity transform differs from the
dataset's, the generated images are mapped into the dataset's model space the same way (DN/s in between).

Several AIA channels (a dataset built with ``--channels``): the samples folder must hold the dataset's channels,
same names in the same order (else one line, nothing written); each channel goes through its own transform.

* the judge takes all C channels (so ``FD_domain``, ``KID_domain``, ``CE/CD/CS_domain`` and ``F1_judge`` see the
  channels together, their agreement included) and, unless ``channel_judges`` is off, one more judge is trained
  on each channel alone (``EVAL/judge_<ch>``, with ``--judge PATH`` at ``PATH_<ch>``), giving ``F1_judge_<ch>``
  and ``FD/KID/CE/CD/CS_domain_<ch>``: every metric per channel. The pretrained RGB encoders take one channel,
  so they run on each channel (``FD_effnet_<ch>``...);
* the referee reads 171 Å, found by name; where 94 and/or 131 Å are present a second referee is fitted the same
  way on those hot channels (``*_referee_hot``, :mod:`flaresynth.metrics.referee`);
* ``XC_ratios`` (:mod:`flaresynth.metrics.channels`): the channel ratios to 171 Å in each image's brightest
  region compared per class with the real images', beside the real-vs-real benchmark of the same resamplings
  and (in ``details.channels.shuffled``) the score of real images with channels shuffled within their class;
* figures: ``class_grid`` shows 171 Å, ``class_grid_<ch>`` each other channel (the same images), ``rgb_grid``
  the 211/193/171 Å composite (:func:`flaresynth.figures.rgb_composite`) and ``channel_class_grid`` one real and
  one generated image per class in every channel and the composite (:func:`flaresynth.figures.channel_class_grid`;
  which images in ``details.channel_class_grid``). None of these is written for one channel.

Requested classes: the ``label`` column of samples.csv; where ``requested_flux`` is given, its GOES class in
the dataset's scheme is used instead and disagreements are counted in the notes.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from flaresynth import __version__
from flaresynth.errors import FlaresynthError, input_error
from flaresynth.experiments.stats import day_groups
from flaresynth.io import atomic_dir, write_json
from flaresynth.labels import flux_to_label_index
from flaresynth.metrics.channels import ratio_names
from flaresynth.metrics.referee import Referee, fit_referee
from flaresynth.transforms import resample

EVAL_FORMAT = "flaresynth-eval/1"
METRICS_JSON = "metrics.json"
METRICS_MD = "metrics.md"
REFEREE_MODES = ("auto", "on", "off")
#: The referee's channel (171 Å, as in the paper) and the hot channels of the second referee, by name.
REFEREE_CHANNEL = "171A"
HOT_CHANNELS = ("94A", "131A")

#: Ideal value of each metric family.
IDEAL = {"CE": 0.0, "CD": 1.0, "CS": 1.0, "FD": 0.0, "FID": 0.0, "KID": 0.0, "F1": 1.0, "precision": 1.0,
         "recall": 1.0, "accuracy": 1.0, "XC": 0.0}


@dataclass
class EvaluateConfig:
    """Settings of one evaluation (all recorded in metrics.json)."""

    features: list[str] = field(default_factory=lambda: ["domain"])
    repeats: int = 5
    clusters: int = 10
    split: str = "test"
    seed: int = 0
    device: str = "cpu"
    judge: str | None = None
    referee: str = "auto"
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    batch_size: int = 64
    figures: bool = True
    tsne_max_points: int = 1500
    judge_max_epochs: int = 40
    judges: int = 1  # more than one: an ensemble of judges trained with seeds seed, seed + 1, ...
    channel_judges: bool = True  # several channels: also a judge (and domain features) per channel
    # a folder keeping the real images' features of each pretrained encoder, so evaluating several generators
    # against one dataset encodes the real split once (None: nothing kept)
    feature_cache: str | None = None

    def validate(self) -> None:
        from flaresynth.metrics.features import parse_feature_specs

        self.features = parse_feature_specs(self.features)
        if self.repeats < 1:
            raise FlaresynthError(f"--repeats {self.repeats}: expected at least 1")
        if self.clusters < 1:
            raise FlaresynthError(f"--clusters {self.clusters}: expected at least 1")
        if int(self.judges) != self.judges or self.judges < 1:
            raise FlaresynthError(f"--judges {self.judges!r}: expected a whole number >= 1")
        if self.split not in ("train", "val", "test", "all"):
            raise FlaresynthError(f"--split {self.split!r}: expected train, val, test or all")
        if self.referee not in REFEREE_MODES:
            raise FlaresynthError(f"--referee {self.referee!r}: expected one of {', '.join(REFEREE_MODES)}")


# ----------------------------------------------------------------------------------------- helpers
def _real_features(encoder, images: np.ndarray, cfg: EvaluateConfig, key: dict) -> np.ndarray:
    """The encoder's features of the real ``images``, read from ``cfg.feature_cache`` when an earlier evaluation
    stored them there under the same encoder weights, dataset hash, rows, channel and image size, else computed
    (and stored). The judge's own features (``domain``) are never cached: they belong to one judge."""
    if cfg.feature_cache is None or encoder.name == "domain":
        return encoder.encode(images, cfg.batch_size)
    record = {"encoder": encoder.info(), "data_hash": key["data_hash"], "channel": key["channel"],
              "shape": list(images.shape), "rows": hashlib.sha256(np.asarray(key["rows"], np.int64).tobytes()).hexdigest()}
    digest = hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:20]
    path = Path(cfg.feature_cache) / f"{encoder.name}-{digest}.npy"
    if path.is_file():
        return np.load(path)
    features = encoder.encode(images, cfg.batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with open(partial, "wb") as fh:  # written whole, then renamed: a reader never sees half a file
        np.save(fh, features)
    os.replace(partial, path)
    return features


def requested_labels(samples, classes, scheme: str) -> tuple[np.ndarray, dict]:
    """Requested class index of each generated image (-1: none), and notes on how it was obtained."""

    lookup = {c: i for i, c in enumerate(classes)}
    table = samples.table
    idx = np.array([lookup.get(str(c), -1) for c in table["label"].fillna("")], dtype=np.int64)
    notes = {"from_label": int((idx >= 0).sum())}
    if "requested_flux" in table.columns:
        import pandas as pd

        flux = pd.to_numeric(table["requested_flux"], errors="coerce").to_numpy(dtype=np.float64)
        has = np.isfinite(flux) & (flux > 0)
        from_flux = flux_to_label_index(np.where(has, flux, np.nan), scheme)
        notes["from_requested_flux"] = int(has.sum())
        notes["label_flux_disagree"] = int((has & (idx >= 0) & (idx != from_flux)).sum())
        idx = np.where(has, from_flux, idx)
    notes["without_class"] = int((idx < 0).sum())
    return idx, notes


def _check_compatible(ds, gs) -> None:
    """One-line errors for a samples folder that cannot be compared with the dataset: other classes, scheme,
    channels (count, names or order) or non-square images."""
    if list(gs.classes) != list(ds.classes):
        raise input_error(gs.path / "manifest.json", "classes", f"{list(gs.classes)}, but the dataset {ds.path} has {list(ds.classes)}")
    if gs.manifest.get("scheme", ds.scheme) != ds.scheme:
        raise input_error(gs.path / "manifest.json", "scheme", f"{gs.manifest.get('scheme')!r}, but the dataset has {ds.scheme!r}")
    names = gs.manifest.get("channels")
    if gs.images.shape[1] != ds.images.shape[1]:
        listed = f" ({', '.join(names)})" if names else ""
        raise input_error(gs.path / "samples.npy", "channels", f"{gs.images.shape[1]}{listed}, but the dataset has "
                          f"{ds.images.shape[1]} ({', '.join(ds.channels)})")
    # a folder written without channel names (older samplers, the ceVAE) holds the dataset's channels
    if names is not None and list(names) != list(ds.channels):
        raise input_error(gs.path / "manifest.json", "channels", f"{', '.join(names)}, but the dataset {ds.path} has "
                          f"{', '.join(ds.channels)} (the same channels in the same order are needed)")
    if gs.images.shape[-1] != gs.images.shape[-2]:
        raise input_error(gs.path / "samples.npy", "shape", f"{gs.images.shape[-2:]}: expected square images")
    _samples_transforms(gs, ds)  # a transform list that does not fit the channels stops here


def _samples_transforms(gs, ds) -> list:
    """One intensity transform per channel of the samples folder (the dataset's when it records none)."""
    return gs.transforms(ds.manifest["transform"])


def _generated_in_dataset_space(gs, ds) -> tuple[np.ndarray, str | None]:
    d_ts, g_ts = ds.transforms(), _samples_transforms(gs, ds)
    images = np.asarray(gs.images, dtype=np.float32)
    differ = [c for c, (g, d) in enumerate(zip(g_ts, d_ts)) if g.to_dict() != d.to_dict()]
    if not differ:
        return images, None
    images = images.copy()
    for c in differ:
        images[:, c] = d_ts[c].forward(g_ts[c].inverse(images[:, c]))
    mapped = "; ".join(f"{g_ts[c].to_dict()} to {d_ts[c].to_dict()}" for c in differ)
    return images, f"generated images mapped (through DN/s) from transform {mapped}"


def _prepare_out(out: Path) -> None:
    """Refuse to replace a folder that is not an earlier evaluation."""
    if out.exists():
        if not out.is_dir():
            raise input_error(out, None, "exists and is not a folder")
        if any(out.iterdir()) and not (out / METRICS_JSON).is_file():
            raise input_error(out, None, "exists and is not an evaluation folder (no metrics.json); choose another --out")


def _judge_for(ds, real_images, cfg: EvaluateConfig, out: Path, tmp: Path, log, channel: str | None = None,
               member: int = 0) -> tuple[object, dict]:
    """Load, reuse or train the judge; returns it and a note on where it came from.

    ``channel``: the judge of that channel alone (``real_images`` then holds it alone), kept in ``judge_<channel>``
    beside the all-channel judge (``--judge PATH``: ``PATH_<channel>``). ``member`` k > 0: the ensemble's judge
    trained with seed ``cfg.seed + k``, kept in ``judge_seed<seed>`` (``PATH_seed<seed>``)."""
    from flaresynth.metrics.judge import (
        check_judge,
        ensemble_member_path,
        load_judge,
        save_judge,
        shipped_judge,
        train_judge,
    )

    size = real_images.shape[-1]
    channels = [channel] if channel else None
    seed = cfg.seed + member

    def beside(first) -> Path:
        """This judge's folder, given the first (all-channel, seed cfg.seed) judge's folder."""
        if channel:
            return Path(f"{first}_{channel}")
        return ensemble_member_path(first, seed) if member else Path(first)

    name = beside("judge").name

    def train():
        """The judge the package ships for this dataset, size and seed (the same on every machine), else trained."""
        shipped = None if channel else shipped_judge(ds, size, seed, cfg.judge_max_epochs)
        if shipped is not None:
            return load_judge(shipped, cfg.device), "shipped"
        if log and (channel or member):
            log(f"judge of {channel} alone" if channel else f"judge {member + 1} of {cfg.judges} (seed {seed})")
        return train_judge(ds, real_images, seed=seed, device=cfg.device, log=log, max_epochs=cfg.judge_max_epochs,
                           channels=channels), "trained"

    if cfg.judge:
        path = beside(cfg.judge)
        if path.exists():
            judge = load_judge(path, cfg.device)
            check_judge(judge, ds, size, channels)
            return judge, {"source": "loaded", "path": str(path)}
        judge, source = train()
        save_judge(judge, path)
        return judge, {"source": source, "path": str(path)}
    cached = out / name
    if cached.is_dir():
        try:
            judge = load_judge(cached, cfg.device)
            check_judge(judge, ds, size, channels)
            shutil.copytree(cached, tmp / name)
            judge.path = out / name
            return judge, {"source": "reused from the previous evaluation in this folder", "path": str(out / name)}
        except FlaresynthError as exc:
            if log:
                log(f"not reusing {cached}: {exc}")
    judge, source = train()
    save_judge(judge, tmp / name)
    judge.path = out / name
    return judge, {"source": source, "path": str(out / name)}


def _mean_std(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std())


def _finite(x):
    """JSON-safe number: None for missing or undefined (NaN) values."""
    return None if x is None or not np.isfinite(x) else float(x)


def _entry(value, std, benchmark, benchmark_std, family: str, benchmark_kind: str = "real vs real") -> dict:
    """One metrics.json entry; ``None`` marks an undefined value (e.g. CS with no usable cluster)."""
    return {"value": _finite(value), "std": _finite(std), "benchmark": _finite(benchmark),
            "benchmark_std": _finite(benchmark_std), "benchmark_kind": benchmark_kind, "ideal": IDEAL[family]}


def fd_per_resampling(real_f, gen_f, plan) -> dict:
    """FD of each resampling's generated draw and of its real half B (the benchmark) against its real half A."""
    from flaresynth.metrics.frechet import frechet_distance

    fd = {"generated": [], "benchmark": []}
    for p in plan:
        ref = real_f[p["reference"]]
        fd["generated"].append(frechet_distance(ref, gen_f[p["generated"]]))
        fd["benchmark"].append(frechet_distance(ref, real_f[p["benchmark"]]))
    return fd


def fd_over_judges(per_judge: list[dict], seed: int) -> tuple[dict, list[dict]]:
    """``FD_domain_ensemble`` from each judge's :func:`fd_per_resampling` (the first judge's first): per resampling
    the mean over the judges, then mean ± std over the resamplings; and each judge's FD, benchmark and ratio."""
    one = len(per_judge[0]["generated"]) == 1  # a spread over one resampling is undefined, not 0
    (g, gs), (b, bs) = (_mean_std(np.mean([fd[k] for fd in per_judge], axis=0)) for k in ("generated", "benchmark"))
    judges = []
    for i, fd in enumerate(per_judge):
        value, bench = float(np.mean(fd["generated"])), float(np.mean(fd["benchmark"]))
        judges.append({"seed": seed + i, "value": value, "benchmark": bench,
                       "ratio": _finite(value / bench) if bench > 0 else None})
    return _entry(g, None if one else gs, b, None if one else bs, "FD"), judges


def distribution_metrics(real_f, gen_f, plan, name: str, cfg: EvaluateConfig) -> tuple[dict, dict]:
    """CE/CD/CS, FD and KID of one encoder's features; returns (metrics entries, details)."""
    from flaresynth.metrics.cluster import cluster_metrics
    from flaresynth.metrics.features import fd_metric_name
    from flaresynth.metrics.frechet import frechet_distance, kernel_distance

    fd = fd_per_resampling(real_f, gen_f, plan)
    kid = {"generated": [], "benchmark": []}
    kid_std = {"generated": [], "benchmark": []}
    for r, p in enumerate(plan):
        ref = real_f[p["reference"]]
        for which, other in (("generated", gen_f[p["generated"]]), ("benchmark", real_f[p["benchmark"]])):
            m, s = kernel_distance(ref, other, cfg.kid_subsets, cfg.kid_subset_size, seed=cfg.seed + r)
            kid[which].append(m)
            kid_std[which].append(s)
    clusters = cluster_metrics(real_f, gen_f, k=cfg.clusters, seed=cfg.seed, plan=plan)
    metrics = {}
    one = len(plan) == 1  # a spread over one resampling is undefined, not 0
    for m in ("CE", "CD", "CS"):
        g, b = clusters["generated"][m], clusters["benchmark"][m]
        metrics[f"{m}_{name}"] = _entry(g["mean"], None if one else g["std"], b["mean"], None if one else b["std"], m)
    fd_name = fd_metric_name(name)
    (g, gs), (b, bs) = _mean_std(fd["generated"]), _mean_std(fd["benchmark"])
    metrics[fd_name] = _entry(g, None if one else gs, b, None if one else bs, "FD")
    metrics[f"KID_{name}"] = _entry(float(np.mean(kid["generated"])), float(np.mean(kid_std["generated"])),
                                    float(np.mean(kid["benchmark"])), float(np.mean(kid_std["benchmark"])), "KID")
    details = {
        "clusters": clusters,
        "FD_per_resampling": fd,
        "KID_per_resampling": kid,
        f"{fd_name}_all": frechet_distance(real_f, gen_f),
    }
    return metrics, details


def _classification_entries(suffix: str, gen_report: dict, real_report: dict | None, kind: str) -> dict:
    out = {}
    for key, family in (("f1", "F1"), ("precision", "precision"), ("recall", "recall"), ("accuracy", "accuracy")):
        bench = real_report[key] if real_report else None
        out[f"{family}_{suffix}"] = _entry(gen_report[key], None, bench, None, family, benchmark_kind=kind)
    return out


def _ensemble_scores(ensemble: list, seed: int, gen_images, y_gen, test_images, y_test, classes) -> tuple[dict, dict]:
    """The judges' ensemble (the class of their mean probabilities, as
    :func:`~flaresynth.metrics.judge.ensemble_predict`) on the generated images and on the real test split (its
    ceiling): the ``*_judge_ensemble`` metrics, and the details with every judge's own F1 and ceiling beside the
    ensemble's reports. Each judge runs once on each set. Only called with generated images that request a class
    (:func:`evaluate` builds no ensemble otherwise)."""
    from flaresynth.metrics.classification import classification_report
    from flaresynth.metrics.judge import judge_probabilities

    judges = [j for j, _ in ensemble]
    p_gen = judge_probabilities(judges, gen_images)
    p_test = judge_probabilities(judges, test_images) if len(y_test) else None
    gen_report = classification_report(y_gen, p_gen.mean(axis=0).argmax(axis=1), classes)
    real_report = classification_report(y_test, p_test.mean(axis=0).argmax(axis=1), classes) if len(y_test) else None
    members = []
    for i, (_, note) in enumerate(ensemble):
        g = classification_report(y_gen, p_gen[i].argmax(axis=1), classes)
        r = classification_report(y_test, p_test[i].argmax(axis=1), classes) if len(y_test) else None
        members.append({"seed": seed + i, **note, "f1_generated": g["f1"], "f1_real_test": r["f1"] if r else None})
    metrics = _classification_entries("judge_ensemble", gen_report, real_report,
                                      f"real test split (ceiling of the {len(judges)} judges' ensemble)")
    return metrics, {"judges": members, "generated": gen_report, "real_test": real_report}


def _simulated_source(ds) -> bool:
    """True when the dataset's image store is a zarr root with attribute ``flaresynth_simulated`` = true.

    ``dataset build`` records the store's path as given: a relative one is looked for from the working directory,
    then beside the dataset folder (``build --sdoml sim/sdomlv2.zarr --out ds`` run in one folder and
    ``evaluate --real that/folder/ds`` run from another)."""
    src = (ds.manifest.get("sources") or {}).get("images")
    if not src:
        return False
    src = Path(str(src))
    if not src.exists() and not src.is_absolute() and getattr(ds, "path", None) is not None:
        src = Path(ds.path).resolve().parent / src
    if not src.exists():
        return False
    try:
        import zarr

        return bool(zarr.open_group(str(src), mode="r").attrs.get("flaresynth_simulated", False))
    except Exception:  # not a zarr store (FITS folder) or unreadable: not known to be simulated
        return False


def _dn_channels(ds, images: np.ndarray, channels) -> tuple[np.ndarray, list]:
    """DN/s of the named ``channels`` of model-space images (N, C, H, W): (N, H, W) for one channel, (N, K, H, W)
    for several, and each channel's (lo, hi) range (what its transform keeps)."""
    transforms = ds.transforms()
    pos = [list(ds.channels).index(c) for c in channels]
    planes = [transforms[k].inverse(np.asarray(images[:, k], dtype=np.float32)) for k in pos]
    clips = [(transforms[k].lo, transforms[k].hi) for k in pos]
    return (planes[0] if len(planes) == 1 else np.stack(planes, axis=1)), clips


def fit_split_referee(ds, real_images: np.ndarray, split: str = "train", channels=(REFEREE_CHANNEL,)) -> Referee:
    """The referee fitted on the dataset's ``split`` (model-space images (N, C, H, W) at the size it will
    judge, its ``channels`` mapped to DN/s; their ``label_flux``): never on the images it then scores."""
    idx = ds.split_indices(split)
    flux = ds.labels["label_flux"].to_numpy(dtype=np.float64)[idx]
    dn, clips = _dn_channels(ds, real_images[idx], channels)
    return fit_referee(dn, flux, clips=clips)


def referee_classify(images: np.ndarray, ds, referee: Referee, channels=(REFEREE_CHANNEL,)) -> tuple[np.ndarray, np.ndarray]:
    """The ``referee``'s (class index in the dataset's scheme, XRS-B flux) for model-space images (N, C, H, W).

    Its ``channels`` are mapped back to DN/s with the dataset's inverse transforms first. A flux with no class
    (NaN, <= 0) gets index -1: a wrong prediction for every class.
    """
    dn, _ = _dn_channels(ds, images, channels)
    flux = np.asarray(referee.estimate_flux(dn), dtype=np.float64).reshape(len(images))
    return np.asarray(flux_to_label_index(flux, ds.scheme), dtype=np.int64), flux


def _referee(ds, real_images, gen_images, y_gen, test_idx, y_real, mode: str) -> tuple[dict, dict, list[str]]:
    """Physics-based F1 from the independent referee (:mod:`flaresynth.metrics.referee`), fitted on the
    training split: on 171 Å (``*_referee``) and, where the dataset holds 94 and/or 131 Å, a second one on those
    hot channels (``*_referee_hot``); returns (metrics, details per referee, notes)."""
    from flaresynth.metrics.classification import classification_report

    if mode == "off":
        return {}, {}, ["referee off (--referee off)"]
    if mode == "auto" and not _simulated_source(ds):
        return {}, {}, ["referee skipped: the dataset's image store is not marked flaresynth_simulated"]
    has = y_gen >= 0
    if not has.any():
        return {}, {}, ["referee skipped: no generated image has a requested class"]
    which = []
    if REFEREE_CHANNEL in ds.channels:
        which.append(("referee", (REFEREE_CHANNEL,)))
    elif mode == "on":
        raise FlaresynthError(f"--referee on: the dataset has no {REFEREE_CHANNEL} channel ({', '.join(ds.channels)})")
    hot = tuple(c for c in HOT_CHANNELS if c in ds.channels)
    if hot:
        which.append(("referee_hot", hot))
    metrics, details, notes = {}, {}, []
    if not which:
        notes.append(f"referee skipped: the dataset has no {REFEREE_CHANNEL}, 94A or 131A channel")
    for suffix, channels in which:
        try:
            referee = fit_split_referee(ds, real_images, channels=channels)
        except FlaresynthError as exc:
            if mode == "on":
                raise FlaresynthError(f"--referee on: cannot fit the referee on the training split ({exc})") from None
            notes.append(f"{suffix.replace('_', ' ')} skipped: {exc}")
            continue
        pred_gen, flux_gen = referee_classify(gen_images[has], ds, referee, channels)
        gen_report = classification_report(y_gen[has], pred_gen, ds.classes)
        real_report, dex = None, None
        if len(test_idx):
            pred_real, flux_real = referee_classify(real_images[test_idx], ds, referee, channels)
            real_report = classification_report(y_real[test_idx], pred_real, ds.classes)
            true = ds.labels["label_flux"].to_numpy(dtype=np.float64)[test_idx]
            ok = np.isfinite(true) & (true > 0)
            dex = float(np.median(np.abs(np.log10(flux_real[ok]) - np.log10(true[ok])))) if ok.any() else None
        details[suffix] = {"channels": list(channels), "generated": gen_report, "real_test": real_report,
                           "real_test_median_abs_error_dex": dex, "fitted_on": f"train split ({referee.n_fit} images)",
                           "generated_flux_quantiles": np.quantile(flux_gen, [0.05, 0.5, 0.95]).tolist() if len(flux_gen) else None}
        metrics.update(_classification_entries(suffix, gen_report, real_report, "real test split"))
    return metrics, details, notes


def channel_consistency(ds, real_images, real_labels, gen_images, gen_labels, plan, seed: int = 0) -> tuple[dict, dict]:
    """The cross-channel metric ``XC_ratios`` (:mod:`flaresynth.metrics.channels`) of model-space images (real:
    the evaluated split, aligned with ``plan``); returns (metrics entry, details with the shuffled-channel value,
    per class and per ratio)."""
    from flaresynth.metrics.channels import consistency_metric, region_ratios, shuffle_channels_within_class

    transforms = ds.transforms()

    def ratios(images):
        dn = np.stack([t.inverse(np.asarray(images[:, c], dtype=np.float32)) for c, t in enumerate(transforms)], axis=1)
        return region_ratios(dn, ds.channels)

    names = ratio_names(ds.channels)
    real_r = ratios(real_images)
    shuffled_r = ratios(shuffle_channels_within_class(real_images, real_labels, seed=seed))
    result = consistency_metric(real_r, real_labels, ratios(gen_images), gen_labels, plan, ds.classes, names, shuffled_r)
    entry = _entry(result["value"], result["std"], result["benchmark"], result["benchmark_std"], "XC")
    details = {k: v for k, v in result.items() if k not in ("value", "std", "benchmark", "benchmark_std")}
    details["method"] = ("log10 ratio of each channel to 171 A in each image's brightest region (5x5 px at 64 px) "
                         "found on the sum of the channels' contrasts; per class and ratio the 1-Wasserstein distance "
                         "(dex) to the reference half, averaged; 'shuffled': the benchmark half with each channel "
                         "permuted among the images of its class")
    return entry, details


# ---------------------------------------------------------------------------------------------- main
def evaluate(real: str | Path, generated: str | Path, out: str | Path, config: EvaluateConfig | None = None, log=None) -> dict:
    """Evaluate a samples folder against a dataset folder; write EVAL (see the module docstring).

    Returns the content of metrics.json.
    """
    from flaresynth.dataset import open_dataset
    from flaresynth.metrics.classification import classification_report
    from flaresynth.metrics.cluster import resampling_plan
    from flaresynth.metrics.features import make_encoder
    from flaresynth.samples import open_samples

    cfg = config or EvaluateConfig()
    cfg.validate()
    t0 = time.perf_counter()
    out = Path(out)
    ds = open_dataset(real)
    gs = open_samples(generated)
    _check_compatible(ds, gs)
    _prepare_out(out)
    notes: list[str] = []

    size = int(gs.images.shape[-1])
    real_images = resample(ds.images, ds.transforms(), size)
    if ds.image_size != size:
        notes.append(f"real images brought from {ds.image_size} px to the generated {size} px "
                     "(inverse transform to DN/s, flaresynth.transforms.resize, forward transform)")
    gen_images, mapped = _generated_in_dataset_space(gs, ds)
    if mapped:
        notes.append(mapped)
    y_gen, label_notes = requested_labels(gs, ds.classes, ds.scheme)
    if label_notes.get("label_flux_disagree"):
        notes.append(f"{label_notes['label_flux_disagree']} samples.csv labels disagree with their requested_flux; the flux's class was used")
    if label_notes["without_class"]:
        notes.append(f"{label_notes['without_class']} generated images have no requested class: left out of the judge F1")
    y_real = ds.label_index()
    eval_idx = ds.split_indices(None if cfg.split == "all" else cfg.split)
    test_idx = ds.split_indices("test")
    # class-matched: the generated draw follows the real split's class shares (see resampling_plan)
    groups = day_groups(ds.labels["time"].to_numpy()[eval_idx], ds.labels["event_id"].to_numpy()[eval_idx])
    plan = resampling_plan(len(eval_idx), len(gen_images), cfg.repeats, cfg.seed, groups=groups,
                           real_labels=y_real[eval_idx], generated_labels=y_gen)
    notes.append("distribution metrics compare class-matched draws: generated images are drawn with the real "
                 "split's class shares")

    # the pretrained encoders first, so a wrong path fails before minutes of judge training
    encoders = {spec: make_encoder(spec, device=cfg.device) for spec in cfg.features if spec != "domain"}
    with atomic_dir(out, overwrite=True) as tmp:
        judge, judge_note = _judge_for(ds, real_images, cfg, out, tmp, log)
        # an unconditional samples folder requests no class: an ensemble would have nothing to score
        members = cfg.judges if (y_gen >= 0).any() else 1
        if members < cfg.judges:
            notes.append(f"--judges {cfg.judges}: no generated image has a requested class, so only the first judge "
                         "was trained (its features give the _domain metrics)")
        ensemble = [(judge, judge_note)] + [_judge_for(ds, real_images, cfg, out, tmp, log, member=k)
                                            for k in range(1, members)]
        multi = len(ds.channels) > 1
        channel_judges = {}
        if multi and cfg.channel_judges:
            for c, ch in enumerate(ds.channels):
                channel_judges[ch] = _judge_for(ds, real_images[:, [c]], cfg, out, tmp, log, channel=ch)
        metrics: dict = {}
        details: dict = {"encoders": {}}
        features = {}
        # (name, encoder, channel index or None for all channels): the judge's "domain" features see every
        # channel at once (and each channel's own judge that channel alone); the RGB encoders take one channel,
        # so on several channels they run on each channel separately
        runs = []
        for spec in cfg.features:
            if spec == "domain":
                runs.append(("domain", make_encoder(spec, device=cfg.device, judge=judge), None))
                for c, ch in enumerate(ds.channels):
                    if ch in channel_judges:
                        runs.append((f"domain_{ch}", make_encoder(spec, device=cfg.device, judge=channel_judges[ch][0]), c))
            elif multi:
                runs += [(f"{encoders[spec].name}_{ch}", encoders[spec], c) for c, ch in enumerate(ds.channels)]
            else:
                runs.append((encoders[spec].name, encoders[spec], None))
        for name, encoder, c in runs:
            if log:
                log(f"features: {encoder.spec} ({encoder.dim}-d)" + (f", {ds.channels[c]}" if c is not None else ""))
            sel = slice(None) if c is None else [c]
            real_f = _real_features(encoder, real_images[eval_idx][:, sel], cfg,
                                    {"data_hash": ds.manifest.get("data_hash"), "rows": eval_idx, "channel": c})
            gen_f = encoder.encode(gen_images[:, sel], cfg.batch_size)
            features[name] = (real_f, gen_f)
            entries, det = distribution_metrics(real_f, gen_f, plan, name, cfg)
            metrics.update(entries)
            details["encoders"][name] = {"encoder": encoder.info(), **({"channel": ds.channels[c]} if c is not None else {}), **det}
            k_used = det["clusters"]["k"]
            if k_used < cfg.clusters and not any("k-means" in n for n in notes):
                notes.append(f"k-means with K = {k_used} instead of {cfg.clusters}: the reference half has only "
                             f"{det['clusters']['n_reference']} images (at least 10 per cluster)")

        has = y_gen >= 0
        # an unconditional generator requests no class: its judge scores are undefined (None), not an error
        gen_pred = judge.predict(gen_images[has]) if has.any() else np.zeros(0, dtype=np.int64)
        gen_report = classification_report(y_gen[has], gen_pred, ds.classes)
        real_report = classification_report(y_real[test_idx], judge.predict(real_images[test_idx]), ds.classes) if len(test_idx) else None
        metrics.update(_classification_entries("judge", gen_report, real_report, "real test split (judge ceiling)"))
        details["judge"] = {**judge_note, "generated": gen_report, "real_test": real_report,
                            "training": judge.meta.get("training"), "architecture": judge.meta.get("architecture")}
        if len(ensemble) > 1 and "domain" in features:
            # FD in each further judge's features, on the same resamplings as the first judge's FD_domain
            per_judge = [details["encoders"]["domain"]["FD_per_resampling"]]
            for member, _ in ensemble[1:]:
                encoder = make_encoder("domain", device=cfg.device, judge=member)
                per_judge.append(fd_per_resampling(encoder.encode(real_images[eval_idx], cfg.batch_size),
                                                   encoder.encode(gen_images, cfg.batch_size), plan))
            metrics["FD_domain_ensemble"], details["FD_domain_judges"] = fd_over_judges(per_judge, cfg.seed)
        if len(ensemble) > 1:
            e_metrics, details["judge_ensemble"] = _ensemble_scores(ensemble, cfg.seed, gen_images[has], y_gen[has],
                                                                     real_images[test_idx], y_real[test_idx], ds.classes)
            metrics.update(e_metrics)
        for c, (ch, (cj, cj_note)) in enumerate(channel_judges.items()):
            g_rep = classification_report(y_gen[has], cj.predict(gen_images[has][:, [c]]) if has.any() else
                                          np.zeros(0, dtype=np.int64), ds.classes)
            r_rep = (classification_report(y_real[test_idx], cj.predict(real_images[test_idx][:, [c]]), ds.classes)
                     if len(test_idx) else None)
            metrics.update(_classification_entries(f"judge_{ch}", g_rep, r_rep, f"real test split ({ch} judge ceiling)"))
            details[f"judge_{ch}"] = {**cj_note, "generated": g_rep, "real_test": r_rep,
                                      "training": cj.meta.get("training")}

        ref_metrics, ref_details, ref_notes = _referee(ds, real_images, gen_images, y_gen, test_idx, y_real, cfg.referee)
        metrics.update(ref_metrics)
        details["referee"] = ref_details.get("referee") or {"note": "; ".join(ref_notes) or "no 171A channel"}
        if "referee_hot" in ref_details:
            details["referee_hot"] = ref_details["referee_hot"]
        notes += ref_notes

        xc_names = ratio_names(ds.channels)
        if xc_names:
            xc_entry, xc_details = channel_consistency(ds, real_images[eval_idx], y_real[eval_idx], gen_images, y_gen,
                                                       plan, seed=cfg.seed)
            metrics["XC_ratios"] = xc_entry
            details["channels"] = xc_details

        figures, layouts = {}, {}
        if cfg.figures:
            figures = _figures(tmp / "figures", ds, real_images, eval_idx, y_real, gen_images, y_gen, features, cfg, gs,
                               layouts)
        details.update(layouts)
        result = {
            "format": EVAL_FORMAT,
            "real": {"path": str(ds.path), "data_hash": ds.manifest.get("data_hash"), "split": cfg.split,
                     "n_split": int(len(eval_idx)), "n_test": int(len(test_idx)), "image_size": ds.image_size,
                     "evaluated_at_size": size, "scheme": ds.scheme, "classes": list(ds.classes),
                     "channels": list(ds.channels)},
            "generated": {"path": str(gs.path), "n": int(len(gen_images)), "generator": gs.manifest.get("generator"),
                          "counts": {c: int((y_gen == i).sum()) for i, c in enumerate(ds.classes)}, "labels": label_notes},
            "settings": asdict(cfg),
            "resampling": {"repeats": len(plan), "reference_size": int(len(plan[0]["reference"])),
                           "evaluated_size": int(len(plan[0]["generated"])),
                           "grouped": bool(plan[0]["grouped"]),
                           "n_groups": int(len(np.unique(groups))),
                           "method": ("disjoint halves of the real split made of whole days (days of one flare "
                                      "event merged), so no day lies in both halves" if plan[0]["grouped"] else
                                      "random disjoint halves of the real split (it spans a single day: no grouping "
                                      "possible)")
                                     + ": A = reference, B = benchmark; generated and B drawn to the same size; "
                                     "mean ± std over resamplings"},
            "metrics": metrics,
            "details": details,
            "figures": {k: str(Path("figures") / Path(v).name) for k, v in figures.items()},
            "notes": notes,
            "versions": {"flaresynth": __version__, "python": platform.python_version(), **_versions()},
            "seconds": round(time.perf_counter() - t0, 2),
        }
        if multi:
            details["per_channel"] = per_channel_rows(result)  # the same rows as metrics.md's per-channel table
        write_json(tmp / METRICS_JSON, result)
        (tmp / METRICS_MD).write_text(metrics_markdown(result))
    return result


def _figures(folder: Path, ds, real_images, eval_idx, y_real, gen_images, y_gen, features, cfg, gs,
             layouts: dict | None = None) -> dict:
    """Draw the evaluation's figures into ``folder``; returns {name: path}. ``layouts`` receives what a figure
    needs explaining beyond its picture (the images of ``channel_class_grid``)."""
    from flaresynth import figures as F

    layouts = {} if layouts is None else layouts
    paths = {}
    real_sel, real_y = real_images[eval_idx], y_real[eval_idx]
    channels = list(ds.channels)
    # class_grid and std_maps show 171 Å when present (the paper's channel), else the first channel
    main = channels.index(REFEREE_CHANNEL) if REFEREE_CHANNEL in channels else 0
    paths["class_grid"] = F.class_grid(real_sel, real_y, gen_images, y_gen, ds.classes, folder / "class_grid.png", seed=cfg.seed,
                                       channel=main, channel_name=channels[main] if len(channels) > 1 else None)
    paths["std_maps"] = F.std_maps(real_sel, real_y, gen_images, y_gen, ds.classes, folder / "std_maps.png", channel=main)
    if len(channels) > 1:
        for c, ch in enumerate(channels):
            if c != main:  # the same seed: the same images in every channel's grid
                paths[f"class_grid_{ch}"] = F.class_grid(real_sel, real_y, gen_images, y_gen, ds.classes,
                                                         folder / f"class_grid_{ch}.png", seed=cfg.seed, channel=c,
                                                         channel_name=ch)
        if set(F.RGB_CHANNELS) <= set(channels):
            paths["rgb_grid"] = F.class_grid(real_sel, real_y, gen_images, y_gen, ds.classes, folder / "rgb_grid.png",
                                             seed=cfg.seed, rgb_channels=channels)
        # every channel of one real and one generated image per class side by side: does a class look alike in
        # all channels at once? (the layout, i.e. which images, goes to metrics.json)
        layout = F.channel_class_layout(real_y, y_gen, ds.classes, channels, seed=cfg.seed)
        ranges = {t.channel: (t.lo, t.hi) for t in ds.transforms()}
        paths["channel_class_grid"] = F.channel_class_grid(real_sel, gen_images, layout, folder / "channel_class_grid.png",
                                                           ranges=ranges)
        layouts["channel_class_grid"] = {**layout, "real": [None if i is None else int(eval_idx[i]) for i in layout["real"]],
                                         "real_index": "row of the dataset's images.npy",
                                         "generated_index": "row of the samples folder's samples.npy"}
    for name, (rf, gf) in features.items():
        paths[f"tsne_{name}"] = F.tsne_figure(rf, real_y, gf, y_gen, ds.classes, folder / f"tsne_{name}.png",
                                              title=f"t-SNE of {name} features ({cfg.split} split and generated)",
                                              seed=cfg.seed, max_points=cfg.tsne_max_points)
        break  # one t-SNE (the first encoder): the slowest figure, and one is enough to look at
    counts = ds.manifest.get("counts") or {}
    gen_counts = {c: int((y_gen == i).sum()) for i, c in enumerate(ds.classes)}
    paths["class_distribution"] = F.class_distribution(counts, ds.classes, folder / "class_distribution.png", generated=gen_counts,
                                                       title=f"Images per class: {ds.path.name} and {gs.path.name}")
    return paths


def _versions() -> dict:
    import importlib.metadata as md

    v = {}
    for pkg in ("numpy", "torch", "scikit-learn", "transformers", "efficientnet-lite-pytorch"):
        try:
            v[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return v


def _fmt(value, std=None) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    text = f"{value:.3g}" if abs(value) < 1e-3 and value != 0 else f"{value:.3f}"
    if std is not None and np.isfinite(std):
        text += f" ± {std:.3g}" if abs(std) < 1e-3 and std != 0 else f" ± {std:.3f}"
    return text


def metric_order(encoders, names) -> list[str]:
    """The paper's row order of the metric ``names`` present: CE/CD/CS per encoder, FD (FID for Inception), KID,
    then F1/precision/recall/accuracy of the judge and the referees, the cross-channel metric, then anything
    else (e.g. the per-channel judges)."""
    order = []
    for fam in ("CE", "CD", "CS"):
        order += [f"{fam}_{e}" for e in encoders]
    order += [("FID" if e == "inception" else f"FD_{e}") for e in encoders]
    order += ["FD_domain_ensemble"] if "domain" in encoders else []
    order += [f"KID_{e}" for e in encoders]
    for who in ("judge", "judge_ensemble", "referee", "referee_hot"):
        order += [f"{fam}_{who}" for fam in ("F1", "precision", "recall", "accuracy")]
    order.append("XC_ratios")
    order += [k for k in names if k not in order]
    return [k for k in order if k in names]


def per_channel_rows(result: dict) -> list[dict]:
    """One row per channel of a several-channel evaluation (empty for one channel), the numbers a per-channel
    table needs: the judge F1 of that channel's own judge and its ceiling (the real test split), FD_domain of
    that judge's features and its real-vs-real benchmark, and the channel's ratio to 171 Å in the brightest
    region (per class 1-Wasserstein distance to the real reference half, averaged over classes, in dex)
    generated and real-vs-real (``None`` for 171 Å itself and what was not measured)."""
    channels = list((result.get("real") or {}).get("channels") or [])
    if len(channels) < 2:
        return []
    m = result["metrics"]
    xc = (result.get("details") or {}).get("channels") or {}
    per_ratio = xc.get("per_ratio") or {}
    reference = REFEREE_CHANNEL if REFEREE_CHANNEL in channels else None

    def get(name, key):
        return (m.get(name) or {}).get(key)

    rows = []
    for ch in channels:
        ratio = f"{ch}/{reference}" if reference and ch != reference else None
        rows.append({
            "channel": ch,
            "F1_judge": get(f"F1_judge_{ch}", "value"), "F1_judge_ceiling": get(f"F1_judge_{ch}", "benchmark"),
            "FD_domain": get(f"FD_domain_{ch}", "value"), "FD_domain_std": get(f"FD_domain_{ch}", "std"),
            "FD_domain_benchmark": get(f"FD_domain_{ch}", "benchmark"),
            "FD_domain_benchmark_std": get(f"FD_domain_{ch}", "benchmark_std"),
            "ratio": ratio,
            "ratio_W1": (per_ratio.get("generated") or {}).get(ratio) if ratio else None,
            "ratio_W1_benchmark": (per_ratio.get("benchmark") or {}).get(ratio) if ratio else None,
        })
    return rows


def per_channel_markdown(result: dict) -> list[str]:
    """The per-channel table of metrics.md (one row per channel, then all channels together); no lines for one
    channel."""
    rows = per_channel_rows(result)
    if not rows:
        return []
    m = result["metrics"]

    def cell(name, key="value", std=None):
        e = m.get(name) or {}
        return _fmt(e.get(key), e.get(std) if std else None)

    lines = ["", "## Per channel", "",
             "| Channel | F1_judge | F1_judge real test (ceiling) | FD_domain | FD_domain real vs real | Ratio | "
             "Ratio W1 generated (dex) | Ratio W1 real vs real (dex) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['channel']} | {_fmt(r['F1_judge'])} | {_fmt(r['F1_judge_ceiling'])} | "
                     f"{_fmt(r['FD_domain'], r['FD_domain_std'])} | "
                     f"{_fmt(r['FD_domain_benchmark'], r['FD_domain_benchmark_std'])} | "
                     f"{r['ratio'] or '–'} | {_fmt(r['ratio_W1'])} | {_fmt(r['ratio_W1_benchmark'])} |")
    lines.append(f"| all channels | {cell('F1_judge')} | {cell('F1_judge', 'benchmark')} | "
                 f"{cell('FD_domain', 'value', 'std')} | {cell('FD_domain', 'benchmark', 'benchmark_std')} | "
                 f"XC_ratios (mean) | {cell('XC_ratios', 'value', 'std')} | {cell('XC_ratios', 'benchmark', 'benchmark_std')} |")
    lines += ["", "Rows per channel: a judge trained on that channel alone, its features for FD; \"all channels\": the "
              "judge of every channel at once. Ratio W1: the channel's log10 ratio to 171 Å in each image's brightest "
              "region, per class the 1-Wasserstein distance to the real reference half, averaged over classes "
              "(ideal 0); real vs real is the other half. \"–\": not measured (171 Å is the ratios' reference; "
              "`--no-channel-judges` skips the per-channel judges)."]
    return lines


def metrics_markdown(result: dict) -> str:
    """The paper-shaped table (rows CE/CD/CS per encoder, FD, KID, then F1/precision/recall)."""
    m = result["metrics"]
    order = metric_order(result["details"]["encoders"], m)
    lines = [
        f"# Evaluation: {Path(result['generated']['path']).name} vs {Path(result['real']['path']).name}",
        "",
        f"{result['generated']['n']} generated images vs the real `{result['real']['split']}` split "
        f"({result['real']['n_split']} images), at {result['real']['evaluated_at_size']} px. "
        f"Distribution metrics: {result['resampling']['repeats']} resamplings, reference = a "
        f"{'whole-day' if result['resampling'].get('grouped') else 'random'} half of the real "
        f"split ({result['resampling']['reference_size']} images), generated and real-vs-real benchmark both "
        f"{result['resampling']['evaluated_size']} images; mean ± std.",
        "",
        "| Metric | Generated | Benchmark | Ideal |",
        "|---|---|---|---|",
    ]
    for name in order:
        if name not in m:
            continue
        e = m[name]
        lines.append(f"| {name} | {_fmt(e['value'], e['std'])} | {_fmt(e['benchmark'], e['benchmark_std'])} | {_fmt(e['ideal'])} |")
    lines += [
        "",
        "Benchmark: real vs real (two disjoint halves of the real split, made of whole days when it spans several) for CE/CD/CS/FD/KID; the same classifier on "
        "the real test split (the ceiling) for F1/precision/recall/accuracy. Ramunno et al.'s real-vs-real benchmark: "
        "CE 0.002, CD 1.001, CS 0.998.",
        "Judge F1 is macro over the requested classes. Only Inception features may be called FID; FD_<encoder> "
        "values of different encoders are not comparable with each other or with published FIDs.",
    ]
    xc = result["details"].get("channels")
    if xc:
        lines += ["", "XC_ratios (cross-channel consistency): log10 ratios " + ", ".join(xc["ratios"]) + " in each image's "
                  "brightest region, per class the 1-Wasserstein distance (dex) to the reference half, averaged over ratios "
                  f"and classes. Real images with each channel shuffled among the images of their class score "
                  f"{_fmt(xc.get('shuffled'), xc.get('shuffled_std'))} (a generator whose channels do not belong together)."]
    if len(result["real"].get("channels") or []) > 1:
        lines += ["Several channels: the judge and FD/KID/CE/CD/CS_domain see all channels at once; `_<channel>` rows "
                  "are a judge trained on that channel alone and its features; RGB encoders run on each channel."]
    lines += per_channel_markdown(result)
    if result.get("notes"):
        lines += ["", "Notes:", *[f"- {n}" for n in result["notes"]]]
    return "\n".join(lines) + "\n"
