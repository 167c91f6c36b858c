"""The embedded default end to end: `flaresynth simulate` (180 days from 2015-03-01, 60 min, seed 0), then
`flaresynth dataset build`.

One module-scoped build (about a minute) serves the checks that need the full-size default: the class balance,
the class separability of the 64×64 images, and the data hash behind the shipped demo generators.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from flaresynth.dataset import open_dataset
from flaresynth.labels import GOES_CLASSES


def flaresynth(*args):
    r = subprocess.run([sys.executable, "-m", "flaresynth", *args], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def default_sim(tmp_path_factory):
    sim = tmp_path_factory.mktemp("default") / "sim"
    flaresynth("simulate", "--out", str(sim), "--seed", "0")  # the demo's default period
    return sim


def build(sim, out, *options):
    flaresynth("dataset", "build", "--sdoml", str(sim / "sdomlv2.zarr"), "--goes", str(sim / "goes"),
               "--hek", str(sim / "hek" / "flares.json"), "--out", str(out), *options)
    return open_dataset(out)


@pytest.fixture(scope="module")
def default_dataset(default_sim):
    return build(default_sim, default_sim.parent / "ds")


@pytest.fixture(scope="module")
def activity3_dataset(default_sim):
    """The same period at 128 px in three activity levels: the data of demo:activity3."""
    return build(default_sim, default_sim.parent / "ds128", "--scheme", "activity3", "--size", "128")


def test_all_five_classes_with_counts_falling_from_c_to_x(default_dataset):
    counts = default_dataset.manifest["counts"]["all"]
    assert all(counts[c] > 0 for c in GOES_CLASSES), counts
    assert counts["C"] > counts["M"] > counts["X"], counts


def test_classes_are_separable_but_not_trivially(default_dataset):
    """The evaluation judge (a small CNN) trained on the train split, scored on held-out rotations.

    With the confounders of real data (limb flares, EUV delays and scatter, exposure control, noise) and a test
    split holding a handful of M and X frames, macro-F1 is far from 1 (0.41 measured on the default period):
    well above chance (0.2), below a trivially separable Sun."""
    from flaresynth.metrics.judge import train_judge

    judge = train_judge(default_dataset, seed=0)
    f1 = judge.meta["real_test"]["f1"]
    assert 0.3 <= f1 <= 0.97, judge.meta["real_test"]


def test_shipped_demo_generators_were_trained_on_todays_default_dataset(default_dataset, activity3_dataset):
    """A change to the simulator or the builder must force a retrain, not a silent mismatch. Every shipped run
    counts, the autoencoder the latent generators share (demo:autoencoder) included; demo:activity3 was trained
    on the same period built at 128 px in activity levels."""
    from flaresynth import pretrained
    from flaresynth.runs import MODEL_DIR, PROVENANCE_FILE, read_meta, resolve_shipped, shipped_runs

    assert set(shipped_runs()) == set(pretrained.SHIPPED)  # a missing weight file fails here
    for name in pretrained.SHIPPED:
        provenance = json.loads((resolve_shipped(name) / PROVENANCE_FILE).read_text())
        if name == "demo:multichannel":
            # the default period in five channels (simulate --channels 94A,...): rebuilding that store takes ~20 min
            # here, too long for a test, so its hash is not re-derived; its README gives the commands and the hash
            assert read_meta(resolve_shipped(name) / MODEL_DIR)["channels"] == ["94A", "131A", "171A", "193A", "211A"]
            continue
        built = activity3_dataset if name == "demo:activity3" else default_dataset
        assert provenance["data_hash"] == built.manifest["data_hash"], name


def test_store_is_marked_simulated(default_dataset):
    import zarr

    store = default_dataset.manifest["sources"]["images"]
    assert zarr.open_group(store, mode="r").attrs["flaresynth_simulated"] is True
    assert np.isfinite(default_dataset.labels["label_flux"]).all()


def test_small_event_fraction_thins_only_small_flares(default_sim, default_dataset):
    """--small-event-fraction 0.25 on the default period: a quarter of the A/B/C events keep their frames, the M
    and X flare frames and the quiet frames stay; the manifest counts both. (The splits are searched again on
    the new class counts, so the buffers may drop other frames: counts are compared loosely.)"""
    thin = build(default_sim, default_sim.parent / "ds-thin", "--small-event-fraction", "0.25")
    full, part = default_dataset.labels, thin.labels
    record = thin.manifest["small_events"]
    assert record["fraction"] == 0.25 and record["classes"] == "ABC"
    assert record["events_kept"] == round(0.25 * record["events"]) and record["frames_dropped"] > 0

    def flare_frames(labels, letters):
        return labels[(labels["selection"] == "flare") & labels["event_class"].fillna("").str[:1].isin(letters)]

    small_full, small_part = flare_frames(full, list("ABC")), flare_frames(part, list("ABC"))
    assert record["events"] >= small_full["event_id"].nunique() > 40  # the default build's buffers drop a few
    assert small_part["event_id"].nunique() <= record["events_kept"]
    assert 0.15 * len(small_full) < len(small_part) < 0.35 * len(small_full)
    big_full, big_part = flare_frames(full, ["M", "X"]), flare_frames(part, ["M", "X"])
    assert len(big_part) >= 0.8 * len(big_full) > 0
    assert (part["selection"] == "quiet").sum() >= 0.8 * (full["selection"] == "quiet").sum()
    # the same seed keeps the same events; the default keeps every one
    again = build(default_sim, default_sim.parent / "ds-thin-again", "--small-event-fraction", "0.25")
    assert again.manifest["data_hash"] == thin.manifest["data_hash"]
    assert default_dataset.manifest["small_events"]["events_kept"] == default_dataset.manifest["small_events"]["events"]
