"""The decoder's noise: what an autoencoder's reconstruction leaves out of a frame, as a Gaussian model.

An autoencoder trained with an L1 loss decodes the median image of its latent. Photon noise, read noise and
structure finer than its latents resolve are not in it: on the simulated Sun the demo autoencoder's reconstructions
keep the power of the test frames at wavelengths above 8 px, and lose 36 % of it at 2.7-4 px and 56 % at 2-2.7 px
(radial power spectrum, docs/latent_diffusion.md, "Session 50"). Every image a latent DDPM makes is such a decoded image, so
it is smoother than any observed frame, and the judges read that.

This module models the residual r = x − dec(enc(x)) of the autoencoder's training frames, channel by channel:

* its standard deviation as a function of the decoded value (:data:`BINS` bins over [-1, 1]; a bin with fewer than
  :data:`MIN_PIXELS` pixels takes the nearest filled bin's): photon noise grows with the count, and in the log
  intensity scale the residual is smallest in the dark disk and largest in bright regions;
* the mean power spectrum of the residual divided by that standard deviation: its colour, i.e. how the residual
  is correlated between neighbouring pixels (:data:`~numpy.fft` frequencies, stationary over the frame).

A draw (:meth:`DecoderNoise.add`) filters white Gaussian noise to that spectrum (unit variance, by Parseval) and
scales it by the standard deviation at each decoded pixel's value; the image is clipped back to [-1, 1]. This is
sampling the decoder's likelihood p(x | z) instead of taking its centre, with a likelihood fitted to the
training frames rather than assumed. It adds no structure of the Sun: a flare the decoder did not draw is not
drawn by the noise. Each image's draw comes from its own seed, so an image does not depend on its batch.

The model is stored beside the autoencoder's weights (``decoder_noise.npz`` in its model folder, written at the end
of training and by ``flaresynth refit``), so every latent run that decodes with the autoencoder can use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flaresynth.errors import FlaresynthError
from flaresynth.io import atomic_file

#: File of the model in an autoencoder's model folder.
DECODER_NOISE_FILE = "decoder_noise.npz"
#: Bins of the decoded value over [-1, 1] for the residual's standard deviation.
BINS = 40
#: Fewest residual pixels a bin needs for its own standard deviation.
MIN_PIXELS = 100
#: Second entry of each image's seed sequence, so the noise stream differs from the sampler's own stream.
NOISE_STREAM = 0x6E6F6973


@dataclass
class DecoderNoise:
    """Residual model of one autoencoder: ``std`` (C, BINS) over ``edges`` (BINS + 1), ``amplitude`` (C, H, W), the
    square root of the residual's normalised power spectrum (mean square 1 per channel)."""

    edges: np.ndarray
    std: np.ndarray
    amplitude: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the model fits."""
        return tuple(int(n) for n in self.amplitude.shape)

    def add(self, images: np.ndarray, seeds) -> np.ndarray:
        """``images`` (N, C, H, W) in [-1, 1] plus a draw of the residual, image i's from ``seeds[i]``; clipped to
        [-1, 1], float32."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or tuple(images.shape[1:]) != self.shape:
            raise FlaresynthError(f"decoder noise: images of shape {tuple(images.shape[1:])}, but the model fits "
                                  f"{self.shape} (C, H, W)")
        out = np.empty_like(images)
        for i, (image, seed) in enumerate(zip(images, seeds, strict=True)):
            rng = np.random.default_rng([int(seed), NOISE_STREAM])
            white = rng.standard_normal(image.shape)
            coloured = np.fft.ifft2(np.fft.fft2(white) * self.amplitude).real  # unit variance: mean |amplitude|² = 1
            out[i] = np.clip(image + self._std_at(image) * coloured, -1.0, 1.0)
        return out

    def _std_at(self, images: np.ndarray) -> np.ndarray:
        """The residual's standard deviation at each pixel's decoded value, channel by channel (images (..., C, H, W))."""
        bins = np.clip(np.digitize(images, self.edges) - 1, 0, len(self.edges) - 2)
        channel = np.arange(self.std.shape[0]).reshape(-1, 1, 1)
        return self.std[channel, bins]

    def save(self, path: str | Path) -> None:
        """Write an ``.npz``, atomically (edges, std, amplitude in float32)."""
        with atomic_file(path, "wb") as fh:
            np.savez_compressed(fh, edges=self.edges.astype(np.float32), std=self.std.astype(np.float32),
                                amplitude=self.amplitude.astype(np.float32))

    @classmethod
    def load(cls, path: str | Path) -> DecoderNoise:
        """Read what :meth:`save` wrote; a file without the three arrays, or with inconsistent shapes, is an error
        naming it."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                edges, std, amplitude = (np.asarray(z[k], dtype=np.float64) for k in ("edges", "std", "amplitude"))
        except (OSError, ValueError, KeyError) as exc:
            raise FlaresynthError(f"{path}: unreadable decoder noise model ({str(exc).splitlines()[0]}); expected "
                                  "arrays edges, std, amplitude (refit it with `flaresynth refit --run RUN`)") from None
        if std.ndim != 2 or amplitude.ndim != 3 or std.shape != (amplitude.shape[0], len(edges) - 1):
            raise FlaresynthError(f"{path}: decoder noise arrays of shapes edges {edges.shape}, std {std.shape}, "
                                  f"amplitude {amplitude.shape}; expected (B + 1,), (C, B), (C, H, W)")
        return cls(edges, std, amplitude)

    def summary(self) -> dict:
        """JSON-ready description: the residual's std at the darkest, median and brightest filled bins, per channel."""
        return {"file": DECODER_NOISE_FILE, "bins": int(self.std.shape[1]), "shape": list(self.shape),
                "std_range": [[round(float(s.min()), 5), round(float(s.max()), 5)] for s in self.std],
                "fit": "residual of the training split's reconstructions (posterior mean, decoded): std by decoded "
                       "value, colour from its normalised power spectrum"}


def fit_decoder_noise(images: np.ndarray, reconstructions: np.ndarray, bins: int = BINS,
                      min_pixels: int = MIN_PIXELS) -> DecoderNoise:
    """The residual model of ``images`` (N, C, H, W) and their ``reconstructions`` (same shape, in [-1, 1])."""
    images = np.asarray(images, dtype=np.float64)
    reconstructions = np.asarray(reconstructions, dtype=np.float64)
    if images.shape != reconstructions.shape or images.ndim != 4 or len(images) < 1:
        raise FlaresynthError(f"decoder noise: images {images.shape} and reconstructions {reconstructions.shape}: "
                              "expected the same (N, C, H, W) shape with N >= 1")
    edges = np.linspace(-1.0, 1.0, bins + 1)
    residual = images - reconstructions
    n_channels = images.shape[1]
    std = np.zeros((n_channels, bins))
    amplitude = np.zeros(images.shape[1:])
    for c in range(n_channels):
        which = np.clip(np.digitize(reconstructions[:, c], edges) - 1, 0, bins - 1)
        counts = np.bincount(which.ravel(), minlength=bins)
        sums = np.bincount(which.ravel(), residual[:, c].ravel() ** 2, minlength=bins)
        filled = np.flatnonzero(counts >= min_pixels)
        if len(filled) == 0:  # too few pixels for any bin: one std for all values
            std[c] = np.sqrt(np.mean(residual[:, c] ** 2))
        else:
            own = np.sqrt(sums[filled] / counts[filled])
            nearest = filled[np.abs(np.arange(bins)[:, None] - filled[None, :]).argmin(1)]
            std[c] = own[np.searchsorted(filled, nearest)]
        normalised = residual[:, c] / np.maximum(std[c][which], 1e-12)
        power = (np.abs(np.fft.fft2(normalised)) ** 2).mean(0)
        amplitude[c] = np.sqrt(power / max(power.mean(), 1e-24))
    return DecoderNoise(edges, std, amplitude)


__all__ = ["DECODER_NOISE_FILE", "DecoderNoise", "fit_decoder_noise"]
