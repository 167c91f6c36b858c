import numpy as np
import pytest

from flaresynth.errors import FlaresynthError
from flaresynth.labels import (
    class_flux_range,
    class_to_flux,
    flux_to_class,
    flux_to_label_index,
    flux_to_letter,
    flux_to_letter_index,
)


@pytest.mark.parametrize(
    ("flux", "letter"),
    [(5e-9, "A"), (9.99e-8, "A"), (1e-7, "B"), (9.9e-7, "B"), (1e-6, "C"), (1e-5, "M"), (9.99e-5, "M"), (1e-4, "X"), (1.3e-3, "X")],
)
def test_letters_at_and_around_the_boundaries(flux, letter):
    assert flux_to_letter(flux) == letter


def test_class_strings_both_ways():
    assert flux_to_class(2.5e-5) == "M2.5"
    assert flux_to_class(1.2971e-3) == "X13.0"
    assert flux_to_class(5e-9) == "A0.5"
    assert class_to_flux("M2.5") == pytest.approx(2.5e-5)
    assert class_to_flux("x13") == pytest.approx(1.3e-3)
    assert class_to_flux("C") == pytest.approx(1e-6)
    for f in np.geomspace(2e-9, 5e-3, 40):
        assert class_to_flux(flux_to_class(f, decimals=3)) == pytest.approx(f, rel=1e-3)


@pytest.mark.parametrize("bad", ["", "Q1.0", "M-1", "2.5M", None])
def test_bad_class_strings_are_one_line_errors(bad):
    with pytest.raises(FlaresynthError, match="GOES class"):
        class_to_flux(bad)


def test_vectorised_indices_and_activity3():
    flux = np.array([np.nan, 0.0, 3e-8, 3e-7, 3e-6, 3e-5, 3e-4])
    assert flux_to_letter_index(flux).tolist() == [-1, -1, 0, 1, 2, 3, 4]
    assert flux_to_label_index(flux, "activity3").tolist() == [-1, -1, 0, 0, 1, 2, 2]
    with pytest.raises(FlaresynthError, match="label scheme"):
        flux_to_label_index(flux, "goes7")


def test_flux_ranges():
    assert class_flux_range("M") == (1e-5, 1e-4)
    assert class_flux_range("high", "activity3") == (1e-5, 1e-2)
    assert class_flux_range("low", "activity3")[1] == pytest.approx(1e-6)
    with pytest.raises(FlaresynthError):
        class_flux_range("Z")
