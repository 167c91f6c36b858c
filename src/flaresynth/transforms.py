"""Image preprocessing for the diffusion model: resize, clip + log10 to [-1, 1], limb mask. Invertible.

Order (Ramunno et al. 2024; SDOMLv2, Galvez et al. 2019, ApJS 242, 7)
---------------------------------------------------------------------
1. **Resize in linear DN/s.** SDOMLv2 pixels are exposure- and degradation-corrected intensities in DN/s at
   512×512 (made from 1024×1024 by a local mean, ``skimage.transform.downscale_local_mean``). Averaging
   intensities is physical (it is what a coarser detector pixel would see); averaging their logarithms is not.
   The FHNW SDOMLv2 loader (i4Ds/sdo-cli) also resizes before the log.
2. **Clip + log10 + scale** (:class:`IntensityTransform`): clip to the channel's [lo, hi] DN/s, take log10 and
   map [log10 lo, log10 hi] linearly onto [-1, 1], the range the DDPM works in. The per-channel ranges
   (:data:`CHANNEL_RANGES`) are those of SDOBenchmark / sdo-cli / Ramunno's later code (171 Å: [5, 3500]).
3. **Optional limb mask** (:func:`limb_mask`): the off-disk corona set to -1 (the value of ``lo``).

Resizing (:func:`resize`) is a separable linear map ``A_h · image · A_wᵀ``:

* whole-number reduction factor: block mean, exactly SDOMLv2's own ``downscale_local_mean``;
* other reductions (e.g. 100 -> 64): exact area weighting: each output pixel is the mean of the input
  over its footprint, input pixels counted by the fraction they overlap it. Like the block mean it preserves
  the image mean. (torch's ``F.interpolate(mode="area")`` is not this: for fractional factors it averages
  overlapping whole-pixel windows with equal weights.)
* enlargement: bilinear with half-pixel centres, the same numbers as torch's
  ``F.interpolate(mode="bilinear", align_corners=False)``.

Because it is a plain matrix product, numpy and torch inputs give the same numbers and torch keeps the
data on its device. The intensity step is exactly invertible on [-1, 1]; the resize and the clip are not.

All functions accept numpy arrays or torch tensors and return the same kind (float32); torch is never
imported for numpy input.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np

from flaresynth.errors import FlaresynthError

#: Clip range [lo, hi] in DN/s per AIA channel (SDOBenchmark / sdo-cli SDOMLv2 loaders).
CHANNEL_RANGES: dict[str, tuple[float, float]] = {
    "94A": (0.1, 800.0),
    "131A": (0.7, 1900.0),
    "171A": (5.0, 3500.0),
    "193A": (20.0, 5500.0),
    "211A": (7.0, 3500.0),
    "304A": (0.1, 3500.0),
    "335A": (0.4, 1000.0),
    "1600A": (10.0, 800.0),
    "1700A": (220.0, 5000.0),
}
#: SDOMLv2 solar radius (arcsec) and pixel scale at 512 px (arcsec/px): the disk is 976/4.8 ≈ 203.3 px.
SDOML_RSUN_ARCSEC = 976.0
SDOML_CDELT_512 = 4.8
SDOML_SIZE = 512


def _is_torch(x) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _channel_name(channel) -> str:
    name = str(channel).strip().upper()
    return name if name.endswith("A") else f"{name}A"


def channel_name(channel) -> str:
    """``'171'``, ``171``, ``'171a'`` or ``'171Å'`` -> ``'171A'``; a one-line error for anything else."""
    digits = str(channel).strip().upper().removesuffix("Å").removesuffix("A")
    if not digits.isdigit():
        raise FlaresynthError(f"channel {channel!r}: expected an AIA channel such as 171A")
    return f"{int(digits)}A"


def parse_channels(spec, allowed=None, option: str = "--channels") -> tuple[str, ...]:
    """A channel list (``'94A,131A,171A'`` or a sequence) as canonical names, in the given order; one-line errors
    for an empty list, a name that is not a channel, a duplicate, or one outside ``allowed``."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    items = [str(s).strip() for s in items if str(s).strip()]
    if not items:
        raise FlaresynthError(f"{option}: empty (expected e.g. 94A,131A,171A,193A,211A)")
    names: list[str] = []
    for item in items:
        try:
            name = channel_name(item)
        except FlaresynthError:
            raise FlaresynthError(f"{option} {item!r}: not an AIA channel (expected e.g. 94A,131A,171A,193A,211A)"
                                  ) from None
        if name in names:
            raise FlaresynthError(f"{option}: {name} is listed twice (each channel once)")
        if allowed is not None and name not in allowed:
            raise FlaresynthError(f"{option} {name}: not available (expected some of {', '.join(allowed)})")
        names.append(name)
    return tuple(names)


@dataclass(frozen=True)
class IntensityTransform:
    """Clip to [lo, hi] DN/s, log10, scale to [-1, 1]; and back.

    ``forward``: ``x = 2 (log10 clip(dn, lo, hi) - log10 lo) / (log10 hi - log10 lo) - 1``.
    ``inverse``: ``dn = 10 ** (log10 lo + (clip(x, -1, 1) + 1) / 2 · (log10 hi - log10 lo))``. Model outputs
    slightly outside [-1, 1] are clipped first, so the inverse never leaves [lo, hi]. NaN stays NaN.
    """

    channel: str
    lo: float
    hi: float

    def __post_init__(self):
        if not (math.isfinite(self.lo) and math.isfinite(self.hi) and 0 < self.lo < self.hi):
            raise FlaresynthError(
                f"intensity transform {self.channel}: lo={self.lo!r}, hi={self.hi!r}: expected 0 < lo < hi (DN/s)"
            )

    @classmethod
    def for_channel(cls, channel: str | int) -> IntensityTransform:
        """The standard transform of an AIA channel (``"171A"``, ``"171"`` or ``171``)."""
        name = _channel_name(channel)
        if name not in CHANNEL_RANGES:
            raise FlaresynthError(
                f"channel {channel!r}: unknown, expected one of {', '.join(CHANNEL_RANGES)}"
            )
        lo, hi = CHANNEL_RANGES[name]
        return cls(name, lo, hi)

    @property
    def _log_range(self) -> tuple[float, float]:
        return math.log10(self.lo), math.log10(self.hi)

    def forward(self, dn):
        """Intensity in DN/s -> float32 in [-1, 1] (same array kind and shape)."""
        log_lo, log_hi = self._log_range
        scale = 2.0 / (log_hi - log_lo)
        if _is_torch(dn):
            import torch

            # float64 work, like the numpy branch, so both give the same float32 numbers
            x = dn.to(torch.float64).clamp(self.lo, self.hi).log10()
            return ((x - log_lo) * scale - 1.0).to(torch.float32)
        x = np.log10(np.clip(np.asarray(dn, dtype=np.float64), self.lo, self.hi))
        return ((x - log_lo) * scale - 1.0).astype(np.float32)

    def inverse(self, x):
        """Model value in [-1, 1] -> intensity in DN/s, float32 (inputs outside [-1, 1] are clipped first)."""
        log_lo, log_hi = self._log_range
        half = (log_hi - log_lo) / 2.0
        if _is_torch(x):
            import torch

            y = x.to(torch.float64).clamp(-1.0, 1.0)
            return torch.pow(10.0, log_lo + (y + 1.0) * half).to(torch.float32)
        y = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
        return np.power(10.0, log_lo + (y + 1.0) * half).astype(np.float32)

    def to_dict(self) -> dict:
        """JSON-ready description for manifests (read back with :meth:`from_dict`)."""
        return {
            "kind": "clip_log10_minus1_1",
            "channel": self.channel,
            "lo": float(self.lo),
            "hi": float(self.hi),
            "unit": "DN/s",
        }

    @classmethod
    def from_dict(cls, d: dict, source: str = "manifest") -> IntensityTransform:
        """Inverse of :meth:`to_dict`; ``source`` names the file in error messages."""
        if not isinstance(d, dict):
            raise FlaresynthError(
                f"{source}: intensity transform: expected an object, got {type(d).__name__}"
            )
        kind = d.get("kind", "clip_log10_minus1_1")
        if kind != "clip_log10_minus1_1":
            raise FlaresynthError(
                f"{source}: field 'kind': {kind!r} unknown (expected 'clip_log10_minus1_1')"
            )
        for key in ("channel", "lo", "hi"):
            if key not in d:
                raise FlaresynthError(f"{source}: field '{key}': missing (expected an intensity transform)")
        try:
            lo, hi = float(d["lo"]), float(d["hi"])
        except (TypeError, ValueError):
            raise FlaresynthError(f"{source}: fields 'lo'/'hi': expected numbers in DN/s") from None
        return cls(str(d["channel"]), lo, hi)


def channel_transforms(spec, n_channels: int, source: str = "manifest") -> list[IntensityTransform]:
    """One :class:`IntensityTransform` per channel from a stored ``transform`` field: one object (every
    channel) or a list of ``n_channels`` objects, as dataset manifests and model metadata hold it.
    ``source`` names the file in error messages."""
    items = spec if isinstance(spec, list) else [spec] * int(n_channels)
    if len(items) != int(n_channels):
        raise FlaresynthError(f"{source}: field 'transform': {len(items)} transforms for {n_channels} channel(s)")
    return [IntensityTransform.from_dict(d, source=str(source)) for d in items]


# ----------------------------------------------------------------------------------------------------------
# resizing


def _axis_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float64 weights: area-weighted mean when shrinking, bilinear when enlarging."""
    if n_out <= n_in:
        # Output pixel i covers input coordinates [i·s, (i+1)·s), s = n_in / n_out; weight = overlap / s.
        s = n_in / n_out
        lo = np.arange(n_out)[:, None] * s
        hi = lo + s
        j = np.arange(n_in)[None, :]
        overlap = np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0.0, None)
        return overlap / s
    # Half-pixel centres, clamped at the edges (torch bilinear, align_corners=False).
    src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
    j0 = np.floor(src).astype(int)
    j1 = np.minimum(j0 + 1, n_in - 1)
    w = src - j0
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), j0] += 1.0 - w
    m[np.arange(n_out), j1] += w
    return m


def resize(images, size: int):
    """Resize (..., H, W) intensities in linear DN/s to (..., size, size), float32.

    Block mean when H and W are whole multiples of ``size``; otherwise area-weighted when shrinking and
    bilinear when enlarging (see the module docstring). Both preserve the mean of a shrunk image.
    Inputs must be finite: a NaN would spread along its whole row and column in the matrix product.
    """
    if int(size) != size or size < 1:
        raise FlaresynthError(f"resize: size {size!r}: expected a positive whole number of pixels")
    size = int(size)
    torch_in = _is_torch(images)
    if torch_in:
        import torch

        # float64 work, like the numpy branch, so both give the same float32 numbers
        x = images.to(torch.float64)
        finite = bool(torch.isfinite(x).all())
    else:
        x = np.asarray(images)
        x = x.astype(np.float64) if x.dtype != np.float32 else x
        finite = bool(np.isfinite(x).all())
    if x.ndim < 2:
        raise FlaresynthError(f"resize: images of shape {tuple(x.shape)}: expected (..., H, W)")
    if not finite:
        raise FlaresynthError(
            "resize: images contain NaN or inf; expected finite DN/s (fill missing pixels first)"
        )
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x.to(torch.float32).clone() if torch_in else np.array(x, dtype=np.float32)
    if h % size == 0 and w % size == 0:
        fh, fw = h // size, w // size
        shape = (*x.shape[:-2], size, fh, size, fw)
        if torch_in:
            return x.reshape(shape).mean(dim=(-3, -1)).to(torch.float32)
        return x.reshape(shape).mean(axis=(-3, -1), dtype=np.float64).astype(np.float32)
    ah, aw = _axis_matrix(h, size), _axis_matrix(w, size)
    if torch_in:
        ah_t = torch.as_tensor(ah, dtype=x.dtype, device=x.device)
        aw_t = torch.as_tensor(aw, dtype=x.dtype, device=x.device)
        return (ah_t @ x @ aw_t.T).to(torch.float32)
    return (ah @ x.astype(np.float64) @ aw.T).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# limb mask


def default_limb_radius(size: int) -> float:
    """SDOMLv2's solar radius in pixels scaled to ``size`` (976″ / 4.8″ px⁻¹ = 203.33 px at 512)."""
    return SDOML_RSUN_ARCSEC / SDOML_CDELT_512 * size / SDOML_SIZE


def limb_mask(size: int, radius_px: float | None = None) -> np.ndarray:
    """Boolean (size, size) mask, True on the solar disk.

    Centre ((size-1)/2, (size-1)/2), i.e. the image centre as in SDOMLv2 (whose frames are centred on the
    Sun); radius ``radius_px`` in pixels, default :func:`default_limb_radius`. A pixel is on the disk when its
    centre is within the radius.
    """
    if int(size) != size or size < 1:
        raise FlaresynthError(f"limb_mask: size {size!r}: expected a positive whole number of pixels")
    r = default_limb_radius(int(size)) if radius_px is None else float(radius_px)
    if not r > 0:
        raise FlaresynthError(f"limb_mask: radius_px {radius_px!r}: expected a positive number of pixels")
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size]
    return (xx - c) ** 2 + (yy - c) ** 2 <= r * r


def apply_limb_mask(x, mask, fill: float = -1.0):
    """Set pixels of ``x`` (..., H, W) outside ``mask`` (H, W) to ``fill`` (default -1, the clip floor)."""
    if _is_torch(x):
        import torch

        m = torch.as_tensor(np.asarray(mask, dtype=bool), device=x.device)
        return torch.where(m, x, torch.as_tensor(fill, dtype=x.dtype, device=x.device))
    x = np.asarray(x)
    return np.where(np.asarray(mask, dtype=bool), x, np.asarray(fill, dtype=x.dtype))


# ----------------------------------------------------------------------------------------------------------
# the whole step


def preprocess(frames_dn, channel: str = "171A", size: int = 64, mask_limb: bool = False):
    """Frames in DN/s -> model input: float32 (N, 1, size, size) in [-1, 1].

    Parameters
    ----------
    frames_dn : (H, W), (N, H, W) or (N, 1, H, W) intensities in DN/s (numpy or torch), e.g. SDOMLv2 frames.
    channel : AIA channel whose clip range is used (:data:`CHANNEL_RANGES`).
    size : output side in pixels.
    mask_limb : set the off-disk pixels to -1 with the default :func:`limb_mask`.

    Steps: :func:`resize` in linear DN/s, then :meth:`IntensityTransform.forward`, then the optional mask.
    """
    transform = IntensityTransform.for_channel(channel)
    shape = tuple(frames_dn.shape)
    if len(shape) == 2:
        frames_dn = frames_dn[None]
    elif len(shape) == 4 and shape[1] == 1:
        frames_dn = frames_dn[:, 0]
    elif len(shape) != 3:
        raise FlaresynthError(
            f"preprocess: frames of shape {shape}: expected (H, W), (N, H, W) or (N, 1, H, W)"
        )
    x = transform.forward(resize(frames_dn, size))
    if mask_limb:
        x = apply_limb_mask(x, limb_mask(size), fill=-1.0)
    return x[:, None]


def postprocess(x, channel: str = "171A"):
    """Model output in [-1, 1] -> DN/s float32, same shape (the inverse of the intensity step only)."""
    return IntensityTransform.for_channel(channel).inverse(x)



def resample(images, transforms, size: int, chunk: int = 256) -> np.ndarray:
    """Model-space images (N, C, H, W) at another side ``size``: per channel back to DN/s, :func:`resize`, forward.

    ``transforms``: one :class:`IntensityTransform` per channel, or one for every channel. Averaging is done
    on intensities (DN/s), not on their logarithms. Returns float32; images already at ``size`` are only cast.
    """
    images = np.asarray(images) if not hasattr(images, "shape") else images
    if images.shape[-1] == size and images.shape[-2] == size:
        return np.ascontiguousarray(images, dtype=np.float32)
    per_channel = list(transforms) if isinstance(transforms, (list, tuple)) else [transforms] * images.shape[1]
    out = np.empty((images.shape[0], images.shape[1], size, size), np.float32)
    for lo in range(0, images.shape[0], chunk):
        block = np.asarray(images[lo : lo + chunk])
        for c, tr in enumerate(per_channel):
            out[lo : lo + chunk, c] = tr.forward(resize(tr.inverse(block[:, c]), size))
    return out

__all__ = [
    "CHANNEL_RANGES",
    "IntensityTransform",
    "channel_name",
    "channel_transforms",
    "parse_channels",
    "resize",
    "resample",
    "default_limb_radius",
    "limb_mask",
    "apply_limb_mask",
    "preprocess",
    "postprocess",
]
