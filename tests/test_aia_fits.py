"""AIA FITS → SDOMLv2 geometry, on the real files shipped by sunpy and sunkit-image."""

from __future__ import annotations

import gzip
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from scipy import ndimage
from sunkit_image.data.test import get_test_filepath as sunkit_test_file
from sunpy.data.test import get_test_filepath

from flaresynth.dataset import BuildConfig, preprocess_frames
from flaresynth.errors import FlaresynthError
from flaresynth.sources.aia_fits import AIAFitsFolder, read_aia_fits
from flaresynth.transforms import IntensityTransform

AIA_171 = get_test_filepath("aia_171_level1.fits")
AIA_CUTOUT = sunkit_test_file("aia_171_cutout.fits")
EIT_171 = get_test_filepath("EIT/efz20040301.010016_s.fits")


def expected_radius(size: int) -> float:
    return 976 / 4.8 * size / 512


def fit_limb(image: np.ndarray, r_guess: float) -> tuple[float, float, float]:
    """Centre (x, y) and radius in pixels of a circle fitted to the 171 Å limb-brightening ridge.

    Along 360 rays from the array centre the ridge is the brightest point between 0.85 and 1.15 of the
    guessed radius; a least-squares (Kasa) circle is fitted to those points, iteratively dropping points
    more than 3 robust sigma off the circle (off-limb loops, active regions at the limb).
    """
    c = (image.shape[0] - 1) / 2
    radii = np.linspace(0.85 * r_guess, 1.15 * r_guess, 301)
    theta = np.linspace(0, 2 * np.pi, 360, endpoint=False)[:, None]
    x, y = c + radii * np.cos(theta), c + radii * np.sin(theta)
    k = np.argmax(ndimage.map_coordinates(image, [y, x], order=1), axis=1)
    px, py = x[np.arange(360), k], y[np.arange(360), k]
    keep = np.ones(360, bool)
    for _ in range(5):
        a = np.c_[2 * px[keep], 2 * py[keep], np.ones(keep.sum())]
        (x0, y0, d), *_ = np.linalg.lstsq(a, px[keep] ** 2 + py[keep] ** 2, rcond=None)
        r = np.sqrt(d + x0**2 + y0**2)
        resid = np.hypot(px - x0, py - y0) - r
        keep = np.abs(resid) < 3 * 1.4826 * np.median(np.abs(resid[keep]))
    assert keep.sum() > 250  # a real fit to most of the limb, not to a few points
    return x0, y0, r


@pytest.fixture(scope="module")
def aia512():
    return read_aia_fits(AIA_171)


@pytest.mark.parametrize("size", [512, 256, 128])
def test_real_frame_becomes_a_centred_976_arcsec_disk(size):
    image, header = read_aia_fits(AIA_171, out_size=size)
    assert image.shape == (size, size) and image.dtype == np.float32
    x0, y0, r = fit_limb(image, expected_radius(size))
    centre = (size - 1) / 2
    assert abs(x0 - centre) < 1 and abs(y0 - centre) < 1
    assert r == pytest.approx(expected_radius(size), rel=0.02)
    # the input disk was 971.8"/19.18"/px = 50.7 px across its radius: it really was rescaled
    assert header["RSUN_OBS"] / header["CDELT1"] == pytest.approx(expected_radius(size), rel=1e-9)


def test_header_in_output_geometry(aia512):
    _, h = aia512
    assert h["T_OBS"] == "2011-02-15T00:00:01.34Z"
    assert h["EXPTIME"] == pytest.approx(2.000191) and h["WAVELNTH"] == 171 and h["QUALITY"] == 0
    assert h["RSUN_OBS"] == pytest.approx(971.812597)
    assert h["CDELT1"] == h["CDELT2"] == pytest.approx(4.8 * 971.812597 / 976)
    assert h["CRPIX1"] == h["CRPIX2"] == 256.5 and h["CRVAL1"] == 0 and h["CROTA2"] == 0
    assert h["NAXIS1"] == h["NAXIS2"] == 512 and h["R_SUN"] == pytest.approx(976 / 4.8)
    assert h["PIXLUNIT"] == "DN/s" and h["DEG_COR"] == 1.0
    assert h["INSTRUME"] == "AIA_3" and "FSN" in h and "DSUN_OBS" in h  # the rest of the header is kept
    assert "BITPIX" not in h and "BLANK" not in h
    json.dumps(h)  # storable as SDOMLv2 list attributes


def test_pixels_are_dn_per_second(aia512):
    image, header = aia512
    raw = fits.getdata(AIA_171).astype(float)
    yy, xx = np.mgrid[:128, :128]
    raw_disk = np.hypot(xx - 63.5, yy - 63.5) < 0.8 * 971.8 / 19.18
    yy, xx = np.mgrid[:512, :512]
    out_disk = np.hypot(xx - 255.5, yy - 255.5) < 0.8 * expected_radius(512)
    assert np.median(image[out_disk]) == pytest.approx(np.median(raw[raw_disk]) / 2.000191, rel=0.03)
    assert image.max() <= raw.max() / 2.000191 + 1e-3


def _copy_with(tmp_path, name, data=None, **cards):
    with fits.open(AIA_171) as hdul:
        header = hdul[0].header.copy()
        data = hdul[0].data.copy() if data is None else data
    for key, value in cards.items():
        key = key.replace("_dash_", "-")
        if value is None:
            header.remove(key, ignore_missing=True)
        else:
            header[key] = value
    path = tmp_path / name
    fits.PrimaryHDU(data, header).writeto(path)
    return path


def _disk(size=512, frac=1.05):
    yy, xx = np.mgrid[:size, :size]
    return np.hypot(xx - (size - 1) / 2, yy - (size - 1) / 2) < frac * expected_radius(size)


def test_crpix_shift_is_undone(tmp_path, aia512):
    """Cropping the input moves the Sun in the array; CRPIX follows, and the output must not move."""
    data = fits.getdata(AIA_171)
    header = fits.getheader(AIA_171)
    path = _copy_with(tmp_path, "cropped.fits", data=data[9:, :-4].copy(), CRPIX2=header["CRPIX2"] - 9)
    moved, _ = read_aia_fits(path)
    np.testing.assert_allclose(moved[_disk()], aia512[0][_disk()], rtol=1e-4, atol=1e-2)


def test_crota2_rotates_to_solar_north(tmp_path, aia512):
    """np.rot90 maps FITS pixel (x, y) -> (y, n-1-x): the image axes turn by -90 deg, so CROTA2 gains +90."""
    data = fits.getdata(AIA_171)
    h = fits.getheader(AIA_171)
    n = data.shape[0]
    path = _copy_with(tmp_path, "rot.fits", data=np.rot90(data).copy(), CROTA2=h["CROTA2"] + 90,
                      CRPIX1=h["CRPIX2"], CRPIX2=n + 1 - h["CRPIX1"])
    turned, _ = read_aia_fits(path)
    np.testing.assert_allclose(turned[_disk()], aia512[0][_disk()], rtol=1e-4, atol=1e-2)
    wrong = _copy_with(tmp_path, "rot_wrong.fits", data=np.rot90(data).copy(), CROTA2=h["CROTA2"] - 90,
                       CRPIX1=h["CRPIX2"], CRPIX2=n + 1 - h["CRPIX1"])
    assert not np.allclose(read_aia_fits(wrong)[0][_disk()], aia512[0][_disk()], rtol=0.05)


def test_crval_pointing_offset_moves_the_disk(tmp_path, aia512):
    """CRVAL says where the reference pixel points; claiming +40 px (east-west) and -25 px (south-north)
    of pointing offset must move the disk by exactly that in the recentred output (+x = west, +y = north,
    row 0 is the south edge as in FITS)."""
    _, h = aia512
    raw = fits.getheader(AIA_171)
    path = _copy_with(tmp_path, "offset.fits", CRVAL1=raw["CRVAL1"] + 40 * h["CDELT1"],
                      CRVAL2=raw["CRVAL2"] - 25 * h["CDELT2"])
    moved, _ = read_aia_fits(path)
    disk = _disk()[25:, :-40]  # where the disk was, in the unshifted output
    np.testing.assert_allclose(moved[:-25, 40:][disk], aia512[0][25:, :-40][disk], rtol=1e-4, atol=1e-2)


def test_missing_pixels_are_masked_not_averaged_in(tmp_path):
    """Like SDOMLv2, pixels <= 0 or NaN are masked: the resampled value is the mean of the valid pixels, so
    20 % of missing pixels scattered over the 8x-shrunk cutout must not darken it by 20 %."""
    with fits.open(AIA_CUTOUT) as hdul:
        data = hdul[1].data.astype(np.float64)
        header = hdul[1].header.copy()
    fits.PrimaryHDU(data, header).writeto(tmp_path / "clean.fits")
    holes = data.copy()
    rng = np.random.default_rng(3)
    holes[rng.random(data.shape) < 0.1] = 0.0
    holes[rng.random(data.shape) < 0.1] = np.nan
    fits.PrimaryHDU(holes, header).writeto(tmp_path / "holes.fits")
    clean, _ = read_aia_fits(tmp_path / "clean.fits")
    holed, _ = read_aia_fits(tmp_path / "holes.fits")
    inside = clean > 0
    assert np.isfinite(holed).all()
    assert np.median(holed[inside] / clean[inside]) == pytest.approx(1.0, abs=0.01)
    assert np.percentile(np.abs(holed[inside] / clean[inside] - 1), 95) < 0.1


def test_downsampling_averages_instead_of_aliasing(tmp_path):
    """The cutout shrinks 8x. A +-30 DN checkerboard added to it averages out in every 8x8 block; point
    sampling (no block mean) would keep +-15 DN/s of it in the output."""
    with fits.open(AIA_CUTOUT) as hdul:
        data = hdul[1].data.astype(np.float64)
        header = hdul[1].header.copy()
    yy, xx = np.mgrid[: data.shape[0], : data.shape[1]]
    plain = tmp_path / "cutout.fits"
    fits.PrimaryHDU(data, header).writeto(plain)
    checker = tmp_path / "checker.fits"
    fits.PrimaryHDU(data + 30.0 * (-1.0) ** (xx + yy), header).writeto(checker)
    a, _ = read_aia_fits(plain)
    b, _ = read_aia_fits(checker)
    assert np.abs(a - b).max() < 0.5  # DN/s; the checkerboard alone is 15 DN/s


def test_rate_files_are_not_divided_again(tmp_path, aia512):
    path = _copy_with(tmp_path, "rate.fits", PIXLUNIT="DN/s")
    image, _ = read_aia_fits(path)
    np.testing.assert_allclose(image, aia512[0] * 2.000191, rtol=1e-5, atol=1e-3)


def test_rice_compressed_cutout():
    image, h = read_aia_fits(AIA_CUTOUT)
    assert image.shape == (512, 512) and image.dtype == np.float32
    assert h["EXPTIME"] == pytest.approx(2.0, abs=0.01) and h["T_OBS"] == "2013-03-10T12:00:12.341Z"
    with fits.open(AIA_CUTOUT) as hdul:
        raw = hdul[1].data.astype(float)
        rh = hdul[1].header
    assert isinstance(fits.open(AIA_CUTOUT)[1], fits.CompImageHDU)
    # the sub-field lands where its WCS says, at 4.8"·RSUN_OBS/976 per output pixel
    scale = rh["CDELT1"] / (4.8 * rh["RSUN_OBS"] / 976)
    x_edges = 255.5 + (np.array([0, raw.shape[1] - 1]) - (rh["CRPIX1"] - 1)) * scale
    y_edges = 255.5 + (np.array([0, raw.shape[0] - 1]) - (rh["CRPIX2"] - 1)) * scale
    rows, cols = np.nonzero(image > 0)
    assert abs(cols.min() - x_edges[0]) <= 1.5 and abs(cols.max() - x_edges[1]) <= 1.5
    assert abs(rows.min() - y_edges[0]) <= 1.5 and abs(rows.max() - y_edges[1]) <= 1.5
    r0, r1, c0, c1 = rows.min() + 2, rows.max() - 2, cols.min() + 2, cols.max() - 2
    inner = image[r0: r1 + 1, c0: c1 + 1]
    assert inner.min() > 0
    # the same area in the raw DN image (output pixel edges mapped back through the WCS)
    x0, x1 = ((np.array([c0, c1 + 1]) - 0.5 - 255.5) / scale + rh["CRPIX1"] - 1 + 0.5).round().astype(int)
    y0, y1 = ((np.array([r0, r1 + 1]) - 0.5 - 255.5) / scale + rh["CRPIX2"] - 1 + 0.5).round().astype(int)
    assert inner.mean() == pytest.approx(raw[y0:y1, x0:x1].mean() / rh["EXPTIME"], rel=0.01)  # DN -> DN/s
    assert image.max() <= raw.max() / rh["EXPTIME"]


def test_non_aia_file_is_refused_in_one_line():
    with pytest.raises(FlaresynthError) as e:
        read_aia_fits(EIT_171)
    msg = str(e.value)
    assert "\n" not in msg and "efz20040301.010016_s.fits" in msg and "INSTRUME" in msg and "'EIT'" in msg


def test_bad_exposure_and_bad_files(tmp_path):
    with pytest.raises(FlaresynthError, match=r"zero_exp\.fits: EXPTIME: 0\.0 s is not positive"):
        read_aia_fits(_copy_with(tmp_path, "zero_exp.fits", EXPTIME=0.0))
    with pytest.raises(FlaresynthError, match=r"no_exp\.fits: EXPTIME: None"):
        read_aia_fits(_copy_with(tmp_path, "no_exp.fits", EXPTIME=None))
    with pytest.raises(FlaresynthError, match=r"no_rsun\.fits: RSUN_OBS: missing"):
        read_aia_fits(_copy_with(tmp_path, "no_rsun.fits", RSUN_OBS=None, DSUN_OBS=None))
    (tmp_path / "junk.fits").write_bytes(b"not a fits file at all" * 200)
    with pytest.raises(FlaresynthError, match="junk.fits: not a readable FITS file"):
        read_aia_fits(tmp_path / "junk.fits")


def test_rsun_from_dsun_when_rsun_obs_is_missing(tmp_path, aia512):
    image, h = read_aia_fits(_copy_with(tmp_path, "dsun.fits", RSUN_OBS=None))
    assert h["RSUN_OBS"] == pytest.approx(971.81, rel=1e-3)  # asin(RSUN_REF / DSUN_OBS)
    np.testing.assert_allclose(image[_disk()], aia512[0][_disk()], rtol=0.02, atol=5)


@pytest.fixture
def fits_folder(tmp_path):
    """Copies of the real frame at 00:12, 00:24, 00:00 (names out of time order), scaled 1x, 2x, 3x by time;
    one without T_OBS, one gzipped, plus a 193 Å copy, the EIT file and a text file that must be ignored."""
    folder = tmp_path / "aia"
    folder.mkdir()
    data = fits.getdata(AIA_171)
    specs = {  # name: (minute, T_OBS written?)
        "c.fits": (12, True), "a.fits": (24, False), "b.fits": (0, True),
    }
    for name, (minute, with_tobs) in specs.items():
        date_obs = f"2011-02-15T00:{minute:02d}:00.34"
        t_obs = f"2011-02-15T00:{minute:02d}:01.34Z" if with_tobs else None
        _copy_with(folder, name, data=data * (1 + minute // 12), DATE_dash_OBS=date_obs, T_OBS=t_obs)
    with open(folder / "c.fits", "rb") as src, gzip.open(folder / "e.fits.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    fits.setval(folder / "c.fits", "T_OBS", value="2011-02-15T00:36:01.34Z")  # c: 00:36; e.fits.gz: 00:12
    _copy_with(folder, "other_193.fits", WAVELNTH=193)
    shutil.copy(EIT_171, folder / "eit.fts")
    (folder / "readme.txt").write_text("not an image")
    return folder


def test_fits_folder_interface(fits_folder):
    folder = AIAFitsFolder(fits_folder, channel="171A")
    assert len(folder) == 4 and folder.frame_shape == (512, 512) and folder.channel == "171A"
    assert folder.n_other_channel == 1 and folder.n_not_aia == 1
    assert [f.name for f in folder.files] == ["b.fits", "e.fits.gz", "a.fits", "c.fits"]
    expected = np.array(["2011-02-15T00:00:01.34", "2011-02-15T00:12:01.34", "2011-02-15T00:24:01.34",
                         "2011-02-15T00:36:01.34"], dtype="datetime64[ns]")
    np.testing.assert_array_equal(folder.times, expected)
    assert folder.header(2)["T_OBS"] == "2011-02-15T00:24:01.34Z"  # DATE-OBS + EXPTIME/2, AIA's T_OBS
    df = folder.headers()
    assert list(df["T_OBS"].str[11:16]) == ["00:00", "00:12", "00:24", "00:36"]
    assert {"EXPTIME", "QUALITY", "DEG_COR", "WAVELNTH"} <= set(df.columns)

    base = read_aia_fits(AIA_171)[0]
    frames = folder.read_many([3, 0, 2])
    ratios = [float(f.sum() / base.sum()) for f in frames]
    np.testing.assert_allclose(ratios, [2, 1, 3], rtol=1e-5)  # c (x2 data, 00:36), b (x1), a (x3)
    np.testing.assert_array_equal(folder.read(1), read_aia_fits(fits_folder / "e.fits.gz")[0])
    np.testing.assert_array_equal(folder.select("2011-02-15T00:10", "2011-02-15T00:30"), [1, 2])
    np.testing.assert_array_equal(folder.to_dask([3, 0, 2]).compute(scheduler="sync"), frames)
    batch = folder.batch([3, 0, 2])  # what a dask.distributed worker reads itself: absolute file paths
    assert all(Path(f).is_absolute() for f in batch.files)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(batch)).read(), frames)
    assert len(AIAFitsFolder(fits_folder / "a.fits")) == 1
    assert len(AIAFitsFolder(fits_folder, channel="193A")) == 1


def test_distributed_preprocessing_of_a_fits_folder_equals_threads(fits_folder, tmp_path):
    """A dask.distributed worker reads its FITS files itself and writes its rows: the same bytes as threads."""
    distributed = pytest.importorskip("distributed")
    folder, order = AIAFitsFolder(fits_folder), np.array([3, 0, 2, 1])
    cfg, transform = BuildConfig(size=32, batch_frames=2), IntensityTransform.for_channel("171A")
    preprocess_frames(folder, order, tmp_path / "threads.npy", cfg, transform, None, False)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        preprocess_frames(folder, order, tmp_path / "dist.npy", cfg, transform, cluster.scheduler_address, False)
    threads = np.load(tmp_path / "threads.npy")
    assert threads.shape == (4, 1, 32, 32) and np.ptp(threads) > 0
    np.testing.assert_array_equal(np.load(tmp_path / "dist.npy"), threads)


def test_fits_folder_errors(fits_folder, tmp_path):
    for name in ("a.fits", "b.fits", "c.fits", "e.fits.gz"):
        (fits_folder / name).unlink()
    with pytest.raises(FlaresynthError) as e:
        AIAFitsFolder(fits_folder)
    msg = str(e.value)
    assert "\n" not in msg and str(fits_folder) in msg
    assert "no SDO/AIA 171A FITS file (of 2 FITS files: 1 of other AIA channels, 1 not AIA)" in msg
    with pytest.raises(FlaresynthError, match="does not exist"):
        AIAFitsFolder(tmp_path / "nowhere")
    with pytest.raises(FlaresynthError, match="channel 'blue'"):
        AIAFitsFolder(fits_folder, channel="blue")
