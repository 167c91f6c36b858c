"""HEK flare events (event type FL): saved JSON responses, de-duplication, and the live query.

Format (the HEK API, Hurlburt et al. 2012; sunpy's ``sunpy.net.hek.HEKClient``)
-------------------------------------------------------------------------------
The HEK search endpoint (``https://www.lmsal.com/hek/her?cmd=search&cosec=2&...``) answers with one JSON
object per page::

    {"result": [ {"event_type": "FL", "event_peaktime": "2017-09-10T16:06:00", "fl_goescls": "X8.2",
                  "frm_name": "SWPC", "ar_noaanum": 12673, "kb_archivid": "ivo://helio-informatics.org/...",
                  ...}, ... ],
     "overmax": false}

and a client keeps asking for ``page=2, 3, ...`` while ``overmax`` is true. A saved response is therefore one
file, or several page files read in order; if the last page still says ``overmax: true`` the response was
cut short and is refused unless the caller accepts an incomplete list.

What is kept of each FL event (field names as in sunpy's shipped HEK schema,
``sunpy/net/hek/data/unit_properties.json`` and ``coord_properties.json``):

* ``event_starttime`` / ``event_peaktime`` / ``event_endtime`` -> ``start`` / ``peak`` / ``end``: UTC, stored as
  timezone-naive ``datetime64[ns]`` (the project's convention: all times are UTC). The peak is required;
  a missing start or end becomes NaT.
* ``fl_goescls`` -> ``goes_class`` (``""`` when absent) and ``goes_flux`` (W/m², NaN when absent). The class is the
  reporter's: SWPC classes before the GOES-16 era were measured on SWPC-*scaled* GOES 8-15 data (see
  :mod:`flaresynth.sources.goes` for the 0.7 factor); no rescaling is done here. ``fl_peakflux`` is **not** used:
  its unit depends on the reporting method (e.g. DN/(pix s) for the AIA Flare Detective).
* ``hpc_x`` / ``hpc_y`` (arcsec): HEK adds these derived scalar fields to search results (seen in public
  clients, not in sunpy's schema). When they are absent the position is parsed from ``hpc_coord``
  (``POINT(x y)``, arcsec, as sunpy parses it) or taken from ``event_coord1/2`` when ``event_coordsys`` is
  helioprojective (``UTC-HPC-TOPO``). SWPC rows often have no meaningful position; de-duplication borrows one
  from another reporter of the same flare.
* ``ar_noaanum`` -> nullable ``Int64``; 0 and negative values (sunpy fills -999 for a missing long) become NA.
* ``kb_archivid`` -> ``event_id`` (else ``"<frm_name>@<peak ISO>"``), ``kb_archivdate`` (NaT when unparseable;
  only a tie-break), ``frm_name``, ``obs_observatory`` -> ``observatory``.

A row without ``event_type`` is taken to be FL (a hand-made or FL-only file); rows of any other type are dropped.

The same flare is reported by several methods (SWPC, "SSW Latest Events", "Flare Detective - Trigger
Module", human observers); :func:`deduplicate` collapses them, following the matching SDOBenchmark used
(SWPC flares first, other reports matched by peak time and NOAA AR number).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from flaresynth.errors import FlaresynthError, input_error
from flaresynth.io import atomic_file
from flaresynth.labels import class_to_flux

#: Columns of the event table, in order (``n_reports`` and ``reporters`` are added by :func:`deduplicate`).
COLUMNS: tuple[str, ...] = (
    "event_id",
    "start",
    "peak",
    "end",
    "goes_class",
    "goes_flux",
    "frm_name",
    "observatory",
    "hpc_x",
    "hpc_y",
    "ar_noaanum",
    "kb_archivdate",
    "source_file",
)
#: Reporters ranked first when several reports of one flare are merged (then every other reporter).
REPORTER_PRIORITY: tuple[str, ...] = ("SWPC", "SSW Latest Events")
#: HEK fields this module reads (all in sunpy's FL schema except the derived ``hpc_x``/``hpc_y``).
FIELDS_READ: tuple[str, ...] = (
    "event_type",
    "event_starttime",
    "event_peaktime",
    "event_endtime",
    "fl_goescls",
    "frm_name",
    "obs_observatory",
    "ar_noaanum",
    "kb_archivid",
    "kb_archivdate",
    "hpc_coord",
    "event_coordsys",
    "event_coordunit",
    "event_coord1",
    "event_coord2",
)
DERIVED_FIELDS: tuple[str, ...] = ("hpc_x", "hpc_y")

_POINT_RE = re.compile(r"^\s*POINT\s*\(\s*(\S+)\s+(\S+)\s*\)\s*$", re.IGNORECASE)
_DIGITS_RE = re.compile(r"(\d+)")


# --------------------------------------------------------------------------------------------------------
# reading saved responses


def _page_files(spec: str | Path | Sequence[str | Path]) -> list[Path]:
    """The page files of a saved response: one file, a folder of ``*.json`` pages, or a list of files."""
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        if path.is_dir():
            # Natural order, so page10.json comes after page9.json.
            files = sorted(
                path.glob("*.json"),
                key=lambda p: [int(t) if t.isdigit() else t for t in _DIGITS_RE.split(p.name)],
            )
            if not files:
                raise input_error(
                    path, None, "no *.json page files in this folder (expected a saved HEK response)"
                )
            return files
        paths = [path]
    else:
        paths = [Path(p) for p in spec]
        if not paths:
            raise FlaresynthError("HEK response: empty list of page files")
    for p in paths:
        if not p.is_file():
            raise input_error(p, None, "file not found (expected a saved HEK JSON response)")
    return paths


def _load_page(path: Path) -> tuple[list, bool]:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except json.JSONDecodeError as exc:
        raise input_error(path, None, f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise input_error(path, None, "not a UTF-8 text file (expected a saved HEK JSON response)") from None
    if not isinstance(doc, dict) or "result" not in doc:
        raise input_error(
            path, "key 'result'", 'missing (expected an HEK response {"result": [...], "overmax": ...})'
        )
    result = doc["result"]
    if not isinstance(result, list):
        raise input_error(path, "key 'result'", f"expected a list of events, got {type(result).__name__}")
    overmax = doc.get("overmax", False)
    if not isinstance(overmax, bool):
        raise input_error(path, "key 'overmax'", f"expected true or false, got {overmax!r}")
    return result, overmax


def _is_blank(value) -> bool:
    return (
        value is None
        or (isinstance(value, str) and not value.strip())
        or (isinstance(value, float) and math.isnan(value))
    )


def _parse_time(value, path: Path, index: int, field: str, required: bool) -> np.datetime64:
    if _is_blank(value):
        if required:
            raise input_error(
                path, f"event {index} field '{field}'", "missing (every HEK flare has a peak time)"
            )
        return np.datetime64("NaT", "ns")
    try:
        ts = pd.Timestamp(str(value).strip())
    except (ValueError, TypeError):
        ts = None
    if ts is None or ts is pd.NaT:
        raise input_error(
            path, f"event {index} field '{field}'", f"{value!r} is not a time like 2017-09-10T15:35:00"
        )
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.to_datetime64().astype("datetime64[ns]")


def _parse_float(value, path: Path, index: int, field: str) -> float:
    if _is_blank(value):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise input_error(path, f"event {index} field '{field}'", f"{value!r} is not a number") from None


def _position(ev: dict, path: Path, index: int) -> tuple[float, float]:
    """Helioprojective (x, y) in arcsec: hpc_x/hpc_y, else hpc_coord POINT(x y), else event_coord1/2 if HPC."""
    x = _parse_float(ev.get("hpc_x"), path, index, "hpc_x")
    y = _parse_float(ev.get("hpc_y"), path, index, "hpc_y")
    if not (math.isnan(x) or math.isnan(y)):
        return x, y
    point = ev.get("hpc_coord")
    if not _is_blank(point):
        m = _POINT_RE.match(str(point))
        if not m:
            raise input_error(
                path, f"event {index} field 'hpc_coord'", f"{point!r} is not of the form POINT(x y)"
            )
        return _parse_float(m.group(1), path, index, "hpc_coord"), _parse_float(
            m.group(2), path, index, "hpc_coord"
        )
    system = str(ev.get("event_coordsys") or "").upper()
    if "HPC" in system or "HELIOPROJECTIVE" in system:
        x = _parse_float(ev.get("event_coord1"), path, index, "event_coord1")
        y = _parse_float(ev.get("event_coord2"), path, index, "event_coord2")
        # HEK states HPC positions in arcsec; accept a degree unit too rather than silently misread it.
        unit = str(ev.get("event_coordunit") or "arcsec").lower()
        if unit.startswith("deg"):
            x, y = x * 3600.0, y * 3600.0
        elif not unit.startswith("arcsec"):
            raise input_error(
                path, f"event {index} field 'event_coordunit'", f"{unit!r}: expected arcsec for HPC"
            )
        return x, y
    return math.nan, math.nan


def _ar_number(value, path: Path, index: int):
    if _is_blank(value):
        return pd.NA
    try:
        number = int(float(value))
    except (TypeError, ValueError):
        raise input_error(
            path, f"event {index} field 'ar_noaanum'", f"{value!r} is not a NOAA AR number"
        ) from None
    return number if number > 0 else pd.NA


def _event_record(ev: dict, path: Path, index: int) -> dict:
    peak = _parse_time(ev.get("event_peaktime"), path, index, "event_peaktime", required=True)
    start = _parse_time(ev.get("event_starttime"), path, index, "event_starttime", required=False)
    end = _parse_time(ev.get("event_endtime"), path, index, "event_endtime", required=False)
    goes_class = "" if _is_blank(ev.get("fl_goescls")) else str(ev["fl_goescls"]).strip().upper()
    try:
        goes_flux = class_to_flux(goes_class) if goes_class else math.nan
    except FlaresynthError:
        raise input_error(
            path, f"event {index} field 'fl_goescls'", f"{goes_class!r} is not a GOES class like 'M2.5'"
        ) from None
    frm_name = "" if _is_blank(ev.get("frm_name")) else str(ev["frm_name"]).strip()
    event_id = "" if _is_blank(ev.get("kb_archivid")) else str(ev["kb_archivid"]).strip()
    if not event_id:
        event_id = f"{frm_name or 'unknown'}@{np.datetime_as_string(peak, unit='s')}"
    try:
        archived = _parse_time(ev.get("kb_archivdate"), path, index, "kb_archivdate", required=False)
    except FlaresynthError:
        archived = np.datetime64("NaT", "ns")  # only a tie-break; not worth refusing the file for
    hpc_x, hpc_y = _position(ev, path, index)
    return {
        "event_id": event_id,
        "start": start,
        "peak": peak,
        "end": end,
        "goes_class": goes_class,
        "goes_flux": goes_flux,
        "frm_name": frm_name,
        "observatory": "" if _is_blank(ev.get("obs_observatory")) else str(ev["obs_observatory"]).strip(),
        "hpc_x": hpc_x,
        "hpc_y": hpc_y,
        "ar_noaanum": _ar_number(ev.get("ar_noaanum"), path, index),
        "kb_archivdate": archived,
        "source_file": str(path),
    }


def _frame(records: list[dict]) -> pd.DataFrame:
    """The event table with fixed dtypes (also for zero events)."""
    col = {c: [r[c] for r in records] for c in COLUMNS}
    df = pd.DataFrame(
        {
            "event_id": pd.Series(col["event_id"], dtype="str"),
            "start": np.array(col["start"], dtype="datetime64[ns]"),
            "peak": np.array(col["peak"], dtype="datetime64[ns]"),
            "end": np.array(col["end"], dtype="datetime64[ns]"),
            "goes_class": pd.Series(col["goes_class"], dtype="str"),
            "goes_flux": np.array(col["goes_flux"], dtype=np.float64),
            "frm_name": pd.Series(col["frm_name"], dtype="str"),
            "observatory": pd.Series(col["observatory"], dtype="str"),
            "hpc_x": np.array(col["hpc_x"], dtype=np.float64),
            "hpc_y": np.array(col["hpc_y"], dtype=np.float64),
            "ar_noaanum": pd.array(col["ar_noaanum"], dtype="Int64"),
            "kb_archivdate": np.array(col["kb_archivdate"], dtype="datetime64[ns]"),
            "source_file": pd.Series(col["source_file"], dtype="str"),
        }
    )
    return df.sort_values("peak", kind="mergesort").reset_index(drop=True)


def read_hek_json(source: str | Path | Sequence[str | Path], allow_incomplete: bool = False) -> pd.DataFrame:
    """Read the FL events of a saved HEK JSON response.

    Parameters
    ----------
    source : one response file, a folder of page files (read in natural name order), or a list of page
        files (read in the given order); the pages' ``result`` lists are concatenated.
    allow_incomplete : accept a response whose last page has ``overmax: true`` (more pages exist on the
        server that were not saved). Off by default: an incomplete event list silently loses flares.

    Returns
    -------
    pandas.DataFrame with :data:`COLUMNS` (times UTC ``datetime64[ns]``, ``goes_flux`` W/m², ``hpc_x``/``hpc_y``
    arcsec, ``ar_noaanum`` Int64), one row per FL report, sorted by peak time. Not de-duplicated.
    """
    files = _page_files(source)
    records: list[dict] = []
    overmax = False
    for path in files:
        result, overmax = _load_page(path)
        for index, ev in enumerate(result):
            if not isinstance(ev, dict):
                raise input_error(
                    path, f"event {index}", f"expected an object of HEK fields, got {type(ev).__name__}"
                )
            event_type = ev.get("event_type")
            if not _is_blank(event_type) and str(event_type).strip().upper() != "FL":
                continue
            records.append(_event_record(ev, path, index))
    if overmax and not allow_incomplete:
        raise input_error(
            files[-1],
            "key 'overmax'",
            "true on the last page: the response is incomplete (save the following pages, "
            "or pass allow_incomplete=True)",
        )
    return _frame(records)


# --------------------------------------------------------------------------------------------------------
# de-duplication


def _rank_key(row) -> tuple:
    try:
        priority = REPORTER_PRIORITY.index(row.frm_name)
    except ValueError:
        priority = len(REPORTER_PRIORITY)
    archived = row.kb_archivdate.value if not pd.isna(row.kb_archivdate) else np.iinfo(np.int64).max
    return (priority, 0 if row.goes_class else 1, archived, row.peak.value, row.event_id)


def deduplicate(
    events: pd.DataFrame, peak_tolerance: np.timedelta64 = np.timedelta64(10, "m")
) -> pd.DataFrame:
    """Collapse reports of the same flare by several reporters into one event.

    Rule (after SDOBenchmark, which took SWPC flares and matched other reports to them by peak time and
    NOAA AR number):

    1. Reports are ranked: reporter priority SWPC > "SSW Latest Events" > any other; then reports with a
       GOES class first; then the earliest ``kb_archivdate``; then the earliest peak.
    2. In that order, each report joins the already formed flare whose representative's peak is within
       ``peak_tolerance`` of its own (the nearest one if several) and whose NOAA AR number does not conflict
       (equal, or either one missing). An event-list reporter (SWPC, SSW Latest Events) lists each flare
       once, so a flare never takes a second report from the same one of those. A report that joins no flare
       founds a new one and is its representative.
    3. The representative keeps its id, times, class, reporter and source file. It takes ``hpc_x``/``hpc_y``,
       ``ar_noaanum`` and (when it has none) the GOES class from the best-ranked other report that has them.

    Parameters
    ----------
    events : table from :func:`read_hek_json`.
    peak_tolerance : largest peak-time difference of two reports of one flare (default 10 min, SDOBenchmark's
        looser bound).

    Returns
    -------
    pandas.DataFrame with the input columns plus ``n_reports`` (int, reports merged) and ``reporters``
    (the reporters' ``frm_name`` joined by ``"; "``, representative first), sorted by peak.
    """
    missing = [c for c in COLUMNS if c not in events.columns]
    if missing:
        raise FlaresynthError(
            f"HEK event table: columns {missing} missing (expected the output of read_hek_json)"
        )
    tol = np.timedelta64(peak_tolerance).astype("timedelta64[ns]").astype(np.int64)
    if tol < 0:
        raise FlaresynthError(f"peak_tolerance {peak_tolerance!r}: must not be negative")
    rows = list(events.itertuples(index=False))
    order = sorted(range(len(rows)), key=lambda i: _rank_key(rows[i]))

    members: list[list[int]] = []  # per flare, row indices in join (= rank) order
    flare_peak: list[int] = []
    flare_ar: list = []
    flare_lists: list[set[str]] = []
    buckets: dict[int, list[int]] = {}  # peak // tol -> flares, so each report looks at a few candidates
    width = max(int(tol), 1)
    for i in order:
        row = rows[i]
        peak = row.peak.value
        ar = row.ar_noaanum
        best, best_dt = None, None
        key = peak // width
        for k in (key - 1, key, key + 1):
            for f in buckets.get(k, ()):
                dt = abs(flare_peak[f] - peak)
                if dt > tol:
                    continue
                if not (pd.isna(ar) or pd.isna(flare_ar[f]) or ar == flare_ar[f]):
                    continue
                if row.frm_name in REPORTER_PRIORITY and row.frm_name in flare_lists[f]:
                    continue
                if best is None or dt < best_dt:
                    best, best_dt = f, dt
        if best is None:
            best = len(members)
            members.append([])
            flare_peak.append(peak)
            flare_ar.append(pd.NA)
            flare_lists.append(set())
            buckets.setdefault(key, []).append(best)
        members[best].append(i)
        if pd.isna(flare_ar[best]) and not pd.isna(ar):
            flare_ar[best] = ar
        flare_lists[best].add(row.frm_name)

    out = events.iloc[[m[0] for m in members]].copy().reset_index(drop=True)
    # Filled values are gathered in plain lists first: per-cell .loc writes are slow on 10^4 flares.
    hpc_x, hpc_y = out["hpc_x"].to_numpy(copy=True), out["hpc_y"].to_numpy(copy=True)
    ar_list = list(out["ar_noaanum"])
    goes_class, goes_flux = list(out["goes_class"]), out["goes_flux"].to_numpy(copy=True)
    for f, m in enumerate(members):
        others = [rows[i] for i in m[1:]]
        if math.isnan(hpc_x[f]) or math.isnan(hpc_y[f]):
            donor = next((o for o in others if not (math.isnan(o.hpc_x) or math.isnan(o.hpc_y))), None)
            if donor is not None:
                hpc_x[f], hpc_y[f] = donor.hpc_x, donor.hpc_y
        if pd.isna(ar_list[f]):
            donor = next((o for o in others if not pd.isna(o.ar_noaanum)), None)
            if donor is not None:
                ar_list[f] = donor.ar_noaanum
        if not goes_class[f]:
            donor = next((o for o in others if o.goes_class), None)
            if donor is not None:
                goes_class[f], goes_flux[f] = donor.goes_class, donor.goes_flux
    out["hpc_x"], out["hpc_y"] = hpc_x, hpc_y
    out["ar_noaanum"] = pd.array(ar_list, dtype="Int64")
    out["goes_class"] = pd.Series(goes_class, dtype="str")
    out["goes_flux"] = goes_flux
    out["n_reports"] = np.array([len(m) for m in members], dtype=np.int64)
    out["reporters"] = pd.Series(["; ".join(rows[i].frm_name for i in m) for m in members], dtype="str")
    return out.sort_values("peak", kind="mergesort").reset_index(drop=True)


def read_events(
    spec: str | Path | Sequence[str | Path],
    allow_incomplete: bool = False,
    peak_tolerance: np.timedelta64 = np.timedelta64(10, "m"),
) -> pd.DataFrame:
    """De-duplicated FL events of a saved HEK response (file, folder of pages, or list of pages).

    This is what the dataset builder calls; see :func:`read_hek_json` and :func:`deduplicate`.
    """
    return deduplicate(read_hek_json(spec, allow_incomplete=allow_incomplete), peak_tolerance=peak_tolerance)


# --------------------------------------------------------------------------------------------------------
# live query (network)


def hek_query(start, end, min_class: str | None = None, frm_name: str | None = None) -> list:
    """The sunpy attributes of an FL query; building them touches no network.

    Parameters
    ----------
    start, end : anything ``sunpy.net.attrs.Time`` accepts (UTC). HEK returns only events that lie
        entirely inside the window.
    min_class : smallest GOES class kept, e.g. ``"M1.0"`` (HEK compares ``fl_goescls`` as a string, which
        orders correctly for A < B < C < M < X and one-digit mantissas).
    frm_name : keep only one reporter, e.g. ``"SWPC"``; ``None`` keeps all (positions come from the others).
    """
    from sunpy.net import attrs as a

    if min_class is not None:
        class_to_flux(min_class)  # refuse a malformed class before any request is made
    query = [a.Time(start, end), a.hek.FL]
    if frm_name:
        query.append(a.hek.FRM.Name == frm_name)
    if min_class is not None:
        query.append(a.hek.FL.GOESCls >= str(min_class).strip().upper())
    return query


def hek_query_params(start, end, min_class: str | None = None, frm_name: str | None = None) -> list[dict]:
    """The GET parameters sunpy's HEK client would send (one dict per sub-query); no network."""
    from sunpy.net import attr
    from sunpy.net.hek import HEKClient
    from sunpy.net.hek import attrs as hek_attrs

    params = []
    for elem in hek_attrs.walker.create(attr.and_(*hek_query(start, end, min_class, frm_name)), {}):
        p = dict(HEKClient.default)
        p.update(elem)
        params.append(p)
    return params


def _jsonable(value):
    if isinstance(value, np.generic):
        value = value.item()
    if value is np.ma.masked or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value


def raw_table_to_result(raw) -> list[dict]:
    """Rows of an astropy table of raw HEK fields (``HEKTable.raw``) as JSON-ready dicts."""
    names = list(raw.colnames)
    return [{k: _jsonable(row[k]) for k in names} for row in raw]


def fetch_hek(
    start,
    end,
    out_path: str | Path,
    min_class: str | None = None,
    frm_name: str | None = None,
    client=None,
) -> Path:
    """Query HEK for FL events (network) and save them as one response file :func:`read_hek_json` reads.

    Parameters
    ----------
    start, end : query window (UTC), see :func:`hek_query`.
    out_path : JSON file to write, atomically: ``{"result": [...raw HEK rows...], "overmax": false}``
        (sunpy's client has already followed every page).
    min_class, frm_name : filters, see :func:`hek_query`.
    client : an object with sunpy's ``HEKClient.search`` interface (default: a new ``HEKClient``).

    Returns
    -------
    The path written.
    """
    query = hek_query(start, end, min_class, frm_name)
    if client is None:
        from sunpy.net.hek import HEKClient

        client = HEKClient()
    try:
        table = client.search(*query)
    except OSError as exc:  # urllib's URLError/HTTPError and sunpy's "Failed to load" are OSErrors
        raise FlaresynthError(f"HEK query {start}..{end}: request failed ({exc})") from exc
    raw = getattr(table, "raw", table)
    doc = {"result": raw_table_to_result(raw) if len(raw) else [], "overmax": False}
    out_path = Path(out_path)
    with atomic_file(out_path, "w") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")
    return out_path


__all__ = [
    "COLUMNS",
    "REPORTER_PRIORITY",
    "FIELDS_READ",
    "DERIVED_FIELDS",
    "read_hek_json",
    "deduplicate",
    "read_events",
    "hek_query",
    "hek_query_params",
    "raw_table_to_result",
    "fetch_hek",
]
