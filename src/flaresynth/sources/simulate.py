"""The simulated Sun: AIA 171 Å frames, GOES XRS and a HEK flare list, written in the real archive formats.

No solar archive is reachable offline, so flaresynth carries a small, self-consistent Sun that writes exactly
what the real pipeline (dataset build, training, evaluation) reads. Everything is a deterministic function of
the seed (one :class:`numpy.random.SeedSequence`, one child per component) and every frame is a pure function
of its time, so frames are rendered in the archive's (shuffled) order and the same seed gives identical files.

Files (``simulate``), formats from ``shared/reference/data_sources.md``
-----------------------------------------------------------------------
* ``sdomlv2.zarr`` (§3): zarr format 2, ``<year>/171A`` float32 (N, 512, 512) in DN/s, written by
  :func:`flaresynth.sources.sdoml.write_sdoml_frames` (Blosc zstd bitshuffle, chunks of 15 frames), one
  attribute list per FITS keyword. Days are stored in a shuffled order, time-ordered within a day, as in the
  real store; each frame goes to the group of its own year. Headers follow SDOMLv2's 512-px geometry:
  ``CDELT = 4.8″ · RSUN_OBS / 976″``, ``CRPIX = 256.5``, ``R_SUN = 976 / 4.8`` px; ``RSUN_OBS``, ``DSUN_OBS``,
  ``CRLT_OBS`` (B0) and ``CRLN_OBS`` (L0) come from sunpy's ephemeris. ``DEG_COR`` drifts slowly (0.86 in
  2024, -0.01 a year). ``EXPTIME`` is 2.0 s (AIA's automatic exposure control is not modelled); ~0.3 % of
  the frames carry a non-zero ``QUALITY``. Pixels keep 11 of their 23 mantissa bits (relative error
  <= 2.4e-4, far below photon noise), which halves the store (~385 kB a frame).
* ``goes/sci_xrsf-l2-avg1m_g16_dYYYYMMDD_v2-2-0.nc`` (§5.1): GOES-16 L2 1-min averages, 1440 rows a day,
  ``time`` float64 whole seconds since 2000-01-01 12:00:00 (record start). Variable names, dtypes, fill
  values, flag encoding (``flag_values``/``flag_masks``/``flag_meanings``) and global attributes are copied
  from the real file ``sci_xrsf-l2-avg1m_g16_d20210101_truncated.nc`` shipped by sunpy (``id`` = the file
  name; ``date_created`` is fixed, not the wall clock). About 4 minutes a day are ``bad_data`` (flag 2) and
  carry a particle spike (flux × 5-50) or the fill value, so readers must honour ``xrsb_flag``. Fluxes are
  GOES-R "true" fluxes (no SWPC 0.7 factor); a 1-min sample is the light curve at the middle of its minute.
* ``hek/flares.json`` (§6): a saved HEK response, one SWPC ``FL`` event per detected flare. As SWPC does,
  ``fl_goescls`` is the class of the **maximum XRS-B flux, background included**, between start and end,
  measured on the good samples of the written GOES record, and the peak time is that minute. A flare whose
  maximum is not its own peak (buried in a bigger flare's decay) is not listed, as SWPC would miss it.
  Start = peak - 2.5 σ_rise; end = when the flare has decayed to half its peak (SWPC's rule).
* ``montage.png``: frames by the GOES class of their instantaneous flux (rows A-X), sunpy's ``sdoaia171``
  colour map, log stretch; ``simulation.json``: the parameters and counts.

The 171 Å Sun (512 px; radius 976″ at 4.8″/px = 203.3 px, centred at (255.5, 255.5); row 0 is north)
-----------------------------------------------------------------------------------------------------
Calibrated against the real ``aia_171_level1.fits`` (2011-02-15, DN/s = DN / EXPTIME), with a quiet simulated
frame binned to the same 128 px; radial medians in DN/s, real vs simulated: disk centre 111 vs 142,
0.95-1.0 R☉ 266 vs 224, 1.0-1.05 R☉ 298 vs 262, 1.05-1.1 R☉ 87 vs 85, 1.1-1.2 R☉ 21 vs 20,
1.3-1.4 R☉ 5 vs 4.7.

* **Quiet corona, limb brightening, off-limb decay.** 171 Å emission is optically thin, so the intensity is
  a line-of-sight integral. A hydrostatic 1 MK corona has a density scale height ≈ 0.07 R☉, so its emission
  measure (∝ n²) falls with ``H_EM = 0.04 R☉``; integrating ``exp(-(ρ-1)/H_EM)`` along each line of sight
  (inside the limb only in front of the disk) gives the limb brightening and the off-limb decay. A
  disk-attached component (transition region and network, not limb-brightened) carries the texture, and a
  faint ``r^-4`` halo stands in for scattered light.
* **Network**: cell-like multiscale noise: the bright lanes of band-passed noise at the supergranular scale
  (~30 Mm ≈ 8 px) plus weak ~50-px variations, log-normal. It is smoother than the real frame at 128 px
  (10-90 % at disk centre 118-177 vs 57-224 DN/s), by choice: large quiet-Sun patches would blur the A/B
  distinction, which rests on the regions' total emission. Five static templates are blended over 1.5 days
  each with cos/sin weights of their logarithms (so the contrast stays constant): the network evolves slowly.
* **Coronal holes**: two or three dark patches (25-45 % of the quiet level, 6-13° radius) at latitudes
  40-70°, poleward of the activity belts, rotating with the Sun.
* **Active regions** emerge at |latitude| 5-35° (mostly ~16°) with Joy's-law tilts (≈ lat / 2). 90 % emerge
  in one activity nest (an active longitude, Berdyugina & Usoskin 2003; σ = 15°), so the visible disk is busy
  for about half a rotation and quiet for the other half (so a 30-day run normally has A-class days).
  0.4 emergences a day, from 30 days before the start so the Sun starts populated. Each region rotates
  rigidly at the Snodgrass & Ulrich (1990) rate of its latitude, ``ω = 14.713 - 2.396 sin²φ - 1.787 sin⁴φ``
  deg/day (sidereal) minus Earth's 0.9856 deg/day, and is seen with the solar B0 angle. A region is a 3-D
  structure projected orthographically: an arcade of 8-13 thin, sheared semicircular loops and two long fan
  loops (40 % of its emission) and a cloud of unresolved loops with a 0.06 R☉ emission scale height (60 %).
  Points behind the disk are hidden, so regions rotate in over the east limb, foreshorten, and show loops
  above the limb. Its emission is ``strength(t) × E_UNIT`` (4e5 DN/s·px²); strength rises over 0.8-2.5 days
  and decays over 6-16 days (e-folding), with peak values log-normal around 0.6 (0.15-1.6). Because the
  emission is optically thin, projection moves it without changing its total.
* **Flares** occur in visible regions (centre at μ > 0.15), as a Poisson process whose rate is proportional
  to the region's strength: ``R_C = 5`` flares ≥ C1 (flare part) per day per unit strength, i.e. 15-25 a
  day on a busy disk (3-5 units), none on a quiet one, and ~10 C-class SWPC events a day averaged over a
  month (an active Sun near cycle maximum), chosen so that one month holds all five classes and a few X.
  Peak fluxes (above background) follow ``dN/dF ∝ F^-2`` (Aschwanden et al. 2016: α ≈ 2 for GOES flares)
  between 6e-7 and 2e-3 W/m², so each decade holds a tenth of the flares of the one below: ~25 M and ~2-5 X
  in a month (seed 0, 30 days: 331 C, 25 M, 2 X SWPC events).
  Light curve: Gaussian rise (σ = 2.5 min · (F/1e-6)^0.2) and exponential decay (τ = 9 min ·
  (F/1e-6)^0.25), each with 25 % log-normal scatter, so bigger flares last longer, as in GOES statistics.
  The 171 Å kernel follows the flare's *instantaneous* flux f (no EUV cooling delay, so the label is a
  faithful function of the image): a loop-top core and two ribbons whose size grows as σ = 6 px ·
  (f/1e-6)^0.3 up to M1, then ∝ f^0.2 (12 px at M1, 19 px at X1), with a nearly flat peak 2800 DN/s ·
  (f/1e-6)^0.12 (the area carries the flux, so it survives clipping at 64×64), plus a compact footpoint
  (3000 DN/s · (f/1e-6)^0.6). Pixels above AIA's CCD full well (16383 DN in the 2 s exposure, i.e.
  ``16383 / (EXPTIME · DEG_COR)`` ≈ 9500 DN/s) saturate, and the excess charge blooms up and down the CCD
  columns (charge-conserving vertical streaks), as in AIA flare images (from ~M1 on).

GOES XRS
--------
XRS-B = ``F_QUIET`` (2.5e-8, the spotless corona) + ``K_AR`` × visible active-region emission (2e-7 W/m² per
unit of strength: a quiet disk sits at A3-B1, a busy one at B5-C1) + the flares' light curves, times a 1 %
Gaussian instrument noise (small, so the label is a faithful function of the image). XRS-A is 6 % of the
background (2-3 MK plasma) and 7-35 % of a flare's flux, highest at its peak and for big flares (hotter).

``estimate_flux``: the simulator's referee of images
----------------------------------------------------
The XRS-B flux implied by a 171 Å image in DN/s at any resolution: area mean to 64×64 and clip to
[5, 3500] DN/s first (the model transform's range, so it uses only what survives preprocessing). Then
(:func:`_measure`): excess over the simulator's mean quiet Sun; flare kernels = groups of pixels more than
1400 DN/s above it (2200 at the limb, where regions are seen edge-on; no region reaches that), measured
above their local background; region emission = the excess everywhere else out to 1.3 R☉ except coronal
holes. Flux = ``F_QUIET + K_AR`` × region emission (with the gain and offset fitted on rendered frames) +
for each kernel, the flare flux read from a table of the kernel excess of this module's own kernels at
known fluxes, rendered inside active regions of a different simulated Sun (:func:`_calibration`, ~3 s at
first use). On simulated frames it was not calibrated on (30 days, frames within ±30 min of flare peaks +
8 quiet frames a day) it gives macro-F1 0.94-0.97 on the five GOES classes after the 64×64 round trip
(seeds 0, 1, 2).

Figures (2 shared cores): 30 days at 12 min (3600 frames) take 40-60 s and 1.4 GB; building the default
64×64 dataset from them takes 4-7 s.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flaresynth.errors import FlaresynthError, input_error
from flaresynth.io import atomic_dir
from flaresynth.labels import GOES_CLASSES, flux_to_class, flux_to_letter_index

# ------------------------------------------------------------------------------------------------ geometry
SIZE = 512
CENTRE = (SIZE - 1) / 2.0  # 255.5, 0-based (CRPIX 256.5)
RSUN_ARCSEC_SDOML = 976.0  # SDOMLv2 rescales every frame to this radius
CDELT_SDOML = 4.8  # arcsec/px at 512 px
RSUN_PX = RSUN_ARCSEC_SDOML / CDELT_SDOML  # 203.33 px
EXPTIME = 2.0  # s
FULL_WELL_DN = 16383.0  # AIA CCD saturation in one exposure
SIDEREAL_EARTH = 0.9856  # deg/day, Earth's orbital motion: synodic = sidereal - this
CARRINGTON_SYNODIC = 360.0 / 27.2753  # deg/day

# ------------------------------------------------------------------------------------------------- physics
H_EM = 0.04  # R☉, emission-measure scale height of the 1 MK quiet corona
QUIET_NETWORK = 92.0  # DN/s, disk-attached component at disk centre (mean of the texture)
QUIET_CORONA = 36.0  # DN/s, line-of-sight corona seen at disk centre
HALO = 15.0  # DN/s at 1 R☉ of the r^-4 scattered-light halo
E_UNIT = 4e5  # DN/s·px² (512-px pixels) of one unit of active-region strength
F_QUIET = 2.5e-8  # W/m², XRS-B of the spotless corona
K_AR = 2.0e-7 / E_UNIT  # W/m² per DN/s·px² of visible active-region emission
NOISE_XRS = 0.01  # relative XRS noise
R_C = 5.0  # flares >= C1 per day per unit of visible strength
AR_RATE = 0.4  # active-region emergences per day
NEST_FRACTION = 0.9  # share of emergences in the activity nest
F_MIN, F_MAX = 6e-7, 2e-3  # W/m², range of the flares' own peak flux
KERNEL_SIGMA = 6.0  # px at 512 for f = 1e-6
KERNEL_PEAK = 2800.0  # DN/s for f = 1e-6
FOOTPOINT_PEAK = 3000.0  # DN/s for f = 1e-6: saturates AIA from ~M1
FOOTPOINT_SIGMA = 2.0  # px
TEXTURE_PERIOD = 1.5  # days per texture template
N_TEXTURES = 5
TEXTURE_LANES = 0.5  # log-contrast of the network lanes (10-90 % ≈ 0.7-1.7× the mean at 512 px)
TEXTURE_LARGE = 0.1  # log-contrast of the large-scale (~50 px) brightness variations

# ---------------------------------------------------------------------------------------------- estimator
EST_SIZE = 64
CLIP = (5.0, 3500.0)
T_FLARE = 1400.0  # DN/s above the quiet level at 64×64 on the central disk: above active regions
T_FLARE_LIMB = 2200.0  # the same at the limb, where regions are seen edge-on
DARK_THRESHOLD = 0.25  # × quiet level: deficit that marks a coronal hole (left out of the region sum)
DARK_GROW = 3  # px at 64: margin around dark features
KERNEL_REACH = 3  # px at 64: how far a kernel's footprint may extend beyond its core
KERNEL_EDGE = 300.0  # DN/s above the local background: edge of a kernel's footprint

CHUNK = 15
GOES_VERSION = "v2-2-0"
GOES_EPOCH = np.datetime64("2000-01-01T12:00:00", "ns")
T_OBS_OFFSET = np.timedelta64(5350, "ms")  # AIA T_OBS is the exposure mid-time, a few seconds past the slot


def _days(dt: np.ndarray | np.timedelta64) -> np.ndarray:
    return np.asarray(dt, dtype="timedelta64[ns]").astype(np.float64) / 86400e9


def synodic_rate(lat_deg) -> np.ndarray:
    """Synodic rotation rate in deg/day at heliographic latitude ``lat_deg`` (Snodgrass & Ulrich 1990)."""
    s2 = np.sin(np.radians(lat_deg)) ** 2
    return 14.713 - 2.396 * s2 - 1.787 * s2 * s2 - SIDEREAL_EARTH


def _sun_to_image(xyz: np.ndarray, lon_deg, b0_deg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sun-frame points (3, ...) rotated by ``lon_deg`` about the solar axis, seen from latitude ``b0_deg``.

    The Sun frame has z on the rotation axis and x towards Stonyhurst longitude 0. Returns observer-frame
    (x west, y north, z towards the observer) in R☉.
    """
    lon, b0 = np.radians(lon_deg), np.radians(b0_deg)
    x0, y0, z0 = xyz
    xr = x0 * np.cos(lon) - y0 * np.sin(lon)
    yr = x0 * np.sin(lon) + y0 * np.cos(lon)
    return yr, -np.sin(b0) * xr + np.cos(b0) * z0, np.cos(b0) * xr + np.sin(b0) * z0


def _visible(x, y, z) -> np.ndarray:
    """Not hidden behind the solar disk (in front of it, or off the limb)."""
    return (z > 0) | (x * x + y * y > 1.0)


def _los_profile(r: np.ndarray) -> np.ndarray:
    """Line-of-sight integral of exp(-(ρ-1)/H_EM), normalised to 1 at disk centre (r in R☉)."""
    z = np.linspace(0.0, 1.5, 3001)
    out = np.empty_like(r)
    for i, ri in enumerate(r):
        if ri < 1.0:
            zz = np.sqrt(1.0 - ri * ri) + z  # only the corona in front of the disk
            vals = np.exp(-(np.sqrt(ri * ri + zz * zz) - 1.0) / H_EM)
            out[i] = np.trapezoid(vals, zz)
        else:
            vals = np.exp(-(np.sqrt(ri * ri + z * z) - 1.0) / H_EM)
            out[i] = 2.0 * np.trapezoid(vals, z)
    return out / H_EM


def _bandpass_noise(rng: np.random.Generator, n: int, scale_px: float, width: float = 0.5) -> np.ndarray:
    """Gaussian noise band-passed (log-normal ring in k) around wavelength ``scale_px``, unit variance."""
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.rfftfreq(n), indexing="ij"))
    k0 = 1.0 / scale_px
    with np.errstate(divide="ignore"):
        filt = np.exp(-0.5 * (np.log(np.where(k > 0, k, 1e-9) / k0) / width) ** 2)
    field = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((n, n))) * filt, s=(n, n))
    return (field - field.mean()) / field.std()


def _gauss_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(img, sigma, mode="constant", truncate=3.0)


@functools.lru_cache(maxsize=1)
def _quiet_sun() -> tuple[np.ndarray, ...]:
    """Static 512×512 maps: x, y (R☉, y north), disk fraction, network level, corona + halo (DN/s)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    px = ((xx - CENTRE) / RSUN_PX).astype(np.float32)
    py = ((CENTRE - yy) / RSUN_PX).astype(np.float32)  # row 0 is north, as stored by SDOMLv2
    r = np.hypot(px, py).astype(np.float64)
    rr = np.linspace(0, 2.0, 2001)
    los = np.interp(r, rr, _los_profile(rr))
    disk = np.clip((1.0 - r) * RSUN_PX + 0.5, 0.0, 1.0)  # anti-aliased disk edge
    network = (QUIET_NETWORK * disk).astype(np.float32)
    corona = (QUIET_CORONA * los + HALO * np.maximum(r, 1.0) ** -4).astype(np.float32)
    for a in (px, py, network, corona):
        a.flags.writeable = False
    return px, py, disk.astype(np.float32), network, corona


# -------------------------------------------------------------------------------------------- components
@dataclass
class ActiveRegion:
    """One active region: position, life history and 3-D emitting points (Sun frame, at longitude 0)."""

    noaa: int
    lat: float  # deg
    lon_emerge: float  # Stonyhurst longitude (deg) at emergence
    t_emerge: float  # days since start
    s_max: float  # peak strength (units of E_UNIT)
    tau_g: float  # days
    tau_d: float  # days
    axis: np.ndarray  # (3,) unit vector of the bipole axis (Sun frame, at longitude 0)
    perp: np.ndarray  # (3,) unit vector across the axis
    half_sep: float  # R☉, half the footpoint separation
    loops: np.ndarray  # (3, n) points of the loops
    loop_w: np.ndarray  # (n,) weights (sum over loops + glow = 1)
    glow: np.ndarray  # (3, m) points of the diffuse emission
    glow_w: np.ndarray  # (m,)

    def strength(self, t) -> np.ndarray:
        """Strength at times ``t`` (days): rises over tau_g, decays over tau_d; peak = s_max."""
        dt = np.maximum(np.asarray(t, dtype=np.float64) - self.t_emerge, 0.0)
        shape = (1.0 - np.exp(-dt / self.tau_g)) * np.exp(-dt / self.tau_d)
        tp = self.tau_g * math.log1p(self.tau_d / self.tau_g)
        peak = (1.0 - math.exp(-tp / self.tau_g)) * math.exp(-tp / self.tau_d)
        return self.s_max * shape / peak

    def lon(self, t) -> np.ndarray:
        """Stonyhurst longitude (deg) of the region at times ``t`` (days)."""
        return self.lon_emerge + synodic_rate(self.lat) * (np.asarray(t, dtype=np.float64) - self.t_emerge)

    @property
    def centre(self) -> np.ndarray:
        la = math.radians(self.lat)
        return np.array([math.cos(la), 0.0, math.sin(la)])


@dataclass
class Flare:
    """One flare: its own XRS-B light curve (above background) and where it sits in its region."""

    region: int
    t_peak: float  # days
    peak: float  # W/m², flare part only
    sigma_rise: float  # days
    tau_decay: float  # days
    offset: np.ndarray  # (3,) Sun-frame offset from the region centre (R☉)
    angle: float  # rad, ribbon orientation in the image
    hot: float  # XRS-A/XRS-B at peak

    def flux(self, t) -> np.ndarray:
        """XRS-B flux (W/m²) of the flare alone at times ``t`` (days)."""
        dt = np.asarray(t, dtype=np.float64) - self.t_peak
        rise = np.exp(-0.5 * (np.minimum(dt, 0.0) / self.sigma_rise) ** 2)
        decay = np.exp(-np.maximum(dt, 0.0) / self.tau_decay)
        return self.peak * np.where(dt < 0, rise, decay)

    @property
    def t_start(self) -> float:
        return self.t_peak - 2.5 * self.sigma_rise

    @property
    def t_end(self) -> float:
        # SWPC: half-way between peak and pre-flare level
        return self.t_peak + max(self.tau_decay * math.log(2.0), 2.0 / 1440)

    def window(self) -> tuple[float, float]:
        """Times (days) outside which the flare is negligible (< 1e-3 of its peak)."""
        return self.t_peak - 3.8 * self.sigma_rise, self.t_peak + 6.9 * self.tau_decay


@dataclass
class CoronalHole:
    """A dark patch of the corona, rotating with the Sun at its latitude's rate."""

    lat: float
    lon0: float  # Stonyhurst longitude at t = 0
    radius: float  # deg
    depth: float  # intensity factor at the centre

    def lon(self, t):
        return self.lon0 + synodic_rate(self.lat) * t


def _flare_offset(rng: np.random.Generator, ar: ActiveRegion) -> np.ndarray:
    """Where a flare sits in its region: near the polarity inversion line, 0.01 R☉ up (Sun frame, R☉)."""
    return (rng.normal(0, 0.4 * ar.half_sep) * ar.axis + rng.normal(0, 0.3 * ar.half_sep) * ar.perp
            + 0.01 * ar.centre)


def kernel_sigma(f) -> np.ndarray:
    """Size (px at 512, Gaussian σ of the core) of a flare kernel of instantaneous XRS-B flux ``f`` W/m².

    ∝ f^0.3 up to M1 (6 px = 29″ at C1, 12 px at M1), then ∝ f^0.2 (19 px at X1, 30 px at X10), so that even
    the largest flares stay within their active region.
    """
    f = np.maximum(f, 1e-12)
    return KERNEL_SIGMA * np.minimum(f / 1e-6, 10.0) ** 0.3 * np.maximum(f / 1e-5, 1.0) ** 0.2


def kernel_peak(f) -> np.ndarray:
    """Peak 171 Å intensity (DN/s) of a flare kernel's core for instantaneous flux ``f`` W/m².

    Nearly flat (∝ f^0.12: the area carries the flux), fading as f / (f + 2e-8) for the faintest kernels so
    that a decaying flare's emission goes to zero with its flux.
    """
    f = np.maximum(f, 1e-12)
    return KERNEL_PEAK * (f / 1e-6) ** 0.12 * f / (f + 2e-8)


def footpoint_peak(f) -> np.ndarray:
    """Peak (DN/s, before saturation) of the compact footpoint source: saturates AIA from ~M1."""
    return FOOTPOINT_PEAK * (np.maximum(f, 1e-12) / 1e-6) ** 0.6


# ------------------------------------------------------------------------------------------------ the Sun
class SimulatedSun:
    """A deterministic simulated Sun between ``start`` and ``start + days``.

    Parameters
    ----------
    start : first instant (UTC, numpy datetime64 or ISO string).
    days : length of the simulation in days.
    seed : seed of every random choice.
    """

    def __init__(self, start, days: float, seed: int = 0):
        self.start = np.datetime64(start, "ns")
        self.days = float(days)
        self.seed = int(seed)
        ss = np.random.SeedSequence(self.seed)
        tex_ss, ar_ss, ch_ss, fl_ss, self._goes_ss, self._misc_ss = ss.spawn(6)
        self._ephemeris()
        self._static_images(np.random.default_rng(tex_ss))
        self.holes = self._make_holes(np.random.default_rng(ch_ss))
        self.regions = self._make_regions(np.random.default_rng(ar_ss))
        self._visibility_table()
        self.flares = self._make_flares(np.random.default_rng(fl_ss))
        self._win = np.array([fl.window() for fl in self.flares]).reshape(-1, 2)

    # ------------------------------------------------------------------------------------------ set-up
    def _ephemeris(self):
        """B0, apparent radius, L0 and distance on a 6-hour grid (sunpy), interpolated later."""
        import astropy.units as u
        import sunpy.coordinates.sun as sun
        from astropy.time import Time

        self._eph_t = np.arange(-0.5, self.days + 0.75, 0.25)
        times = Time(str(self.start.astype("datetime64[s]"))) + self._eph_t * u.day
        self._eph_b0 = sun.B0(times).deg
        self._eph_rsun = sun.angular_radius(times).arcsec
        self._eph_l0 = np.degrees(np.unwrap(np.radians(sun.L0(times).deg)))
        self._eph_dsun = sun.earth_distance(times).to(u.m).value

    def b0(self, t):
        """Solar B0 angle (deg) at ``t`` days."""
        return np.interp(t, self._eph_t, self._eph_b0)

    def rsun_obs(self, t):
        """Apparent solar radius (arcsec) seen from Earth at ``t`` days."""
        return np.interp(t, self._eph_t, self._eph_rsun)

    def _static_images(self, rng: np.random.Generator):
        """The quiet-Sun maps and the network templates (log-textures of unit-free contrast)."""
        self._px, self._py, self._disk, self._network, self._corona = _quiet_sun()
        textures = []
        for _ in range(N_TEXTURES):
            cells = _bandpass_noise(rng, SIZE, 8.0, 0.35)
            lanes = np.exp(-0.5 * (cells / 0.45) ** 2)  # bright lanes along the cell boundaries
            lanes = (lanes - lanes.mean()) / lanes.std()
            large = _bandpass_noise(rng, SIZE, 48.0, 0.6)
            textures.append((TEXTURE_LANES * lanes + TEXTURE_LARGE * large).astype(np.float32))
        # log-textures are blended with cos/sin weights, which keeps their variance (so the contrast does not
        # dip between templates); exp(σ²/2) is the mean of the resulting log-normal texture
        self._textures = textures
        self._texture_norm = np.float32(math.exp(0.5 * (TEXTURE_LANES**2 + TEXTURE_LARGE**2)))

    def _make_holes(self, rng: np.random.Generator) -> list[CoronalHole]:
        holes = []
        for _ in range(int(rng.integers(2, 4))):
            lat = float(rng.choice([-1, 1]) * rng.uniform(40, 70))  # poleward of the activity belts
            holes.append(CoronalHole(lat, float(rng.uniform(-180, 180)), float(rng.uniform(6, 13)),
                                     float(rng.uniform(0.25, 0.45))))
        return holes

    def _make_regions(self, rng: np.random.Generator) -> list[ActiveRegion]:
        """Emergences from 30 days before the start (so the Sun starts populated) to the end."""
        t0, t1 = -30.0, self.days
        n = int(rng.poisson(AR_RATE * (t1 - t0)))
        t_emerge = np.sort(rng.uniform(t0, t1, n))
        nest = rng.uniform(0, 360)
        regions = []
        for i, te in enumerate(t_emerge):
            lat = float(rng.choice([-1, 1]) * np.clip(rng.normal(16, 7), 5, 35))
            # most regions emerge in one activity nest, so the visible disk is busy for half a rotation
            carr = nest + rng.normal(0, 15) if rng.uniform() < NEST_FRACTION else rng.uniform(0, 360)
            # Stonyhurst longitude at emergence of a Carrington-frame longitude
            lon_e = float((carr + CARRINGTON_SYNODIC * te + 180.0) % 360.0 - 180.0)
            s_max = float(np.clip(rng.lognormal(math.log(0.6), 0.6), 0.15, 1.6))
            tau_g = float(rng.uniform(0.8, 2.5))
            tau_d = float(rng.uniform(6.0, 16.0))
            regions.append(self._build_region(rng, 13600 + i, lat, lon_e, float(te), s_max, tau_g, tau_d))
        return regions

    @staticmethod
    def _build_region(rng, noaa, lat, lon_e, te, s_max, tau_g, tau_d) -> ActiveRegion:
        """A region's 3-D emitting points, built at Stonyhurst longitude 0 (rotated at render time)."""
        la = math.radians(lat)
        c = np.array([math.cos(la), 0.0, math.sin(la)])
        east_west = np.array([0.0, 1.0, 0.0])
        north = np.array([-math.sin(la), 0.0, math.cos(la)])
        tilt = math.radians(0.5 * abs(lat) + rng.normal(0, 8)) * (1 if lat > 0 else -1)
        axis = math.cos(tilt) * east_west - math.sin(tilt) * north
        perp = math.sin(tilt) * east_west + math.cos(tilt) * north
        half = 0.1 * s_max ** 0.3 * rng.uniform(0.8, 1.2)
        pts, wts = [], []
        n_loops = int(rng.integers(8, 14))
        theta = np.linspace(0.03, math.pi - 0.03, 72)
        for j in range(n_loops + 2):
            fan = j >= n_loops
            h = half * (rng.uniform(1.8, 2.6) if fan else rng.uniform(0.45, 1.3))
            o = rng.normal(0, 0.5 * half)
            shift = rng.normal(0, 0.25 * half)
            aspect = rng.uniform(0.6, 1.0)
            incl = rng.normal(0, 0.35)
            bow = rng.normal(0, 0.45) * h  # sheared arcade: loops bow sideways, so they curve seen from above
            up = math.cos(incl) * c + math.sin(incl) * perp
            p = (c[:, None] + (o * perp + shift * axis)[:, None] + h * np.cos(theta) * axis[:, None]
                 + bow * np.sin(theta) * perp[:, None] + aspect * h * np.sin(theta) * up[:, None])
            pts.append(p)
            wts.append(np.full(theta.size, (0.35 if fan else rng.lognormal(0, 0.4)) / theta.size))
        loops = np.concatenate(pts, axis=1)
        loop_w = np.concatenate(wts)
        loop_w *= 0.4 / loop_w.sum()  # 40 % of the emission in resolved loops
        m = 400
        glow = (c[:, None] + rng.normal(0, 0.7 * half, m) * axis[:, None]
                + rng.normal(0, 0.55 * half, m) * perp[:, None]
                + np.abs(rng.normal(0, 0.06, m)) * c[:, None])  # EM scale height of ~2 MK loops
        glow_w = np.full(m, 0.6 / m)
        return ActiveRegion(noaa, lat, lon_e, te, s_max, tau_g, tau_d, axis, perp, half, loops, loop_w,
                            glow, glow_w)

    def _visibility_table(self):
        """Visible emission (units of E_UNIT) of every region on a 10-min grid: the driver of XRS-B."""
        self._vt = np.arange(0.0, self.days + 1e-9 + 1 / 144, 1 / 144)
        b0 = self.b0(self._vt)
        vis = np.zeros((len(self.regions), self._vt.size))
        centre_mu = np.full((len(self.regions), self._vt.size), -1.0)
        for i, ar in enumerate(self.regions):
            s = ar.strength(self._vt)
            alive = s > 1e-3
            if not alive.any():
                continue
            lon = ar.lon(self._vt[alive])
            # every 3rd loop point and every 2nd glow point: the visible fraction changes only at the limb
            pts = np.concatenate([ar.loops[:, ::3], ar.glow[:, ::2]], axis=1).astype(np.float32)
            w = np.concatenate([ar.loop_w[::3] * 3, ar.glow_w[::2] * 2]).astype(np.float32)
            x, y, z = _sun_to_image(pts[:, :, None], lon[None, :].astype(np.float32),
                                    b0[alive][None, :].astype(np.float32))
            vis[i, alive] = s[alive] * (w[:, None] * _visible(x, y, z)).sum(axis=0)
            _, _, zc = _sun_to_image(ar.centre[:, None], lon[None, :], b0[alive][None, :])
            centre_mu[i, alive] = zc[0]
        self._vis = vis
        self._centre_mu = centre_mu

    def centre_mu(self, i: int, t) -> np.ndarray:
        """cos of the angle between region ``i``'s centre and the line of sight (< 0: behind the limb)."""
        return np.interp(t, self._vt, self._centre_mu[i])

    def visible_emission(self, t) -> np.ndarray:
        """Total visible active-region emission (DN/s·px² at 512 px) at times ``t`` days."""
        return E_UNIT * np.interp(t, self._vt, self._vis.sum(axis=0))

    def _make_flares(self, rng: np.random.Generator) -> list[Flare]:
        """Poisson flares in visible regions, rate ∝ strength, peak flux from dN/dF ∝ F^-2."""
        dt = self._vt[1] - self._vt[0]
        rate = R_C * (1e-6 / F_MIN) * self._vis * (self._centre_mu > 0.15)  # flares/day >= F_MIN
        flares = []
        for k in range(self._vt.size - 1):
            lam = rate[:, k].sum() * dt
            for _ in range(int(rng.poisson(lam)) if lam > 0 else 0):
                i = int(rng.choice(len(self.regions), p=rate[:, k] / rate[:, k].sum()))
                u = rng.uniform()
                peak = F_MIN / (1.0 - u * (1.0 - F_MIN / F_MAX))
                ar = self.regions[i]
                rise = 2.5 / 1440 * (peak / 1e-6) ** 0.2 * rng.lognormal(0, 0.25)
                decay = 9.0 / 1440 * (peak / 1e-6) ** 0.25 * rng.lognormal(0, 0.25)
                offset = _flare_offset(rng, ar)
                hot = float(np.clip(0.12 * (peak / 1e-6) ** 0.12, 0.08, 0.35))
                flares.append(Flare(i, float(self._vt[k] + rng.uniform(0, dt) + 2.5 * rise), float(peak),
                                    float(rise), float(decay), offset, float(rng.uniform(0, math.pi)), hot))
        flares.sort(key=lambda f: f.t_peak)
        return flares

    # --------------------------------------------------------------------------------------- GOES curve
    def xrs(self, t) -> tuple[np.ndarray, np.ndarray]:
        """Noise-free (XRS-B, XRS-A) fluxes in W/m² at times ``t`` (days, sorted ascending)."""
        t = np.asarray(t, dtype=np.float64)
        bg = F_QUIET + K_AR * self.visible_emission(t)
        b = bg.copy()
        a = 0.06 * bg
        for fl in self.flares:
            lo, hi = np.searchsorted(t, fl.window())
            if hi <= lo:
                continue
            f = fl.flux(t[lo:hi])
            b[lo:hi] += f
            a[lo:hi] += f * (0.07 + (fl.hot - 0.07) * (f / fl.peak))
        return b, a

    # ------------------------------------------------------------------------------------------ render
    def render(self, t: float, deg_cor: float = 0.865, flares: bool = True, extra_flares: list | None = None
               ) -> np.ndarray:
        """The 512×512 AIA 171 Å frame (float32, DN/s, degradation-corrected) at ``t`` days.

        ``flares=False`` leaves out the simulation's own flares; ``extra_flares`` adds other :class:`Flare`
        objects (both for the estimator's calibration).
        """
        k = t / TEXTURE_PERIOD
        i0 = int(math.floor(k))
        w = k - i0
        a, b = np.float32(math.cos(0.5 * math.pi * w)), np.float32(math.sin(0.5 * math.pi * w))
        log_tex = self._textures[i0 % N_TEXTURES] * a + self._textures[(i0 + 1) % N_TEXTURES] * b
        img = self._network * np.exp(log_tex) / self._texture_norm
        img += self._corona
        b0 = float(self.b0(t))
        for hole in self.holes:
            self._paint_hole(img, hole, t, b0)
        for ar in self.regions:
            s = float(ar.strength(t))
            if s > 1e-3:
                self._paint_region(img, ar, s, float(ar.lon(t)), b0)
        active = [self.flares[i] for i in np.flatnonzero((self._win[:, 0] <= t) & (t <= self._win[:, 1]))
                  ] if flares else []
        active += list(extra_flares or [])
        sat = FULL_WELL_DN / (EXPTIME * deg_cor)
        for fl in active:
            ar = self.regions[fl.region]
            self._paint_kernel(img, fl, float(fl.flux(t)), float(ar.lon(t)), b0, ar)
        if active and img.max() > sat:
            _bloom(img, sat)
        return img

    def _paint_hole(self, img, hole: CoronalHole, t: float, b0: float):
        """Darken the disk inside the hole (angular distance on the sphere, soft edge), in a sprite."""
        la = math.radians(hole.lat)
        cx, cy, cz = _sun_to_image(np.array([math.cos(la), 0.0, math.sin(la)]), hole.lon(t), b0)
        if cz < -math.sin(math.radians(hole.radius * 1.5)):
            return
        half = int(RSUN_PX * math.sin(math.radians(hole.radius * 1.6))) + 3
        col, row = int(CENTRE + cx * RSUN_PX), int(CENTRE - cy * RSUN_PX)
        r0, r1, c0, c1 = max(row - half, 0), min(row + half, SIZE), max(col - half, 0), min(col + half, SIZE)
        if r1 <= r0 or c1 <= c0:
            return
        px, py = self._px[r0:r1, c0:c1], self._py[r0:r1, c0:c1]
        pz = np.sqrt(np.clip(1.0 - px * px - py * py, 0.0, None))
        cosd = np.clip(px * cx + py * cy + pz * cz, -1, 1)
        ang = np.degrees(np.arccos(cosd))
        edge = np.clip((ang - hole.radius) / (0.35 * hole.radius) + 0.5, 0.0, 1.0)
        factor = 1.0 - (1.0 - hole.depth) * (1.0 - edge) * self._disk[r0:r1, c0:c1]
        img[r0:r1, c0:c1] *= factor.astype(np.float32)

    def _paint_region(self, img, ar: ActiveRegion, s: float, lon: float, b0: float):
        """Add a region's visible loops (0.7 px wide) and diffuse emission (5 px blur) to ``img``."""
        scale = E_UNIT * s
        for pts, wts, sigma in ((ar.loops, ar.loop_w, 0.7), (ar.glow, ar.glow_w, 5.0)):
            x, y, z = _sun_to_image(pts, lon, b0)
            keep = _visible(x, y, z)
            if not keep.any():
                continue
            _splat(img, CENTRE + x[keep] * RSUN_PX, CENTRE - y[keep] * RSUN_PX, wts[keep] * scale, sigma)

    def _paint_kernel(self, img, fl: Flare, f: float, lon: float, b0: float, ar: ActiveRegion):
        """Add the 171 Å kernel of a flare of instantaneous flux ``f`` (W/m²) at its place in ``ar``."""
        if f < 1e-10:
            return
        x, y, z = _sun_to_image(ar.centre + fl.offset, lon, b0)
        if not _visible(x, y, z):
            return
        sig, peak, fp = float(kernel_sigma(f)), float(kernel_peak(f)), float(footpoint_peak(f))
        cx, cy = CENTRE + x * RSUN_PX, CENTRE - y * RSUN_PX
        half = int(math.ceil(3.5 * 1.5 * sig)) + 2
        r0, r1 = max(int(cy) - half, 0), min(int(cy) + half + 1, SIZE)
        c0, c1 = max(int(cx) - half, 0), min(int(cx) + half + 1, SIZE)
        if r1 <= r0 or c1 <= c0:
            return
        yy, xx = np.mgrid[r0:r1, c0:c1]
        dx, dy = xx - cx, yy - cy
        ca, sa = math.cos(fl.angle), math.sin(fl.angle)
        u, v = dx * ca + dy * sa, -dx * sa + dy * ca
        k = peak * np.exp(-0.5 * (dx * dx + dy * dy) / sig**2)  # loop-top / arcade core
        for side in (-1.0, 1.0):  # two ribbons either side of the arcade, one with a compact footpoint
            k += 0.35 * peak * np.exp(-0.5 * ((u / (1.5 * sig)) ** 2 + ((v - side * sig) / (0.5 * sig)) ** 2))
        k += fp * np.exp(-0.5 * (u * u + (v - sig) ** 2) / FOOTPOINT_SIGMA**2)
        img[r0:r1, c0:c1] += k.astype(np.float32)


def _splat(img: np.ndarray, col: np.ndarray, row: np.ndarray, w: np.ndarray, sigma: float):
    """Add point sources (bilinear) blurred by a Gaussian of ``sigma`` px, working in a sprite around them."""
    pad = int(3 * sigma) + 2
    c0 = max(int(np.floor(col.min())) - pad, 0)
    c1 = min(int(np.ceil(col.max())) + pad + 1, SIZE)
    r0 = max(int(np.floor(row.min())) - pad, 0)
    r1 = min(int(np.ceil(row.max())) + pad + 1, SIZE)
    if c1 <= c0 or r1 <= r0:
        return
    h, wd = r1 - r0, c1 - c0
    x, y = col - c0, row - r0
    ix, iy = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = x - ix, y - iy
    acc = np.zeros(h * wd)
    corners = ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy))
    for ddy, ddx, ww in corners:
        yy, xx = iy + ddy, ix + ddx
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < wd)
        acc += np.bincount((yy[ok] * wd + xx[ok]), weights=(w * ww)[ok], minlength=h * wd)
    img[r0:r1, c0:c1] += _gauss_blur(acc.reshape(h, wd), sigma).astype(np.float32)


def _bloom(img: np.ndarray, sat: float):
    """Clip at the CCD full well and spill each column's excess charge up and down the column."""
    over = img > sat
    cols = np.flatnonzero(over.any(axis=0))
    for c in cols:
        col = img[:, c].astype(np.float64)
        rows = np.flatnonzero(col > sat)
        excess = float((col[rows] - sat).sum())
        col[rows] = sat
        top, bottom = rows.min(), rows.max()
        for direction, start in ((-1, top - 1), (1, bottom + 1)):
            charge = excess / 2.0
            r = start
            while charge > 0 and 0 <= r < SIZE:
                room = sat - col[r]
                if room > 0:
                    add = min(room, charge)
                    col[r] += add
                    charge -= add
                r += direction
        img[:, c] = col.astype(np.float32)


# ------------------------------------------------------------------------------------------- estimator
def _to_estimator_grid(images: np.ndarray) -> np.ndarray:
    """(N, H, W) DN/s -> (N, 64, 64) area mean, clipped to the 171 Å transform range."""
    n, h, w = images.shape
    if (h, w) != (EST_SIZE, EST_SIZE):
        if h % EST_SIZE == 0 and w % EST_SIZE == 0:
            images = images.reshape(n, EST_SIZE, h // EST_SIZE, EST_SIZE, w // EST_SIZE).mean(axis=(2, 4))
        else:
            ah, aw = _area_matrix(h, EST_SIZE), _area_matrix(w, EST_SIZE)
            images = ah @ images @ aw.T
    return np.clip(images, *CLIP)


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of an area-weighted mean (exact for fractional factors)."""
    s = n_in / n_out
    lo = np.arange(n_out)[:, None] * s
    j = np.arange(n_in)[None, :]
    return np.clip(np.minimum(lo + s, j + 1) - np.maximum(lo, j), 0.0, None) / s


@functools.lru_cache(maxsize=1)
def _estimator_geometry():
    """Radius (R☉), the mean quiet Sun at 64×64 (DN/s) and the region the estimator measures (r < 1.3 R☉)."""
    _, _, _, network, corona = _quiet_sun()
    f = SIZE // EST_SIZE
    quiet = (network + corona).astype(np.float64).reshape(EST_SIZE, f, EST_SIZE, f).mean(axis=(1, 3))
    c = (EST_SIZE - 1) / 2.0
    yy, xx = np.mgrid[0:EST_SIZE, 0:EST_SIZE]
    r = np.hypot(xx - c, yy - c) / (RSUN_PX * EST_SIZE / SIZE)
    return r, quiet, r < 1.3


def _measure(img64: np.ndarray) -> tuple[float, list[float]]:
    """(region excess, [excess of each flare kernel]) of one 64×64 clipped frame, in DN/s·px² (512 px).

    Excess is measured above the simulator's mean quiet Sun. Kernels are 8-connected groups of pixels whose
    excess exceeds the flare threshold (no region reaches it); a kernel's footprint is its core plus the
    pixels within ``KERNEL_REACH`` that stand ``KERNEL_EDGE`` above the local background (the median excess
    in a ring around it), and its excess is measured above that background, so it does not depend on how
    bright the region under it is. The region excess is the sum over all other pixels out to 1.3 R☉, except
    dark features (coronal holes) and their surroundings; footprint pixels count with their background.
    """
    from scipy.ndimage import binary_dilation, label

    r, quiet, region = _estimator_geometry()
    area = (SIZE / EST_SIZE) ** 2
    excess = img64 - quiet
    threshold = T_FLARE + (T_FLARE_LIMB - T_FLARE) * np.clip((r - 0.85) / 0.13, 0, 1)
    # everything but dark features (coronal holes) and their surroundings: network noise averages out
    ar = region & ~binary_dilation(excess < -DARK_THRESHOLD * quiet, iterations=DARK_GROW)
    region_excess = excess.copy()
    kernels = []
    hot = (excess > threshold) & region
    if hot.any():
        groups, n = label(hot, structure=np.ones((3, 3)))
        near_any = binary_dilation(hot, iterations=KERNEL_REACH)
        for k in range(1, n + 1):
            core = groups == k
            near = binary_dilation(core, iterations=KERNEL_REACH) & region
            ring = binary_dilation(core, iterations=KERNEL_REACH + 2) & ~near_any & region
            local = max(float(np.median(excess[ring])), 0.0) if ring.any() else 0.0
            # the kernel's footprint: its core and the nearby pixels clearly above the local background
            foot = core | (near & (excess - local > KERNEL_EDGE))
            kernels.append(float(np.clip(excess[foot] - local, 0, None).sum() * area))
            region_excess[foot] = local
            ar |= foot
    return float(region_excess[ar].sum() * area), kernels


@functools.lru_cache(maxsize=1)
def _calibration():
    """The estimator's constants, measured on frames rendered by this module (a Sun of its own seed).

    Returns (gain, offset, log10 kernel excess, log10 flare flux): the region excess measured by
    :func:`_measure` ≈ gain × visible region emission + offset (least squares over 40 frames without flares),
    and the table from a kernel's measured excess to the flux it stands for: kernels of 19 known fluxes
    (5e-8 to 1.6e-3 W/m²) are put into visible regions of flare-free frames, and the table holds the median
    excess against the median flux the kernel term must supply (the flare's own flux, less what its faint
    outskirts already add to the region term).
    """
    sun = SimulatedSun("2024-01-01", 30.0, seed=20240101)
    ts = np.linspace(0.2, 29.8, 40)
    base = [_measure(_to_estimator_grid(sun.render(t, flares=False)[None])[0]) for t in ts]
    true = [float(sun.visible_emission(t)) for t in ts]
    gain, offset = np.polyfit(true, [s for s, _ in base], 1)
    rng = np.random.default_rng(1)
    log_m, log_need = [], []
    for f in np.logspace(-7.3, -2.8, 19):
        ms, needs = [], []
        for k in range(0, ts.size, 3):
            t, (s0, kernels0) = ts[k], base[k]
            cands = [i for i, ar in enumerate(sun.regions)
                     if ar.strength(t) > 0.05 and sun.centre_mu(i, t) > 0.15]
            if not cands or kernels0:
                continue
            i = cands[int(rng.integers(len(cands)))]
            where, angle = _flare_offset(rng, sun.regions[i]), float(rng.uniform(0, math.pi))
            fl = Flare(i, t, float(f), 1.0, 1.0, where, angle, 0.1)
            s, kernels = _measure(_to_estimator_grid(sun.render(t, flares=False, extra_flares=[fl])[None])[0])
            ms.append(sum(kernels))
            needs.append(f - K_AR * (s - s0) / gain)
        if ms:
            log_m.append(math.log10(max(float(np.median(ms)), 1.0)))
            log_need.append(math.log10(max(float(np.median(needs)), 1e-10)))
    log_m, log_need = np.asarray(log_m), np.asarray(log_need)
    # keep a strictly increasing table (np.interp needs it)
    keep = np.concatenate([[True], np.diff(np.maximum.accumulate(log_m)) > 1e-6]) & (log_m > 0)
    return float(gain), float(offset), log_m[keep], np.maximum.accumulate(log_need[keep])


def estimate_flux(image_dn_per_s):
    """The XRS-B flux (W/m²) this simulator's physics implies for a 171 Å image.

    Parameters
    ----------
    image_dn_per_s : (H, W) or (N, H, W) intensities in DN/s (degradation-corrected, SDOMLv2-like), at any
        resolution (e.g. 512, 128 or 64 px), possibly already clipped to [5, 3500] DN/s by the model's
        transform and back.

    Returns
    -------
    float for one image, else a float64 array of N fluxes.

    The image is brought to 64×64 by an area mean and clipped to [5, 3500] DN/s first, so the result depends
    only on what survives the model's preprocessing. See the module docstring for the method.
    """
    arr = np.asarray(image_dn_per_s, dtype=np.float64)
    single = arr.ndim == 2
    if single:
        arr = arr[None]
    if arr.ndim != 3 or min(arr.shape[1:]) < 8:
        raise FlaresynthError(
            f"estimate_flux: image of shape {arr.shape}: expected (H, W) or (N, H, W) in DN/s")
    arr = np.nan_to_num(arr, nan=CLIP[0], posinf=CLIP[1], neginf=CLIP[0])
    gain, offset, log_m, log_f = _calibration()
    out = np.empty(arr.shape[0])
    for i, img in enumerate(_to_estimator_grid(arr)):
        s, kernels = _measure(img)
        flux = F_QUIET + K_AR * max(s - offset, 0.0) / gain
        for m in kernels:
            # below the table's first entry the flare term is taken proportional to the excess
            lm = math.log10(max(m, 1e-3))
            flux += 10 ** np.interp(lm, log_m, log_f, left=log_f[0] + lm - log_m[0])
        out[i] = flux
    return float(out[0]) if single else out


# ------------------------------------------------------------------------------------------- the files
#: Global attributes of the real GOES-16 avg1m product (copied from sunpy's test file, v2-1-0), for ours.
GOES_GLOBAL_ATTRS = {
    "Conventions": "ACDD-1.3, Spase v2.2.6",
    "title": "L2 XRS 1 minute average",
    "summary": "The EXIS X-Ray Sensor (XRS) measures in a short wavelength channel (XRS-A) between 0.05 "
               "and 0.4 nm and in a longer wavelength channel (XRS-B) between 0.1 and 0.8 nm. The X-ray flux "
               "average product consists of 1 minute averages of the 1-s X-ray solar measurements. Flux is "
               "provided with and without electron contamination removed.",
    "keywords": "NumericalData.MeasurementType.Irradiance",
    "keywords_vocabulary": "SPASE: Space Physics Archive Search and Extract Data Model version 2.2.6, GCMD: "
                           "NASA Global Change Master Directory (GCMD) Earth Science Keywords version 8.5",
    "naming_authority": "gov.nesdis.noaa",
    "history": "See algorithm information.",
    "source": "GOES-R EXIS/XRS L2 xrsf-l2-flx1s",
    "processing_level": "Level 2",
    "processing_level_description": "Derived products",
    "license": "These data may be redistributed and used without restriction. ",
    "institution": "DOC/NOAA/NESDIS",
    "references": "GOES-R XRS.04 Algorithm Theoretical Basis Document",
    "instrument": "GOES R Series Extreme Ultraviolet Sensor and X-ray Irradiance Sensors (EXIS)",
    "program": "Geostationary Operational Environmental Satellite, R-Series (GOES-R)",
    "time_coverage_resolution": "PT1M",
    "instrument_id": "FM1",
    "orbital_slot": "GOES-East",
    "platform": "g16",
    "algorithm": "cli-xrs04_avg",
    "algorithm_version": np.array([2, 2], dtype=np.int64),
}
_FLAG_COMMENT = (
    "e_contam_significant is set when the electron contamination is greater than 50% of observed signal. "
    "good_data is independent of electron contamination flags. electron_correction_interp is set when the "
    "electron contamination is interpolated because a short period of SEISS MPSHI is missing. "
    "electron_correction_decay is set when the correction is smoothly turned off with a decay over a ~2 "
    "hour period because SEISS MPSHI data is missing, and no future value is known. "
    "electron_correction_invalid is set after 1 hour of decay."
)
_FLAG_ATTRS = {
    "flag_masks": np.array([3, 1, 2, 4, 8, 8, 48, 48], dtype=np.uint8),
    "flag_values": np.array([0, 1, 2, 4, 0, 8, 16, 32], dtype=np.uint8),
    "flag_meanings": "good_data eclipse bad_data e_contam_significant e_correction_valid "
                     "e_correction_invalid e_correction_interp e_correction_decay",
}
_EXCLUDED_ATTRS = {
    "comments": "Union of flags set for data points that were excluded from the average.",
    "flag_masks": np.array([1, 2, 4, 8, 16, 32, 64, 128, 256, 512], dtype=np.uint16),
    "flag_values": np.array([1, 2, 4, 8, 16, 32, 64, 128, 256, 512], dtype=np.uint16),
    "flag_meanings": "eclipse particle_spike calibration off_point temperature_error data_quality_error "
                     "pointing_error invalid_mode missing_data L0_error",
}
BAD_DATA = 2  # xrs*_flag value of a bad minute (mask 3 != 0)
SPIKE, MISSING = 2, 256  # xrs*_flag_excluded bits: particle_spike, missing_data


def _iso(t: np.datetime64, decimals: int = 0) -> str:
    s = str(np.datetime64(t, "ms"))
    return s[: 19 + (1 + decimals if decimals else 0)]


def _deg_cor(when: np.ndarray) -> np.ndarray:
    """A plausible, slowly drifting AIA 171 Å degradation factor (~0.86 in 2024, -0.01 per year)."""
    years = _days(np.asarray(when, dtype="datetime64[ns]") - np.datetime64("2020-01-01", "ns")) / 365.25
    return 0.90 - 0.01 * years + 0.002 * np.sin(2 * np.pi * years)


def _quantise(img: np.ndarray) -> np.ndarray:
    """Keep 11 of the 23 mantissa bits of each float32: rounding error <= 2.4e-4 (far below photon noise),
    and the store compresses ~2× better."""
    bits = img.astype(np.float32).view(np.uint32)
    return ((bits + np.uint32(1 << 11)) & np.uint32(0xFFFFF000)).view(np.float32)


def _frame_plan(sun: SimulatedSun, cadence_min: int) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """Frame times (datetime64 T_OBS, days since start) and, per year, the storage order of frame indices.

    Days are stored in a shuffled order and frames in time order within a day, as in the real SDOMLv2 store.
    """
    n = int(math.ceil(sun.days * 1440 / cadence_min - 1e-9))
    nominal = sun.start + np.arange(n) * np.timedelta64(cadence_min, "m")
    t_obs = nominal + T_OBS_OFFSET
    rng = np.random.default_rng(sun._misc_ss)
    years = t_obs.astype("datetime64[Y]").astype(int) + 1970
    day = t_obs.astype("datetime64[D]")
    order = {}
    for year in np.unique(years):
        idx = np.flatnonzero(years == year)
        days = np.unique(day[idx])
        shuffled = days[rng.permutation(days.size)]
        order[int(year)] = np.concatenate([idx[day[idx] == d] for d in shuffled])
    return t_obs, _days(t_obs - sun.start), order


def _headers(sun: SimulatedSun, t_obs: np.ndarray, t: np.ndarray, quality: np.ndarray) -> list[dict]:
    """SDOMLv2 per-frame FITS keywords (geometry rewritten for 512 px, data_sources §3.2)."""
    rsun = sun.rsun_obs(t)
    b0 = sun.b0(t)
    l0 = np.interp(t, sun._eph_t, sun._eph_l0) % 360.0
    dsun = np.interp(t, sun._eph_t, sun._eph_dsun)
    deg = _deg_cor(t_obs)
    half_exp = np.timedelta64(int(EXPTIME * 500), "ms")
    out = []
    for k in range(len(t)):
        cdelt = round(CDELT_SDOML * float(rsun[k]) / RSUN_ARCSEC_SDOML, 6)
        out.append({
            "T_OBS": _iso(t_obs[k], 2) + "Z",
            "DATE-OBS": _iso(t_obs[k] - half_exp, 2),
            "EXPTIME": EXPTIME,
            "WAVELNTH": 171,
            "WAVEUNIT": "angstrom",
            "QUALITY": int(quality[k]),
            "DEG_COR": round(float(deg[k]), 5),
            "PIXLUNIT": "DN/s",
            "LVL_NUM": 1.5,
            "RSUN_OBS": round(float(rsun[k]), 4),
            "R_SUN": round(RSUN_PX, 4),
            "DSUN_OBS": round(float(dsun[k]), 1),
            "CRLT_OBS": round(float(b0[k]), 5),
            "CRLN_OBS": round(float(l0[k]), 5),
            "CDELT1": cdelt,
            "CDELT2": cdelt,
            "CRPIX1": CENTRE + 1.0,
            "CRPIX2": CENTRE + 1.0,
            "CRVAL1": 0.0,
            "CRVAL2": 0.0,
            "CUNIT1": "arcsec",
            "CUNIT2": "arcsec",
            "CTYPE1": "HPLN-TAN",
            "CTYPE2": "HPLT-TAN",
            "CROTA2": 0.0,
            "INSTRUME": "AIA_3",
            "TELESCOP": "SDO/AIA",
            "NAXIS1": SIZE,
            "NAXIS2": SIZE,
        })
    return out


def _progress_bar(enabled: bool):
    """A rich progress bar on stderr (off when stderr is not a terminal)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, console=console, disable=not (enabled and console.is_terminal))


def _write_images(sun: SimulatedSun, root: Path, cadence_min: int, progress: bool):
    """Render every frame, in storage order and 15 (one chunk) at a time, into the store ``root``.

    Returns (T_OBS datetime64, t days since start, frames per year). Only one chunk is in memory at a time:
    the first is written by ``write_sdoml_frames`` (which creates the array), the others are appended.
    """
    from flaresynth.sources.sdoml import write_sdoml_frames

    t_obs, t, order = _frame_plan(sun, cadence_min)
    rng = np.random.default_rng(sun._misc_ss.spawn(1)[0])
    # a few frames carry a non-zero QUALITY word, as some AIA frames do (readers drop them)
    quality = np.where(rng.uniform(size=t.size) < 0.003, 1 << 30, 0)
    headers = _headers(sun, t_obs, t, quality)
    deg = _deg_cor(t_obs)
    counts = {}
    with _progress_bar(progress) as bar:
        task = bar.add_task("rendering AIA 171 Å frames", total=t.size)
        for year, idx in order.items():
            arr = None
            for b in range(0, idx.size, CHUNK):
                batch = idx[b:b + CHUNK]
                frames = np.stack([_quantise(sun.render(float(t[i]), deg_cor=float(deg[i]))) for i in batch])
                if arr is None:
                    arr = write_sdoml_frames(root, year, "171A", frames, [headers[i] for i in batch],
                                             chunk_frames=CHUNK)
                else:
                    arr.append(frames, axis=0)
                bar.advance(task, batch.size)
            full = [headers[i] for i in idx]
            arr.attrs.update({k: [h[k] for h in full] for k in full[0]})
            counts[str(year)] = int(idx.size)
    # Mark the store as simulated, so evaluation can run the physical referee on it (`--referee auto`);
    # a real SDOMLv2 store has no such attribute.
    import zarr

    zarr.open_group(str(root), mode="a", zarr_format=2).attrs.update(
        {"flaresynth_simulated": True, "flaresynth_seed": sun.seed}
    )
    return t_obs, t, counts


def _goes_record(sun: SimulatedSun) -> dict[str, np.ndarray]:
    """The 1-min GOES-16 record of the whole simulation: fluxes (with noise, spikes, fill) and flags."""
    n = int(round(sun.days * 1440))
    t_start = np.arange(n) / 1440.0
    b, a = sun.xrs(t_start + 0.5 / 1440)  # a 1-min average ≈ the curve at the middle of the minute
    rng = np.random.default_rng(sun._goes_ss)
    b = b * (1 + NOISE_XRS * rng.standard_normal(n))
    a = a * (1 + 2 * NOISE_XRS * rng.standard_normal(n))
    electrons = 2e-10 * (1 + 0.5 * np.sin(2 * np.pi * t_start)) * rng.lognormal(0, 0.3, n)
    flag_b = np.zeros(n, np.uint8)
    excl = np.zeros(n, np.uint16)
    num = np.full(n, 60, np.uint8)
    # a few bad minutes a day: particle spikes (flux x5-50) or no data (fill), flagged bad_data
    bad = np.flatnonzero(rng.uniform(size=n) < 4.0 / 1440)
    spike = rng.uniform(size=bad.size) < 0.5
    factor = rng.uniform(5, 50, spike.sum())
    b[bad[spike]] *= factor
    a[bad[spike]] *= factor
    flag_b[bad] = BAD_DATA
    excl[bad[spike]] = SPIKE
    excl[bad[~spike]] = MISSING
    num[bad[~spike]] = 0
    fill = np.zeros(n, bool)
    fill[bad[~spike]] = True
    return {"t": t_start, "xrsb": b, "xrsa": a, "electrons": electrons, "flag": flag_b, "excluded": excl,
            "num": num, "fill": fill, "good": flag_b == 0}


def _channel_variables(ch: str, rec: dict, sl: slice) -> dict[str, tuple[np.ndarray, dict]]:
    """The avg1m variables of XRS channel ``ch`` ("a" or "b") for rows ``sl``, with the real attributes."""
    name = f"xrs{ch}"
    fill = rec["fill"][sl]
    electrons = rec["electrons"][sl] * (0.3 if ch == "a" else 1.0)
    vmax = np.float32(0.003 if ch == "a" else 0.2)
    valid = {"units": "W/m2", "valid_min": np.float32(1e-9), "valid_max": vmax}

    def flux(values):
        return np.where(fill, -9999.0, values).astype(np.float32)

    return {
        f"{name}_flux": (flux(rec[name][sl]), {
            **valid, "long_name": f"XRS-{ch.upper()} primary average flux.",
            "comments": f"Electron contamination has been removed. {name}_flux =  {name}_flux_observed - "
                        f"{name}_flux_electrons",
            "ancillary_variables": f"{name}_flag {name}_num {name}_flag_excluded"}),
        f"{name}_flux_observed": (flux(rec[name][sl] + electrons), {
            **valid, "long_name": f"XRS-{ch.upper()} primary average flux, without electron contamination "
                                  "correction.",
            "comments": f"Average of XRS-{ch.upper()} flux reported by the sensor."}),
        f"{name}_flux_electrons": (flux(electrons), {
            "units": "W/m2", "long_name": f"XRS-{ch.upper()} electron contamination.",
            "valid_min": np.float32(0.0), "valid_max": np.float32(1e-6)}),
        f"{name}_flag": (rec["flag"][sl], {"long_name": f"Flags for {name}_flux.", "comments": _FLAG_COMMENT,
                                          **_FLAG_ATTRS}),
        f"{name}_flag_excluded": (rec["excluded"][sl], {
            "long_name": f"Flags on data excluded from {name}_flux average.", **_EXCLUDED_ATTRS}),
        f"{name}_num": (rec["num"][sl], {"long_name": f"Number of averaged measurements in {name}_flux."}),
    }


_NC_FILL = {np.dtype(np.float32): np.float32(-9999.0), np.dtype(np.float64): -9999.0,
            np.dtype(np.uint8): np.uint8(255), np.dtype(np.uint16): np.uint16(65535)}


def _write_goes(sun: SimulatedSun, rec: dict, folder: Path) -> list[str]:
    """One GOES-16 L2 avg1m netCDF per UTC day, in the real product's layout (xarray + h5netcdf)."""
    import xarray as xr

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    day0 = sun.start.astype("datetime64[D]")
    au = (np.interp(rec["t"], sun._eph_t, sun._eph_dsun) / 1.495978707e11) ** 2  # (d / 1 AU)²
    for d in range(int(round(sun.days))):
        day = day0 + np.timedelta64(d, "D")
        sl = slice(d * 1440, (d + 1) * 1440)
        name = f"sci_xrsf-l2-avg1m_g16_d{str(day).replace('-', '')}_{GOES_VERSION}.nc"
        # whole seconds since the GOES-R epoch, exactly (no round trip through days)
        first = (np.datetime64(day, "s") - GOES_EPOCH.astype("datetime64[s]")).astype(np.int64)
        seconds = (first + 60 * np.arange(1440)).astype(np.float64)
        data = {**_channel_variables("a", rec, sl), **_channel_variables("b", rec, sl),
                "au_factor": (au[sl].astype(np.float32), {
                    "long_name": "1-AU factor.",
                    "comments": "Multiplicative factor to convert fluxes to values at 1 AU."})}
        time_attrs = {"long_name": "Record start time, neglecting leap seconds.",
                      "units": "seconds since 2000-01-01T12:00:00", "calendar": "proleptic_gregorian"}
        ds = xr.Dataset({k: ("time", v, attrs) for k, (v, attrs) in data.items()},
                        coords={"time": ("time", seconds, time_attrs)})
        ds.attrs.update({
            **GOES_GLOBAL_ATTRS,
            "id": name,
            "date_created": f"{day + np.timedelta64(2, 'D')}T00:00:00.000Z",  # fixed, not the wall clock
            "time_coverage_start": f"{day}T00:00:00.000Z",
            "time_coverage_end": f"{day + np.timedelta64(1, 'D')}T00:00:00.000Z",
            "comment": f"SIMULATED data written by flaresynth (seed {sun.seed}); not a NOAA product.",
        })
        arrays = {"time": seconds, **{k: v for k, (v, _) in data.items()}}
        encoding = {k: {"dtype": v.dtype, "_FillValue": _NC_FILL[v.dtype], "zlib": True, "complevel": 4,
                        "chunksizes": (1440,)} for k, v in arrays.items()}
        ds.to_netcdf(folder / name, engine="h5netcdf", encoding=encoding)
        names.append(name)
    return names


def _hek_events(sun: SimulatedSun, rec: dict) -> list[dict]:
    """SWPC-style HEK FL events, detected on the written GOES record (good samples only)."""
    flux = np.where(rec["good"], rec["xrsb"], -np.inf)
    n = flux.size
    events, taken = [], set()
    for k, fl in enumerate(sun.flares):
        i0 = int(math.floor(fl.t_start * 1440))
        i1 = int(math.ceil(fl.t_end * 1440))
        ip = int(math.floor(fl.t_peak * 1440))
        if i0 < 0 or i1 >= n or i1 <= i0:
            continue
        j = i0 + int(np.argmax(flux[i0:i1 + 1]))
        if abs(j - ip) > 2 or j in taken or not np.isfinite(flux[j]):
            continue  # hidden in a bigger flare's light curve: SWPC would not list it
        taken.add(j)
        ar = sun.regions[fl.region]
        tp = j / 1440.0
        x, y, _ = _sun_to_image(ar.centre + fl.offset, float(ar.lon(tp)), float(sun.b0(tp)))
        rsun = float(sun.rsun_obs(tp))
        hpc_x, hpc_y = round(float(x) * rsun, 1), round(float(y) * rsun, 1)
        p = ar.centre + fl.offset
        lat = math.degrees(math.atan2(float(p[2]), math.hypot(float(p[0]), float(p[1]))))
        lon = (float(ar.lon(tp)) + math.degrees(math.atan2(float(p[1]), float(p[0]))) + 180.0) % 360.0 - 180.0
        carr = (float(np.interp(tp, sun._eph_t, sun._eph_l0)) + lon) % 360.0
        start = sun.start + np.timedelta64(i0, "m")
        peak = sun.start + np.timedelta64(j, "m")
        end = sun.start + np.timedelta64(i1, "m")
        stamp = _iso(peak).replace("-", "").replace(":", "").replace("T", "_")
        events.append({
            "event_type": "FL",
            "event_starttime": _iso(start),
            "event_peaktime": _iso(peak),
            "event_endtime": _iso(end),
            "fl_goescls": flux_to_class(float(flux[j])),
            "frm_name": "SWPC",
            "frm_institute": "NOAA SWPC",
            "obs_observatory": "GOES",
            "obs_instrument": "XRS",
            "ar_noaanum": int(ar.noaa),
            "hpc_x": hpc_x,
            "hpc_y": hpc_y,
            "hgs_x": round(lon, 2),
            "hgs_y": round(lat, 2),
            "hpc_coord": f"POINT({hpc_x} {hpc_y})",
            "event_coordsys": "UTC-HPC-TOPO",
            "event_coordunit": "arcsec",
            "event_coord1": hpc_x,
            "event_coord2": hpc_y,
            "SOL_standard": f"SOL{_iso(peak)}L{carr:03.0f}C{90.0 - lat:03.0f}",
            "kb_archivid": f"ivo://helio-informatics.org/FL_SWPC_flaresynth_s{sun.seed}_{stamp}_{k:05d}",
            "kb_archivdate": _iso(end + np.timedelta64(1, "D")),
        })
    events.sort(key=lambda e: (e["event_starttime"], e["kb_archivid"]))
    return events


def _montage(sun: SimulatedSun, t_obs: np.ndarray, t: np.ndarray, rec: dict, path: Path,
             per_class: int = 4) -> dict:
    """PNG grid of frames by the GOES class of their instantaneous XRS-B flux (rows A..X)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import sunpy.visualization.colormaps  # noqa: F401  (registers sdoaia171)

    flux = _frame_flux(t, rec)
    letter = flux_to_letter_index(flux)
    cmap = matplotlib.colormaps["sdoaia171"]
    size = (2.2 * per_class, 2.35 * len(GOES_CLASSES))
    fig, axes = plt.subplots(len(GOES_CLASSES), per_class, figsize=size, facecolor="black")
    chosen = {}
    for row, name in enumerate(GOES_CLASSES):
        idx = np.flatnonzero(letter == row)
        idx = idx[np.argsort(flux[idx])]
        # spread over the class's flux range, weakest to strongest
        ranks = np.unique(np.linspace(0, idx.size - 1, per_class).round().astype(int)) if idx.size else []
        picks = idx[ranks] if idx.size else ()
        chosen[name] = [str(t_obs[i])[:16] for i in picks]
        for col in range(per_class):
            ax = axes[row, col]
            ax.set_axis_off()
            if col >= len(picks):
                ax.text(0.5, 0.5, f"no {name} frame", color="grey", ha="center", va="center",
                        transform=ax.transAxes)
                continue
            i = picks[col]
            img = sun.render(float(t[i]), deg_cor=float(_deg_cor(t_obs[i:i + 1])[0]))
            ax.imshow(np.log10(np.clip(img, 5.0, 1e4)), cmap=cmap, vmin=math.log10(5.0), vmax=4.0,
                      interpolation="nearest")
            ax.set_title(f"{flux_to_class(float(flux[i]))}  {flux[i]:.1e} W/m²\n{str(t_obs[i])[:16]}",
                         color="white", fontsize=7)
    fig.suptitle("flaresynth simulated Sun: AIA 171 Å by GOES class (log10 DN/s, 5 to 10⁴)", color="white",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80, facecolor="black", metadata={"Software": None})
    plt.close(fig)
    return chosen


def _frame_flux(t: np.ndarray, rec: dict) -> np.ndarray:
    """XRS-B of the good 1-min sample nearest to each frame time (within 60 s), NaN if none."""
    good = np.flatnonzero(rec["good"])
    st = rec["t"][good]
    pos = np.clip(np.searchsorted(st, t), 1, st.size - 1)
    nearest = np.where(np.abs(st[pos - 1] - t) <= np.abs(st[pos] - t), pos - 1, pos)
    ok = np.abs(st[nearest] - t) <= 60 / 86400
    return np.where(ok, rec["xrsb"][good[nearest]], np.nan)


def _parse_start(start) -> np.datetime64:
    try:
        day = np.datetime64(str(start).strip(), "D")
    except ValueError:
        raise FlaresynthError(f"start {start!r}: expected a UTC date like 2024-05-01") from None
    if str(day) != str(start).strip()[:10]:
        raise FlaresynthError(f"start {start!r}: expected a UTC date like 2024-05-01")
    return day.astype("datetime64[ns]")


def simulate(out_dir, days: int = 30, cadence_min: int = 12, start: str = "2024-05-01", seed: int = 0,
             overwrite: bool = False, progress: bool = True) -> dict:
    """Write a simulated Sun in the real archive formats into ``out_dir``.

    Parameters
    ----------
    out_dir : folder to create (it appears only when complete): ``sdomlv2.zarr``, ``goes/``,
        ``hek/flares.json``, ``montage.png``, ``simulation.json``.
    days : whole days to simulate, from ``start`` 00:00 UTC.
    cadence_min : AIA frame cadence in minutes (SDOMLv2 is used at 6-12 min).
    start : first day, UTC, ``YYYY-MM-DD``.
    seed : seed of everything; the same seed gives identical array data, netCDF variables and JSON.
    overwrite : replace an existing ``out_dir`` (only once the new one is complete).
    progress : show a progress bar on stderr when it is a terminal.

    Returns
    -------
    dict (JSON-able): frames, flares per GOES class (HEK events), files, sizes and wall time in seconds.
    """
    t_wall = time.perf_counter()
    if int(days) != days or days < 1:
        raise FlaresynthError(f"days {days!r}: expected a whole number of days >= 1")
    if int(cadence_min) != cadence_min or not 1 <= cadence_min <= 1440:
        raise FlaresynthError(f"cadence_min {cadence_min!r}: expected whole minutes between 1 and 1440")
    day0 = _parse_start(start)
    out = Path(out_dir)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise input_error(out, None, "already exists and is not empty (choose a new folder)")
    sun = SimulatedSun(day0, int(days), int(seed))
    with atomic_dir(out, overwrite=True) as tmp:
        t_obs, t, per_year = _write_images(sun, tmp / "sdomlv2.zarr", int(cadence_min), progress)
        rec = _goes_record(sun)
        goes_files = _write_goes(sun, rec, tmp / "goes")
        events = _hek_events(sun, rec)
        (tmp / "hek").mkdir()
        with open(tmp / "hek" / "flares.json", "w") as fh:
            json.dump({"result": events, "overmax": False}, fh, indent=1)
            fh.write("\n")
        chosen = _montage(sun, t_obs, t, rec, tmp / "montage.png")
        frame_flux = _frame_flux(t, rec)
        idx = flux_to_letter_index(frame_flux)
        hek_letters = [e["fl_goescls"][0] for e in events]
        summary = {
            "start": str(day0.astype("datetime64[D]")),
            "days": int(days),
            "cadence_min": int(cadence_min),
            "seed": int(seed),
            "n_frames": int(t.size),
            "frames_per_year": per_year,
            "frames_per_class": {c: int((idx == i).sum()) for i, c in enumerate(GOES_CLASSES)},
            "n_flares_simulated": len(sun.flares),
            "n_hek_events": len(events),
            "n_flares": {c: hek_letters.count(c) for c in GOES_CLASSES},
            "n_active_regions": len(sun.regions),
            "goes_files": len(goes_files),
            "goes_bad_minutes": int((~rec["good"]).sum()),
            "montage_frames": chosen,
            "files": ["sdomlv2.zarr", "goes/", "hek/flares.json", "montage.png", "simulation.json"],
        }
        with open(tmp / "simulation.json", "w") as fh:
            json.dump(summary, fh, indent=1)
            fh.write("\n")
    summary["out"] = str(out)
    summary["store_bytes"] = sum(p.stat().st_size for p in (out / "sdomlv2.zarr").rglob("*") if p.is_file())
    summary["wall_s"] = round(time.perf_counter() - t_wall, 1)
    return summary
