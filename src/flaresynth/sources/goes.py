"""GOES XRS 1-8 Å (XRS-B) flux from every archive variant, as one quality-masked UTC time series.

Products read (NOAA's GOES-R XRS L2 user's guide and the NCEI "README for science quality GOES 13-15 XRS
data"; sunpy's and sunkit-instruments' XRS readers)
-------------------------------------------------------------------------------------------------------------
==================  ============================================  ==========  ============  ==========================
product id          file name (archive)                           flux        flag          time ``units``
==================  ============================================  ==========  ============  ==========================
``goes-r-flx1s``    ``sci_xrsf-l2-flx1s_gNN_dYYYYMMDD_v*.nc``     xrsb_flux   xrsb_flags    s since 2000-01-01 12:00
``goes-r-avg1m``    ``sci_xrsf-l2-avg1m_gNN_dYYYYMMDD_v2-*.nc``   xrsb_flux   xrsb_flag     s since 2000-01-01T12:00
``goes1315-irrad``  ``sci_gxrs-l2-irrad_gNN_dYYYYMMDD_v0-0-0.nc`` b_flux      b_flags       s since 1970-01-01 UTC
``goes1315-avg1m``  ``sci_xrsf-l2-avg1m_gNN_dYYYYMMDD_v1-0-0.nc`` xrsb_flux   xrsb_flag     s since 2000-01-01 12:00
``sdac-fits``       ``goNNYYYYMMDD.fits[.gz]`` (SDAC/GSFC)        FLUX[:, 0]  (none)        DATE-OBS (DD/MM/YYYY) + TIME
==================  ============================================  ==========  ============  ==========================

The netCDF files are read with netCDF4 directly (not ``sunpy.timeseries``) so that the epoch comes from each
file's own ``time:units`` and the flags are decoded here. Times are decoded without leap seconds (GOES-R:
"record start time, neglecting leap seconds"; GOES 1-15: POSIX-style seconds since 1970), which is UTC except
inside a leap second, where times may repeat: every series is sorted and exact duplicate times dropped (a good
sample is preferred). Times are the files' own: record *start* for NOAA netCDF (so a 1-min average is stamped at
the start of its minute), interval *centre* for SDAC FITS of GOES 13-15. The satellite comes from the global
``platform``/``id`` attribute, else the file name, else the ``history`` attribute (the reprocessed GOES 1-15
files leave ``platform`` blank). Fill values (``_FillValue``/``missing_value``, -99999 in SDAC FITS) and values
outside ``valid_min..valid_max`` become NaN. The GOES-R ``au_factor`` is not applied (NOAA's fluxes are at the
satellite, as are the published classes).

Quality: which flag bits mean "bad" (``BAD_FLAG_BITS``; a sample is good iff none of them is set, the flag is
not its fill value, and the flux is finite and > 0)
-------------------------------------------------------------------------------------------------------------
* ``goes-r-flx1s``: **every** bit of ``xrsb_flags`` (``good_data`` is ``flags & 0xFFFF == 0``). This includes
  ``particle_spike`` (2), which is set on ~2 % of the samples of a flare's rise in the GOES-16 X-flare file;
  NOAA's own 1-min averages exclude exactly those samples (real file #10: the 7 minutes whose
  ``xrsb_flag_excluded`` is 2 are the 7 with ``xrsb_num`` = 59), so we follow NOAA. The flags of the *primary*
  flux are used: after the B1 diode saturates (~6.4e-4 W/m²), ``xrsb_primary_chan`` switches 1 -> 2 and
  ``xrsb_flux`` carries the B2 reading, whose flag is 0; ``data_quality_error`` (32) is set only on the
  non-primary ``xrsb1_flags`` (real file #1: 1996 samples, peak 1.297e-3 kept).
* ``goes-r-avg1m``: ``xrsb_flag`` bits 1 (eclipse) and 2 (bad_data), the file's ``good_data`` mask 3.
  ``e_contam_significant`` (4) and the electron-correction states (8, 16, 32) do not make a minute bad.
* ``goes1315-irrad``: every ``b_flags`` bit except 256 ``saturated``: calibration, off-pointing, eclipses,
  temperature recovery, spikes, unknown bad data and gain-state changes are bad. A saturated sample is a lower
  bound on a flare's peak (X class either way), so it is kept: dropping it would lose the biggest flares.
* ``goes1315-avg1m``: ``xrsb_flag`` bits 1 (bad_data), 2 (eclipsed_by_earth), 4 (temperature_recovery), the
  file's ``good_data`` mask 7; the electron-correction states (8-64, e.g. 16 = invalid in real file #9) do not.
* ``sdac-fits``: no per-sample flags: good iff finite, not -99999 and > 0.

SWPC scaling (``scale``)
------------------------
NOAA's science convention (``scale="true"``, the default) is the physical flux. SWPC's operational GOES 8-15
XRS-B fluxes were multiplied by 0.7 to match GOES-7, and every SWPC/HEK class string before the GOES-16 era was
measured on them (``scale="swpc"``). Which files carry the factor:

* SDAC FITS of GOES 8-15 **carry** it: ``true`` = value / 0.7 (real file #4: M2.6 swpc = official M2.5, M3.7 true).
* Reprocessed GOES 8-15 science netCDF (``irrad`` v0-0-0, ``avg1m`` v1-0-0) have it **removed**:
  ``swpc`` = value × 0.7 (real file #2: X11.9 true, X8.3 swpc, official X8.2). Do not divide them again.
* GOES-R (16-19) never had it, and neither did GOES 1-7: the same number in both conventions.

A GOES 1-15 file whose satellite cannot be determined is taken to be GOES 8-15 (the 2-s reprocessed product
exists only for GOES 13-15).

Merging several files (``read_xrs_files``)
-----------------------------------------
Files are grouped into *sources* = (satellite, product). Sources are ranked: newer satellite (higher GOES number)
first; for the same satellite, finer product first (``flx1s`` > ``irrad`` > ``sdac-fits`` > ``avg1m``). A source
*covers* a time t if it has a good sample within ``1.5 ×`` its median sample spacing of t (so a single bad or
missing 1-s sample does not let an older satellite interleave, but a longer gap is filled). A sample is kept iff
no higher-ranked source covers its time; kept samples of all sources stay on their own timestamps (no
resampling). Where two kept samples share a time exactly, the good one wins, then the higher-ranked one.
The rule knows nothing of a satellite's operational status (GOES-16 data of 2017 come from its "GOES-Test"
slot, yet win over GOES-15): pass only the files you trust. With ``scale="swpc"`` a merge across the GOES-16
boundary mixes conventions exactly as SWPC's own historical record does (GOES-15 × 0.7 beside unscaled GOES-16).
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from flaresynth.errors import FlaresynthError, input_error
from flaresynth.labels import flux_to_class

__all__ = [
    "PRODUCTS",
    "SCALES",
    "SWPC_FACTOR_B",
    "BAD_FLAG_BITS",
    "ProductInfo",
    "XRSSeries",
    "identify_product",
    "read_xrs",
    "read_xrs_files",
    "summarize_file",
]

#: Product identifiers and what they are.
PRODUCTS: dict[str, str] = {
    "goes-r-flx1s": "GOES-R (GOES-16..19) L2 1-s XRS fluxes, sci_xrsf-l2-flx1s_gNN_dYYYYMMDD_vX-Y-Z.nc",
    "goes-r-avg1m": "GOES-R (GOES-16..19) L2 1-min XRS averages, sci_xrsf-l2-avg1m_gNN_dYYYYMMDD_vX-Y-Z.nc",
    "goes1315-irrad": "GOES 1-15 reprocessed high-resolution XRS irradiances, sci_gxrs-l2-irrad_gNN_dYYYYMMDD_v0-0-0.nc",
    "goes1315-avg1m": "GOES 13-15 reprocessed 1-min XRS averages, sci_xrsf-l2-avg1m_gNN_dYYYYMMDD_v1-0-0.nc",
    "sdac-fits": "SDAC/GSFC GOES XRS FITS, goNNYYYYMMDD.fits[.gz] (SWPC-scaled for GOES 8-15)",
}

#: Flux conventions: NOAA science ("true") or SWPC-scaled ("swpc", GOES 8-15 XRS-B × 0.7).
SCALES: tuple[str, ...] = ("true", "swpc")
#: SWPC's operational XRS-B factor for GOES 8-15.
SWPC_FACTOR_B = 0.7

#: Flag bits of each product's XRS-B flag variable that make a sample bad (bit value -> meaning in the file).
BAD_FLAG_BITS: dict[str, dict[int, str]] = {
    "goes-r-flx1s": {
        1: "eclipse", 2: "particle_spike", 4: "calibration", 8: "off_point", 16: "temperature_error",
        32: "data_quality_error", 64: "pointing_error", 128: "invalid_mode", 256: "missing_data", 512: "L0_error",
    },
    "goes-r-avg1m": {1: "eclipse", 2: "bad_data"},
    "goes1315-irrad": {
        1: "calibration", 2: "off_pointed", 4: "eclipsed_by_earth", 8: "eclipsed_by_moon", 16: "eclipsed_by_unknown",
        32: "temperature_recovery", 64: "spike", 128: "unknown_bad_data", 512: "gain_state_change",
    },
    "goes1315-avg1m": {1: "bad_data", 2: "eclipsed_by_earth", 4: "temperature_recovery"},
    "sdac-fits": {},
}
# Bits tested. flx1s and irrad also reject bits the files do not define (their good_data masks are 0xFFFF
# and 1023): an undocumented bit is not evidence of good data. Saturated (256) stays out of the irrad mask.
_BAD_MASK: dict[str, int] = {
    "goes-r-flx1s": 0xFFFF,
    "goes-r-avg1m": 0b11,
    "goes1315-irrad": 0xFFFF & ~256,
    "goes1315-avg1m": 0b111,
    "sdac-fits": 0,
}
# (flux variable, flag variable) per product.
_VARIABLES: dict[str, tuple[str, str | None]] = {
    "goes-r-flx1s": ("xrsb_flux", "xrsb_flags"),
    "goes-r-avg1m": ("xrsb_flux", "xrsb_flag"),
    "goes1315-irrad": ("b_flux", "b_flags"),
    "goes1315-avg1m": ("xrsb_flux", "xrsb_flag"),
    "sdac-fits": ("FLUX", None),
}
# Rank of products of one satellite when merging (lower wins): the finest cadence first.
_PRODUCT_RANK = {"goes-r-flx1s": 0, "goes1315-irrad": 1, "sdac-fits": 2, "goes-r-avg1m": 3, "goes1315-avg1m": 3}
# Nominal cadence (s), used only for a source with fewer than two samples.
_NOMINAL_CADENCE_S = {"goes-r-flx1s": 1.0, "goes1315-irrad": 2.048, "sdac-fits": 2.048, "goes-r-avg1m": 60.0,
                      "goes1315-avg1m": 60.0}
_COVER_SPACINGS = 1.5
_SDAC_FILL = -99999.0
_FILE_SUFFIXES = (".nc", ".fits", ".fits.gz")
_UNKNOWN = "unknown"


@dataclass(frozen=True)
class ProductInfo:
    """What a GOES XRS file is: product id (see :data:`PRODUCTS`), satellite (e.g. ``"GOES-16"``), and whether
    its XRS-B numbers include SWPC's 0.7 factor (SDAC FITS of GOES 8-15 only)."""

    product: str
    satellite: str
    carries_swpc_factor: bool


def _sat_number(satellite: str) -> int | None:
    m = re.fullmatch(r"GOES-(\d+)", satellite)
    return int(m.group(1)) if m else None


def _in_swpc_era(product: str, satellite: str) -> bool:
    """True if SWPC scaled this satellite's XRS-B by 0.7 (GOES 8-15)."""
    if product.startswith("goes-r"):
        return False
    n = _sat_number(satellite)
    return True if n is None else 8 <= n <= 15


# ------------------------------------------------------------------------------------------------ series
@dataclass(frozen=True, eq=False)
class XRSSeries:
    """A GOES XRS-B (1-8 Å) flux time series.

    Attributes
    ----------
    time : datetime64[ns], UTC, strictly increasing.
    flux : float64, W/m², in the ``scale`` convention; NaN where missing.
    good : bool, the product's flags say good and the flux is finite and > 0.
    satellite : str per sample, e.g. ``"GOES-16"``.
    scale : ``"true"`` or ``"swpc"`` (see the module docstring).
    files : the files read.
    """

    time: np.ndarray
    flux: np.ndarray
    good: np.ndarray
    satellite: np.ndarray
    scale: str
    files: tuple[str, ...] = ()

    def __post_init__(self):
        time = np.asarray(self.time).astype("datetime64[ns]")
        flux = np.asarray(self.flux, dtype=np.float64)
        good = np.asarray(self.good, dtype=bool)
        satellite = np.asarray(self.satellite).astype(str)
        if satellite.ndim == 0:
            satellite = np.full(time.shape, str(satellite))
        if not (time.ndim == flux.ndim == good.ndim == satellite.ndim == 1) or not (
            len(time) == len(flux) == len(good) == len(satellite)
        ):
            raise FlaresynthError("XRSSeries: time, flux, good and satellite must be 1-D arrays of one length")
        if len(time) > 1 and not np.all(time[1:] > time[:-1]):
            raise FlaresynthError("XRSSeries: time must be strictly increasing (sorted, no duplicates, no NaT)")
        _check_scale(self.scale)
        with np.errstate(invalid="ignore"):
            good = good & np.isfinite(flux) & (flux > 0)
        for name, value in (("time", time), ("flux", flux), ("good", good), ("satellite", satellite)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "files", tuple(str(f) for f in self.files))

    def __len__(self) -> int:
        return len(self.time)

    @cached_property
    def _good_ns(self) -> tuple[np.ndarray, np.ndarray]:
        return self.time[self.good].view(np.int64), self.flux[self.good]

    @cached_property
    def _range_max(self) -> _RangeArgmax:
        return _RangeArgmax(self._good_ns[1])

    def flux_at(self, times, tolerance=np.timedelta64(60, "s")) -> np.ndarray:
        """Flux (W/m²) of the nearest good sample within ±``tolerance`` of each time, else NaN.

        ``times``: datetime64 (or ISO strings), any shape; ``tolerance``: timedelta64 or seconds.
        On an exact tie the earlier sample is used.
        """
        t, shape, nat = _as_ns(times)
        tol = _as_timedelta_ns(tolerance, "tolerance")
        gt, gf = self._good_ns
        out = np.full(t.shape, np.nan)
        if len(gt) == 0:
            return out.reshape(shape)
        right = np.searchsorted(gt, t, side="left")
        left = right - 1
        d_left = np.where(left >= 0, t - gt[np.clip(left, 0, None)], np.iinfo(np.int64).max)
        d_right = np.where(right < len(gt), gt[np.clip(right, None, len(gt) - 1)] - t, np.iinfo(np.int64).max)
        use_left = d_left <= d_right
        idx = np.where(use_left, left, right)
        dist = np.where(use_left, d_left, d_right)
        ok = (dist <= tol) & ~nat
        out[ok] = gf[idx[ok]]
        return out.reshape(shape)

    def satellite_at(self, times, tolerance=np.timedelta64(1, "h")) -> np.ndarray:
        """Satellite (e.g. ``"GOES-15"``) of the nearest good sample within ±``tolerance`` of each time, else ``""``."""
        t, shape, nat = _as_ns(times)
        tol = _as_timedelta_ns(tolerance, "tolerance")
        good = np.flatnonzero(self.good)
        out = np.full(t.shape, "", dtype=object)
        if len(good) == 0:
            return out.reshape(shape)
        gt = self.time[good].view(np.int64)
        right = np.clip(np.searchsorted(gt, t), 0, len(gt) - 1)
        left = np.clip(right - 1, 0, len(gt) - 1)
        use_left = np.abs(t - gt[left]) <= np.abs(gt[right] - t)
        idx = np.where(use_left, left, right)
        ok = (np.abs(gt[idx] - t) <= tol) & ~nat
        out[ok] = self.satellite[good[idx[ok]]]
        return out.reshape(shape)

    def swpc_scaled_at(self, times, tolerance=np.timedelta64(1, "h")) -> np.ndarray:
        """True where the satellite measuring at each time is one SWPC scaled by 0.7 (GOES 8-15), so that a
        SWPC/HEK class string of that time is on the SWPC scale. False where no sample is within ``tolerance``."""
        sats = self.satellite_at(times, tolerance)
        flat = [bool(s) and _in_swpc_era("", s) for s in np.ravel(sats)]
        return np.array(flat, dtype=bool).reshape(np.shape(sats))

    def peak_after(self, times, window=np.timedelta64(24, "h")) -> tuple[np.ndarray, np.ndarray]:
        """Maximum good flux (W/m²) in ``(t, t + window]`` for each time t, and the time of that maximum.

        NaN / NaT where the window holds no good sample. Ties go to the earliest sample. Cost: O(N) once per
        series (block prefix/suffix maxima + a sparse table over block maxima), then O(log N) per query.
        """
        t, shape, nat = _as_ns(times)
        w = _as_timedelta_ns(window, "window")
        if w <= 0:
            raise FlaresynthError(f"window {window!r}: expected a positive duration")
        gt, gf = self._good_ns
        flux = np.full(t.shape, np.nan)
        when = np.full(t.shape, np.datetime64("NaT"), dtype="datetime64[ns]")
        if len(gt) and (~nat).any():
            ts = t[~nat]
            lo = np.searchsorted(gt, ts, side="right")
            hi = np.searchsorted(gt, ts + w, side="right") - 1
            arg = self._range_max.argmax(lo, hi)
            found = arg >= 0
            sub_flux = np.full(ts.shape, np.nan)
            sub_when = np.full(ts.shape, np.datetime64("NaT"), dtype="datetime64[ns]")
            sub_flux[found] = gf[arg[found]]
            sub_when[found] = gt[arg[found]].view("datetime64[ns]")
            flux[~nat] = sub_flux
            when[~nat] = sub_when
        return flux.reshape(shape), when.reshape(shape)

    def peak(self) -> tuple[float, np.datetime64]:
        """Overall maximum good flux (W/m²) and its time (the first one on a tie); (NaN, NaT) if none."""
        gt, gf = self._good_ns
        if len(gf) == 0:
            return float("nan"), np.datetime64("NaT", "ns")
        i = int(np.argmax(gf))
        return float(gf[i]), gt[i].view("datetime64[ns]")


class _RangeArgmax:
    """Index of the maximum of ``values[lo..hi]`` (inclusive) for many ranges, earliest index on ties.

    Values are cut into blocks of ``B``; per position we keep the argmax from the block start (prefix) and to
    the block end (suffix), and a sparse table answers whole-block runs. A range inside one block (< B values)
    is scanned directly, in chunks. Memory ~ 3 N + (N / B) log N numbers.
    """

    B = 256

    def __init__(self, values: np.ndarray):
        self.values = np.asarray(values, dtype=np.float64)
        n = len(self.values)
        B = self.B
        nb = max(1, -(-n // B))
        v = np.full(nb * B, -np.inf)
        v[:n] = self.values
        v = v.reshape(nb, B)
        j = np.arange(B)
        base = (np.arange(nb) * B)[:, None]
        run = np.maximum.accumulate(v, axis=1)
        new = np.ones(v.shape, dtype=bool)
        new[:, 1:] = run[:, 1:] > run[:, :-1]  # strictly greater: ties keep the earlier index
        prefix = np.maximum.accumulate(np.where(new, j, 0), axis=1) + base
        rev = v[:, ::-1]
        new_r = rev == np.maximum.accumulate(rev, axis=1)  # >= all later ones: ties move to the earlier index
        k = np.maximum.accumulate(np.where(new_r, j, 0), axis=1)
        suffix = (B - 1 - k)[:, ::-1] + base
        self.prefix = prefix.ravel()[:n]
        self.suffix = suffix.ravel()[:n]
        block_arg = np.minimum(prefix[:, -1], max(n - 1, 0))
        self.table = [block_arg]
        level = 1
        while (1 << level) <= nb:
            prev, half = self.table[-1], 1 << (level - 1)
            m = nb - (1 << level) + 1
            left, right = prev[:m], prev[half:half + m]
            self.table.append(np.where(self.values[right] > self.values[left], right, left))
            level += 1

    def _blocks(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        length = b - a + 1
        level = np.floor(np.log2(length)).astype(np.int64)
        out = np.empty(len(a), dtype=np.int64)
        for lv in np.unique(level):
            sel = level == lv
            tab = self.table[lv]
            left = tab[a[sel]]
            right = tab[b[sel] - (1 << int(lv)) + 1]
            out[sel] = np.where(self.values[right] > self.values[left], right, left)
        return out

    def _better(self, cur: np.ndarray, cand: np.ndarray, sel: np.ndarray) -> np.ndarray:
        # cand lies to the right of cur: it wins only if strictly larger
        take = sel & (self.values[cand] > self.values[cur])
        return np.where(take, cand, cur)

    def argmax(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Argmax index of each range [lo, hi]; -1 where the range is empty."""
        lo = np.asarray(lo, dtype=np.int64)
        hi = np.asarray(hi, dtype=np.int64)
        out = np.full(lo.shape, -1, dtype=np.int64)
        valid = (hi >= lo) & (lo >= 0) & (hi < len(self.values))
        B = self.B
        bl, bh = lo // B, hi // B
        multi = np.flatnonzero(valid & (bl < bh))
        if len(multi):
            best = self.suffix[lo[multi]]
            a, b = bl[multi] + 1, bh[multi] - 1
            has_mid = b >= a
            mid = np.zeros(len(multi), dtype=np.int64)
            if has_mid.any():
                mid[has_mid] = self._blocks(a[has_mid], b[has_mid])
            best = self._better(best, mid, has_mid)
            best = self._better(best, self.prefix[hi[multi]], np.ones(len(multi), dtype=bool))
            out[multi] = best
        single = np.flatnonzero(valid & (bl == bh))
        offsets = np.arange(B)
        chunk = max(1, (1 << 20) // B)
        for s in range(0, len(single), chunk):
            q = single[s:s + chunk]
            idx = lo[q, None] + offsets
            vals = np.where(idx <= hi[q, None], self.values[np.minimum(idx, len(self.values) - 1)], -np.inf)
            out[q] = lo[q] + np.argmax(vals, axis=1)
        return out


# ----------------------------------------------------------------------------------------- small helpers
def _check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise FlaresynthError(f"scale {scale!r}: expected one of {', '.join(SCALES)} (NOAA science or SWPC-scaled)")
    return scale


def _as_ns(times) -> tuple[np.ndarray, tuple, np.ndarray]:
    """Times as int64 ns (flat), their shape, and the NaT mask."""
    try:
        arr = np.asarray(times)
        arr = arr.astype("datetime64[ns]") if arr.dtype.kind == "M" else np.asarray(times, dtype="datetime64[ns]")
    except (ValueError, TypeError) as exc:
        raise FlaresynthError(f"times: expected datetime64 values or ISO strings ({exc})") from None
    nat = np.isnat(arr).ravel()
    return arr.ravel().view(np.int64), arr.shape, nat


def _as_timedelta_ns(value, name: str) -> int:
    if isinstance(value, np.timedelta64):
        if np.isnat(value) or np.datetime_data(value.dtype)[0] == "generic":
            raise FlaresynthError(f"{name} {value!r}: expected a timedelta64 with a unit, e.g. np.timedelta64(60, 's')")
        return int(value.astype("timedelta64[ns]").view(np.int64))
    if isinstance(value, (int, float)) and np.isfinite(value):
        return int(round(float(value) * 1e9))
    try:
        return int(np.timedelta64(value).astype("timedelta64[ns]").view(np.int64))  # e.g. datetime.timedelta
    except (ValueError, TypeError):
        raise FlaresynthError(f"{name} {value!r}: expected a timedelta64 or a number of seconds") from None


def _sort_dedupe(time_ns: np.ndarray, *cols: np.ndarray, good: np.ndarray, rank: np.ndarray | None = None):
    """Sort by time; of equal times keep one sample: good first, then lowest rank, then input order."""
    keys = [np.arange(len(time_ns))]
    if rank is not None:
        keys.append(rank)
    keys += [~good, time_ns]
    order = np.lexsort(keys)
    t = time_ns[order]
    keep = np.ones(len(t), dtype=bool)
    keep[1:] = t[1:] != t[:-1]
    sel = order[keep]
    return (time_ns[sel], good[sel], *(c[sel] for c in cols))


_UNITS_RE = re.compile(
    r"^\s*(?P<unit>[a-z]+)\s+since\s+(?P<date>\d{4}-\d{1,2}-\d{1,2})"
    r"(?:[T\s]+(?P<time>\d{1,2}:\d{2}(?::\d{2}(?:\.\d*)?)?))?\s*(?:UTC|Z|GMT|\+00:?00)?\s*$",
    re.IGNORECASE,
)
_UNIT_NS = {"seconds": 10**9, "second": 10**9, "secs": 10**9, "sec": 10**9, "s": 10**9,
            "milliseconds": 10**6, "millisecond": 10**6, "ms": 10**6,
            "microseconds": 10**3, "microsecond": 10**3, "us": 10**3, "nanoseconds": 1, "nanosecond": 1, "ns": 1,
            "minutes": 60 * 10**9, "minute": 60 * 10**9, "min": 60 * 10**9,
            "hours": 3600 * 10**9, "hour": 3600 * 10**9, "h": 3600 * 10**9,
            "days": 86400 * 10**9, "day": 86400 * 10**9, "d": 86400 * 10**9}


def _epoch_ns(units: str, path: Path, field: str) -> tuple[int, int]:
    """(epoch as int64 ns since 1970, ns per unit) from a CF ``units`` string such as
    ``seconds since 2000-01-01 12:00:00``."""
    m = _UNITS_RE.match(units)
    if not m or m.group("unit").lower() not in _UNIT_NS:
        raise input_error(path, field, f"{units!r}: expected '<seconds|...> since YYYY-MM-DD hh:mm:ss'")
    y, mo, d = (int(x) for x in m.group("date").split("-"))
    hms = (m.group("time") or "0:00:00").split(":")
    hh, mm, ss = int(hms[0]), int(hms[1]), float(hms[2]) if len(hms) > 2 else 0.0
    try:
        day = np.datetime64(f"{y:04d}-{mo:02d}-{d:02d}", "ns")
    except ValueError:
        raise input_error(path, field, f"{units!r}: not a valid epoch date") from None
    epoch = int(day.view(np.int64)) + (hh * 3600 + mm * 60) * 10**9 + int(round(ss * 1e9))
    return epoch, _UNIT_NS[m.group("unit").lower()]


def _offsets_to_ns(values: np.ndarray, epoch: int, unit_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Epoch + offsets as int64 ns, and the mask of usable offsets. Whole and fractional units are converted
    separately so 1-s times 5e8 s after the epoch keep sub-microsecond precision."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v) & (np.abs(v) * unit_ns < 4e18)
    vv = np.where(ok, v, 0.0)
    whole = np.floor(vv)
    ns = epoch + whole.astype(np.int64) * unit_ns + np.rint((vv - whole) * unit_ns).astype(np.int64)
    return ns, ok


_SAT_PATTERNS = (
    re.compile(r"^g(\d{1,2})$", re.IGNORECASE),  # platform attribute "g16"
    re.compile(r"(?:^|[_\W])g(\d{2})(?=[_\W]|$)", re.IGNORECASE),  # NOAA file names "..._g15_d2017..."
    re.compile(r"goes[\s_-]*(\d{1,2})(?!\d)", re.IGNORECASE),  # "GOES-16", "GOES 15", "goes_13_leap_second"
    re.compile(r"^go(\d{2})\d{6,8}(?!\d)", re.IGNORECASE),  # SDAC "go1520110607.fits"
)


def _satellite_from(*texts: str) -> str:
    for text in texts:
        text = (text or "").strip()
        if not text:
            continue
        for pat in _SAT_PATTERNS:
            m = pat.search(text)
            if m and 1 <= int(m.group(1)) <= 99:
                return f"GOES-{int(m.group(1))}"
    return _UNKNOWN


def _sniff(path: Path) -> str:
    """'netcdf' or 'fits' from the file's first bytes."""
    if not path.exists():
        raise input_error(path, None, "no such file")
    if path.is_dir():
        raise input_error(path, None, "is a folder (expected one GOES XRS file; read_xrs_files reads folders)")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(b"\x89HDF") or head[:3] == b"CDF":
        return "netcdf"
    if head.startswith(b"SIMPLE"):
        return "fits"
    if head.startswith(b"\x1f\x8b"):
        try:
            with gzip.open(path, "rb") as fh:
                if fh.read(6) == b"SIMPLE":
                    return "fits"
        except OSError:
            pass
    raise input_error(path, None, "not a netCDF or FITS file (expected a GOES XRS netCDF or an SDAC GOES FITS)")


# ------------------------------------------------------------------------------------------------- netCDF
def _attr(obj, name: str, default=None):
    try:
        value = obj.getncattr(name)
    except AttributeError:
        return default
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value


def _open_netcdf(path: Path):
    import netCDF4

    try:
        ds = netCDF4.Dataset(path, "r")
    except OSError as exc:
        raise input_error(path, None, f"cannot be opened as netCDF ({exc})") from None
    ds.set_auto_maskandscale(False)
    return ds


def _identify_netcdf(ds, path: Path) -> ProductInfo:
    names = set(ds.variables)
    satellite = _satellite_from(
        str(_attr(ds, "platform", "")), str(_attr(ds, "id", "")), path.name, str(_attr(ds, "history", ""))
    )
    if "xrsb_flux" in names:
        if "xrsb_flags" in names:
            product = "goes-r-flx1s"
        elif "xrsb_flag" in names:
            n = _sat_number(satellite)
            title = str(_attr(ds, "title", ""))
            old = (n is not None and n <= 15) or (n is None and "GOES 1-15" in title)
            product = "goes1315-avg1m" if old else "goes-r-avg1m"
        else:
            raise input_error(path, "variable 'xrsb_flags'", "missing (expected 'xrsb_flags' (GOES-R 1-s) or "
                                                             "'xrsb_flag' (1-min average) beside 'xrsb_flux')")
    elif "b_flux" in names:
        product = "goes1315-irrad"
        if "b_flags" not in names:
            raise input_error(path, "variable 'b_flags'", "missing (expected a GOES 1-15 XRS irradiance file)")
    else:
        raise input_error(path, "variable 'xrsb_flux'", "missing (expected a GOES XRS netCDF with 'xrsb_flux' "
                                                        "(GOES-R, 1-min averages) or 'b_flux' (GOES 1-15 irradiances))")
    if "time" not in names:
        raise input_error(path, "variable 'time'", "missing (expected a GOES XRS netCDF)")
    return ProductInfo(product=product, satellite=satellite, carries_swpc_factor=False)


def _read_var(ds, path: Path, name: str, n: int | None) -> np.ndarray:
    var = ds.variables[name]
    if var.ndim != 1 or (n is not None and var.shape[0] != n):
        raise input_error(path, f"variable '{name}'", f"shape {var.shape} (expected one value per time, {n})")
    return np.asarray(var[:])


def _fill_values(var) -> list[float]:
    return [float(np.asarray(v).ravel()[0]) for v in (_attr(var, "_FillValue"), _attr(var, "missing_value"))
            if v is not None and np.size(v)]


def _read_netcdf(path: Path) -> tuple[ProductInfo, np.ndarray, np.ndarray, np.ndarray]:
    """(info, time ns, flux W/m² as in the file, good) of one netCDF file, unsorted."""
    with _open_netcdf(path) as ds:
        info = _identify_netcdf(ds, path)
        flux_name, flag_name = _VARIABLES[info.product]
        tvar = ds.variables["time"]
        units = _attr(tvar, "units")
        if not units:
            raise input_error(path, "variable 'time' attribute 'units'", "missing (expected 'seconds since ...')")
        epoch, unit_ns = _epoch_ns(str(units), path, "variable 'time' attribute 'units'")
        calendar = str(_attr(tvar, "calendar", "standard")).strip().lower()
        if calendar not in ("standard", "gregorian", "proleptic_gregorian", ""):
            raise input_error(path, "variable 'time' attribute 'calendar'", f"{calendar!r} (expected 'standard' or "
                                                                           "'proleptic_gregorian')")
        traw = _read_var(ds, path, "time", None).astype(np.float64)
        time_ns, tok = _offsets_to_ns(traw, epoch, unit_ns)
        for fv in _fill_values(tvar):
            tok &= traw != fv

        fvar = ds.variables[flux_name]
        flux = _read_var(ds, path, flux_name, len(traw)).astype(np.float64)
        missing = ~np.isfinite(flux)
        for fv in _fill_values(fvar):
            missing |= flux == fv
        scale_factor, add_offset = _attr(fvar, "scale_factor"), _attr(fvar, "add_offset")
        if scale_factor is not None:
            flux = flux * float(np.asarray(scale_factor).ravel()[0])
        if add_offset is not None:
            flux = flux + float(np.asarray(add_offset).ravel()[0])
        vmin, vmax = _attr(fvar, "valid_min"), _attr(fvar, "valid_max")
        with np.errstate(invalid="ignore"):
            if vmin is not None:
                missing |= flux < float(np.asarray(vmin).ravel()[0])
            if vmax is not None:
                missing |= flux > float(np.asarray(vmax).ravel()[0])
        flux[missing] = np.nan

        gvar = ds.variables[flag_name]
        raw_flags = _read_var(ds, path, flag_name, len(traw))
        fl = raw_flags.astype(np.float64)  # the leap-second file stores flags as float64
        flag_ok = np.isfinite(fl) & (fl >= 0)
        for fv in _fill_values(gvar):
            flag_ok &= fl != fv
        flags = np.where(flag_ok, fl, 0).astype(np.int64)
        flag_good = flag_ok & ((flags & _BAD_MASK[info.product]) == 0)
    good = flag_good & ~missing & (flux > 0)
    return info, time_ns[tok], flux[tok], good[tok]


# --------------------------------------------------------------------------------------------------- FITS
def _read_fits(path: Path) -> tuple[ProductInfo, np.ndarray, np.ndarray, np.ndarray]:
    """(info, time ns, flux W/m² as in the file, good) of one SDAC GOES FITS file."""
    from astropy.io import fits

    try:
        hdul = fits.open(path, memmap=False)
    except (OSError, ValueError) as exc:
        raise input_error(path, None, f"cannot be opened as FITS ({exc})") from None
    with hdul:
        h0 = hdul[0].header
        telescop = str(h0.get("TELESCOP", "")).strip()
        if not telescop.upper().startswith("GOES"):
            raise input_error(path, "header 'TELESCOP'", f"{telescop!r} (expected an SDAC GOES XRS FITS file, 'GOES NN')")
        satellite = _satellite_from(telescop, path.name)
        table = next((h for h in hdul[1:] if h.name == "FLUXES"), hdul[2] if len(hdul) > 2 else None)
        cols = [] if table is None or not hasattr(table, "columns") else [c.upper() for c in table.columns.names]
        if "TIME" not in cols or "FLUX" not in cols:
            raise input_error(path, "extension 'FLUXES'", "missing TIME/FLUX columns (expected an SDAC GOES XRS FITS "
                                                          "file with 4 HDUs: primary, EDGES, FLUXES, STATUS)")
        date_obs = str(h0.get("DATE-OBS", "")).strip()
        m = re.fullmatch(r"(\d{1,2})/(\d{1,2})/(\d{2}|\d{4})", date_obs)
        if not m:
            raise input_error(path, "header 'DATE-OBS'", f"{date_obs!r} (expected DD/MM/YYYY)")
        d, mo, y = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if y < 100:  # DD/MM/YY in old files; as strptime's %y
            y += 1900 if y >= 69 else 2000
        try:
            day = int(np.datetime64(f"{y:04d}-{mo:02d}-{d:02d}", "ns").view(np.int64))
        except ValueError:
            raise input_error(path, "header 'DATE-OBS'", f"{date_obs!r}: not a valid date") from None
        seconds = np.asarray(table.data["TIME"][0], dtype=np.float64).ravel()
        flux2 = np.asarray(table.data["FLUX"][0], dtype=np.float64)
    if flux2.ndim != 2 or flux2.shape[0] != len(seconds) or flux2.shape[1] < 1:
        raise input_error(path, "column 'FLUX'", f"shape {flux2.shape} (expected (n_times, 2), long channel first)")
    flux = flux2[:, 0].copy()
    missing = ~np.isfinite(flux) | (flux == _SDAC_FILL)
    flux[missing] = np.nan
    time_ns, tok = _offsets_to_ns(seconds, day, 10**9)
    good = ~missing & (flux > 0)
    info = ProductInfo("sdac-fits", satellite, carries_swpc_factor=_in_swpc_era("sdac-fits", satellite))
    return info, time_ns[tok], flux[tok], good[tok]


# ------------------------------------------------------------------------------------------------ public
def identify_product(path) -> ProductInfo:
    """Product, satellite and SWPC-factor status of a GOES XRS file (netCDF or SDAC FITS)."""
    path = Path(path)
    if _sniff(path) == "netcdf":
        with _open_netcdf(path) as ds:
            return _identify_netcdf(ds, path)
    return _read_fits(path)[0]


def _read_one(path, scale: str) -> tuple[XRSSeries, ProductInfo]:
    _check_scale(scale)
    path = Path(path)
    info, time_ns, flux, good = (_read_netcdf if _sniff(path) == "netcdf" else _read_fits)(path)
    if scale == "true" and info.carries_swpc_factor:
        flux = flux / SWPC_FACTOR_B
    elif scale == "swpc" and not info.carries_swpc_factor and _in_swpc_era(info.product, info.satellite):
        flux = flux * SWPC_FACTOR_B
    time_ns, good, flux = _sort_dedupe(time_ns, flux, good=good)
    series = XRSSeries(
        time=time_ns.view("datetime64[ns]"), flux=flux, good=good,
        satellite=np.full(len(time_ns), info.satellite), scale=scale, files=(str(path),),
    )
    return series, info


def read_xrs(path, scale: str = "true") -> XRSSeries:
    """Read one GOES XRS file (any product in :data:`PRODUCTS`) as an XRS-B series in W/m².

    ``scale``: ``"true"`` (NOAA science, default) or ``"swpc"`` (GOES 8-15 × 0.7), see the module docstring.
    """
    return _read_one(path, scale)[0]


def _expand(paths) -> list[Path]:
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(_FILE_SUFFIXES))
            if not found:
                raise input_error(p, None, "folder holds no GOES XRS file (*.nc, *.fits, *.fits.gz)")
            files.extend(found)
        else:
            files.append(p)
    if not files:
        raise FlaresynthError("GOES XRS files: none given")
    return files


def _near(t: np.ndarray, ref: np.ndarray, radius: int) -> np.ndarray:
    """For each t (int64 ns), whether sorted ``ref`` has a value within ±radius."""
    if len(ref) == 0:
        return np.zeros(len(t), dtype=bool)
    i = np.searchsorted(ref, t)
    d_right = np.where(i < len(ref), ref[np.minimum(i, len(ref) - 1)] - t, np.iinfo(np.int64).max)
    d_left = np.where(i > 0, t - ref[np.maximum(i - 1, 0)], np.iinfo(np.int64).max)
    return np.minimum(d_left, d_right) <= radius


def read_xrs_files(paths: Iterable | str | Path, scale: str = "true") -> XRSSeries:
    """Read and merge GOES XRS files and/or folders (every ``*.nc``, ``*.fits``, ``*.fits.gz`` below a folder,
    sorted) into one XRS-B series in W/m².

    Overlaps resolve by the rule in the module docstring: the newest satellite with good data wins, then the
    finest product; other sources fill the gaps, on their own timestamps.
    """
    _check_scale(scale)
    files = _expand(paths)
    sources: dict[tuple[str, str], list[XRSSeries]] = {}
    for f in files:
        series, info = _read_one(f, scale)
        sources.setdefault((info.satellite, info.product), []).append(series)

    def rank_key(key):
        n = _sat_number(key[0])
        return (-(n if n is not None else -1), _PRODUCT_RANK[key[1]], key)

    covers: list[tuple[np.ndarray, int]] = []
    parts_t, parts_f, parts_g, parts_s, parts_r = [], [], [], [], []
    for rank, key in enumerate(sorted(sources, key=rank_key)):
        group = sources[key]
        t = np.concatenate([s.time.view(np.int64) for s in group])
        f = np.concatenate([s.flux for s in group])
        g = np.concatenate([s.good for s in group])
        t, g, f = _sort_dedupe(t, f, good=g)
        keep = np.ones(len(t), dtype=bool)
        for ref, radius in covers:
            keep &= ~_near(t, ref, radius)
        steps = np.diff(t)
        spacing_ns = float(np.median(steps)) if len(steps) else _NOMINAL_CADENCE_S[key[1]] * 1e9
        covers.append((t[g], int(_COVER_SPACINGS * spacing_ns)))
        parts_t.append(t[keep])
        parts_f.append(f[keep])
        parts_g.append(g[keep])
        parts_s.append(np.full(int(keep.sum()), key[0]))
        parts_r.append(np.full(int(keep.sum()), rank))
    t, g, f, s, _ = _sort_dedupe(
        np.concatenate(parts_t), np.concatenate(parts_f), np.concatenate(parts_s), np.concatenate(parts_r),
        good=np.concatenate(parts_g), rank=np.concatenate(parts_r),
    )
    return XRSSeries(time=t.view("datetime64[ns]"), flux=f, good=g, satellite=s, scale=scale,
                     files=tuple(str(p) for p in files))


def _iso(t: np.datetime64) -> str:
    return str(np.datetime_as_string(t.astype("datetime64[ms]"), unit="ms"))


def summarize_file(path, scale: str = "true") -> dict:
    """Product, satellite, time range (ISO, UTC), and peak good XRS-B flux (W/m²) with its time and class.

    Keys: file, product, satellite, start, end, peak_flux, peak_time, peak_class, n_good, n_samples, scale.
    Raises :class:`FlaresynthError` if the file has no good sample.
    """
    series, info = _read_one(path, scale)
    flux_name, flag_name = _VARIABLES[info.product]
    n_good = int(series.good.sum())
    if n_good == 0:
        field = f"variable '{flag_name}'" if flag_name else f"column '{flux_name}'"
        raise input_error(path, field, f"no good sample among {len(series)} (all flagged, missing or <= 0)")
    peak_flux, peak_time = series.peak()
    return {
        "file": str(path),
        "product": info.product,
        "satellite": info.satellite,
        "start": _iso(series.time[0]),
        "end": _iso(series.time[-1]),
        "peak_flux": peak_flux,
        "peak_time": _iso(peak_time),
        "peak_class": flux_to_class(peak_flux),
        "n_good": n_good,
        "n_samples": len(series),
        "scale": scale,
    }
