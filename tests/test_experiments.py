"""Application experiments: scores, class filling, the DeiT loop, and both CLI commands end to end.

The tiny dataset is made here: 16×16 images of a noisy dark disk-less background; class ``medium`` adds a moderate
Gaussian blob, ``high`` a bright one, so a classifier can learn the classes. Train counts are imbalanced
(40 / 12 / 4) like the Sun's. ``flare24`` is True for ``high`` images.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from flaresynth.cli import main
from flaresynth.dataset import open_dataset, write_dataset
from flaresynth.errors import FlaresynthError
from flaresynth.experiments import stats
from flaresynth.experiments.augment import (
    REGIME_TITLES,
    REGIMES,
    AugmentConfig,
    ClassicalAugmentation,
    GeneratedPool,
    classical_augment,
    draw,
    fill_counts,
    make_training_sets,
    run_augment,
)
from flaresynth.experiments.classifier import (
    ClassifierSpec,
    TrainSettings,
    build_classifier,
    predict,
    resolve_device,
    train_classifier,
)
from flaresynth.experiments.forecast import ForecastConfig, positives_to_add, run_forecast
from flaresynth.samples import open_samples, write_samples
from flaresynth.transforms import IntensityTransform, resize

CLASSES = ["low", "medium", "high"]
TRANSFORM = {"channel": "171A", "lo": 5.0, "hi": 3500.0}
COUNTS = {"train": [40, 12, 4], "val": [6, 4, 3], "test": [8, 6, 4]}
TINY = dict(layers=1, hidden_size=32, heads=2, intermediate_size=64, patch_size=4, lr=3e-3, batch_size=16)


def make_images(cls: int, n: int, rng, size: int = 16) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    out = np.empty((n, 1, size, size), np.float32)
    level = (0.0, 0.8, 1.6)[cls]
    for i in range(n):
        img = -0.6 + 0.08 * rng.standard_normal((size, size))
        if level:
            cy, cx = rng.integers(size // 4, size - size // 4, 2)
            img += level * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (8.0 * (size / 16) ** 2))
        out[i, 0] = np.clip(img, -1, 1)
    return out


def make_dataset(path, counts=COUNTS, seed=0, forecast=True, unknown=0):
    rng = np.random.default_rng(seed)
    images, rows = [], []
    t = pd.Timestamp("2024-05-01")
    for split, per in counts.items():
        for c, n in enumerate(per):
            images.append(make_images(c, n, rng))
            for _ in range(n):
                t += pd.Timedelta("1h")
                flux = (5e-7, 3e-6, 4e-5)[c]
                row = {"time": t.isoformat(), "label": CLASSES[c], "label_flux": flux, "split": split}
                if forecast:
                    row["peak24_flux"] = flux * 1.5
                    row["flare24"] = c == 2
                rows.append(row)
    labels = pd.DataFrame(rows)
    if unknown:
        labels.loc[labels.index[-unknown:], "peak24_flux"] = np.nan
        labels.loc[labels.index[-unknown:], "flare24"] = False
    write_dataset(path, np.concatenate(images), labels,
                  {"scheme": "activity3", "classes": CLASSES, "channels": ["171A"], "transform": TRANSFORM})
    return path


def make_samples(path, per_class=20, seed=1, classes=CLASSES, size=16):
    rng = np.random.default_rng(seed)
    images = np.concatenate([make_images(c, per_class, rng, size) for c in range(3)])
    table = pd.DataFrame({"label": np.repeat(classes, per_class), "requested_flux": np.nan,
                          "seed": np.arange(3 * per_class)})
    write_samples(path, images, table, {"classes": list(classes), "scheme": "activity3", "transform": TRANSFORM,
                                        "generator": "test"})
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp")
    return {"ds": make_dataset(root / "ds"), "gen": make_samples(root / "gen"), "root": root}


# ------------------------------------------------------------------------------------------------ scores
def test_tss_hss_match_hand_computed_values():
    # TP 20, FP 10, FN 5, TN 65
    assert stats.tss(20, 10, 5, 65) == pytest.approx(20 / 25 - 10 / 75)  # 0.6667
    assert stats.hss(20, 10, 5, 65) == pytest.approx(2 * (20 * 65 - 5 * 10) / (25 * 70 + 30 * 75))  # 0.625
    assert stats.hss(20, 10, 5, 65) == pytest.approx(0.625)
    y_true = np.r_[np.ones(25), np.zeros(75)].astype(bool)
    y_pred = np.r_[np.ones(20), np.zeros(5), np.ones(10), np.zeros(65)].astype(bool)
    s = stats.forecast_scores(y_true, y_pred)
    assert s["contingency"] == {"tp": 20, "fp": 10, "fn": 5, "tn": 65}
    assert s["tss"] == pytest.approx(0.6666667) and s["climatological_rate"] == 0.25
    # perfect, always-no, and undefined cases
    assert stats.tss(5, 0, 0, 5) == 1 and stats.hss(5, 0, 0, 5) == 1
    assert stats.tss(0, 0, 5, 95) == 0 and stats.hss(0, 0, 5, 95) == 0
    assert stats.tss(0, 3, 0, 7) is None  # no positive in the test split
    assert stats.hss(0, 0, 0, 10) is None


def test_classification_scores_match_hand_computed_values():
    y_true = [0, 0, 0, 0, 1, 1, 2, 2]
    y_pred = [0, 0, 1, 3, 1, 0, 2, 2]  # class D (3) never occurs but is predicted once
    s = stats.classification_scores(y_true, y_pred, ["A", "B", "C", "D"])
    assert s["confusion"] == [[2, 1, 0, 1], [1, 1, 0, 0], [0, 0, 2, 0], [0, 0, 0, 0]]
    assert s["per_class_accuracy"] == {"A": 0.5, "B": 0.5, "C": 1.0, "D": None}
    assert s["balanced_accuracy"] == pytest.approx(2 / 3)
    assert s["macro_f1"] == pytest.approx((4 / 7 + 0.5 + 1.0) / 3)
    assert s["accuracy"] == pytest.approx(5 / 8)
    assert stats.balanced_accuracy(y_true, y_pred, 4) == pytest.approx(2 / 3)


def test_duplicating_every_frame_of_an_event_does_not_narrow_the_grouped_interval():
    """Copies of an event's frames are no new evidence: the grouped interval stays put, a frame-level one narrows."""
    rng = np.random.default_rng(0)
    n_events = 30
    sizes = rng.integers(1, 6, n_events)
    groups = np.repeat(np.arange(n_events), sizes)
    y = np.repeat(rng.random(n_events) < 0.4, sizes).astype(int)
    pred = np.where(rng.random(len(y)) < 0.75, y, 1 - y)
    fn = stats.seed_mean(lambda yt, yp: stats.forecast_scores(yt, yp)["tss"], y, [pred])
    once = stats.grouped_bootstrap(fn, groups, n_boot=400, seed=1)
    fn2 = stats.seed_mean(lambda yt, yp: stats.forecast_scores(yt, yp)["tss"], np.r_[y, y], [np.r_[pred, pred]])
    twice = stats.grouped_bootstrap(fn2, np.r_[groups, groups], n_boot=400, seed=1)
    assert twice["n_groups"] == once["n_groups"] == n_events
    assert twice["high"] - twice["low"] == pytest.approx(once["high"] - once["low"], rel=1e-9)
    # the frame-level bootstrap (every frame its own group) is fooled by the copies
    frames = stats.grouped_bootstrap(fn, np.arange(len(y)), n_boot=400, seed=1)
    frames2 = stats.grouped_bootstrap(fn2, np.arange(2 * len(y)), n_boot=400, seed=1)
    assert frames2["high"] - frames2["low"] < 0.85 * (frames["high"] - frames["low"])
    assert stats.intervals_overlap(once, twice) is True
    assert stats.intervals_overlap({"low": 0.1, "high": 0.2}, {"low": 0.3, "high": 0.4}) is False


def test_threshold_is_chosen_for_the_best_tss_and_the_probabilistic_scores():
    y = np.array([0, 0, 0, 1, 1, 0, 1, 0])
    p = np.array([0.1, 0.2, 0.3, 0.35, 0.8, 0.4, 0.9, 0.05])
    thr, best = stats.best_tss_threshold(y, p)
    assert thr == pytest.approx(0.35) and best == pytest.approx(1.0 - 1 / 5)
    s = stats.probabilistic_scores(y, p, 0.5)
    assert s["contingency"] == {"tp": 2, "fp": 0, "fn": 1, "tn": 5} and s["tss_max"] == pytest.approx(0.8)
    c = 3 / 8
    assert s["bss"] == pytest.approx(1 - np.mean((p - y) ** 2) / (c * (1 - c)))
    assert sum(s["reliability"]["n"]) == 8 and s["roc"]["auc"] == pytest.approx(14 / 15)


def test_mean_std_over_seeds():
    assert stats.mean_std([1.0, 2.0, 3.0, None]) == {"mean": 2.0, "std": 1.0, "n": 3}
    assert stats.mean_std([0.4]) == {"mean": 0.4, "std": 0.0, "n": 1}
    assert stats.mean_std([None, None]) == {"mean": None, "std": None, "n": 0}


def test_positives_to_add_reaches_the_fraction_with_the_fewest_images():
    assert positives_to_add(10, 90, 0.5) == 80
    assert positives_to_add(10, 90, 0.25) == 20
    n = positives_to_add(10, 90, 0.3)
    assert (10 + n) / (100 + n) >= 0.3 > (10 + n - 1) / (100 + n - 1)
    assert positives_to_add(60, 40, 0.5) == 0
    with pytest.raises(FlaresynthError, match="positive-fraction"):
        positives_to_add(1, 1, 1.0)


# ------------------------------------------------------------------------------------------ filling classes
def test_draw_uses_each_item_before_reusing_any():
    rng = np.random.default_rng(0)
    few = draw(np.arange(10, 15), 3, rng)
    assert len(set(few)) == 3 and set(few) <= set(range(10, 15))
    many = draw(np.arange(5), 12, np.random.default_rng(1))
    counts = np.bincount(many, minlength=5)
    assert counts.sum() == 12 and counts.min() == 2 and counts.max() == 3
    assert np.array_equal(draw(np.arange(5), 12, np.random.default_rng(1)), many)
    assert list(fill_counts([40, 12, 4], 30)) == [0, 18, 26]


@pytest.mark.parametrize("target", [None, 30])
def test_regimes_share_the_real_images_and_hit_the_counts(folders, target):
    ds, gs = open_dataset(folders["ds"]), open_samples(folders["gen"])
    y = ds.label_index()
    train = ds.split_indices("train")
    real = np.bincount(y[train], minlength=3)
    target = target or int(real.max())
    needed = fill_counts(real, target)
    pool = GeneratedPool(gs, ds)
    sets = make_training_sets(ds, train, y[train], needed, REGIMES, seed=3, pool=pool, pool_labels=pool.labels)
    n_real = len(train)
    for regime, ts in sets.items():
        # the same real images, in the same order, first in every regime
        assert np.array_equal(ts.images[:n_real], np.asarray(ds.images[train]))
        assert np.array_equal(ts.source[:n_real], train) and np.array_equal(ts.labels[:n_real], y[train])
        counts = np.bincount(ts.labels, minlength=3)
        if regime in ("real", "weighted"):
            assert list(counts) == list(real)
            assert (ts.class_weights is None) == (regime == "real")
        else:  # filled exactly to the target; a class above it keeps all its real images
            assert list(counts) == [max(int(r), target) for r in real] and ts.class_weights is None
    # the weighted regime: inverse class frequency, so every class weighs the same in the loss
    w = sets["weighted"].class_weights
    assert np.allclose(w * real, len(train) / 3)
    # mixed: half of each class's added images generated, half classical, the same total as the others
    mixed = sets["mixed"]
    for c in range(3):
        n_gen = int(((mixed.origin == 2) & (mixed.labels == c)).sum())
        n_cla = int(((mixed.origin == 1) & (mixed.labels == c)).sum())
        assert n_gen + n_cla == needed[c] and abs(n_gen - n_cla) <= 1
    gen = sets["generated"]
    added = gen.origin == 2
    assert np.array_equal(pool.labels[gen.source[added]], gen.labels[added])  # each fills its requested class
    assert np.array_equal(gen.images[added], np.asarray(gs.images)[gen.source[added]])
    cla = sets["classical"]
    added = cla.origin == 1
    assert np.isin(cla.source[added], train).all()  # copies of training images only: never val or test
    assert np.array_equal(y[cla.source[added]], cla.labels[added])
    assert not np.array_equal(cla.images[added], np.asarray(ds.images)[cla.source[added]])
    assert (cla.images >= -1).all() and (cla.images <= 1).all()
    # another seed draws other images, in the same numbers
    other = make_training_sets(ds, train, y[train], needed, ["generated"], seed=4, pool=pool, pool_labels=pool.labels)
    assert np.array_equal(np.bincount(other["generated"].labels), np.bincount(gen.labels))
    assert not np.array_equal(other["generated"].source, gen.source)


def test_classical_augmentation_is_physical_and_bounded():
    t = IntensityTransform.from_dict(TRANSFORM)
    x = torch.from_numpy(make_images(2, 6, np.random.default_rng(0)))
    g = torch.Generator().manual_seed(0)
    same = classical_augment(x, t, ClassicalAugmentation(flips=False, rotation_deg=0, brightness=0), g)
    assert torch.allclose(same, x, atol=1e-5)  # the DN/s round trip alone changes nothing
    bright = classical_augment(x, t, ClassicalAugmentation(flips=False, rotation_deg=0, brightness=0.2), g)
    # a brightness factor f is a constant shift 2 log10(f) / log10(hi / lo) in model space (away from the clip)
    for i in range(6):
        inside = x[i].abs() < 0.9
        shift = (bright[i] - x[i])[inside]
        assert torch.allclose(shift, shift[:1].expand_as(shift), atol=1e-5)
        assert 0 < shift.abs().max() <= 2 * np.log10(1.2) / np.log10(3500 / 5) + 1e-6
    flipped = classical_augment(x, t, ClassicalAugmentation(flips=True, rotation_deg=0, brightness=0), g)
    for i in range(6):
        variants = [x[i], x[i].flip(-1), x[i].flip(-2), x[i].flip(-1).flip(-2)]
        assert any(torch.allclose(flipped[i], v, atol=1e-5) for v in variants)
    flat = torch.zeros(4, 1, 16, 16)
    turned = classical_augment(flat, t, ClassicalAugmentation(flips=False, rotation_deg=10, brightness=0), g)
    assert torch.allclose(turned[:, :, 6:10, 6:10], flat[:, :, 6:10, 6:10], atol=1e-4)  # centre unchanged
    assert (turned[:, 0, [0, 0, -1, -1], [0, -1, 0, -1]] < -1e-3).any(dim=1).all()  # dark sky enters a corner
    assert turned.min() >= -1 and turned.max() <= 1


def test_generated_images_of_another_size_are_resized_through_dn(folders, tmp_path):
    big = make_samples(tmp_path / "big", per_class=2, size=32)
    ds, gs = open_dataset(folders["ds"]), open_samples(big)
    pool = GeneratedPool(gs, ds)
    t = ds.transform()
    expected = t.forward(resize(t.inverse(np.asarray(gs.images[[1, 4]])), 16))
    assert np.allclose(pool.take(np.array([1, 4])), expected)
    assert any("resized from 32 to 16 px" in n for n in pool.notes)


# ------------------------------------------------------------------------------------------- the classifier
def test_training_is_reproducible_and_keeps_the_best_val_epoch(folders):
    ds = open_dataset(folders["ds"])
    y = ds.label_index()
    tr, va, te = (ds.split_indices(s) for s in ("train", "val", "test"))
    x = np.asarray(ds.images)
    spec = ClassifierSpec(16, 1, 3, patch_size=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64)
    settings = TrainSettings(epochs=4, batch_size=16, lr=3e-3)
    results, preds, weights = [], [], []
    for seed in (5, 5, 6):
        model = build_classifier(spec, seed)
        results.append(train_classifier(model, x[tr], y[tr], x[va], y[va], settings, seed=seed))
        preds.append(predict(model, x[te]))
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1]) and np.array_equal(preds[0], preds[1])
    assert results[0].history == results[1].history
    assert not torch.equal(weights[0], weights[2])
    scores = [h["val_score"] for h in results[0].history]
    assert results[0].best_epoch == 1 + int(np.argmax(scores))  # the first of the best
    with pytest.raises(FlaresynthError, match="patch-size"):
        build_classifier(ClassifierSpec(16, 1, 3, patch_size=5))


def test_cuda_request_without_a_gpu_is_a_one_line_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(FlaresynthError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("cpu").type == "cpu"


# ------------------------------------------------------------------------------------------------- end to end
def _run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    captured = capsys.readouterr()
    return exc.value.code, captured


def test_augment_cli_end_to_end_and_reproducible(folders, capsys):
    out = folders["root"] / "aug_cli"
    args = ["experiment", "augment", "--data", str(folders["ds"]), "--generated", str(folders["gen"]), "--out", str(out),
            "--seeds", "2", "--epochs", "3", "--layers", "1", "--lr", "1e-3", "--batch-size", "16", "--no-progress"]
    code, captured = _run_cli(args, capsys)
    assert code == 0, captured.err
    md = captured.out
    assert all(REGIME_TITLES[r] in md for r in REGIMES) and "| medium (6; " in md
    assert {p.name for p in out.iterdir()} == {"results.json", "results.md", "per_class_accuracy.png", "confusion.png"}
    result = json.loads((out / "results.json").read_text())
    n_test = sum(COUNTS["test"])
    assert result["target_per_class"] == 40
    for regime in REGIMES:
        info = result["regimes"][regime]
        assert info["n_real"] == sum(COUNTS["train"])
        if regime not in ("real", "weighted"):
            assert info["total"] == {"low": 40, "medium": 40, "high": 40}
    assert len(result["runs"]) == 2 * len(REGIMES)
    # intervals from the grouped bootstrap (the toy test split's units are its UTC days), event counts per class
    assert result["bootstrap"]["n_units"] == len({r["time"][:10] for _, r in open_dataset(folders["ds"]).labels.iterrows()
                                                  if r["split"] == "test"})
    assert set(result["summary"]["real"]["intervals"]) == {"balanced_accuracy", "macro_f1", "per_class_f1"}
    assert set(result["data"]["independent_units_test"]) == set(CLASSES)
    for run in result["runs"]:  # every run is scored on the same real test images, nothing else
        assert run["scores"]["support"] == dict(zip(CLASSES, COUNTS["test"]))
        assert np.sum(run["scores"]["confusion"]) == n_test
    s = result["summary"]["generated"]["per_class_accuracy"]["high"]
    values = [r["scores"]["per_class_accuracy"]["high"] for r in result["runs"] if r["regime"] == "generated"]
    assert s["mean"] == pytest.approx(np.mean(values)) and s["n"] == 2
    # same seeds through the library: the same numbers
    cfg = AugmentConfig(seeds=2, epochs=3, layers=1, lr=1e-3, batch_size=16)
    again = run_augment(folders["ds"], folders["gen"], folders["root"] / "aug_lib", cfg, progress=False)
    assert [r["scores"] for r in again["runs"]] == [r["scores"] for r in result["runs"]]
    # rerunning into an experiment folder replaces it; into another folder is refused
    assert _run_cli(args, capsys)[0] == 0
    code, captured = _run_cli([*args[:6], "--out", str(folders["ds"]), *args[8:]], capsys)
    assert code == 2 and "not an experiment folder" in captured.err


def test_generated_images_teach_the_rare_classes(folders):
    cfg = AugmentConfig(seeds=2, epochs=12, **TINY)
    result = run_augment(folders["ds"], folders["gen"], folders["root"] / "aug_learn", cfg, progress=False)
    # chance is 1/3: the balanced regimes must have learnt the visible feature
    assert result["summary"]["generated"]["balanced_accuracy"]["mean"] > 0.55
    assert result["summary"]["classical"]["balanced_accuracy"]["mean"] > 0.45
    # the rare class the real-only classifier misses is found once generated images fill it
    acc = {r: result["summary"][r]["per_class_accuracy"]["medium"]["mean"] for r in REGIMES}
    assert acc["generated"] >= acc["real"] + 0.2


def make_forecast_dataset(path, counts=None, seed=0, size=16):
    """A forecast dataset: issue times every 6 h; positives (a bright blob) come in pairs before one flare."""
    counts = counts or {"train": [40, 8], "val": [6, 4], "test": [10, 6]}
    rng = np.random.default_rng(seed)
    images, rows = [], []
    t = pd.Timestamp("2024-05-01")
    flare = 0
    for split, (n_neg, n_pos) in counts.items():
        images += [make_images(0, n_neg, rng, size), make_images(2, n_pos, rng, size)]
        for i in range(n_neg + n_pos):
            t += pd.Timedelta("6h")
            positive = i >= n_neg
            if positive and (i - n_neg) % 2 == 0:
                flare += 1
            rows.append({"time": t.isoformat(), "label": "flare24" if positive else "quiet24",
                         "label_flux": 2e-5 if positive else 2e-6, "flare24": positive, "split": split,
                         "next_flare_id": f"flare{flare}" if positive else "", "event_id": ""})
    write_dataset(path, np.concatenate(images), pd.DataFrame(rows),
                  {"task": "forecast", "scheme": "forecast24", "classes": ["quiet24", "flare24"], "channels": ["171A"],
                   "transform": TRANSFORM, "flux_convention": {"scale": "true", "description": "test"}})
    return path


def test_forecast_cli_end_to_end(folders, capsys):
    ds = make_forecast_dataset(folders["root"] / "fcds")
    out = folders["root"] / "fc"
    code, captured = _run_cli(["experiment", "forecast", "--data", str(ds), "--generated", str(folders["gen"]),
                               "--out", str(out), "--seeds", "2", "--epochs", "2", "--layers", "1", "--batch-size", "16",
                               "--no-progress"], capsys)
    assert code == 0, captured.err
    md = captured.out
    assert "TSS-max" in md and "Real + generated ≥M images" in md and "Real data, class-weighted loss" in md
    assert "3 independent flares" in md  # 6 test positives, two issue times before each flare
    assert {p.name for p in out.iterdir()} == {"results.json", "results.md", "forecast_skill.png", "roc_reliability.png"}
    result = json.loads((out / "results.json").read_text())
    assert set(result["summary"]) == {"real", "weighted", "classical", "generated", "mixed"}
    n_pos, n_neg = 8, 40
    for r in ("generated", "classical", "mixed"):
        assert result["regimes"][r]["added_positive"] == positives_to_add(n_pos, n_neg, 0.5) == n_neg - n_pos
    assert result["regimes"]["weighted"]["added_positive"] == 0 and result["regimes"]["weighted"]["class_weighted"]
    assert result["data"]["climatological_rate_test"] == pytest.approx(6 / 16)
    assert result["data"]["independent"]["flares_behind_test_positives"] == 3
    assert result["flux_convention"]["scale"] == "true"
    val = open_dataset(ds).split_indices("val")
    y_val = open_dataset(ds).label_index()[val]
    for run in result["runs"]:
        s = run["scores"]
        c = s["contingency"]
        assert c["tp"] + c["fn"] == 6 and sum(c.values()) == 16
        assert s["tss"] == pytest.approx(stats.tss(**c)) and s["hss"] == pytest.approx(stats.hss(**c))
        p = np.array(run["test_probability"])
        # the test split is scored at the threshold chosen on the validation split, never on the test split
        assert c["tp"] + c["fp"] == int((p >= s["threshold"]).sum())
        assert s["tss_max"] >= s["tss"] - 1e-9 and -1 <= s["tss_max"] <= 1
        assert len(y_val) == 10
    assert result["summary"]["real"]["intervals"]["tss"]["n_groups"] == result["data"]["independent"]["test_units"]


def test_forecast_without_test_positives_says_so(tmp_path):
    ds = make_forecast_dataset(tmp_path / "ds", {"train": [20, 6], "val": [4, 2], "test": [10, 0]})
    cfg = ForecastConfig(seeds=1, epochs=1, classical=False, **TINY)
    result = run_forecast(ds, tmp_path / "fc", config=cfg, progress=False)
    assert result["summary"]["real"]["tss"] == {"mean": None, "std": None, "n": 0}
    assert any("NO positive" in n for n in result["notes"])
    assert "undefined" in (tmp_path / "fc" / "results.md").read_text()


def test_classifier_runs_at_the_generators_size_unless_resizing_is_allowed(folders, tmp_path):
    from flaresynth.experiments.augment import real_at_size, working_size

    small = make_samples(tmp_path / "small", per_class=2, size=8)
    ds, gs = open_dataset(folders["ds"]), open_samples(small)
    size, notes = working_size(gs, ds, allow_resize=False)
    assert size == 8 and "generator's 8 px" in notes[0]
    x = real_at_size(ds, [0, 1], 8)
    assert x.shape == (2, 1, 8, 8)
    size, notes = working_size(gs, ds, allow_resize=True)
    assert size == 16 and "allow-resize" in notes[0]
    down_up = real_at_size(ds, [0, 1], 16, via=8)
    t = ds.transform()
    assert np.allclose(down_up, t.forward(resize(t.inverse(x[:, 0]), 16))[:, None], atol=1e-5)
    assert not np.allclose(down_up, np.asarray(ds.images[[0, 1]]))  # the real images lost their fine detail too


def test_bad_input_is_one_line(folders, tmp_path, capsys):
    base = ["--data", str(folders["ds"]), "--out", str(tmp_path / "x"), "--epochs", "1", "--seeds", "1", "--no-progress"]
    cases = []
    code, c = _run_cli(["experiment", "augment", "--generated", str(tmp_path / "nowhere"), *base], capsys)
    cases.append((code, c.err, "no such samples folder"))
    odd = make_samples(tmp_path / "odd", per_class=2, classes=["low", "medium", "huge"])
    code, c = _run_cli(["experiment", "augment", "--generated", str(odd), *base], capsys)
    cases.append((code, c.err, "manifest.json: classes: 'huge' is not a class of the dataset"))
    code, c = _run_cli(["experiment", "forecast", "--data", str(folders["ds"]), "--out", str(tmp_path / "y")], capsys)
    cases.append((code, c.err, "needs a forecast dataset"))
    fcds = make_forecast_dataset(tmp_path / "fcds")
    code, c = _run_cli(["experiment", "augment", "--generated", str(folders["gen"]), *base[2:], "--data", str(fcds)], capsys)
    cases.append((code, c.err, "needs a flare-image dataset"))
    code, c = _run_cli(["train", "--data", str(fcds), "--out", str(tmp_path / "run"), "--preset", "tiny"], capsys)
    cases.append((code, c.err, "`flaresynth train` needs a flare-image dataset"))
    big = make_samples(tmp_path / "big", per_class=2, size=32)
    code, c = _run_cli(["experiment", "augment", "--generated", str(big), *base], capsys)
    cases.append((code, c.err, "32 px, larger than the dataset's 16 px"))
    code, c = _run_cli(["experiment", "augment", "--generated", str(folders["gen"]), *base, "--patch-size", "5"], capsys)
    cases.append((code, c.err, "--patch-size 5: must divide the image size 16"))
    if not torch.cuda.is_available():
        code, c = _run_cli(["experiment", "augment", "--generated", str(folders["gen"]), *base, "--device", "cuda"], capsys)
        cases.append((code, c.err, "--device cuda: no CUDA GPU is visible"))
    for code, text, expected in cases:
        assert code == 2, text
        assert expected in text and text.strip().count("\n") == 0, text
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists() and not (tmp_path / "run").exists()


def test_runs_in_worker_processes_give_the_numbers_of_one_thread(folders):
    """--workers 2 trains the (seed, regime) runs in two one-thread processes: the same scores, in the same order,
    as one after another in a process of one thread."""
    settings = dict(seeds=2, epochs=2, **TINY)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = run_augment(folders["ds"], folders["gen"], folders["root"] / "aug_w1", AugmentConfig(**settings),
                            progress=False)
    finally:
        torch.set_num_threads(threads)
    pooled = run_augment(folders["ds"], folders["gen"], folders["root"] / "aug_w2",
                         AugmentConfig(**settings, workers=2), progress=False)
    assert [(r["seed"], r["regime"]) for r in pooled["runs"]] == [(r["seed"], r["regime"]) for r in alone["runs"]]
    assert [r["scores"] for r in pooled["runs"]] == [r["scores"] for r in alone["runs"]]
    assert pooled["settings"]["workers"] == 2
    with pytest.raises(FlaresynthError, match="--workers 0"):
        AugmentConfig(workers=0).validate()
