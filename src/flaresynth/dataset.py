"""Dataset folders: building them from the archives, and reading them for training.

A dataset folder is what every later stage reads::

    DS/
      images.npy     float32 (N, C, H, W), model space [-1, 1] (see ``manifest.json["transform"]``)
      labels.csv     one row per image (columns: :data:`LABEL_COLUMNS`)
      manifest.json  format, sources, build parameters, transform constants, counts, versions, hashes

Several channels (``channels``, ``--channels 94A,131A,171A,193A,211A``): the channels' frame lists are aligned on
the first channel's times (:class:`~flaresynth.sources.aligned.AlignedChannels`: every other channel must have a
frame within ``align_tol_s``, default half the first channel's cadence; a frame any channel lacks is dropped and
counted in ``manifest.json["alignment"]``), ``images.npy`` holds (N, C, H, W) in the order asked, and
``manifest.json["transform"]`` is a list, one invertible transform per channel (each channel's own clip range).
Selection, labels and splits follow the aligned frames as they follow a single channel's.

Selection and labelling (the paper's rule, Ramunno et al. 2024 §2; details not published, so documented here):

* **flare frames**: every frame within ``window`` (widened to half the frame spacing at coarse cadences) of a HEK flare peak (after de-duplicating reporters); a frame
  near two peaks belongs to the nearer one;
* **quiet frames**: ``quiet_per_day`` frames per day, evenly spaced, taken from frames farther than
  ``quiet_margin`` from any HEK event's start-end interval, so classes A/B exist;
* ``small_event_fraction`` (default 1: all): the share of HEK events of class A, B or C (in the dataset's
  convention) whose flare frames are kept, chosen at random by event (seeded by ``split_seed``), so a long period
  near maximum, with thousands of C flares, keeps every M and X flare without growing by its small ones; the
  frames of a dropped event are not quiet frames either, and the manifest's ``small_events`` counts both;
* frames with ``QUALITY != 0`` are dropped (SDOMLv2 keeps only QUALITY 0 anyway).

Each image carries three candidate labels, and ``label_rule`` says which one made ``label``:

* ``instant``: XRS-B flux of the nearest good GOES sample within ±60 s of the image time (the default);
* ``peak24``: the peak XRS-B flux in the 24 h after the image time (forecasting);
* ``event``: the HEK event's GOES class for flare frames, ``instant`` for quiet frames.

Labels, XRS fluxes and HEK classes are in one flux convention (``--scale``, written into the manifest as
``flux_convention``): under ``true`` the HEK class of an event measured by GOES 8-15 (the satellite of the XRS
sample nearest its peak) is divided by 0.7, since SWPC's class strings of that era carry the 0.7 factor
(:mod:`flaresynth.sources.goes`); ``event_class`` holds the rescaled class, ``hek_class`` the reported one.

Splits are by **contiguous time blocks**, never by frame, because an active region lives one to two solar
rotations and neighbouring days show nearly the same disk (``split_by``: Carrington ``rotation``, 27.2753 days,
the default; ``month``, ``year``, ``week``, ``day``; or ``chronological``: train on the earliest frames, then
val, then test). A flare frame belongs to the block of its event's peak, so an event never straddles two blocks.
Whole blocks go to train/val/test by a seeded search (``split_seed``) that keeps every class in every split where
the data allows and each split's share of each class near its fraction. Around every boundary between blocks of
different splits a **buffer** of ``buffer_days`` (default 2) is dropped, every frame in it (flare frames
included), so frames of different splits are at least ``buffer_days`` apart; a ``peak24``/``flare24`` window
that would reach into another split's block is cut (the frame is dropped under ``label_rule="peak24"``, else its
``peak24`` columns are emptied). When the data holds too few blocks of the requested rule for three non-empty
splits, the builder falls back to the next smaller block (rotation/month -> week -> day) and writes a warning
into ``manifest.json["splits"]["warnings"]``, never silently. ``flaresynth dataset info`` prints the blocks.
What each rule leaves: rotation blocks still share the regions that survive one rotation and return (a test
rotation's regions may have been seen, younger, in the previous train rotation); ``chronological`` has one
boundary only, so at most one region generation straddles it, at the price of a test period that may differ in
activity level from the training period.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from flaresynth import __version__
from flaresynth.errors import FlaresynthError, input_error
from flaresynth.forecast_labels import FORECAST_CLASSES, FORECAST_SCHEME, detect_flares, issue_table
from flaresynth.io import atomic_dir, open_npy, read_folder_manifest, read_json, sha256_file, write_json
from flaresynth.labels import (
    GOES_CLASSES,
    SCHEMES,
    check_scheme,
    flux_to_class,
    flux_to_label_index,
    flux_to_letter_index,
)
from flaresynth.sources.goes import SWPC_FACTOR_B

DATASET_FORMAT = "flaresynth-dataset/1"
IMAGES_FILE = "images.npy"
LABELS_FILE = "labels.csv"
MANIFEST_FILE = "manifest.json"
SPLITS = ("train", "val", "test")
LABEL_RULES = ("instant", "peak24", "event")
CARRINGTON_DAYS = 27.2753  # synodic Carrington rotation period
TASKS = ("images", "forecast")

#: Columns of labels.csv, in order.
LABEL_COLUMNS = [
    "time",  # image time, ISO 8601 UTC
    "label",  # class name in the manifest's scheme, made by `label_rule`
    "label_flux",  # XRS-B flux (W/m²) behind `label`
    "label_rule",  # instant | peak24 | event
    "flux",  # instantaneous XRS-B flux at the image time (nearest good sample within ±60 s)
    "flux_class",  # GOES letter of `flux`
    "peak24_flux",  # max XRS-B flux in (t, t + 24 h]
    "peak24_class",  # GOES letter of `peak24_flux`
    "flare24",  # True when an M-or-larger flare peaks in (t, t + 24 h]
    "selection",  # flare | quiet
    "event_id",  # HEK event of a flare frame, "" for quiet frames
    "event_class",  # class of that event's HEK fl_goescls in the dataset's flux convention (÷0.7 for GOES 8-15 under true)
    "hek_class",  # that event's fl_goescls as HEK reports it
    "event_peak",  # HEK peak time of that event
    "split",  # train | val | test
    "source_index",  # index of the frame in the time-sorted image source
]

#: Columns of a forecast dataset's labels.csv (``--task forecast``; see :mod:`flaresynth.forecast_labels`).
FORECAST_COLUMNS = [
    "time",  # issue time t, ISO 8601 UTC
    "image_time",  # time of the image: the latest good frame at or before t
    "label",  # flare24 | quiet24
    "label_flux",  # largest flux of the flares starting in (t, t + horizon] (W/m2)
    "flare24",  # True when a flare >= threshold starts in (t, t + horizon]
    "n_flares24",  # how many such flares start there
    "next_flare_id",  # the first of them (event id), "" for negatives
    "next_flare_start",
    "next_flare_class",  # its class in the dataset's flux convention
    "flux",  # XRS-B at t
    "event_id",  # "" (issue times belong to no event; kept for the dataset reader)
    "split",
    "source_index",
]


# ------------------------------------------------------------------------------------------ reading
@dataclass
class DatasetFolder:
    """A dataset folder opened for reading (images are memory-mapped, not loaded)."""

    path: Path
    manifest: dict
    labels: pd.DataFrame
    images: np.ndarray

    @property
    def scheme(self) -> str:
        return self.manifest["scheme"]

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.manifest["classes"])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def channels(self) -> list[str]:
        return list(self.manifest["channels"])

    def split_indices(self, split: str | None) -> np.ndarray:
        """Row indices of one split (all rows for ``None``)."""
        if split is None:
            return np.arange(len(self.labels))
        if split not in SPLITS:
            raise FlaresynthError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
        return np.flatnonzero(self.labels["split"].to_numpy() == split)

    def label_index(self) -> np.ndarray:
        """Index of each row's label into :attr:`classes`."""
        lookup = {c: i for i, c in enumerate(self.classes)}
        return np.array([lookup[c] for c in self.labels["label"]], dtype=np.int64)

    def transform(self):
        """The intensity transform the images were made with (model space <-> DN/s), for a one-channel dataset;
        a one-line error for a multi-channel one (steps that handle one channel stop there, see
        :meth:`transforms`)."""
        from flaresynth.transforms import IntensityTransform

        if len(self.channels) != 1 or isinstance(self.manifest["transform"], list):
            raise input_error(self.path / MANIFEST_FILE, "channels", f"{len(self.channels)} channels "
                              f"({', '.join(self.channels)}): this step handles a one-channel dataset only (build "
                              "one with --channel 171A)")
        return IntensityTransform.from_dict(self.manifest["transform"])

    def transforms(self) -> list:
        """One intensity transform per channel (:func:`flaresynth.transforms.channel_transforms`)."""
        from flaresynth.transforms import channel_transforms

        return channel_transforms(self.manifest["transform"], int(self.images.shape[1]), str(self.path / MANIFEST_FILE))


def open_dataset(path: str | Path) -> DatasetFolder:
    """Open a dataset folder, checking that its three files are readable, complete and agree.

    Each problem is a one-line :class:`~flaresynth.errors.FlaresynthError` naming the file and what is wrong:
    a missing file, a manifest that is not JSON or of another format version, a labels table that cannot be
    parsed or lacks a column, a truncated or unreadable ``images.npy``, counts that do not match.
    """
    path = Path(path)
    manifest = read_folder_manifest(path, "dataset", "flaresynth dataset build", (MANIFEST_FILE, LABELS_FILE, IMAGES_FILE),
                                    MANIFEST_FILE, DATASET_FORMAT, ("scheme", "classes", "channels", "transform"))
    try:
        labels = pd.read_csv(path / LABELS_FILE, keep_default_na=False, na_values=[""], dtype={"event_id": str})
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise input_error(path / LABELS_FILE, None, f"not a readable CSV table ({str(exc).strip()})") from None
    missing = [c for c in ("time", "label", "label_flux", "split") if c not in labels.columns]
    if missing:
        raise input_error(path / LABELS_FILE, f"column {missing[0]!r}", "missing")
    labels["event_id"] = labels.get("event_id", pd.Series([""] * len(labels))).fillna("")
    images = open_npy(path / IMAGES_FILE)
    if images.ndim != 4 or images.dtype != np.float32:
        raise input_error(path / IMAGES_FILE, "array", f"{images.dtype} {images.shape}, expected float32 (N, C, H, W)")
    if images.shape[0] != len(labels):
        raise input_error(path / LABELS_FILE, None, f"{len(labels)} rows, but {IMAGES_FILE} holds {images.shape[0]} images")
    n_manifest = manifest.get("n_images")
    if n_manifest is not None and n_manifest != images.shape[0]:
        raise input_error(path / MANIFEST_FILE, "n_images", f"{n_manifest}, but {IMAGES_FILE} holds {images.shape[0]} images")
    unknown = sorted(set(labels["label"]) - set(manifest["classes"]))
    if unknown:
        raise input_error(path / LABELS_FILE, "label", f"{unknown[0]!r} is not a class of {manifest['classes']}")
    return DatasetFolder(path=path, manifest=manifest, labels=labels, images=images)


def check_task(path: str | Path, expected: str, command: str) -> None:
    """One-line error when the dataset folder at ``path`` was built for another task (``images``/``forecast``).

    Folders without a ``task`` (built before it existed) are flare-image datasets. A missing folder is left to
    the caller's own error.
    """
    manifest = Path(path) / MANIFEST_FILE
    if not manifest.is_file():
        return
    task = read_json(manifest).get("task", "images")
    if task != expected:
        hint = ("build one with `flaresynth dataset build` (--task images)" if expected == "images"
                else "build one with `flaresynth dataset build --task forecast`")
        kind = "flare-image" if expected == "images" else "forecast"
        raise input_error(manifest, "task", f"{task!r}: `{command}` needs a {kind} dataset; {hint}")


def write_dataset(
    out: str | Path, images: np.ndarray, labels: pd.DataFrame, manifest: dict, overwrite: bool = False
) -> Path:
    """Write a complete dataset folder atomically (used by the builder and by tests that need a small one).

    ``manifest`` must hold ``scheme``, ``classes``, ``channels`` and ``transform``; ``format``, ``n_images``,
    ``counts`` and ``data_hash`` are filled in here.
    """
    images = np.ascontiguousarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[0] != len(labels):
        raise ValueError(f"images {images.shape} and {len(labels)} labels do not match")
    with atomic_dir(out, overwrite=overwrite) as tmp:
        np.save(tmp / IMAGES_FILE, images)
        _finish_folder(tmp, labels, manifest)
    return Path(out)


def _finish_folder(tmp: Path, labels: pd.DataFrame, manifest: dict) -> None:
    """Write labels.csv and manifest.json beside an images.npy already in ``tmp``."""
    labels = labels.reset_index(drop=True)
    labels.to_csv(tmp / LABELS_FILE, index=False, float_format="%.6e")
    manifest = dict(manifest)
    manifest["format"] = DATASET_FORMAT
    manifest["n_images"] = int(len(labels))
    manifest["counts"] = _counts(labels, manifest["classes"])
    manifest["data_hash"] = dataset_hash(tmp)
    write_json(tmp / MANIFEST_FILE, manifest)


def dataset_hash(path: str | Path) -> str:
    """SHA-256 over images.npy and labels.csv: identifies the training data of a model."""
    h = hashlib.sha256()
    for name in (IMAGES_FILE, LABELS_FILE):
        h.update(sha256_file(Path(path) / name).encode())
    return h.hexdigest()


def _counts(labels: pd.DataFrame, classes: Sequence[str]) -> dict:
    counts = {}
    for split in ("all", *SPLITS):
        rows = labels if split == "all" else labels[labels["split"] == split]
        counts[split] = {c: int((rows["label"] == c).sum()) for c in classes}
    return counts


# ----------------------------------------------------------------------------------------- building
@dataclass
class BuildConfig:
    """Parameters of a dataset build (all recorded in the manifest)."""

    size: int = 64
    channel: str = "171A"
    channels: list[str] | None = None  # several channels at once (None: ``channel`` alone)
    align_tol_s: float | None = None  # seconds; None: half the first channel's cadence
    scheme: str = "goes5"
    label_rule: str = "instant"
    scale: str = "true"
    window_min: float = 30.0
    quiet_per_day: int = 8
    small_event_fraction: float = 1.0  # share of A/B/C HEK events whose flare frames are kept (whole events)
    quiet_margin_min: float = 60.0
    flux_tolerance_s: float = 60.0
    forecast_hours: float = 24.0
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    split_by: str = "rotation"
    buffer_days: float = 2.0
    task: str = "images"  # images (flare frames + quiet frames, for generators) | forecast (issue times)
    issue_every_h: float = 6.0
    threshold_flux: float = 1e-5  # forecast: a flare of at least this class (M1.0) starting in the horizon
    split_seed: int = 0
    start: str | None = None
    end: str | None = None
    mask_limb: bool = False
    batch_frames: int = 32
    workers: int | None = None  # local dask threads (None: one per core)
    years: list[int] | None = field(default=None)

    def channel_list(self) -> tuple[str, ...]:
        """The channels to build, in order (``channels``, else ``channel`` alone)."""
        from flaresynth.transforms import CHANNEL_RANGES, parse_channels

        if self.channels is None:
            return parse_channels([self.channel], allowed=tuple(CHANNEL_RANGES), option="--channel")
        return parse_channels(self.channels, allowed=tuple(CHANNEL_RANGES))

    def validate(self) -> None:
        names = self.channel_list()
        if self.channels is not None and self.channel != "171A" and names != (self.channel,):
            raise FlaresynthError(f"--channel {self.channel} and --channels {','.join(names)}: give one of them")
        if self.align_tol_s is not None and not self.align_tol_s >= 0:
            raise FlaresynthError(f"--align-tol {self.align_tol_s!r}: expected seconds >= 0")
        check_scheme(self.scheme)
        if self.label_rule not in LABEL_RULES:
            raise FlaresynthError(f"--label {self.label_rule!r}: expected one of {', '.join(LABEL_RULES)}")
        if self.size < 8 or self.size > 4096:
            raise FlaresynthError(f"--size {self.size}: expected 8 to 4096 pixels")
        if not 0 <= self.test_fraction < 1 or not 0 <= self.val_fraction < 1 or self.test_fraction + self.val_fraction >= 1:
            raise FlaresynthError("--test-fraction and --val-fraction must be in [0, 1) and sum to less than 1")
        if self.task not in TASKS:
            raise FlaresynthError(f"--task {self.task!r}: expected one of {', '.join(TASKS)}")
        if not self.issue_every_h > 0:
            raise FlaresynthError(f"--issue-every {self.issue_every_h:g}: expected a positive number of hours")
        if not self.forecast_hours > 0:
            raise FlaresynthError(f"--horizon {self.forecast_hours:g}: expected a positive number of hours")
        if self.split_by not in SPLIT_RULES:
            raise FlaresynthError(f"--split-by {self.split_by!r}: expected one of {', '.join(SPLIT_RULES)}")
        if not self.buffer_days >= 0:
            raise FlaresynthError(f"--buffer-days {self.buffer_days}: expected a duration >= 0 days")
        if self.split_by != "chronological" and self.buffer_days >= BLOCK_DAYS[self.split_by]:
            raise FlaresynthError(f"--buffer-days {self.buffer_days:g} is not shorter than a {self.split_by} block "
                                  f"({BLOCK_DAYS[self.split_by]:g} days): choose a larger --split-by or a shorter buffer")
        if self.window_min < 0 or self.quiet_per_day < 0:
            raise FlaresynthError("--window-min and --quiet-per-day must not be negative")
        if not 0 <= self.small_event_fraction <= 1:
            raise FlaresynthError(f"--small-event-fraction {self.small_event_fraction!r}: expected a share from 0 to 1")


def build_dataset(
    images: str,
    goes: Sequence[str],
    hek: str,
    out: str | Path,
    config: BuildConfig | None = None,
    scheduler: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Build a dataset folder from an image source, GOES XRS files and a HEK flare list.

    Parameters
    ----------
    images : SDOMLv2 zarr path or URL, or a folder of AIA FITS files.
    goes : GOES XRS files or folders (any variant :mod:`flaresynth.sources.goes` reads).
    hek : a saved HEK JSON response (file or folder of pages).
    out : the dataset folder to write; it appears only when complete.
    scheduler : ``None`` for dask's local threads, or the address of a ``dask.distributed`` scheduler.

    Returns the manifest. A rerun with the same inputs and parameters returns the existing manifest
    without rebuilding (``"up_to_date": True``).
    """
    from flaresynth.sources.goes import read_xrs_files
    from flaresynth.sources.hek import read_events
    from flaresynth.sources.images import open_channels, open_images

    cfg = config or BuildConfig()
    cfg.validate()
    out = Path(out)
    fingerprint = _input_fingerprint(images, goes, hek, cfg)
    if out.exists() and not overwrite:
        manifest_path = out / MANIFEST_FILE
        if manifest_path.is_file() and read_json(manifest_path).get("input_fingerprint") == fingerprint:
            manifest = read_json(manifest_path)
            manifest["up_to_date"] = True
            return manifest
        raise input_error(out, None, "exists and was built from other inputs; use --overwrite to replace it")

    t0 = time.perf_counter()
    channels = cfg.channel_list()
    if len(channels) == 1:
        source = open_images(images, channel=channels[0], years=cfg.years)
    else:
        source = open_channels(images, channels, years=cfg.years, align_tol_s=cfg.align_tol_s)
        if not len(source):
            raise input_error(images, None, f"no frame has all of {', '.join(channels)} within "
                              f"{source.alignment['tolerance_s']:g} s of each other (--align-tol)")
    xrs = read_xrs_files(list(goes), scale=cfg.scale)
    events = read_events(hek) if hek else None
    if cfg.task == "forecast":
        table, forecast_info = forecast_issue_table(source, xrs, events, cfg)
        table, split_info = assign_splits(table, cfg, classes=FORECAST_CLASSES)
        if table.empty:
            raise FlaresynthError(f"{images}: no usable issue time (every one lacked an image or GOES data, fell "
                                  "during an ongoing flare, or had an unknown outcome)")
    else:
        if events is None:
            raise FlaresynthError("--hek: required to build a flare-image dataset (flare frames are picked near HEK "
                                  "peaks); only --task forecast can detect flares in the XRS series instead")
        forecast_info = None
        table = select_frames(source, events, cfg)
        table = attach_labels(table, xrs, events, cfg)
        table, small_events = thin_small_events(table, cfg.small_event_fraction, cfg.split_seed)
        table, split_info = assign_splits(table, cfg)
    if table.empty:
        raise FlaresynthError(
            f"{images}: no usable frame (no frame with good GOES data near a HEK event or in quiet times"
            f"{' between ' + str(cfg.start) + ' and ' + str(cfg.end) if cfg.start or cfg.end else ''})"
        )
    from flaresynth.transforms import IntensityTransform

    transforms = [IntensityTransform.for_channel(c) for c in channels]
    transform = transforms[0] if len(channels) == 1 else transforms
    with atomic_dir(out, overwrite=overwrite) as tmp:
        preprocess_frames(source, table["source_index"].to_numpy(), tmp / IMAGES_FILE, cfg, transform, scheduler, progress)
        manifest = {
            "task": cfg.task,
            "scheme": FORECAST_SCHEME if cfg.task == "forecast" else cfg.scheme,
            "classes": list(FORECAST_CLASSES if cfg.task == "forecast" else SCHEMES[cfg.scheme]),
            "channels": list(channels),
            # one invertible transform per channel (a list) when there are several, as runs and samples store it
            "transform": transform.to_dict() if len(channels) == 1 else [t.to_dict() for t in transforms],
            **({"alignment": source.alignment} if len(channels) > 1 else {}),
            "image_size": cfg.size,
            "label_rule": "forecast" if cfg.task == "forecast" else cfg.label_rule,
            "flux_convention": _convention(cfg.scale),
            "forecast": forecast_info,
            **({"small_events": small_events} if cfg.task != "forecast" else {}),
            "splits": split_info,
            "sources": {
                # local paths absolute, so evaluate and report find the store from any working directory
                "images": _recorded_path(images),
                "image_source_type": type(source).__name__,
                "n_source_frames": int(len(source)),
                "goes": [_recorded_path(g) for g in goes],
                "goes_files": list(xrs.files),
                "goes_scale": cfg.scale,
                "hek": _recorded_path(hek),
                "n_hek_events": int(len(events)) if events is not None else None,
            },
            "build": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
            "input_fingerprint": fingerprint,
            "versions": _versions(),
            "build_seconds": round(time.perf_counter() - t0, 2),
            "scheduler": scheduler or "threads",
        }
        columns = FORECAST_COLUMNS if cfg.task == "forecast" else LABEL_COLUMNS
        _finish_folder(tmp, table[columns], manifest)
        manifest = read_json(tmp / MANIFEST_FILE)
    return manifest


def flare_window(times: np.ndarray, window_min: float) -> np.timedelta64:
    """How far from a flare peak a frame may be to count as a flare frame: ``window_min``, widened to half the
    typical frame spacing (+1 min for T_OBS jitter) so that every flare keeps at least one frame at coarse
    cadences (e.g. 60 min, the simulated Sun's default)."""
    window = np.timedelta64(int(window_min * 60e9), "ns")
    if len(times) > 1:
        spacing = np.median(np.diff(np.sort(np.asarray(times, dtype="datetime64[ns]"))))
        window = max(window, spacing // 2 + np.timedelta64(60, "s"))
    return window


def select_frames(source, events: pd.DataFrame, cfg: BuildConfig) -> pd.DataFrame:
    """Choose flare frames (near HEK peaks) and quiet frames (far from any event); see the module docstring."""
    times = np.asarray(source.times, dtype="datetime64[ns]")
    keep = np.ones(len(times), dtype=bool)
    headers = source.headers()
    if "QUALITY" in headers.columns:
        keep &= pd.to_numeric(headers["QUALITY"], errors="coerce").fillna(1).to_numpy() == 0
    if cfg.start:
        keep &= times >= np.datetime64(pd.Timestamp(cfg.start).tz_localize(None), "ns")
    if cfg.end:
        keep &= times < np.datetime64(pd.Timestamp(cfg.end).tz_localize(None), "ns")

    window = flare_window(times, cfg.window_min)
    peaks = events["peak"].to_numpy(dtype="datetime64[ns]") if len(events) else np.array([], "datetime64[ns]")
    event_of = np.full(len(times), -1)
    if len(peaks):
        # nearest peak to each frame (events are sorted by peak)
        order = np.argsort(peaks)
        sorted_peaks = peaks[order]
        pos = np.clip(np.searchsorted(sorted_peaks, times), 1, len(sorted_peaks)) - 1
        nxt = np.clip(pos + 1, 0, len(sorted_peaks) - 1)
        d_prev = np.abs(times - sorted_peaks[pos])
        d_next = np.abs(times - sorted_peaks[nxt])
        nearest = np.where(d_next < d_prev, nxt, pos)
        near = np.minimum(d_prev, d_next) <= window
        event_of = np.where(near, order[nearest], -1)
    flare = keep & (event_of >= 0)

    # quiet frames: outside every event's [start - margin, end + margin]
    margin = np.timedelta64(int(cfg.quiet_margin_min * 60e9), "ns")
    busy = np.zeros(len(times), dtype=bool)
    if len(events):
        # HEK may omit start or end; the peak then bounds the event on that side
        ev_start = events["start"].fillna(events["peak"]).to_numpy(dtype="datetime64[ns]")
        ev_end = events["end"].fillna(events["peak"]).to_numpy(dtype="datetime64[ns]")
        starts = np.sort(ev_start - margin)
        ends_by_start = (ev_end + margin)[np.argsort(ev_start)]
        running_end = np.maximum.accumulate(ends_by_start)
        pos = np.searchsorted(starts, times, side="right") - 1
        busy = (pos >= 0) & (times <= running_end[np.clip(pos, 0, None)])
    candidates = np.flatnonzero(keep & ~busy & ~flare)
    quiet = _evenly_per_day(times, candidates, cfg.quiet_per_day)

    rows = np.concatenate([np.flatnonzero(flare), quiet])
    rows.sort()
    ev = event_of[rows]
    table = pd.DataFrame(
        {
            "source_index": rows,
            "time_ns": times[rows],
            "selection": np.where(ev >= 0, "flare", "quiet"),
            "event_row": ev,
        }
    )
    return table


#: Event classes that are "small" for ``small_event_fraction`` (by the letter of the event's class in the dataset's
#: convention): M and X flares are always kept.
SMALL_EVENT_LETTERS = ("A", "B", "C")


def thin_small_events(table: pd.DataFrame, fraction: float, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Keep the flare frames of a random ``fraction`` of the events of class A, B or C (whole events,
    ``round(fraction · n)`` of the n such events, seeded), every frame of an M or X event and every quiet frame.

    ``table``: rows with ``selection``, ``event_id`` and ``event_class`` (:func:`attach_labels`' output).
    Returns the kept rows and a record: the fraction, the small classes, events of them and kept, frames dropped.
    """
    flare = (table["selection"] == "flare").to_numpy()
    letters = table["event_class"].fillna("").astype(str).str[:1].to_numpy()
    small = flare & np.isin(letters, SMALL_EVENT_LETTERS)
    event_ids = table["event_id"].to_numpy().astype(str)
    small_ids = np.unique(event_ids[small])
    n_keep = int(round(fraction * len(small_ids)))
    kept_ids = np.random.default_rng(seed).choice(small_ids, size=n_keep, replace=False)
    drop = small & ~np.isin(event_ids, kept_ids)
    record = {"fraction": float(fraction), "classes": "".join(SMALL_EVENT_LETTERS), "events": int(len(small_ids)),
              "events_kept": n_keep, "frames_dropped": int(drop.sum())}
    return table[~drop].reset_index(drop=True), record


def _evenly_per_day(times: np.ndarray, candidates: np.ndarray, per_day: int) -> np.ndarray:
    """Pick up to ``per_day`` candidates per UTC day, as evenly spaced in time as the candidates allow."""
    if per_day <= 0 or len(candidates) == 0:
        return np.array([], dtype=np.int64)
    days = times[candidates].astype("datetime64[D]")
    chosen = []
    for day in np.unique(days):
        idx = candidates[days == day]
        if len(idx) <= per_day:
            chosen.extend(idx)
            continue
        targets = day.astype("datetime64[ns]") + (np.arange(per_day) + 0.5) * np.timedelta64(86400, "s") / per_day
        picks = np.clip(np.searchsorted(times[idx], targets), 0, len(idx) - 1)
        chosen.extend(np.unique(idx[picks]))
    return np.asarray(chosen, dtype=np.int64)


def attach_labels(table: pd.DataFrame, xrs, events: pd.DataFrame, cfg: BuildConfig) -> pd.DataFrame:
    """Add the GOES labels (instant, peak24, event) and the chosen ``label``; drop frames without GOES data."""
    times = table["time_ns"].to_numpy(dtype="datetime64[ns]")
    flux = xrs.flux_at(times, tolerance=np.timedelta64(int(cfg.flux_tolerance_s * 1e9), "ns"))
    peak24, _ = xrs.peak_after(times, window=np.timedelta64(int(cfg.forecast_hours * 3600), "s"))
    ev = table["event_row"].to_numpy()
    has_event = ev >= 0
    ev_safe = np.clip(ev, 0, None)

    def event_col(name, fill):
        if not len(events):
            return np.full(len(table), fill, dtype=object)
        values = events[name].to_numpy()[ev_safe]
        return np.where(has_event, values, fill)

    hek_flux = event_col("goes_flux", np.nan).astype(np.float64)
    # One convention for every label: HEK class strings of GOES 8-15 events were measured on SWPC-scaled data
    # (x 0.7), so under the true scale they are divided by 0.7, like the XRS fluxes (sources.goes).
    event_flux = hek_flux.copy()
    if cfg.scale == "true" and len(events) and has_event.any():
        peaks_ns = events["peak"].to_numpy(dtype="datetime64[ns]")[ev_safe]
        rescale = has_event & np.isfinite(hek_flux) & xrs.swpc_scaled_at(peaks_ns)
        event_flux = np.where(rescale, hek_flux / SWPC_FACTOR_B, hek_flux)
    if len(events):
        peak_strings = pd.to_datetime(events["peak"]).dt.strftime("%Y-%m-%dT%H:%M:%SZ").to_numpy()
        event_peak = np.where(has_event, peak_strings[ev_safe], "")
    else:
        event_peak = np.full(len(table), "")
    label_flux = {"instant": flux, "peak24": peak24, "event": np.where(has_event & np.isfinite(event_flux), event_flux, flux)}[
        cfg.label_rule
    ]
    letters = np.array(GOES_CLASSES + ("",))
    out = pd.DataFrame(
        {
            "time": pd.to_datetime(times).strftime("%Y-%m-%dT%H:%M:%S.%fZ").str.slice(0, 23) + "Z",
            "label_flux": label_flux,
            "label_rule": cfg.label_rule,
            "flux": flux,
            "flux_class": letters[flux_to_letter_index(flux)],
            "peak24_flux": peak24,
            "peak24_class": letters[flux_to_letter_index(peak24)],
            "flare24": np.nan_to_num(peak24, nan=0.0) >= 1e-5,
            "selection": table["selection"].to_numpy(),
            "event_id": event_col("event_id", "").astype(str),
            "event_class": [flux_to_class(f) if np.isfinite(f) else "" for f in event_flux],
            "hek_class": event_col("goes_class", "").astype(str),
            "event_peak": event_peak,
            "source_index": table["source_index"].to_numpy(),
            "time_ns": times,
        }
    )
    if cfg.label_rule == "event" and has_event.any():
        # keep the event rule honest: a flare frame whose event has no class falls back to the instant flux
        out["label_rule"] = np.where(has_event & np.isfinite(event_flux), "event", "instant")
    # A frame needs its own label; peak24 may be NaN near the end of the GOES record (documented in the manifest).
    usable = np.isfinite(out["label_flux"].to_numpy()) & (out["label_flux"].to_numpy() > 0)
    out = out[usable].reset_index(drop=True)
    index = flux_to_label_index(out["label_flux"].to_numpy(), cfg.scheme)
    out["label"] = np.array(SCHEMES[cfg.scheme])[index]
    return out


#: Split rules, largest block first; a rule whose blocks are too few falls back to the next smaller one.
SPLIT_RULES = ("year", "month", "rotation", "week", "day", "chronological")
#: Nominal block length of each rule in days (the buffer must be shorter than a block).
BLOCK_DAYS = {"year": 365.25, "month": 28.0, "rotation": CARRINGTON_DAYS, "week": 7.0, "day": 1.0}
_FALLBACK = {"year": "month", "month": "week", "rotation": "week", "week": "day"}


def block_edges(rule: str, first: np.datetime64, last: np.datetime64) -> np.ndarray:
    """Edges (datetime64[ns], increasing) of the contiguous time blocks of ``rule`` covering [first, last].

    ``rotation`` blocks are Carrington rotations (start times from sunpy's ``carrington_rotation_time``);
    ``week`` blocks start on Mondays (ISO weeks); the others are calendar days, months and years (UTC).
    """
    first, last = pd.Timestamp(first), pd.Timestamp(last)
    if rule == "rotation":
        from sunpy.coordinates.sun import carrington_rotation_number, carrington_rotation_time

        n0 = int(np.floor(carrington_rotation_number(first.to_pydatetime())))
        n1 = int(np.floor(carrington_rotation_number(last.to_pydatetime()))) + 1
        starts = carrington_rotation_time(np.arange(n0, n1 + 1)).to_datetime()
        return np.array([np.datetime64(t, "ns") for t in starts])
    freq = {"day": "D", "week": "W-MON", "month": "MS", "year": "YS"}[rule]
    day = first.floor("D")
    floor = {"day": day, "week": day - pd.Timedelta(days=day.dayofweek), "month": day.replace(day=1),
             "year": day.replace(month=1, day=1)}[rule]
    edges = pd.date_range(floor, last + pd.Timedelta(days=BLOCK_DAYS[rule] + 1), freq=freq)
    return edges.to_numpy(dtype="datetime64[ns]")


def forecast_issue_table(source, xrs, events: pd.DataFrame | None, cfg: BuildConfig) -> tuple[pd.DataFrame, dict]:
    """Issue times, labels and exclusions of a forecast dataset (``--task forecast``); the flare list is the HEK
    events in the dataset's convention, or flares detected in the XRS series without a HEK list."""
    times = np.asarray(source.times, dtype="datetime64[ns]")
    usable = np.ones(len(times), dtype=bool)
    headers = source.headers()
    if "QUALITY" in headers.columns:
        usable &= pd.to_numeric(headers["QUALITY"], errors="coerce").fillna(1).to_numpy() == 0
    index = np.flatnonzero(usable)
    if events is not None:
        flares = events[["event_id", "start", "peak", "end"]].copy()
        flux = events["goes_flux"].to_numpy(dtype=np.float64)
        if cfg.scale == "true" and len(events):
            flux = np.where(xrs.swpc_scaled_at(events["peak"].to_numpy(dtype="datetime64[ns]")), flux / SWPC_FACTOR_B, flux)
        flares["goes_flux"] = flux
        source_name = "HEK events (de-duplicated), classes in the dataset's flux convention"
    else:
        flares = detect_flares(xrs)
        source_name = ("flares detected in the XRS-B series by NOAA's event definition (4 rising minutes, x1.4; end "
                       "half-way back to the start flux)")
    table, counts = issue_table(times[index], xrs, flares, every_h=cfg.issue_every_h, horizon_h=cfg.forecast_hours,
                                threshold=cfg.threshold_flux, flux_tolerance_s=cfg.flux_tolerance_s,
                                start=cfg.start, end=cfg.end, frame_index=index)
    if not table.empty:
        table["event_id"] = ""
        table["event_peak"] = ""  # blocks by the issue time itself
        table["selection"] = "issue"
    info = {"issue_every_hours": cfg.issue_every_h, "horizon_hours": cfg.forecast_hours,
            "threshold_flux": cfg.threshold_flux,
            "label": f"a flare of at least {flux_to_class(cfg.threshold_flux)} starts in (t, t + "
                     f"{cfg.forecast_hours:g} h]",
            "flare_list": source_name, "n_flares": int(len(flares)),
            "n_flares_at_threshold": int((flares["goes_flux"] >= cfg.threshold_flux).sum()) if len(flares) else 0,
            "issue_times": counts,
            "excluded": "issue times during an ongoing flare at or above the threshold (HEK start..end) or with "
                        "XRS-B at or above it at t; without a recent image (1 h) or GOES data at t; whose horizon "
                        "runs past the GOES record"}
    return table, info


def _group_times(table: pd.DataFrame) -> np.ndarray:
    """Time that decides a frame's block: its event's peak for flare frames (so an event never straddles two
    blocks), its own time for quiet frames."""
    group_time = table["time_ns"].to_numpy(dtype="datetime64[ns]").copy()
    has_event = table["event_peak"].to_numpy() != ""
    if has_event.any():
        peaks = pd.to_datetime(table.loc[has_event, "event_peak"], utc=True).dt.tz_localize(None)
        group_time[has_event] = peaks.to_numpy(dtype="datetime64[ns]")
    return group_time


def _assign_blocks(counts: np.ndarray, fractions: dict, seed: int, tries: int = 4000) -> np.ndarray | None:
    """Split index (into ``list(fractions)``) of each block, from a seeded search over assignments.

    The cost favours, in this order: every split non-empty; every class present in the data present in every
    split (where the data allows); each split's share of each class close to its fraction; few changes of split
    between neighbouring blocks (each change costs a buffer). Returns None when no assignment leaves every
    split non-empty (fewer blocks than splits).
    """
    names = list(fractions)
    target = np.array([fractions[s] for s in names])
    n_blocks, n_classes = counts.shape
    if n_blocks < len(names):
        return None
    totals = counts.sum(axis=0)
    present = totals > 0
    weight = 1.0 / np.maximum(totals, 1)  # a rare class's share matters as much as a common one's
    rng = np.random.default_rng(seed)
    candidates = [rng.choice(len(names), size=n_blocks, p=target) for _ in range(tries)]
    # contiguous layouts too (train, then val, then test, in every order), which cost the fewest buffers
    cum = np.cumsum(counts.sum(axis=1)) / max(1, counts.sum())
    for order in (np.arange(len(names)), np.arange(len(names))[::-1], rng.permutation(len(names))):
        cuts = np.cumsum(target[order])[:-1]
        candidates.append(order[np.searchsorted(cuts, cum - 1e-9, side="right").clip(0, len(names) - 1)])
    a = np.stack(candidates)  # (tries, blocks)
    onehot = (a[:, :, None] == np.arange(len(names))[None, None, :]).astype(np.float64)
    per_split = np.einsum("tbk,bc->tkc", onehot, counts)  # (tries, splits, classes)
    empty = (per_split.sum(axis=2) == 0).any(axis=1)
    missing = ((per_split == 0) & present[None, None, :]).sum(axis=(1, 2))
    share = per_split / np.maximum(totals, 1)[None, None, :]
    misfit = (((share - target[None, :, None]) ** 2) * (weight * totals)[None, None, :]).sum(axis=(1, 2))
    changes = (a[:, 1:] != a[:, :-1]).sum(axis=1)
    cost = np.where(empty, np.inf, 10.0 * missing + misfit / max(1, present.sum()) + 0.01 * changes)
    best = int(np.argmin(cost))
    return None if not np.isfinite(cost[best]) else a[best]


def assign_splits(table: pd.DataFrame, cfg: BuildConfig, classes: Sequence[str] | None = None) -> tuple[pd.DataFrame, dict]:
    """Assign contiguous time blocks to train/val/test, drop the buffers between splits; returns the table and
    the manifest's ``splits`` record (rule used, blocks, buffers, warnings). See the module docstring."""
    info = {"rule_requested": cfg.split_by, "buffer_days": cfg.buffer_days, "seed": cfg.split_seed,
            "fractions": {"train": 1.0 - cfg.test_fraction - cfg.val_fraction, "val": cfg.val_fraction,
                          "test": cfg.test_fraction}, "warnings": []}
    if table.empty:
        table["split"] = []
        info.update(rule=cfg.split_by, blocks=[])
        return table, info
    classes = list(classes or SCHEMES[cfg.scheme])
    fractions = {s: f for s, f in info["fractions"].items() if f > 0}
    label_idx = np.array([classes.index(c) for c in table["label"]])
    group_time = _group_times(table)
    times = table["time_ns"].to_numpy(dtype="datetime64[ns]")
    first, last = min(times.min(), group_time.min()), max(times.max(), group_time.max())
    buffer = np.timedelta64(int(cfg.buffer_days * 86400e9), "ns")

    rule = cfg.split_by
    while True:
        if rule == "chronological":
            assignment, edges, block = _chronological(group_time, fractions)
            break
        if cfg.buffer_days >= BLOCK_DAYS[rule]:
            raise FlaresynthError(f"--buffer-days {cfg.buffer_days:g} is not shorter than a {rule} block "
                                  f"({BLOCK_DAYS[rule]:g} days): choose a larger --split-by or a shorter buffer")
        all_edges = block_edges(rule, first, last)
        used, block = np.unique(np.searchsorted(all_edges, group_time, side="right") - 1, return_inverse=True)
        counts = np.zeros((len(used), len(classes)), dtype=np.int64)
        np.add.at(counts, (block, label_idx), 1)
        a = _assign_blocks(counts, fractions, cfg.split_seed)
        if a is not None:
            assignment = np.array([list(fractions)[k] for k in a], dtype=object)
            edges = np.stack([all_edges[used], all_edges[used + 1]], axis=1)  # block k spans [start, end)
            break
        smaller = _FALLBACK.get(rule)
        message = (f"split by {rule}: {len(used)} block(s) of data, too few for {len(fractions)} splits of whole "
                   "blocks")
        if smaller is None or cfg.buffer_days >= BLOCK_DAYS[smaller]:
            why = f"; {smaller} blocks would not be longer than the buffer" if smaller else ""
            raise FlaresynthError(f"{message}: a split would be empty{why} (use --split-by chronological, a shorter "
                                  "--buffer-days, or --val-fraction 0)")
        info["warnings"].append(f"{message}; fell back to {smaller} blocks")
        rule = smaller

    split = assignment[block]
    # buffers: around every boundary between neighbouring blocks of different splits, drop every frame whose own
    # time or block time lies within buffer/2 of the boundary, so frames of different splits are >= buffer apart
    boundaries = [edges[k][1] for k in range(len(edges) - 1) if assignment[k] != assignment[k + 1]]
    half = buffer // 2
    in_buffer = np.zeros(len(table), dtype=bool)
    for b in boundaries:
        for t in (times, group_time):
            in_buffer |= (t >= b - half) & (t < b + half)
    # a label window (t, t + forecast] must not reach into another split's block
    window = np.timedelta64(int(cfg.forecast_hours * 3600e9), "ns")
    crosses = np.zeros(len(table), dtype=bool)
    for b in boundaries:
        crosses |= (times < b) & (times + window > b + half)
    table = table.copy()
    table["split"] = split
    peak_cols = ["peak24_flux", "peak24_class", "flare24"]
    if crosses.any() and (cfg.label_rule == "peak24" or cfg.task == "forecast"):
        in_buffer |= crosses  # the label itself would look across the boundary
    elif crosses.any() and all(c in table for c in peak_cols):
        table.loc[crosses, "peak24_flux"] = np.nan
        table.loc[crosses, "peak24_class"] = ""
        table.loc[crosses, "flare24"] = False
    kept = table[~in_buffer].reset_index(drop=True)
    block_rows = []
    for k in range(len(edges)):
        rows = kept[(block[~in_buffer] == k)]
        block_rows.append({"start": _iso(edges[k][0]), "end": _iso(edges[k][1]), "split": str(assignment[k]),
                           "n_images": int(len(rows)),
                           "counts": {c: int((rows["label"] == c).sum()) for c in classes}})
    info.update(rule=rule, blocks=block_rows, n_boundaries=len(boundaries), dropped_in_buffers=int(in_buffer.sum()),
                label_windows_cut=int(crosses.sum()))
    if cfg.buffer_days > 0 and not boundaries:
        info["warnings"].append("no boundary between splits: no buffer was needed")
    return kept, info


def _chronological(group_time: np.ndarray, fractions: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train on the earliest frames, then val, then test, cut at the fractions of the frame count."""
    order = [s for s in ("train", "val", "test") if s in fractions]
    t_sorted = np.sort(group_time)
    cum = np.cumsum([fractions[s] for s in order])[:-1]
    cuts = [t_sorted[min(len(t_sorted) - 1, int(round(c * len(t_sorted))))] for c in cum]
    edges_flat = np.array([t_sorted[0], *cuts, t_sorted[-1] + np.timedelta64(1, "s")], dtype="datetime64[ns]")
    if len(np.unique(edges_flat)) < len(edges_flat):
        raise FlaresynthError("split chronological: too few distinct times for "
                              f"{len(order)} splits; a split would be empty")
    block = np.searchsorted(edges_flat[1:-1], group_time, side="right")
    edges = np.stack([edges_flat[:-1], edges_flat[1:]], axis=1)
    return np.array(order, dtype=object), edges, block


def _iso(t) -> str:
    return pd.Timestamp(t).strftime("%Y-%m-%dT%H:%M:%SZ")


def preprocess_frames(source, indices, path: Path, cfg: BuildConfig, transform, scheduler, progress) -> None:
    """Read, resize, log-scale and store the selected frames, in batches run by dask.

    ``transform`` is one :class:`~flaresynth.transforms.IntensityTransform` (a one-channel source, frames
    (n, H, W)) or a list of them, one per channel of an aligned source (frames (n, C, H, W)).

    On local threads (``scheduler`` None) each batch is read from ``source`` and written here. On a
    dask.distributed cluster each task carries only ``source.batch(...)`` (where its frames live) and the rows
    it fills: the worker opens the store or files itself, preprocesses its frames and writes its rows of the
    ``.npy`` at ``path`` in place (created here first with its header), returning the row count and a CRC-32 of
    what it wrote, which is checked against the file afterwards. So the workers must see ``path`` (the
    temporary folder beside ``--out``) and the images at the same paths as this process: one machine, or a
    shared filesystem on an HPC cluster. A worker that cannot is a one-line error before any task runs.
    """
    from numpy.lib.format import open_memmap

    n = len(indices)
    per_channel = list(transform) if isinstance(transform, (list, tuple)) else None
    n_channels = len(per_channel) if per_channel else 1
    result = open_memmap(path, mode="w+", dtype=np.float32, shape=(n, n_channels, cfg.size, cfg.size))
    # Sorting by source index keeps each store chunk inside one batch; results go back to table order.
    order = np.argsort(indices, kind="stable")
    batches = [order[i : i + cfg.batch_frames] for i in range(0, n, cfg.batch_frames)]
    if scheduler:
        result.flush()
        del result  # the workers write the rows; this process only checks them
        _preprocess_distributed(source, indices, batches, Path(path), cfg, transform, scheduler, progress)
        return

    import dask

    def work(batch_indices):
        return _preprocess_batch(source.read_many(batch_indices), cfg.size, transform, cfg.mask_limb)

    tasks = [dask.delayed(work)(indices[b]) for b in batches]
    # compute in groups so progress advances and memory stays bounded
    step = 4 * (cfg.workers or os.cpu_count() or 1)
    bar = _progress(range(0, len(tasks), step), (len(tasks) + step - 1) // step, progress, "preprocessing (dask threads)")
    for start in bar:
        done = dask.compute(*tasks[start : start + step], scheduler="threads", num_workers=cfg.workers)
        for b, arr in zip(batches[start : start + step], done):
            result[b] = arr
    result.flush()
    del result


def _preprocess_batch(frames: np.ndarray, size: int, transform, mask_limb: bool) -> np.ndarray:
    """Frames (n, H, W) or (n, C, H, W) in DN/s -> float32 (n, C, size, size) model images."""
    from flaresynth.transforms import apply_limb_mask, limb_mask, resize

    small = resize(frames.astype(np.float32, copy=False), size)  # no 32 MB copy of float32 frames
    if not isinstance(transform, (list, tuple)):
        x = transform.forward(small)[:, None]
    else:  # (n, C, size, size): each channel through its own transform
        x = np.stack([t.forward(small[:, c]) for c, t in enumerate(transform)], axis=1)
    if mask_limb:
        x = apply_limb_mask(x, limb_mask(size))
    return np.asarray(x, dtype=np.float32)


def _write_batch(batch, rows: np.ndarray, path: str, size: int, transform, mask_limb: bool) -> tuple[int, int]:
    """On a dask.distributed worker: read the frames of ``batch`` from their source, preprocess them and write
    them into ``rows`` of the ``.npy`` at ``path``; returns (rows written, CRC-32 of their bytes)."""
    from numpy.lib.format import open_memmap

    x = _preprocess_batch(batch.read(), size, transform, mask_limb)
    out = open_memmap(path, mode="r+")
    out[rows] = x
    out.flush()
    del out
    return len(rows), zlib.crc32(x.tobytes())


def _probe_worker(path: str, shape: tuple, batch) -> str | None:
    """Run on every worker before a distributed build: None when it can open the output in place and read the
    first frame, else what failed (one line)."""
    from numpy.lib.format import open_memmap

    try:
        out = open_memmap(path, mode="r+")
        ok = tuple(out.shape) == tuple(shape)
        del out
        if not ok:
            return f"output: {path} holds another array than this build's (another file at the same path?)"
    except Exception as exc:  # any reason a worker cannot write the file is reported, not raised
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else " ".join(str(exc).split())
        return f"output: cannot open {path} ({type(exc).__name__}: {why})"
    try:
        batch.read()
    except Exception as exc:
        return f"images: cannot read the first frame ({type(exc).__name__}: {' '.join(str(exc).split())})"
    return None


def _preprocess_distributed(source, indices, batches, path: Path, cfg: BuildConfig, transform, scheduler: str,
                            progress: bool) -> None:
    """The dask.distributed side of :func:`preprocess_frames`: workers read, preprocess and write their own rows."""
    from distributed import Client, as_completed
    from numpy.lib.format import open_memmap

    path = path.resolve()  # the workers' working folder is not ours
    shape = (len(indices), len(transform) if isinstance(transform, (list, tuple)) else 1, cfg.size, cfg.size)
    try:
        client = Client(scheduler, timeout="20s")
    except OSError as exc:
        raise FlaresynthError(f"--scheduler {scheduler}: cannot connect to a dask scheduler ({exc})") from exc
    with client:
        if not client.scheduler_info()["workers"]:
            try:
                client.wait_for_workers(1, timeout=60)
            except TimeoutError:
                raise FlaresynthError(f"--scheduler {scheduler}: no dask worker joined within 60 s") from None
        probe = source.batch(indices[:1])
        problems = {w: p for w, p in client.run(_probe_worker, str(path), shape, probe).items() if p}
        if problems:
            worker, problem = sorted(problems.items())[0]
            raise FlaresynthError(
                f"--scheduler {scheduler}: worker {worker} ({len(problems)} of {len(client.scheduler_info()['workers'])}"
                f") cannot build here: {problem}. dask workers read the images and write their own rows of "
                f"{IMAGES_FILE} themselves, so they must see this machine's files at the same paths (one machine, "
                "or --out and the images on a filesystem every worker mounts)")
        futures = [client.submit(_write_batch, source.batch(indices[b]), b, str(path), cfg.size, transform,
                                 cfg.mask_limb, pure=False) for b in batches]
        where = {f.key: k for k, f in enumerate(futures)}
        crcs = {}
        for fut in _progress(as_completed(futures), len(futures), progress, "preprocessing (dask.distributed)"):
            k = where[fut.key]
            n_written, crcs[k] = fut.result()
            if n_written != len(batches[k]):
                raise FlaresynthError(f"--scheduler {scheduler}: a worker wrote {n_written} of the "
                                      f"{len(batches[k])} rows of batch {k}")
    # the file as this process sees it must hold what every worker wrote (a filesystem that does not share
    # writes between the machines would otherwise give a silently wrong dataset)
    written = open_memmap(path, mode="r")
    bad = [k for k, b in enumerate(batches) if zlib.crc32(np.ascontiguousarray(written[b]).tobytes()) != crcs[k]]
    del written
    if bad:
        raise FlaresynthError(f"--scheduler {scheduler}: {len(bad)} of {len(batches)} batches differ in {path} from "
                              "what the workers wrote: the workers' writes do not reach this machine (put --out on a "
                              "filesystem every worker shares)")


def _progress(iterable, total: int, enabled: bool, description: str):
    if not enabled:
        return iterable
    from rich.console import Console
    from rich.progress import track

    # on stderr: stdout holds the command's result (e.g. --json)
    return track(iterable, total=total, description=description, transient=True, console=Console(stderr=True))


def _recorded_path(spec) -> str:
    """A source as the manifest records it: a local path made absolute, anything else (a URL) as given."""
    p = Path(str(spec))
    return str(p.resolve()) if p.exists() else str(spec)


def _input_fingerprint(images: str, goes: Sequence[str], hek: str, cfg: BuildConfig) -> str:
    """Hash of the build parameters and of the inputs' names, sizes and modification times."""
    h = hashlib.sha256()
    # the multi-channel fields enter only when set, so a one-channel build keeps the fingerprint it always had
    params = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__
              if not (k in ("channels", "align_tol_s") and getattr(cfg, k) is None)}
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    for spec in [images, *goes, hek]:
        p = Path(str(spec))
        if p.exists():
            files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
            for q in files:
                st = q.stat()
                h.update(f"{q.relative_to(p) if p.is_dir() else q.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        else:
            h.update(str(spec).encode())
    return h.hexdigest()


def _versions() -> dict:
    import importlib.metadata as md

    versions = {"flaresynth": __version__, "python": platform.python_version()}
    for pkg in ("numpy", "zarr", "xarray", "astropy", "sunpy", "dask", "torch"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return versions


def _convention(scale: str) -> dict:
    """The flux convention of every label of a dataset (written into its manifest and every results file)."""
    text = {"true": "NOAA science (true) fluxes: GOES 8-15 XRS-B without SWPC's 0.7 factor; HEK classes of GOES "
                    "8-15 events divided by 0.7",
            "swpc": "SWPC scale: GOES 8-15 XRS-B x 0.7 (as pre-2020 SWPC/HEK class strings); GOES-R unchanged"}[scale]
    return {"scale": scale, "description": text}


def dataset_summary(ds: DatasetFolder) -> dict:
    """What `flaresynth dataset info` prints: size, classes, counts per split, sources, label rule."""
    m = ds.manifest
    return {
        "path": str(ds.path),
        "n_images": int(len(ds.labels)),
        "shape": list(ds.images.shape[1:]),
        "channels": ds.channels,
        "scheme": ds.scheme,
        "label_rule": m.get("label_rule"),
        "task": m.get("task", "images"),
        "flux_convention": m.get("flux_convention"),
        "forecast": m.get("forecast"),
        "splits": m.get("splits"),
        "counts": m.get("counts"),
        "selection": ds.labels["selection"].value_counts().to_dict() if "selection" in ds.labels else {},
        "time_range": [ds.labels["time"].min(), ds.labels["time"].max()],
        "sources": m.get("sources"),
        "data_hash": m.get("data_hash"),
    }
