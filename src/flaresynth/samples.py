"""Samples folders: what every generator writes and what evaluation reads.

Layout::

    SAMPLES/
      samples.npy     float32 (N, C, H, W), model space [-1, 1] (the dataset's intensity transform)
      samples.csv     one row per image (columns: :data:`SAMPLE_COLUMNS`)
      manifest.json   format, generator, scheme/classes, transform, sampler settings, seed, counts
      fits/           optional: one FITS file per image and channel in DN/s with an AIA-like WCS (:func:`write_fits`),
                      as AIA's own files are: NNNNN_<label>.fits for one channel, NNNNN_<label>_<channel>.fits for several
      grid.png        optional: a per-class grid of 171 Å in its AIA colour map (:func:`flaresynth.figures.save_grid`);
                      several channels: also grid_<channel>.png for each other channel and rgb_grid.png (211/193/171 Å)

The DDPM sampler and the ceVAE baseline write the same folder (:func:`write_samples`, with the per-image files
of :func:`image_writer`), so evaluation treats them alike.

FITS geometry: the synthetic image was never observed, so the header describes the frame its training data
had. SDOMLv2 (Galvez et al. 2019, ApJS 242, 7) rescales every AIA image so the solar radius is 976″ at 4.8″/px
for 512 px, so CDELT = 4.8·512/size ″/px, and the observer sits on the Sun–Earth line (HGLN_OBS = HGLT_OBS = 0) at
DSUN_OBS = RSUN_REF / sin(976″) = 1.4709e11 m (0.983 au), where the solar radius appears as 976″. DATE-OBS is a
nominal epoch, J2000.0 (2000-01-01T12:00:00, when Earth was at that distance): it carries no information about
the image and only fixes the coordinate frame's time for sunpy. The WCS and observer cards come from
``sunpy.map.header_helper.make_fitswcs_header``, so ``sunpy.map.Map`` opens each file as an AIA map of its
channel (``WAVELNTH``, ``WAVEUNIT``, ``INSTRUME`` AIA_n of that channel's telescope). Pixels are DN/s, so
``EXPTIME`` is 1 s, as aiapy's ``normalize_exposure`` leaves it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import astropy.units as u
import numpy as np
import pandas as pd
from astropy.coordinates import SkyCoord
from astropy.io import fits as pyfits
from sunpy.coordinates import frames
from sunpy.map.header_helper import make_fitswcs_header

from flaresynth.errors import input_error
from flaresynth.figures import RGB_CHANNELS, main_channel, save_grid
from flaresynth.io import atomic_dir, open_npy, read_folder_manifest, write_json
from flaresynth.labels import flux_to_class
from flaresynth.transforms import SDOML_CDELT_512, SDOML_RSUN_ARCSEC, SDOML_SIZE, channel_transforms

SAMPLES_FORMAT = "flaresynth-samples/1"
SAMPLES_FILE = "samples.npy"
SAMPLES_TABLE = "samples.csv"
MANIFEST_FILE = "manifest.json"

#: Nominal observation time written as DATE-OBS (see the module docstring).
NOMINAL_DATE_OBS = "2000-01-01T12:00:00.000"
#: Solar radius in metres (sunpy's and the AIA headers' RSUN_REF).
RSUN_REF_M = 696_000_000.0
#: AIA telescope number of each channel (AIA_1: 131/335, AIA_2: 193/211, AIA_3: 171/UV, AIA_4: 94/304).
AIA_TELESCOPE = {94: 4, 131: 1, 171: 3, 193: 2, 211: 2, 304: 4, 335: 1, 1600: 3, 1700: 3, 4500: 3}

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

    @property
    def channels(self) -> list[str]:
        """The images' channel names (the manifest's; ``171A`` for a one-channel folder written without them)."""
        names = self.manifest.get("channels")
        return list(names) if names else (["171A"] if self.images.shape[1] == 1 else [])

    def transforms(self, default=None) -> list:
        """One intensity transform per channel (``default``: the dataset's ``transform`` field, for folders
        written without one); a one-line error when the recorded transforms do not fit the channels."""
        spec = self.manifest.get("transform", default)
        return channel_transforms(spec, int(self.images.shape[1]), str(self.path / MANIFEST_FILE))

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
    manifest = read_folder_manifest(path, "samples", "flaresynth sample", (MANIFEST_FILE, SAMPLES_TABLE, SAMPLES_FILE),
                                    MANIFEST_FILE, SAMPLES_FORMAT, ("classes", "scheme", "transform", "generator"))
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


# ------------------------------------------------------------------------------------------ FITS files


def channel_wavelength(channel: str) -> int:
    """``'171A'`` -> 171."""
    digits = "".join(ch for ch in str(channel) if ch.isdigit())
    return int(digits) if digits else 171


def fits_header(size: int, channel: str = "171A", extra: dict | None = None) -> pyfits.Header:
    """An AIA FITS header for a synthetic ``size``×``size`` image in DN/s (geometry: module docstring).

    WCS, observer and instrument cards from ``make_fitswcs_header``; then flaresynth's own: the nominal
    T_OBS, ``SYNTHETI``, and ``extra`` (``{key: value}`` or ``{key: (value, comment)}``).
    """
    wave = channel_wavelength(channel)
    dsun = RSUN_REF_M / math.sin(math.radians(SDOML_RSUN_ARCSEC / 3600.0))
    observer = SkyCoord(0 * u.deg, 0 * u.deg, dsun * u.m, frame=frames.HeliographicStonyhurst,
                        obstime=NOMINAL_DATE_OBS)
    centre = SkyCoord(0 * u.arcsec, 0 * u.arcsec, frame=frames.Helioprojective(
        observer=observer, obstime=NOMINAL_DATE_OBS, rsun=RSUN_REF_M * u.m))
    cdelt = SDOML_CDELT_512 * SDOML_SIZE / size
    meta = make_fitswcs_header(
        (size, size), centre, reference_pixel=[(size - 1) / 2.0] * 2 * u.pix, scale=[cdelt] * 2 * u.arcsec / u.pix,
        rotation_angle=0 * u.deg, telescope="SDO/AIA", instrument=f"AIA_{AIA_TELESCOPE.get(wave, 3)}",
        detector="AIA", observatory="SDO", wavelength=wave * u.AA, unit=u.DN / u.s,
    )
    header = pyfits.Header()
    for key, value in meta.items():
        if key != "keycomments":
            header[key.upper()] = value.item() if isinstance(value, np.generic) else value
    header["BUNIT"] = ("DN/s", "exposure-normalised, as SDOMLv2")
    header["EXPTIME"] = (1.0, "[s] exposure-normalised: pixels are DN/s")
    header["DATE-OBS"] = (NOMINAL_DATE_OBS, "nominal epoch (J2000), not an observation")
    header["T_OBS"] = (NOMINAL_DATE_OBS, "nominal epoch (J2000), not an observation")
    header["CDELT1"] = (header["CDELT1"], f"[arcsec/pix] SDOMLv2 {SDOML_CDELT_512} at {SDOML_SIZE} px")
    header["RSUN_OBS"] = (header["RSUN_OBS"], "[arcsec] SDOMLv2 normalised radius")
    header["DSUN_OBS"] = (header["DSUN_OBS"], "[m] distance where RSUN_REF appears as RSUN_OBS")
    header["SYNTHETI"] = (True, "generated by flaresynth, not observed")
    for key, value in (extra or {}).items():
        header[key] = value
    return header


def write_fits(path: Path, image_dn: np.ndarray, channel: str, extra: dict) -> None:
    """One FITS file of one channel (H, W) in DN/s, as AIA writes one file per channel."""
    data = np.asarray(image_dn, dtype=np.float32)
    pyfits.PrimaryHDU(data, fits_header(data.shape[-1], channel, extra)).writeto(path, overwrite=True)


def fits_names(index: int, label: str, channels: list[str]) -> list[str]:
    """File names of one image's FITS files: ``NNNNN_<label>.fits`` for one channel, one
    ``NNNNN_<label>_<channel>.fits`` per channel for several."""
    if len(channels) == 1:
        return [f"{index:05d}_{label}.fits"]
    return [f"{index:05d}_{label}_{ch}.fits" for ch in channels]


def row_label(row) -> str:
    """The label of a request row: its class, or the class of its requested flux."""
    if row["label"]:
        return str(row["label"])
    return f"{flux_to_class(row['requested_flux'])}"


def image_writer(images: np.ndarray, table: pd.DataFrame, transforms, channels: list[str], scheme: str,
                 model_id: str, header: Callable[[pd.Series], dict], grid_title: str, fits: bool = True,
                 grid: bool = True) -> Callable[[Path], None]:
    """The ``extra`` step of :func:`write_samples` shared by every generator: one FITS file per image and channel
    in DN/s (:func:`fits_names`; the table's ``file`` column names them, ``;``-separated for several channels)
    with the common header cards plus the generator's own (``header(row)``), and the PNG grid."""
    if len(channels) != images.shape[1] or len(transforms) != images.shape[1]:
        raise input_error(None, "channels", f"{len(channels)} channel names and {len(transforms)} transforms for "
                          f"images of {images.shape[1]} channel(s)")
    names = [fits_names(i, row_label(row), channels) for i, row in table.iterrows()]
    if fits:
        table["file"] = [";".join(f"fits/{n}" for n in files) for files in names]

    def extra(tmp: Path) -> None:
        if fits:
            (tmp / "fits").mkdir()
            for i, row in table.iterrows():
                dn = np.stack([transforms[c].inverse(images[i, c]) for c in range(images.shape[1])])
                req_flux = row["requested_flux"]
                cards = {
                    "GOESCLS": (row["label"] or row["flux_class"], f"requested class (scheme {scheme})"),
                    "GOESFLUX": (float(req_flux) if np.isfinite(req_flux) else "none", "[W/m2] requested XRS-B flux"),
                    "SEED": (int(row["seed"]), "seed of this image"),
                    # a long id keeps its full value and drops the comment, so the card stays within 80 characters
                    "MODELID": (str(model_id)[:68], "flaresynth model id" if len(str(model_id)) <= 46 else ""),
                    **header(row),
                }
                if len(channels) > 1:
                    cards["CHANNELS"] = (",".join(channels), "channels of this image, one file each")
                for name, channel, plane in zip(names[i], channels, dn):
                    write_fits(tmp / "fits" / name, plane, channel, cards)
        if grid:
            labels = [row_label(r) for _, r in table.iterrows()]
            # several channels: grid.png is 171 Å's (the paper's channel), grid_<ch>.png each other one, and the
            # 211/193/171 Å composite of the SDO press images where those three are there
            save_grid(images, labels, tmp / "grid.png", title=grid_title, channels=channels)
            if len(channels) > 1:
                main = main_channel(channels)[1]
                for ch in channels:
                    if ch != main:
                        save_grid(images, labels, tmp / f"grid_{ch}.png", title=f"{grid_title} ({ch})",
                                  channels=channels, show=ch)
                if set(RGB_CHANNELS) <= set(channels):
                    save_grid(images, labels, tmp / "rgb_grid.png", title=f"{grid_title} (RGB = 211/193/171 Å)",
                              channels=channels, show="rgb")

    return extra


__all__ = [
    "SAMPLES_FORMAT",
    "SAMPLES_FILE",
    "SAMPLES_TABLE",
    "MANIFEST_FILE",
    "SAMPLE_COLUMNS",
    "NOMINAL_DATE_OBS",
    "SamplesFolder",
    "write_samples",
    "open_samples",
    "channel_wavelength",
    "fits_header",
    "write_fits",
    "fits_names",
    "image_writer",
]
