"""Labels of the 24 h flare forecast: issue times at a fixed cadence, flare starts, exclusions.

The forecasting literature's protocol (Bloomfield et al. 2012, ApJL 747, L41; Leka et al. 2019, ApJS 243, 36;
SuryaBench, Roy et al. 2025) rather than a nowcast:

* **issue times** every ``issue_every_h`` hours (default 6, on the UTC clock: 00, 06, 12, 18 UTC), independent of
  when flares happen. The image of an issue time t is the latest good frame at or before t, no older than
  ``max_image_age_h`` (else the issue time is dropped and counted).
* **label**: 1 when a flare of at least ``threshold`` (default M1.0 = 1e-5 W/m²) **starts** in (t, t + horizon],
  horizon 24 h by default. A flare that peaked before t never makes t positive; neither does its decay.
* **flare list**: the de-duplicated HEK events (start time; class in the dataset's flux convention, i.e. ÷0.7 for
  GOES 8-15 events under the true scale, see :mod:`flaresynth.dataset`). Without a HEK list, flares detected in
  the XRS-B series by NOAA's event definition (:func:`detect_flares`).
* **exclusions** (counted in the manifest): issue times during an ongoing ≥ threshold event (start ≤ t ≤ end) or
  with XRS-B ≥ threshold at t (the forecast would be a nowcast); issue times whose horizon runs past the end of the
  GOES record (outcome unknown); issue times without a recent image or without GOES data at t.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from flaresynth.errors import FlaresynthError

#: Classes of a forecast dataset, index 0 = negative.
FORECAST_CLASSES = ("quiet24", "flare24")
FORECAST_SCHEME = "forecast24"


def detect_flares(xrs, min_flux: float = 1e-6) -> pd.DataFrame:
    """Flares in an XRS-B series by NOAA's event definition (SWPC's event list rules, on 1-min averages):

    * **start**: the first minute of a run of 4 minutes in which the 1-8 Å flux increases every minute and the
      last value is at least 1.4 times the first;
    * **peak**: the maximum flux before the end;
    * **end**: the first minute after the peak at which the flux has fallen half-way back to the flux at the start.

    Events whose peak is below ``min_flux`` are dropped. Returns the columns of a HEK event table that the
    forecast uses: ``event_id``, ``start``, ``peak``, ``end``, ``goes_flux`` (peak flux, the series' convention).
    """
    good = xrs.good
    if not good.any():
        return pd.DataFrame(columns=["event_id", "start", "peak", "end", "goes_flux"])
    s = pd.Series(xrs.flux[good], index=pd.DatetimeIndex(xrs.time[good])).resample("1min").mean()
    f = s.to_numpy()
    t = s.index.to_numpy(dtype="datetime64[ns]")
    rows = []
    i, n = 0, len(f)
    while i + 4 < n:
        w = f[i : i + 5]
        if np.all(np.isfinite(w)) and np.all(np.diff(w[:4]) > 0) and w[3] >= 1.4 * w[0]:
            start = i
            j = i + 3
            while j + 1 < n and np.isfinite(f[j + 1]) and f[j + 1] >= f[j]:
                j += 1
            peak = j
            half = f[start] + 0.5 * (f[peak] - f[start])
            k = peak + 1
            while k < n and not (np.isfinite(f[k]) and f[k] <= half):
                k += 1
            end = min(k, n - 1)
            if f[peak] >= min_flux:
                rows.append({"event_id": f"xrs@{pd.Timestamp(t[peak]).isoformat()}", "start": t[start],
                             "peak": t[peak], "end": t[end], "goes_flux": float(f[peak])})
            i = end + 1
        else:
            i += 1
    return pd.DataFrame(rows, columns=["event_id", "start", "peak", "end", "goes_flux"])


def issue_table(frame_times: np.ndarray, xrs, flares: pd.DataFrame, every_h: float = 6.0, horizon_h: float = 24.0,
                threshold: float = 1e-5, max_image_age_h: float = 1.0, flux_tolerance_s: float = 60.0,
                start=None, end=None, frame_index: np.ndarray | None = None) -> tuple[pd.DataFrame, dict]:
    """One row per kept issue time, and the counts of the dropped ones (see the module docstring).

    ``frame_times``: times of the usable image frames (sorted), ``frame_index`` their index in the image source
    (default: 0, 1, ...); ``flares``: ``start``, ``peak``, ``end`` (NaT
    allowed for end: the peak then ends the event), ``goes_flux`` in the dataset's convention, ``event_id``.
    Columns: ``time`` (issue time), ``source_index`` (frame), ``image_time``, ``flux`` (XRS-B at t),
    ``flare24`` (bool), ``label``, ``label_flux`` (largest flux of the ≥ threshold flares starting in the
    window, else the largest of any flare starting there, else the XRS-B peak in the window),
    ``n_flares24``, ``next_flare_id``, ``next_flare_start``, ``next_flare_class``.
    """
    if not every_h > 0:
        raise FlaresynthError(f"--issue-every {every_h}: expected a positive number of hours")
    if not horizon_h > 0:
        raise FlaresynthError(f"--horizon {horizon_h}: expected a positive number of hours")
    from flaresynth.labels import flux_to_class

    frame_times = np.asarray(frame_times, dtype="datetime64[ns]")
    counts = {"issue_times": 0, "no_recent_image": 0, "no_goes_at_issue": 0, "ongoing_flare": 0,
              "outcome_unknown": 0, "kept": 0}
    if len(frame_times) == 0:
        return pd.DataFrame(), counts
    step = pd.Timedelta(hours=every_h)
    lo = pd.Timestamp(start).tz_localize(None) if start else pd.Timestamp(frame_times[0])
    hi = pd.Timestamp(end).tz_localize(None) if end else pd.Timestamp(frame_times[-1])
    first = lo.floor("D") + step * int(np.ceil((lo - lo.floor("D")) / step))
    issues = pd.date_range(first, hi, freq=step).to_numpy(dtype="datetime64[ns]")
    counts["issue_times"] = int(len(issues))
    horizon = np.timedelta64(int(horizon_h * 3600e9), "ns")

    # the image: the latest frame at or before t, no older than max_image_age_h
    pos = np.searchsorted(frame_times, issues, side="right") - 1
    has_image = pos >= 0
    age = np.where(has_image, issues - frame_times[np.clip(pos, 0, None)], np.timedelta64(10**18, "ns"))
    has_image &= age <= np.timedelta64(int(max_image_age_h * 3600e9), "ns")

    flux_t = xrs.flux_at(issues, tolerance=np.timedelta64(int(flux_tolerance_s * 1e9), "ns"))
    has_goes = np.isfinite(flux_t)
    # outcome known only if the GOES record reaches past t + horizon
    gt = xrs.time[xrs.good]
    known = (len(gt) > 0) & (issues + horizon <= (gt[-1] if len(gt) else issues[0]))

    f_start = flares["start"].fillna(flares["peak"]).to_numpy(dtype="datetime64[ns]")
    f_end = flares["end"].fillna(flares["peak"]).to_numpy(dtype="datetime64[ns]")
    f_flux = flares["goes_flux"].to_numpy(dtype=np.float64)
    big = np.isfinite(f_flux) & (f_flux >= threshold)
    ongoing = np.zeros(len(issues), dtype=bool)
    for s, e in zip(f_start[big], f_end[big]):
        ongoing |= (issues >= s) & (issues <= e)
    ongoing |= np.nan_to_num(flux_t, nan=0.0) >= threshold

    keep = has_image & has_goes & ~ongoing & known
    counts["no_recent_image"] = int((~has_image).sum())
    counts["no_goes_at_issue"] = int((has_image & ~has_goes).sum())
    counts["ongoing_flare"] = int((has_image & has_goes & ongoing).sum())
    counts["outcome_unknown"] = int((has_image & has_goes & ~ongoing & ~known).sum())
    counts["kept"] = int(keep.sum())

    order = np.argsort(f_start)
    f_start_s, f_flux_s = f_start[order], f_flux[order]
    ids = flares["event_id"].astype(str).to_numpy()[order]
    peak24, _ = xrs.peak_after(issues, window=horizon)
    rows = []
    for i in np.flatnonzero(keep):
        t = issues[i]
        a, b = np.searchsorted(f_start_s, t, side="right"), np.searchsorted(f_start_s, t + horizon, side="right")
        window_flux = f_flux_s[a:b]
        is_big = np.isfinite(window_flux) & (window_flux >= threshold)
        first_big = a + int(np.argmax(is_big)) if is_big.any() else -1
        positive = first_big >= 0
        largest = np.nanmax(window_flux) if np.isfinite(window_flux).any() else peak24[i]
        rows.append({
            "time": pd.Timestamp(t).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "image_time": pd.Timestamp(frame_times[pos[i]]).strftime("%Y-%m-%dT%H:%M:%S.%f")[:23] + "Z",
            "source_index": int(pos[i] if frame_index is None else frame_index[pos[i]]),
            "flux": float(flux_t[i]),
            "flare24": bool(positive),
            "label": FORECAST_CLASSES[int(positive)],
            "label_flux": float(largest) if np.isfinite(largest) else float(flux_t[i]),
            "n_flares24": int(is_big.sum()),
            "next_flare_id": ids[first_big] if positive else "",
            "next_flare_start": pd.Timestamp(f_start_s[first_big]).strftime("%Y-%m-%dT%H:%M:%SZ") if positive else "",
            "next_flare_class": flux_to_class(f_flux_s[first_big]) if positive else "",
            "time_ns": t,
        })
    return pd.DataFrame(rows), counts
