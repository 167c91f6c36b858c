"""The simulated Sun's montage: frames by the GOES class of their instantaneous XRS-B flux (rows A-X)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from flaresynth.figures import aia171_cmap
from flaresynth.labels import GOES_CLASSES, flux_to_class, flux_to_letter_index
from flaresynth.sources.simulate.sun import SimulatedSun, deg_cor


def montage(sun: SimulatedSun, t_obs: np.ndarray, t: np.ndarray, flux: np.ndarray, path: Path,
            per_class: int = 4) -> dict:
    """PNG grid of frames by the GOES class of their instantaneous XRS-B flux ``flux`` (rows A..X).

    Returns the T_OBS (to the minute) of the frames shown, per class.
    """
    letter = flux_to_letter_index(flux)
    cmap = aia171_cmap()
    size = (2.2 * per_class, 2.35 * len(GOES_CLASSES))
    fig = Figure(figsize=size, facecolor="black")
    axes = fig.subplots(len(GOES_CLASSES), per_class)
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
            img = sun.render(float(t[i]), deg_cor=float(deg_cor(t_obs[i:i + 1])[0]))
            ax.imshow(np.log10(np.clip(img, 5.0, 1e4)), cmap=cmap, vmin=math.log10(5.0), vmax=4.0,
                      interpolation="nearest")
            ax.set_title(f"{flux_to_class(float(flux[i]))}  {flux[i]:.1e} W/m²\n{str(t_obs[i])[:16]}",
                         color="white", fontsize=7)
    fig.suptitle("flaresynth simulated Sun: AIA 171 Å by GOES class (log10 DN/s, 5 to 10⁴)", color="white",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80, facecolor="black", metadata={"Software": None})
    return chosen


