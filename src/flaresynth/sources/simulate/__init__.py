"""The simulated Sun: AIA frames (171 Å, or up to six EUV channels), GOES XRS and a HEK flare list, written in
the real archive formats.

No solar archive is reachable offline, so flaresynth carries a small, self-consistent Sun that writes exactly
what the real pipeline (dataset build, training, evaluation) reads. Everything is a deterministic function of
the seed (one :class:`numpy.random.SeedSequence`, one child per component) and every frame is a pure function
of its time, so frames are rendered in the archive's (shuffled) order and the same seed gives identical files.

It is meant to be about as hard as real AIA data, not easier: flares behind the limb, 171 Å peaking after the
X-rays, scattered EUV brightness at fixed flux, exposure control, diffraction, cosmic rays, missing frames and
a drifting calibration (the confounders, all on by default). Results on it are still upper bounds and claim
nothing about the real Sun.

Modules: :mod:`~flaresynth.sources.simulate.cycle` (activity, latitudes and NOAA numbers by date),
:mod:`~flaresynth.sources.simulate.sun` (the Sun: active regions, flares, the 171 Å renderer, the camera and the
XRS light curve), :mod:`~flaresynth.sources.simulate.archives` (the SDOMLv2 zarr store, GOES netCDF and HEK
JSON writers, and :func:`simulate`, which writes them all) and :mod:`~flaresynth.sources.simulate.montage`
(the picture of frames by GOES class), :mod:`~flaresynth.sources.simulate.channels` (the other EUV channels:
temperature responses, flare cooling, each channel's camera and degradation). The referee that reads a flux back from an image is an evaluation
tool and lives in :mod:`flaresynth.metrics.referee`.

Figures: the default period (730 days from 2011-01-01 at 60 min, 17166 frames) takes ~4 min on two cores and
7.2 GB of disk; building the demo's 64×64 dataset from it takes ~20-30 s. Each further channel costs about as much as 171 Å.
"""

from flaresynth.sources.simulate.archives import DEFAULT_CADENCE_MIN, DEFAULT_DAYS, DEFAULT_START, simulate
from flaresynth.sources.simulate.sun import CONFOUNDERS, SimulatedSun

__all__ = ["CONFOUNDERS", "DEFAULT_CADENCE_MIN", "DEFAULT_DAYS", "DEFAULT_START", "SimulatedSun", "simulate"]
