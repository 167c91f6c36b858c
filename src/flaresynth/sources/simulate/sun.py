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
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import astropy.units as u
import numpy as np
import sunpy.coordinates.sun as sunpy_sun
from astropy.time import Time
from scipy.ndimage import gaussian_filter

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

    def _static_images(self, rng: np.random.Generator):
        """The quiet-Sun maps and the network templates (log-textures of unit-free contrast)."""
        self._px, self._py, self._disk, self._network, self._corona = quiet_sun()
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
            x, y, z = sun_to_image(pts[:, :, None], lon[None, :].astype(np.float32),
                                    b0[alive][None, :].astype(np.float32))
            vis[i, alive] = s[alive] * (w[:, None] * _visible(x, y, z)).sum(axis=0)
            _, _, zc = sun_to_image(ar.centre[:, None], lon[None, :], b0[alive][None, :])
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
                offset = flare_offset(rng, ar)
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
        img[r0:r1, c0:c1] *= factor.astype(np.float32)

    def _paint_region(self, img, ar: ActiveRegion, s: float, lon: float, b0: float):
        """Add a region's visible loops (0.7 px wide) and diffuse emission (5 px blur) to ``img``."""
        scale = E_UNIT * s
        for pts, wts, sigma in ((ar.loops, ar.loop_w, 0.7), (ar.glow, ar.glow_w, 5.0)):
            x, y, z = sun_to_image(pts, lon, b0)
            keep = _visible(x, y, z)
            if not keep.any():
                continue
            _splat(img, CENTRE + x[keep] * RSUN_PX, CENTRE - y[keep] * RSUN_PX, wts[keep] * scale, sigma)

    def _paint_kernel(self, img, fl: Flare, f: float, lon: float, b0: float, ar: ActiveRegion):
        """Add the 171 Å kernel of a flare of instantaneous flux ``f`` (W/m²) at its place in ``ar``."""
        if f < 1e-10:
            return
        x, y, z = sun_to_image(ar.centre + fl.offset, lon, b0)
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


