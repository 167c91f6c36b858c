"""AIA's EUV channels for the simulated Sun: temperature responses, emission per component, the camera per channel.

The 171 Å renderer of :mod:`~flaresynth.sources.simulate.sun` is calibrated against a real 171 Å frame, so the
other channels are made from it: each component of the 171 Å image stands for plasma with a Gaussian
differential emission measure (DEM) in log T, and channel ``c`` sees the same plasma through its own
temperature response ``R_c(T)`` (DN cm⁵ s⁻¹ pix⁻¹)::

    I_c = I_171 · ∫ DEM(T) R_c(T) dlogT / ∫ DEM(T) R_171(T) dlogT

* **Responses**: SolarSoft's ``aia_get_response(/temperature, /dn, /eve)`` (AIA's V10 calibration, EVE-normalised,
  no time-dependent degradation; Boerner et al. 2012, Sol. Phys. 275, 41; Boerner et al. 2014, Sol. Phys. 289,
  2377), as shipped offline in the ``demregpy`` package (Hannah & Kontar 2012) and read with ``scipy.io.readsav``:
  94, 131, 171, 193, 211 and 335 Å on log T = 4-9. 304 Å (optically thick He II) has no such response and is not
  simulated. The channels' main ions (O'Dwyer et al. 2010, A&A 521, A21): 94 Fe XVIII (7 MK) and Fe X, 131 Fe XXI
  (11 MK) and Fe VIII (0.4 MK), 171 Fe IX (0.7 MK), 193 Fe XII (1.5 MK) and Fe XXIV (20 MK), 211 Fe XIV (2 MK),
  335 Fe XVI (2.5 MK).
* **Components** (:data:`COMPONENTS`, log T mean and σ of the DEM): network and transition region 0.9 MK, the
  quiet corona 1.3 MK, active-region loops 2 MK, active-region cores 3.2 MK. Coronal holes (cooler and emptier)
  darken the hotter channels more: the 171 Å hole factor ``h`` becomes ``h^γ`` (:data:`HOLE_POWER`).
* **Flares** heat their loops to ``T_max`` = 10 MK · (F / C1)^0.12 (10-20 MK from C to X, 25 % log-normal
  scatter; hotter for bigger flares, as GOES temperatures are) at the X-ray peak, then cool exponentially in
  time through every channel's peak temperature, reaching 171 Å's 0.8 MK at the 171 Å kernel's own peak (the
  ``euv_lag`` of the 171 Å model, the median lag when ``euv_timing`` is off). The emission measure follows the
  X-ray rise and drains as ``EM ∝ T^1.5`` while the loops cool (the cooling path of flare loops in the
  T-√EM diagram, Jakimiec et al. 1992, A&A 253, 269: √EM ∝ T^(1/ζ), ζ ≈ 1.3); at 0.8 MK the loops stay and
  fade as the 171 Å post-flare loops do (twice the X-ray decay time). The kernel's geometry is the
  171 Å kernel's at the flare's peak; its brightness in channel ``c`` is the 171 Å kernel's times
  ``EM(t) R_c(T(t)) / R_171(0.8 MK)``. So 131 Å (and 193 Å's Fe XXIV) peak first, then 94, 335, 211, 193 Å, and
  171 Å last, as observed; the 171 Å channel itself keeps its calibrated light curve.
* **Camera**: each channel's nominal exposure (2.9 s, 2.0 s for 171 and 193 Å; Lemen et al. 2012, Sol. Phys. 275,
  17) with the same exposure control in flares, photon noise with the channel's DN per photon (``DNPERPHT`` of
  aiapy's response table), read noise, cosmic rays, saturation and blooming. The entrance filter's mesh diffracts
  into orders spaced ``λ / d`` (Grigis et al. 2012, AIA PSF), so the pattern scales with wavelength.
* **Degradation**: SDOMLv2 divides each channel by its degradation factor; here it is aiapy's
  :func:`aiapy.calibrate.degradation` with the real table aiapy ships
  (``aiapy/tests/data/aia_V8_20171210_050627_response_table.txt``, read by
  :func:`aiapy.calibrate.util.get_correction_table`), evaluated once a day and interpolated (the table is
  piecewise-polynomial in time). 171 Å keeps the drifting model factor of :func:`~flaresynth.sources.simulate.sun.deg_cor`
  unless asked (``deg_171="aiapy"``): its frames, on which the shipped generators are trained, stay byte for
  byte what they were.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import scipy.io

from flaresynth.errors import FlaresynthError
from flaresynth.transforms import channel_name, parse_channels

__all__ = ["CHANNELS", "DEFAULT_CHANNELS", "channel_name", "parse_channels", "temperature_responses", "response",
           "dem_ratio", "component_ratios", "flare_t_max", "flare_temperature", "flare_brightness",
           "aiapy_degradation", "dn_per_photon", "mesh_spacing", "telescope", "exposure_steps", "wavelength"]

#: The channels the simulated Sun can write (those with a published temperature response).
CHANNELS = ("94A", "131A", "171A", "193A", "211A", "335A")
DEFAULT_CHANNELS = ("171A",)
#: Nominal exposure time (s) of each channel (Lemen et al. 2012).
EXPOSURE = {"94A": 2.9, "131A": 2.9, "171A": 2.0, "193A": 2.0, "211A": 2.9, "335A": 2.9}
#: T_OBS of each channel after the start of its 12-s slot (s): AIA's cameras take the channels in turn.
T_OBS_OFFSET_S = {"94A": 2.12, "131A": 9.62, "171A": 5.35, "193A": 6.84, "211A": 11.2, "335A": 3.9}
#: (log T mean, σ) of the DEM behind each component of the 171 Å image.
COMPONENTS = {"network": (5.95, 0.15), "corona": (6.15, 0.15), "loops": (6.3, 0.15), "core": (6.5, 0.2)}
#: Exponent of the 171 Å coronal-hole factor in each channel (hotter channels see darker holes).
HOLE_POWER = {"94A": 1.5, "131A": 1.0, "171A": 1.0, "193A": 2.0, "211A": 2.2, "335A": 2.0}
LOGT_171 = 5.9  # peak of the 171 Å response (0.8 MK): the 171 Å flare kernel peaks when the loops pass it
EM_POWER = 1.5  # EM ∝ T^1.5 along the cooling path
T_FLARE_C1 = 1.0e7  # K, flare temperature at the X-ray peak for a C1 flare
T_FLARE_SLOPE = 0.12  # T_max ∝ F^0.12
T_FLARE_RANGE = (8e6, 2.5e7)  # K


def wavelength(channel: str) -> int:
    """``'171A'`` -> 171."""
    return int(channel_name(channel)[:-1])


# ------------------------------------------------------------------------------------------- responses
@functools.lru_cache(maxsize=1)
def temperature_responses() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(log T grid, {channel: R(T) in DN cm⁵ s⁻¹ pix⁻¹}) from the SolarSoft table shipped in demregpy."""
    from demregpy.tresp import aia_tresp  # the path of the table the package ships (its own pointer to it)

    if not Path(aia_tresp).is_file():
        raise FlaresynthError(f"{aia_tresp}: missing (the AIA temperature responses demregpy 0.6 ships; reinstall "
                              "flaresynth's dependencies)")
    data = scipy.io.readsav(aia_tresp)
    logt = np.asarray(data["logt"], dtype=np.float64)
    names = [c.decode() if isinstance(c, bytes) else str(c) for c in data["channels"]]
    # 'A94' -> '94A'; tiny negative values of the tabulated fit are clipped
    resp = {f"{n.lstrip('A')}A": np.clip(np.asarray(data["tr"][i], dtype=np.float64), 0.0, None)
            for i, n in enumerate(names)}
    return logt, resp


def response(channel: str, logt) -> np.ndarray:
    """``R_c`` (DN cm⁵ s⁻¹ pix⁻¹) at ``logt`` (interpolated in log R)."""
    grid, resp = temperature_responses()
    log_r = np.log10(np.maximum(resp[channel_name(channel)], 1e-40))
    return 10.0 ** np.interp(np.asarray(logt, dtype=np.float64), grid, log_r)


@functools.lru_cache(maxsize=64)
def dem_ratio(channel: str, logt_mean: float, sigma: float) -> float:
    """Brightness of a Gaussian DEM (in log T) in ``channel`` relative to 171 Å."""
    grid, resp = temperature_responses()
    g = np.exp(-0.5 * ((grid - logt_mean) / sigma) ** 2)
    return float((g * resp[channel_name(channel)]).sum() / (g * resp["171A"]).sum())


def component_ratios(channel: str) -> dict[str, float]:
    """Brightness relative to 171 Å of each component of :data:`COMPONENTS` in ``channel``."""
    return {k: dem_ratio(channel, m, s) for k, (m, s) in COMPONENTS.items()}


def flare_t_max(peak: float, scatter: float = 1.0) -> float:
    """Flare temperature (K) at the X-ray peak for a flare of peak XRS-B flux ``peak`` W/m²."""
    return float(np.clip(T_FLARE_C1 * (peak / 1e-6) ** T_FLARE_SLOPE * scatter, *T_FLARE_RANGE))


def flare_temperature(t, t_peak: float, t_171: float, t_max: float) -> np.ndarray:
    """Flare loop temperature (K) at ``t`` days: ``t_max`` up to the X-ray peak ``t_peak``, then exponential
    cooling that reaches 171 Å's 0.8 MK at ``t_171``, where it stays (the post-flare loops)."""
    dt = np.clip(np.asarray(t, dtype=np.float64) - t_peak, 0.0, max(t_171 - t_peak, 0.0))
    span = max(t_171 - t_peak, 1e-6)
    return t_max * (10.0**LOGT_171 / t_max) ** (dt / span)


def flare_brightness(channel: str, t, t_peak: float, sigma_rise: float, t_171: float, t_max: float,
                     tau_loops: float) -> np.ndarray:
    """Brightness of a flare kernel in ``channel`` relative to the 171 Å kernel of the same emission measure at
    0.8 MK: ``EM(t) R_c(T(t)) / R_171(0.8 MK)``. EM follows the X-ray rise (Gaussian, ``sigma_rise``), drains as
    T^1.5 while the loops cool, is 1 when they reach 0.8 MK at ``t_171`` and then fades over ``tau_loops`` (days)
    as the 171 Å post-flare loops do."""
    t = np.asarray(t, dtype=np.float64)
    temp = flare_temperature(t, t_peak, t_171, t_max)
    rise = np.exp(-0.5 * (np.minimum(t - t_peak, 0.0) / sigma_rise) ** 2)
    fade = np.exp(-np.maximum(t - t_171, 0.0) / tau_loops)
    em = rise * fade * (temp / 10.0**LOGT_171) ** EM_POWER
    return em * response(channel, np.log10(temp)) / float(response("171A", LOGT_171))


# ------------------------------------------------------------------------------------------- instrument
def _aiapy_table_path() -> Path:
    import aiapy  # imported here: aiapy pulls in sunpy.map (seconds), needed only for the degradation table

    path = Path(aiapy.__file__).parent / "tests" / "data" / "aia_V8_20171210_050627_response_table.txt"
    if not path.is_file():
        raise FlaresynthError(f"{path}: missing (the degradation table aiapy 0.10 ships; reinstall flaresynth's "
                              "dependencies)")
    return path


@functools.lru_cache(maxsize=1)
def _correction_table():
    from aiapy.calibrate.util import get_correction_table

    return get_correction_table(_aiapy_table_path())


@functools.lru_cache(maxsize=1)
def dn_per_photon() -> dict[str, float]:
    """DN per detected photon of each channel (``DNPERPHT`` of aiapy's response table)."""
    from astropy.io import ascii

    table = ascii.read(_aiapy_table_path())
    out = {}
    for row in table:
        name = str(row["WAVE_STR"]).split("_")[0]
        if name.isdigit():
            out.setdefault(f"{int(name)}A", float(row["DNPERPHT"]))
    return out


def aiapy_degradation(channel: str, when: np.ndarray) -> np.ndarray:
    """aiapy's degradation factor of ``channel`` at datetime64 times ``when`` (daily grid, interpolated)."""
    import astropy.units as u
    from aiapy.calibrate import degradation
    from astropy.time import Time

    when = np.asarray(when, dtype="datetime64[ns]")
    if when.size == 0:
        return np.zeros(0)
    day0 = when.min().astype("datetime64[D]")
    n = int((when.max().astype("datetime64[D]") - day0).astype(int)) + 2
    grid = day0 + np.arange(n).astype("timedelta64[D]")
    values = np.asarray(degradation(wavelength(channel) * u.AA, Time(grid.astype("datetime64[s]").astype(str)),
                                    correction_table=_correction_table()).value, dtype=np.float64)
    x = (grid.astype("datetime64[ns]") - day0.astype("datetime64[ns]")).astype(np.float64)
    return np.interp((when - day0.astype("datetime64[ns]")).astype(np.float64), x, values)


def mesh_spacing(channel: str, spacing_171: float) -> float:
    """Spacing (px) of the mesh diffraction orders in ``channel``: ∝ λ (orders at λ / d)."""
    return spacing_171 * wavelength(channel) / 171.0


def telescope(channel: str) -> int:
    """AIA telescope number (INSTRUME ``AIA_n``) of a channel."""
    return {94: 4, 131: 1, 171: 3, 193: 2, 211: 2, 304: 4, 335: 1}.get(wavelength(channel), 3)


def exposure_steps(channel: str) -> tuple[float, ...]:
    """The shorter exposures (s) automatic exposure control picks from in flares, longest first."""
    base = EXPOSURE[channel_name(channel)]
    return tuple(round(base * f, 4) for f in (0.5, 0.25, 0.125))


def channel_phase(channel: str) -> float:
    """A fixed phase (rad) per channel for the slow throughput drift (channels drift independently)."""
    return math.radians(wavelength(channel))
