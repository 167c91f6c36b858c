"""Forecast labels: issue times at a fixed cadence, flares that *start* in the window, exclusions, NOAA detection."""

import numpy as np
import pandas as pd
import pytest

from flaresynth.errors import FlaresynthError
from flaresynth.forecast_labels import detect_flares, issue_table
from flaresynth.sources.goes import XRSSeries

T0 = np.datetime64("2024-05-01T00:00", "ns")


def xrs_with(flares, days=4, background=2e-6):
    """1-min XRS-B: a flat background plus triangular flares (start, peak, end in hours from T0, peak flux)."""
    t = T0 + np.arange(days * 1440) * np.timedelta64(1, "m")
    h = (t - T0) / np.timedelta64(1, "h")
    f = np.full(len(t), background)
    for s, p, e, peak in flares:
        rise = (h >= s) & (h <= p)
        f[rise] += (peak - background) * (h[rise] - s) / (p - s)
        fall = (h > p) & (h <= e)
        f[fall] += (peak - background) * (e - h[fall]) / (e - p)
    return XRSSeries(time=t, flux=f, good=np.ones(len(t), bool), satellite="GOES-16", scale="true")


def flare_table(flares):
    return pd.DataFrame({"event_id": [f"f{i}" for i in range(len(flares))],
                         "start": [T0 + np.timedelta64(int(s * 60), "m") for s, _, _, _ in flares],
                         "peak": [T0 + np.timedelta64(int(p * 60), "m") for _, p, _, _ in flares],
                         "end": [T0 + np.timedelta64(int(e * 60), "m") for _, _, e, _ in flares],
                         "goes_flux": [peak for *_, peak in flares]})


FRAMES = T0 + np.arange(4 * 24 * 5) * np.timedelta64(12, "m")  # 12-min AIA cadence


def test_a_flare_that_peaked_before_t_never_makes_t_positive():
    # an M5 starting at 10:00, peaking 10:30, ending 13:00 on day 1; nothing else
    flares = [(10.0, 10.5, 13.0, 5e-5)]
    table, counts = issue_table(FRAMES, xrs_with(flares), flare_table(flares))
    by_time = table.set_index("time")
    # 06 UTC: the flare starts within 24 h -> positive, and it is the flare that made it so
    assert by_time.loc["2024-05-01T06:00:00.000Z", "flare24"]
    assert by_time.loc["2024-05-01T06:00:00.000Z", "next_flare_id"] == "f0"
    # 18 UTC: the flare peaked (and ended) before t; its decay does not count
    assert not by_time.loc["2024-05-01T18:00:00.000Z", "flare24"]
    # issue times are on the 6-h clock, whatever the flares do
    assert set(pd.to_datetime(table["time"]).dt.hour) == {0, 6, 12, 18}


def test_an_issue_time_during_an_ongoing_m_flare_is_excluded_and_counted():
    flares = [(11.0, 11.5, 13.0, 5e-5)]  # ongoing at 12:00
    table, counts = issue_table(FRAMES, xrs_with(flares), flare_table(flares))
    assert "2024-05-01T12:00:00.000Z" not in set(table["time"])
    assert counts["ongoing_flare"] == 1
    # the last day's issue times have no full 24 h of GOES data after them: outcome unknown
    assert counts["outcome_unknown"] == 4
    assert counts["kept"] == len(table) == counts["issue_times"] - 5


def test_the_image_is_the_latest_frame_at_or_before_the_issue_time():
    frames = FRAMES[FRAMES != np.datetime64("2024-05-02T06:00", "ns")]
    table, _ = issue_table(frames, xrs_with([]), flare_table([]))
    row = table.set_index("time").loc["2024-05-02T06:00:00.000Z"]
    assert row["image_time"] == "2024-05-02T05:48:00.000Z"


def test_c_flares_do_not_make_positives_but_an_m_flare_starting_later_does():
    flares = [(8.0, 8.3, 9.0, 5e-6), (30.0, 30.3, 31.0, 2e-5)]
    table, _ = issue_table(FRAMES, xrs_with(flares), flare_table(flares))
    by_time = table.set_index("time")
    assert not by_time.loc["2024-05-01T00:00:00.000Z", "flare24"]  # C at 08:00; the M starts at 06:00 next day: > 24 h
    assert by_time.loc["2024-05-01T12:00:00.000Z", "flare24"]


def test_issue_every_zero_is_refused():
    with pytest.raises(FlaresynthError, match="--issue-every 0"):
        issue_table(FRAMES, xrs_with([]), flare_table([]), every_h=0)


def test_noaa_detection_finds_start_peak_and_end():
    # a slow, weak rise (x1.25 in 4 minutes) is not a flare by NOAA's rule; a fast one is
    flares = [(10.0, 10.5, 13.0, 5e-5), (40.0, 40.1, 41.0, 8e-6), (70.0, 70.2, 71.0, 4e-6)]
    found = detect_flares(xrs_with(flares))
    assert len(found) == 2
    first = found.iloc[0]
    assert abs((first["start"] - pd.Timestamp("2024-05-01T10:00")) / pd.Timedelta("1min")) <= 2
    assert first["peak"] == pd.Timestamp("2024-05-01T10:30") and first["goes_flux"] == pytest.approx(5e-5, rel=1e-3)
    # end: half-way back from the peak to the start flux, on the linear decay at 11:45 (+-2 min)
    assert abs((first["end"] - pd.Timestamp("2024-05-01T11:45")) / pd.Timedelta("1min")) <= 2
    assert found.iloc[1]["goes_flux"] == pytest.approx(8e-6, rel=1e-3)
