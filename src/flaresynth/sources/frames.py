"""What every image source shares: frames of one AIA channel indexed by their observation time.

:class:`TimeIndexedFrames` is the base of :class:`flaresynth.sources.sdoml.SDOMLStore` and
:class:`flaresynth.sources.aia_fits.AIAFitsFolder`; :func:`parse_t_obs` reads AIA's ``T_OBS`` for both. The
factory that picks a source for a path, :func:`flaresynth.sources.images.open_images`, sits above them (as
``sunpy.map.Map`` sits above its map sources).

Every source also has ``batch(indices)``: a small picklable description of those frames (where they live, not
their pixels) whose ``read()`` gives the same array as ``read_many(indices)`` in any process that sees the same
files or URL. The dataset build sends these to dask.distributed workers, which read their own frames.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from flaresynth.errors import input_error

#: T_OBS format of AIA headers, e.g. ``2020-02-24T01:48:10.35Z``.
T_OBS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
#: File names taken as FITS in a folder.
FITS_SUFFIXES = (".fits", ".fits.gz", ".fts", ".fts.gz", ".fit")


def parse_t_obs(values: Iterable, source: str | Path | None = None, field: str = "T_OBS") -> np.ndarray:
    """Parse AIA ``T_OBS`` strings (``%Y-%m-%dT%H:%M:%S.%fZ``, UTC) to ``datetime64[ns]``.

    A missing fractional part or a missing ``Z`` is tolerated. A value that is not such a time raises a
    :class:`FlaresynthError` naming ``source``, the field and the index.
    """
    strings = []
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise input_error(source, f"{field}[{i}]", f"{v!r} is not a time string (expected e.g. "
                              "'2020-02-24T01:48:10.35Z')")
        strings.append(v.strip().removesuffix("Z"))
    try:
        times = np.array(strings, dtype="datetime64[ns]")
    except ValueError:
        times = None
    # numpy also takes bare dates ('2011-02-15'): an AIA time always has a 'T' and seconds
    bad = [i for i, s in enumerate(strings) if len(s) < 19 or s[10] != "T"]
    if times is None and not bad:
        for i, s in enumerate(strings):
            try:
                np.datetime64(s, "ns")
            except ValueError:
                bad.append(i)
                break
    if bad:
        i = bad[0]
        raise input_error(source, f"{field}[{i}]", f"{strings[i]!r} is not a time "
                          "(expected %Y-%m-%dT%H:%M:%S.%fZ, e.g. '2020-02-24T01:48:10.35Z')")
    return times


def _as_datetime64(t) -> np.datetime64:
    ts = pd.Timestamp(t)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return np.datetime64(ts.as_unit("ns").value, "ns")


class TimeIndexedFrames:
    """What every image source shares: ``times`` (sorted ``datetime64[ns]``, UTC) and index helpers."""

    times: np.ndarray
    source: str
    channel: str
    frame_shape: tuple[int, int]

    def __len__(self) -> int:
        return len(self.times)

    def __repr__(self) -> str:
        span = f"{self.times[0]} .. {self.times[-1]}" if len(self) else "empty"
        return f"{type(self).__name__}({self.source!r}, channel={self.channel!r}, {len(self)} frames, {span})"

    def select(self, start=None, end=None) -> np.ndarray:
        """Indices (time order) of the frames with ``start <= time < end``; either bound may be None.

        Bounds are anything :class:`pandas.Timestamp` accepts; naive times are UTC.
        """
        lo = 0 if start is None else int(np.searchsorted(self.times, _as_datetime64(start), side="left"))
        hi = len(self) if end is None else int(np.searchsorted(self.times, _as_datetime64(end), side="left"))
        return np.arange(lo, max(lo, hi))

    def _index(self, i) -> int:
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"{self.source}: frame index {i} out of range for {n} frames")
        return i % n

    def _indices(self, indices) -> np.ndarray:
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise IndexError(f"{self.source}: expected a 1-D sequence of integer frame indices")
        idx = idx.astype(np.int64)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"{self.source}: frame indices out of range for {n} frames")
        return idx % n if n else idx
