"""Several AIA channels at once: alignment of their frame lists, the (N, C, H, W) dataset, bad channel lists.

The store is a layout-faithful SDOMLv2 container with three channels (94, 171, 193 Å) whose frames are the real
AIA 171 Å frame sunpy ships, scaled per channel and re-timed: each channel at its own seconds of the slot, with
frames missing in one channel only and one 193 Å frame taken too late to pair. GOES and HEK are the real
2011-06-07 files of ``test_dataset``.
"""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from sunpy.data.test import get_test_filepath as sunpy_file

from flaresynth.dataset import BuildConfig, build_dataset, open_dataset
from flaresynth.errors import FlaresynthError
from flaresynth.sources.aia_fits import read_aia_fits
from flaresynth.sources.frames import T_OBS_FORMAT
from flaresynth.sources.images import open_channels
from flaresynth.sources.sdoml import write_sdoml_frames
from flaresynth.transforms import IntensityTransform, parse_channels
from toy import cli, cli_here, one_line_error

SDAC_M = sunpy_file("go1520110607.fits")
HEK = {"result": [{"event_type": "FL", "frm_name": "SWPC", "obs_observatory": "GOES", "obs_instrument": "XRS",
                   "event_starttime": "2011-06-07T06:16:00", "event_peaktime": "2011-06-07T06:41:00",
                   "event_endtime": "2011-06-07T06:59:00", "fl_goescls": "M2.5", "ar_noaanum": 11226,
                   "kb_archivid": "ivo://helio-informatics.org/FL_SWPC_20110607_0641"}], "overmax": False}
SLOTS = pd.date_range("2011-06-07T00:00:00", periods=24, freq="60min")
OFFSET_S = {"94A": 2.1, "171A": 5.4, "193A": 6.8}
SCALE = {"94A": 0.01, "171A": 1.0, "193A": 0.8}
MISSING = {"94A": {3, 10}, "193A": {10, 15}}  # slots lost in one channel (slot 10 in both)
LATE = ("193A", 20, 35 * 60)  # 193 Å's slot-20 frame comes 35 min late: no partner within half an hour


def _times(channel):
    keep = [k for k in range(len(SLOTS)) if k not in MISSING.get(channel, set())]
    t = SLOTS[keep] + pd.Timedelta(seconds=OFFSET_S[channel])
    if channel == LATE[0]:
        t = t.where(np.array(keep) != LATE[1], t + pd.Timedelta(seconds=LATE[2]))
    return t


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi")
    frame, header = read_aia_fits(sunpy_file("aia_171_level1.fits"))
    frame = frame[::4, ::4]  # 128 px is enough here
    rng = np.random.default_rng(3)
    store = root / "sdomlv2.zarr"
    for channel in ("94A", "171A", "193A"):
        times = _times(channel)
        order = rng.permutation(len(times))  # the real store is not time-ordered
        frames = np.stack([frame * SCALE[channel] * (0.9 + 0.2 * rng.random()) for _ in order]).astype(np.float32)
        headers = [{"T_OBS": times[i].strftime(T_OBS_FORMAT)[:-5] + "Z", "QUALITY": 0, "EXPTIME": 2.0,
                    "WAVELNTH": int(channel[:-1]), "DEG_COR": 1.0, "PIXLUNIT": "DN/s"} for i in order]
        write_sdoml_frames(store, 2011, channel, frames, headers, chunk_frames=5)
    hek = root / "hek.json"
    hek.write_text(json.dumps(HEK))
    return {"store": store, "hek": hek, "root": root}


def test_alignment_drops_exactly_the_frames_missing_in_a_channel(archive):
    frames = open_channels(archive["store"], ["171A", "94A", "193A"])
    dropped = MISSING["94A"] | MISSING["193A"] | {LATE[1]}
    kept = [k for k in range(len(SLOTS)) if k not in dropped]
    assert list(frames.times) == list((SLOTS[kept] + pd.Timedelta(seconds=OFFSET_S["171A"])).to_numpy())
    a = frames.alignment
    assert a["reference"] == "171A" and a["tolerance_s"] == 1800.0  # half the hourly cadence
    assert a["n_reference_frames"] == 24 and a["n_dropped"] == len(dropped) == 24 - a["n_aligned"]
    assert a["missing_per_channel"] == {"94A": 2, "193A": 3}
    # each channel's own frame, at its own seconds: 94 Å is 1 % of 171 Å in this store
    block = frames.read_many([0, 5])
    assert block.shape == (2, 3, 128, 128)
    ratio = np.median(block[:, 1] / np.maximum(block[:, 0], 1e-3), axis=(1, 2))
    assert np.all((ratio > 0.007) & (ratio < 0.014))
    h = frames.headers()
    assert {"T_OBS_171A", "T_OBS_94A", "T_OBS_193A"} <= set(h.columns) and (h["QUALITY"] == 0).all()
    # a tolerance wide enough takes the late frame back
    wide = open_channels(archive["store"], ["171A", "94A", "193A"], align_tol_s=36 * 60)
    assert wide.alignment["missing_per_channel"]["193A"] == 2


@pytest.fixture(scope="module")
def built(archive):
    out = archive["root"] / "ds"
    r = cli("dataset", "build", "--sdoml", str(archive["store"]), "--goes", str(SDAC_M), "--hek", str(archive["hek"]),
            "--out", str(out), "--channels", "94A,171A,193A", "--size", "32", "--split-by", "chronological",
            "--buffer-days", "0", "--quiet-per-day", "24")
    assert r.returncode == 0, r.stderr
    return out, r.stdout


def test_build_with_several_channels(built):
    out, stdout = built
    assert "aligned within 1800 s" in stdout
    ds = open_dataset(out)
    m = ds.manifest
    assert ds.images.shape[1:] == (3, 32, 32) and ds.channels == ["94A", "171A", "193A"]
    assert [t["channel"] for t in m["transform"]] == ["94A", "171A", "193A"]
    assert m["alignment"]["reference"] == "94A" and m["alignment"]["n_dropped"] == 2
    # the 94 Å reference keeps 22 frames, of which 193 Å lacks slots 15 and 20
    assert len(ds.labels) <= 20
    # one invertible transform per channel: back to DN/s, each channel in its own range
    transforms = ds.transforms()
    dn = [transforms[c].inverse(ds.images[:, c]) for c in range(3)]
    centre = np.s_[:, 12:20, 12:20]
    assert 0.005 < np.median(dn[0][centre]) / np.median(dn[1][centre]) < 0.02
    np.testing.assert_allclose(transforms[1].forward(dn[1]), ds.images[:, 1], atol=1e-5)
    assert transforms[0] == IntensityTransform.for_channel("94A")
    # steps that handle one channel say so
    with pytest.raises(FlaresynthError, match="3 channels .*one-channel dataset only"):
        ds.transform()


def test_distributed_build_of_several_channels_equals_the_threads_build(archive, built, tmp_path):
    """Workers read each channel's own frames and write their rows of images.npy themselves; batches of 4 frames
    so both workers write into the file."""
    distributed = pytest.importorskip("distributed")
    cfg = BuildConfig(channels=["94A", "171A", "193A"], size=32, split_by="chronological", buffer_days=0,
                      quiet_per_day=24, batch_frames=4)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        manifest = build_dataset(str(archive["store"]), [str(SDAC_M)], str(archive["hek"]), tmp_path / "ds", cfg,
                                 scheduler=cluster.scheduler_address, progress=False)
        workers_used = len(cluster.scheduler_info["workers"])
    threads = open_dataset(built[0])
    np.testing.assert_array_equal(np.asarray(open_dataset(tmp_path / "ds").images), np.asarray(threads.images))
    assert manifest["scheduler"] == cluster.scheduler_address and workers_used == 2
    assert len(threads.labels) > 2 * cfg.batch_frames  # several batches, spread over the workers


@pytest.mark.parametrize(("channels", "expect"), [
    ("171A,335A", "335A"),  # the store lacks it: say which are there
    ("171A,94A,171A", "171A is listed twice"),
    ("171A,ultraviolet", "not an AIA channel"),
])
def test_bad_channel_lists(archive, tmp_path, channels, expect):
    out = tmp_path / "ds"
    line = one_line_error(cli_here("dataset", "build", "--sdoml", str(archive["store"]), "--goes", str(SDAC_M),
                                   "--hek", str(archive["hek"]), "--out", str(out), "--channels", channels))
    assert expect in line
    if "335A" in channels:
        assert "found: 94A, 171A, 193A" in line
    assert not out.exists() and not list(tmp_path.iterdir())


def test_fits_folders_pair_channels_and_refuse_other_instruments(tmp_path):
    folder = tmp_path / "fits"
    folder.mkdir()
    src = sunpy_file("aia_171_level1.fits")
    shutil.copy(src, folder / "aia_171.fits")
    with fits.open(src) as hdul:
        hdul[0].header["WAVELNTH"] = 193
        hdul[0].header["T_OBS"] = "2011-02-15T00:00:02.34Z"  # a few seconds after the 171 Å frame
        hdul.writeto(folder / "aia_193.fits")
    frames = open_channels(folder, ["171A", "193A"])
    assert len(frames) == 1 and frames.read_many([0]).shape == (1, 2, 512, 512)
    shutil.copy(sunpy_file("EIT/efz20040301.000010_s.fits"), folder / "eit.fits")
    with pytest.raises(FlaresynthError, match="eit.fits: INSTRUME: 'EIT'.*mixes instruments"):
        open_channels(folder, ["171A", "193A"])
    with pytest.raises(FlaresynthError, match="--channels 94A: .*AIA channels there: 171A, 193A"):
        open_channels(folder, ["171A", "94A"])


def test_channel_lists_are_parsed_strictly():
    assert parse_channels("94a, 131,171A,193Å") == ("94A", "131A", "171A", "193A")
    for bad, message in (("", "empty"), ("171A,171", "listed twice"), ("171A,x", "not an AIA channel")):
        with pytest.raises(FlaresynthError, match=message):
            parse_channels(bad)
    with pytest.raises(FlaresynthError, match="304A: not available"):
        parse_channels("171A,304A", allowed=("171A", "193A"))


def test_five_channel_samples_are_one_aia_fits_file_per_channel(tmp_path):
    """A hand-made 5-channel samples array through the samples writer every generator uses: one FITS file per
    image and channel, each an AIA map of its own wavelength, exposure-normalised, with the request."""
    import sunpy.map
    from sunpy.map.sources import AIAMap

    from flaresynth.samples import image_writer, open_samples, write_samples

    channels = ["94A", "131A", "171A", "193A", "211A"]
    transforms = [IntensityTransform.for_channel(c) for c in channels]
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (2, 5, 16, 16)).astype(np.float32)
    table = pd.DataFrame({"label": ["C", "M"], "requested_flux": [np.nan, np.nan], "seed": [3, 4]})
    extra = image_writer(images, table, transforms, channels, "goes5", "test-model",
                         lambda row: {"SAMPLER": ("ddim", "test")}, "test", grid=False)
    manifest = {"generator": "test", "classes": list("ABCMX"), "scheme": "goes5",
                "transform": [t.to_dict() for t in transforms], "channels": channels}
    out = write_samples(tmp_path / "s", images, table, manifest, extra=extra)
    s = open_samples(out)
    files = s.table["file"].iloc[1].split(";")
    assert files == [f"fits/00001_M_{c}.fits" for c in channels]
    assert len(list((out / "fits").glob("*.fits"))) == 10
    for c, (channel, name) in enumerate(zip(channels, files)):
        m = sunpy.map.Map(out / name)
        assert isinstance(m, AIAMap) and m.wavelength.to_value("angstrom") == int(channel[:-1])
        assert m.meta["waveunit"] == "angstrom" and m.exposure_time.to_value("s") == 1.0
        assert m.meta["goescls"] == "M" and m.meta["seed"] == 4 and m.meta["channels"] == ",".join(channels)
        assert m.meta["instrume"] == {"94A": "AIA_4", "131A": "AIA_1", "171A": "AIA_3", "193A": "AIA_2",
                                      "211A": "AIA_2"}[channel]
        np.testing.assert_allclose(m.data, transforms[c].inverse(images[1, c]), rtol=1e-6)
    with pytest.raises(FlaresynthError, match="5 channel names and 4 transforms"):
        image_writer(images, table, transforms[:4], channels, "goes5", "x", lambda row: {}, "x")


def test_samples_of_another_channel_count_are_refused(built, tmp_path):
    """Evaluation takes every channel (tests/test_channels_eval.py); samples of another channel count than the
    dataset are refused with one line, nothing written."""
    from flaresynth.samples import write_samples

    out, _ = built
    ds = open_dataset(out)
    table = pd.DataFrame({"label": ["C", "M"], "requested_flux": [np.nan, np.nan], "seed": [0, 1]})
    manifest = {"generator": "test", "classes": list(ds.classes), "scheme": ds.scheme,
                "transform": ds.manifest["transform"][1], "channels": ds.channels[1:2]}
    write_samples(tmp_path / "s1", np.zeros((2, 1, 32, 32), np.float32), table, manifest)
    line = one_line_error(cli_here("evaluate", "--real", str(out), "--generated", str(tmp_path / "s1"), "--out",
                                   str(tmp_path / "e1")))
    assert "channels: 1 (171A), but the dataset has 3 (94A, 171A, 193A)" in line
    assert not (tmp_path / "e1").exists()
