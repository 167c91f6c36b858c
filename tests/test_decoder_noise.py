"""The decoder's residual model: fitted to a known residual, drawn per seed, stored and refused when broken."""

import numpy as np
import pytest

from flaresynth.errors import FlaresynthError
from flaresynth.models.decoder_noise import DecoderNoise, fit_decoder_noise


def smooth(white: np.ndarray) -> np.ndarray:
    """White noise averaged with its right and lower neighbours (periodic): a known colour, unit variance."""
    return (white + np.roll(white, 1, -1) + np.roll(white, 1, -2)) / np.sqrt(3)


def known_residual(n: int = 200, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Decoded images (left half dark, right half bright) and observed ones: decoded + coloured noise whose std is
    0.02 in the dark and 0.06 in the bright half."""
    rng = np.random.default_rng(seed)
    decoded = np.full((n, 1, size, size), -0.5)
    decoded[..., size // 2:] = 0.5
    std = np.where(decoded < 0, 0.02, 0.06)
    return decoded, decoded + std * smooth(rng.standard_normal(decoded.shape))


def lag_correlation(r: np.ndarray) -> float:
    return float((r * np.roll(r, 1, -1)).mean() / (r * r).mean())


def test_fit_recovers_the_std_by_value_and_the_colour_and_a_draw_repeats_them():
    decoded, observed = known_residual()
    noise = fit_decoder_noise(observed, decoded)
    dark, bright = noise._std_at(np.array([[[[-0.5]]]]))[0, 0, 0, 0], noise._std_at(np.array([[[[0.5]]]]))[0, 0, 0, 0]
    assert dark == pytest.approx(0.02, rel=0.03) and bright == pytest.approx(0.06, rel=0.03)
    assert noise.std.min() == pytest.approx(0.02, rel=0.03)  # empty bins take the nearest filled bin's value
    assert np.mean(noise.amplitude ** 2) == pytest.approx(1.0)
    drawn = noise.add(decoded, np.arange(len(decoded))) - decoded
    truth = observed - decoded
    for half in (slice(None, 16), slice(16, None)):
        assert drawn[..., half].std() == pytest.approx(truth[..., half].std(), rel=0.05)
    # neighbours correlate as in the residual (1/3 for the smoothing above); white noise would give 0
    assert lag_correlation(drawn / np.where(decoded < 0, 0.02, 0.06)) == pytest.approx(1 / 3, abs=0.03)


def test_each_image_draws_from_its_own_seed_and_stays_in_range():
    decoded, observed = known_residual(n=20)
    noise = fit_decoder_noise(observed, decoded)
    batch = noise.add(decoded[:3], [7, 8, 9])
    np.testing.assert_array_equal(batch[1:2], noise.add(decoded[1:2], [8]))
    assert not np.array_equal(batch[0], noise.add(decoded[:1], [10])[0])
    assert batch.dtype == np.float32
    edge = noise.add(np.ones((2, 1, 32, 32)), [0, 1])
    assert edge.max() <= 1.0 and edge.min() < 1.0


def test_save_load_round_trip_and_bad_files(tmp_path):
    decoded, observed = known_residual(n=10)
    noise = fit_decoder_noise(observed, decoded)
    noise.save(tmp_path / "n.npz")
    back = DecoderNoise.load(tmp_path / "n.npz")
    np.testing.assert_allclose(back.std, noise.std, rtol=1e-6)
    np.testing.assert_allclose(back.amplitude, noise.amplitude, rtol=1e-6)
    assert back.summary()["shape"] == [1, 32, 32]
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(FlaresynthError, match="bad.npz: unreadable decoder noise model"):
        DecoderNoise.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "shapes.npz", edges=np.linspace(-1, 1, 5), std=np.ones((1, 3)), amplitude=np.ones((1, 8, 8)))
    with pytest.raises(FlaresynthError, match="shapes.npz: decoder noise arrays of shapes"):
        DecoderNoise.load(tmp_path / "shapes.npz")
    with pytest.raises(FlaresynthError, match=r"images of shape \(1, 16, 16\)"):
        noise.add(np.zeros((1, 1, 16, 16)), [0])
    with pytest.raises(FlaresynthError, match="the same"):
        fit_decoder_noise(observed[:, :, :16], decoded)
