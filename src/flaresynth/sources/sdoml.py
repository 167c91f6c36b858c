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
* Remote stores are opened through fsspec: ``s3://`` anonymously (the NASA HDRL bucket
  ``gov-nasa-hdrl-data1/contrib/fdl-sdoml/fdl-sdoml-v2/sdomlv2.zarr`` needs no credentials), ``gs://`` with
  ``gcsfs`` (token ``"anon"``), ``http(s)://`` (cannot be listed: pass ``years``), and ``memory://``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
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
        out = np.empty((len(idx), *self.frame_shape), dtype=np.float32)
        if len(idx) == 0:
            return out
        slots, local = self._slot[idx], self._local[idx]
        chunk = np.array([local[k] // self._years[s].array.chunks[0] for k, s in enumerate(slots)])
        keys = slots.astype(np.int64) * (1 << 40) + chunk
        for key in np.unique(keys):
            where = np.nonzero(keys == key)[0]
            out[where] = _read_block(self._years[slots[where[0]]].array, local[where])
        return out

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
