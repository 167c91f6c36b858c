"""Tests of flaresynth.transforms, on hand-made arrays and the real AIA 171 Å frame shipped by sunpy."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from astropy.io import fits
from sunpy.data.test import get_test_filepath

from flaresynth.errors import FlaresynthError
from flaresynth.transforms import (
    CHANNEL_RANGES,
    IntensityTransform,
    apply_limb_mask,
    default_limb_radius,
    limb_mask,
    postprocess,
    preprocess,
    resize,
)


@pytest.fixture(scope="module")
def aia171_dn_per_s():
    """sunpy's real AIA 171 Å level-1 full-disk frame (2011-02-15, 128×128), in DN/s."""
    with fits.open(get_test_filepath("aia_171_level1.fits")) as hdul:
        data = hdul[0].data.astype(np.float64)
        header = hdul[0].header
    assert data.shape == (128, 128) and header["WAVELNTH"] == 171
    return data / header["EXPTIME"], header


# ---- intensity transform -------------------------------------------------------------------------------


def test_channel_ranges_table():
    assert CHANNEL_RANGES["171A"] == (5.0, 3500.0)
    assert CHANNEL_RANGES["1700A"] == (220.0, 5000.0)
    assert len(CHANNEL_RANGES) == 9 and all(0 < lo < hi for lo, hi in CHANNEL_RANGES.values())


@pytest.mark.parametrize("channel", sorted(CHANNEL_RANGES))
def test_round_trip_on_range(channel):
    t = IntensityTransform.for_channel(channel)
    dn = np.geomspace(t.lo, t.hi, 1001)
    x = t.forward(dn)
    assert x.dtype == np.float32
    assert x.min() == pytest.approx(-1.0, abs=1e-7) and x.max() == pytest.approx(1.0, abs=1e-7)
    # geometric spacing in DN/s is linear spacing after the log
    np.testing.assert_allclose(np.diff(x.astype(np.float64)), 2.0 / 1000, rtol=1e-3)
    back = t.inverse(x)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, dn, rtol=1e-5)


def test_forward_formula_by_hand():
    t = IntensityTransform.for_channel("171A")
    dn = 100.0
    expected = 2 * (math.log10(100) - math.log10(5)) / (math.log10(3500) - math.log10(5)) - 1
    assert float(t.forward(np.array(dn))) == pytest.approx(expected, abs=1e-7)
    assert float(t.forward(np.array(math.sqrt(5 * 3500)))) == pytest.approx(0.0, abs=1e-6)  # geometric middle


def test_clipping_both_ends():
    t = IntensityTransform.for_channel("171")
    x = t.forward(np.array([-10.0, 0.0, 4.999, 3500.01, 1e6]))
    np.testing.assert_array_equal(x, np.float32([-1, -1, -1, 1, 1]))
    # the inverse clips model outputs outside [-1, 1] first, so it stays inside [lo, hi]
    dn = t.inverse(np.array([-1.7, -1.0, 1.0, 1.3]))
    np.testing.assert_allclose(dn, [5.0, 5.0, 3500.0, 3500.0], rtol=1e-6)
    assert np.isnan(t.forward(np.array([np.nan])))[0]


def test_torch_and_numpy_agree():
    t = IntensityTransform.for_channel("193A")
    dn = np.random.default_rng(1).lognormal(5, 2, size=(3, 17, 17)).astype(np.float32)
    x_np = t.forward(dn)
    x_t = t.forward(torch.from_numpy(dn))
    assert isinstance(x_t, torch.Tensor) and x_t.dtype == torch.float32 and x_t.shape == dn.shape
    np.testing.assert_allclose(x_t.numpy(), x_np, atol=1e-6)
    back_t = t.inverse(x_t)
    assert isinstance(back_t, torch.Tensor) and back_t.dtype == torch.float32
    np.testing.assert_allclose(back_t.numpy(), t.inverse(x_np), rtol=1e-6)


def test_dict_round_trip_and_errors():
    t = IntensityTransform.for_channel("304A")
    d = json.loads(json.dumps(t.to_dict()))
    assert IntensityTransform.from_dict(d) == t
    with pytest.raises(FlaresynthError, match="ds.json: field 'hi': missing"):
        IntensityTransform.from_dict({"channel": "171A", "lo": 5}, source="ds.json")
    with pytest.raises(FlaresynthError, match="field 'kind'"):
        IntensityTransform.from_dict(dict(d, kind="sqrt"))
    with pytest.raises(FlaresynthError, match="0 < lo < hi"):
        IntensityTransform("171A", 10.0, 5.0)


def test_unknown_channel_lists_known_ones():
    with pytest.raises(FlaresynthError, match=r"channel '4500A': unknown, expected one of 94A, 131A, 171A"):
        IntensityTransform.for_channel("4500A")
    with pytest.raises(FlaresynthError, match="unknown"):
        preprocess(np.ones((8, 8)), channel="HMI")


# ---- resize ---------------------------------------------------------------------------------------------


def test_block_mean_by_hand():
    img = np.arange(16, dtype=np.float32).reshape(4, 4)
    expected = np.array(
        [[(0 + 1 + 4 + 5) / 4, (2 + 3 + 6 + 7) / 4], [(8 + 9 + 12 + 13) / 4, (10 + 11 + 14 + 15) / 4]]
    )
    out = resize(img, 2)
    assert out.dtype == np.float32 and out.shape == (2, 2)
    np.testing.assert_array_equal(out, expected)


def test_block_mean_preserves_mean_and_batches():
    imgs = np.random.default_rng(0).gamma(2.0, 300.0, size=(2, 3, 96, 96)).astype(np.float32)
    out = resize(imgs, 32)
    assert out.shape == (2, 3, 32, 32)
    np.testing.assert_allclose(out.mean(axis=(-2, -1)), imgs.mean(axis=(-2, -1), dtype=np.float64), rtol=1e-6)
    np.testing.assert_allclose(out[1, 2], resize(imgs[1, 2], 32))  # batch = one by one


def test_non_integer_factor_area_weighting():
    rng = np.random.default_rng(2)
    img = rng.gamma(2.0, 100.0, size=(100, 100))
    out = resize(img, 64)
    assert out.shape == (64, 64) and out.dtype == np.float32
    assert out.mean() == pytest.approx(img.mean(), rel=1e-6)  # area weighting preserves the mean
    # a constant stays constant, and a ramp in x stays a ramp with the right footprint centres
    np.testing.assert_allclose(resize(np.full((100, 100), 7.5), 64), 7.5, rtol=1e-6)
    ramp = np.tile(np.arange(100) + 0.5, (100, 1))  # value = pixel-centre coordinate
    centres = (np.arange(64) + 0.5) * 100 / 64
    # (the input is piecewise constant, so the footprint mean sits within a fraction of a pixel of the centre)
    np.testing.assert_allclose(resize(ramp, 64)[10], centres, atol=0.1)
    # first output pixel by hand: footprint [0, 1.5625) = 1 whole pixel + 0.5625 of the next
    a = img[:3, :3]
    wts = np.array([1.0, 0.5625, 0.0]) / 1.5625
    assert out[0, 0] == pytest.approx(wts @ a @ wts, rel=1e-6)


def test_upsampling_is_bilinear_like_torch():
    img = np.random.default_rng(3).random((2, 20, 20)).astype(np.float32)
    out = resize(img, 48)
    ref = F.interpolate(torch.from_numpy(img)[:, None], size=(48, 48), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(out, ref[:, 0].numpy(), atol=1e-5)  # torch works in float32


@pytest.mark.parametrize("size", [32, 64, 100])
def test_resize_torch_equals_numpy(size):
    img = np.random.default_rng(4).gamma(2.0, 300.0, size=(2, 128, 128)).astype(np.float32)
    out_t = resize(torch.from_numpy(img), size)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32
    np.testing.assert_allclose(out_t.numpy(), resize(img, size), rtol=1e-6)


def test_resize_rejects_bad_input():
    with pytest.raises(FlaresynthError, match="NaN"):
        resize(np.array([[1.0, np.nan], [1.0, 1.0]]), 1)
    with pytest.raises(FlaresynthError, match="size"):
        resize(np.ones((4, 4)), 0)


# ---- limb mask ------------------------------------------------------------------------------------------


def test_limb_mask_geometry():
    assert default_limb_radius(512) == pytest.approx(203.333, abs=1e-3)
    m = limb_mask(512)
    assert m.dtype == bool and m.shape == (512, 512)
    assert m.sum() == pytest.approx(math.pi * default_limb_radius(512) ** 2, rel=2e-3)
    assert m.sum() / (512 * 512) == pytest.approx(limb_mask(64).sum() / 64**2, rel=0.02)  # scales with size
    assert np.array_equal(m, m[::-1]) and np.array_equal(m, m.T)  # centred on (size-1)/2
    assert not m[0, 0] and m[255, 256]
    small = limb_mask(64, radius_px=10)
    assert small.sum() == pytest.approx(math.pi * 100, rel=0.05)


def test_apply_limb_mask_numpy_and_torch():
    m = limb_mask(16)
    x = np.zeros((2, 16, 16), dtype=np.float32)
    y = apply_limb_mask(x, m)
    assert y.dtype == np.float32 and (y[:, ~m] == -1).all() and (y[:, m] == 0).all()
    yt = apply_limb_mask(torch.zeros(2, 16, 16), m, fill=-0.5)
    assert isinstance(yt, torch.Tensor) and (yt[:, torch.from_numpy(~m)] == -0.5).all()


# ---- the whole step on the real AIA 171 Å frame -------------------------------------------------------


def test_preprocess_real_aia171(aia171_dn_per_s):
    dn, header = aia171_dn_per_s
    assert header["EXPTIME"] == pytest.approx(2.000191)
    x = preprocess(dn, channel="171A", size=64)
    assert x.shape == (1, 1, 64, 64) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    img = x[0, 0]
    disk = limb_mask(64, radius_px=0.8 * 64 / 128 * header["RSUN_OBS"] / header["CDELT1"])
    corners = np.concatenate(
        [img[:6, :6].ravel(), img[:6, -6:].ravel(), img[-6:, :6].ravel(), img[-6:, -6:].ravel()]
    )
    assert img[disk].mean() > corners.mean() + 0.3  # the disk is clearly brighter than the sky corners
    # equals resize + forward done by hand
    t = IntensityTransform.for_channel("171A")
    np.testing.assert_allclose(img, t.forward(resize(dn, 64)), atol=1e-7)
    # and the intensity step inverts: DN/s of the resized frame back within the clip range
    back = postprocess(x, "171A")[0, 0]
    np.testing.assert_allclose(back, np.clip(resize(dn, 64), 5, 3500), rtol=1e-5)


def test_preprocess_real_aia171_torch_matches_numpy(aia171_dn_per_s):
    dn, _ = aia171_dn_per_s
    frames = np.stack([dn, 2 * dn]).astype(np.float32)  # (N, H, W)
    for size in (64, 100):
        x_np = preprocess(frames, size=size, mask_limb=True)
        x_t = preprocess(torch.from_numpy(frames)[:, None], size=size, mask_limb=True)  # (N, 1, H, W)
        assert isinstance(x_t, torch.Tensor) and tuple(x_t.shape) == (2, 1, size, size)
        np.testing.assert_allclose(x_t.numpy(), x_np, atol=1e-6)
        m = limb_mask(size)
        assert (x_np[:, 0][:, ~m] == -1).all()
        assert (x_np[1] >= x_np[0]).all() and (x_np[1] > x_np[0])[0][m].mean() > 0.9  # brighter input


def test_preprocess_shape_errors():
    with pytest.raises(FlaresynthError, match="expected \\(H, W\\)"):
        preprocess(np.ones((2, 3, 8, 8)))
