"""Evaluation on several AIA channels (issue 16): the cross-channel consistency metric, per-channel judges and
features, the 171 Å and hot-channel referees, the per-channel and RGB figures, mismatched channel lists.

One module-scoped simulated Sun in five channels (20 days at 6 h cadence, so each class spans many days and
active regions: shuffling channels among near-identical frames of one day would change nothing), built at
32 px with day blocks split into train and test (about a minute in all).
"""

import json

import numpy as np
import pandas as pd
import pytest

from flaresynth.dataset import open_dataset
from flaresynth.evaluate import (
    HOT_CHANNELS,
    EvaluateConfig,
    channel_consistency,
    evaluate,
    fit_split_referee,
    referee_classify,
)
from flaresynth.experiments.stats import day_groups
from flaresynth.metrics.channels import ratio_names, region_ratios, shuffle_channels_within_class
from flaresynth.metrics.cluster import resampling_plan
from flaresynth.report import build_report
from flaresynth.samples import write_samples
from flaresynth.sources.simulate.archives import simulate
from toy import cli, cli_here, one_line_error

CHANNELS = ["94A", "131A", "171A", "193A", "211A"]


@pytest.fixture(scope="module")
def sim_ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("xchan")
    simulate(root / "sim", days=20, cadence_min=360, start="2014-02-01", seed=2, channels=",".join(CHANNELS),
             progress=False, workers=1)
    out = root / "ds"
    r = cli("dataset", "build", "--sdoml", str(root / "sim" / "sdomlv2.zarr"), "--goes", str(root / "sim" / "goes"),
            "--hek", str(root / "sim" / "hek" / "flares.json"), "--out", str(out), "--channels", ",".join(CHANNELS),
            "--size", "32", "--split-by", "day", "--buffer-days", "0", "--quiet-per-day", "24", "--val-fraction", "0",
            "--test-fraction", "0.4", timeout=300)
    assert r.returncode == 0, r.stderr
    return open_dataset(out)


def _samples(ds, path, shuffle: bool, channels=None, n_channels=None):
    """The real training split written as a samples folder (channels shuffled within each class if asked)."""
    idx = ds.split_indices("train")
    x, y = np.asarray(ds.images[idx]), ds.label_index()[idx]
    if shuffle:
        x = shuffle_channels_within_class(x, y, seed=1)
    if n_channels:
        x = x[:, :n_channels]
    table = pd.DataFrame({"label": [ds.classes[k] for k in y], "requested_flux": np.nan, "seed": np.arange(len(y))})
    transform = ds.manifest["transform"][: x.shape[1]]
    manifest = {"generator": "real train split", "classes": list(ds.classes), "scheme": ds.scheme,
                "transform": transform if len(transform) > 1 else transform[0], "channels": channels or ds.channels[: x.shape[1]]}
    return write_samples(path, x, table, manifest)


def test_shuffled_channels_score_clearly_worse_than_real_images(sim_ds):
    """The issue's "must show": real images (the training split) against the test split score as the real-vs-real
    benchmark does; the same images with each channel shuffled among the images of their class (every channel's
    own distribution per class unchanged) score clearly worse, for every shuffle and resampling seed."""
    ds = sim_ds
    x, y = np.asarray(ds.images), ds.label_index()
    te, tr = ds.split_indices("test"), ds.split_indices("train")
    assert len(np.unique(y[tr])) >= 2 and len(te) >= 20
    groups = day_groups(ds.labels["time"].to_numpy()[te], ds.labels["event_id"].to_numpy()[te])
    for seed in range(3):
        plan = resampling_plan(len(te), len(tr), 3, seed, groups=groups, real_labels=y[te], generated_labels=y[tr])
        real, det = channel_consistency(ds, x[te], y[te], x[tr], y[tr], plan, seed=seed)
        shuffled, _ = channel_consistency(ds, x[te], y[te], shuffle_channels_within_class(x[tr], y[tr], seed),
                                          y[tr], plan, seed=seed)
        assert shuffled["value"] > 2.0 * real["value"], (seed, shuffled["value"], real["value"])
        assert real["value"] < 1.5 * real["benchmark"], (seed, real)
        assert det["shuffled"] > 2.0 * real["benchmark"], (seed, det["shuffled"], real["benchmark"])
        assert det["ratios"] == ["94A/171A", "131A/171A", "193A/171A", "211A/171A"]


def test_ratios_follow_the_channels_and_the_shuffle_keeps_each_channel():
    """Ratios are channel/171 Å in the brightest region; a shuffle within a class permutes every channel
    separately (each channel's set of images per class is unchanged) and moves every channel of a class of 3."""
    size = 32
    dn = np.ones((3, 3, size, size))
    dn[:, 0] *= 2.0  # 94A: twice 171 Å everywhere
    dn[:, 2] *= 10.0  # 193A
    dn[0, :, 14:17, 14:17] *= np.array([50.0, 5.0, 5.0])[:, None, None]  # a hot kernel: 94A up 50x, the rest 5x
    r = region_ratios(dn, ["94A", "171A", "193A"])
    assert ratio_names(["94A", "171A", "193A"]) == ["94A/171A", "193A/171A"]
    np.testing.assert_allclose(r[0], [np.log10(20.0), 1.0], atol=1e-9)  # 94/171 up tenfold at the kernel
    np.testing.assert_allclose(r[1:], [[np.log10(2), 1.0]] * 2, atol=1e-9)
    images = np.arange(5 * 2 * 4 * 4, dtype=np.float32).reshape(5, 2, 4, 4)
    labels = np.array([0, 0, 0, 1, 1])
    out = shuffle_channels_within_class(images, labels, seed=0)
    for c in range(2):
        for k in (0, 1):
            sel = labels == k
            assert sorted(out[sel, c, 0, 0]) == sorted(images[sel, c, 0, 0])
            assert np.all(out[sel, c, 0, 0] != images[sel, c, 0, 0])  # a derangement: nothing left in place
    assert ratio_names(["94A", "193A"]) == []


def test_evaluate_takes_every_channel(sim_ds, tmp_path):
    """`evaluate` on five channels: the all-channel judge and one per channel, domain features on all channels and
    per channel, the 171 Å and hot-channel referees, XC_ratios beside its benchmark and the shuffled reference,
    per-channel grids and the RGB composite; a shuffled generator scores worse than the benchmark on XC."""
    gen = _samples(sim_ds, tmp_path / "shuffled", shuffle=True)
    cfg = EvaluateConfig(repeats=2, judge_max_epochs=2, tsne_max_points=60)
    result = evaluate(sim_ds.path, gen, tmp_path / "eval", cfg)
    m = result["metrics"]
    for ch in CHANNELS:
        assert m[f"F1_judge_{ch}"]["value"] is not None and m[f"FD_domain_{ch}"]["value"] is not None
        assert json.loads((tmp_path / "eval" / f"judge_{ch}" / "judge.json").read_text())["channels"] == [ch]
    assert json.loads((tmp_path / "eval" / "judge" / "judge.json").read_text())["in_channels"] == 5
    assert {"FD_domain", "F1_judge", "F1_referee", "F1_referee_hot", "XC_ratios"} <= set(m)
    assert result["details"]["referee_hot"]["channels"] == ["94A", "131A"]
    assert result["details"]["referee"]["real_test_median_abs_error_dex"] is not None
    xc = m["XC_ratios"]
    assert xc["value"] > xc["benchmark"] and result["details"]["channels"]["shuffled"] > xc["benchmark"]
    figures = result["figures"]
    assert {"class_grid", "std_maps", "rgb_grid", "class_grid_94A", "class_grid_211A", "channel_class_grid"} <= set(figures)
    assert "class_grid_171A" not in figures  # class_grid is 171 Å's
    for rel in figures.values():
        assert (tmp_path / "eval" / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "eval" / "metrics.md").read_text()
    assert "| XC_ratios |" in md and "shuffled among the images of their class" in md
    html = build_report([tmp_path / "eval"], tmp_path / "report.html").read_text()
    assert "RGB composite" in html and "XC_ratios" in html and "94A grid" in html and "channels per class" in html
    # the next run into the same folder reuses every judge
    again = evaluate(sim_ds.path, gen, tmp_path / "eval", EvaluateConfig(repeats=1, figures=False))
    assert again["details"]["judge_94A"]["source"].startswith("reused")


def test_the_hot_referee_reads_the_flux_from_94_and_131_only(sim_ds):
    """Fitted on the training split's 94 and 131 Å, the hot referee's flux on held-out frames follows their true
    XRS-B flux; it ignores 171 Å (taken from other frames, nothing changes) and moves with the hot channels."""
    from scipy.stats import spearmanr

    real = np.asarray(sim_ds.images, dtype=np.float32)
    referee = fit_split_referee(sim_ds, real, channels=HOT_CHANNELS)
    test = sim_ds.split_indices("test")
    true = sim_ds.labels["label_flux"].to_numpy(dtype=np.float64)[test]
    _, flux = referee_classify(real[test], sim_ds, referee, HOT_CHANNELS)
    ok = np.isfinite(true) & (true > 0) & np.isfinite(flux) & (flux > 0)
    assert ok.sum() >= 10
    rho = spearmanr(np.log10(flux[ok]), np.log10(true[ok])).statistic
    assert rho > 0.6, rho
    other = np.roll(np.arange(len(test)), 1)  # each frame's channel taken from its neighbour in the test split
    cool = real[test].copy()
    cool[:, CHANNELS.index("171A")] = cool[other, CHANNELS.index("171A")]
    assert np.array_equal(referee_classify(cool, sim_ds, referee, HOT_CHANNELS)[1], flux)
    hot = real[test].copy()
    for ch in HOT_CHANNELS:
        hot[:, CHANNELS.index(ch)] = hot[other, CHANNELS.index(ch)]
    assert not np.allclose(referee_classify(hot, sim_ds, referee, HOT_CHANNELS)[1], flux)


def test_generated_channels_must_be_the_datasets(sim_ds, tmp_path):
    """Another channel order or count than the dataset's: one line naming both lists, nothing written."""
    wrong = _samples(sim_ds, tmp_path / "order", shuffle=False, channels=CHANNELS[::-1])
    line = one_line_error(cli_here("evaluate", "--real", str(sim_ds.path), "--generated", str(wrong), "--out", str(tmp_path / "e")))
    assert "channels: 211A, 193A, 171A, 131A, 94A, but the dataset" in line and "94A, 131A, 171A, 193A, 211A" in line
    fewer = _samples(sim_ds, tmp_path / "fewer", shuffle=False, n_channels=3)
    line = one_line_error(cli_here("evaluate", "--real", str(sim_ds.path), "--generated", str(fewer), "--out", str(tmp_path / "e")))
    assert "channels: 3 (94A, 131A, 171A), but the dataset has 5" in line
    assert not (tmp_path / "e").exists()


def test_augmentation_experiment_takes_every_channel(sim_ds, tmp_path):
    """The classifier of the augmentation experiment takes the five channels; a classical copy flips, turns and
    brightens every channel of an image alike, each through its own transform; other channel names are refused."""
    import torch

    from flaresynth.errors import FlaresynthError
    from flaresynth.experiments.augment import (
        AugmentConfig,
        ClassicalAugmentation,
        classical_augment,
        run_augment,
    )

    gen = _samples(sim_ds, tmp_path / "real", shuffle=False)
    result = run_augment(sim_ds.path, gen, tmp_path / "aug", AugmentConfig(seeds=1, epochs=1, layers=1, batch_size=16),
                         progress=False)
    assert result["model"]["num_channels"] == 5 and len(result["runs"]) == len(result["regimes"])
    transforms = sim_ds.transforms()
    x = torch.from_numpy(np.array(sim_ds.images[:2], dtype=np.float32))
    g = torch.Generator().manual_seed(0)
    flipped = classical_augment(x, transforms, ClassicalAugmentation(rotation_deg=0, brightness=0.5), g)
    for i in range(2):  # the same flips and brightness factor in every channel: DN/s ratios between channels kept
        dn = np.stack([t.inverse(x[i, c].numpy()) for c, t in enumerate(transforms)])
        out = np.stack([t.inverse(flipped[i, c].numpy()) for c, t in enumerate(transforms)])
        candidates = [dn, dn[:, :, ::-1], dn[:, ::-1, :], dn[:, ::-1, ::-1]]
        inside = [np.all((d > 1.01 * np.array([t.lo for t in transforms])[:, None, None]) &
                         (d < 0.99 * np.array([t.hi for t in transforms])[:, None, None]), axis=0) for d in candidates]
        factors = [np.median(out[:, m] / d[:, m], axis=1) for d, m in zip(candidates, inside)]
        spread = [np.ptp(f) / np.mean(f) for f in factors]
        assert min(spread) < 1e-3, spread  # one geometry and one factor fit all five channels
    wrong = _samples(sim_ds, tmp_path / "order", shuffle=False, channels=CHANNELS[::-1])
    with pytest.raises(FlaresynthError, match="channels: 211A, 193A, 171A, 131A, 94A, but the dataset"):
        run_augment(sim_ds.path, wrong, tmp_path / "aug2", AugmentConfig(seeds=1, epochs=1, layers=1), progress=False)
    assert not (tmp_path / "aug2").exists()
