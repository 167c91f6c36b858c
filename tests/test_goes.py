"""GOES XRS reader on the real NOAA / SDAC files shipped by sunpy and sunkit-instruments.

Expected numbers were read independently from the same files with sunpy / sunkit-instruments and come from NOAA's
published classes; the reader computes its own.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import netCDF4
import numpy as np
import pytest
from sunkit_instruments.data.test import get_test_filepath as ski_file
from sunpy.data.test import get_test_filepath as sunpy_file

from flaresynth.errors import FlaresynthError
from flaresynth.sources import goes
from flaresynth.sources.goes import (
    BAD_FLAG_BITS,
    PRODUCTS,
    XRSSeries,
    identify_product,
    read_xrs,
    read_xrs_files,
    summarize_file,
)

S = np.timedelta64(1, "s")
MS = np.timedelta64(1, "ms")

G16_X = ski_file("sci_xrsf-l2-flx1s_g16_d20170910_v2-1-0_truncated.nc")  # 1
G15_X = ski_file("sci_gxrs-l2-irrad_g15_d20170910_v0-0-0_truncated.nc")  # 2
G18_X = ski_file("sci_xrsf-l2-flx1s_g18_d20250328_v2-2-0_truncated.nc")  # 3
SDAC_M = sunpy_file("go1520110607.fits")  # 4
SDAC_GZ = sunpy_file("go1520120601.fits.gz")  # 5
G15_IRRAD = sunpy_file("sci_gxrs-l2-irrad_g15_d20131028_truncated.nc")  # 6
G13_IRRAD = sunpy_file("sci_gxrs-l2-irrad_g13_d20170901_truncated.nc")  # 7
LEAP = sunpy_file("goes_13_leap_second.nc")  # 8
G15_AVG = sunpy_file("sci_xrsf-l2-avg1m_g15_d20190102_truncated.nc")  # 9
G16_AVG = sunpy_file("sci_xrsf-l2-avg1m_g16_d20210101_truncated.nc")  # 10
G17_1S = sunpy_file("sci_xrsf-l2-flx1s_g17_d20201016_truncated.nc")  # 11

# file, product, satellite, carries SWPC factor, peak class (true), peak class (swpc), time of peak (to the s)
TABLE = [
    (G16_X, "goes-r-flx1s", "GOES-16", False, "X13.0", "X13.0", "2017-09-10T16:06:31"),
    (G15_X, "goes1315-irrad", "GOES-15", False, "X11.9", "X8.3", "2017-09-10T16:06:27"),
    (G18_X, "goes-r-flx1s", "GOES-18", False, "X1.1", "X1.1", "2025-03-28T15:20:06"),
    (SDAC_M, "sdac-fits", "GOES-15", True, "M3.7", "M2.6", "2011-06-07T06:41:24"),
    (SDAC_GZ, "sdac-fits", "GOES-15", True, "C4.9", "C3.4", "2012-06-01T22:42:07"),
    (G15_IRRAD, "goes1315-irrad", "GOES-15", False, "C2.3", "C1.6", "2013-10-28T00:05:41"),
    (G13_IRRAD, "goes1315-irrad", "GOES-13", False, "B3.3", "B2.3", "2017-09-01T00:07:39"),
    (LEAP, "goes1315-irrad", "GOES-13", False, "B4.4", "B3.1", "2015-06-30T23:57:05"),
    (G15_AVG, "goes1315-avg1m", "GOES-15", False, "A3.1", "A2.2", "2019-01-02T00:00:00"),
    (G16_AVG, "goes-r-avg1m", "GOES-16", False, "A7.1", "A7.1", "2021-01-01T23:38:00"),
    (G17_1S, "goes-r-flx1s", "GOES-17", False, "A4.9", "A4.9", "2020-10-16T00:00:19"),
]
IDS = [r[0].rsplit("/", 1)[-1][:34] for r in TABLE]


def modified_copy(src, tmp_path, values: dict[str, dict], name=None, attrs: dict | None = None):
    """Copy a real netCDF file and overwrite some values ({var: {index: value}}) and attributes."""
    import h5py

    dst = tmp_path / (name or src.rsplit("/", 1)[-1])
    shutil.copy(src, dst)
    # h5py, not netCDF4: netCDF-C refuses to open some of these h5netcdf-written files for update
    with h5py.File(dst, "r+") as f:
        for var, changes in values.items():
            data = f[var][:]
            for idx, value in changes.items():
                data[idx] = value
            f[var][:] = data
    if attrs:
        with netCDF4.Dataset(dst, "r+") as ds:
            for (var, key), value in attrs.items():
                ds[var].setncattr(key, value)
    return str(dst)


def one_line_error(excinfo, *needles):
    msg = str(excinfo.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg
    return msg


# ------------------------------------------------------------------------------------------ real files
@pytest.mark.parametrize("path, product, satellite, carries", [r[:4] for r in TABLE], ids=IDS)
def test_identify_product(path, product, satellite, carries):
    info = identify_product(path)
    assert (info.product, info.satellite, info.carries_swpc_factor) == (product, satellite, carries)
    assert info.product in PRODUCTS


@pytest.mark.parametrize("path, product, satellite, carries, cls_true, cls_swpc, peak_time", TABLE, ids=IDS)
def test_peak_class_in_both_conventions(path, product, satellite, carries, cls_true, cls_swpc, peak_time):
    true = summarize_file(path)
    swpc = summarize_file(path, scale="swpc")
    assert true["peak_class"] == cls_true
    assert swpc["peak_class"] == cls_swpc
    for row in (true, swpc):
        assert row["peak_time"][:19] == peak_time
        assert row["product"] == product and row["satellite"] == satellite
        assert 0 < row["n_good"] <= row["n_samples"]
    assert (true["scale"], swpc["scale"]) == ("true", "swpc")


@pytest.mark.parametrize("path, product", [r[:2] for r in TABLE], ids=IDS)
def test_swpc_factor_applied_only_to_goes_8_15(path, product):
    true, swpc = read_xrs(path), read_xrs(path, scale="swpc")
    assert np.array_equal(true.time, swpc.time) and np.array_equal(true.good, swpc.good)
    expected_ratio = 1.0 if product.startswith("goes-r") else 0.7
    np.testing.assert_allclose(swpc.flux[true.good] / true.flux[true.good], expected_ratio, rtol=1e-12)


def test_official_swpc_classes_of_the_two_pre_goes16_flares():
    # X8.2 (2017-09-10) and M2.5 (2011-06-07) were measured on SWPC-scaled GOES-15 data
    x = summarize_file(G15_X, scale="swpc")["peak_flux"]
    m = summarize_file(SDAC_M, scale="swpc")["peak_flux"]
    assert abs(x - 8.2e-4) / 8.2e-4 < 0.02
    assert abs(m - 2.5e-5) / 2.5e-5 < 0.03
    # the same X8.2 flare seen by GOES-16 (never scaled) and GOES-15 (science) agree within 10 % in "true" flux
    assert abs(read_xrs(G16_X).peak()[0] / read_xrs(G15_X).peak()[0] - 1) < 0.1


@pytest.mark.parametrize(
    "path, start, end, n",
    [
        (G16_X, "2017-09-10T15:30:00.35", "2017-09-10T17:29:59.38", 7200),
        (G15_X, "2017-09-10T15:29:58.30", "2017-09-10T17:29:58.94", 3517),
        (SDAC_M, "2011-06-06T23:59:59.96", "2011-06-07T23:59:57.63", 42177),
        (G15_IRRAD, "2013-10-28T00:00:01.38", "2013-10-28T00:20:30.18", 601),
        (LEAP, "2015-06-30T23:56:37.2", "2015-06-30T23:59:59.97", 100),
        (G15_AVG, "2019-01-02T00:00", "2019-01-02T00:50", 51),
        (G16_AVG, "2021-01-01T22:20", "2021-01-01T23:59", 100),
        (G17_1S, "2020-10-16T00:00:00.48", "2020-10-16T00:00:50.48", 51),
    ],
    ids=lambda v: v.rsplit("/", 1)[-1][:30] if isinstance(v, str) and "/" in v else None,
)
def test_epochs_first_and_last_times(path, start, end, n):
    s = read_xrs(path)
    assert len(s) == n
    assert abs(s.time[0] - np.datetime64(start, "ns")) <= 20 * MS
    assert abs(s.time[-1] - np.datetime64(end, "ns")) <= 20 * MS
    assert s.time.dtype == np.dtype("datetime64[ns]") and np.all(np.diff(s.time) > np.timedelta64(0))


def test_time_epoch_is_taken_from_the_units_attribute(tmp_path):
    shifted = modified_copy(G17_1S, tmp_path, {}, attrs={("time", "units"): "seconds since 2000-01-01 12:00:10"})
    assert np.all(read_xrs(shifted).time - read_xrs(G17_1S).time == 10 * S)


def test_leap_second_file_and_unsorted_duplicate_times(tmp_path):
    s = read_xrs(LEAP)
    assert len(s) == 100 and s.good.all()
    with netCDF4.Dataset(LEAP) as ds:
        t, flux = ds["time"][:].copy(), ds["b_flux"][:].copy()
    # times 60..69 repeat 50..59 exactly; 50..59 are flagged spikes; then the whole file is reversed
    t2 = t.copy()
    t2[60:70] = t[50:60]
    flags = np.zeros(100)
    flags[50:60] = 64
    path = tmp_path / "goes_13_shuffled.nc"
    shutil.copy(LEAP, path)
    with netCDF4.Dataset(path, "r+") as ds:
        ds["time"][:] = t2[::-1]
        ds["b_flux"][:] = flux[::-1]
        ds["b_flags"][:] = flags[::-1]
    r = read_xrs(path)
    assert len(r) == 90 and np.all(np.diff(r.time) > np.timedelta64(0))
    at_dup = np.isin(r.time, s.time[50:60])
    assert at_dup.sum() == 10
    # of two samples at one time the good one is kept
    np.testing.assert_array_equal(r.flux[at_dup], flux[60:70])
    assert r.good[at_dup].all()


def test_goes16_peak_is_the_b2_diode_after_the_primary_switch():
    s = read_xrs(G16_X)
    peak, when = s.peak()
    assert peak == pytest.approx(1.2971e-3, rel=1e-4)
    with netCDF4.Dataset(G16_X) as ds:
        ds.set_auto_mask(False)
        names = ("xrsb_flux", "xrsb_flags", "xrsb_primary_chan", "xrsb1_flux", "xrsb1_flags", "xrsb2_flux")
        raw = {k: ds[k][:] for k in names}
    i = int(np.flatnonzero(s.time == when)[0])  # raw file is monotonic: same index
    assert raw["xrsb_primary_chan"][i] == 2
    assert raw["xrsb_flux"][i] == raw["xrsb2_flux"][i] == np.float32(peak)
    # B1 saturates at ~6.4e-4 and is flagged data_quality_error (32); the primary flag stays 0
    assert raw["xrsb1_flux"][i] < 6.5e-4 and raw["xrsb1_flags"][i] == 32 and raw["xrsb_flags"][i] == 0
    assert s.good[i]
    # the switch 1 -> 2 happens at 15:53:24 (the file's xrsb_primary_chan)
    first_b2 = s.time[np.argmax(raw["xrsb_primary_chan"] == 2)]
    assert abs(first_b2 - np.datetime64("2017-09-10T15:53:24")) < S
    # B1's flag 32 is never on the primary channel and never removes a sample
    b1_bad = raw["xrsb1_flags"] == 32
    assert b1_bad.sum() == 1996 and np.all(raw["xrsb_primary_chan"][b1_bad] == 2)
    np.testing.assert_array_equal(s.good, raw["xrsb_flags"] == 0)


# --------------------------------------------------------------------------------------------- flags
FLAG_CASES = [
    # file, flag variable, {row: flag value}, rows expected bad
    (G17_1S, "xrsb_flags", {3: 2, 4: 32, 5: 1024, 6: 65535, 7: 256}, {3, 4, 5, 6, 7}),
    (G13_IRRAD, "b_flags", {2: 64, 3: 256, 4: 512, 5: 257, 6: 65535, 7: 4, 8: 32}, {2, 4, 5, 6, 7, 8}),
    (G15_AVG, "xrsb_flag", {1: 17, 2: 18, 3: 20, 4: 8, 5: 64, 6: 255, 7: 0}, {1, 2, 3, 6}),
    (G16_AVG, "xrsb_flag", {1: 1, 2: 2, 3: 4, 4: 8, 5: 20, 6: 255, 7: 3}, {1, 2, 6, 7}),
]


@pytest.mark.parametrize("path, var, changes, bad", FLAG_CASES, ids=["flx1s", "irrad", "avg1m-g15", "avg1m-g16"])
def test_documented_bad_bits_make_samples_not_good(tmp_path, path, var, changes, bad):
    assert read_xrs(path).good.all()
    s = read_xrs(modified_copy(path, tmp_path, {var: changes}))
    assert set(np.flatnonzero(~s.good)) == bad
    assert np.isfinite(s.flux).all()  # flags do not touch the flux values


def test_fill_and_out_of_range_flux(tmp_path):
    path = modified_copy(G17_1S, tmp_path, {"xrsb_flux": {8: -9999.0, 9: -1e-6, 10: 0.0, 11: 0.5}})
    s = read_xrs(path)
    assert set(np.flatnonzero(~s.good)) == {8, 9, 10, 11}
    assert np.isnan(s.flux[[8, 9, 11]]).all() and s.flux[10] == 0.0
    # NaN in flux_at, never the fill value
    assert np.isnan(s.flux_at(s.time[8], tolerance=np.timedelta64(100, "ms")))
    irr = read_xrs(modified_copy(G13_IRRAD, tmp_path, {"b_flux": {7: -99999.0}}))
    assert np.isnan(irr.flux[7]) and not irr.good[7] and irr.good.sum() == 600


def test_sdac_fits_fill_value(tmp_path):
    from astropy.io import fits

    dst = tmp_path / "go1520120601.fits"
    with fits.open(SDAC_GZ) as hdul:
        hdul[2].data["FLUX"][0][[10, 11], 0] = -99999.0
        hdul.writeto(dst)
    s = read_xrs(dst)
    assert set(np.flatnonzero(~s.good)) == {10, 11} and np.isnan(s.flux[[10, 11]]).all()


@pytest.mark.parametrize("path", [G16_X, G15_X, G15_AVG, G16_AVG], ids=["flx1s", "irrad", "avg1m-g15", "avg1m-g16"])
def test_bad_bit_names_match_the_files_own_flag_meanings(path):
    info = identify_product(path)
    var = goes._VARIABLES[info.product][1]
    with netCDF4.Dataset(path) as ds:
        v = ds[var]
        meanings = dict(zip(zip(v.flag_masks.tolist(), v.flag_values.tolist()), v.flag_meanings.split()))
    for bit, name in BAD_FLAG_BITS[info.product].items():
        assert meanings[(bit, bit)] == name
        assert goes._BAD_MASK[info.product] & bit


# --------------------------------------------------------------------------------------------- merging
def covered(times, ref, radius):
    """Brute force: is there a ref time within ±radius of each time?"""
    return np.array([np.min(np.abs(ref - t)) <= radius for t in times])


def test_merge_goes15_goes16_newest_wins():
    g16, g15 = read_xrs(G16_X), read_xrs(G15_X)
    merged = read_xrs_files([G15_X, G16_X])
    assert set(merged.satellite) == {"GOES-15", "GOES-16"}
    # every GOES-16 sample is kept (it is the newest source)
    np.testing.assert_array_equal(merged.time[merged.satellite == "GOES-16"], g16.time)
    # a GOES-15 sample survives iff no good GOES-16 sample lies within 1.5 GOES-16 spacings
    radius = 1.5 * np.median(np.diff(g16.time).astype(np.int64))
    expect = ~covered(g15.time.astype(np.int64), g16.time[g16.good].astype(np.int64), radius)
    np.testing.assert_array_equal(np.isin(g15.time, merged.time[merged.satellite == "GOES-15"]), expect)
    assert merged.time[0] == g15.time[0] and merged.satellite[0] == "GOES-15"  # GOES-15 starts 2 s earlier
    assert merged.peak() == g16.peak()
    again = read_xrs_files([G16_X, G15_X])
    for field in ("time", "flux", "good", "satellite"):
        np.testing.assert_array_equal(getattr(again, field), getattr(merged, field))


def test_merge_older_satellite_fills_a_bad_stretch_of_the_newer(tmp_path):
    with netCDF4.Dataset(G16_X) as ds:
        raw_t = ds["time"][:]
    since = (np.datetime64("2017-09-10T16:00") - np.datetime64("2000-01-01T12:00")) / S
    until = (np.datetime64("2017-09-10T16:15") - np.datetime64("2000-01-01T12:00")) / S
    rows = np.flatnonzero((raw_t >= since) & (raw_t < until))
    g16_path = modified_copy(G16_X, tmp_path, {"xrsb_flags": dict.fromkeys(rows.tolist(), 2)})
    folder = tmp_path / "goes"
    folder.mkdir()
    shutil.copy(G15_X, folder / "sci_gxrs-l2-irrad_g15_d20170910_v0-0-0.nc")
    merged = read_xrs_files([g16_path, folder])
    assert len(merged.files) == 2
    flux, when = merged.peak()
    assert flux == pytest.approx(1.1909e-3, rel=1e-4)
    assert abs(when - np.datetime64("2017-09-10T16:06:27.6")) < 100 * MS
    assert merged.satellite[merged.time == when][0] == "GOES-15"
    inside = (merged.time > np.datetime64("2017-09-10T16:00:02")) & (merged.time < np.datetime64("2017-09-10T16:14:58"))
    assert set(merged.satellite[inside & merged.good]) == {"GOES-15"}
    g16_inside = inside & (merged.satellite == "GOES-16")
    assert g16_inside.sum() > 890 and not merged.good[g16_inside].any()  # the bad GOES-16 samples stay, not good
    # SWPC convention: GOES-15 science flux × 0.7, GOES-16 unchanged
    swpc = read_xrs_files([g16_path, folder], scale="swpc")
    np.testing.assert_array_equal(swpc.time, merged.time)
    np.testing.assert_array_equal(swpc.satellite, merged.satellite)
    g15_rows = merged.satellite == "GOES-15"
    np.testing.assert_allclose(swpc.flux[g15_rows], 0.7 * merged.flux[g15_rows], rtol=1e-12)
    np.testing.assert_array_equal(swpc.flux[~g15_rows], merged.flux[~g15_rows])
    # so the GOES-16 decay outside the bad stretch (1.09e-3) now outranks the scaled GOES-15 peak (8.3e-4)
    assert swpc.peak()[0] == pytest.approx(1.0858e-3, rel=1e-4)


# --------------------------------------------------------------------------------------- flux_at / peak
def test_flux_at_tolerance():
    s = read_xrs(G16_AVG)  # 1-min averages, all good
    t, f = s.time, s.flux
    np.testing.assert_array_equal(s.flux_at(t), f)
    tol = np.timedelta64(30, "s")
    np.testing.assert_array_equal(s.flux_at(t[:-1] + 29 * S, tolerance=tol), f[:-1])
    np.testing.assert_array_equal(s.flux_at(t[:-1] + 31 * S, tolerance=tol), f[1:])
    np.testing.assert_array_equal(s.flux_at(t[:-1] + 30 * S, tolerance=tol), f[:-1])  # tie -> earlier
    assert np.isnan(s.flux_at(t[:-1] + 29 * S, tolerance=np.timedelta64(10, "s"))).all()
    assert np.isnan(s.flux_at([t[0] - 61 * S, t[-1] + 61 * S, np.datetime64("NaT")])).all()
    assert s.flux_at(t[0] - 60 * S) == f[0]
    assert s.flux_at(str(t[3])[:19], tolerance=5.0) == f[3]  # ISO string and seconds
    # bad samples are skipped: the nearest good one within tolerance is used instead
    good = s.good.copy()
    good[10] = False
    masked = XRSSeries(time=t, flux=f, good=good, satellite=s.satellite, scale="true")
    assert masked.flux_at(t[10] - 20 * S, tolerance=60 * S) == f[9]
    assert masked.flux_at(t[10] + 20 * S, tolerance=60 * S) == f[11]
    assert np.isnan(masked.flux_at(t[10], tolerance=30 * S))


def brute_peak_after(s, queries, window):
    gt, gf = s.time[s.good], s.flux[s.good]
    flux = np.full(len(queries), np.nan)
    when = np.full(len(queries), np.datetime64("NaT"), dtype="datetime64[ns]")
    for k, q in enumerate(queries):
        sel = (gt > q) & (gt <= q + window)
        if sel.any():
            j = np.argmax(gf[sel])
            flux[k], when[k] = gf[sel][j], gt[sel][j]
    return flux, when


@pytest.mark.parametrize("window_s", [30, 600, 86400])
def test_peak_after_matches_brute_force(window_s):
    s = read_xrs(G16_X)  # 7200 1-s samples, 146 flagged
    rng = np.random.default_rng(window_s)
    queries = np.concatenate([
        s.time[::7],  # exactly on samples: (t, t + w] excludes t itself
        s.time[rng.integers(0, len(s), 300)] - np.timedelta64(window_s, "s"),  # window ends exactly on a sample
        s.time[0] + rng.integers(-4000, 7600, 300) * S + rng.integers(0, 1000, 300) * MS,  # random, some outside
    ])
    window = np.timedelta64(window_s, "s")
    flux, when = s.peak_after(queries, window=window)
    bflux, bwhen = brute_peak_after(s, queries, window)
    np.testing.assert_array_equal(flux, bflux)
    np.testing.assert_array_equal(when, bwhen)
    assert np.isnan(flux).any() and np.isfinite(flux).any()


def test_peak_after_ties_go_to_the_earliest_sample():
    s = read_xrs(G16_X)
    coarse = XRSSeries(time=s.time, flux=np.round(s.flux, 7), good=s.good, satellite=s.satellite, scale="true")
    queries = s.time[::13]
    for window in (np.timedelta64(45, "s"), np.timedelta64(20, "m")):
        flux, when = coarse.peak_after(queries, window=window)
        bflux, bwhen = brute_peak_after(coarse, queries, window)
        np.testing.assert_array_equal(flux, bflux)
        np.testing.assert_array_equal(when, bwhen)


def test_peak_after_on_a_month_of_1s_data():
    # a month of 1-s samples and 1e5 queries: an O(N*M) implementation would not finish; speed itself is measured
    # in benchmarks, not asserted here
    rng = np.random.default_rng(1)
    n = 30 * 86400
    t = np.datetime64("2024-05-01", "ns") + np.arange(n) * S
    s = XRSSeries(time=t, flux=10 ** rng.normal(-6, 0.4, n), good=rng.random(n) > 0.02,
                  satellite=np.full(n, "GOES-16"), scale="true")
    queries = t[0] + rng.integers(-86400, n, 100_000) * S + 300 * np.timedelta64(1, "ms")
    flux, when = s.peak_after(queries)
    check = rng.choice(len(queries), 30, replace=False)
    bflux, bwhen = brute_peak_after(s, queries[check], np.timedelta64(24, "h"))
    np.testing.assert_array_equal(flux[check], bflux)
    np.testing.assert_array_equal(when[check], bwhen)


def test_peak_and_empty_series():
    empty = XRSSeries(time=np.array([], "datetime64[ns]"), flux=[], good=[], satellite=[], scale="true")
    f, t = empty.peak()
    assert np.isnan(f) and np.isnat(t)
    assert np.isnan(empty.flux_at([np.datetime64("2020-01-01")])).all()
    pf, pt = empty.peak_after([np.datetime64("2020-01-01")])
    assert np.isnan(pf).all() and np.isnat(pt).all()


# ---------------------------------------------------------------------------------------------- errors
def test_errors_are_one_line_and_name_file_and_field(tmp_path):
    with pytest.raises(FlaresynthError) as e:
        read_xrs(tmp_path / "nope.nc")
    one_line_error(e, "nope.nc")

    other = tmp_path / "other.nc"
    with netCDF4.Dataset(other, "w") as ds:
        ds.createDimension("time", 3)
        ds.createVariable("time", "f8", ("time",))[:] = [0, 1, 2]
        ds.createVariable("temperature", "f4", ("time",))[:] = [1, 2, 3]
    with pytest.raises(FlaresynthError) as e:
        read_xrs(other)
    one_line_error(e, "other.nc", "xrsb_flux")

    no_time = tmp_path / "no_time.nc"
    with netCDF4.Dataset(no_time, "w") as ds:
        ds.createDimension("t", 3)
        ds.createVariable("xrsb_flux", "f4", ("t",))[:] = [1e-6, 1e-6, 1e-6]
        ds.createVariable("xrsb_flags", "u2", ("t",))[:] = [0, 0, 0]
    with pytest.raises(FlaresynthError) as e:
        read_xrs(no_time)
    one_line_error(e, "no_time.nc", "'time'")

    bad_units = modified_copy(G17_1S, tmp_path, {}, name="bad_units.nc", attrs={("time", "units"): "fortnights"})
    with pytest.raises(FlaresynthError) as e:
        read_xrs(bad_units)
    one_line_error(e, "bad_units.nc", "units")

    with pytest.raises(FlaresynthError) as e:
        read_xrs(G17_1S, scale="scaled")
    one_line_error(e, "scale", "swpc")

    all_bad = modified_copy(G17_1S, tmp_path, {"xrsb_flags": {Ellipsis: 2}}, name="all_bad.nc")
    assert read_xrs(all_bad).good.sum() == 0
    with pytest.raises(FlaresynthError) as e:
        summarize_file(all_bad)
    one_line_error(e, "all_bad.nc", "xrsb_flags", "no good sample")

    from astropy.io import fits

    aia = tmp_path / "aia.fits"
    fits.PrimaryHDU(np.zeros((4, 4)), header=fits.Header([("TELESCOP", "SDO/AIA")])).writeto(aia)
    with pytest.raises(FlaresynthError) as e:
        read_xrs(aia)
    one_line_error(e, "aia.fits", "TELESCOP")

    text = tmp_path / "notes.nc"
    text.write_text("not data\n")
    with pytest.raises(FlaresynthError) as e:
        identify_product(text)
    one_line_error(e, "notes.nc", "netCDF")

    (tmp_path / "empty").mkdir()
    with pytest.raises(FlaresynthError) as e:
        read_xrs_files([tmp_path / "empty"])
    one_line_error(e, "empty")


# ------------------------------------------------------------------------------------------------- CLI
def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "flaresynth", "goes", *args], capture_output=True, text=True,
                          timeout=120)


def test_cli_json_both_scales_and_bad_file(tmp_path):
    r = run_cli(G15_X, SDAC_M, "--scale", "swpc", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["peak_class"] for row in rows] == ["X8.3", "M2.6"]
    assert rows[0]["satellite"] == "GOES-15" and rows[1]["product"] == "sdac-fits"
    assert rows[0]["peak_time"].startswith("2017-09-10T16:06:27") and rows[0]["scale"] == "swpc"
    r = run_cli(G16_X, "--json")
    assert json.loads(r.stdout)[0]["peak_class"] == "X13.0"

    bad = tmp_path / "broken_goes.nc"
    bad.write_bytes(b"\x00\x01garbage")
    r = run_cli(G16_X, str(bad))
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "broken_goes.nc" in lines[0] and "Traceback" not in r.stderr
