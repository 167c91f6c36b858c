"""The simulated Sun's archive writers: SDOMLv2 zarr, GOES-16 XRS netCDF and a HEK flare list.

Files (``simulate``), in the public formats of SDOMLv2 (Galvez et al. 2019), GOES-R XRS L2 and the HEK
-------------------------------------------------------------------------------------------------------
* ``sdomlv2.zarr``: zarr format 2, ``<year>/171A`` (and ``<year>/94A`` ... with ``channels``: one array per
  channel, each with its own frame list, T_OBS seconds, exposures and DEG_COR; frames lost in one channel only,
  multi-hour gaps in all) float32 (N, 512, 512) in DN/s, written by
  :func:`flaresynth.sources.sdoml.write_sdoml_frames` (Blosc zstd bitshuffle, chunks of 15 frames), one
  attribute list per FITS keyword. Days are stored in a shuffled order, time-ordered within a day, as in the
  real store; each frame goes to the group of its own year. Headers follow SDOMLv2's 512-px geometry:
  ``CDELT = 4.8″ · RSUN_OBS / 976″``, ``CRPIX = 256.5``, ``R_SUN = 976 / 4.8`` px; ``RSUN_OBS``, ``DSUN_OBS``,
  ``CRLT_OBS`` (B0) and ``CRLN_OBS`` (L0) come from sunpy's ephemeris. ``DEG_COR`` drifts slowly (0.86 in
  2024, -0.01 a year). ``EXPTIME`` is 2.0 s, shorter during big flares (automatic exposure control); ~0.3 %
  of the frames carry a non-zero ``QUALITY`` and ~1.5 % are missing (the ``gaps`` confounder). Frames are
  rendered by up to 2 worker processes (the bytes do not depend on it). Pixels keep 11 of their 23 mantissa
  bits (relative error <= 2.4e-4, far below photon noise), ~430 kB a frame with photon noise.
* ``goes/sci_xrsf-l2-avg1m_g16_dYYYYMMDD_v2-2-0.nc``: GOES-16 L2 1-min averages, 1440 rows a day,
  ``time`` float64 whole seconds since 2000-01-01 12:00:00 (record start). Variable names, dtypes, fill
  values, flag encoding (``flag_values``/``flag_masks``/``flag_meanings``) and global attributes are copied
  from the real file ``sci_xrsf-l2-avg1m_g16_d20210101_truncated.nc`` shipped by sunpy (``id`` = the file
  name; ``date_created`` is fixed, not the wall clock). About 4 minutes a day are ``bad_data`` (flag 2) and
  carry a particle spike (flux × 5-50) or the fill value, so readers must honour ``xrsb_flag``. Fluxes are
  GOES-R "true" fluxes (no SWPC 0.7 factor); a 1-min sample is the light curve at the middle of its minute.
* ``hek/flares.json``: a saved HEK response, one SWPC ``FL`` event per detected flare. As SWPC does,
  ``fl_goescls`` is the class of the **maximum XRS-B flux, background included**, between start and end,
  measured on the good samples of the written GOES record, and the peak time is that minute. A flare whose
  maximum is not its own peak (buried in a bigger flare's decay) is not listed, as SWPC would miss it.
  Start = peak - 2.5 σ_rise; end = when the flare has decayed to half its peak (SWPC's rule).
  ``ar_noaanum`` is the NOAA number of the region's current disk passage (0 for a region never numbered).
* ``montage.png``: frames by the GOES class of their instantaneous flux (rows A-X), sunpy's ``sdoaia171``
  colour map, log stretch; ``simulation.json``: the parameters and counts, the X flares and their regions,
  and the ≥M-in-24 h base rate at 6-hourly issue times.

Checked before anything is written: whole days >= 1, a cadence dividing a day, dates from SDO's first light
(2010-05-13) to 2040, free disk space for the estimated size. The default period, 730 days from 2011-01-01 at
60 min (17166 frames, the rise of cycle 24 to its first maximum), takes ~4 min on 2 idle cores (two rendering
processes), 1.0 GB of memory and 7.2 GB of disk. Until 2026-12-04 it was 180 days from 2015-03-01 (4249 frames,
1.87 GB): too few independent flares for the test blocks (2 X and 7 M events, one quiet spell of A frames).
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import shutil
import time
from pathlib import Path

import numpy as np
import xarray as xr
import zarr
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from flaresynth.errors import FlaresynthError, input_error
from flaresynth.io import atomic_dir
from flaresynth.labels import GOES_CLASSES, flux_to_class, flux_to_letter_index
from flaresynth.sources.sdoml import write_sdoml_frames
from flaresynth.sources.simulate import channels as aia
from flaresynth.sources.simulate.cycle import LAST_DAY, SDO_FIRST_LIGHT
from flaresynth.sources.simulate.montage import montage
from flaresynth.sources.simulate.sun import (
    CDELT_SDOML,
    CENTRE,
    CONFOUNDERS,
    EXPTIME,
    NOISE_XRS,
    RSUN_ARCSEC_SDOML,
    RSUN_PX,
    SIZE,
    SimulatedSun,
    check_confounders,
    deg_cor,
    sun_to_image,
    to_days,
)

CHUNK = 15
GOES_VERSION = "v2-2-0"
GOES_EPOCH = np.datetime64("2000-01-01T12:00:00", "ns")
T_OBS_OFFSET = np.timedelta64(5350, "ms")  # AIA T_OBS is the exposure mid-time, a few seconds past the slot
MISSING_FRAMES = 0.01  # share of frames lost one by one
GAPS_PER_DAY = 1 / 20  # multi-hour data gaps (1-8 h)
#: The demo's default period: six and a half Carrington rotations in the declining phase of cycle 24.
DEFAULT_START, DEFAULT_DAYS, DEFAULT_CADENCE_MIN = "2011-01-01", 730, 60
#: Where 171 Å's DEG_COR comes from: the drifting model factor of the default data, or aiapy's table.
DEG_171 = ("model", "aiapy")

# ------------------------------------------------------------------------------------------- the files
#: Global attributes of the real GOES-16 avg1m product (copied from sunpy's test file, v2-1-0), for ours.
GOES_GLOBAL_ATTRS = {
    "Conventions": "ACDD-1.3, Spase v2.2.6",
    "title": "L2 XRS 1 minute average",
    "summary": "The EXIS X-Ray Sensor (XRS) measures in a short wavelength channel (XRS-A) between 0.05 "
               "and 0.4 nm and in a longer wavelength channel (XRS-B) between 0.1 and 0.8 nm. The X-ray flux "
               "average product consists of 1 minute averages of the 1-s X-ray solar measurements. Flux is "
               "provided with and without electron contamination removed.",
    "keywords": "NumericalData.MeasurementType.Irradiance",
    "keywords_vocabulary": "SPASE: Space Physics Archive Search and Extract Data Model version 2.2.6, GCMD: "
                           "NASA Global Change Master Directory (GCMD) Earth Science Keywords version 8.5",
    "naming_authority": "gov.nesdis.noaa",
    "history": "See algorithm information.",
    "source": "GOES-R EXIS/XRS L2 xrsf-l2-flx1s",
    "processing_level": "Level 2",
    "processing_level_description": "Derived products",
    "license": "These data may be redistributed and used without restriction. ",
    "institution": "DOC/NOAA/NESDIS",
    "references": "GOES-R XRS.04 Algorithm Theoretical Basis Document",
    "instrument": "GOES R Series Extreme Ultraviolet Sensor and X-ray Irradiance Sensors (EXIS)",
    "program": "Geostationary Operational Environmental Satellite, R-Series (GOES-R)",
    "time_coverage_resolution": "PT1M",
    "instrument_id": "FM1",
    "orbital_slot": "GOES-East",
    "platform": "g16",
    "algorithm": "cli-xrs04_avg",
    "algorithm_version": np.array([2, 2], dtype=np.int64),
}
_FLAG_COMMENT = (
    "e_contam_significant is set when the electron contamination is greater than 50% of observed signal. "
    "good_data is independent of electron contamination flags. electron_correction_interp is set when the "
    "electron contamination is interpolated because a short period of SEISS MPSHI is missing. "
    "electron_correction_decay is set when the correction is smoothly turned off with a decay over a ~2 "
    "hour period because SEISS MPSHI data is missing, and no future value is known. "
    "electron_correction_invalid is set after 1 hour of decay."
)
_FLAG_ATTRS = {
    "flag_masks": np.array([3, 1, 2, 4, 8, 8, 48, 48], dtype=np.uint8),
    "flag_values": np.array([0, 1, 2, 4, 0, 8, 16, 32], dtype=np.uint8),
    "flag_meanings": "good_data eclipse bad_data e_contam_significant e_correction_valid "
                     "e_correction_invalid e_correction_interp e_correction_decay",
}
_EXCLUDED_ATTRS = {
    "comments": "Union of flags set for data points that were excluded from the average.",
    "flag_masks": np.array([1, 2, 4, 8, 16, 32, 64, 128, 256, 512], dtype=np.uint16),
    "flag_values": np.array([1, 2, 4, 8, 16, 32, 64, 128, 256, 512], dtype=np.uint16),
    "flag_meanings": "eclipse particle_spike calibration off_point temperature_error data_quality_error "
                     "pointing_error invalid_mode missing_data L0_error",
}
BAD_DATA = 2  # xrs*_flag value of a bad minute (mask 3 != 0)
SPIKE, MISSING = 2, 256  # xrs*_flag_excluded bits: particle_spike, missing_data


def _iso(t: np.datetime64, decimals: int = 0) -> str:
    s = str(np.datetime64(t, "ms"))
    return s[: 19 + (1 + decimals if decimals else 0)]


def _quantise(img: np.ndarray) -> np.ndarray:
    """Keep 11 of the 23 mantissa bits of each float32: rounding error <= 2.4e-4 (far below photon noise),
    and the store compresses ~2× better."""
    bits = img.astype(np.float32).view(np.uint32)
    return ((bits + np.uint32(1 << 11)) & np.uint32(0xFFFFF000)).view(np.float32)


def _frame_plan(sun: SimulatedSun, cadence_min: int) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """Frame times (datetime64 T_OBS, days since start) and, per year, the storage order of frame indices.

    Days are stored in a shuffled order and frames in time order within a day, as in the real SDOMLv2 store.
    """
    n = int(math.ceil(sun.days * 1440 / cadence_min - 1e-9))
    nominal = sun.start + np.arange(n) * np.timedelta64(cadence_min, "m")
    t_obs = nominal + T_OBS_OFFSET
    rng = np.random.default_rng(sun._misc_ss)
    # draw the gaps whether or not they are used, so the other random choices stay the same
    lost = rng.uniform(size=n) < MISSING_FRAMES
    n_gaps = int(rng.poisson(GAPS_PER_DAY * sun.days))
    gap_start = rng.uniform(0, sun.days, n_gaps)
    gap_hours = rng.uniform(1.0, 8.0, n_gaps)
    return _drop_and_order(sun, t_obs, lost, gap_start, gap_hours, rng)


def _drop_and_order(sun: SimulatedSun, t_obs: np.ndarray, lost: np.ndarray, gap_start: np.ndarray,
                    gap_hours: np.ndarray, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """The frame plan's common tail: drop the ``lost`` frames and the multi-hour gaps (with the ``gaps``
    confounder), then each year's frame order with its days shuffled by ``rng`` (SDOMLv2 stores are not sorted
    by time). Returns (T_OBS, days since the start, {year: order})."""
    if "gaps" in sun.confounders:
        # missing frames: isolated losses and a few multi-hour gaps (eclipse seasons, calibrations)
        t = to_days(t_obs - sun.start)
        for g0, gh in zip(gap_start, gap_hours):
            lost |= (t >= g0) & (t < g0 + gh / 24)
        t_obs = t_obs[~lost]
    years = t_obs.astype("datetime64[Y]").astype(int) + 1970
    day = t_obs.astype("datetime64[D]")
    order = {}
    for year in np.unique(years):
        idx = np.flatnonzero(years == year)
        days = np.unique(day[idx])
        shuffled = days[rng.permutation(days.size)]
        order[int(year)] = np.concatenate([idx[day[idx] == d] for d in shuffled])
    return t_obs, to_days(t_obs - sun.start), order


def _channel_plan(sun: SimulatedSun, cadence_min: int, channel: str
                  ) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """:func:`_frame_plan` of another channel than 171 Å: the same slots and multi-hour gaps (the whole
    instrument was off), its own isolated losses (so a frame can be missing in one channel only), its own
    T_OBS within the slot and its own shuffled order of days."""
    n = int(math.ceil(sun.days * 1440 / cadence_min - 1e-9))
    nominal = sun.start + np.arange(n) * np.timedelta64(cadence_min, "m")
    t_obs = nominal + np.timedelta64(int(round(aia.T_OBS_OFFSET_S[channel] * 1000)), "ms")
    shared = np.random.default_rng(sun._misc_ss)  # the same draws as _frame_plan: the same multi-hour gaps
    shared.uniform(size=n)
    n_gaps = int(shared.poisson(GAPS_PER_DAY * sun.days))
    gap_start = shared.uniform(0, sun.days, n_gaps)
    gap_hours = shared.uniform(1.0, 8.0, n_gaps)
    rng = np.random.default_rng(np.random.SeedSequence([sun.seed, 7770, aia.wavelength(channel)]))
    lost = rng.uniform(size=n) < MISSING_FRAMES
    return _drop_and_order(sun, t_obs, lost, gap_start, gap_hours, rng)


def _headers(sun: SimulatedSun, t_obs: np.ndarray, t: np.ndarray, quality: np.ndarray, channel: str = "171A",
             deg: np.ndarray | None = None) -> list[dict]:
    """SDOMLv2 per-frame FITS keywords (geometry rewritten for 512 px, as SDOMLv2's creation script does) of
    ``channel``; ``deg`` is the DEG_COR of each frame (default: the 171 Å model factor)."""
    rsun = sun.rsun_obs(t)
    b0 = sun.b0(t)
    l0 = np.interp(t, sun._eph_t, sun._eph_l0) % 360.0
    dsun = np.interp(t, sun._eph_t, sun._eph_dsun)
    deg = deg_cor(t_obs) if deg is None else deg
    exposure = aia.EXPOSURE[channel]
    half_exp = np.timedelta64(int(exposure * 500), "ms")
    out = []
    for k in range(len(t)):
        cdelt = round(CDELT_SDOML * float(rsun[k]) / RSUN_ARCSEC_SDOML, 6)
        out.append({
            "T_OBS": _iso(t_obs[k], 2) + "Z",
            "DATE-OBS": _iso(t_obs[k] - half_exp, 2),
            "EXPTIME": exposure,
            "WAVELNTH": aia.wavelength(channel),
            "WAVEUNIT": "angstrom",
            "QUALITY": int(quality[k]),
            "DEG_COR": round(float(deg[k]), 5),
            "PIXLUNIT": "DN/s",
            "LVL_NUM": 1.5,
            "RSUN_OBS": round(float(rsun[k]), 4),
            "R_SUN": round(RSUN_PX, 4),
            "DSUN_OBS": round(float(dsun[k]), 1),
            "CRLT_OBS": round(float(b0[k]), 5),
            "CRLN_OBS": round(float(l0[k]), 5),
            "CDELT1": cdelt,
            "CDELT2": cdelt,
            "CRPIX1": CENTRE + 1.0,
            "CRPIX2": CENTRE + 1.0,
            "CRVAL1": 0.0,
            "CRVAL2": 0.0,
            "CUNIT1": "arcsec",
            "CUNIT2": "arcsec",
            "CTYPE1": "HPLN-TAN",
            "CTYPE2": "HPLT-TAN",
            "CROTA2": 0.0,
            "INSTRUME": f"AIA_{aia.telescope(channel)}",
            "TELESCOP": "SDO/AIA",
            "NAXIS1": SIZE,
            "NAXIS2": SIZE,
        })
    return out


def _progress_bar(enabled: bool):
    """A rich progress bar on stderr (off when stderr is not a terminal)."""
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, console=console, disable=not (enabled and console.is_terminal))


_WORKER_SUN: SimulatedSun | None = None  # the Sun a forked rendering worker inherits


def _render_chunk(jobs: list[tuple[float, float, str]]) -> list[tuple[np.ndarray, float]]:
    """Render one chunk of frames (in a worker process, or here) from (t, DEG_COR, channel): [(quantised frame,
    exposure time)]."""
    return [(_quantise(img), exptime) for img, exptime in
            (_WORKER_SUN.observe_channel(t, channel, deg_cor=d) for t, d, channel in jobs)]


@contextlib.contextmanager
def _chunk_renderer(sun: SimulatedSun, workers: int):
    """A function mapping chunks to rendered chunks, in order: forked worker processes when ``workers`` > 1
    (every frame is a pure function of its time, so the bytes do not depend on who renders it)."""
    global _WORKER_SUN
    _WORKER_SUN = sun
    try:
        if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            # fork: the workers inherit the Sun instead of unpickling it; created before the store is
            # opened, so no zarr I/O thread exists yet
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                yield lambda chunks: pool.imap(_render_chunk, chunks)
        else:
            yield lambda chunks: map(_render_chunk, chunks)
    finally:
        _WORKER_SUN = None


def _write_images(sun: SimulatedSun, root: Path, cadence_min: int, progress: bool, workers: int = 1,
                  channel_list=aia.DEFAULT_CHANNELS, deg_171: str = "model"):
    """Render every frame of every channel, in storage order and 15 (one chunk) at a time, into the store ``root``.

    Returns (T_OBS datetime64, t days since start, frames per year, exposure times) of 171 Å's frame plan (the
    montage's frames) and {channel: frames per year}. The chunks are rendered by ``workers`` processes and
    written here in order: the first of a year by ``write_sdoml_frames`` (which creates the array), the others
    appended. 171 Å comes first, with the draws it always had, so its bytes do not depend on the other channels.
    """
    t_obs, t, order = _frame_plan(sun, cadence_min)
    rng = np.random.default_rng(sun._misc_ss.spawn(1)[0])
    # a few frames carry a non-zero QUALITY word, as some AIA frames do (readers drop them)
    quality = np.where(rng.uniform(size=t.size) < 0.003, 1 << 30, 0)
    exposures = np.full(t.size, EXPTIME)
    plans = {}
    for channel in channel_list:
        if channel == "171A":
            deg = deg_cor(t_obs) if deg_171 == "model" else aia.aiapy_degradation(channel, t_obs)
            plans[channel] = (t_obs, t, order, quality, deg, exposures)
        else:
            c_obs, c_t, c_order = _channel_plan(sun, cadence_min, channel)
            c_rng = np.random.default_rng(np.random.SeedSequence([sun.seed, 7771, aia.wavelength(channel)]))
            c_quality = np.where(c_rng.uniform(size=c_t.size) < 0.003, 1 << 30, 0)
            plans[channel] = (c_obs, c_t, c_order, c_quality, aia.aiapy_degradation(channel, c_obs),
                              np.full(c_t.size, aia.EXPOSURE[channel]))
    counts = {}
    with _chunk_renderer(sun, workers) as render_chunks, _progress_bar(progress) as bar:
        for channel in channel_list:
            c_obs, c_t, c_order, c_quality, deg, c_exposures = plans[channel]
            headers = _headers(sun, c_obs, c_t, c_quality, channel, deg)
            batches = [(year, idx[b:b + CHUNK]) for year, idx in c_order.items() for b in range(0, idx.size, CHUNK)]
            jobs = [[(float(c_t[i]), float(deg[i]), channel) for i in batch] for _, batch in batches]
            arrays = {}
            task = bar.add_task(f"rendering AIA {channel[:-1]} Å frames", total=c_t.size)
            for (year, batch), observed in zip(batches, render_chunks(jobs)):
                frames = np.stack([img for img, _ in observed])
                for i, (_, exptime) in zip(batch, observed):
                    # automatic exposure control: the header says how long this frame was exposed
                    c_exposures[i] = exptime
                    headers[i]["EXPTIME"] = exptime
                    headers[i]["DATE-OBS"] = _iso(c_obs[i] - np.timedelta64(int(exptime * 500), "ms"), 2)
                if year not in arrays:
                    arrays[year] = write_sdoml_frames(root, year, channel, frames, [headers[i] for i in batch],
                                                      chunk_frames=CHUNK)
                else:
                    arrays[year].append(frames, axis=0)
                bar.advance(task, batch.size)
            counts[channel] = {}
            for year, idx in c_order.items():
                full = [headers[i] for i in idx]
                arrays[year].attrs.update({k: [h[k] for h in full] for k in full[0]})
                counts[channel][str(year)] = int(idx.size)
    # Mark the store as simulated, so evaluation can run the physical referee on it (`--referee auto`);
    # a real SDOMLv2 store has no such attribute.
    zarr.open_group(str(root), mode="a", zarr_format=2).attrs.update(
        {"flaresynth_simulated": True, "flaresynth_seed": sun.seed}
    )
    return t_obs, t, counts, {channel: plans[channel][5] for channel in channel_list}


def _goes_record(sun: SimulatedSun) -> dict[str, np.ndarray]:
    """The 1-min GOES-16 record of the whole simulation: fluxes (with noise, spikes, fill) and flags."""
    n = int(round(sun.days * 1440))
    t_start = np.arange(n) / 1440.0
    b, a = sun.xrs(t_start + 0.5 / 1440)  # a 1-min average ≈ the curve at the middle of the minute
    rng = np.random.default_rng(sun._goes_ss)
    b = b * (1 + NOISE_XRS * rng.standard_normal(n))
    a = a * (1 + 2 * NOISE_XRS * rng.standard_normal(n))
    electrons = 2e-10 * (1 + 0.5 * np.sin(2 * np.pi * t_start)) * rng.lognormal(0, 0.3, n)
    flag_b = np.zeros(n, np.uint8)
    excl = np.zeros(n, np.uint16)
    num = np.full(n, 60, np.uint8)
    # a few bad minutes a day: particle spikes (flux x5-50) or no data (fill), flagged bad_data
    bad = np.flatnonzero(rng.uniform(size=n) < 4.0 / 1440)
    spike = rng.uniform(size=bad.size) < 0.5
    factor = rng.uniform(5, 50, spike.sum())
    b[bad[spike]] *= factor
    a[bad[spike]] *= factor
    flag_b[bad] = BAD_DATA
    excl[bad[spike]] = SPIKE
    excl[bad[~spike]] = MISSING
    num[bad[~spike]] = 0
    fill = np.zeros(n, bool)
    fill[bad[~spike]] = True
    return {"t": t_start, "xrsb": b, "xrsa": a, "electrons": electrons, "flag": flag_b, "excluded": excl,
            "num": num, "fill": fill, "good": flag_b == 0}


def _channel_variables(ch: str, rec: dict, sl: slice) -> dict[str, tuple[np.ndarray, dict]]:
    """The avg1m variables of XRS channel ``ch`` ("a" or "b") for rows ``sl``, with the real attributes."""
    name = f"xrs{ch}"
    fill = rec["fill"][sl]
    electrons = rec["electrons"][sl] * (0.3 if ch == "a" else 1.0)
    vmax = np.float32(0.003 if ch == "a" else 0.2)
    valid = {"units": "W/m2", "valid_min": np.float32(1e-9), "valid_max": vmax}

    def flux(values):
        return np.where(fill, -9999.0, values).astype(np.float32)

    return {
        f"{name}_flux": (flux(rec[name][sl]), {
            **valid, "long_name": f"XRS-{ch.upper()} primary average flux.",
            "comments": f"Electron contamination has been removed. {name}_flux =  {name}_flux_observed - "
                        f"{name}_flux_electrons",
            "ancillary_variables": f"{name}_flag {name}_num {name}_flag_excluded"}),
        f"{name}_flux_observed": (flux(rec[name][sl] + electrons), {
            **valid, "long_name": f"XRS-{ch.upper()} primary average flux, without electron contamination "
                                  "correction.",
            "comments": f"Average of XRS-{ch.upper()} flux reported by the sensor."}),
        f"{name}_flux_electrons": (flux(electrons), {
            "units": "W/m2", "long_name": f"XRS-{ch.upper()} electron contamination.",
            "valid_min": np.float32(0.0), "valid_max": np.float32(1e-6)}),
        f"{name}_flag": (rec["flag"][sl], {"long_name": f"Flags for {name}_flux.", "comments": _FLAG_COMMENT,
                                          **_FLAG_ATTRS}),
        f"{name}_flag_excluded": (rec["excluded"][sl], {
            "long_name": f"Flags on data excluded from {name}_flux average.", **_EXCLUDED_ATTRS}),
        f"{name}_num": (rec["num"][sl], {"long_name": f"Number of averaged measurements in {name}_flux."}),
    }


_NC_FILL = {np.dtype(np.float32): np.float32(-9999.0), np.dtype(np.float64): -9999.0,
            np.dtype(np.uint8): np.uint8(255), np.dtype(np.uint16): np.uint16(65535)}


def _write_goes(sun: SimulatedSun, rec: dict, folder: Path) -> list[str]:
    """One GOES-16 L2 avg1m netCDF per UTC day, in the real product's layout (xarray + h5netcdf)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    day0 = sun.start.astype("datetime64[D]")
    au = (np.interp(rec["t"], sun._eph_t, sun._eph_dsun) / 1.495978707e11) ** 2  # (d / 1 AU)²
    for d in range(int(round(sun.days))):
        day = day0 + np.timedelta64(d, "D")
        sl = slice(d * 1440, (d + 1) * 1440)
        name = f"sci_xrsf-l2-avg1m_g16_d{str(day).replace('-', '')}_{GOES_VERSION}.nc"
        # whole seconds since the GOES-R epoch, exactly (no round trip through days)
        first = (np.datetime64(day, "s") - GOES_EPOCH.astype("datetime64[s]")).astype(np.int64)
        seconds = (first + 60 * np.arange(1440)).astype(np.float64)
        data = {**_channel_variables("a", rec, sl), **_channel_variables("b", rec, sl),
                "au_factor": (au[sl].astype(np.float32), {
                    "long_name": "1-AU factor.",
                    "comments": "Multiplicative factor to convert fluxes to values at 1 AU."})}
        time_attrs = {"long_name": "Record start time, neglecting leap seconds.",
                      "units": "seconds since 2000-01-01T12:00:00", "calendar": "proleptic_gregorian"}
        ds = xr.Dataset({k: ("time", v, attrs) for k, (v, attrs) in data.items()},
                        coords={"time": ("time", seconds, time_attrs)})
        ds.attrs.update({
            **GOES_GLOBAL_ATTRS,
            "id": name,
            "date_created": f"{day + np.timedelta64(2, 'D')}T00:00:00.000Z",  # fixed, not the wall clock
            "time_coverage_start": f"{day}T00:00:00.000Z",
            "time_coverage_end": f"{day + np.timedelta64(1, 'D')}T00:00:00.000Z",
            "comment": f"SIMULATED data written by flaresynth (seed {sun.seed}); not a NOAA product.",
        })
        arrays = {"time": seconds, **{k: v for k, (v, _) in data.items()}}
        encoding = {k: {"dtype": v.dtype, "_FillValue": _NC_FILL[v.dtype], "zlib": True, "complevel": 4,
                        "chunksizes": (1440,)} for k, v in arrays.items()}
        # netCDF4 (a dependency) writes these files ~5x faster than h5netcdf
        ds.to_netcdf(folder / name, engine="netcdf4", encoding=encoding)
        names.append(name)
    return names


def _hek_events(sun: SimulatedSun, rec: dict) -> list[dict]:
    """SWPC-style HEK FL events, detected on the written GOES record (good samples only)."""
    flux = np.where(rec["good"], rec["xrsb"], -np.inf)
    n = flux.size
    events, taken = [], set()
    for k, fl in enumerate(sun.flares):
        i0 = int(math.floor(fl.t_start * 1440))
        i1 = int(math.ceil(fl.t_end * 1440))
        ip = int(math.floor(fl.t_peak * 1440))
        if i0 < 0 or i1 >= n or i1 <= i0:
            continue
        j = i0 + int(np.argmax(flux[i0:i1 + 1]))
        if abs(j - ip) > 2 or j in taken or not np.isfinite(flux[j]):
            continue  # hidden in a bigger flare's light curve: SWPC would not list it
        taken.add(j)
        ar = sun.regions[fl.region]
        tp = j / 1440.0
        x, y, _ = sun_to_image(ar.centre + fl.offset, float(ar.lon(tp)), float(sun.b0(tp)))
        rsun = float(sun.rsun_obs(tp))
        hpc_x, hpc_y = round(float(x) * rsun, 1), round(float(y) * rsun, 1)
        p = ar.centre + fl.offset
        lat = math.degrees(math.atan2(float(p[2]), math.hypot(float(p[0]), float(p[1]))))
        lon = (float(ar.lon(tp)) + math.degrees(math.atan2(float(p[1]), float(p[0]))) + 180.0) % 360.0 - 180.0
        carr = (float(np.interp(tp, sun._eph_t, sun._eph_l0)) + lon) % 360.0
        start = sun.start + np.timedelta64(i0, "m")
        peak = sun.start + np.timedelta64(j, "m")
        end = sun.start + np.timedelta64(i1, "m")
        stamp = _iso(peak).replace("-", "").replace(":", "").replace("T", "_")
        events.append({
            "event_type": "FL",
            "event_starttime": _iso(start),
            "event_peaktime": _iso(peak),
            "event_endtime": _iso(end),
            "fl_goescls": flux_to_class(float(flux[j])),
            "frm_name": "SWPC",
            "frm_institute": "NOAA SWPC",
            "obs_observatory": "GOES",
            "obs_instrument": "XRS",
            "ar_noaanum": int(ar.noaa_at(tp)),
            "hpc_x": hpc_x,
            "hpc_y": hpc_y,
            "hgs_x": round(lon, 2),
            "hgs_y": round(lat, 2),
            "hpc_coord": f"POINT({hpc_x} {hpc_y})",
            "event_coordsys": "UTC-HPC-TOPO",
            "event_coordunit": "arcsec",
            "event_coord1": hpc_x,
            "event_coord2": hpc_y,
            "SOL_standard": f"SOL{_iso(peak)}L{carr:03.0f}C{90.0 - lat:03.0f}",
            "kb_archivid": f"ivo://helio-informatics.org/FL_SWPC_flaresynth_s{sun.seed}_{stamp}_{k:05d}",
            "kb_archivdate": _iso(end + np.timedelta64(1, "D")),
        })
    events.sort(key=lambda e: (e["event_starttime"], e["kb_archivid"]))
    return events


def _frame_flux(t: np.ndarray, rec: dict) -> np.ndarray:
    """XRS-B of the good 1-min sample nearest to each frame time (within 60 s), NaN if none."""
    good = np.flatnonzero(rec["good"])
    st = rec["t"][good]
    pos = np.clip(np.searchsorted(st, t), 1, st.size - 1)
    nearest = np.where(np.abs(st[pos - 1] - t) <= np.abs(st[pos] - t), pos - 1, pos)
    ok = np.abs(st[nearest] - t) <= 60 / 86400
    return np.where(ok, rec["xrsb"][good[nearest]], np.nan)


def _parse_start(start) -> np.datetime64:
    try:
        day = np.datetime64(str(start).strip(), "D")
    except ValueError:
        raise FlaresynthError(f"start {start!r}: expected a UTC date like 2024-05-01") from None
    if str(day) != str(start).strip()[:10]:
        raise FlaresynthError(f"start {start!r}: expected a UTC date like 2024-05-01")
    return day.astype("datetime64[ns]")


def check_request(out_dir, days, cadence_min, start, cycle_phase=None, confounders=CONFOUNDERS,
                  overwrite: bool = False, channel_list=aia.DEFAULT_CHANNELS, deg_171: str = "model"
                  ) -> np.datetime64:
    """Check a simulation request before anything is written; returns the first day. One-line errors."""
    channel_list = aia.parse_channels(channel_list, allowed=aia.CHANNELS)
    if deg_171 not in DEG_171:
        raise FlaresynthError(f"--deg-171 {deg_171!r}: expected one of {', '.join(DEG_171)}")
    if int(days) != days or days < 1:
        raise FlaresynthError(f"--days {days!r}: expected a whole number of days >= 1")
    if int(cadence_min) != cadence_min or not 1 <= cadence_min <= 1440 or 1440 % int(cadence_min):
        raise FlaresynthError(f"--cadence-min {cadence_min!r}: expected whole minutes that divide a day "
                              "(e.g. 6, 12, 30, 60)")
    day0 = _parse_start(start)
    last = day0 + np.timedelta64(int(days) - 1, "D")
    if day0 < SDO_FIRST_LIGHT:
        raise FlaresynthError(f"--start {start}: before SDO's first light ({SDO_FIRST_LIGHT}); AIA has no data "
                              "to imitate")
    if last > LAST_DAY:
        raise FlaresynthError(f"--start {start} --days {days}: ends {str(last)[:10]}, after {LAST_DAY} "
                              "(the solar-cycle model stops there)")
    if cycle_phase is not None and not 0.0 <= float(cycle_phase) <= 1.0:
        raise FlaresynthError(f"--cycle-phase {cycle_phase!r}: expected a number from 0 (minimum) to 1")
    try:
        check_confounders(confounders)
    except ValueError as exc:
        raise FlaresynthError(f"--without: {exc}") from None
    out = Path(out_dir)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise input_error(out, None, "already exists and is not empty (choose a new folder)")
    need = estimated_bytes(int(days), int(cadence_min), len(channel_list))
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    free = shutil.disk_usage(parent).free
    if need > free:
        raise input_error(out, None, f"needs about {need / 1e9:.1f} GB but {parent} has {free / 1e9:.1f} GB free "
                          "(fewer --days or a longer --cadence-min)")
    return day0


def estimated_bytes(days: int, cadence_min: int, n_channels: int = 1) -> int:
    """Disk space a simulation needs: ~400 kB a 171 Å frame (zstd, 11-bit mantissas), ~500 kB a frame of each
    further channel (the faint hot channels' noise compresses less; measured 410-520 kB) + ~0.3 MB of GOES a day."""
    frames = days * 1440 / cadence_min
    return int(frames * (400e3 + 500e3 * (n_channels - 1)) + days * 0.3e6 + 5e6)


def forecast_base_rate(rec: dict, days: float, every_hours: float = 6.0, horizon_hours: float = 24.0) -> float:
    """Share of issue times (every ``every_hours`` from the start, with a whole horizon ahead) followed by an
    XRS-B flux >= 1e-5 W/m² (M1) within ``horizon_hours``: the ≥M-in-24 h climatology of a forecast."""
    flux = np.where(rec["good"], rec["xrsb"], 0.0)
    issue = np.arange(0.0, days - horizon_hours / 24 + 1e-9, every_hours / 24)
    if not issue.size:
        return float("nan")
    m = flux >= 1e-5
    csum = np.concatenate([[0], np.cumsum(m)])
    lo = np.floor(issue * 1440).astype(int) + 1
    hi = np.minimum(lo + int(horizon_hours * 60), m.size)
    return float(np.mean(csum[hi] - csum[lo] > 0))


def simulate(out_dir, days: int = DEFAULT_DAYS, cadence_min: int = DEFAULT_CADENCE_MIN, start: str = DEFAULT_START,
             seed: int = 0, cycle_phase: float | None = None, confounders=CONFOUNDERS, overwrite: bool = False,
             progress: bool = True, workers: int | None = None, channels=aia.DEFAULT_CHANNELS,
             deg_171: str = "model") -> dict:
    """Write a simulated Sun in the real archive formats into ``out_dir``.

    Parameters
    ----------
    out_dir : folder to create (it appears only when complete): ``sdomlv2.zarr``, ``goes/``,
        ``hek/flares.json``, ``montage.png``, ``simulation.json``.
    days : whole days to simulate, from ``start`` 00:00 UTC.
    cadence_min : AIA frame cadence in minutes, a divisor of a day (SDOMLv2 is used at 6-12 min; the demo's
        730 days use 60).
    start : first day, UTC, ``YYYY-MM-DD``, from SDO's first light (2010-05-13) to 2040.
    seed : seed of everything; the same seed gives identical array data, netCDF variables and JSON.
    cycle_phase : None (the dates set the activity) or 0-1, a fixed phase of a typical solar cycle.
    confounders : the confounders of real data to add (default: all of
        :data:`~flaresynth.sources.simulate.sun.CONFOUNDERS`).
    overwrite : replace an existing ``out_dir`` (only once the new one is complete).
    progress : show a progress bar on stderr when it is a terminal.
    workers : processes rendering frames (default: up to 2, one per core); the files do not depend on it.
    channels : AIA channels to write, any of 94A, 131A, 171A, 193A, 211A, 335A (default 171A alone), one array
        per channel in each year group, each with its own frame list
        (:mod:`~flaresynth.sources.simulate.channels`); 171 Å is the same whatever else is asked.
    deg_171 : DEG_COR of 171 Å: ``model`` (the drifting model factor the default data were made with) or
        ``aiapy`` (aiapy's degradation table, as the other channels; changes the 171 Å bytes).

    Returns
    -------
    dict (JSON-able): frames, flares per GOES class (HEK events), the X flares and their regions, the ≥M-in-24 h
    base rate, files, sizes and wall time in seconds.
    """
    t_wall = time.perf_counter()
    day0 = check_request(out_dir, days, cadence_min, start, cycle_phase, confounders, overwrite, channels, deg_171)
    channel_list = aia.parse_channels(channels, allowed=aia.CHANNELS)
    out = Path(out_dir)
    sun = SimulatedSun(day0, int(days), int(seed), cycle_phase=cycle_phase, confounders=confounders)
    with atomic_dir(out, overwrite=True) as tmp:
        workers = min(2, os.cpu_count() or 1) if workers is None else max(int(workers), 1)
        t_obs, t, per_channel, exposures = _write_images(sun, tmp / "sdomlv2.zarr", int(cadence_min), progress,
                                                         workers, channel_list, deg_171)
        first = "171A" if "171A" in channel_list else channel_list[0]
        rec = _goes_record(sun)
        goes_files = _write_goes(sun, rec, tmp / "goes")
        events = _hek_events(sun, rec)
        (tmp / "hek").mkdir()
        with open(tmp / "hek" / "flares.json", "w") as fh:
            json.dump({"result": events, "overmax": False}, fh, indent=1)
            fh.write("\n")
        frame_flux = _frame_flux(t, rec)
        chosen = montage(sun, t_obs, t, frame_flux, tmp / "montage.png")
        idx = flux_to_letter_index(frame_flux)
        hek_letters = [e["fl_goescls"][0] for e in events]
        x_events = [e for e in events if e["fl_goescls"].startswith("X")]
        summary = {
            "start": str(day0.astype("datetime64[D]")),
            "days": int(days),
            "cadence_min": int(cadence_min),
            "seed": int(seed),
            "cycle_phase": cycle_phase,
            "confounders": sorted(sun.confounders),
            "mean_sunspot_number": round(150.0 * float(np.mean(sun.activity(np.arange(0, days, 1.0)))), 1),
            "channels": list(channel_list),
            "deg_171": deg_171,
            "n_frames": int(sum(per_channel[first].values())),
            "n_frames_short_exposure": int((exposures[first] < aia.EXPOSURE[first]).sum()),
            "frames_per_year": per_channel[first],
            **({"frames_per_channel": {c: int(sum(v.values())) for c, v in per_channel.items()},
                "short_exposures_per_channel": {c: int((e < aia.EXPOSURE[c]).sum()) for c, e in exposures.items()}}
               if len(channel_list) > 1 else {}),
            "frames_per_class": {c: int((idx == i).sum()) for i, c in enumerate(GOES_CLASSES)},
            "n_flares_simulated": len(sun.flares),
            "n_hek_events": len(events),
            "n_flares": {c: hek_letters.count(c) for c in GOES_CLASSES},
            "x_flares": [{"class": e["fl_goescls"], "peak": e["event_peaktime"], "ar_noaanum": e["ar_noaanum"]}
                         for e in x_events],
            "x_flare_regions": len({e["ar_noaanum"] for e in x_events}),
            "base_rate_m24": round(forecast_base_rate(rec, days), 3),
            "n_active_regions": len(sun.regions),
            "goes_files": len(goes_files),
            "goes_bad_minutes": int((~rec["good"]).sum()),
            "montage_frames": chosen,
            "files": ["sdomlv2.zarr", "goes/", "hek/flares.json", "montage.png", "simulation.json"],
        }
        with open(tmp / "simulation.json", "w") as fh:
            json.dump(summary, fh, indent=1)
            fh.write("\n")
    summary["out"] = str(out)
    summary["store_bytes"] = sum(p.stat().st_size for p in (out / "sdomlv2.zarr").rglob("*") if p.is_file())
    summary["wall_s"] = round(time.perf_counter() - t_wall, 1)
    return summary
