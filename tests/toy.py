"""Toy data and CLI helpers shared by the tests (imported as ``from toy import ...``; pytest puts tests/ on sys.path).

One toy Sun for every test that needs a dataset folder: a disk with one Gaussian 'flare' whose brightness grows
with the class index, at a random place, plus noise (:func:`disk_image`). ``test_evaluate`` keeps its own images
in DN/s (its metrics need blobs whose size and peak grow with the class), ``test_experiments`` its three-class
activity images with forecast labels.
"""

import contextlib
import io
import os
import subprocess
import sys

import numpy as np
import pandas as pd

from flaresynth.cli import main
from flaresynth.dataset import write_dataset
from flaresynth.labels import GOES_CLASSES, SCHEMES, letter_to_label
from flaresynth.transforms import IntensityTransform

TRANSFORM = {"channel": "171A", "lo": 5.0, "hi": 3500.0}


def disk_image(rng, size: int, k: int, strength: float = 0.15) -> np.ndarray:
    """One toy image in [-1, 1]: a disk of radius 0.4·size and a 'flare' of peak ``strength``·k (k = 0 for A)."""
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(xx - (size - 1) / 2, yy - (size - 1) / 2)
    img = np.where(r < size * 0.4, 0.2, -0.9) + 0.05 * rng.standard_normal((size, size))
    cx, cy = rng.uniform(size * 0.3, size * 0.7, 2)
    img += strength * k * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 4)
    return np.clip(img, -1, 1).astype(np.float32)


def toy_images(n: int, size: int = 32, seed: int = 0, classes=GOES_CLASSES, strength: float = 0.15):
    """``n`` toy images (N, 1, size, size) whose classes cycle through ``classes``; returns (images, GOES index)."""
    rng = np.random.default_rng(seed)
    ks = np.array([GOES_CLASSES.index(classes[i % len(classes)]) for i in range(n)])
    return np.stack([disk_image(rng, size, k, strength)[None] for k in ks]), ks


def make_dataset(out, n=40, size=32, seed=0, classes=GOES_CLASSES, scheme="goes5", n_train=30, counts=None,
                 strength=0.15, channels=("171A",)):
    """A dataset folder of toy images.

    Either ``n`` images whose classes cycle through ``classes`` (the first ``n_train`` in the train split, the
    rest in test), or ``counts`` = {split: [images of each GOES class A..X]}, rows hourly by split then
    class, with the 24 h forecast columns (``peak24_flux``, ``flare24`` for M and X). Several ``channels``: the
    same toy image in each, scaled by 1 - 0.1·channel index (so channels differ), each with its AIA transform.
    """
    rng = np.random.default_rng(seed)
    if counts is None:
        plan = [("train" if i < n_train else "test", GOES_CLASSES.index(classes[i % len(classes)])) for i in range(n)]
    else:
        plan = [(split, k) for split, per in counts.items() for k, m in enumerate(per) for _ in range(m)]
    images = np.empty((len(plan), len(channels), size, size), np.float32)
    rows = []
    for i, (split, k) in enumerate(plan):
        img = disk_image(rng, size, k, strength)
        images[i] = np.stack([img * (1 - 0.1 * c) for c in range(len(channels))])
        flux = 10.0 ** (-8 + k + rng.uniform(0, 1))
        row = {"time": f"2024-05-01T{i % 24:02d}:00:00" if counts is None else
               (pd.Timestamp("2024-05-01") + pd.Timedelta(hours=i + 1)).isoformat(),
               "label": letter_to_label(GOES_CLASSES[k], scheme), "label_flux": flux, "split": split}
        if counts is not None:
            row.update(peak24_flux=flux, flare24=k >= 3)
        rows.append(row)
    transform = (dict(TRANSFORM) if list(channels) == ["171A"]
                 else [IntensityTransform.for_channel(c).to_dict() for c in channels])
    manifest = {"scheme": scheme, "classes": list(SCHEMES[scheme]), "channels": list(channels), "transform": transform}
    return write_dataset(out, images, pd.DataFrame(rows), manifest)


def cli(*args, timeout=180):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "flaresynth", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def cli_here(*args) -> subprocess.CompletedProcess:
    """The command line in this process, answered like :func:`cli` (exit code, stdout, stderr): for bad-input checks
    that fail before any work, where a subprocess would spend its seconds importing torch and diffusers."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(["flaresynth", *args], code, out.getvalue(), err.getvalue())


def one_line_error(r):
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]
