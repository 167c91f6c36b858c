"""The simulated Sun: AIA 171 Å frames, GOES XRS and a HEK flare list, written in the real archive formats.

No solar archive is reachable offline, so flaresynth carries a small, self-consistent Sun that writes exactly
what the real pipeline (dataset build, training, evaluation) reads. Everything is a deterministic function of
the seed (one :class:`numpy.random.SeedSequence`, one child per component) and every frame is a pure function
of its time, so frames are rendered in the archive's (shuffled) order and the same seed gives identical files.

Modules: :mod:`~flaresynth.sources.simulate.sun` (the Sun: active regions, flares, the 171 Å renderer and the
XRS light curve), :mod:`~flaresynth.sources.simulate.archives` (the SDOMLv2 zarr store, GOES netCDF and HEK
JSON writers, and :func:`simulate`, which writes them all) and :mod:`~flaresynth.sources.simulate.montage`
(the picture of frames by GOES class). The referee that reads a flux back from an image is an evaluation
tool and lives in :mod:`flaresynth.metrics.referee`.

Figures (2 shared cores): 30 days at 12 min (3600 frames) take 40-60 s and 1.4 GB; building the default
64×64 dataset from them takes 4-7 s.
"""

from flaresynth.sources.simulate.archives import simulate
from flaresynth.sources.simulate.sun import SimulatedSun

__all__ = ["SimulatedSun", "simulate"]
