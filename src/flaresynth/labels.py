"""GOES flare classes: flux <-> class, and the label schemes the models train on.

The GOES scale is logarithmic in the peak 1-8 Å (XRS-B) flux, in W/m²:

=====  ==================  =====================
class  flux range          class string example
=====  ==================  =====================
A      F < 1e-7            A5.0 = 5e-8
B      1e-7 <= F < 1e-6    B2.3 = 2.3e-7
C      1e-6 <= F < 1e-5    C1.0 = 1e-6
M      1e-5 <= F < 1e-4    M2.5 = 2.5e-5
X      F >= 1e-4           X13  = 1.3e-3 (X has no upper end)
=====  ==================  =====================

Fluxes below 1e-8 are still class A (``A0.5`` = 5e-9), as in sunkit-instruments.

Two label schemes exist: ``goes5`` (A, B, C, M, X; the paper's 64×64 experiments) and
``activity3`` (low = A/B, medium = C, high = M/X; the paper's 128×128 experiments).
Which flux convention (NOAA "true" or SWPC-scaled) a flux is in is the caller's business:
see :mod:`flaresynth.sources.goes`.
"""

from __future__ import annotations

import re

import numpy as np

from flaresynth.errors import FlaresynthError

GOES_CLASSES: tuple[str, ...] = ("A", "B", "C", "M", "X")
ACTIVITY3: tuple[str, ...] = ("low", "medium", "high")
SCHEMES: dict[str, tuple[str, ...]] = {"goes5": GOES_CLASSES, "activity3": ACTIVITY3}

#: Lower flux bound of each class letter, W/m².
CLASS_BASE_FLUX: dict[str, float] = {"A": 1e-8, "B": 1e-7, "C": 1e-6, "M": 1e-5, "X": 1e-4}
#: goes5 letter -> activity3 level.
LETTER_TO_ACTIVITY3: dict[str, str] = {"A": "low", "B": "low", "C": "medium", "M": "high", "X": "high"}

_EDGES = np.array([1e-7, 1e-6, 1e-5, 1e-4])
_CLASS_RE = re.compile(r"^\s*([ABCMX])\s*(\d+(?:\.\d*)?)?\s*$", re.IGNORECASE)


def flux_to_letter_index(flux) -> np.ndarray:
    """Index into :data:`GOES_CLASSES` of each flux (W/m²); -1 where the flux is NaN or <= 0."""
    f = np.asarray(flux, dtype=np.float64)
    idx = np.searchsorted(_EDGES, f, side="right")
    return np.where(np.isfinite(f) & (f > 0), idx, -1)


def flux_to_letter(flux: float) -> str:
    """Class letter of one flux in W/m² (``2.5e-5 -> 'M'``)."""
    i = int(flux_to_letter_index(flux))
    if i < 0:
        raise FlaresynthError(f"flux {flux!r}: not a positive finite number, so it has no GOES class")
    return GOES_CLASSES[i]


def flux_to_class(flux: float, decimals: int = 1) -> str:
    """GOES class string of a flux in W/m² (``2.5e-5 -> 'M2.5'``, ``1.2971e-3 -> 'X13.0'``)."""
    letter = flux_to_letter(flux)
    value = flux / CLASS_BASE_FLUX[letter]
    # Rounding can carry a value to the next decade (9.96e-6 -> 'C10.0'); keep the letter, as SWPC does.
    return f"{letter}{value:.{decimals}f}"


def class_to_flux(goes_class: str) -> float:
    """Flux in W/m² of a GOES class string (``'M2.5' -> 2.5e-5``; a bare letter means 1.0)."""
    m = _CLASS_RE.match(str(goes_class))
    if not m:
        raise FlaresynthError(f"GOES class {goes_class!r}: expected a letter A/B/C/M/X and a number, like 'M2.5'")
    letter = m.group(1).upper()
    value = float(m.group(2)) if m.group(2) else 1.0
    if value <= 0:
        raise FlaresynthError(f"GOES class {goes_class!r}: the number must be positive")
    return value * CLASS_BASE_FLUX[letter]


def letter_to_label(letter: str, scheme: str = "goes5") -> str:
    """Label of a goes5 class letter in ``scheme``."""
    check_scheme(scheme)
    return letter if scheme == "goes5" else LETTER_TO_ACTIVITY3[letter]


def flux_to_label_index(flux, scheme: str = "goes5") -> np.ndarray:
    """Label index of each flux in ``scheme`` (-1 for missing flux)."""
    idx = flux_to_letter_index(flux)
    if check_scheme(scheme) == "activity3":
        table = np.array([ACTIVITY3.index(LETTER_TO_ACTIVITY3[c]) for c in GOES_CLASSES])
        return np.where(idx >= 0, table[np.clip(idx, 0, 4)], -1)
    return idx


def check_scheme(scheme: str) -> str:
    """Return ``scheme`` if it is known, else raise a one-line error listing the known ones."""
    if scheme not in SCHEMES:
        raise FlaresynthError(f"label scheme {scheme!r}: expected one of {', '.join(SCHEMES)}")
    return scheme


def class_flux_range(label: str, scheme: str = "goes5") -> tuple[float, float]:
    """Flux interval [lo, hi) in W/m² covered by a label (X and 'high' reach up to 1e-2)."""
    letters = [label] if check_scheme(scheme) == "goes5" else [k for k, v in LETTER_TO_ACTIVITY3.items() if v == label]
    if not letters or letters[0] not in GOES_CLASSES:
        raise FlaresynthError(f"label {label!r}: not a class of scheme {scheme} ({', '.join(SCHEMES[scheme])})")
    lo = 1e-9 if letters[0] == "A" else CLASS_BASE_FLUX[letters[0]]
    hi = 1e-2 if letters[-1] == "X" else CLASS_BASE_FLUX[letters[-1]] * 10
    return lo, hi
