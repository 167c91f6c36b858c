"""SDOMLv2 reader on a layout-faithful store built from the one real full-disk AIA 171 Å frame.

The fixture is *not* SDOML data: it is a container in the exact SDOMLv2 layout (zarr v2, ``<year>/171A``,
float32 (N, 512, 512), Blosc zstd bitshuffle, per-frame list attributes, frames stored out of time order)
whose frames are sunpy's real ``aia_171_level1.fits`` brought to 512 px by ``read_aia_fits`` and scaled by
a per-frame factor, so a frame's mean encodes its time rank and can be checked after sorting.
"""

from __future__ import annotations

import importlib.util
import json
import pickle
import shutil

import dask
import fsspec
import numpy as np
import pandas as pd
import pytest
import zarr
import zarr.storage
from sunpy.data.test import get_test_filepath

from flaresynth.errors import FlaresynthError
from flaresynth.sources.aia_fits import AIAFitsFolder, read_aia_fits
from flaresynth.sources.frames import parse_t_obs
from flaresynth.sources.images import open_images
from flaresynth.sources.sdoml import SDOMLStore, write_sdoml_frames

N_2011, N_2012, CHUNK = 10, 17, 7
N = N_2011 + N_2012
T0 = np.datetime64("2011-12-31T23:00:00.340", "ns")
STEP = np.timedelta64(6, "m")
SCALE_STEP = 0.25  # frame of time rank k is the real frame times (1 + 0.25 k)


def _t_obs(k: int) -> str:
    s = str((T0 + k * STEP).astype("datetime64[ms]"))[:-1]  # AIA: centiseconds
    if k == 3:
        return s.split(".")[0] + "Z"  # no fractional part
    if k == 12:
        return s  # no 'Z'
    return s + "Z"


@pytest.fixture(scope="module")
def real_frame():
    image, header = read_aia_fits(get_test_filepath("aia_171_level1.fits"), out_size=512)
    return image, header


@pytest.fixture(scope="module")
def store_path(tmp_path_factory, real_frame):
    """Two year groups, shuffled storage order, chunks of 7 frames, plus a 193A array in 2011."""
    base, base_header = real_frame
    root = tmp_path_factory.mktemp("sdoml") / "sdomlv2_test.zarr"
    rng = np.random.default_rng(7)
    storage = {}
    for year, ranks in ((2011, np.arange(N_2011)), (2012, np.arange(N_2011, N))):
        stored = rng.permutation(ranks)  # stored position -> time rank
        frames = np.stack([base * (1 + SCALE_STEP * k) for k in stored]).astype(np.float32)
        headers = []
        for k in stored:
            h = dict(base_header)
            h.update(T_OBS=_t_obs(int(k)), FRAMEID=int(k), QUALITY=1 if k == 5 else 0,
                     DATAMEAN=float(frames[len(headers)].mean()))
            headers.append(h)
        write_sdoml_frames(root, year, "171A", frames, headers, chunk_frames=CHUNK)
        storage[year] = stored
    write_sdoml_frames(root, 2011, "193A", base[None] * 0.5, [dict(base_header, T_OBS=_t_obs(0))], chunk_frames=1)
    return root, storage


@pytest.fixture(scope="module")
def store(store_path):
    return SDOMLStore(store_path[0], channel="171A")


def _rank_from_mean(frame, base_mean):
    return (frame.mean() / base_mean - 1) / SCALE_STEP


def test_fixture_has_the_sdomlv2_layout(store_path):
    root, storage = store_path
    zarray = json.loads((root / "2011" / "171A" / ".zarray").read_text())
    assert zarray["zarr_format"] == 2 and zarray["dtype"] == "<f4"
    assert zarray["shape"] == [N_2011, 512, 512] and zarray["chunks"] == [CHUNK, 512, 512]
    assert zarray["compressor"]["id"] == "blosc" and zarray["compressor"]["cname"] == "zstd"
    assert (root / "2012" / "171A" / "2.0.0").exists()  # 17 frames / 7 per chunk, '.' separated keys
    attrs = json.loads((root / "2011" / "171A" / ".zattrs").read_text())
    assert len(attrs["T_OBS"]) == N_2011 and attrs["T_OBS"] != sorted(attrs["T_OBS"])  # really unsorted
    assert attrs["FRAMEID"] == storage[2011].tolist()


def test_times_sorted_and_parsed(store):
    assert len(store) == N and store.channel == "171A" and store.frame_shape == (512, 512)
    assert store.times.dtype == np.dtype("datetime64[ns]")
    expected = T0 + np.arange(N) * STEP
    expected[3] = expected[3].astype("datetime64[s]")  # that T_OBS had no fractional part
    np.testing.assert_array_equal(store.times, expected)
    assert np.all(np.diff(store.times) > np.timedelta64(0))


def test_chunks_are_read_from_the_store(store):
    assert store.chunks == {2011: (CHUNK, 512, 512), 2012: (CHUNK, 512, 512)}


def test_header_and_pixels_stay_aligned_after_sorting(store, real_frame):
    base_mean = float(real_frame[0].mean())
    for i in range(N):
        h = store.header(i)
        assert h["FRAMEID"] == i
        frame = store.read(i)
        assert frame.dtype == np.float32 and frame.shape == (512, 512)
        assert _rank_from_mean(frame, base_mean) == pytest.approx(i, abs=1e-3)
        assert h["DATAMEAN"] == pytest.approx(float(frame.mean()), rel=1e-6)
    assert store.header(-1)["FRAMEID"] == N - 1
    assert store.header(0)["WAVELNTH"] == 171 and store.header(0)["PIXLUNIT"] == "DN/s"


def test_headers_table(store):
    df = store.headers()
    assert isinstance(df, pd.DataFrame) and len(df) == N
    assert {"T_OBS", "EXPTIME", "QUALITY", "DEG_COR", "WAVELNTH", "FRAMEID"} <= set(df.columns)
    np.testing.assert_array_equal(df["FRAMEID"].to_numpy(), np.arange(N))
    np.testing.assert_array_equal(np.nonzero(df["QUALITY"].to_numpy())[0], [5])  # kept, and visible
    np.testing.assert_array_equal(parse_t_obs(df["T_OBS"]), store.times)


def _logged_gets(monkeypatch):
    keys = []
    original = zarr.storage.LocalStore.get

    async def get(self, key, *args, **kwargs):
        keys.append(key)
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(zarr.storage.LocalStore, "get", get)
    return keys


def _chunk_key(storage, i):
    """Key of the chunk holding time rank i, from where the fixture stored it."""
    year = 2011 if i < N_2011 else 2012
    position = int(np.nonzero(storage[year] == i)[0][0])
    return f"{year}/171A/{position // CHUNK}.0.0"


def test_read_touches_only_its_chunk(store, store_path, monkeypatch):
    keys = _logged_gets(monkeypatch)
    store.read(13)
    assert keys == [_chunk_key(store_path[1], 13)]


def test_read_many_keeps_order_and_decompresses_each_chunk_once(store, store_path, real_frame, monkeypatch):
    base_mean = float(real_frame[0].mean())
    order = [20, 3, 3, 15, 0, 26, 9]
    frames = store.read_many(order)
    assert frames.shape == (len(order), 512, 512) and frames.dtype == np.float32
    ranks = [_rank_from_mean(f, base_mean) for f in frames]
    np.testing.assert_allclose(ranks, order, atol=1e-3)
    np.testing.assert_array_equal(frames[1], store.read(3))

    keys = _logged_gets(monkeypatch)
    everything = store.read_many(np.arange(N)[::-1])
    assert sorted(keys) == sorted({_chunk_key(store_path[1], i) for i in range(N)})  # each chunk once
    assert len(keys) == 5  # 2011: 2 chunks, 2012: 3 chunks
    np.testing.assert_allclose([_rank_from_mean(f, base_mean) for f in everything], np.arange(N)[::-1], atol=1e-3)


def test_batch_is_a_small_description_that_reads_the_same_frames(store, store_path, monkeypatch):
    """What a dask.distributed worker gets: where the frames live (a few hundred bytes, no pixels, no header
    lists), read back in another process by reopening the store; it reads each chunk and each array's .zarray
    once, never the per-frame attribute lists (~221 MB a year in SDOMLv2)."""

    order = np.array([26, 0, 11, 12, 13, 4, 4])
    batch = store.batch(order)
    blob = pickle.dumps(batch)
    assert len(blob) < 2000 and len(batch) == len(order)
    assert batch.location == str(store_path[0].resolve())  # absolute: a worker's working folder is not ours
    expected = store.read_many(order)
    keys = _logged_gets(monkeypatch)
    np.testing.assert_array_equal(pickle.loads(blob).read(), expected)
    chunks = {_chunk_key(store_path[1], int(i)) for i in order}
    assert sorted(keys) == sorted(chunks | {"2011/171A/.zarray", "2012/171A/.zarray"})


def test_batch_reads_a_store_whose_attribute_lists_would_not_parse(store_path, tmp_path):
    copy = tmp_path / "copy.zarr"
    shutil.copytree(store_path[0], copy)
    opened = SDOMLStore(copy)
    (copy / "2012" / "171A" / ".zattrs").write_text("{ not json")  # after opening: only the batch reads now
    np.testing.assert_array_equal(opened.batch([20, 1]).read(), opened.read_many([20, 1]))


def test_select(store):
    np.testing.assert_array_equal(store.select("2011-12-31T23:30", "2012-01-01T00:30"), np.arange(5, 15))
    np.testing.assert_array_equal(store.select(end="2011-12-31T23:06:00.34"), [0])
    np.testing.assert_array_equal(store.select(start=pd.Timestamp("2012-01-01T03:30+03:00")), np.arange(15, N))
    assert store.select("2013-01-01", "2014-01-01").size == 0


def test_to_dask_matches_read_many(store, store_path):
    order = [26, 0, 11, 12, 13, 4]
    lazy = store.to_dask(order)
    assert lazy.shape == (len(order), 512, 512) and lazy.dtype == np.float32
    np.testing.assert_array_equal(lazy.compute(scheduler="sync"), store.read_many(order))
    assert store.to_dask().shape == (N, 512, 512)
    # all frames of one stored chunk, in any order, become one read task
    one_chunk = [int(k) for k in store_path[1][2012][:CHUNK]][::-1]
    assert _read_tasks(store.to_dask(one_chunk)) == 1
    np.testing.assert_array_equal(dask.compute(store.to_dask(one_chunk), scheduler="sync")[0],
                                  store.read_many(one_chunk))
    # any order: one read task per (year, chunk) touched, output blocks still in the requested order
    shuffled = np.random.default_rng(1).permutation(N)
    lazy = store.to_dask(shuffled)
    assert _read_tasks(lazy) == 5 and max(lazy.chunks[0]) <= CHUNK
    np.testing.assert_array_equal(lazy.compute(scheduler="threads"), store.read_many(shuffled))


def _read_tasks(arr) -> int:
    return sum(1 for k in dict(arr.__dask_graph__()) if isinstance(k, tuple) and str(k[0]).endswith("-read"))


def test_years_and_channels(store_path):
    root, _ = store_path
    only_2012 = SDOMLStore(root, years=[2012])
    assert len(only_2012) == N_2012 and list(only_2012.chunks) == [2012]
    assert only_2012.header(0)["FRAMEID"] == N_2011
    other = SDOMLStore(root, channel="193A")
    assert len(other) == 1 and list(other.chunks) == [2011]
    with pytest.raises(FlaresynthError, match=r"array '2012/193A': missing; found: 171A"):
        SDOMLStore(root, channel="193A", years=[2011, 2012])


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def _small_store(root, headers_per_year):
    for year, headers in headers_per_year.items():
        frames = np.ones((len(headers), 8, 8), np.float32)
        write_sdoml_frames(root, year, "171A", frames, headers, chunk_frames=2)
    return root


def test_errors_name_store_and_field(store_path, tmp_path):
    root, _ = store_path
    with pytest.raises(FlaresynthError, match="does not exist") as e:
        SDOMLStore(tmp_path / "missing.zarr")
    assert "missing.zarr" in _one_line(e)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FlaresynthError, match="not a zarr group"):
        SDOMLStore(tmp_path / "empty")
    with pytest.raises(FlaresynthError) as e:
        SDOMLStore(root, channel="94A")
    assert _one_line(e).endswith("no array '94A' in any year group; found: 171A, 193A")
    assert str(root) in str(e.value)
    with pytest.raises(FlaresynthError) as e:
        SDOMLStore(root, years=[2011, 2013])
    assert "year 2013: requested but absent; found: 2011, 2012" in _one_line(e)

    no_tobs = _small_store(tmp_path / "no_tobs.zarr", {2011: [{"EXPTIME": 2.0}] * 3})
    with pytest.raises(FlaresynthError) as e:
        SDOMLStore(no_tobs)
    assert "'2011/171A'" in _one_line(e) and "attribute 'T_OBS': missing" in str(e.value)

    ok = [{"T_OBS": _t_obs(k)} for k in range(3)]
    short = _small_store(tmp_path / "short.zarr", {2011: ok})
    zarr.open_array(str(short / "2011" / "171A"), mode="a").attrs["T_OBS"] = [_t_obs(0), _t_obs(1)]
    with pytest.raises(FlaresynthError, match=r"attribute 'T_OBS': length 2 != 3 frames"):
        SDOMLStore(short)

    bad = _small_store(tmp_path / "bad.zarr", {2011: ok, 2012: [ok[0], ok[1], {"T_OBS": "2012.01.01_00:00:00_TAI"}]})
    with pytest.raises(FlaresynthError) as e:
        SDOMLStore(bad)
    assert "'2012/171A'" in _one_line(e) and "T_OBS[2]" in str(e.value) and "_TAI" in str(e.value)


def test_url_errors(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("s3fs", "gcsfs") else real_find_spec(name, *a))
    with pytest.raises(FlaresynthError) as e:
        SDOMLStore("s3://gov-nasa-hdrl-data1/contrib/fdl-sdoml/fdl-sdoml-v2/sdomlv2.zarr")
    assert "pip install s3fs" in _one_line(e)
    monkeypatch.setattr(importlib.util, "find_spec", real_find_spec)
    if importlib.util.find_spec("gcsfs") is None:
        with pytest.raises(FlaresynthError) as e:
            SDOMLStore("gs://fdl-sdoml-v2/sdomlv2_small.zarr")
        assert "pip install gcsfs" in _one_line(e) and "gs://fdl-sdoml-v2" in str(e.value)
    with pytest.raises(FlaresynthError, match="unsupported URL scheme 'ftp://'"):
        SDOMLStore("ftp://example.org/x.zarr")
    with pytest.raises(FlaresynthError, match="not a zarr group"):
        SDOMLStore("memory://flaresynth-test-nothing-here.zarr")


def test_s3_is_anonymous_by_default():
    """Up to the point of opening only: no request is made."""
    pytest.importorskip("s3fs")  # the 'remote' extra; the error without it is tested in test_url_errors
    from flaresynth.sources.sdoml import _open_store

    store, name = _open_store("s3://gov-nasa-hdrl-data1/contrib/fdl-sdoml/fdl-sdoml-v2/sdomlv2.zarr/", None)
    assert isinstance(store, zarr.storage.FsspecStore) and store.read_only
    assert store.fs.anon is True and name.endswith("sdomlv2.zarr")
    store, _ = _open_store("s3://bucket/x.zarr", {"anon": False, "profile": "me"})
    assert store.fs.anon is False


@pytest.fixture
def memory_url(store_path):
    fs = fsspec.filesystem("memory")
    fs.put(str(store_path[0]), "/flaresynth-test/sdoml.zarr", recursive=True)
    yield "memory://flaresynth-test/sdoml.zarr"
    fs.rm("/flaresynth-test", recursive=True)


def test_fsspec_url_path(memory_url, store):
    remote = SDOMLStore(memory_url)
    assert remote.source == memory_url
    np.testing.assert_array_equal(remote.times, store.times)
    assert remote.chunks == store.chunks
    assert remote.header(7) == store.header(7)
    np.testing.assert_array_equal(remote.read_many([25, 2]), store.read_many([25, 2]))
    np.testing.assert_array_equal(remote.to_dask([4]).compute(scheduler="sync"), store.read_many([4]))
    assert remote.batch([25, 2]).location == memory_url  # a URL is reopened as such (anonymously for s3/gs)
    np.testing.assert_array_equal(remote.batch([25, 2]).read(), store.read_many([25, 2]))
    assert len(SDOMLStore(memory_url, years=[2012])) == N_2012
    assert isinstance(open_images(memory_url), SDOMLStore)


def test_open_images_dispatch(store_path, tmp_path):
    root, _ = store_path
    opened = open_images(root, years=[2011])
    assert isinstance(opened, SDOMLStore) and len(opened) == N_2011
    with pytest.raises(FlaresynthError, match="does not exist"):
        open_images(tmp_path / "nowhere")
    fits_dir = tmp_path / "fits"
    fits_dir.mkdir()
    shutil.copy(get_test_filepath("aia_171_level1.fits"), fits_dir / "a.fits")
    assert isinstance(open_images(fits_dir), AIAFitsFolder)
    assert isinstance(open_images(fits_dir / "a.fits"), AIAFitsFolder)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(FlaresynthError, match="neither an SDOMLv2 zarr store nor a FITS file"):
        open_images(tmp_path / "notes.txt")
