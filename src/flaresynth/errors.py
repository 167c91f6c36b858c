"""User-facing errors.

Anything the user can fix (a missing file, a variable that is not there, a value out of range)
raises :class:`FlaresynthError`. The CLI prints its message as one line and exits non-zero; the
traceback appears only with ``--debug``. Messages name the file and the field, and say what was
expected, e.g. ``goes.nc: variable 'xrsb_flux' missing (expected a GOES-R XRS L2 file)``.
"""

from __future__ import annotations

from pathlib import Path


class FlaresynthError(Exception):
    """An input or usage problem, reported to the user as one line."""


def input_error(path: str | Path | None, field: str | None, problem: str) -> FlaresynthError:
    """Build a :class:`FlaresynthError` whose message names the file and the field.

    >>> str(input_error("a.nc", "variable 'time'", "missing"))
    "a.nc: variable 'time': missing"
    """
    parts = [str(p) for p in (path, field) if p not in (None, "")]
    parts.append(problem)
    return FlaresynthError(": ".join(parts))
