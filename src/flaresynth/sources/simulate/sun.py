"""The simulated Sun itself: active regions, flares, the 171 Å renderer and the GOES XRS light curve.

Everything is a deterministic function of the seed (one :class:`numpy.random.SeedSequence`, one child per
component) and every frame is a pure function of its time.

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
* **Active regions** emerge at a rate that follows the solar cycle (:mod:`~flaresynth.sources.simulate.cycle`:
  ``AR_RATE`` = 0.55 a day at sunspot number 150, Hathaway et al. 1994's profile), at latitudes drifting
  equatorward over the cycle (Spörer's law), with Joy's-law tilts (≈ lat / 2). 70 % emerge in one of two
  activity nests (active longitudes, Berdyugina & Usoskin 2003; σ = 15°), so the visible disk alternates
  between busy and quiet stretches and regions come back after a rotation (NOAA gives each passage a new
  number, so does the HEK list). Emergences start 30 days before the start so the Sun starts populated. Each
  region rotates rigidly at the Snodgrass & Ulrich (1990) rate of its latitude, ``ω = 14.713 - 2.396 sin²φ -
  1.787 sin⁴φ`` deg/day (sidereal) minus Earth's 0.9856 deg/day, and is seen with the solar B0 angle. A
  region is a 3-D structure projected orthographically: an arcade of 8-13 thin, sheared semicircular loops and
  two long fan loops (40 % of its emission) and a cloud of unresolved loops with a 0.06 R☉ emission scale
  height (60 %). Points behind the disk are hidden, so regions rotate in over the east limb, foreshorten, and
  show loops above the limb. Its emission is ``strength(t) × E_UNIT`` (4e5 DN/s·px²); strength rises over
  0.8-2.5 days and decays over 7-20 days × (peak / 0.6)^0.5 (e-folding: big regions survive a rotation), with
  peak values log-normal around 0.6 (0.15-1.6).
* **Flares**: per region a Poisson process of rate ``R_PRIMARY`` × productivity × strength (productivity
  log-normal, σ_ln = 1: a few regions make most big flares), and each flare triggers on average
  ``BRANCHING`` = 0.45 more in its region after ~3.6 h (bursts, a Hawkes process). Peak fluxes (above
  background, before occultation) follow ``dN/dF ∝ F^-1.9`` (Aschwanden et al. 2016: α ≈ 1.8-2.0 for GOES
  flares) between 6e-7 and 2e-3 W/m². Light curve: Gaussian rise (σ = 2.5 min · (F/1e-6)^0.2) and exponential
  decay (τ = 9 min · (F/1e-6)^0.25), each with 25 % log-normal scatter. The default period (180 days from
  2015-03-01, mean sunspot number 61, seed 0) holds 534 C, 53 M and 9 X SWPC events, the X flares in 7
  NOAA regions, and a ≥M-in-24 h rate of 0.26 at 6-hourly issue times.
  The 171 Å kernel: a loop-top core and two ribbons whose size grows as σ = 6 px · (f/1e-6)^0.3 up to M1,
  then ∝ f^0.2 (12 px at M1, 19 px at X1), with a nearly flat peak 2800 DN/s · (f/1e-6)^0.12, plus a compact
  footpoint (3000 DN/s · (f/1e-6)^0.6), where f is the EUV light curve (below).

Confounders of real data (:data:`CONFOUNDERS`, all on by default, each can be left out)
-------------------------------------------------------------------------------------
* ``limb``: regions up to ~30° behind the limb flare too. GOES sees the part of the soft X-ray loops above
  the limb's line of sight, ``exp(-(1/cos β - 1) / 0.03 R☉)`` at β behind (:func:`xray_seen_fraction`); in
  171 Å the ribbons are hidden and the arcade's top (0.02 R☉ up) shows above the limb, what lies behind the
  disk hidden. Without it, only regions with μ > 0.15 flare.
* ``euv_timing``: the 171 Å kernel peaks ``euv_lag`` after the X-rays (log-normal, median 8 min, 3-25 min:
  171 Å brightens as the flare plasma cools through 1 MK) and fades twice as slowly (post-flare loops); 25 %
  of the flares below M1 and 60 % above are eruptive and dim the corona around them by 15-40 %, the dimming
  setting in over 20 min and recovering over 4 h.
* ``euv_scatter``: the 171 Å kernel's brightness at fixed X-ray flux scatters log-normally with σ_ln = 0.7
  (a factor 2, 0.3 dex: the spread of AIA EUV vs GOES peak relations).
* ``exposure``: AIA's automatic exposure control: when the brightest pixel would pass 80 % of the full well
  in the 2 s exposure, the frame is taken at 1, 0.5 or 0.25 s (``EXPTIME`` in its header), so its DN/s carry
  more photon noise. Every frame has photon noise (1.1 DN per 171 Å photon) and read noise (1.2 DN), and
  pixels above the CCD full well (16383 DN, i.e. ``16383 / (EXPTIME · DEG_COR)`` DN/s) saturate and bloom
  up and down their column (charge-conserving streaks).
* ``mesh``: the entrance filter's mesh diffracts 10 % of a flare kernel's light into four arms along the
  mesh diagonals, orders every 2 px (λ/d ≈ 9.7″ at 171 Å).
* ``cosmic_rays``: ~12 residual cosmic-ray hits per 2 s frame (log-normal, median 200 DN; 30 % 2-pixel).
* ``gaps`` (the archive writer's): 1 % of frames lost one by one and a 1-8 h gap every 20 days on average;
  0.3 % of the frames carry a non-zero ``QUALITY``.
* ``degradation``: the true throughput wanders ±3 % around the ``DEG_COR`` SDOMLv2 divides by, so the
  corrected data keep a slow calibration drift. 171 Å's ``DEG_COR`` is a drifting model factor
  (:func:`deg_cor`), the other channels' come from aiapy's degradation table (:mod:`.channels`; ``--deg-171
  aiapy`` uses it for 171 Å too, which changes the default data the shipped generators were trained on).

Other channels (94, 131, 193, 211, 335 Å): :meth:`SimulatedSun.observe_channel` renders the same plasma through
each channel's temperature response (:mod:`~flaresynth.sources.simulate.channels`); 171 Å is :meth:`observe`.

GOES XRS
--------
XRS-B = ``F_QUIET`` (2.5e-8, the spotless corona) + ``K_AR`` × visible active-region emission (2e-7 W/m² per
unit of strength: a quiet disk sits at A3-B1, a busy one at B5-C1) + the flares' light curves (the part
GOES sees), times a 1 % Gaussian instrument noise. XRS-A is 6 % of the
background (2-3 MK plasma) and 7-35 % of a flare's flux, highest at its peak and for big flares (hotter).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import astropy.units as u
import numpy as np
import scipy.fft
import sunpy.coordinates.sun as sunpy_sun
from astropy.time import Time
from scipy.ndimage import gaussian_filter
from scipy.signal import fftconvolve

from flaresynth.sources.simulate import channels
from flaresynth.sources.simulate.cycle import activity, decimal_year, emergence_latitude, first_noaa_number

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
R_PRIMARY = 1.0  # independent flares >= F_MIN per day per unit of strength of an average-productivity region
BRANCHING = 0.45  # mean number of follow-up flares each flare triggers in its region (bursts)
BURST_DELAY = 0.15  # days, mean delay of a follow-up flare
PRODUCTIVITY_SIGMA = 1.0  # log-normal spread of the regions' flare productivity
AR_RATE = 0.55  # active-region emergences per day at activity 1 (sunspot number 150)
NEST_FRACTION = 0.7  # share of emergences in the two activity nests
ALPHA = 1.9  # dN/dF ∝ F^-ALPHA for the flares' own peak flux (Aschwanden et al. 2016: 1.8-2.0 for GOES)
F_MIN, F_MAX = 6e-7, 2e-3  # W/m², range of the flares' own peak flux
H_XRAY = 0.03  # R☉, emission scale height of the soft X-ray flare loops (limb occultation)
LOOP_TOP = 0.02  # R☉, height of the 171 Å flare arcade's top above its ribbons
EUV_LAG_MEDIAN = 8.0 / 1440  # days, 171 Å peak after the X-ray peak (log-normal, σ_ln 0.6: 3-25 min)
EUV_GAIN_SIGMA = 0.7  # σ_ln of the 171 Å kernel brightness at fixed X-ray flux (a factor 2 = 0.3 dex)
EUV_DECAY_FACTOR = 2.0  # post-flare loops fade this much slower in 171 Å than the X-rays
DIMMING_HOURS = 4.0  # recovery time of coronal dimming
AEC_LEVEL = 0.8  # automatic exposure control keeps the brightest pixel below this share of the full well
AEC_EXPOSURES = (1.0, 0.5, 0.25)  # s, the shorter exposures of the flare table, longest first
COSMIC_RAYS = 12.0  # residual cosmic-ray hits per 2 s frame at 512 px (after the level-1 despiking)
MESH_FRACTION = 0.1  # share of a kernel's light in the entrance-filter mesh's diffraction pattern
MESH_SPACING = 2.0  # px at 512 between diffraction orders (λ/d ≈ 9.7″ at 171 Å)
MESH_HALF = 48  # px, half-width of the diffraction pattern
LOOP_SIGMA = 0.7  # px, blur of the resolved loops
GLOW_SIGMA = 5.0  # px, blur of the regions' diffuse emission
KERNEL_SIGMA = 6.0  # px at 512 for f = 1e-6
KERNEL_PEAK = 2800.0  # DN/s for f = 1e-6
FOOTPOINT_PEAK = 3000.0  # DN/s for f = 1e-6: saturates AIA from ~M1
FOOTPOINT_SIGMA = 2.0  # px
TEXTURE_PERIOD = 1.5  # days per texture template
N_TEXTURES = 5
TEXTURE_LANES = 0.5  # log-contrast of the network lanes (10-90 % ≈ 0.7-1.7× the mean at 512 px)
TEXTURE_LARGE = 0.1  # log-contrast of the large-scale (~50 px) brightness variations


def to_days(dt: np.ndarray | np.timedelta64) -> np.ndarray:
    return np.asarray(dt, dtype="timedelta64[ns]").astype(np.float64) / 86400e9


def synodic_rate(lat_deg) -> np.ndarray:
    """Synodic rotation rate in deg/day at heliographic latitude ``lat_deg`` (Snodgrass & Ulrich 1990)."""
    s2 = np.sin(np.radians(lat_deg)) ** 2
    return 14.713 - 2.396 * s2 - 1.787 * s2 * s2 - SIDEREAL_EARTH


def sun_to_image(xyz: np.ndarray, lon_deg, b0_deg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    return gaussian_filter(img, sigma, mode="constant", truncate=3.0)


@functools.lru_cache(maxsize=1)
def quiet_sun() -> tuple[np.ndarray, ...]:
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


def deg_cor(when: np.ndarray) -> np.ndarray:
    """A plausible, slowly drifting AIA 171 Å degradation factor (~0.86 in 2024, -0.01 per year)."""
    years = to_days(np.asarray(when, dtype="datetime64[ns]") - np.datetime64("2020-01-01", "ns")) / 365.25
    return 0.90 - 0.01 * years + 0.002 * np.sin(2 * np.pi * years)


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
    productivity: float = 1.0  # flare rate per unit strength, relative to an average region
    passages: list = field(default_factory=list)  # (first day, last day, NOAA number) of each disk passage

    def noaa_at(self, t: float) -> int:
        """NOAA number of the disk passage at ``t`` days (nearest within 3 days, else 0: not numbered)."""
        best, dist = 0, 3.0
        for t0, t1, number in self.passages:
            d = 0.0 if t0 <= t <= t1 else min(abs(t - t0), abs(t - t1))
            if d <= dist:
                best, dist = number, d
        return best

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
    seen: float = 1.0  # fraction of the X-ray emission not hidden behind the limb
    euv_lag: float = 0.0  # days from the X-ray peak to the 171 Å peak
    euv_gain: float = 1.0  # 171 Å brightness factor at fixed X-ray flux
    dimming: float = 0.0  # depth of the coronal dimming that follows (0: not eruptive)
    t_max: float = 1.0e7  # K, loop temperature at the X-ray peak (the other EUV channels: channels.py)

    def flux(self, t) -> np.ndarray:
        """XRS-B flux (W/m²) GOES sees of the flare alone at times ``t`` (days): occulted part removed."""
        return self.seen * self.peak * _light_curve(t, self.t_peak, self.sigma_rise, self.tau_decay)

    def euv_flux(self, t) -> np.ndarray:
        """The X-ray-equivalent flux that drives the 171 Å kernel at ``t``: later, slower, scattered.

        The whole flare (occultation is applied when painting), peaking ``euv_lag`` after the X-rays and
        fading ``EUV_DECAY_FACTOR`` times slower, times the flare's ``euv_gain``.
        """
        return self.euv_gain * self.peak * _light_curve(t, self.t_peak + self.euv_lag, self.sigma_rise,
                                                        EUV_DECAY_FACTOR * self.tau_decay)

    @property
    def t_start(self) -> float:
        return self.t_peak - 2.5 * self.sigma_rise

    @property
    def t_end(self) -> float:
        # SWPC: half-way between peak and pre-flare level
        return self.t_peak + max(self.tau_decay * math.log(2.0), 2.0 / 1440)

    def window(self) -> tuple[float, float]:
        """Times (days) outside which the flare is negligible in X-rays, 171 Å and dimming."""
        end = self.t_peak + self.euv_lag + 6.9 * EUV_DECAY_FACTOR * self.tau_decay
        if self.dimming > 0:
            end = max(end, self.t_peak + 4 * DIMMING_HOURS / 24)
        return self.t_peak - 3.8 * self.sigma_rise, end


def _light_curve(t, t_peak: float, sigma_rise: float, tau_decay: float) -> np.ndarray:
    """Gaussian rise, exponential decay, 1 at ``t_peak``."""
    dt = np.asarray(t, dtype=np.float64) - t_peak
    rise = np.exp(-0.5 * (np.minimum(dt, 0.0) / sigma_rise) ** 2)
    decay = np.exp(-np.maximum(dt, 0.0) / tau_decay)
    return np.where(dt < 0, rise, decay)


def xray_seen_fraction(mu) -> np.ndarray:
    """Share of a flare's soft X-rays GOES sees when its site's μ (cos of the angle to the line of sight) is
    ``mu``: all of it on the visible hemisphere; behind the limb (angle β past it) only loops higher than
    ``1 / cos β - 1`` R☉, i.e. ``exp(-(1 / cos β - 1) / H_XRAY)`` (≈ 0.6 at 10°, 0.1 at 20° behind)."""
    mu = np.asarray(mu, dtype=np.float64)
    cos_beta = np.sqrt(np.clip(1.0 - mu * mu, 1e-6, 1.0))
    return np.where(mu >= 0, 1.0, np.exp(-(1.0 / cos_beta - 1.0) / H_XRAY))


@dataclass
class CoronalHole:
    """A dark patch of the corona, rotating with the Sun at its latitude's rate."""

    lat: float
    lon0: float  # Stonyhurst longitude at t = 0
    radius: float  # deg
    depth: float  # intensity factor at the centre

    def lon(self, t):
        return self.lon0 + synodic_rate(self.lat) * t


def flare_offset(rng: np.random.Generator, ar: ActiveRegion) -> np.ndarray:
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
#: The confounders of real AIA data the simulated Sun can add (all on by default); see the module docstring.
CONFOUNDERS = ("limb", "euv_timing", "euv_scatter", "exposure", "mesh", "cosmic_rays", "gaps", "degradation")


def check_confounders(names) -> tuple[str, ...]:
    """The confounder names, checked against :data:`CONFOUNDERS`."""
    names = tuple(names)
    bad = [n for n in names if n not in CONFOUNDERS]
    if bad:
        raise ValueError(f"unknown confounder {bad[0]!r}: expected some of {', '.join(CONFOUNDERS)}")
    return names


class SimulatedSun:
    """A deterministic simulated Sun between ``start`` and ``start + days``.

    Parameters
    ----------
    start : first instant (UTC, numpy datetime64 or ISO string).
    days : length of the simulation in days.
    seed : seed of every random choice.
    cycle_phase : None (the date decides the activity) or 0-1 (a fixed phase of a typical cycle).
    confounders : which of :data:`CONFOUNDERS` to add.
    """

    def __init__(self, start, days: float, seed: int = 0, cycle_phase: float | None = None,
                 confounders=CONFOUNDERS):
        self.start = np.datetime64(start, "ns")
        self.days = float(days)
        self.seed = int(seed)
        self.cycle_phase = None if cycle_phase is None else float(cycle_phase)
        self.confounders = frozenset(check_confounders(confounders))
        ss = np.random.SeedSequence(self.seed)
        tex_ss, ar_ss, ch_ss, fl_ss, self._goes_ss, self._misc_ss = ss.spawn(6)
        self._ephemeris()
        self._static_images(np.random.default_rng(tex_ss))
        self.holes = self._make_holes(np.random.default_rng(ch_ss))
        self.regions = self._make_regions(np.random.default_rng(ar_ss))
        self._visibility_table()
        self._number_passages()
        self.flares = self._make_flares(np.random.default_rng(fl_ss))
        self._win = np.array([fl.window() for fl in self.flares]).reshape(-1, 2)
        # flare temperatures from a stream of their own, so every earlier draw (and the 171 Å frames) is unchanged
        t_rng = np.random.default_rng(np.random.SeedSequence([self.seed, 131094]))
        for fl, scatter in zip(self.flares, t_rng.lognormal(0.0, 0.25, len(self.flares))):
            fl.t_max = channels.flare_t_max(fl.peak, float(scatter))

    # ------------------------------------------------------------------------------------------ set-up
    def _ephemeris(self):
        """B0, apparent radius, L0 and distance on a 6-hour grid (sunpy), interpolated later."""
        self._eph_t = np.arange(-0.5, self.days + 0.75, 0.25)
        times = Time(str(self.start.astype("datetime64[s]"))) + self._eph_t * u.day
        self._eph_b0 = sunpy_sun.B0(times).deg
        self._eph_rsun = sunpy_sun.angular_radius(times).arcsec
        self._eph_l0 = np.degrees(np.unwrap(np.radians(sunpy_sun.L0(times).deg)))
        self._eph_dsun = sunpy_sun.earth_distance(times).to(u.m).value

    def b0(self, t):
        """Solar B0 angle (deg) at ``t`` days."""
        return np.interp(t, self._eph_t, self._eph_b0)

    def rsun_obs(self, t):
        """Apparent solar radius (arcsec) seen from Earth at ``t`` days."""
        return np.interp(t, self._eph_t, self._eph_rsun)

    def activity(self, t) -> np.ndarray:
        """Activity level (sunspot number / 150, :mod:`~flaresynth.sources.simulate.cycle`) at ``t`` days."""
        when = self.start + (np.asarray(t, dtype=np.float64) * 86400e9).astype("timedelta64[ns]")
        return activity(decimal_year(when), self.cycle_phase)

    def _static_images(self, rng: np.random.Generator):
        """The quiet-Sun maps and the network templates (log-textures of unit-free contrast)."""
        self._px, self._py, self._disk, self._network, self._corona = quiet_sun()
        self._r = np.hypot(self._px, self._py)
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
        """Emergences from 30 days before the start (so the Sun starts populated) to the end.

        A Poisson process whose rate follows the cycle's activity; latitudes by Spörer's law; 70 % of the
        regions emerge in one of two activity nests (active longitudes, Berdyugina & Usoskin 2003), so the
        visible disk alternates between busy and quiet half-rotations and a region's neighbourhood flares
        again a rotation later.
        """
        step = 0.25
        grid = np.arange(-30.0, self.days, step)
        counts = rng.poisson(AR_RATE * self.activity(grid + step / 2) * step)
        t_emerge = np.sort(np.concatenate([g + rng.uniform(0, step, c) for g, c in zip(grid, counts)]))
        nests = rng.uniform(0, 360, 2)
        regions = []
        for te in t_emerge:
            year = float(decimal_year(self.start + np.timedelta64(int(te * 86400e9), "ns")))
            sign = float(rng.choice([-1, 1]))
            lat = sign * emergence_latitude(rng, year, self.cycle_phase)
            carr = (nests[int(rng.integers(2))] + rng.normal(0, 15) if rng.uniform() < NEST_FRACTION
                    else rng.uniform(0, 360))
            # Stonyhurst longitude at emergence of a Carrington-frame longitude
            lon_e = float((carr + CARRINGTON_SYNODIC * te + 180.0) % 360.0 - 180.0)
            s_max = float(np.clip(rng.lognormal(math.log(0.6), 0.6), 0.15, 1.6))
            tau_g = float(rng.uniform(0.8, 2.5))
            # big regions live longer and come back after a rotation (27 days), as on the real Sun
            tau_d = float(rng.uniform(7.0, 20.0) * (s_max / 0.6) ** 0.5)
            productivity = float(rng.lognormal(-0.5 * PRODUCTIVITY_SIGMA**2, PRODUCTIVITY_SIGMA))
            ar = self._build_region(rng, 0, lat, lon_e, float(te), s_max, tau_g, tau_d)
            ar.productivity = productivity
            regions.append(ar)
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
        """Strength, visible emission (units of E_UNIT) and centre μ of every region on a 20-min grid."""
        self._vt = np.arange(0.0, self.days + 1e-9 + 1 / 72, 1 / 72)
        b0 = self.b0(self._vt)
        n = len(self.regions)
        strength = np.zeros((n, self._vt.size))
        vis = np.zeros((n, self._vt.size))
        centre_mu = np.full((n, self._vt.size), -1.0)
        for i, ar in enumerate(self.regions):
            s = ar.strength(self._vt)
            alive = s > 1e-3
            if not alive.any():
                continue
            strength[i] = s
            lon = ar.lon(self._vt[alive])
            _, _, zc = sun_to_image(ar.centre[:, None], lon[None, :], b0[alive][None, :])
            centre_mu[i, alive] = zc[0]
            # the visible share changes only near the limb: far from it, it is 1 (front) or 0 (back)
            share = (zc[0] > 0).astype(np.float64)
            limb = np.abs(zc[0]) < 0.45
            if limb.any():
                pts = np.concatenate([ar.loops[:, ::4], ar.glow[:, ::4]], axis=1).astype(np.float32)
                w = np.concatenate([ar.loop_w[::4], ar.glow_w[::4]]).astype(np.float32)
                w /= w.sum()
                x, y, z = sun_to_image(pts[:, :, None], lon[limb][None, :].astype(np.float32),
                                       b0[alive][limb][None, :].astype(np.float32))
                share[limb] = (w[:, None] * _visible(x, y, z)).sum(axis=0)
            vis[i, alive] = s[alive] * share
        self._strength = strength
        self._vis = vis
        self._centre_mu = centre_mu

    def _number_passages(self):
        """NOAA numbers: one per disk passage of a region (a returning region gets a new one), in order of
        appearance, counted from the number SWPC was giving at the start (:func:`first_noaa_number`)."""
        passages = []
        for i in range(len(self.regions)):
            on = (self._centre_mu[i] > -0.05) & (self._strength[i] > 0.05)
            edges = np.flatnonzero(np.diff(np.concatenate([[0], on.astype(np.int8), [0]])))
            for a, b in zip(edges[::2], edges[1::2]):
                passages.append((float(self._vt[a]), float(self._vt[b - 1]), i))
        # regions already on the disk at the start were numbered before it
        passages.sort(key=lambda p: (p[0], p[2]))
        first = first_noaa_number(self.start.astype("datetime64[D]")) - sum(1 for p in passages if p[0] <= 0)
        for k, (t0, t1, i) in enumerate(passages):
            self.regions[i].passages.append((t0, t1, first + k))
        for ar in self.regions:
            ar.noaa = ar.passages[0][2] if ar.passages else 0

    def centre_mu(self, i: int, t) -> np.ndarray:
        """cos of the angle between region ``i``'s centre and the line of sight (< 0: behind the limb)."""
        return np.interp(t, self._vt, self._centre_mu[i])

    def visible_emission(self, t) -> np.ndarray:
        """Total visible active-region emission (DN/s·px² at 512 px) at times ``t`` days."""
        return E_UNIT * np.interp(t, self._vt, self._vis.sum(axis=0))

    def _make_flares(self, rng: np.random.Generator) -> list[Flare]:
        """Flares: a Poisson process per region, rate ∝ strength × productivity, plus follow-up flares.

        Independent flares come at ``R_PRIMARY`` × productivity per unit strength and day; each flare triggers
        on average ``BRANCHING`` more in its region after exponential delays (mean ``BURST_DELAY``), so
        productive regions flare in bursts (a Hawkes process). Peak fluxes are drawn independently from
        dN/dF ∝ F^-ALPHA between F_MIN and F_MAX. With ``limb`` regions up to ~30° behind the limb flare too
        (GOES sees part of them: :func:`xray_seen_fraction`); without it only regions with μ > 0.15 flare.
        """
        limb = "limb" in self.confounders
        mu_min = -0.5 if limb else 0.15
        dt = self._vt[1] - self._vt[0]
        prod = np.array([ar.productivity for ar in self.regions])
        able = (self._centre_mu > mu_min) & (self._strength > 0.02)
        rate = R_PRIMARY * prod[:, None] * self._strength * able
        counts = rng.poisson(rate[:, :-1] * dt) if len(self.regions) else np.zeros((0, 0), int)
        rows, cols = np.nonzero(counts)
        reps = counts[rows, cols]
        region = np.repeat(rows, reps)
        times = np.repeat(self._vt[cols], reps) + rng.uniform(0, dt, reps.sum())
        events = list(zip(times.tolist(), region.tolist()))
        parents = events
        while parents:  # follow-up flares, generation by generation
            children = []
            for t0, i in parents:
                for _ in range(int(rng.poisson(BRANCHING))):
                    tc = t0 + float(rng.exponential(BURST_DELAY))
                    k = min(int(tc / dt), self._vt.size - 1)
                    if tc < self.days and able[i, k]:
                        children.append((tc, i))
            events += children
            parents = children
        events.sort()
        flares = []
        a1 = ALPHA - 1.0
        for t0, i in events:
            ar = self.regions[i]
            u_ = rng.uniform()
            peak = F_MIN * (1.0 - u_ * (1.0 - (F_MIN / F_MAX) ** a1)) ** (-1.0 / a1)
            rise = 2.5 / 1440 * (peak / 1e-6) ** 0.2 * rng.lognormal(0, 0.25)
            decay = 9.0 / 1440 * (peak / 1e-6) ** 0.25 * rng.lognormal(0, 0.25)
            offset = flare_offset(rng, ar)
            hot = float(np.clip(0.12 * (peak / 1e-6) ** 0.12, 0.08, 0.35))
            angle = float(rng.uniform(0, math.pi))
            lag = EUV_LAG_MEDIAN * rng.lognormal(0, 0.6)
            gain = rng.lognormal(0, EUV_GAIN_SIGMA)
            eruptive = rng.uniform() < (0.6 if peak >= 1e-5 else 0.25)
            depth = rng.uniform(0.15, 0.4)
            t_peak = float(t0 + 2.5 * rise)
            seen = float(xray_seen_fraction(self.centre_mu(i, t_peak))) if limb else 1.0
            if seen < 1e-3:
                continue  # wholly hidden: no instrument would know of it
            flares.append(Flare(
                i, t_peak, float(peak), float(rise), float(decay), offset, angle, hot, seen,
                euv_lag=float(lag) if "euv_timing" in self.confounders else 0.0,
                euv_gain=float(gain) if "euv_scatter" in self.confounders else 1.0,
                dimming=float(depth) if eruptive and "euv_timing" in self.confounders else 0.0))
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
            lo, hi = np.searchsorted(t, (fl.t_peak - 3.8 * fl.sigma_rise, fl.t_peak + 6.9 * fl.tau_decay))
            if hi <= lo:
                continue
            shape = _light_curve(t[lo:hi], fl.t_peak, fl.sigma_rise, fl.tau_decay)
            f = fl.seen * fl.peak * shape
            b[lo:hi] += f
            a[lo:hi] += f * (0.07 + (fl.hot - 0.07) * shape)
        return b, a

    # ------------------------------------------------------------------------------------------ render
    def render(self, t: float, deg_cor: float = 0.865, flares: bool = True, extra_flares: list | None = None,
               instrument: bool = True) -> np.ndarray:
        """The 512×512 AIA 171 Å frame (float32, DN/s, degradation-corrected) at ``t`` days.

        ``flares=False`` leaves out the simulation's own flares; ``extra_flares`` adds other :class:`Flare`
        objects; ``instrument=False`` gives the Sun before the camera (no noise, exposure control, cosmic rays
        or saturation). See :meth:`observe` for the exposure time.
        """
        return self.observe(t, deg_cor, flares, extra_flares, instrument)[0]

    def observe(self, t: float, deg_cor: float = 0.865, flares: bool = True, extra_flares: list | None = None,
                instrument: bool = True) -> tuple[np.ndarray, float]:
        """(frame in DN/s, exposure time in s) at ``t`` days: the Sun, then AIA's camera."""
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
        self._paint_regions(img, t, b0)
        active = [self.flares[i] for i in np.flatnonzero((self._win[:, 0] <= t) & (t <= self._win[:, 1]))
                  ] if flares else []
        active += list(extra_flares or [])
        for fl in active:
            ar = self.regions[fl.region]
            if fl.dimming > 0:
                self._paint_dimming(img, fl, t, float(ar.lon(t)), b0, ar)
        for fl in active:
            ar = self.regions[fl.region]
            self._paint_kernel(img, fl, float(fl.euv_flux(t)), float(ar.lon(t)), b0, ar)
        if not instrument:
            return img, EXPTIME
        return self._camera(img, t, deg_cor)

    def observe_channel(self, t: float, channel: str, deg_cor: float = 0.865, flares: bool = True,
                        extra_flares: list | None = None, instrument: bool = True) -> tuple[np.ndarray, float]:
        """(frame in DN/s, exposure time in s) of AIA channel ``channel`` at ``t`` days.

        171 Å is :meth:`observe`. Another channel sees the same plasma through its temperature response: each
        component of the 171 Å image weighted by its DEM's brightness ratio, flares by their cooling
        temperature (:mod:`~flaresynth.sources.simulate.channels`), then that channel's camera.
        """
        channel = channels.channel_name(channel)
        if channel == "171A":
            return self.observe(t, deg_cor, flares, extra_flares, instrument)
        ratio = channels.component_ratios(channel)
        k = t / TEXTURE_PERIOD
        i0 = int(math.floor(k))
        w = k - i0
        a, b = np.float32(math.cos(0.5 * math.pi * w)), np.float32(math.sin(0.5 * math.pi * w))
        log_tex = self._textures[i0 % N_TEXTURES] * a + self._textures[(i0 + 1) % N_TEXTURES] * b
        img = self._network * np.exp(log_tex) * np.float32(ratio["network"] / self._texture_norm)
        img += self._corona * np.float32(ratio["corona"])
        b0 = float(self.b0(t))
        for hole in self.holes:
            self._paint_hole(img, hole, t, b0, power=channels.HOLE_POWER[channel])
        self._paint_regions(img, t, b0, scales={LOOP_SIGMA: ratio["loops"], GLOW_SIGMA: ratio["core"]})
        active = [self.flares[i] for i in np.flatnonzero((self._win[:, 0] <= t) & (t <= self._win[:, 1]))
                  ] if flares else []
        active += list(extra_flares or [])
        for fl in active:
            if fl.dimming > 0:
                ar = self.regions[fl.region]
                self._paint_dimming(img, fl, t, float(ar.lon(t)), b0, ar)
        spacing = channels.mesh_spacing(channel, MESH_SPACING)
        for fl in active:
            ar = self.regions[fl.region]
            # the loops pass 171 Å's temperature when the 171 Å kernel peaks
            t_171 = fl.t_peak + (fl.euv_lag if fl.euv_lag > 0 else EUV_LAG_MEDIAN)
            amp = float(channels.flare_brightness(channel, t, fl.t_peak, fl.sigma_rise, t_171, fl.t_max,
                                                  EUV_DECAY_FACTOR * fl.tau_decay))
            self._paint_kernel(img, fl, fl.euv_gain * fl.peak, float(ar.lon(t)), b0, ar, amp=amp, spacing=spacing)
        if not instrument:
            return img, channels.EXPOSURE[channel]
        return self._camera(img, t, deg_cor, channel)

    def _camera(self, img: np.ndarray, t: float, deg_cor: float, channel: str = "171A") -> tuple[np.ndarray, float]:
        """AIA's camera on the true DN/s ``img``: exposure control, photon noise, cosmic rays, saturation."""
        if channel == "171A":
            rng = np.random.default_rng([self.seed, 1729, int(round(t * 86400))])  # the frame's own noise
            base, steps, dn_per_photon, phase = EXPTIME, AEC_EXPOSURES, 1.1, 0.0
        else:
            rng = np.random.default_rng([self.seed, 1729, int(round(t * 86400)), channels.wavelength(channel)])
            base, steps = channels.EXPOSURE[channel], channels.exposure_steps(channel)
            dn_per_photon, phase = channels.dn_per_photon()[channel], channels.channel_phase(channel)
        deg_true = deg_cor
        if "degradation" in self.confounders:
            # the correction SDOMLv2 divides by is a model: the true throughput wanders ±3 % around it
            drift = 2 * math.pi * t / 300.0 + self.seed
            deg_true = deg_cor * (1.0 + 0.03 * math.sin(drift if channel == "171A" else drift + phase))
        exptime = base
        peak_dn = float(img.max()) * base * deg_true
        if "exposure" in self.confounders and peak_dn > AEC_LEVEL * FULL_WELL_DN:
            # automatic exposure control: the longest exposure of AIA's flare table that keeps the brightest
            # pixel below AEC_LEVEL of the full well, else the shortest
            fits = [e for e in steps if float(img.max()) * e * deg_true <= AEC_LEVEL * FULL_WELL_DN]
            exptime = fits[0] if fits else steps[-1]
        gain = exptime * deg_true  # DN per DN/s of corrected intensity
        dn = img * np.float32(gain)
        # photon noise (~1.1 DN per 171 Å photon) and read noise, in DN
        dn += np.sqrt(np.maximum(dn, 0.0) * dn_per_photon + 1.44, dtype=np.float32) * rng.standard_normal(
            dn.shape, dtype=np.float32)
        if "cosmic_rays" in self.confounders:
            n = int(rng.poisson(COSMIC_RAYS * exptime / EXPTIME))
            rows, cols = rng.integers(0, SIZE, n), rng.integers(0, SIZE, n)
            hits = rng.lognormal(math.log(200.0), 0.8, n).astype(np.float32)
            np.add.at(dn, (rows, cols), hits)
            long = rng.uniform(size=n) < 0.3  # grazing hits leave a 2-pixel track
            np.add.at(dn, (rows[long], np.minimum(cols[long] + 1, SIZE - 1)), 0.5 * hits[long])
        img = np.maximum(dn, 0.0) / np.float32(deg_cor * exptime)
        sat = FULL_WELL_DN / (exptime * deg_cor)
        if img.max() > sat:
            _bloom(img, sat)
        return img.astype(np.float32), exptime

    def _paint_hole(self, img, hole: CoronalHole, t: float, b0: float, power: float = 1.0):
        """Darken the disk inside the hole (angular distance on the sphere, soft edge), in a sprite; ``power``
        raises the darkening factor (hotter channels see darker holes)."""
        la = math.radians(hole.lat)
        cx, cy, cz = sun_to_image(np.array([math.cos(la), 0.0, math.sin(la)]), hole.lon(t), b0)
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
        if power != 1.0:
            factor = factor**power
        img[r0:r1, c0:c1] *= factor.astype(np.float32)

    def _paint_regions(self, img, t: float, b0: float, scales: dict | None = None):
        """Add every region's visible loops (0.7 px wide) and diffuse emission (5 px blur) to ``img``.

        All regions' points go into one full-frame accumulator per width; both are blurred in one FFT pass.
        ``scales`` ({width: factor}) weighs the loops and the diffuse core for another channel than 171 Å.
        """
        groups = {LOOP_SIGMA: ([], [], []), GLOW_SIGMA: ([], [], [])}
        for ar in self.regions:
            s = float(ar.strength(t))
            if s <= 1e-3:
                continue
            lon = float(ar.lon(t))
            for pts, wts, sigma in ((ar.loops, ar.loop_w, LOOP_SIGMA), (ar.glow, ar.glow_w, GLOW_SIGMA)):
                x, y, z = sun_to_image(pts, lon, b0)
                keep = _visible(x, y, z)
                cols, rows, ws = groups[sigma]
                cols.append(CENTRE + x[keep] * RSUN_PX)
                rows.append(CENTRE - y[keep] * RSUN_PX)
                ws.append(wts[keep] * E_UNIT * s if scales is None else wts[keep] * (E_UNIT * s * scales[sigma]))
        spectrum = None
        for sigma, (cols, rows, ws) in groups.items():
            if cols:
                acc = _deposit(np.concatenate(cols), np.concatenate(rows), np.concatenate(ws))
                term = scipy.fft.rfft2(acc) * _gauss_transfer(sigma)
                spectrum = term if spectrum is None else spectrum + term
        if spectrum is not None:
            img += scipy.fft.irfft2(spectrum, s=(SIZE, SIZE))

    def _flare_site(self, fl: Flare, ar: ActiveRegion, lon: float, b0: float):
        """Image positions (x, y, z in R☉) of a flare's ribbons (on the surface) and its arcade's top."""
        site = ar.centre + fl.offset
        top = site * (1.0 + LOOP_TOP / float(np.linalg.norm(site)))
        return sun_to_image(site, lon, b0), sun_to_image(top, lon, b0)

    def _paint_dimming(self, img, fl: Flare, t: float, lon: float, b0: float, ar: ActiveRegion):
        """Coronal dimming after an eruptive flare: the corona around the site loses up to ``fl.dimming`` of
        its emission within ~20 min of the peak and recovers over ``DIMMING_HOURS``."""
        dt = t - fl.t_peak
        if dt <= 0:
            return
        depth = fl.dimming * (1.0 - math.exp(-dt / (20.0 / 1440))) * math.exp(-dt / (DIMMING_HOURS / 24))
        (x, y, z), _ = self._flare_site(fl, ar, lon, b0)
        if depth < 0.01 or z <= 0:
            return
        sig = 2.5 * float(kernel_sigma(fl.peak))
        cx, cy = CENTRE + x * RSUN_PX, CENTRE - y * RSUN_PX
        half = int(3 * sig) + 2
        r0, r1 = max(int(cy) - half, 0), min(int(cy) + half + 1, SIZE)
        c0, c1 = max(int(cx) - half, 0), min(int(cx) + half + 1, SIZE)
        if r1 <= r0 or c1 <= c0:
            return
        yy, xx = np.mgrid[r0:r1, c0:c1]
        img[r0:r1, c0:c1] *= (1.0 - depth * np.exp(-0.5 * ((xx - cx) ** 2 + (yy - cy) ** 2) / sig**2)
                              ).astype(np.float32)

    def _paint_kernel(self, img, fl: Flare, f: float, lon: float, b0: float, ar: ActiveRegion,
                      amp: float | None = None, spacing: float = MESH_SPACING):
        """Add the 171 Å kernel of a flare driven by flux ``f`` (W/m²) at its place in ``ar``.

        The arcade core sits ``LOOP_TOP`` above the ribbons: a flare just behind the limb shows its core above
        the limb (the part behind the disk hidden) and no ribbons. With ``mesh``, a tenth of the kernel's light
        goes into the entrance filter's diffraction pattern. ``amp`` scales the kernel (another channel's
        brightness relative to 171 Å's), ``spacing`` is that channel's mesh order spacing.
        """
        if f < 1e-10 or (amp is not None and amp * float(kernel_peak(f)) < 1e-3):
            return
        (x, y, z), (xt, yt, zt) = self._flare_site(fl, ar, lon, b0)
        ribbons = bool(_visible(x, y, z))
        if not (ribbons or _visible(xt, yt, zt)):
            return
        sig, peak, fp = float(kernel_sigma(f)), float(kernel_peak(f)), float(footpoint_peak(f))
        cx, cy = CENTRE + x * RSUN_PX, CENTRE - y * RSUN_PX
        tx, ty = CENTRE + xt * RSUN_PX, CENTRE - yt * RSUN_PX
        mesh = "mesh" in self.confounders and f > 1e-6
        half = int(math.ceil(3.5 * 1.5 * sig)) + 2 + (MESH_HALF if mesh else 0)
        r0, r1 = max(int(ty) - half, 0), min(int(ty) + half + 1, SIZE)
        c0, c1 = max(int(tx) - half, 0), min(int(tx) + half + 1, SIZE)
        if r1 <= r0 or c1 <= c0:
            return
        yy, xx = np.mgrid[r0:r1, c0:c1]
        k = peak * np.exp(-0.5 * ((xx - tx) ** 2 + (yy - ty) ** 2) / sig**2)  # loop-top / arcade core
        if zt < 0:  # the arcade top is behind the plane of the sky: the disk hides what is projected on it
            k *= self._r[r0:r1, c0:c1] > 1.0
        if ribbons:  # two ribbons either side of the arcade, one with a compact footpoint
            dx, dy = xx - cx, yy - cy
            ca, sa = math.cos(fl.angle), math.sin(fl.angle)
            u_, v = dx * ca + dy * sa, -dx * sa + dy * ca
            for side in (-1.0, 1.0):
                k += 0.35 * peak * np.exp(-0.5 * ((u_ / (1.5 * sig)) ** 2 + ((v - side * sig) / (0.5 * sig)) ** 2))
            k += fp * np.exp(-0.5 * (u_ * u_ + (v - sig) ** 2) / FOOTPOINT_SIGMA**2)
        if amp is not None:
            k *= amp
        if mesh:
            psf = _mesh_psf() if spacing == MESH_SPACING else _mesh_psf(spacing)
            k = (1.0 - MESH_FRACTION) * k + MESH_FRACTION * fftconvolve(k, psf, mode="same")
        img[r0:r1, c0:c1] += np.maximum(k, 0.0).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _mesh_psf(spacing: float = MESH_SPACING) -> np.ndarray:
    """The entrance filter mesh's diffraction pattern (unit sum): four arms along the mesh diagonals, orders
    every ``spacing`` px (∝ λ), weights falling as 1 / (1 + (n / 8)²) (a sinc² envelope, smoothed)."""
    psf = np.zeros((2 * MESH_HALF + 1, 2 * MESH_HALF + 1))
    for n in range(1, int(MESH_HALF / (spacing * 0.7072))):
        w = 1.0 / (1.0 + (n / 8.0) ** 2)
        for sx, sy in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
            dx = dy = n * spacing * 0.7071
            ix, iy = int(round(MESH_HALF + sx * dx)), int(round(MESH_HALF + sy * dy))
            psf[iy, ix] += w
    psf = _gauss_blur(psf, 0.8)
    return psf / psf.sum()


@functools.lru_cache(maxsize=4)
def _gauss_transfer(sigma: float) -> np.ndarray:
    """Fourier transfer function (rfft2 layout, 512×512) of a Gaussian blur of ``sigma`` px."""
    k2 = np.fft.fftfreq(SIZE)[:, None] ** 2 + np.fft.rfftfreq(SIZE)[None, :] ** 2
    return np.exp(-2.0 * (math.pi * sigma) ** 2 * k2).astype(np.float32)


def _deposit(col: np.ndarray, row: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Point sources (bilinear) deposited into a full 512×512 float32 frame."""
    ix, iy = np.floor(col).astype(np.int64), np.floor(row).astype(np.int64)
    fx, fy = col - ix, row - iy
    yy = np.concatenate([iy, iy, iy + 1, iy + 1])
    xx = np.concatenate([ix, ix + 1, ix, ix + 1])
    ww = np.concatenate([w * (1 - fx) * (1 - fy), w * fx * (1 - fy), w * (1 - fx) * fy, w * fx * fy])
    ok = (yy >= 0) & (yy < SIZE) & (xx >= 0) & (xx < SIZE)
    acc = np.bincount(yy[ok] * SIZE + xx[ok], weights=ww[ok], minlength=SIZE * SIZE)
    return acc.astype(np.float32).reshape(SIZE, SIZE)


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


