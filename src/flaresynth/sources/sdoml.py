"""SDOMLv2 zarr stores: the machine-learning copy of SDO/AIA (Galvez et al. 2019; SDOMLv2 2023).

Layout (zarr format 2, as written by SDOMLv2's ``aia_fits_to_zarr.py``)::

    sdomlv2.zarr/<year>/<channel>      float32 (N, 512, 512), DN/s, exposure- and degradation-corrected
                                       attributes: one list per FITS keyword, index-aligned with axis 0

Reading choices, and why:

* Frames are **not** time-ordered in the real store (days out of order within a year), so
  :class:`SDOMLStore` parses every ``T_OBS`` and exposes frames in time order across the year groups.
* The per-frame header lists live in each array's ``.zattrs`` (~221 MB of JSON for a full year of one
  channel). They are parsed once when the store is opened, kept as one numpy column per keyword, and the
  array handle used for pixels is re-made without them, so nothing re-reads or copies that JSON (dask tasks
  carry a small handle). Only the year groups and the one channel asked for are opened: group listings go
  through the store directly, never through zarr's member discovery, which would open every channel's array
  and its attributes; consolidated metadata (``.zmetadata``, all attributes of every array) is not used.
* Chunking is read from each array's ``.zarray`` (15 frames in the creation script, 120 in the small public
  store); :meth:`SDOMLStore.read_many` groups requested frames by (year, chunk) so each chunk is decompressed
  once.
* :meth:`SDOMLStore.batch` describes some frames by where they live (the store's path or URL, the channel, and
  each frame's year and stored position): a few hundred bytes that another process (a dask.distributed worker)
  turns back into pixels with :meth:`SDOMLBatch.read`, opening the store itself. It opens each year's array
  from its ``.zarray`` alone, so a worker never parses the per-frame attribute lists either.
* Remote stores are opened through fsspec: ``s3://`` anonymously (the NASA HDRL bucket
  ``gov-nasa-hdrl-data1/contrib/fdl-sdoml/fdl-sdoml-v2/sdomlv2.zarr`` needs no credentials), ``gs://`` with
  ``gcsfs`` (token ``"anon"``), ``http(s)://`` (cannot be listed: pass ``years``), and ``memory://``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
import zarr.storage
from numcodecs import Blosc

from flaresynth.errors import input_error
from flaresynth.sources.frames import TimeIndexedFrames, parse_t_obs

#: Compressor of the SDOMLv2 creation script (``aia_fits_to_zarr.py``).
SDOML_COMPRESSOR = Blosc(cname="zstd", clevel=5, shuffle=Blosc.BITSHUFFLE)


def write_sdoml_frames(
    root: str | Path,
    year: int,
    channel: str,
    frames: np.ndarray,
    headers: Sequence[dict],
    chunk_frames: int = 15,
) -> zarr.Array:
    """Write one ``<year>/<channel>`` array in the exact SDOMLv2 layout.

    Parameters
    ----------
    root : path of the ``*.zarr`` store (created if missing; other years/channels are kept).
    year : the year group, written as a 4-digit string.
    channel : array name such as ``"171A"``.
    frames : float32 array (N, H, W) in DN/s, in the order they should be stored (need not be sorted).
    headers : N dicts of FITS keywords; stored as one list per keyword in the array attributes,
        as SDOMLv2 does. Every dict must have the same keys.
    chunk_frames : frames per chunk along axis 0 (the creation script uses 15).
    """
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim != 3 or len(headers) != frames.shape[0]:
        raise ValueError(f"frames {frames.shape} and {len(headers)} headers do not match")
    group = zarr.open_group(str(root), mode="a", zarr_format=2)
    year_group = group.require_group(f"{int(year):04d}")
    arr = year_group.create_array(
        channel,
        shape=frames.shape,
        chunks=(chunk_frames, *frames.shape[1:]),
        dtype="float32",
        compressors=SDOML_COMPRESSOR,
        overwrite=True,
    )
    arr[:] = frames
    keys = list(headers[0]) if headers else []
    arr.attrs.update({k: [_jsonable(h[k]) for h in headers] for k in keys})
    return arr


def _jsonable(v):
    if isinstance(v, np.generic):
        return v.item()
    return v


#: URL schemes opened through fsspec.
URL_SCHEMES = ("s3", "gs", "gcs", "http", "https", "memory", "file")
# Default fsspec options per scheme: the public stores are read anonymously.
_ANON_OPTIONS = {"s3": {"anon": True}, "gs": {"token": "anon"}, "gcs": {"token": "anon"}}
# fsspec implementation each scheme needs, and the pip package that provides it.
_FSSPEC_PACKAGE = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "http": "aiohttp", "https": "aiohttp"}


@dataclasses.dataclass
class _YearArray:
    year: int
    array: zarr.Array  # pixel handle, attributes stripped
    columns: dict[str, np.ndarray]  # per-frame keyword -> one value per stored frame
    times: np.ndarray  # parsed T_OBS, stored order


class SDOMLStore(TimeIndexedFrames):
    """Frames of one AIA channel across the year groups of an SDOMLv2 zarr store, in T_OBS order.

    Parameters
    ----------
    path_or_url : local path of the ``*.zarr`` folder, a URL (``s3://``, ``gs://``, ``http(s)://``,
        ``memory://``, ``file://``), or an already opened ``zarr.abc.store.Store``.
    channel : array name, e.g. ``"171A"``.
    years : year groups to read (default: every 4-digit group in the store; required for ``http(s)``).
    storage_options : fsspec options for a URL, merged over the anonymous defaults.

    Attributes
    ----------
    times : ``datetime64[ns]`` (UTC) of every frame, sorted; index ``i`` everywhere below is into this order.
    frame_shape : (H, W) of a frame. chunks : ``{year: chunk shape}`` as stored in ``.zarray``.
    """

    def __init__(self, path_or_url, channel: str = "171A", years: Sequence[int] | None = None,
                 storage_options: dict | None = None):
        self.channel = str(channel)
        store, self.source = _open_store(path_or_url, storage_options)
        self._store = store
        # where another process reopens the store (batch()): an absolute path, the URL, or the store object
        self._location = (path_or_url if not isinstance(path_or_url, (str, Path))
                          else path_or_url.rstrip("/") if is_url(str(path_or_url)) else os.path.abspath(path_or_url))
        self._storage_options = dict(storage_options) if storage_options else None
        try:
            zarr.open_group(store, mode="r", use_consolidated=False)
        except FileNotFoundError:
            raise input_error(self.source, None, "not a zarr group (expected an SDOMLv2 store: a .zgroup with "
                              "one group per year)") from None
        except Exception as exc:  # network, permissions, malformed metadata: say which store and why
            raise input_error(self.source, None, f"cannot open ({type(exc).__name__}: {exc})") from exc

        listed = sorted(name for name in _list_dir(store, "") if len(name) == 4 and name.isdigit())
        if years is None:
            if not listed:
                raise input_error(self.source, None, "no year groups found (expected groups named like '2011'; "
                                  "a store that cannot be listed, e.g. over HTTP, needs years=...)")
            wanted, explicit = [int(y) for y in listed], False
        else:
            wanted, explicit = sorted({int(y) for y in years}), True

        self._years: list[_YearArray] = []
        found_channels: set[str] = set()
        for year in wanted:
            try:
                zarr.open_group(store, path=f"{year:04d}", mode="r", use_consolidated=False)
            except FileNotFoundError:
                raise input_error(self.source, f"year {year:04d}", "requested but absent; found: "
                                  + (", ".join(listed) or "no listable year groups")) from None
            try:
                arr = zarr.open_array(store=store, path=f"{year:04d}/{self.channel}", mode="r")
            except FileNotFoundError:
                found_channels.update(n for n in _list_dir(store, f"{year:04d}") if not n.startswith(".")
                                      and n != "zarr.json")
                if explicit:
                    raise input_error(self.source, f"array '{year:04d}/{self.channel}'", "missing; found: "
                                      + (", ".join(sorted(found_channels)) or "nothing")) from None
                continue
            self._years.append(self._load_year(year, arr))
        if not self._years:
            raise input_error(self.source, None, f"no array '{self.channel}' in any year group; found: "
                              + (", ".join(_sort_channels(found_channels)) or "no arrays"))

        shapes = {ya.array.shape[1:] for ya in self._years}
        if len(shapes) != 1:
            raise input_error(self.source, f"array '{self.channel}'", f"frame shapes differ between years: {shapes}")
        self.frame_shape = tuple(int(n) for n in shapes.pop())
        self.chunks = {ya.year: tuple(int(c) for c in ya.array.chunks) for ya in self._years}

        # global frame list: (year slot, stored position), then sorted by time (stable, so ties keep store order)
        slot = np.concatenate([np.full(len(ya.columns["T_OBS"]), k, dtype=np.int32)
                               for k, ya in enumerate(self._years)])
        local = np.concatenate([np.arange(len(ya.columns["T_OBS"]), dtype=np.int64) for ya in self._years])
        times = np.concatenate([ya.times for ya in self._years])
        order = np.argsort(times, kind="stable")
        self.times = times[order]
        self._slot = slot[order]
        self._local = local[order]
        self._headers_df: pd.DataFrame | None = None

    def _load_year(self, year: int, arr: zarr.Array) -> _YearArray:
        where = f"{self.source}: array '{year:04d}/{self.channel}'"
        if arr.ndim != 3:
            raise input_error(where, None, f"shape {arr.shape} (expected (N, H, W) frames)")
        attrs = arr.metadata.attributes  # the parsed .zattrs, read once with the array metadata
        n = arr.shape[0]
        if "T_OBS" not in attrs:
            raise input_error(where, "attribute 'T_OBS'", "missing (expected one T_OBS string per frame)")
        t_obs = attrs["T_OBS"]
        if not isinstance(t_obs, list) or len(t_obs) != n:
            length = len(t_obs) if isinstance(t_obs, list) else "not a list"
            raise input_error(where, "attribute 'T_OBS'", f"length {length} != {n} frames "
                              "(expected one entry per frame)")
        times = parse_t_obs(t_obs, where, "T_OBS")
        columns = {k: _column(v) for k, v in attrs.items() if isinstance(v, list) and len(v) == n}
        return _YearArray(year=year, array=_without_attributes(arr), columns=columns, times=times)

    def header(self, i: int) -> dict:
        """Every per-frame keyword of frame ``i`` (time order), as Python values."""
        i = self._index(i)
        ya, j = self._years[self._slot[i]], self._local[i]
        return {k: _py(col[j]) for k, col in ya.columns.items()}

    def headers(self) -> pd.DataFrame:
        """All per-frame keywords (columns ``T_OBS``, ``EXPTIME``, ``QUALITY``, ``DEG_COR``, ...), time order.

        Frames with ``QUALITY != 0`` are kept; filter on that column to drop them.
        """
        if self._headers_df is None:
            keys = list(dict.fromkeys(k for ya in self._years for k in ya.columns))
            data = {}
            for k in keys:
                parts = [ya.columns[k] if k in ya.columns else np.full(len(ya.times), None, dtype=object)
                         for ya in self._years]
                if len({p.dtype.kind for p in parts}) > 1:
                    parts = [p.astype(object) for p in parts]
                data[k] = np.concatenate(parts)[self._global_positions()]
            self._headers_df = pd.DataFrame(data)
        return self._headers_df.copy()

    def _global_positions(self) -> np.ndarray:
        offsets = np.cumsum([0] + [len(ya.times) for ya in self._years])
        return offsets[self._slot] + self._local

    def read(self, i: int) -> np.ndarray:
        """Frame ``i`` (time order), float32 (H, W) in DN/s; only its chunk is read and decompressed."""
        i = self._index(i)
        return np.asarray(self._years[self._slot[i]].array[int(self._local[i])], dtype=np.float32)

    def read_many(self, indices) -> np.ndarray:
        """Frames at ``indices`` (time order) as float32 (n, H, W), in the requested order.

        Reads are grouped by (year, chunk), so each chunk is fetched and decompressed once.
        """
        idx = self._indices(indices)
        return _read_grouped([ya.array for ya in self._years], self._slot[idx], self._local[idx], self.frame_shape)

    def batch(self, indices) -> SDOMLBatch:
        """A small picklable description of the frames at ``indices`` (time order) that any process seeing the
        same store reads with :meth:`SDOMLBatch.read` (the same pixels as :meth:`read_many`)."""
        idx = self._indices(indices)
        years = np.array([ya.year for ya in self._years], dtype=np.int64)[self._slot[idx]]
        return SDOMLBatch(location=self._location, storage_options=self._storage_options, channel=self.channel,
                          years=years, local=self._local[idx].copy(), frame_shape=self.frame_shape)

    def to_dask(self, indices=None):
        """Lazy float32 (n, H, W) dask array of the frames at ``indices`` (default: all), in that order.

        One read task per (year, chunk) group touched, so each chunk is decompressed once whatever the
        order; the output blocks follow the requested order (runs of one group, adjacent small runs
        merged up to one chunk's worth of frames) and take their frames from those read tasks.
        """
        import dask.array as da
        from dask.base import tokenize
        from dask.highlevelgraph import HighLevelGraph

        idx = np.arange(len(self)) if indices is None else self._indices(indices)
        if len(idx) == 0:
            return da.zeros((0, *self.frame_shape), dtype=np.float32)
        name = "sdoml-" + tokenize(self.source, self.channel, [ya.year for ya in self._years], idx.tobytes())
        slots, local = self._slot[idx], self._local[idx]
        per_chunk = np.array([ya.array.chunks[0] for ya in self._years])
        group = slots.astype(np.int64) * (1 << 40) + local // per_chunk[slots]

        dsk: dict = {}
        for s, ya in enumerate(self._years):
            if np.any(slots == s):
                dsk[(name + "-array", s)] = ya.array  # a small handle (attributes stripped), shared by reads
        read_key, row = {}, np.empty(len(idx), dtype=np.int64)
        for g in np.unique(group):
            members = np.nonzero(group == g)[0]
            needed = np.unique(local[members])
            row[members] = np.searchsorted(needed, local[members])
            read_key[g] = (name + "-read", len(read_key))
            dsk[read_key[g]] = (_read_block, (name + "-array", int(slots[members[0]])), needed)

        runs = np.r_[0, np.nonzero(np.diff(group))[0] + 1, len(idx)]
        limit = int(per_chunk.max())
        bounds = [0]
        for a, b in zip(runs[:-1], runs[1:], strict=True):
            if a != bounds[-1] and (b - bounds[-1] > limit):
                bounds.append(int(a))
        bounds.append(len(idx))
        for m, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            keys = list(dict.fromkeys(read_key[g] for g in group[a:b]))
            which = np.array([keys.index(read_key[g]) for g in group[a:b]])
            dsk[(name, m, 0, 0)] = (_gather, keys, which, row[a:b])
        chunks = (tuple(np.diff(bounds).tolist()), (self.frame_shape[0],), (self.frame_shape[1],))
        return da.Array(HighLevelGraph.from_collections(name, dsk, dependencies=()), name, chunks,
                        dtype=np.float32)


@dataclasses.dataclass
class SDOMLBatch:
    """Where some frames of one channel live in an SDOMLv2 store (not their pixels): what a dask.distributed
    worker needs to read them itself. Remote stores are reopened with the same (anonymous by default) options."""

    location: object  # absolute path, URL, or a zarr store object
    storage_options: dict | None
    channel: str
    years: np.ndarray  # year group of each frame
    local: np.ndarray  # stored position of each frame in its year's array
    frame_shape: tuple[int, int]

    def __len__(self) -> int:
        return len(self.local)

    def read(self) -> np.ndarray:
        """The frames as float32 (n, H, W) in DN/s, in order; each chunk is fetched and decompressed once."""
        wanted = np.unique(self.years)
        handles = [_pixel_array(self.location, self.storage_options, int(y), self.channel) for y in wanted]
        return _read_grouped(handles, np.searchsorted(wanted, self.years), self.local, self.frame_shape)


def _pixel_array(location, storage_options: dict | None, year: int, channel: str) -> zarr.Array:
    """The pixel handle of ``<year>/<channel>``; the store is opened once per process for a path or URL, the
    array's ``.zarray`` is read afresh (a store rewritten in place is never read with stale metadata)."""
    if isinstance(location, str):
        store = _cached_store(location, json.dumps(storage_options, sort_keys=True))
    else:
        store = _open_store(location, storage_options)[0]
    return _open_pixels(store, f"{year:04d}/{channel}")


@functools.lru_cache(maxsize=8)
def _cached_store(location: str, options_json: str):
    return _open_store(location, json.loads(options_json))[0]


def _open_pixels(store, path: str) -> zarr.Array:
    """The array at ``path`` with empty attributes, from its ``.zarray`` alone: a year's ``.zattrs`` in SDOMLv2
    holds ~221 MB of per-frame keyword lists, which pixel reads do not need."""
    try:
        from zarr.core.array import Array, AsyncArray
        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.metadata.v2 import ArrayV2Metadata
        from zarr.core.sync import sync
        from zarr.storage import StorePath

        raw = sync(store.get(f"{path}/.zarray", prototype=default_buffer_prototype()))
        if raw is not None:
            meta = ArrayV2Metadata.from_dict({**json.loads(raw.to_bytes()), "attributes": {}})
            return Array(AsyncArray(metadata=meta, store_path=StorePath(store, path)))
    except (ImportError, AttributeError, TypeError, ValueError, KeyError):
        pass  # another zarr (or a zarr v3 array): open it the ordinary way below, still correct
    return _without_attributes(zarr.open_array(store=store, path=path, mode="r"))


def _read_grouped(handles: Sequence[zarr.Array], which: np.ndarray, local: np.ndarray,
                  frame_shape: tuple[int, int]) -> np.ndarray:
    """Frames ``local[k]`` of ``handles[which[k]]`` as float32 (n, H, W) in order k, reads grouped by (array,
    chunk) so each chunk is fetched and decompressed once."""
    out = np.empty((len(local), *frame_shape), dtype=np.float32)
    if len(local) == 0:
        return out
    per_chunk = np.array([h.chunks[0] for h in handles], dtype=np.int64)
    keys = np.asarray(which, dtype=np.int64) * (1 << 40) + np.asarray(local) // per_chunk[which]
    for key in np.unique(keys):
        where = np.nonzero(keys == key)[0]
        out[where] = _read_block(handles[which[where[0]]], local[where])
    return out


def _gather(blocks: list[np.ndarray], which: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Frames ``blocks[which[k]][rows[k]]`` stacked in order k (one output block of :meth:`to_dask`)."""
    if len(blocks) == 1:
        return blocks[0][rows]
    return np.stack([blocks[w][r] for w, r in zip(which, rows, strict=True)])


def _read_block(arr: zarr.Array, local: np.ndarray) -> np.ndarray:
    """Frames ``local`` (stored positions, all in one chunk) of ``arr``: one contiguous read of that chunk."""
    lo, hi = int(local.min()), int(local.max()) + 1
    block = np.asarray(arr[lo:hi], dtype=np.float32)
    return block[np.asarray(local) - lo]


def _column(values: list) -> np.ndarray:
    """One keyword's per-frame list as a compact numpy column; object dtype unless cleanly numeric/bool."""
    try:
        col = np.asarray(values)
    except (ValueError, TypeError):
        col = None
    if col is not None and col.ndim == 1 and col.dtype.kind in "biuf":
        return col
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _py(v):
    return v.item() if isinstance(v, np.generic) else v


def _without_attributes(arr: zarr.Array) -> zarr.Array:
    """The same array with empty attributes: a small handle for reading pixels (and pickling into dask)."""
    try:
        from zarr.core.array import Array, AsyncArray

        meta = dataclasses.replace(arr.metadata, attributes={})
        aa = arr._async_array
        return Array(AsyncArray(metadata=meta, store_path=aa.store_path, config=aa.config))
    except Exception:  # a zarr without these internals: keep the full handle, still correct
        return arr


def _sort_channels(names: Iterable[str]) -> list[str]:
    def key(n: str):
        digits = n.rstrip("A")
        return (0, int(digits), n) if digits.isdigit() else (1, 0, n)

    return sorted(names, key=key)


def _list_dir(store, prefix: str) -> list[str]:
    """Names directly under ``prefix`` in a zarr store ([] if the store cannot be listed, e.g. HTTP)."""
    from zarr.core.sync import sync

    async def names():
        return [k async for k in store.list_dir(prefix)]

    try:
        return sync(names())
    except Exception:
        return []


def is_url(spec) -> bool:
    return isinstance(spec, str) and "://" in spec


def _open_store(path_or_url, storage_options: dict | None):
    """A read-only zarr store and a printable name for it."""
    from zarr.abc.store import Store

    if isinstance(path_or_url, Store):
        return path_or_url, str(path_or_url)
    if is_url(path_or_url):
        url = path_or_url.rstrip("/")
        scheme = url.split("://", 1)[0].lower()
        if scheme not in URL_SCHEMES:
            raise input_error(url, None, f"unsupported URL scheme '{scheme}://' (expected one of "
                              + ", ".join(f"{s}://" for s in URL_SCHEMES) + ")")
        package = _FSSPEC_PACKAGE.get(scheme)
        if package and importlib.util.find_spec(package) is None:
            raise input_error(url, None, f"reading {scheme}:// stores needs the '{package}' package: "
                              f"pip install {package}")
        options = {**_ANON_OPTIONS.get(scheme, {}), **(storage_options or {})}
        try:
            store = zarr.storage.FsspecStore.from_url(url, storage_options=options, read_only=True)
        except Exception as exc:
            raise input_error(url, None, f"cannot open ({type(exc).__name__}: {exc})") from exc
        return store, url
    path = Path(path_or_url)
    if not path.exists():
        raise input_error(path, None, "does not exist (expected an SDOMLv2 zarr store)")
    if not path.is_dir():
        raise input_error(path, None, "not a zarr group (expected an SDOMLv2 store folder with a .zgroup)")
    return zarr.storage.LocalStore(path, read_only=True), str(path)
