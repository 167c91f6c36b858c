"""Toy data and CLI helpers shared by the tests (imported as ``from toy import ...``; pytest puts tests/ on sys.path)."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd

from flaresynth.dataset import write_dataset
from flaresynth.labels import GOES_CLASSES, SCHEMES, letter_to_label


def make_dataset(out, n=40, size=32, seed=0, classes=GOES_CLASSES, scheme="goes5"):
    """Toy disks with a class-dependent 'flare' (classes cycle through ``classes``)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(xx - (size - 1) / 2, yy - (size - 1) / 2)
    images = np.empty((n, 1, size, size), np.float32)
    rows = []
    for i in range(n):
        k = GOES_CLASSES.index(classes[i % len(classes)])
        img = np.where(r < size * 0.4, 0.2, -0.9) + 0.05 * rng.standard_normal((size, size))
        cx, cy = rng.uniform(size * 0.3, size * 0.7, 2)
        img += 0.15 * k * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 4)
        images[i, 0] = np.clip(img, -1, 1)
        flux = 10.0 ** (-8 + k + rng.uniform(0, 1))
        rows.append({"time": f"2024-05-01T{i % 24:02d}:00:00", "label": letter_to_label(GOES_CLASSES[k], scheme),
                     "label_flux": flux, "split": "train" if i < 30 else "test"})
    manifest = {"scheme": scheme, "classes": list(SCHEMES[scheme]), "channels": ["171A"],
                "transform": {"channel": "171A", "lo": 5.0, "hi": 3500.0}}
    return write_dataset(out, images, pd.DataFrame(rows), manifest)


def cli(*args, timeout=180):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "flaresynth", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def one_line_error(r):
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]
