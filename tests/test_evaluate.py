"""`flaresynth evaluate` end to end on a tiny synthetic dataset, and the judge it relies on."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pandas as pd
import pytest

from flaresynth.dataset import open_dataset, write_dataset
from flaresynth.errors import FlaresynthError
from flaresynth.evaluate import EvaluateConfig, evaluate, requested_labels
from flaresynth.labels import CLASS_BASE_FLUX, GOES_CLASSES
from flaresynth.metrics.judge import load_judge, save_judge, train_judge
from flaresynth.samples import open_samples, write_samples
from flaresynth.transforms import IntensityTransform, resample, resize

TRANSFORM = {"channel": "171A", "lo": 5.0, "hi": 3500.0}


def sun_images(labels, size, rng):
    """Toy 171 Å disks in DN/s, log-scaled: one bright blob whose peak and width grow with the class index."""
    yy, xx = np.mgrid[:size, :size] + 0.5
    c = size / 2
    disk = np.where(np.hypot(xx - c, yy - c) < 0.4 * size, 300.0, 10.0)
    out = []
    for k in labels:
        ang, rad = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.3 * size)
        bx, by, sig = c + rad * np.cos(ang), c + rad * np.sin(ang), (1.0 + 0.5 * k) * size / 32
        blob = 150 * 3.0**k * np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * sig**2))
        out.append(disk * rng.lognormal(0, 0.15, (size, size)) + blob)
    return IntensityTransform.from_dict(TRANSFORM).forward(np.array(out))[:, None]


def make_dataset(path, n_per_class=60, size=32, seed=0, sources=None):
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(5), n_per_class))
    flux = np.array([CLASS_BASE_FLUX[GOES_CLASSES[k]] * rng.uniform(1, 9) for k in labels])
    table = pd.DataFrame({
        "time": pd.date_range("2024-05-01", periods=len(labels), freq="h").strftime("%Y-%m-%dT%H:%M:%S"),
        "label": [GOES_CLASSES[k] for k in labels], "label_flux": flux,
        "split": rng.choice(["train", "val", "test"], len(labels), p=[0.6, 0.15, 0.25]),
    })
    manifest = {"scheme": "goes5", "classes": list(GOES_CLASSES), "channels": ["171A"], "transform": TRANSFORM}
    if sources:
        manifest["sources"] = sources
    return write_dataset(path, sun_images(labels, size, rng), table, manifest)


def make_samples(path, images, labels, flux=None):
    table = pd.DataFrame({"label": list(labels), "requested_flux": np.nan if flux is None else flux,
                          "seed": np.arange(len(images))})
    manifest = {"scheme": "goes5", "classes": list(GOES_CLASSES), "transform": TRANSFORM, "generator": "test"}
    return write_samples(path, images, table, manifest)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny dataset, its judge (trained once, reused by --judge) and noisy copies of its test images."""
    root = tmp_path_factory.mktemp("eval")
    ds = open_dataset(make_dataset(root / "ds"))
    judge = train_judge(ds, seed=0)
    save_judge(judge, root / "judge")
    test = ds.split_indices("test")
    rng = np.random.default_rng(1)
    noisy = np.clip(ds.images[test] + rng.normal(0, 0.05, ds.images[test].shape), -1, 1)
    make_samples(root / "noisy", noisy, ds.labels["label"].to_numpy()[test])
    return types.SimpleNamespace(root=root, ds=ds, judge=judge, test=test)


def test_judge_learns_the_toy_classes_and_round_trips(world):
    meta = world.judge.meta
    assert meta["real_test"]["f1"] > 0.8  # the toy classes are separable; a broken judge would sit near 0.2
    # (training time is measured in benchmarks, not asserted here)
    assert meta["training"]["n_train"] == int((world.ds.labels["split"] == "train").sum())
    loaded = load_judge(world.root / "judge")
    x = np.asarray(world.ds.images[world.test])
    np.testing.assert_array_equal(loaded.predict(x), world.judge.predict(x))
    assert loaded.meta["dataset_hash"] == world.ds.manifest["data_hash"]


def test_a_judge_trains_again_identically_from_its_seed_whatever_the_callers_threads(world):
    import torch

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        first, other = (train_judge(world.ds, seed=s, max_epochs=2) for s in (3, 4))
        assert torch.get_num_threads() == 2  # the caller's setting comes back
        torch.set_num_threads(1)
        second = train_judge(world.ds, seed=3, max_epochs=2)
    finally:
        torch.set_num_threads(threads)
    assert first.meta["training"]["torch_threads"] == 1 and first.meta["training"]["seed"] == 3
    # identical on one CPU model only: the judge records which, and torch's SIMD level there
    assert first.meta["training"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert isinstance(first.meta["training"]["cpu"], str) and first.meta["training"]["cpu"]
    a, b = first.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], v) for k, v in other.model.state_dict().items())  # another seed: another judge
    with pytest.raises(FlaresynthError, match="threads=0"):
        train_judge(world.ds, seed=3, max_epochs=1, threads=0)


def test_a_shipped_judge_is_found_only_for_its_dataset_size_seed_and_training(world, tmp_path, monkeypatch):
    """shipped_judge: the package's judge of a dataset (by data hash) at a size and seed, made as train_judge makes
    it with that epoch cap; anything else is None (the caller trains its own)."""
    from flaresynth.metrics import judge as judge_module
    from flaresynth.metrics.judge import (
        check_training_record,
        copy_judge,
        ensemble_member_path,
        shipped_judge,
    )

    size = world.judge.image_size
    first = copy_judge(world.root / "judge", tmp_path / f"{world.ds.manifest['data_hash'][:12]}-{size}px")
    monkeypatch.setattr(judge_module, "SHIPPED_JUDGES", tmp_path)
    assert shipped_judge(world.ds, size) == first
    x = np.asarray(world.ds.images[world.test])
    np.testing.assert_array_equal(load_judge(first).predict(x), world.judge.predict(x))
    assert shipped_judge(world.ds, size, seed=1) is None  # no member of seed 1
    assert shipped_judge(world.ds, size, max_epochs=3) is None  # another epoch cap: another judge
    assert shipped_judge(world.ds, 2 * size) is None
    other = open_dataset(make_dataset(tmp_path / "other", n_per_class=4, seed=5))
    assert shipped_judge(other, size) is None
    copy_judge(first, ensemble_member_path(first, 1))  # seed 0's judge in seed 1's place: refused
    assert shipped_judge(world.ds, size, seed=1) is None
    with pytest.raises(FlaresynthError, match=r"training\.seed: 0, expected 1"):
        check_training_record(world.judge.meta, 1, 40, "judge.json")
    # evaluate without --judge takes the shipped judge instead of training one, and says so
    cfg = EvaluateConfig(features=["domain"], repeats=1, figures=False, referee="off")
    result = evaluate(world.root / "ds", world.root / "noisy", tmp_path / "ev", cfg)
    assert result["details"]["judge"]["source"] == "shipped"
    assert result["metrics"]["F1_judge"]["benchmark"] == pytest.approx(world.judge.meta["real_test"]["f1"], abs=1e-12)


def test_a_judge_keeps_the_epoch_its_rule_picks_and_stops_on_it(tmp_path):
    """On toy classes drowned in noise, with a validation split: the kept epoch is the best validation loss (rule "loss") or
    F1 (rule "f1", ties by the loss) of every epoch run, the kept weights are that epoch's (their validation loss
    is recomputed), training stops `patience` epochs after it, and the two rules keep different epochs here."""
    import torch

    clear = open_dataset(make_dataset(tmp_path / "clear", n_per_class=16, seed=7))
    noisy = np.clip(clear.images + np.random.default_rng(7).normal(0, 0.3, clear.images.shape), -1, 1)
    manifest = {k: clear.manifest[k] for k in ("scheme", "classes", "channels", "transform")}
    ds = open_dataset(write_dataset(tmp_path / "faint", noisy.astype(np.float32), clear.labels, manifest))
    val = ds.split_indices("val")
    kept = {}
    for rule in ("loss", "f1"):
        judge = train_judge(ds, seed=5, max_epochs=16, patience=4, epoch_rule=rule)
        training = judge.meta["training"]
        f1 = np.array([h["f1"] for h in training["val_history"]])
        loss = np.array([h["loss"] for h in training["val_history"]])
        assert training["epoch_rule"] == rule and len(loss) == training["epochs_run"]
        top = np.flatnonzero(f1 >= f1.max() - 1e-6)
        best = int(np.argmin(loss)) if rule == "loss" else int(top[np.argmin(loss[top])])
        assert training["best_epoch"] == best + 1
        assert training["epochs_run"] in (16, best + 1 + 4)
        weights = torch.tensor(training["class_weights"], dtype=torch.float32)
        logits = torch.from_numpy(judge.logits(np.asarray(ds.images[val]))).float()
        recomputed = torch.nn.functional.cross_entropy(logits, torch.from_numpy(ds.label_index()[val]), weight=weights)
        assert float(recomputed) == pytest.approx(loss[best], abs=1e-5)
        kept[rule] = best
    assert kept["loss"] != kept["f1"], kept
    with pytest.raises(FlaresynthError, match="epoch_rule='best'"):
        train_judge(ds, seed=5, max_epochs=1, epoch_rule="best")


def test_judge_members_trained_side_by_side_are_the_judges_trained_one_after_another(world, tmp_path):
    import torch

    from flaresynth.metrics.judge import ensemble_member_path, train_judge_members

    first = tmp_path / "judge"
    lines = []
    done = train_judge_members(world.ds, None, [3, 4], first, workers=3, max_epochs=2, log=lines.append, first_seed=6)
    assert sorted(done) == [3, 4, 6] and len(lines) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["judge", "judge_seed3", "judge_seed4"]  # no staging left
    for seed in (3, 4, 6):
        member = load_judge(first if seed == 6 else ensemble_member_path(first, seed))
        alone = train_judge(world.ds, seed=seed, max_epochs=2)
        assert member.meta["training"]["seed"] == seed
        assert done[seed]["real_test_f1"] == member.meta["real_test"]["f1"]
        a, b = member.model.state_dict(), alone.model.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), seed
    with pytest.raises(FlaresynthError, match="first_seed 3 is also one of the members"):
        train_judge_members(world.ds, None, [3], tmp_path / "again", first_seed=3)


def test_cli_evaluate_end_to_end(world, tmp_path):
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                                   image_size=32, patch_size=8, projection_dim=16)).save_pretrained(tmp_path / "clip")
    Dinov2Model(Dinov2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                             patch_size=14)).save_pretrained(tmp_path / "dino")
    out = tmp_path / "EVAL"
    features = f"domain,effnet-lite0,clip:{tmp_path / 'clip'},dinov2:{tmp_path / 'dino'}"
    args = [sys.executable, "-m", "flaresynth", "evaluate", "--real", str(world.root / "ds"), "--generated",
            str(world.root / "noisy"), "--out", str(out), "--features", features, "--judge", str(world.root / "judge"),
            "--repeats", "2", "--referee", "off"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=240, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    result = json.loads((out / "metrics.json").read_text())
    names = set(result["metrics"])
    for enc in ("domain", "effnet", "clip", "dinov2"):
        for family in ("CE", "CD", "CS", "FD", "KID"):
            assert f"{family}_{enc}" in names
    for family in ("F1", "precision", "recall", "accuracy"):
        assert f"{family}_judge" in names
    assert not any(n.startswith("FID") for n in names)  # no Inception, so no "FID"
    for name, e in result["metrics"].items():
        assert e["benchmark"] is not None and np.isfinite(e["value"]), name
    assert result["details"]["encoders"]["effnet"]["encoder"]["dim"] == 1280
    assert result["details"]["judge"]["source"] == "loaded"
    md = (out / "metrics.md").read_text()
    assert "| CE_domain |" in md and "| FD_dinov2 |" in md and "| F1_judge |" in md and "Benchmark" in md
    assert "| CE_domain |" in r.stdout
    for fig in ("class_grid", "std_maps", "tsne_domain", "class_distribution"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 5000
        assert result["figures"][fig] == f"figures/{fig}.png"
    # one channel: none of the several-channel figures or the per-channel table
    assert set(result["figures"]) == {"class_grid", "std_maps", "tsne_domain", "class_distribution"}
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(f"{f}.png" for f in result["figures"])
    assert "## Per channel" not in md and "per_channel" not in result["details"]


def test_a_perfect_generator_scores_the_judge_ceiling(world, tmp_path):
    make_samples(tmp_path / "perfect", np.asarray(world.ds.images[world.test]), world.ds.labels["label"].to_numpy()[world.test])
    cfg = EvaluateConfig(features=["domain"], repeats=2, judge=str(world.root / "judge"), figures=False, referee="off")
    result = evaluate(world.root / "ds", tmp_path / "perfect", tmp_path / "ev", cfg)
    f1 = result["metrics"]["F1_judge"]
    assert f1["value"] == pytest.approx(f1["benchmark"], abs=1e-12)
    assert f1["value"] == pytest.approx(world.judge.meta["real_test"]["f1"], abs=1e-12)
    # the real test images *are* the real split here: the generated column sits near the benchmark, far below
    # strongly noisy copies (copies with the fixture's 0.05 noise are within the FD's resampling noise of it)
    rng = np.random.default_rng(2)
    images = np.asarray(world.ds.images[world.test])
    make_samples(tmp_path / "very_noisy", np.clip(images + rng.normal(0, 0.3, images.shape), -1, 1).astype(np.float32),
                 world.ds.labels["label"].to_numpy()[world.test])
    noisy = evaluate(world.root / "ds", tmp_path / "very_noisy", tmp_path / "ev2", cfg)
    fd = result["metrics"]["FD_domain"]
    assert fd["value"] < fd["benchmark"] + 2 * fd["benchmark_std"]
    assert fd["value"] + 2 * fd["std"] < noisy["metrics"]["FD_domain"]["value"]


def test_the_judges_ensemble_averages_probabilities_not_votes():
    """Two of three judges lean weakly to class 0, one is sure of class 1: mean probabilities pick 1, a vote 0."""
    from flaresynth.metrics.judge import ensemble_predict, ensemble_probabilities

    def judge(row):
        return types.SimpleNamespace(logits=lambda images, batch_size=256: np.tile(np.log(row), (len(images), 1)))

    judges = [judge([0.55, 0.45]), judge([0.55, 0.45]), judge([0.02, 0.98])]
    np.testing.assert_allclose(ensemble_probabilities(judges, np.zeros((2, 1, 4, 4))), [[0.373333, 0.626667]] * 2, atol=1e-6)
    np.testing.assert_array_equal(ensemble_predict(judges, np.zeros((2, 1, 4, 4))), [1, 1])
    np.testing.assert_array_equal(ensemble_predict(judges[:1], np.zeros((2, 1, 4, 4))), [0, 0])  # one judge: its own


def test_an_ensemble_of_judges_scores_with_their_mean_probabilities(world, tmp_path):
    """--judges 3: two more judges (seeds 1, 2) beside --judge PATH, the ensemble's F1 from their mean softmax
    (recomputed here with sklearn from the saved judges), each judge's own F1 in the details, reuse on a rerun."""
    import shutil

    from scipy.special import softmax
    from sklearn.metrics import f1_score

    shutil.copytree(world.root / "judge", tmp_path / "judge")
    cfg = EvaluateConfig(features=["domain"], repeats=1, judge=str(tmp_path / "judge"), figures=False, referee="off",
                         judges=3)
    result = evaluate(world.root / "ds", world.root / "noisy", tmp_path / "ev", cfg)
    judges = [load_judge(tmp_path / name) for name in ("judge", "judge_seed1", "judge_seed2")]
    assert [j.meta["training"]["seed"] for j in judges] == [0, 1, 2]
    assert not np.array_equal(judges[0].logits(world.ds.images[world.test]), judges[1].logits(world.ds.images[world.test]))
    y = world.ds.label_index()[world.test]
    gen = np.asarray(open_samples(world.root / "noisy").images)

    def ensemble_f1(images):
        pred = np.mean([softmax(j.logits(images), axis=1) for j in judges], axis=0).argmax(1)
        return f1_score(y, pred, labels=np.unique(y), average="macro", zero_division=0)

    entry = result["metrics"]["F1_judge_ensemble"]
    assert entry["value"] == pytest.approx(ensemble_f1(gen), abs=1e-12)
    assert entry["benchmark"] == pytest.approx(ensemble_f1(np.asarray(world.ds.images[world.test])), abs=1e-12)
    members = result["details"]["judge_ensemble"]["judges"]
    assert [m["seed"] for m in members] == [0, 1, 2] and [m["source"] for m in members] == ["loaded", "trained", "trained"]
    assert members[0]["f1_generated"] == pytest.approx(result["metrics"]["F1_judge"]["value"], abs=1e-12)
    for m, j in zip(members, judges, strict=True):
        assert m["f1_generated"] == pytest.approx(f1_score(y, j.predict(gen), labels=np.unique(y), average="macro",
                                                           zero_division=0), abs=1e-12)
    assert "F1_judge_ensemble" in (tmp_path / "ev" / "metrics.md").read_text()
    # FD_domain in every judge's features, on the same resamplings: the first judge's is FD_domain itself
    per_judge = result["details"]["FD_domain_judges"]
    assert [j["seed"] for j in per_judge] == [0, 1, 2]
    assert per_judge[0]["value"] == pytest.approx(result["metrics"]["FD_domain"]["value"], rel=1e-12)
    assert per_judge[0]["benchmark"] == pytest.approx(result["metrics"]["FD_domain"]["benchmark"], rel=1e-12)
    assert len({j["value"] for j in per_judge}) == 3  # each judge's own features
    fd_ens = result["metrics"]["FD_domain_ensemble"]
    assert fd_ens["value"] == pytest.approx(np.mean([j["value"] for j in per_judge]), rel=1e-12)
    assert fd_ens["benchmark"] == pytest.approx(np.mean([j["benchmark"] for j in per_judge]), rel=1e-12)
    assert all(j["ratio"] == pytest.approx(j["value"] / j["benchmark"]) for j in per_judge)
    # into the evaluation folder itself (no --judge): trained there once, reused by the next run
    cfg_here = EvaluateConfig(features=["domain"], repeats=1, figures=False, referee="off", judges=2)
    first = evaluate(world.root / "ds", world.root / "noisy", tmp_path / "ev2", cfg_here)
    assert (tmp_path / "ev2" / "judge_seed1" / "judge.json").is_file()
    again = evaluate(world.root / "ds", world.root / "noisy", tmp_path / "ev2", cfg_here)
    assert [m["source"][:6] for m in again["details"]["judge_ensemble"]["judges"]] == ["reused"] * 2
    assert again["metrics"]["F1_judge_ensemble"] == first["metrics"]["F1_judge_ensemble"]
    with pytest.raises(FlaresynthError, match="--judges 0"):
        evaluate(world.root / "ds", world.root / "noisy", tmp_path / "ev3", EvaluateConfig(judges=0))


def test_flux_requests_at_another_size_bring_the_real_images_to_it(world, tmp_path):
    test = world.test
    small = resample(world.ds.images[test], world.ds.transform(), 16)
    # the documented path: inverse transform to DN/s, area resize, forward
    t = world.ds.transform()
    np.testing.assert_allclose(small, t.forward(resize(t.inverse(np.asarray(world.ds.images[test])), 16)), atol=1e-6)
    flux = world.ds.labels["label_flux"].to_numpy()[test]
    labels = world.ds.labels["label"].to_numpy()[test].copy()
    labels[:3] = "A" if labels[0] != "A" else "B"  # wrong labels: the requested flux must win
    make_samples(tmp_path / "flux16", small, labels, flux=flux)
    gs = open_samples(tmp_path / "flux16")
    y, notes = requested_labels(gs, world.ds.classes, world.ds.scheme)
    np.testing.assert_array_equal(y, world.ds.label_index()[test])
    assert notes["from_requested_flux"] == len(test) and notes["label_flux_disagree"] >= 1
    out = tmp_path / "ev16"
    result = evaluate(world.root / "ds", tmp_path / "flux16", out,
                      EvaluateConfig(features=["domain"], repeats=1, figures=False, referee="off"))
    assert result["real"]["evaluated_at_size"] == 16 and result["real"]["image_size"] == 32
    assert any("16 px" in n for n in result["notes"]) and any("requested_flux" in n for n in result["notes"])
    judge_meta = json.loads((out / "judge" / "judge.json").read_text())  # trained here, at 16 px
    assert judge_meta["image_size"] == 16 and result["details"]["judge"]["source"] == "trained"
    # a second run into the same folder reuses that judge; the old judge at 32 px is refused at 16 px
    again = evaluate(world.root / "ds", tmp_path / "flux16", out,
                     EvaluateConfig(features=["domain"], repeats=1, figures=False, referee="off"))
    assert again["details"]["judge"]["source"].startswith("reused")
    assert again["metrics"]["F1_judge"]["value"] == result["metrics"]["F1_judge"]["value"]
    with pytest.raises(FlaresynthError, match="image_size"):
        evaluate(world.root / "ds", tmp_path / "flux16", tmp_path / "ev16b",
                 EvaluateConfig(features=["domain"], repeats=1, figures=False, judge=str(world.root / "judge")))


def test_images_without_a_requested_class_count_only_in_the_distribution_metrics(world, tmp_path):
    labels = world.ds.labels["label"].to_numpy()[world.test].astype(object)
    labels[:10] = ""
    make_samples(tmp_path / "part", np.asarray(world.ds.images[world.test]), labels)
    cfg = EvaluateConfig(features=["domain"], repeats=1, judge=str(world.root / "judge"), figures=False, referee="off")
    result = evaluate(world.root / "ds", tmp_path / "part", tmp_path / "ev", cfg)
    assert result["details"]["judge"]["generated"]["n"] == len(world.test) - 10
    # half B is made of whole days, so it holds about (not exactly) half of the real split
    assert result["details"]["encoders"]["domain"]["clusters"]["n_evaluated"] == result["resampling"]["evaluated_size"]
    assert result["resampling"]["grouped"] and result["resampling"]["evaluated_size"] > len(world.test) // 3
    assert any("10 generated images have no requested class" in n for n in result["notes"])
    assert result["metrics"]["FD_domain"]["std"] is None  # one resampling: no spread to report
    # no requested class at all (an unconditional generator): --judges 2 trains no second judge, says so
    make_samples(tmp_path / "none", np.asarray(world.ds.images[world.test]), np.full(len(world.test), "", object))
    cfg_two = EvaluateConfig(features=["domain"], repeats=1, figures=False, referee="off", judges=2)
    bare = evaluate(world.root / "ds", tmp_path / "none", tmp_path / "ev_none", cfg_two)
    assert (tmp_path / "ev_none" / "judge").is_dir() and not (tmp_path / "ev_none" / "judge_seed1").exists()
    assert "judge_ensemble" not in bare["details"] and "F1_judge_ensemble" not in bare["metrics"]
    assert "FD_domain_judges" not in bare["details"] and "FD_domain_ensemble" not in bare["metrics"]
    assert any("--judges 2: no generated image has a requested class" in n for n in bare["notes"])


def test_bad_inputs_are_one_line_errors(world, tmp_path):
    other = open_dataset(make_dataset(tmp_path / "other", n_per_class=8, seed=5))
    cfg = EvaluateConfig(features=["domain"], repeats=1, figures=False, judge=str(world.root / "judge"))
    with pytest.raises(FlaresynthError, match="dataset_hash"):
        evaluate(other.path, world.root / "noisy", tmp_path / "ev", cfg)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("precious")
    with pytest.raises(FlaresynthError, match="not an evaluation folder"):
        evaluate(world.root / "ds", world.root / "noisy", tmp_path / "busy", cfg)
    assert (tmp_path / "busy" / "thesis.tex").read_text() == "precious"
    with pytest.raises(FlaresynthError, match="--repeats"):
        evaluate(world.root / "ds", world.root / "noisy", tmp_path / "ev", EvaluateConfig(repeats=0))
    with pytest.raises(FlaresynthError, match="--referee"):
        evaluate(world.root / "ds", world.root / "noisy", tmp_path / "ev", EvaluateConfig(referee="maybe"))


def test_referee_f1_from_the_simulated_suns_flux_estimator(world, tmp_path):
    cfg = EvaluateConfig(features=["domain"], repeats=1, figures=False, judge=str(world.root / "judge"), referee="on")
    result = evaluate(world.root / "ds", world.root / "noisy", tmp_path / "ev", cfg)
    for family in ("F1", "precision", "recall"):
        e = result["metrics"][f"{family}_referee"]
        assert 0.0 <= e["value"] <= 1.0 and 0.0 <= e["benchmark"] <= 1.0
    # auto: the toy dataset's image store is not a simulated zarr, so the referee is skipped with a note
    auto = evaluate(world.root / "ds", world.root / "noisy", tmp_path / "ev",
                    EvaluateConfig(features=["domain"], repeats=1, figures=False, judge=str(world.root / "judge")))
    assert "F1_referee" not in auto["metrics"] and any("referee skipped" in n for n in auto["notes"])


def test_simulated_store_is_detected_from_its_zarr_attribute(tmp_path):
    import zarr

    from flaresynth.evaluate import _simulated_source

    zarr.open_group(str(tmp_path / "sim.zarr"), mode="w", zarr_format=2).attrs["flaresynth_simulated"] = True
    zarr.open_group(str(tmp_path / "real.zarr"), mode="w", zarr_format=2)
    as_ds = lambda p: types.SimpleNamespace(manifest={"sources": {"images": str(p)}})  # noqa: E731
    assert _simulated_source(as_ds(tmp_path / "sim.zarr"))
    assert not _simulated_source(as_ds(tmp_path / "real.zarr"))
    assert not _simulated_source(as_ds(tmp_path / "missing.zarr"))
    assert not _simulated_source(types.SimpleNamespace(manifest={}))
    # a relative path, as `dataset build --sdoml sim.zarr` records it, found beside the dataset from another folder
    beside = types.SimpleNamespace(manifest={"sources": {"images": "sim.zarr"}}, path=tmp_path / "ds")
    assert _simulated_source(beside)
    assert not _simulated_source(types.SimpleNamespace(manifest={"sources": {"images": "real.zarr"}}, path=tmp_path / "ds"))


def test_the_real_features_of_a_pretrained_encoder_are_encoded_once_per_dataset(world, tmp_path, monkeypatch):
    """With a feature cache, a second generator's evaluation encodes only its own images with effnet-lite0 and
    gets the metrics the first got by encoding them; the judge's domain features are never cached."""
    from flaresynth.metrics.features import PretrainedEncoder

    encoded = []
    encode = PretrainedEncoder.encode
    monkeypatch.setattr(PretrainedEncoder, "encode", lambda self, images, batch_size=64: (encoded.append(len(images)),
                                                                                         encode(self, images, batch_size))[1])
    cache = tmp_path / "cache"
    cfg = EvaluateConfig(features=["domain", "effnet-lite0"], repeats=1, judge=str(world.root / "judge"),
                         figures=False, referee="off", feature_cache=str(cache))
    n_gen = len(open_samples(world.root / "noisy").images)
    first = evaluate(world.root / "ds", world.root / "noisy", tmp_path / "ev1", cfg)
    n_real = encoded[0]
    assert encoded == [n_real, n_gen] and [p.name[:7] for p in cache.iterdir()] == ["effnet-"]
    second = evaluate(world.root / "ds", world.root / "noisy", tmp_path / "ev2", cfg)
    assert encoded == [n_real, n_gen, n_gen]  # the real split came from the cache
    for name in ("FD_effnet", "FD_domain"):  # the first run encoded the real split, the second read it back
        assert first["metrics"][name] == second["metrics"][name], name
