"""End-to-end dataset build on real files.

The image store is a layout-faithful SDOMLv2 container (year groups, unsorted T_OBS, list attributes, Blosc
zstd) whose frames are the one real full-disk AIA 171 Å frame sunpy ships, re-timed. GOES data are the real
GOES-16 flx1s file of the 2017-09-10 X8.2 flare and the real GOES-15 SDAC FITS of 2011-06-07 (M2.5 flare).
The HEK response is hand-entered in the real response shape (the two SWPC events; times are the public record,
not fetched), plus a duplicate report from a second reporter.
"""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sunkit_instruments.data.test import get_test_filepath as sunkit_file
from sunpy.data.test import get_test_filepath as sunpy_file

from flaresynth.dataset import open_dataset
from flaresynth.sources.aia_fits import read_aia_fits
from flaresynth.sources.frames import T_OBS_FORMAT
from flaresynth.sources.goes import read_xrs_files
from flaresynth.sources.sdoml import write_sdoml_frames

GOES16_X = sunkit_file("sci_xrsf-l2-flx1s_g16_d20170910_v2-1-0_truncated.nc")
SDAC_M = sunpy_file("go1520110607.fits")

HEK_RESPONSE = {
    "result": [
        {  # SWPC event list: 2011-06-07 M2.5 (hand-entered)
            "event_type": "FL", "frm_name": "SWPC", "obs_observatory": "GOES", "obs_instrument": "XRS",
            "event_starttime": "2011-06-07T06:16:00", "event_peaktime": "2011-06-07T06:41:00",
            "event_endtime": "2011-06-07T06:59:00", "fl_goescls": "M2.5", "ar_noaanum": 11226,
            "kb_archivid": "ivo://helio-informatics.org/FL_SWPC_20110607_0641",
        },
        {  # the same flare from a second reporter, with a position
            "event_type": "FL", "frm_name": "SSW Latest Events", "obs_observatory": "GOES", "obs_instrument": "XRS",
            "event_starttime": "2011-06-07T06:16:00", "event_peaktime": "2011-06-07T06:41:00",
            "event_endtime": "2011-06-07T06:59:00", "fl_goescls": "M2.5", "ar_noaanum": 11226,
            "hpc_x": 615.0, "hpc_y": -306.0, "kb_archivid": "ivo://helio-informatics.org/FL_SSW_20110607_0641",
        },
        {  # SWPC: 2017-09-10 X8.2 (hand-entered)
            "event_type": "FL", "frm_name": "SWPC", "obs_observatory": "GOES", "obs_instrument": "XRS",
            "event_starttime": "2017-09-10T15:35:00", "event_peaktime": "2017-09-10T16:06:00",
            "event_endtime": "2017-09-10T16:31:00", "fl_goescls": "X8.2", "ar_noaanum": 12673,
            "kb_archivid": "ivo://helio-informatics.org/FL_SWPC_20170910_1606",
        },
    ],
    "overmax": False,
}


def _frame_times():
    day = pd.date_range("2011-06-07T00:00:05", periods=24, freq="60min")
    flare_2011 = pd.date_range("2011-06-07T06:00:05", "2011-06-07T07:30:00", freq="6min")
    flare_2017 = pd.date_range("2017-09-10T15:30:05", "2017-09-10T17:25:00", freq="6min")
    return day.union(flare_2011).union(flare_2017)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("archive")
    frame, header = read_aia_fits(sunpy_file("aia_171_level1.fits"))
    times = _frame_times()
    rng = np.random.default_rng(1)
    store = root / "sdomlv2.zarr"
    for year in (2011, 2017):
        sel = np.flatnonzero(times.year == year)
        sel = rng.permutation(sel)  # the real store is not time-ordered
        frames = np.stack([frame * (0.9 + 0.2 * rng.random()) for _ in sel]).astype(np.float32)
        headers = []
        for i in sel:
            h = {k: header[k] for k in ("EXPTIME", "WAVELNTH", "RSUN_OBS", "CDELT1", "CDELT2", "CRPIX1", "CRPIX2")}
            h.update(T_OBS=times[i].strftime(T_OBS_FORMAT)[:-5] + "Z", QUALITY=0, DEG_COR=1.0, PIXLUNIT="DN/s")
            headers.append(h)
        write_sdoml_frames(store, year, "171A", frames, headers, chunk_frames=7)
    hek = root / "hek.json"
    hek.write_text(json.dumps(HEK_RESPONSE))
    return {"store": store, "hek": hek, "root": root}


def flaresynth(*args):
    return subprocess.run([sys.executable, "-m", "flaresynth", *args], capture_output=True, text=True, timeout=300)


# two observing days six years apart: two day blocks, one for train and one for test (no val split)
SPLIT_ARGS = ["--split-by", "day", "--buffer-days", "0", "--val-fraction", "0"]


def build_args(archive, out, *extra):
    return ["dataset", "build", "--sdoml", str(archive["store"]), "--goes", str(GOES16_X), "--goes", str(SDAC_M),
            "--hek", str(archive["hek"]), "--out", str(out), *SPLIT_ARGS, *extra]


@pytest.fixture(scope="module")
def built(archive):
    out = archive["root"] / "ds"
    r = flaresynth(*build_args(archive, out, "--json"))
    assert r.returncode == 0, r.stderr
    return out, json.loads(r.stdout)


def test_build_writes_a_labelled_float_dataset(built):
    out, manifest = built
    ds = open_dataset(out)
    n = len(ds.labels)
    assert ds.images.shape == (n, 1, 64, 64) and ds.images.dtype == np.float32
    assert -1.0 <= float(ds.images.min()) and float(ds.images.max()) <= 1.0
    assert manifest["counts"]["all"]["X"] > 0 and manifest["counts"]["all"]["M"] + manifest["counts"]["all"]["C"] > 0
    sel = ds.labels["selection"].value_counts()
    assert sel["flare"] > 0 and sel["quiet"] > 0
    # flare frames are within 30 min of their HEK peak, and the duplicate report collapsed into one event
    flare = ds.labels[ds.labels["selection"] == "flare"]
    dt = (pd.to_datetime(flare["time"]) - pd.to_datetime(flare["event_peak"])).abs()
    assert dt.max() <= pd.Timedelta("30min")
    assert flare["event_id"].nunique() == 2


def test_manifest_records_absolute_source_paths_whatever_the_working_directory(archive, tmp_path):
    root = archive["root"]
    args = ["dataset", "build", "--sdoml", "sdomlv2.zarr", "--goes", str(GOES16_X), "--goes", str(SDAC_M),
            "--hek", "hek.json", "--out", str(tmp_path / "ds"), *SPLIT_ARGS]
    r = subprocess.run([sys.executable, "-m", "flaresynth", *args], capture_output=True, text=True, timeout=300, cwd=root)
    assert r.returncode == 0, r.stderr
    sources = open_dataset(tmp_path / "ds").manifest["sources"]
    assert sources["images"] == str(archive["store"].resolve()) and sources["hek"] == str(archive["hek"].resolve())


def test_labels_are_the_goes_flux_at_the_image_time(built):
    out, _ = built
    ds = open_dataset(out)
    xrs = read_xrs_files([str(GOES16_X), str(SDAC_M)], scale="true")
    times = pd.to_datetime(ds.labels["time"], utc=True).dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    expected = xrs.flux_at(times)
    np.testing.assert_allclose(ds.labels["label_flux"].to_numpy(), expected, rtol=1e-5)
    assert (ds.labels["label_rule"] == "instant").all()
    # the X8.2 peak (true scale ~1.3e-3 at 16:06) is labelled X; 2011 quiet frames are B or C
    near_peak = ds.labels[(pd.to_datetime(ds.labels["time"]) - pd.Timestamp("2017-09-10T16:06Z")).abs() < pd.Timedelta("4min")]
    assert (near_peak["label"] == "X").all() and len(near_peak) >= 1
    quiet = ds.labels[ds.labels["selection"] == "quiet"]
    assert set(quiet["label"]) <= {"B", "C"}


def test_disk_is_centred_in_the_64px_images(built):
    ds = open_dataset(built[0])
    img = np.asarray(ds.images[0, 0])
    on = img > np.percentile(img, 60)  # the disk is brighter than the off-limb corona
    yy, xx = np.nonzero(on)
    assert abs(xx.mean() - 31.5) < 1.5 and abs(yy.mean() - 31.5) < 1.5


def test_splits_are_whole_day_blocks_listed_in_the_manifest(built):
    ds = open_dataset(built[0])
    lab = ds.labels
    group_day = pd.to_datetime(lab["event_peak"].where(lab["event_peak"] != "", lab["time"])).dt.floor("D")
    assert lab.groupby(group_day)["split"].nunique().max() == 1
    assert set(lab["split"]) == {"train", "test"}
    splits = ds.manifest["splits"]
    assert splits["rule"] == "day" and len(splits["blocks"]) == 2
    assert sorted(b["split"] for b in splits["blocks"]) == ["test", "train"]
    assert sum(b["n_images"] for b in splits["blocks"]) == len(lab)


def test_hek_class_of_a_goes15_event_is_divided_by_0_7_under_the_true_scale(built, archive, tmp_path):
    """SWPC's M2.5 of 2011-06-07 was measured on SWPC-scaled GOES-15 data: M3.6 on the true scale (the real
    SDAC file's own XRS-B peak is M3.7 true); the GOES-16 era X8.2 stays X8.2."""
    lab = open_dataset(built[0]).labels
    events = lab[lab["event_id"] != ""].groupby("hek_class")["event_class"].first().to_dict()
    assert events == {"M2.5": "M3.6", "X8.2": "X8.2"}
    assert open_dataset(built[0]).manifest["flux_convention"]["scale"] == "true"
    r = flaresynth(*build_args(archive, tmp_path / "swpc", "--scale", "swpc", "--label", "event", "--json"))
    assert r.returncode == 0, r.stderr
    lab = open_dataset(tmp_path / "swpc").labels
    flare = lab[lab["event_id"] != ""]
    assert set(zip(flare["hek_class"], flare["event_class"])) == {("M2.5", "M2.5"), ("X8.2", "X8.2")}
    assert np.allclose(flare.loc[flare["hek_class"] == "M2.5", "label_flux"], 2.5e-5)


def test_info_prints_the_blocks(built):
    r = flaresynth("dataset", "info", str(built[0]))
    assert r.returncode == 0, r.stderr
    assert "split by day blocks" in r.stdout and "2011-06-07T00:00:00Z" in r.stdout


def test_rerun_with_same_inputs_is_a_no_op(archive, built):
    out, manifest = built
    before = (out / "images.npy").stat().st_mtime_ns
    r = flaresynth(*build_args(archive, out, "--json"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["up_to_date"] is True
    assert (out / "images.npy").stat().st_mtime_ns == before


def test_info_prints_counts(built):
    r = flaresynth("dataset", "info", str(built[0]), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["n_images"] == sum(info["counts"]["all"].values())


@pytest.mark.parametrize(
    ("change", "expect_in_message"),
    [
        ({"goes": "/nonexistent/goes.nc"}, "/nonexistent/goes.nc"),
        ({"hek_content": {"overmax": False}}, "result"),
        ({"extra": ["--channel", "193A"]}, "193A"),
        ({"extra": ["--start", "2015-01-01", "--end", "2015-01-02"]}, "no usable frame"),
        ({"extra": ["--task", "forecast", "--issue-every", "0"]}, "--issue-every 0"),
        ({"extra": ["--split-by", "day", "--buffer-days", "2"]}, "not shorter than a day block"),
        ({"extra": ["--split-by", "week"]}, "a split would be empty"),
    ],
)
def test_bad_input_is_one_line_and_leaves_no_folder(archive, tmp_path, change, expect_in_message):
    out = tmp_path / "ds"
    hek = archive["hek"]
    if "hek_content" in change:
        hek = tmp_path / "bad_hek.json"
        hek.write_text(json.dumps(change["hek_content"]))
    args = ["dataset", "build", "--sdoml", str(archive["store"]), "--goes", change.get("goes", str(GOES16_X)),
            "--hek", str(hek), "--out", str(out), *change.get("extra", [])]
    r = flaresynth(*args)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and expect_in_message in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ds")] == []


def test_distributed_scheduler_gives_the_same_images(archive, built, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        out = tmp_path / "ds_dask"
        r = flaresynth(*build_args(archive, out, "--scheduler", cluster.scheduler_address, "--json"))
        assert r.returncode == 0, r.stderr
    a = open_dataset(built[0])
    b = open_dataset(out)
    np.testing.assert_array_equal(np.asarray(a.images), np.asarray(b.images))
    assert b.manifest["scheduler"] == cluster.scheduler_address


def test_a_worker_that_does_not_see_the_output_folder_is_one_line(archive, tmp_path):
    """dask workers write their rows of images.npy themselves, so a worker without the client's filesystem (as on
    another machine without a shared one) stops the build before any task, with one line, and leaves nothing."""
    distributed = pytest.importorskip("distributed")
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs mount namespaces (root) to give a worker a filesystem of its own")
    parent = tmp_path / "out"
    parent.mkdir()
    with distributed.LocalCluster(n_workers=0, dashboard_address=":0") as cluster:
        # the worker sees an empty tmpfs where the output folder is, and every other file as this process does
        worker = subprocess.Popen(["unshare", "-m", "sh", "-c", f"mount -t tmpfs none '{parent}' && exec "
                                   f"{sys.executable} -m distributed.cli.dask_worker {cluster.scheduler_address} "
                                   "--nthreads 1 --no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with distributed.Client(cluster) as client:
                client.wait_for_workers(1, timeout=60)
            r = flaresynth(*build_args(archive, parent / "ds", "--scheduler", cluster.scheduler_address))
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "cannot open" in lines[0] and str(parent) in lines[0] and "same paths" in lines[0], lines[0]
    assert list(parent.iterdir()) == []  # the temporary folder is gone, no dataset


def test_thin_small_events_keeps_whole_small_events_and_every_large_and_quiet_frame():
    from flaresynth.dataset import BuildConfig, thin_small_events
    from flaresynth.errors import FlaresynthError

    rows = [("flare", f"c{i}", f"C{i + 1}.0") for i in range(8) for _ in range(2)]
    rows += [("flare", "m0", "M2.0")] * 3 + [("flare", "x0", "X1.0")] + [("quiet", "", "")] * 5
    table = pd.DataFrame(rows, columns=["selection", "event_id", "event_class"])
    kept, record = thin_small_events(table, 0.5, seed=0)
    assert record == {"fraction": 0.5, "classes": "ABC", "events": 8, "events_kept": 4, "frames_dropped": 8}
    small = kept[kept["event_id"].str.startswith("c")]
    assert small["event_id"].nunique() == 4 and (small.groupby("event_id").size() == 2).all()  # whole events
    assert (kept["event_id"] == "m0").sum() == 3 and (kept["event_id"] == "x0").sum() == 1
    assert (kept["selection"] == "quiet").sum() == 5
    again, _ = thin_small_events(table, 0.5, seed=0)
    other, _ = thin_small_events(table, 0.5, seed=3)
    assert again.equals(kept) and set(other["event_id"]) != set(kept["event_id"])  # the seed picks the events
    assert len(thin_small_events(table, 1.0)[0]) == len(table)
    assert not thin_small_events(table, 0.0)[0]["event_id"].str.startswith("c").any()
    with pytest.raises(FlaresynthError, match="--small-event-fraction 1.5"):
        BuildConfig(small_event_fraction=1.5).validate()
