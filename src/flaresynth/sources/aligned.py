"""Several AIA channels of one source, aligned frame by frame in time.

SDOMLv2 keeps one array per channel with its own frame list (AIA takes the channels at different seconds of
its 12-s cycle, and a frame can be lost in one channel only); a folder of AIA FITS files mixes the channels'
files. :class:`AlignedChannels` pairs them: the first channel asked for is the reference, and each of its
frames is kept when every other channel has a frame within ``align_tol`` of it (the nearest one is taken);
otherwise the frame is dropped and counted, per channel missing. The tolerance defaults to half the
reference channel's typical spacing (its median time step; 6 s, half of AIA's 12-s cycle through the channels,
for a single frame), so one frame of another channel can match at most one reference frame at a regular
cadence. ``QUALITY`` of an aligned frame is the bitwise OR over its channels,
so a frame flagged in any channel is dropped by the dataset builder.

It has the interface of :class:`~flaresynth.sources.frames.TimeIndexedFrames` (``times``, ``headers()``,
``read_many``, ``batch``), with frames of shape (C, H, W).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd

from flaresynth.errors import FlaresynthError, input_error
from flaresynth.sources.frames import TimeIndexedFrames


class AlignedChannels(TimeIndexedFrames):
    """Frames of ``channels`` (one source each, same geometry) aligned on the first channel's times.

    Attributes
    ----------
    times : reference times of the kept frames (sorted ``datetime64[ns]``).
    index : (n, C) int, the frame of each channel (index into that channel's source) behind each kept frame.
    alignment : what the manifest records: reference, tolerance, frames kept and dropped (per missing channel).
    """

    def __init__(self, sources: Sequence[TimeIndexedFrames], channels: Sequence[str], align_tol_s: float | None = None):
        if len(sources) != len(channels) or not sources:
            raise ValueError("one source per channel")
        self.sources = list(sources)
        self.channels = [str(c) for c in channels]
        self.channel = ",".join(self.channels)
        self.source = str(self.sources[0].source)
        shapes = {tuple(s.frame_shape) for s in self.sources}
        if len(shapes) != 1:
            raise input_error(self.source, None, f"channels {', '.join(self.channels)} have frames of different "
                              f"shapes {sorted(shapes)} (expected one geometry)")
        self.frame_shape = shapes.pop()
        ref = np.asarray(self.sources[0].times, dtype="datetime64[ns]")
        steps = np.diff(ref)
        cadence = np.median(steps) if steps.size else np.timedelta64(0, "ns")
        if align_tol_s is None:
            # half the cadence; a single frame has none: half AIA's 12-s cycle of the channels
            tol = cadence // 2 if steps.size else np.timedelta64(6, "s")
        else:
            if not align_tol_s >= 0:
                raise FlaresynthError(f"--align-tol {align_tol_s!r}: expected seconds >= 0")
            tol = np.timedelta64(int(round(align_tol_s * 1e9)), "ns")
        index = np.zeros((ref.size, len(self.sources)), dtype=np.int64)
        index[:, 0] = np.arange(ref.size)
        ok = np.ones(ref.size, dtype=bool)
        missing = {}
        for c, src in enumerate(self.sources[1:], start=1):
            other = np.asarray(src.times, dtype="datetime64[ns]")
            if other.size == 0:
                found = np.zeros(ref.size, dtype=bool)
            else:
                pos = np.clip(np.searchsorted(other, ref), 1, max(other.size - 1, 1))
                prev = np.clip(pos - 1, 0, other.size - 1)
                pos = np.clip(pos, 0, other.size - 1)
                nearest = np.where(np.abs(other[prev] - ref) <= np.abs(other[pos] - ref), prev, pos)
                found = np.abs(other[nearest] - ref) <= tol
                index[:, c] = nearest
            missing[self.channels[c]] = int((~found).sum())
            ok &= found
        self.index = index[ok]
        self.times = ref[ok]
        self.alignment = {
            "reference": self.channels[0],
            "tolerance_s": float(tol / np.timedelta64(1, "s")),
            "reference_cadence_s": float(cadence / np.timedelta64(1, "s")),
            "n_reference_frames": int(ref.size),
            "n_aligned": int(ok.sum()),
            "n_dropped": int((~ok).sum()),
            "missing_per_channel": missing,
            "rule": "a reference frame is kept when every other channel has a frame within the tolerance (the "
                    "nearest is taken); QUALITY is the OR over the channels",
        }

    def headers(self) -> pd.DataFrame:
        """The reference channel's keywords of the kept frames, ``QUALITY`` OR-ed over the channels and each
        channel's ``T_OBS`` as ``T_OBS_<channel>``."""
        table = self.sources[0].headers().iloc[self.index[:, 0]].reset_index(drop=True)
        quality = np.zeros(len(table), dtype=np.int64)
        for c, src in enumerate(self.sources):
            h = src.headers()
            if "QUALITY" in h.columns:
                q = pd.to_numeric(h["QUALITY"], errors="coerce").fillna(1 << 30).to_numpy()
                quality |= q[self.index[:, c]].astype(np.int64)
            if "T_OBS" in h.columns:
                table[f"T_OBS_{self.channels[c]}"] = h["T_OBS"].to_numpy()[self.index[:, c]]
        table["QUALITY"] = quality
        return table

    def read(self, i: int) -> np.ndarray:
        """Frame ``i`` (time order): float32 (C, H, W) in DN/s."""
        return self.read_many([self._index(i)])[0]

    def read_many(self, indices) -> np.ndarray:
        """Frames at ``indices`` (time order) as float32 (n, C, H, W), in the requested order."""
        idx = self._indices(indices)
        out = np.empty((len(idx), len(self.sources), *self.frame_shape), dtype=np.float32)
        for c, src in enumerate(self.sources):
            out[:, c] = src.read_many(self.index[idx, c])
        return out

    def batch(self, indices) -> AlignedBatch:
        """A small picklable description of the frames at ``indices`` (time order): one batch per channel of
        that channel's own frames; :meth:`AlignedBatch.read` reads them in any process that sees the source."""
        idx = self._indices(indices)
        return AlignedBatch(parts=tuple(src.batch(self.index[idx, c]) for c, src in enumerate(self.sources)),
                            frame_shape=tuple(self.frame_shape))


@dataclasses.dataclass
class AlignedBatch:
    """The channels' batches of some aligned frames (see :meth:`AlignedChannels.batch`)."""

    parts: tuple  # one batch (SDOMLBatch or FitsBatch) per channel, in channel order
    frame_shape: tuple[int, int]

    def __len__(self) -> int:
        return len(self.parts[0])

    def read(self) -> np.ndarray:
        """The frames as float32 (n, C, H, W), in order (as :meth:`AlignedChannels.read_many`)."""
        out = np.empty((len(self), len(self.parts), *self.frame_shape), dtype=np.float32)
        for c, part in enumerate(self.parts):
            out[:, c] = part.read()
        return out
