"""Tests of flaresynth.sources.hek on hand-built HEK responses.

No HEK response ships with any package, so the fixtures are built here in the exact response shape
(``{"result": [...], "overmax": ...}``). The events are real historical flares, but every value was
HAND-ENTERED from public flare lists, NOT FETCHED from HEK: SWPC 2017-09-10 X8.2 (AR 12673, peak 16:06,
the flare in the shipped GOES-15/16 files) and SWPC 2011-06-07 M2.5 (AR 11226, peak ~06:41, the flare in the
shipped SDAC GOES-15 FITS file). Archive ids, archive dates and positions are made up in HEK's style.
"""

from __future__ import annotations

import json
import urllib.request
from importlib import resources

import numpy as np
import pandas as pd
import pytest

from flaresynth.errors import FlaresynthError
from flaresynth.sources import hek

# ---- hand-entered events (not fetched) -----------------------------------------------------------------

X82_SWPC = {
    "event_type": "FL",
    "event_starttime": "2017-09-10T15:35:00",
    "event_peaktime": "2017-09-10T16:06:00",
    "event_endtime": "2017-09-10T16:31:00",
    "fl_goescls": "X8.2",
    "frm_name": "SWPC",
    "obs_observatory": "GOES",
    "ar_noaanum": 12673,
    "kb_archivid": "ivo://helio-informatics.org/FL_SWPC_20170910_153500_12673",
    "kb_archivdate": "2017-09-11T00:30:05",
    # SWPC rows carry no usable position
    "event_coordsys": "UTC-HGS-TOPO",
    "event_coordunit": "degrees",
    "event_coord1": 0.0,
    "event_coord2": 0.0,
}
X82_SSW = {
    "event_type": "FL",
    "event_starttime": "2017-09-10T15:35:00",
    "event_peaktime": "2017-09-10T16:06:00",
    "event_endtime": "2017-09-10T16:31:00",
    "fl_goescls": "X8.2",
    "frm_name": "SSW Latest Events",
    "obs_observatory": "SDO",
    "ar_noaanum": 12673,
    "kb_archivid": "ivo://helio-informatics.org/FL_SSWLatestEvents_20170910_153500_1",
    "kb_archivdate": "2017-09-10T18:02:11",
    "hpc_coord": "POINT(933.6 -134.4)",  # no scalar hpc_x/hpc_y: exercises the POINT fallback
}
X82_DETECTIVE = {
    "event_type": "FL",
    "event_starttime": "2017-09-10T15:52:14",
    "event_peaktime": "2017-09-10T16:04:38",
    "event_endtime": "2017-09-10T16:40:02",
    "fl_goescls": "",
    "frm_name": "Flare Detective - Trigger Module",
    "obs_observatory": "SDO",
    "ar_noaanum": 0,
    "kb_archivid": "ivo://helio-informatics.org/FL_FlareDetective-TriggerModule_20170910_155214_2",
    "kb_archivdate": "2017-09-10T16:20:00",
    "event_coordsys": "UTC-HPC-TOPO",
    "event_coordunit": "arcseconds",
    "event_coord1": 930.0,
    "event_coord2": -132.0,
}
# a second, distinct flare 2 min after the X8.2 in another AR: must not merge (AR numbers conflict)
OTHER_AR_DETECTIVE = {
    "event_type": "FL",
    "event_starttime": "2017-09-10T16:01:00",
    "event_peaktime": "2017-09-10T16:08:00",
    "event_endtime": "2017-09-10T16:20:00",
    "frm_name": "Flare Detective - Trigger Module",
    "obs_observatory": "SDO",
    "ar_noaanum": 12674,
    "kb_archivid": "ivo://helio-informatics.org/FL_FlareDetective-TriggerModule_20170910_160100_3",
    "hpc_x": -310.5,
    "hpc_y": 120.25,
}
M25_SWPC = {
    "event_type": "FL",
    "event_starttime": "2011-06-07T06:16:00",
    "event_peaktime": "2011-06-07T06:41:00",
    "event_endtime": "2011-06-07T06:59:00",
    "fl_goescls": "M2.5",
    "frm_name": "SWPC",
    "obs_observatory": "GOES",
    "ar_noaanum": 11226,
    "kb_archivid": "ivo://helio-informatics.org/FL_SWPC_20110607_061600_11226",
    "kb_archivdate": "2011-06-08T00:30:02",
    "event_coordsys": "UTC-HGS-TOPO",  # SWPC's S22W54, heliographic: not an HPC position
    "event_coordunit": "degrees",
    "event_coord1": 54.0,
    "event_coord2": -22.0,
    "event_coord3": None,
}
M25_SSW = {
    "event_type": "FL",
    "event_starttime": "2011-06-07T06:16:00",
    "event_peaktime": "2011-06-07T06:41:00",
    "event_endtime": "2011-06-07T06:59:00",
    "fl_goescls": "M2.5",
    "frm_name": "SSW Latest Events",
    "obs_observatory": "SDO",
    "ar_noaanum": 11226,
    "kb_archivid": "ivo://helio-informatics.org/FL_SSWLatestEvents_20110607_061600_1",
    "kb_archivdate": "2011-06-07T09:10:00",
    "hpc_x": 706.0,
    "hpc_y": -358.0,
    "event_coordsys": "UTC-HPC-TOPO",
    "event_coordunit": "arcseconds",
    "event_coord1": 706.0,
    "event_coord2": -358.0,
    "event_coord3": None,
}
AR_ROW = {  # not a flare: dropped
    "event_type": "AR",
    "event_starttime": "2011-06-07T00:00:00",
    "event_peaktime": "2011-06-07T00:00:00",
    "event_endtime": "2011-06-08T00:00:00",
    "frm_name": "NOAA SWPC Observer",
    "ar_noaanum": 11226,
    "kb_archivid": "ivo://helio-informatics.org/AR_SWPC_20110607_11226",
}

ALL = [X82_SWPC, X82_SSW, X82_DETECTIVE, OTHER_AR_DETECTIVE, M25_SWPC, M25_SSW, AR_ROW]


def write_page(path, result, overmax=False):
    path.write_text(json.dumps({"result": result, "overmax": overmax}))
    return path


# ---- schema ---------------------------------------------------------------------------------------------


def _schema():
    data = resources.files("sunpy.net.hek") / "data"
    unit = json.loads((data / "unit_properties.json").read_text())["attributes"]
    coord = json.loads((data / "coord_properties.json").read_text())["attributes"]
    return {a["name"]: a for a in unit + coord}


def _valid_for_fl(attr: dict) -> bool:
    # event-type columns carry a per-type key ("req"/"opt"); chain-code/point columns (hpc_coord, ...)
    # carry none and apply to every event type (sunpy parses them for any response)
    return attr.get("FL") in ("req", "opt") or attr.get("is_chaincode", False)


def test_fields_read_exist_in_sunpy_fl_schema():
    schema = _schema()
    unknown = [f for f in hek.FIELDS_READ if f not in schema or not _valid_for_fl(schema[f])]
    assert unknown == []
    assert set(hek.DERIVED_FIELDS) == {"hpc_x", "hpc_y"}
    assert not set(hek.DERIVED_FIELDS) & set(schema)  # genuinely not schema fields


def test_fixture_fields_exist_in_sunpy_fl_schema():
    schema = _schema()
    used = {k for ev in ALL for k in ev}
    unknown = sorted(
        f for f in used - set(hek.DERIVED_FIELDS) if f not in schema or not _valid_for_fl(schema[f])
    )
    assert unknown == []
    assert schema["ar_noaanum"]["type"] == "long" and schema["fl_goescls"]["type"] == "string"


# ---- reading ----------------------------------------------------------------------------------------------


def test_read_single_file(tmp_path):
    f = write_page(tmp_path / "hek.json", ALL)
    df = hek.read_hek_json(f)
    assert list(df.columns) == list(hek.COLUMNS)
    assert len(df) == 6  # the AR row is dropped
    assert df["peak"].is_monotonic_increasing
    assert df["peak"].dtype == np.dtype("datetime64[ns]")
    swpc = df[(df.frm_name == "SWPC") & (df.goes_class == "X8.2")].iloc[0]
    assert swpc.peak == pd.Timestamp("2017-09-10T16:06:00")
    assert swpc.start == pd.Timestamp("2017-09-10T15:35:00")
    assert swpc.end == pd.Timestamp("2017-09-10T16:31:00")
    assert swpc.goes_flux == pytest.approx(8.2e-4)
    assert swpc.event_id == X82_SWPC["kb_archivid"]
    assert swpc.observatory == "GOES"
    assert np.isnan(swpc.hpc_x) and np.isnan(swpc.hpc_y)  # HGS event_coord is not taken as HPC
    assert swpc.ar_noaanum == 12673
    assert swpc.source_file == str(f)
    m25 = df[df.goes_class == "M2.5"]
    assert set(m25.frm_name) == {"SWPC", "SSW Latest Events"}
    assert m25.goes_flux.tolist() == pytest.approx([2.5e-5, 2.5e-5])


def test_positions_scalar_point_and_event_coord(tmp_path):
    df = hek.read_hek_json(write_page(tmp_path / "hek.json", ALL)).set_index("event_id")
    # scalar hpc_x/hpc_y
    assert (df.loc[M25_SSW["kb_archivid"], ["hpc_x", "hpc_y"]] == [706.0, -358.0]).all()
    # hpc_coord POINT(x y)
    assert df.loc[X82_SSW["kb_archivid"], "hpc_x"] == pytest.approx(933.6)
    assert df.loc[X82_SSW["kb_archivid"], "hpc_y"] == pytest.approx(-134.4)
    # event_coord1/2 in UTC-HPC-TOPO
    assert df.loc[X82_DETECTIVE["kb_archivid"], "hpc_x"] == pytest.approx(930.0)
    assert df.loc[X82_DETECTIVE["kb_archivid"], "hpc_y"] == pytest.approx(-132.0)


def test_missing_optional_fields(tmp_path):
    df = hek.read_hek_json(write_page(tmp_path / "hek.json", ALL)).set_index("event_id")
    det = df.loc[X82_DETECTIVE["kb_archivid"]]
    assert det.goes_class == "" and np.isnan(det.goes_flux)  # empty fl_goescls
    assert pd.isna(det.ar_noaanum)  # ar_noaanum 0 -> NA
    other = df.loc[OTHER_AR_DETECTIVE["kb_archivid"]]
    assert other.goes_class == "" and pd.isna(other.kb_archivdate)  # fields absent altogether
    assert df["ar_noaanum"].dtype == "Int64"


def test_id_without_kb_archivid_is_stable(tmp_path):
    ev = {k: v for k, v in M25_SWPC.items() if k != "kb_archivid"}
    a = hek.read_hek_json(write_page(tmp_path / "a.json", [ev]))
    b = hek.read_hek_json(write_page(tmp_path / "b.json", [ev]))
    assert a.event_id[0] == b.event_id[0] == "SWPC@2011-06-07T06:41:00"


def test_timezone_suffix_is_utc(tmp_path):
    ev = dict(M25_SWPC, event_peaktime="2011-06-07T08:41:00+02:00", event_starttime="2011-06-07T06:16:00Z")
    df = hek.read_hek_json(write_page(tmp_path / "a.json", [ev]))
    assert df.peak[0] == pd.Timestamp("2011-06-07T06:41:00")
    assert df.start[0] == pd.Timestamp("2011-06-07T06:16:00")


def test_paging_two_files_and_folder(tmp_path):
    pages = tmp_path / "pages"
    pages.mkdir()
    # page 1 says overmax (more pages follow); page 2 completes the response
    p1 = write_page(pages / "page1.json", ALL[:3], overmax=True)
    p2 = write_page(pages / "page2.json", ALL[3:], overmax=False)
    whole = hek.read_hek_json(write_page(tmp_path / "whole.json", ALL))
    listed = hek.read_hek_json([p1, p2])
    folder = hek.read_hek_json(pages)
    cols = [c for c in hek.COLUMNS if c != "source_file"]
    pd.testing.assert_frame_equal(listed[cols], whole[cols])
    pd.testing.assert_frame_equal(folder, listed)
    assert set(listed.source_file) == {str(p1), str(p2)}


def test_folder_pages_in_natural_name_order(tmp_path):
    for i in range(1, 12):  # page10/page11 must come after page2..page9
        write_page(tmp_path / f"page{i}.json", [dict(M25_SWPC, kb_archivid=f"id{i}")], overmax=i < 11)
    assert len(hek.read_hek_json(tmp_path)) == 11
    # reversed order -> the last page read (page1) says overmax
    files = sorted(tmp_path.glob("*.json"), key=lambda p: -int(p.stem[4:]))
    with pytest.raises(FlaresynthError, match="page1.json.*overmax"):
        hek.read_hek_json(files)


def test_overmax_true_is_incomplete(tmp_path):
    f = write_page(tmp_path / "cut.json", ALL, overmax=True)
    with pytest.raises(FlaresynthError, match=r"cut\.json: key 'overmax'.*incomplete"):
        hek.read_hek_json(f)
    assert len(hek.read_hek_json(f, allow_incomplete=True)) == 6


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("{not json", r"bad\.json: not valid JSON"),
        ('{"overmax": false}', r"bad\.json: key 'result': missing"),
        ('[{"event_type": "FL"}]', r"bad\.json: key 'result': missing"),
        ('{"result": {}, "overmax": false}', r"bad\.json: key 'result': expected a list"),
        ('{"result": [], "overmax": "no"}', r"bad\.json: key 'overmax'"),
    ],
)
def test_malformed_files(tmp_path, content, pattern):
    f = tmp_path / "bad.json"
    f.write_text(content)
    with pytest.raises(FlaresynthError, match=pattern):
        hek.read_hek_json(f)


def test_missing_file_and_empty_folder(tmp_path):
    with pytest.raises(FlaresynthError, match=r"nope\.json: file not found"):
        hek.read_hek_json(tmp_path / "nope.json")
    with pytest.raises(FlaresynthError, match="no \\*.json page files"):
        hek.read_hek_json(tmp_path)


def test_event_without_peak_names_file_index_field(tmp_path):
    ev = {k: v for k, v in M25_SSW.items() if k != "event_peaktime"}
    f = write_page(tmp_path / "x.json", [M25_SWPC, ev])
    with pytest.raises(FlaresynthError, match=r"x\.json: event 1 field 'event_peaktime': missing"):
        hek.read_hek_json(f)


@pytest.mark.parametrize(
    ("field", "value", "pattern"),
    [
        ("event_starttime", "2011-06-07T25:99:00", "event 0 field 'event_starttime'.*not a time"),
        ("event_peaktime", "yesterday-ish", "event 0 field 'event_peaktime'.*not a time"),
        ("fl_goescls", "Q9.9", "event 0 field 'fl_goescls'.*not a GOES class"),
        ("fl_goescls", "M", None),  # a bare letter is a valid class (M1.0)
        ("hpc_coord", "POLYGON((1 2, 3 4))", "event 0 field 'hpc_coord'.*POINT"),
        ("ar_noaanum", "AR eleven", "event 0 field 'ar_noaanum'"),
    ],
)
def test_bad_values(tmp_path, field, value, pattern):
    f = write_page(tmp_path / "v.json", [dict(M25_SWPC, **{field: value})])
    if pattern is None:
        assert hek.read_hek_json(f).goes_flux[0] == pytest.approx(1e-5)
        return
    with pytest.raises(FlaresynthError, match=r"v\.json: " + pattern):
        hek.read_hek_json(f)


def test_empty_result(tmp_path):
    df = hek.read_hek_json(write_page(tmp_path / "e.json", []))
    assert len(df) == 0 and list(df.columns) == list(hek.COLUMNS)
    assert df["peak"].dtype == np.dtype("datetime64[ns]")
    out = hek.deduplicate(df)
    assert len(out) == 0 and "n_reports" in out.columns


# ---- de-duplication ---------------------------------------------------------------------------------------


def test_deduplicate_two_reporters(tmp_path):
    events = hek.read_events(write_page(tmp_path / "hek.json", ALL))
    assert len(events) == 3  # X8.2 (3 reports), the other-AR flare, M2.5 (2 reports)
    x = events[events.goes_class == "X8.2"].iloc[0]
    assert x.frm_name == "SWPC" and x.event_id == X82_SWPC["kb_archivid"]
    assert x.n_reports == 3
    assert x.reporters == "SWPC; SSW Latest Events; Flare Detective - Trigger Module"
    # representative keeps its own times; position borrowed from the best-ranked other report (SSW)
    assert x.peak == pd.Timestamp("2017-09-10T16:06:00") and x.start == pd.Timestamp("2017-09-10T15:35:00")
    assert (x.hpc_x, x.hpc_y) == pytest.approx((933.6, -134.4))
    m = events[events.goes_class == "M2.5"].iloc[0]
    assert (m.frm_name, m.n_reports, m.ar_noaanum) == ("SWPC", 2, 11226)
    assert (m.hpc_x, m.hpc_y) == (706.0, -358.0)
    other = events[events.ar_noaanum == 12674].iloc[0]
    assert other.n_reports == 1 and other.goes_class == ""


def test_deduplicate_order_independent(tmp_path):
    a = hek.read_events(write_page(tmp_path / "a.json", ALL))
    b = hek.read_events(write_page(tmp_path / "b.json", ALL[::-1]))
    cols = [c for c in a.columns if c != "source_file"]
    pd.testing.assert_frame_equal(a[cols], b[cols])


def test_deduplicate_tolerance_and_ar_rules(tmp_path):
    late = dict(M25_SSW, event_peaktime="2011-06-07T06:52:00", kb_archivid="late")  # 11 min after SWPC
    f = write_page(tmp_path / "t.json", [M25_SWPC, late])
    assert len(hek.read_events(f)) == 2
    assert len(hek.read_events(f, peak_tolerance=np.timedelta64(12, "m"))) == 1
    # missing AR on one side does not conflict; it is filled from the other report
    no_ar = dict(M25_SWPC, ar_noaanum=None)
    out = hek.read_events(write_page(tmp_path / "n.json", [no_ar, M25_SSW]))
    assert len(out) == 1 and out.ar_noaanum[0] == 11226 and out.frm_name[0] == "SWPC"
    # conflicting AR numbers never merge, even at equal peaks
    out = hek.read_events(write_page(tmp_path / "c.json", [M25_SWPC, dict(M25_SSW, ar_noaanum=11227)]))
    assert len(out) == 2


def test_two_swpc_flares_close_in_time_stay_apart(tmp_path):
    second = dict(M25_SWPC, event_peaktime="2011-06-07T06:45:00", fl_goescls="C3.1", kb_archivid="second")
    out = hek.read_events(write_page(tmp_path / "s.json", [M25_SWPC, second]))
    assert sorted(out.goes_class) == ["C3.1", "M2.5"]
    assert out.n_reports.tolist() == [1, 1]


def test_ranking_class_then_archive_date(tmp_path):
    # two non-priority reporters: the one with a GOES class wins even though archived later
    a = dict(X82_DETECTIVE, kb_archivid="a", kb_archivdate="2017-09-10T16:20:00", ar_noaanum=12673)
    b = dict(
        X82_DETECTIVE,
        kb_archivid="b",
        kb_archivdate="2017-09-12T00:00:00",
        fl_goescls="X8.0",
        frm_name="asainz",
        ar_noaanum=12673,
    )
    out = hek.read_events(write_page(tmp_path / "r.json", [a, b]))
    assert out.event_id.tolist() == ["b"]
    # both classless: the earlier archive date wins
    b2 = dict(b, fl_goescls="")
    out = hek.read_events(write_page(tmp_path / "r2.json", [b2, a]))
    assert out.event_id.tolist() == ["a"]


def test_deduplicate_rejects_foreign_table():
    with pytest.raises(FlaresynthError, match="columns"):
        hek.deduplicate(pd.DataFrame({"peak": []}))


# ---- live query (no network) -----------------------------------------------------------------------------


def _no_network(*args, **kwargs):
    raise AssertionError("network used")


def test_query_building_is_offline(monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    params = hek.hek_query_params("2017-09-10", "2017-09-11", min_class="m1.0", frm_name="SWPC")
    assert len(params) == 1
    p = params[0]
    assert p["event_type"] == "fl" and p["cosec"] == "2" and p["cmd"] == "search"
    assert p["event_starttime"] == "2017-09-10T00:00:00" and p["event_endtime"] == "2017-09-11T00:00:00"
    pairs = {(p[f"param{i}"], p[f"operator{i}"], p[f"value{i}"]) for i in range(2)}
    assert pairs == {("FRM_Name", "=", "SWPC"), ("FL_GOESCls", ">=", "M1.0")}
    with pytest.raises(FlaresynthError, match="GOES class"):
        hek.hek_query("2017-09-10", "2017-09-11", min_class="big")


def test_fetch_writes_readable_response(tmp_path, monkeypatch):
    """fetch_hek with a stand-in client that returns sunpy's real HEKTable built from the fixture."""
    from astropy.table import Table
    from sunpy.net.hek import HEKTable
    from sunpy.util import dict_keys_same

    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    rows = [M25_SWPC, M25_SSW]

    class FakeClient:
        queries = []

        def search(self, *query):
            self.queries.append(query)
            return HEKTable._from_search(Table(dict_keys_same([dict(r) for r in rows])))

    client = FakeClient()
    out = hek.fetch_hek("2011-06-07", "2011-06-08", tmp_path / "sub" / "hek.json", client=client)
    doc = json.loads(out.read_text())
    assert doc["overmax"] is False and len(doc["result"]) == 2
    assert not list(out.parent.glob(".*tmp*"))  # atomic write left no temporary file
    events = hek.read_events(out)
    assert len(events) == 1
    e = events.iloc[0]
    assert (e.goes_class, e.peak, e.ar_noaanum, e.hpc_x) == (
        "M2.5",
        pd.Timestamp("2011-06-07T06:41"),
        11226,
        706.0,
    )
    assert len(client.queries) == 1


def test_fetch_network_error_is_one_line(tmp_path):
    class Broken:
        def search(self, *query):
            raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    with pytest.raises(FlaresynthError, match="HEK query .*request failed"):
        hek.fetch_hek("2011-06-07", "2011-06-08", tmp_path / "h.json", client=Broken())
    assert not (tmp_path / "h.json").exists()
