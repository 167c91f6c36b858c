"""Damaged dataset and samples folders: each problem is one line naming the file and what is wrong."""

import json
import os
import shutil
import stat

import numpy as np
import pandas as pd
import pytest

from flaresynth.dataset import IMAGES_FILE, LABELS_FILE, MANIFEST_FILE, open_dataset
from flaresynth.errors import FlaresynthError
from flaresynth.samples import SAMPLES_FILE, SAMPLES_TABLE, open_samples, write_samples
from toy import cli_here, make_dataset, one_line_error


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("folders") / "ds", n=12, size=8)


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    images = np.zeros((6, 1, 8, 8), np.float32)
    table = pd.DataFrame({"label": ["A", "B", "C"] * 2, "requested_flux": np.nan, "seed": range(6)})
    manifest = {"classes": ["A", "B", "C", "M", "X"], "scheme": "goes5", "generator": "test",
                "transform": {"channel": "171A", "lo": 5.0, "hi": 3500.0}}
    return write_samples(tmp_path_factory.mktemp("folders") / "samples", images, table, manifest)


def damaged(src, tmp_path, name, damage):
    """A copy of folder ``src`` whose file ``name`` went through ``damage(path)``."""
    copy = tmp_path / src.name
    shutil.copytree(src, copy)
    damage(copy / name)
    return copy


def truncate(path):
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)


def drop_last_row(path):
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))


def set_format(value):
    def damage(path):
        record = json.loads(path.read_text())
        record["format"] = value
        path.write_text(json.dumps(record))
    return damage


@pytest.mark.parametrize(("name", "damage", "problem"), [
    (IMAGES_FILE, truncate, "truncated"),
    (IMAGES_FILE, lambda p: p.write_bytes(b"not an array at all"), "not a readable .npy array"),
    (LABELS_FILE, drop_last_row, f"11 rows, but {IMAGES_FILE} holds 12 images"),
    (LABELS_FILE, lambda p: p.write_bytes(b""), "not a readable CSV table"),
    (MANIFEST_FILE, set_format("flaresynth-dataset/9"), "a format version this flaresynth does not read"),
    (MANIFEST_FILE, set_format("something-else/1"), "expected 'flaresynth-dataset/1'"),
    (MANIFEST_FILE, lambda p: p.write_text("{truncated"), "not readable JSON"),
])
def test_damaged_dataset_names_the_file_and_the_problem(dataset, tmp_path, name, damage, problem):
    folder = damaged(dataset, tmp_path, name, damage)
    with pytest.raises(FlaresynthError) as exc:
        open_dataset(folder)
    assert str(exc.value).startswith(f"{folder / name}: ") and problem in str(exc.value)


@pytest.mark.parametrize(("name", "damage", "problem"), [
    (SAMPLES_FILE, truncate, "truncated"),
    (SAMPLES_TABLE, drop_last_row, f"5 rows, but {SAMPLES_FILE} holds 6 images"),
    ("manifest.json", set_format("flaresynth-samples/2"), "a format version this flaresynth does not read"),
])
def test_damaged_samples_folder_names_the_file_and_the_problem(samples, tmp_path, name, damage, problem):
    folder = damaged(samples, tmp_path, name, damage)
    with pytest.raises(FlaresynthError) as exc:
        open_samples(folder)
    assert str(exc.value).startswith(f"{folder / name}: ") and problem in str(exc.value)


def test_train_on_a_truncated_dataset_is_one_line(dataset, tmp_path):
    """The interrupted copy of the issue: no `mmap length is greater than file size` traceback."""
    folder = damaged(dataset, tmp_path, IMAGES_FILE, truncate)
    line = one_line_error(cli_here("train", "--data", str(folder), "--out", str(tmp_path / "run"), "--preset", "tiny",
                                   "--no-progress"))
    assert str(folder / IMAGES_FILE) in line and "truncated" in line
    assert not (tmp_path / "run").exists()


def test_dataset_folder_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        ds = make_dataset(tmp_path / "ds", n=4, size=8)
    finally:
        os.umask(old)
    assert stat.S_IMODE(ds.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in ds.iterdir()} == {0o644}
