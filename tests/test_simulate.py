"""The simulated Sun: files in the real archive formats, read back with plain zarr / xarray / json.

The formats are checked against the real GOES-16 avg1m file sunpy ships (flag encoding, time epoch) and
against SDOMLv2's layout (Galvez et al. 2019). The physics: flare counts follow the requested power law, a
flare behind the limb raises the XRS flux but not the disk's 171 Å emission, the 171 Å peak lags the X-ray
peak. The independent referee (:mod:`flaresynth.metrics.referee`) is fitted on one part of a simulated Sun
and scored on another, after the model's preprocessing round trip.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
import zarr
from sunpy.data.test import get_test_filepath

from flaresynth.errors import FlaresynthError
from flaresynth.labels import GOES_CLASSES, flux_to_class, flux_to_letter_index
from flaresynth.metrics.referee import fit_referee, measure
from flaresynth.sources.simulate import simulate
from flaresynth.sources.simulate.sun import (
    ALPHA,
    CONFOUNDERS,
    F_MAX,
    F_MIN,
    Flare,
    SimulatedSun,
    flare_offset,
    xray_seen_fraction,
)
from toy import cli_here

START, DAYS, CADENCE, SEED = "2024-12-29", 4, 60, 7  # three days in 2024, one in 2025
EPOCH = np.datetime64("2000-01-01T12:00:00", "ns")
LO, HI = 5.0, 3500.0  # the 171 Å clip range of the model transform (DN/s)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "sun"
    summary = simulate(out, days=DAYS, cadence_min=CADENCE, start=START, seed=SEED, progress=False)
    return out, summary


def _t_obs(values) -> np.ndarray:
    return np.array([np.datetime64(v.rstrip("Z"), "ns") for v in values])


def _goes_series(folder):
    """(time ns, xrsb W/m², good) of every file in ``folder``, read with xarray, flags honoured."""
    ts, fs, gs = [], [], []
    for path in sorted(folder.glob("*.nc")):
        with xr.open_dataset(path) as ds:
            ts.append(ds["time"].values.astype("datetime64[ns]"))
            fs.append(ds["xrsb_flux"].values.astype(np.float64))  # fill -> NaN by the decoder
            gs.append((ds["xrsb_flag"].values.astype(np.int64) & 3) == 0)
    t, f, g = np.concatenate(ts), np.concatenate(fs), np.concatenate(gs)
    return t, f, g & np.isfinite(f)


# ------------------------------------------------------------------------------------------ SDOMLv2 store
def test_sdoml_layout_years_headers_and_order(sim):
    out, summary = sim
    root = zarr.open_group(str(out / "sdomlv2.zarr"), mode="r", zarr_format=2)
    assert sorted(root.group_keys()) == ["2024", "2025"]
    n_total = 0
    for year in ("2024", "2025"):
        arr = root[year]["171A"]
        n = arr.shape[0]
        n_total += n
        assert arr.dtype == np.float32 and arr.shape[1:] == (512, 512) and arr.chunks == (15, 512, 512)
        meta = json.loads((out / "sdomlv2.zarr" / year / "171A" / ".zarray").read_text())
        assert meta["zarr_format"] == 2 and meta["compressor"]["cname"] == "zstd"
        attrs = dict(arr.attrs)
        for key in ("T_OBS", "DATE-OBS", "EXPTIME", "WAVELNTH", "QUALITY", "DEG_COR", "PIXLUNIT", "RSUN_OBS",
                    "CDELT1", "CDELT2", "CRPIX1", "CRPIX2", "CTYPE1", "CUNIT1", "INSTRUME", "TELESCOP",
                    "NAXIS1"):
            assert len(attrs[key]) == n, key
        t = _t_obs(attrs["T_OBS"])
        assert all(str(x).startswith(year) for x in t.astype("datetime64[Y]"))  # right year group
        # AIA's T_OBS format, 2 decimals, and DATE-OBS half an exposure earlier
        assert all(len(s) == 23 and s.endswith("Z") and s[19] == "." for s in attrs["T_OBS"])
        half_exposure = (np.array(attrs["EXPTIME"]) * 500).astype("timedelta64[ms]")
        assert np.all(np.abs(t - _t_obs(attrs["DATE-OBS"]) - half_exposure) <= np.timedelta64(10, "ms"))
        assert set(attrs["EXPTIME"]) <= {2.0, 1.0, 0.5, 0.25}
        assert set(attrs["PIXLUNIT"]) == {"DN/s"} and set(attrs["WAVELNTH"]) == {171}
        assert set(attrs["INSTRUME"]) == {"AIA_3"} and set(attrs["CTYPE1"]) == {"HPLN-TAN"}
        rsun = np.array(attrs["RSUN_OBS"])
        assert np.all((rsun > 940) & (rsun < 980))
        np.testing.assert_allclose(attrs["CDELT1"], 4.8 * rsun / 976.0, rtol=1e-5)  # SDOMLv2 512-px rule
        assert set(attrs["CRPIX1"]) == {256.5} and set(attrs["NAXIS1"]) == {512}
        assert all(0.8 < d < 0.95 for d in attrs["DEG_COR"])
        # time-ordered within each day ...
        days = t.astype("datetime64[D]")
        for d in np.unique(days):
            assert np.all(np.diff(t[days == d]) > np.timedelta64(0))
        if year == "2024":  # ... but the days are not (seed chosen so that they are shuffled)
            assert not np.all(np.diff(t) > np.timedelta64(0))
        assert len(np.unique(t)) == n
        frames = arr[:3]  # real images: disk brighter than the corners
        assert np.all(frames[:, 256, 256] > 20) and np.all(frames[:, 2, 2] < 20)
    # some frames are missing (the "gaps" confounder), as in the real archive
    assert n_total == summary["n_frames"] <= DAYS * 24 * 60 // CADENCE
    assert summary["frames_per_year"]["2024"] <= 72 and summary["frames_per_year"]["2025"] <= 24


def test_frames_follow_their_own_t_obs(sim):
    """Index alignment: frame i rendered again at T_OBS[i] reproduces the stored pixels exactly."""
    from flaresynth.sources.simulate.archives import _quantise
    from flaresynth.sources.simulate.sun import deg_cor

    out, _ = sim
    arr = zarr.open_group(str(out / "sdomlv2.zarr"), mode="r", zarr_format=2)["2024"]["171A"]
    t = _t_obs(arr.attrs["T_OBS"])
    sun = SimulatedSun(START, DAYS, SEED)
    for i in (0, 17, arr.shape[0] - 1):
        days = float((t[i] - np.datetime64(START, "ns")) / np.timedelta64(1, "ns")) / 86400e9
        again = _quantise(sun.render(days, deg_cor=float(deg_cor(t[i:i + 1])[0])))
        np.testing.assert_array_equal(arr[i], again)


# ----------------------------------------------------------------------------------------------- GOES
def test_goes_files_match_the_real_product_layout(sim):
    out, _ = sim
    files = sorted((out / "goes").glob("*.nc"))
    day0 = np.datetime64(START, "D")
    assert [f.name for f in files] == [
        f"sci_xrsf-l2-avg1m_g16_d{str(day0 + k).replace('-', '')}_v2-2-0.nc" for k in range(DAYS)
    ]
    real_file = get_test_filepath("sci_xrsf-l2-avg1m_g16_d20210101_truncated.nc")
    real = xr.open_dataset(real_file, decode_times=False)
    for k, path in enumerate(files):
        raw = xr.open_dataset(path, decode_times=False, mask_and_scale=False)
        assert raw.sizes["time"] == 1440 and raw["time"].dtype == np.float64
        assert raw["time"].attrs["units"] == real["time"].attrs["units"]
        # decode the epoch by hand: 2000-01-01 12:00 + seconds = the requested day, minute by minute
        t = EPOCH + (raw["time"].values * 1e9).astype("timedelta64[ns]")
        assert t[0] == np.datetime64(day0 + k, "ns")
        assert np.all(np.diff(t) == np.timedelta64(60, "s"))
        for name in ("xrsa_flux", "xrsb_flux"):
            assert raw[name].dtype == np.float32 and raw[name].attrs["units"] == "W/m2"
            assert raw[name].attrs["_FillValue"] == np.float32(-9999.0)
        for name in ("xrsa_flag", "xrsb_flag"):
            assert raw[name].dtype == np.uint8
            for attr in ("flag_values", "flag_masks", "flag_meanings"):
                np.testing.assert_array_equal(raw[name].attrs[attr], real[name].attrs[attr])
        assert raw["xrsb_num"].dtype == np.uint8
        assert "XRS" in raw.attrs["summary"] and raw.attrs["platform"] == "g16"
        assert raw.attrs["id"] == path.name
        raw.close()
    real.close()


def test_goes_has_flagged_bad_minutes_that_readers_must_drop(sim):
    out, _ = sim
    flags, flux = [], []
    for path in sorted((out / "goes").glob("*.nc")):
        with xr.open_dataset(path) as ds:
            flags.append(ds["xrsb_flag"].values.astype(int))
            flux.append(ds["xrsb_flux"].values)
    flags, flux = np.concatenate(flags), np.concatenate(flux)
    bad = (flags & 3) != 0
    assert 0 < bad.sum() < 0.02 * flags.size
    assert set(np.unique(flags[bad])) == {2}  # bad_data
    good = flux[~bad]
    assert np.all(np.isfinite(good)) and good.min() > 1e-9 and good.max() < 1e-2
    # each bad minute is either fill (NaN once decoded) or a spike far above its good neighbours
    for i in np.flatnonzero(bad):
        if np.isnan(flux[i]):
            continue
        neighbours = flux[max(i - 3, 0):i + 4][~bad[max(i - 3, 0):i + 4]]
        assert flux[i] > 3 * np.median(neighbours)


# ------------------------------------------------------------------------------------------------ HEK
def test_hek_events_agree_with_goes(sim):
    out, summary = sim
    doc = json.loads((out / "hek" / "flares.json").read_text())
    assert set(doc) == {"result", "overmax"} and doc["overmax"] is False
    events = doc["result"]
    assert len(events) == summary["n_hek_events"] > 5
    assert len({e["kb_archivid"] for e in events}) == len(events)
    t, f, good = _goes_series(out / "goes")
    for e in events:
        assert e["event_type"] == "FL" and e["frm_name"] == "SWPC" and e["obs_observatory"] == "GOES"
        assert e["obs_instrument"] == "XRS" and e["event_coordsys"] == "UTC-HPC-TOPO"
        assert isinstance(e["ar_noaanum"], int) and np.hypot(e["hpc_x"], e["hpc_y"]) < 1000
        assert (e["event_coord1"], e["event_coord2"]) == (e["hpc_x"], e["hpc_y"])
        t0, tp, t1 = (np.datetime64(e[f"event_{k}time"], "ns") for k in ("start", "peak", "end"))
        assert len(e["event_peaktime"]) == 19 and t0 < tp < t1
        inside = (t >= t0) & (t <= t1) & good
        j = np.flatnonzero(inside)[np.argmax(f[inside])]
        assert abs(t[j] - tp) <= np.timedelta64(2, "m")
        assert e["fl_goescls"] == flux_to_class(float(f[j]))  # the peak flux including background
    letters = [e["fl_goescls"][0] for e in events]
    assert summary["n_flares"] == {c: letters.count(c) for c in GOES_CLASSES}


# ----------------------------------------------------------------------------------------- determinism
def _file_bytes(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    kw = dict(days=1, cadence_min=180, start="2024-06-01", progress=False)
    a, b, c = (tmp_path / n for n in "abc")
    simulate(a, seed=5, workers=1, **kw)
    simulate(b, seed=5, workers=2, **kw)  # two rendering processes: the same bytes
    simulate(c, seed=6, **kw)
    files_a, files_b = _file_bytes(a), _file_bytes(b)
    assert files_a.keys() == files_b.keys()
    for name in files_a:
        assert files_a[name] == files_b[name], name

    def arrays(p):
        arr = zarr.open_group(str(p / "sdomlv2.zarr"), mode="r", zarr_format=2)["2024"]["171A"]
        return arr[:], dict(arr.attrs)

    (xa, ha), (xb, hb), (xc, _) = arrays(a), arrays(b), arrays(c)
    np.testing.assert_array_equal(xa, xb)
    assert ha == hb
    assert not np.array_equal(xa, xc)
    name = "sci_xrsf-l2-avg1m_g16_d20240601_v2-2-0.nc"
    with xr.open_dataset(a / "goes" / name) as ga, xr.open_dataset(b / "goes" / name) as gb, \
            xr.open_dataset(c / "goes" / name) as gc:
        xr.testing.assert_identical(ga, gb)
        assert not np.array_equal(ga["xrsb_flux"].values, gc["xrsb_flux"].values, equal_nan=True)
    assert (a / "hek" / "flares.json").read_bytes() == (b / "hek" / "flares.json").read_bytes()
    chunk = "sdomlv2.zarr/2024/171A/0.0.0"
    assert (a / chunk).read_bytes() == (b / chunk).read_bytes()


def test_bad_arguments_are_one_line_errors(tmp_path, monkeypatch):
    import shutil

    with pytest.raises(FlaresynthError, match="start"):
        simulate(tmp_path / "x", days=1, start="May 2024")
    with pytest.raises(FlaresynthError, match="days"):
        simulate(tmp_path / "x", days=0)
    with pytest.raises(FlaresynthError, match="first light"):
        simulate(tmp_path / "x", days=1, start="2009-06-01")
    with pytest.raises(FlaresynthError, match="2040"):
        simulate(tmp_path / "x", days=10, start="2040-12-25")
    with pytest.raises(FlaresynthError, match="divide a day"):
        simulate(tmp_path / "x", days=1, cadence_min=7)
    with pytest.raises(FlaresynthError, match="cycle-phase"):
        simulate(tmp_path / "x", days=1, cycle_phase=1.5)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=10_000_000))
    with pytest.raises(FlaresynthError, match="GB free") as err:
        simulate(tmp_path / "x", days=30, cadence_min=12)
    assert "\n" not in str(err.value)
    monkeypatch.undo()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(FlaresynthError, match="not empty"):
        simulate(tmp_path / "full", days=1, cadence_min=720)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "x").exists()


# -------------------------------------------------------------------------------------- estimate_flux
def _round_trip(frames: np.ndarray, size: int) -> np.ndarray:
    """The model's preprocessing and its inverse, in numpy: block mean, clip, log10 to [-1, 1], and back."""
    n, h, _ = frames.shape
    f = h // size
    small = frames.astype(np.float64).reshape(n, size, f, size, f).mean(axis=(2, 4))
    lo, hi = np.log10(LO), np.log10(HI)
    x = 2 * (np.log10(np.clip(small, LO, HI)) - lo) / (hi - lo) - 1
    x = x.astype(np.float32)  # the model space is float32
    return (10 ** (lo + (x.astype(np.float64) + 1) / 2 * (hi - lo))).astype(np.float32)


@pytest.fixture(scope="module")
def referee_set(tmp_path_factory):
    """A 16-day simulated Sun near maximum (all confounders), read back from its files: (64 px round trip of
    each frame, its instantaneous GOES flux, its time)."""
    out = tmp_path_factory.mktemp("ref") / "sun"
    simulate(out, days=16, cadence_min=30, start="2014-02-01", seed=11, progress=False)
    arr = zarr.open_group(str(out / "sdomlv2.zarr"), mode="r", zarr_format=2)["2014"]["171A"]
    t = _t_obs(arr.attrs["T_OBS"])
    gt, gf, good = _goes_series(out / "goes")
    gt, gf = gt[good], gf[good]
    pos = np.clip(np.searchsorted(gt, t), 1, gt.size - 1)
    nearest = np.where(np.abs(gt[pos - 1] - t) <= np.abs(gt[pos] - t), pos - 1, pos)
    ok = np.abs(gt[nearest] - t) <= np.timedelta64(60, "s")
    flux = np.where(ok, gf[nearest], np.nan)
    x64 = np.concatenate([_round_trip(arr[i:i + 15], 64) for i in range(0, arr.shape[0], 15)])
    return x64, flux, t


def _macro_f1(y, p):
    scores = []
    for c in np.unique(y):
        tp = np.sum((p == c) & (y == c))
        prec, rec = tp / max(np.sum(p == c), 1), tp / max(np.sum(y == c), 1)
        scores.append(0 if tp == 0 else 2 * prec * rec / (prec + rec))
    return float(np.mean(scores))


def test_referee_fitted_on_some_days_reads_the_class_of_others(referee_set):
    x64, flux, t = referee_set
    keep = np.isfinite(flux)
    # fit on even days, score on odd days (whole days apart, as the dataset's splits are)
    first = (t.astype("datetime64[D]").astype(np.int64) % 2) == 0
    referee = fit_referee(x64[keep & first], flux[keep & first])
    test = keep & ~first
    est = referee.estimate_flux(x64[test])
    err = np.abs(np.log10(est) - np.log10(flux[test]))
    f1 = _macro_f1(flux_to_letter_index(flux[test]), flux_to_letter_index(est))
    print(f"referee on held-out days: macro-F1 {f1:.3f}, median error {np.median(err):.2f} dex")
    assert np.median(err) < 0.3 and f1 > 0.3
    # a constant guess (the training median) is much worse: the referee reads the images
    guess = np.median(np.log10(flux[keep & first]))
    assert np.median(err) < 0.7 * np.median(np.abs(guess - np.log10(flux[test])))


def test_referee_is_independent_of_the_simulator_and_checks_shapes(referee_set):
    import flaresynth.metrics.referee as referee_module

    source = open(referee_module.__file__).read()
    assert "flaresynth.sources" not in source and "simulate" not in source.replace("simulated", "")
    x64, flux, _ = referee_set
    assert measure(x64[0]).shape == (1, 6) and measure(x64[:5]).shape == (5, 6)
    with pytest.raises(FlaresynthError, match="shape"):
        measure(np.zeros(10))
    with pytest.raises(FlaresynthError, match="at least 10"):
        fit_referee(x64[:3], flux[:3])


# --------------------------------------------------------------------------------------------- physics
def test_flare_counts_follow_the_power_law_and_the_cycle():
    """Peak fluxes drawn over a long span follow dN/dF ∝ F^-ALPHA within their sampling error; a year near
    maximum has many more M flares than one at minimum."""
    busy = SimulatedSun("2014-01-01", 365, seed=3)
    peaks = np.array([fl.peak for fl in busy.flares])
    n = peaks.size
    assert n > 1000
    # maximum-likelihood exponent of a power law above F_MIN (F_MAX is 3000x higher: its bias is negligible)
    alpha = 1.0 + n / np.log(peaks / F_MIN).sum()
    assert abs(alpha - ALPHA) < 4 * (alpha - 1) / np.sqrt(n), alpha
    # the share of each class above C1 follows F^(1-ALPHA): binomial counts within 4 sigma
    n_c = int((peaks >= 1e-6).sum())
    for lo in (1e-5, 1e-4):
        p = ((lo ** (1 - ALPHA) - F_MAX ** (1 - ALPHA)) / (1e-6 ** (1 - ALPHA) - F_MAX ** (1 - ALPHA)))
        k = int((peaks >= lo).sum())
        assert abs(k - p * n_c) < 4 * np.sqrt(n_c * p * (1 - p)) + 1, (lo, k, p * n_c)
    quiet = SimulatedSun("2019-01-01", 365, seed=3)
    m_busy = sum(fl.peak >= 1e-5 for fl in busy.flares)
    m_quiet = sum(fl.peak >= 1e-5 for fl in quiet.flares)
    assert m_busy > 5 * max(m_quiet, 1), (m_busy, m_quiet)
    # Spörer's law: regions emerge at higher latitudes early in a cycle than late
    rising = SimulatedSun("2010-06-01", 120, seed=3, cycle_phase=None)
    assert np.median([abs(ar.lat) for ar in rising.regions]) > np.median([abs(ar.lat) for ar in quiet.regions]) \
        or len(quiet.regions) < 3


def _region_at(sun, mu_lo, mu_hi):
    """(region index, time) where a region's centre has mu_lo < μ < mu_hi and the region is strong."""
    for i in range(len(sun.regions)):
        for t in np.arange(0.5, sun.days - 0.5, 0.05):
            if mu_lo < sun.centre_mu(i, t) < mu_hi and sun.regions[i].strength(t) > 0.2:
                return i, float(t)
    raise AssertionError("no region in that position")


def _flare(sun, i, t, lag=0.0):
    rng = np.random.default_rng(0)
    mu = float(sun.centre_mu(i, t))
    return Flare(i, t, 3e-5, 3 / 1440, 12 / 1440, flare_offset(rng, sun.regions[i]) * 0.2, 0.3, 0.2,
                 float(xray_seen_fraction(mu)), euv_lag=lag)


def test_behind_limb_flare_raises_xrs_but_not_the_disk_kernel():
    # without the filter-mesh diffraction, which would spread any bright source's light over the disk
    sun = SimulatedSun("2014-03-01", 40, seed=2, confounders=[c for c in CONFOUNDERS if c != "mesh"])
    disk = np.hypot(sun._px, sun._py) < 0.97
    i, t = _region_at(sun, -0.2, -0.1)  # ~6-12° behind the limb
    fl = _flare(sun, i, t)
    base = sun.render(t, flares=False, instrument=False)
    with_flare = sun.render(t, flares=False, extra_flares=[fl], instrument=False)
    # XRS: GOES sees a good part of it ...
    own = sun.flares
    try:
        sun.flares = [fl]
        b_with = sun.xrs(np.array([t]))[0][0]
        sun.flares = []
        b_without = sun.xrs(np.array([t]))[0][0]
    finally:
        sun.flares = own
    assert b_with - b_without > 0.2 * fl.peak
    # ... the disk shows nothing of it, the arcade's top shows above the limb
    assert np.abs(with_flare - base)[disk].max() < 1e-3
    assert (with_flare - base)[~disk].max() > 100
    # the same flare on the front of the disk brightens the disk
    j, t2 = _region_at(sun, 0.5, 0.9)
    front = _flare(sun, j, t2)
    diff = sun.render(t2, flares=False, extra_flares=[front], instrument=False) - sun.render(
        t2, flares=False, instrument=False)
    assert diff[disk].max() > 1000


def test_171_peak_lags_the_xray_peak():
    sun = SimulatedSun("2014-03-01", 40, seed=2)
    j, t = _region_at(sun, 0.5, 0.9)
    fl = _flare(sun, j, t, lag=12 / 1440)
    base = sun.render(t, flares=False, instrument=False)
    minutes = np.arange(-6, 40, 2)
    brightness = [float((sun.render(t + m / 1440, flares=False, extra_flares=[fl], instrument=False) - base).sum())
                  for m in minutes]
    xray = fl.flux(t + minutes / 1440)
    assert minutes[int(np.argmax(xray))] == 0
    assert 8 <= minutes[int(np.argmax(brightness))] <= 16


def test_hot_channels_peak_before_171():
    """A flare heated to 15 MK cools through the channels: 131 Å (Fe XXI, 11 MK) first, 94 Å (Fe XVIII, 7 MK)
    next, 171 Å (Fe IX, 0.8 MK) last, as AIA observes; each channel measured on the kernel alone."""
    sun = SimulatedSun("2014-03-01", 40, seed=2)
    j, t = _region_at(sun, 0.5, 0.9)
    fl = _flare(sun, j, t, lag=16 / 1440)
    fl.t_max = 1.5e7
    minutes = np.arange(-6, 40, 1)
    peak = {}
    for channel in ("94A", "131A", "171A"):
        base = sun.observe_channel(t, channel, flares=False, instrument=False)[0]
        brightness = [float((sun.observe_channel(t + m / 1440, channel, flares=False, extra_flares=[fl],
                                                 instrument=False)[0] - base).sum()) for m in minutes]
        assert max(brightness) > 1e4, channel  # the flare shows in every channel
        peak[channel] = int(minutes[int(np.argmax(brightness))])
    assert peak["131A"] < peak["94A"] < peak["171A"], peak
    assert peak["131A"] <= 2 and 12 <= peak["171A"] <= 20, peak


def test_channels_have_their_own_frame_lists_and_171_is_unchanged(tmp_path):
    """SDOMLv2's layout in several channels: one array per channel in the year group, each with its own T_OBS,
    exposure and DEG_COR; the multi-hour gaps are shared, isolated losses are not (a frame can be missing in one
    channel only); and asking for more channels leaves the 171 Å bytes as they were."""
    from flaresynth.sources.simulate.archives import _channel_plan, _frame_plan
    from flaresynth.sources.simulate.channels import exposure_steps

    kw = dict(days=1, cadence_min=180, start="2024-06-01", seed=3, progress=False, workers=1)
    simulate(tmp_path / "one", **kw)
    simulate(tmp_path / "three", channels="94A,171A,335A", **kw)
    one = _file_bytes(tmp_path / "one" / "sdomlv2.zarr")
    three = _file_bytes(tmp_path / "three" / "sdomlv2.zarr")
    assert {k: v for k, v in three.items() if "/171A/" in k} == {k: v for k, v in one.items() if "/171A/" in k}
    group = zarr.open_group(str(tmp_path / "three" / "sdomlv2.zarr"), mode="r", zarr_format=2)["2024"]
    assert sorted(group.array_keys()) == ["171A", "335A", "94A"]
    for channel, wave, exposure in (("94A", 94, 2.9), ("335A", 335, 2.9)):
        attrs = dict(group[channel].attrs)
        assert set(attrs["WAVELNTH"]) == {wave} and set(attrs["EXPTIME"]) <= {exposure, *exposure_steps(channel)}
        assert set(attrs["T_OBS"]).isdisjoint(group["171A"].attrs["T_OBS"])  # taken at other seconds of the slot
        assert all(0.1 < d < 1.0 for d in attrs["DEG_COR"])  # aiapy's table: 335 Å has lost the most
    assert np.mean(group["335A"].attrs["DEG_COR"]) < np.mean(group["94A"].attrs["DEG_COR"])
    disk = np.s_[:, 200:312, 200:312]
    assert 0 < np.median(group["94A"][disk]) < 0.1 * np.median(group["171A"][disk])  # 94 Å is faint on a quiet Sun

    sun = SimulatedSun("2015-03-01", 60, seed=0)
    slots = {}
    for channel in ("171A", "94A", "131A"):
        t_obs = _frame_plan(sun, 60)[0] if channel == "171A" else _channel_plan(sun, 60, channel)[0]
        slots[channel] = set(t_obs.astype("datetime64[h]").tolist())
    n = 60 * 24
    assert all(0.9 * n < len(v) < n for v in slots.values())
    assert slots["94A"] - slots["171A"] and slots["171A"] - slots["94A"]  # missing in one channel only
    gap = set((np.datetime64("2015-03-01T00", "h") + np.arange(n)).tolist()) - slots["171A"]
    shared = gap & (set((np.datetime64("2015-03-01T00", "h") + np.arange(n)).tolist()) - slots["94A"])
    assert len(shared) >= 3  # the multi-hour gaps hit every channel


def test_deg_171_aiapy_uses_aiapys_table_for_171(tmp_path):
    """--deg-171 aiapy: 171 Å's DEG_COR is aiapy's degradation factor from its shipped table (not the model's)."""
    from flaresynth.sources.simulate.channels import aiapy_degradation

    simulate(tmp_path / "a", days=1, cadence_min=360, start="2016-06-01", seed=1, progress=False, deg_171="aiapy",
             confounders=[c for c in CONFOUNDERS if c != "gaps"])
    arr = zarr.open_group(str(tmp_path / "a" / "sdomlv2.zarr"), mode="r", zarr_format=2)["2016"]["171A"]
    expected = aiapy_degradation("171A", _t_obs(arr.attrs["T_OBS"]))
    np.testing.assert_allclose(arr.attrs["DEG_COR"], expected, atol=1e-5)
    assert 0.5 < min(expected) and max(expected) < 0.9  # 2016: well below the model factor's ~0.94


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_simulate_writes_everything(tmp_path):
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "flaresynth", "simulate", "--out", str(out), "--days", "1",
                        "--start", "2024-05-01", "--cadence-min", "60", "--without", "gaps"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    png = (out / "montage.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert (out / "hek" / "flares.json").is_file()
    assert len(list((out / "goes").glob("*.nc"))) == 1
    store = zarr.open_group(str(out / "sdomlv2.zarr"), mode="r", zarr_format=2)
    assert store["2024"]["171A"].shape == (24, 512, 512)  # no gaps: every hour
    assert "gaps" not in json.loads((out / "simulation.json").read_text())["confounders"]
    assert not list(tmp_path.glob(".cli.tmp-*"))  # the temporary sibling is gone
    r2 = cli_here("simulate", "--out", str(out), "--days", "1")
    assert r2.returncode != 0 and "Traceback" not in r2.stderr and str(out) in r2.stderr


def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path):
    for args in (["--days", "0"], ["--start", "2009-01-01"], ["--cadence-min", "7"], ["--without", "sunspots"],
                 ["--channels", "171A,94A,171"], ["--channels", "304A"], ["--channels", "171A,blue"],
                 ["--deg-171", "eve"]):
        r = cli_here("simulate", "--out", str(tmp_path / "x"), *args)  # refused before any work: no subprocess
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode != 0 and len(lines) == 1 and "Traceback" not in r.stderr, (args, r.stderr)
        assert not (tmp_path / "x").exists() and not list(tmp_path.iterdir())
