"""Open an image source by what a path or URL is: an SDOMLv2 zarr store or AIA FITS file(s).

The factory sits above the sources (:mod:`flaresynth.sources.sdoml`, :mod:`flaresynth.sources.aia_fits`),
which share :class:`flaresynth.sources.frames.TimeIndexedFrames`, as ``sunpy.map.Map`` sits above its sources.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from flaresynth.errors import FlaresynthError, input_error
from flaresynth.sources.aia_fits import AIAFitsFolder
from flaresynth.sources.aligned import AlignedChannels
from flaresynth.sources.frames import FITS_SUFFIXES
from flaresynth.sources.sdoml import SDOMLStore, is_url


def open_images(spec, channel: str = "171A", years: Sequence[int] | None = None):
    """Open an image source by what ``spec`` is: an SDOMLv2 store or AIA FITS file(s).

    A URL, or a folder holding ``.zgroup``/``zarr.json``, gives an :class:`SDOMLStore`; a folder of FITS
    files or a single FITS file gives an :class:`~flaresynth.sources.aia_fits.AIAFitsFolder`
    (resampled to the SDOMLv2 geometry at 512 px). Both have the same interface.
    """
    if is_url(str(spec)):
        return SDOMLStore(str(spec), channel=channel, years=years)
    path = Path(spec)
    if not path.exists():
        raise input_error(path, None, "does not exist (expected an SDOMLv2 zarr store, a folder of AIA FITS "
                          "files or one FITS file)")
    if path.is_dir() and ((path / ".zgroup").exists() or (path / "zarr.json").exists()):
        return SDOMLStore(path, channel=channel, years=years)
    if path.is_dir() or path.name.lower().endswith(FITS_SUFFIXES):
        return AIAFitsFolder(path, channel=channel, years=years)
    raise input_error(path, None, "neither an SDOMLv2 zarr store nor a FITS file")


def open_channels(spec, channels: Sequence[str], years: Sequence[int] | None = None,
                  align_tol_s: float | None = None) -> AlignedChannels:
    """Several channels of one source (:func:`open_images` each), aligned in time
    (:class:`~flaresynth.sources.aligned.AlignedChannels`). A channel the source lacks, or a FITS folder that
    mixes in files of another instrument, is a one-line error naming what is there."""
    sources = []
    for channel in channels:
        try:
            sources.append(open_images(spec, channel=channel, years=years))
        except FlaresynthError as exc:
            raise FlaresynthError(f"--channels {channel}: {exc}") from None
    if isinstance(sources[0], AIAFitsFolder) and sources[0].not_aia:
        path, instrument = sources[0].not_aia[0]
        raise input_error(path, "INSTRUME", f"{instrument!r}: the folder mixes instruments ({sources[0].n_not_aia} "
                          "file(s) not SDO/AIA); a multi-channel build takes SDO/AIA files only")
    return AlignedChannels(sources, channels, align_tol_s)
