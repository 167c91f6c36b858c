"""Samples folders: what every generator writes and what evaluation reads.

Layout::

    SAMPLES/
      samples.npy     float32 (N, C, H, W), model space [-1, 1] (the dataset's intensity transform)
      samples.csv     one row per image (columns: :data:`SAMPLE_COLUMNS`)
      manifest.json   format, generator, scheme/classes, transform, sampler settings, seed, counts
      fits/           optional: one FITS file per image in DN/s with an AIA-like WCS
      grid.png        optional: a per-class grid in the AIA 171 colour map

The DDPM sampler and the ceVAE baseline write the same folder, so evaluation treats them alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from flaresynth.errors import input_error
from flaresynth.io import atomic_dir, open_npy, read_json, write_json

SAMPLES_FORMAT = "flaresynth-samples/1"
SAMPLES_FILE = "samples.npy"
SAMPLES_TABLE = "samples.csv"
MANIFEST_FILE = "manifest.json"

#: Columns of samples.csv.
SAMPLE_COLUMNS = [
    "label",  # requested class name in the scheme ("" when only a flux was requested)
    "requested_flux",  # requested XRS-B flux in W/m² (NaN for class requests)
    "seed",  # seed of this image's initial noise
]


@dataclass
class SamplesFolder:
    """A samples folder opened for reading."""

    path: Path
    manifest: dict
    table: pd.DataFrame
    images: np.ndarray

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.manifest["classes"])

    def label_index(self) -> np.ndarray:
        """Index into :attr:`classes` of each image's requested class (-1 where none)."""
        lookup = {c: i for i, c in enumerate(self.classes)}
        return np.array([lookup.get(c, -1) for c in self.table["label"].fillna("")], dtype=np.int64)


def write_samples(out: str | Path, images: np.ndarray, table: pd.DataFrame, manifest: dict, extra=None,
                  overwrite: bool = False) -> Path:
    """Write a samples folder atomically.

    ``manifest`` must hold ``classes``, ``scheme``, ``transform`` and ``generator``. ``extra`` is an optional
    callable ``extra(tmp_folder)`` that adds files (FITS, grids) before the folder is renamed into place.
    """
    images = np.ascontiguousarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[0] != len(table):
        raise ValueError(f"images {images.shape} and {len(table)} rows do not match")
    for key in ("classes", "scheme", "transform", "generator"):
        if key not in manifest:
            raise ValueError(f"samples manifest needs {key!r}")
    with atomic_dir(out, overwrite=overwrite) as tmp:
        np.save(tmp / SAMPLES_FILE, images)
        table.reset_index(drop=True).to_csv(tmp / SAMPLES_TABLE, index=False, float_format="%.6e")
        manifest = dict(manifest, format=SAMPLES_FORMAT, n_images=int(len(table)))
        manifest["counts"] = {c: int((table["label"] == c).sum()) for c in manifest["classes"]}
        if extra is not None:
            extra(tmp)
        write_json(tmp / MANIFEST_FILE, manifest)
    return Path(out)


def open_samples(path: str | Path) -> SamplesFolder:
    """Open a samples folder, checking that its files are readable, complete and agree.

    Each problem is a one-line :class:`~flaresynth.errors.FlaresynthError` naming the file and what is wrong
    (as :func:`flaresynth.dataset.open_dataset` does for dataset folders).
    """
    path = Path(path)
    if not path.is_dir():
        raise input_error(path, None, "no such samples folder (make one with `flaresynth sample`)")
    for name in (MANIFEST_FILE, SAMPLES_TABLE, SAMPLES_FILE):
        if not (path / name).is_file():
            raise input_error(path / name, None, "missing: not a complete flaresynth samples folder")
    try:
        manifest = read_json(path / MANIFEST_FILE)
    except (OSError, ValueError) as exc:
        raise input_error(path / MANIFEST_FILE, None, f"not readable JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise input_error(path / MANIFEST_FILE, None, "expected a JSON object")
    fmt = manifest.get("format")
    if fmt != SAMPLES_FORMAT:
        known = isinstance(fmt, str) and fmt.startswith(SAMPLES_FORMAT.split("/")[0] + "/")
        raise input_error(path / MANIFEST_FILE, "format", f"{fmt!r}, expected {SAMPLES_FORMAT!r}"
                          + (" (a format version this flaresynth does not read)" if known else ""))
    for key in ("classes", "scheme", "transform", "generator"):
        if key not in manifest:
            raise input_error(path / MANIFEST_FILE, key, "missing")
    try:
        table = pd.read_csv(path / SAMPLES_TABLE, keep_default_na=False, na_values=["nan", "NaN"], dtype={"label": str})
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise input_error(path / SAMPLES_TABLE, None, f"not a readable CSV table ({str(exc).strip()})") from None
    if "label" not in table.columns:
        raise input_error(path / SAMPLES_TABLE, "column 'label'", "missing")
    images = open_npy(path / SAMPLES_FILE)
    if images.ndim != 4 or images.dtype != np.float32:
        raise input_error(path / SAMPLES_FILE, "array", f"{images.dtype} {images.shape}, expected float32 (N, C, H, W)")
    if images.shape[0] != len(table):
        raise input_error(path / SAMPLES_TABLE, None, f"{len(table)} rows, but {SAMPLES_FILE} holds {images.shape[0]} images")
    return SamplesFolder(path=path, manifest=manifest, table=table, images=images)
