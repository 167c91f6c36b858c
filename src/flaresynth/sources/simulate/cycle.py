"""The solar cycle behind the simulated Sun: activity level, emergence latitudes and NOAA region numbers by date.

* **Activity**: the smoothed sunspot number (SILSO version 2) of each cycle follows the shape of Hathaway,
  Wilson & Reichmann (1994, Sol. Phys. 151, 177), ``f(x) = x³ / (exp(x²/b²) - c)`` with ``x`` months since the
  cycle's start, ``c = 0.71`` and ``b = 45`` months (rise to maximum in ~4 years), scaled to the cycle's
  observed amplitude; overlapping cycles add. Starts and amplitudes: cycle 23 1996.4 / 180, cycle 24
  2008.9 / 116, cycle 25 2019.9 / 160 (maximum in late 2024), cycle 26 2030.9 / 130 (an assumption: a typical
  cycle). :func:`activity` is that sunspot number divided by :data:`SN_REFERENCE` (150).
* **Latitudes** (Spörer's law): a cycle's regions emerge around ``28° exp(-x / 90 months)`` (Hathaway 2011,
  Sol. Phys. 273, 221), with a spread of a quarter of that plus 3°; near minimum the old cycle's low-latitude
  regions and the new cycle's high-latitude ones coexist, each cycle taking its share of the emergences.
* **NOAA numbers**: SWPC numbers each region when it appears on the visible disk, in order of appearance,
  and gives a returning region a new number. The first number of a simulation is interpolated between real
  anchors (AR 11069 on 2010-05-13, 11429 on 2012-03-07, 12192 on 2014-10-18, 12673 on 2017-09-04, 12753 on
  2019-12-24, 13664 on 2024-05-08), extrapolated at one region a day after the last.

``cycle_phase`` (0-1, minimum to minimum) replaces the date by a position in a typical cycle of amplitude 130
lasting 11 years, for a run that should look like a given phase whatever its dates.
"""

from __future__ import annotations

import math

import numpy as np

SN_REFERENCE = 150.0  # sunspot number of activity 1 (a strong maximum)
HATHAWAY_B = 45.0  # months
HATHAWAY_C = 0.71
#: (start, decimal year; amplitude, smoothed sunspot number) of the cycles that matter from 2010 to 2040.
CYCLES = ((1996.4, 180.0), (2008.9, 116.0), (2019.9, 160.0), (2030.9, 130.0))
TYPICAL_CYCLE = (0.0, 130.0)
CYCLE_YEARS = 11.0
#: (date, NOAA number of a region that appeared on that date).
NOAA_ANCHORS = (("2010-05-13", 11069), ("2012-03-07", 11429), ("2014-10-18", 12192), ("2017-09-04", 12673),
                ("2019-12-24", 12753), ("2024-05-08", 13664))
SDO_FIRST_LIGHT = np.datetime64("2010-05-13", "D")
LAST_DAY = np.datetime64("2040-12-31", "D")  # beyond the cycles above: "far future"


def _shape(months: np.ndarray) -> np.ndarray:
    x = np.clip(np.asarray(months, dtype=np.float64), 0.0, None)
    with np.errstate(over="ignore"):
        return x**3 / (np.exp((x / HATHAWAY_B) ** 2) - HATHAWAY_C)


_SHAPE_MAX = float(_shape(np.linspace(0, 200, 20001)).max())


def decimal_year(when) -> np.ndarray:
    """Decimal year of datetime64 values."""
    ns = np.asarray(when, dtype="datetime64[ns]").astype(np.int64)
    return 1970.0 + ns / (365.2425 * 86400e9)


def _cycles(cycle_phase: float | None):
    return (TYPICAL_CYCLE,) if cycle_phase is not None else CYCLES


def _months(year: np.ndarray, start: float, cycle_phase: float | None) -> np.ndarray:
    if cycle_phase is not None:
        # a fixed phase: the whole run sits at that point of a typical cycle
        return np.full_like(year, 12.0 * CYCLE_YEARS * cycle_phase)
    return 12.0 * (year - start)


def sunspot_number(year, cycle_phase: float | None = None) -> np.ndarray:
    """Smoothed sunspot number at decimal years ``year`` (sum of the cycles' Hathaway profiles)."""
    year = np.asarray(year, dtype=np.float64)
    return sum(amp * _shape(_months(year, start, cycle_phase)) / _SHAPE_MAX for start, amp in _cycles(cycle_phase))


def activity(year, cycle_phase: float | None = None) -> np.ndarray:
    """Activity level (sunspot number / 150) at decimal years ``year``."""
    return sunspot_number(year, cycle_phase) / SN_REFERENCE


def emergence_latitude(rng: np.random.Generator, year: float, cycle_phase: float | None = None) -> float:
    """|latitude| (deg) of a region emerging at ``year``: the cycle is drawn by its share of the activity."""
    cycles = _cycles(cycle_phase)
    share = np.array([amp * float(_shape(_months(np.array([year]), start, cycle_phase))[0]) for start, amp in cycles])
    k = int(rng.choice(len(cycles), p=share / share.sum())) if share.sum() > 0 else len(cycles) - 1
    months = float(_months(np.array([year]), cycles[k][0], cycle_phase)[0])
    mean = 28.0 * math.exp(-max(months, 0.0) / 90.0)
    return float(np.clip(rng.normal(mean, 0.25 * mean + 3.0), 3.0, 45.0))


def first_noaa_number(day) -> int:
    """The NOAA number SWPC was giving on ``day`` (interpolated between real anchors)."""
    t = float(np.datetime64(day, "D").astype(np.int64))
    days = np.array([np.datetime64(d, "D").astype(np.int64) for d, _ in NOAA_ANCHORS], dtype=np.float64)
    nums = np.array([n for _, n in NOAA_ANCHORS], dtype=np.float64)
    if t > days[-1]:
        return int(round(nums[-1] + (t - days[-1])))
    return int(round(np.interp(t, days, nums)))
