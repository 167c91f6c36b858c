"""SDO/AIA level 1 / 1.5 FITS files, brought to the SDOMLv2 image convention.

SDOMLv2 (Galvez et al. 2019; its creation script ``aia_fits_to_zarr.py``) stores every AIA frame
with the solar disk rescaled to a radius of **976″** at a nominal plate scale of **4.8″/px** (512 px; the frame
spans 512 × 4.8″ = 2457.6″), the disk centred, pixels in **DN/s**, degradation-corrected. This module gives a
FITS file the same geometry so images from either source can be mixed:

* the image HDU is the primary one or the first image extension, e.g. a JSOC RICE ``CompImageHDU``;
* the pixel → helioprojective map is the linear FITS WCS (CDELT, CRPIX, CRVAL and the PCi_j matrix or
  CROTA2). The TAN projection departs from it by < 0.01″ within 1000″ of disk centre, so a linear map is exact
  enough for a 4.8″ grid;
* one affine map (scale, shift **and** rotation to solar north, so CROTA2 is always honoured — it costs the
  same as ignoring it) takes output pixels to input pixels, applied with ``scipy.ndimage.affine_transform``
  (bilinear, ``order=1``). When the output pixel covers ≥ 2 input pixels per side (e.g. 4096 → 512) the input
  is first block-averaged by the integer part of that factor, like SDOMLv2's ``downscale_local_mean``, so the
  bilinear step shrinks by < 2x and does not alias;
* as in SDOMLv2, pixels ≤ 0 (and non-finite ones, e.g. BLANK) are masked and the result is normalised by the
  resampled mask (``warp(img·mask) / warp(mask)``): a missing pixel does not drag its neighbourhood down
  (isolated ones are filled from their neighbours) and the edge of a sub-field is not darkened; outside the
  input field of view the output is 0;
* exposure: DN are divided by ``EXPTIME`` (DN/s), unless ``PIXLUNIT``/``BUNIT`` already say "per second";
* **no degradation correction** is applied offline (it needs a calibration table by date), so ``DEG_COR`` is
  1.0; SDOMLv2 stores the factor it divided by under the same key.

Arrays keep the FITS pixel order, as SDOMLv2 stores them: ``image[row, col]`` with row 0 the southern edge
(display with ``origin="lower"``), columns increasing to solar west.

The output header keeps every keyword of the file (as SDOMLv2 keeps them) and rewrites the geometry:
``NAXIS1/2 = out_size``, ``CRPIX1/2 = (out_size + 1) / 2`` (disk centre at the array centre), ``CRVAL1/2 = 0``,
``CROTA2 = 0``, ``CDELT1/2 = (2457.6″ / out_size) · RSUN_OBS / 976`` (the true angular size of an output
pixel, SDOMLv2's rule, so that ``RSUN_OBS / CDELT = 976 / 4.8 · out_size / 512`` px), ``R_SUN`` = that radius in
pixels, ``X0_MP/Y0_MP`` = the 0-based centre, ``PIXLUNIT = "DN/s"``, ``DEG_COR = 1.0`` and ``T_OBS`` in the AIA
format ``%Y-%m-%dT%H:%M:%S.%fZ`` (from ``DATE-OBS + EXPTIME/2``, AIA's definition, when ``T_OBS`` is missing).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning
from scipy import ndimage

from flaresynth.errors import FlaresynthError, input_error
from flaresynth.sources.frames import FITS_SUFFIXES, TimeIndexedFrames, parse_t_obs

#: SDOMLv2 normalised solar radius, arcsec.
SDOML_RSUN_ARCSEC = 976.0
#: SDOMLv2 nominal plate scale at 512 px, arcsec per pixel.
SDOML_PLATE_SCALE_512 = 4.8
#: Width of an SDOMLv2 frame in normalised arcsec (512 px × 4.8″).
SDOML_FOV_ARCSEC = 512 * SDOML_PLATE_SCALE_512

# Structural / compression cards that describe the file, not the observation.
_DROP_KEYS = {"SIMPLE", "BITPIX", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "BLANK", "BSCALE", "BZERO",
              "CHECKSUM", "DATASUM", "COMMENT", "HISTORY", ""}
_ROTATION_KEY = re.compile(r"(PC|CD)[12]_[12]")
# Radius of the Sun used by the AIA pipeline when RSUN_OBS must be derived from DSUN_OBS, m.
_RSUN_REF_M = 696_000_000.0


def read_aia_fits(path: str | Path, out_size: int = 512) -> tuple[np.ndarray, dict]:
    """Read an AIA level 1 / 1.5 FITS file into the SDOMLv2 geometry, in DN/s.

    Parameters
    ----------
    path : a FITS file (plain, gzip or RICE tile-compressed) of SDO/AIA.
    out_size : output width and height in pixels; the frame spans 2457.6 normalised arcsec, so the disk
        radius is ``976 / 4.8 · out_size / 512`` px, centred, solar north up.

    Returns
    -------
    image : float32 (out_size, out_size), DN/s (not degradation-corrected, ``DEG_COR = 1``).
    header : dict of the file's keywords with the geometry rewritten (see the module docstring).
    """
    path = Path(path)
    with warnings.catch_warnings():
        # e.g. BLANK on float data in real AIA/EIT files: harmless, and not the user's to fix
        warnings.simplefilter("ignore", VerifyWarning)
        try:
            with fits.open(path) as hdul:
                hdu = _image_hdu(hdul, path)
                raw = hdu.header.copy()
                _check_aia(path, raw)
                data = np.array(hdu.data, dtype=np.float32)
        except OSError as exc:
            raise input_error(path, None, f"not a readable FITS file ({exc})") from exc
    header = aia_output_header(raw, out_size, path)
    exptime = _exposure_divisor(raw, path)
    image = _resample_to_sdoml(data, raw, out_size, path) / exptime
    return image.astype(np.float32), header


def aia_output_header(raw: fits.Header | dict, out_size: int = 512, path: str | Path | None = None) -> dict:
    """The header :func:`read_aia_fits` returns, computed from the file's header alone (no pixels read)."""
    geo = _geometry(raw, path)
    # the old rotation matrix no longer applies to the north-up output
    header = {k: _plain(v) for k, v in raw.items() if k not in _DROP_KEYS and not _ROTATION_KEY.fullmatch(k)}
    scale = SDOML_FOV_ARCSEC / out_size  # normalised arcsec per output pixel
    cdelt = scale * geo["rsun_obs"] / SDOML_RSUN_ARCSEC  # true arcsec per output pixel
    centre = (out_size + 1) / 2  # FITS 1-based
    header.update({
        "NAXIS": 2, "NAXIS1": out_size, "NAXIS2": out_size,
        "CDELT1": cdelt, "CDELT2": cdelt, "CUNIT1": "arcsec", "CUNIT2": "arcsec",
        "CRPIX1": centre, "CRPIX2": centre, "CRVAL1": 0.0, "CRVAL2": 0.0, "CROTA2": 0.0,
        "RSUN_OBS": geo["rsun_obs"], "R_SUN": SDOML_RSUN_ARCSEC / scale,
        "X0_MP": centre - 1, "Y0_MP": centre - 1,
        "T_OBS": aia_t_obs(raw, path),
        "EXPTIME": _plain(raw.get("EXPTIME")),
        "WAVELNTH": _wavelength(raw),
        "QUALITY": int(raw.get("QUALITY", 0) or 0),
        "PIXLUNIT": "DN/s",
        "DEG_COR": 1.0,
    })
    if "BUNIT" in header:
        header["BUNIT"] = "DN/s"
    return header


def aia_t_obs(raw: fits.Header | dict, path: str | Path | None = None) -> str:
    """Observation mid-time of an AIA header as ``%Y-%m-%dT%H:%M:%S.%fZ`` (UTC).

    ``T_OBS`` when present (a missing ``Z`` or fraction is added), else ``DATE-OBS + EXPTIME/2`` (AIA's
    definition of T_OBS), rounded to 10 ms like AIA's own T_OBS.
    """
    t_obs = raw.get("T_OBS")
    if isinstance(t_obs, str) and t_obs.strip():
        parse_t_obs([t_obs], path, "T_OBS")  # raises a named error if it is not a time
        s = t_obs.strip().removesuffix("Z")
        return s + ("Z" if re.search(r"\.\d+$", s) else ".00Z")
    date_obs = raw.get("DATE-OBS")
    if not isinstance(date_obs, str) or not date_obs.strip():
        raise input_error(path, "T_OBS/DATE-OBS", "missing (expected the observation time of an AIA frame)")
    t = parse_t_obs([date_obs], path, "DATE-OBS")[0]
    exptime = raw.get("EXPTIME")
    if isinstance(exptime, (int, float)) and exptime > 0:
        t = t + np.timedelta64(int(round(exptime / 2 * 1e9)), "ns")
    return _format_t_obs(t)


def _format_t_obs(t: np.datetime64) -> str:
    ns = int(np.datetime64(t, "ns").astype(np.int64))
    ms = np.datetime64(round(ns / 1e7) * 10, "ms")  # rounded to 10 ms
    return str(ms)[:-1] + "Z"  # AIA writes centiseconds


def _image_hdu(hdul: fits.HDUList, path: Path):
    for hdu in hdul:
        if hdu.is_image and hdu.header.get("NAXIS") == 2:
            return hdu
    raise input_error(path, None, "no 2-D image HDU (expected an AIA image in the primary or a compressed HDU)")


def _check_aia(path: str | Path, header) -> None:
    instrume = str(header.get("INSTRUME", "") or "")
    telescop = str(header.get("TELESCOP", "") or "")
    if not (instrume.upper().startswith("AIA") or "SDO/AIA" in telescop.upper()):
        raise input_error(path, "INSTRUME", f"{instrume!r} (TELESCOP {telescop!r}) is not SDO/AIA "
                          "(expected INSTRUME 'AIA_*' or TELESCOP 'SDO/AIA')")


def _is_aia(header) -> bool:
    try:
        _check_aia(None, header)
    except FlaresynthError:
        return False
    return True


def _wavelength(raw) -> int | None:
    w = raw.get("WAVELNTH")
    try:
        return int(round(float(w)))
    except (TypeError, ValueError):
        return None


def _exposure_divisor(raw, path: Path) -> float:
    units = f"{raw.get('PIXLUNIT', '')} {raw.get('BUNIT', '')}".lower().replace(" ", "")
    if any(u in units for u in ("/s", "s-1", "s^-1", "s**-1")):
        return 1.0  # already a rate (e.g. aiapy's normalize_exposure): dividing again would be wrong
    exptime = raw.get("EXPTIME")
    if not isinstance(exptime, (int, float)) or isinstance(exptime, bool):
        raise input_error(path, "EXPTIME", f"{exptime!r}: missing or not a number (expected seconds)")
    if not exptime > 0:
        raise input_error(path, "EXPTIME", f"{exptime} s is not positive (a dark or failed exposure?)")
    return float(exptime)


def _number(raw, key: str, path, default=None) -> float:
    v = raw.get(key, default)
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise input_error(path, key, f"{v!r}: missing or not a finite number (needed for the disk geometry)")
    return float(v)


def _geometry(raw, path) -> dict:
    """Linear pixel → helioprojective map of a FITS header: ``T = A @ (p - p_ref) + crval`` in arcsec.

    ``p`` is a 0-based (x, y) pixel; returns A (2×2), the 0-based disk centre and RSUN_OBS (arcsec).
    """
    to_arcsec = [1.0, 1.0]
    for axis in (1, 2):
        unit = str(raw.get(f"CUNIT{axis}", "arcsec") or "arcsec").strip().lower()
        to_arcsec[axis - 1] = {"deg": 3600.0, "arcmin": 60.0}.get(unit, 1.0)
    cdelt = np.array([_number(raw, "CDELT1", path), _number(raw, "CDELT2", path)]) * to_arcsec
    if cdelt[0] == 0 or cdelt[1] == 0:
        raise input_error(path, "CDELT1/2", "is zero (expected the plate scale in arcsec/pixel)")
    crpix = np.array([_number(raw, "CRPIX1", path), _number(raw, "CRPIX2", path)]) - 1.0
    crval = np.array([_number(raw, "CRVAL1", path, 0.0), _number(raw, "CRVAL2", path, 0.0)]) * to_arcsec
    if any(f"PC{i}_{j}" in raw for i in (1, 2) for j in (1, 2)):
        pc = np.array([[raw.get("PC1_1", 1.0), raw.get("PC1_2", 0.0)],
                       [raw.get("PC2_1", 0.0), raw.get("PC2_2", 1.0)]], dtype=float)
        a = np.diag(cdelt) @ pc
    else:
        # CROTA2 convention (Calabretta & Greisen 2002, eq. 188) with lambda = CDELT2/CDELT1
        rho = math.radians(_number(raw, "CROTA2", path, 0.0))
        lam = cdelt[1] / cdelt[0]
        pc = np.array([[math.cos(rho), -lam * math.sin(rho)], [math.sin(rho) / lam, math.cos(rho)]])
        a = np.diag(cdelt) @ pc
    if abs(np.linalg.det(a)) == 0:
        raise input_error(path, "PCi_j/CROTA2", "singular pixel-to-sky matrix")
    centre = crpix - np.linalg.solve(a, crval)  # pixel where T = (0, 0), the disk centre
    if "RSUN_OBS" in raw:
        rsun = _number(raw, "RSUN_OBS", path)
    elif "DSUN_OBS" in raw:
        rsun = math.degrees(math.asin(float(raw.get("RSUN_REF", _RSUN_REF_M)) / _number(raw, "DSUN_OBS", path)))
        rsun *= 3600.0
    else:
        raise input_error(path, "RSUN_OBS", "missing, and no DSUN_OBS to derive it (needed to scale the disk)")
    if not rsun > 0:
        raise input_error(path, "RSUN_OBS", f"{rsun} is not positive (expected the solar radius in arcsec)")
    return {"a": a, "centre": centre, "rsun_obs": rsun}


def _resample_to_sdoml(data: np.ndarray, raw, out_size: int, path) -> np.ndarray:
    if data.ndim != 2:
        raise input_error(path, "NAXIS", f"{data.ndim}-D data (expected a 2-D image)")
    geo = _geometry(raw, path)
    true_scale = SDOML_FOV_ARCSEC / out_size * geo["rsun_obs"] / SDOML_RSUN_ARCSEC
    # input pixel = centre + m @ (output pixel - output centre), all 0-based (x, y)
    m = true_scale * np.linalg.inv(geo["a"])
    centre = geo["centre"]
    valid = np.isfinite(data) & (data > 0)
    img = np.where(valid, data, 0.0).astype(np.float32)
    weight = valid.astype(np.float32)
    factor = math.sqrt(abs(np.linalg.det(m)))  # input pixels per output pixel
    b = int(factor) if factor >= 2 else 1
    if b > 1:
        img, weight = _block_mean(img, b), _block_mean(weight, b)
        # block j covers input pixels b*j .. b*j+b-1, whose centre is b*j + (b-1)/2
        m = m / b
        centre = (centre - (b - 1) / 2) / b
    c_out = (out_size - 1) / 2
    swap = np.array([[0, 1], [1, 0]])  # (x, y) <-> (row, col)
    matrix = swap @ m @ swap
    offset = swap @ (centre - m @ np.array([c_out, c_out]))
    kw = {"matrix": matrix, "offset": offset, "output_shape": (out_size, out_size), "order": 1,
          "mode": "constant", "cval": 0.0, "prefilter": False}
    num = ndimage.affine_transform(img, **kw)
    den = ndimage.affine_transform(weight, **kw)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 1e-6)
    return out


def _block_mean(a: np.ndarray, b: int) -> np.ndarray:
    ny, nx = (a.shape[0] // b) * b, (a.shape[1] // b) * b
    return a[:ny, :nx].reshape(ny // b, b, nx // b, b).mean(axis=(1, 3), dtype=np.float64).astype(np.float32)


def _plain(v):
    """A JSON-able Python value for a FITS card value (astropy's Undefined becomes None)."""
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, complex):
        return str(v)
    return None


def _read_header(path: Path) -> fits.Header:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)
        try:
            with fits.open(path) as hdul:
                return _image_hdu(hdul, path).header.copy()
        except OSError as exc:
            raise input_error(path, None, f"not a readable FITS file ({exc})") from exc


def _channel_wavelength(channel: str | int) -> int:
    s = str(channel).strip().upper().removesuffix("Å").removesuffix("A")
    try:
        return int(s)
    except ValueError:
        raise FlaresynthError(f"channel {channel!r}: expected an AIA channel such as '171A'") from None


class AIAFitsFolder(TimeIndexedFrames):
    """Frames of one AIA channel from a folder of FITS files (or one file), in T_OBS order, SDOMLv2 geometry.

    The same interface as :class:`flaresynth.sources.sdoml.SDOMLStore`. Only headers are read at
    construction; pixels are read (and resampled to ``out_size``) on demand.

    Attributes
    ----------
    files : the FITS files of the channel, in time order.
    n_other_channel : files of SDO/AIA in other channels, ignored.
    n_not_aia : FITS files of other instruments, ignored.
    not_aia : (file, INSTRUME) of each of them.
    other_channels : the wavelengths (Å) of the other AIA channels' files.
    """

    def __init__(self, path: str | Path, channel: str = "171A", out_size: int = 512,
                 years: Sequence[int] | None = None):
        path = Path(path)
        self.source = str(path)
        self.channel = channel
        self.out_size = int(out_size)
        self.frame_shape = (self.out_size, self.out_size)
        wavelength = _channel_wavelength(channel)
        if path.is_dir():
            candidates = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(FITS_SUFFIXES))
        elif path.is_file():
            candidates = [path]
        else:
            raise input_error(path, None, "does not exist (expected a folder of AIA FITS files or one file)")
        self.n_other_channel = 0
        self.n_not_aia = 0
        self.not_aia: list[tuple[Path, str]] = []
        self.other_channels: set[int] = set()
        files, headers, times = [], [], []
        for f in candidates:
            raw = _read_header(f)
            if not _is_aia(raw):
                self.n_not_aia += 1
                self.not_aia.append((f, str(raw.get("INSTRUME", raw.get("TELESCOP", "")) or "")))
                continue
            if _wavelength(raw) != wavelength:
                self.n_other_channel += 1
                if _wavelength(raw) is not None:
                    self.other_channels.add(_wavelength(raw))
                continue
            header = aia_output_header(raw, self.out_size, f)
            t = parse_t_obs([header["T_OBS"]], f, "T_OBS")[0]
            if years is not None and t.astype("datetime64[Y]").astype(int) + 1970 not in {int(y) for y in years}:
                continue
            files.append(f)
            headers.append(header)
            times.append(t)
        if not files:
            raise input_error(path, None, f"no SDO/AIA {channel} FITS file (of {len(candidates)} FITS files: "
                              f"{self.n_other_channel} of other AIA channels, {self.n_not_aia} not AIA"
                              + (f", years {list(years)} requested" if years is not None else "") + ")"
                              + (f"; AIA channels there: {', '.join(f'{w}A' for w in sorted(self.other_channels))}"
                                 if self.other_channels else ""))
        order = np.argsort(np.array(times, dtype="datetime64[ns]"), kind="stable")
        self.files = [files[i] for i in order]
        self._headers = [headers[i] for i in order]
        self.times = np.array(times, dtype="datetime64[ns]")[order]

    def header(self, i: int) -> dict:
        """Header of the i-th frame (time order), geometry as returned by :func:`read_aia_fits`."""
        return dict(self._headers[self._index(i)])

    def headers(self) -> pd.DataFrame:
        """All per-frame keywords, one row per frame in time order."""
        return pd.DataFrame(self._headers)

    def read(self, i: int) -> np.ndarray:
        """Frame i (time order): float32 (H, W) in DN/s."""
        return read_aia_fits(self.files[self._index(i)], self.out_size)[0]

    def read_many(self, indices) -> np.ndarray:
        """Frames at ``indices`` (time order) as float32 (n, H, W), in the requested order."""
        idx = self._indices(indices)
        out = np.empty((len(idx), *self.frame_shape), dtype=np.float32)
        for k, i in enumerate(idx):
            out[k] = self.read(int(i))
        return out

    def batch(self, indices) -> FitsBatch:
        """A small picklable description of the frames at ``indices`` (time order): their files (absolute paths)
        and the output size; :meth:`FitsBatch.read` reads them in any process that sees the same files."""
        idx = self._indices(indices)
        return FitsBatch(files=tuple(os.path.abspath(self.files[int(i)]) for i in idx), out_size=self.out_size)

    def to_dask(self, indices=None):
        """Lazy float32 (n, H, W) dask array, one task per file, in the given order (default: all)."""
        import dask
        import dask.array as da

        idx = np.arange(len(self)) if indices is None else self._indices(indices)
        if len(idx) == 0:
            return da.zeros((0, *self.frame_shape), dtype=np.float32)
        token = dask.base.tokenize(self.source, self.channel, self.out_size)
        parts = [
            da.from_delayed(
                dask.delayed(_read_image, pure=True)(str(self.files[i]), self.out_size,
                                                     dask_key_name=f"aia-fits-{token}-{int(i)}"),
                shape=(1, *self.frame_shape), dtype=np.float32)
            for i in idx
        ]
        return da.concatenate(parts, axis=0)


@dataclasses.dataclass
class FitsBatch:
    """Where some frames live (their FITS files), not their pixels: what a dask.distributed worker reads itself."""

    files: tuple[str, ...]
    out_size: int

    def __len__(self) -> int:
        return len(self.files)

    def read(self) -> np.ndarray:
        """The frames as float32 (n, H, W) in DN/s, in order (as :meth:`AIAFitsFolder.read_many`)."""
        out = np.empty((len(self.files), self.out_size, self.out_size), dtype=np.float32)
        for k, f in enumerate(self.files):
            out[k] = read_aia_fits(f, self.out_size)[0]
        return out


def _read_image(path: str, out_size: int) -> np.ndarray:
    return read_aia_fits(path, out_size)[0][None]
