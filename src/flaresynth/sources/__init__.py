"""Input sources: solar archives (GOES XRS, HEK, SDOMLv2, AIA FITS) and the simulated Sun."""
