"""Generators with one input/output channel per AIA channel (issue 16): a 5-channel toy dataset through the latent
route (autoencoder, latent DDPM, sampling, FITS, evaluation) and the channel-count mismatches.

Module fixtures: the toy Sun in 94/131/171/193/211 Å at 64 px (each channel its own AIA transform) and in 171 Å
alone; a tiny autoencoder on each (4 steps) and a tiny discrete+embedding latent DDPM on the 5-channel one.
"""

import json

import numpy as np
import pytest
import sunpy.map
from astropy.io import fits

from flaresynth.config import RunConfig, load_preset
from flaresynth.dataset import open_dataset
from flaresynth.distill import distill
from flaresynth.errors import FlaresynthError
from flaresynth.evaluate import EvaluateConfig, _fmt, evaluate, requested_labels
from flaresynth.figures import RGB_COLUMN, channel_class_figure, channel_class_layout
from flaresynth.runs import open_run
from flaresynth.samples import open_samples
from flaresynth.sampling import build_requests, generate, sample
from flaresynth.train import train
from toy import make_dataset

CHANNELS = ("94A", "131A", "171A", "193A", "211A")


def latent_cfg(kind: str) -> RunConfig:
    d = load_preset("tiny-latent").to_dict()
    d["conditioning"]["kind"] = kind
    if kind == "discrete+embedding":
        d["conditioning"]["encoder"] = "random:8"
    return RunConfig.from_dict(d)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("mc")
    ds5 = make_dataset(root / "ds5", n=40, size=64, channels=CHANNELS)
    ds1 = make_dataset(root / "ds1", n=40, size=64)
    ae5 = train(ds5, root / "ae5", preset="autoencoder-tiny", progress=False)
    ae1 = train(ds1, root / "ae1", preset="autoencoder-tiny", progress=False)
    run5 = train(ds5, root / "run5", latent_cfg("discrete+embedding"), autoencoder=ae5, progress=False)
    s5 = sample(run5, root / "s5", per_class=2, sampler="ddim", steps=2, seed=0)
    return {"root": root, "ds5": ds5, "ds1": ds1, "ae5": ae5, "ae1": ae1, "run5": run5, "s5": s5}


def test_five_channel_latent_run_reloads_and_samples_identically(world):
    run = open_run(world["run5"], "cpu")
    assert run.image_shape == (5, 64, 64) and run.channels == list(CHANNELS)
    assert run.latent["image_channels"] == 5 and run.sample_shape == (2, 16, 16)  # the latent does not grow with C
    table = build_requests(run, per_class=1, seed=3)
    first = generate(run, table, "dpm++", 2, 1.0)
    again = generate(open_run(world["run5"], "cpu"), table, "dpm++", 2, 1.0)  # reloaded from disk
    np.testing.assert_array_equal(first, again)
    assert first.shape == (5, 5, 64, 64) and np.isfinite(first).all()
    other = generate(run, build_requests(run, per_class=1, seed=4), "dpm++", 2, 1.0)
    assert not np.array_equal(first, other)
    gs = open_samples(world["s5"])  # the samples folder: the (N, C, H, W) array and the dataset's transforms
    assert gs.images.shape == (10, 5, 64, 64) and gs.channels == list(CHANNELS)
    assert [t.channel for t in gs.transforms()] == list(CHANNELS)
    # grids: 171 Å as grid.png, one per other channel, the 211/193/171 Å composite
    pngs = {p.name for p in world["s5"].glob("*.png")}
    assert pngs == {"grid.png", "rgb_grid.png"} | {f"grid_{ch}.png" for ch in CHANNELS if ch != "171A"}


def test_autoencoder_measures_the_flare_kernels_of_every_channel(world):
    rec = open_run(world["ae5"], "cpu").meta["reconstruction"]
    assert rec["channel"] == "171A" and list(rec["per_channel"]) == list(CHANNELS)
    assert rec["per_class"] == rec["per_channel"]["171A"]
    # each channel through its own transform: the toy channels are scaled copies, so their errors differ
    assert len({json.dumps(e["all"]) for e in rec["per_channel"].values()}) == len(CHANNELS)


def test_five_channel_fits_files_open_as_aia_maps_of_their_channel(world):
    gs = open_samples(world["s5"])
    transforms = gs.transforms()
    files = gs.table["file"].iloc[7].split(";")
    assert len(files) == 5
    for c, (rel, channel) in enumerate(zip(files, CHANNELS)):
        m = sunpy.map.Map(world["s5"] / rel)
        assert isinstance(m, sunpy.map.sources.AIAMap)
        assert m.wavelength.to_value("angstrom") == float(channel[:-1]) and m.meta["waveunit"] == "angstrom"
        assert m.exposure_time.to_value("s") == 1.0 and m.meta["goescls"] == gs.table["label"].iloc[7]
        assert m.meta["channels"] == ",".join(CHANNELS) and m.meta["seed"] == gs.table["seed"].iloc[7]
        # each file holds its own channel in DN/s, through that channel's inverse transform
        np.testing.assert_allclose(fits.getdata(world["s5"] / rel), transforms[c].inverse(gs.images[7, c]), rtol=1e-6)


def test_evaluation_of_five_channel_samples_reports_every_channel(world):
    # split "all": the toy test split has too few images per class for the channel ratios' two halves
    cfg = EvaluateConfig(repeats=1, judge_max_epochs=2, split="all", tsne_max_points=40)
    out = world["root"] / "eval"
    result = evaluate(world["ds5"], world["s5"], out, cfg)
    m = result["metrics"]
    for ch in CHANNELS:
        for name in (f"F1_judge_{ch}", f"FD_domain_{ch}"):
            assert np.isfinite(m[name]["value"]), name
    assert np.isfinite(m["F1_judge"]["value"]) and np.isfinite(m["XC_ratios"]["value"])
    assert result["real"]["channels"] == list(CHANNELS)
    per_ratio = result["details"]["channels"]["per_ratio"]
    assert set(per_ratio["generated"]) == {f"{c}/171A" for c in ("94A", "131A", "193A", "211A")}
    # the per-channel table: one row per channel in metrics.json and metrics.md, each number beside its benchmark
    rows = {r["channel"]: r for r in result["details"]["per_channel"]}
    assert list(rows) == list(CHANNELS)
    assert rows["94A"]["FD_domain"] == m["FD_domain_94A"]["value"] and rows["94A"]["F1_judge"] == m["F1_judge_94A"]["value"]
    assert rows["131A"]["ratio_W1_benchmark"] == per_ratio["benchmark"]["131A/171A"]
    assert rows["171A"]["ratio"] is None and rows["193A"]["ratio"] == "193A/171A"
    table = (out / "metrics.md").read_text().split("## Per channel")[1].splitlines()
    body = [line.split(" | ") for line in table if line.startswith("| ") and not line.startswith("| Channel")]
    assert [cells[0] for cells in body] == [f"| {ch}" for ch in CHANNELS] + ["| all channels"]
    assert {len(cells) for cells in body} == {8}
    assert body[0][3] == _fmt(m["FD_domain_94A"]["value"], m["FD_domain_94A"]["std"])
    assert body[1][6] == _fmt(per_ratio["generated"]["131A/171A"]) and body[2][5:8] == ["–", "–", "– |"]
    # the per-class grid of every channel: its layout (which images) recorded, each the class of its row
    assert (out / result["figures"]["channel_class_grid"]).read_bytes()[:4] == b"\x89PNG"
    layout = result["details"]["channel_class_grid"]
    ds, gs = open_dataset(world["ds5"]), open_samples(world["s5"])
    assert layout["rows"] == list(ds.classes) and layout["columns"] == [*CHANNELS, RGB_COLUMN]
    y_real, y_gen = ds.label_index(), requested_labels(gs, ds.classes, ds.scheme)[0]
    for row in range(len(ds.classes)):
        for side, labels in (("real", y_real), ("generated", y_gen)):
            i = layout[side][row]
            assert (i is None) == (row not in labels) and (i is None or labels[i] == row), (side, row)
    assert sum(i is not None for i in layout["generated"]) >= 2


def test_channel_class_figure_draws_each_channel_on_its_fixed_scale():
    """One column pair per channel and one for the composite, a real and a generated panel per class; both panels
    of a channel in its AIA colour map on [-1, 1] (the transform's limits), whatever the images hold."""
    rng = np.random.default_rng(0)
    real = rng.uniform(-0.5, 0.2, (6, 5, 8, 8)).astype(np.float32)
    gen = rng.uniform(-1.0, 1.0, (4, 5, 8, 8)).astype(np.float32)
    layout = channel_class_layout([0, 0, 1, 1, 2, 2], [0, 1, 1, 2], ["A", "B", "C", "M"], CHANNELS, seed=0)
    assert layout["real"][3] is None and layout["generated"][3] is None and layout["generated"][0] == 0
    fig = channel_class_figure(real, gen, layout, ranges={"94A": (0.1, 800.0)})
    assert len(fig.subfigs) == 6
    for sub, column in zip(fig.subfigs, layout["columns"]):
        assert len(sub.axes) == 2 * 4
        shown = [ax.images[0] for ax in sub.axes if ax.images]
        assert len(shown) == 6  # 3 real, 3 generated: class M has none
        if column != RGB_COLUMN:
            assert {im.get_clim() for im in shown} == {(-1.0, 1.0)}
            assert {im.get_cmap().name for im in shown} == {f"sdoaia{column[:-1]}"}
        else:
            assert {im.get_array().shape for im in shown} == {(8, 8, 3)}
    assert "0.1–800 DN/s" in fig.subfigs[0]._suptitle.get_text()
    one = channel_class_layout([0, 1], [0, 1], ["A", "B"], ["94A", "171A"])
    assert one["columns"] == ["94A", "171A"]  # no composite without 211 and 193 Å


def test_five_channel_continuous_teacher_distils_to_a_five_channel_student(world, tmp_path):
    teacher = train(world["ds5"], tmp_path / "t", latent_cfg("continuous"), autoencoder=world["ae5"], progress=False)
    student = distill(teacher, tmp_path / "st", steps=2, teacher_steps=4, stage_steps=1, trajectories=10,
                      progress=False)
    out = sample(student, tmp_path / "s", fluxes=[3e-6], per_class=2, grid=False)
    gs = open_samples(out)
    assert gs.images.shape == (2, 5, 64, 64) and gs.channels == list(CHANNELS)
    assert len(list((out / "fits").glob("*.fits"))) == 10


def _nothing_written(path):
    assert not path.exists() and not list(path.parent.glob(f".{path.name}*"))


def test_samples_of_five_channels_against_a_one_channel_dataset_and_back(world, tmp_path):
    with pytest.raises(FlaresynthError, match=r"channels: 5 \(94A, 131A, 171A, 193A, 211A\), but the dataset has 1 \(171A\)") as e:
        evaluate(world["ds1"], world["s5"], tmp_path / "e1", EvaluateConfig(repeats=1, figures=False))
    assert "\n" not in str(e.value)
    _nothing_written(tmp_path / "e1")
    one = sample(train(world["ds1"], tmp_path / "r1", load_preset("tiny"), progress=False), tmp_path / "s1",
                 per_class=1, sampler="ddim", steps=2, fits=False, grid=False)
    with pytest.raises(FlaresynthError, match=r"channels: 1 \(171A\), but the dataset has 5"):
        evaluate(world["ds5"], one, tmp_path / "e5", EvaluateConfig(repeats=1, figures=False))
    _nothing_written(tmp_path / "e5")
    # the 5-channel embedding run sampled with images of a 1-channel dataset
    with pytest.raises(FlaresynthError, match=r"channels: 171A, but the run .* was trained on 94A, 131A, 171A, 193A, 211A"):
        sample(world["run5"], tmp_path / "s", per_class=1, embedding_source="image", embedding_data=world["ds1"])
    _nothing_written(tmp_path / "s")


def test_latent_ddpm_with_an_autoencoder_of_other_channels_is_one_line(world, tmp_path):
    """Refused before anything is written (the CLI turns the error into one line and exit code 2, as for every
    FlaresynthError: ``test_cli``)."""
    out = tmp_path / "run"
    for data, ae, expect in ((world["ds5"], world["ae1"], "images of 5x64 px, but the autoencoder .* works on 1x64 px"),
                             (world["ds1"], world["ae5"], "images of 1x64 px, but the autoencoder .* works on 5x64 px")):
        with pytest.raises(FlaresynthError, match=expect) as e:
            train(data, out, latent_cfg("discrete"), autoencoder=ae, progress=False)
        assert "\n" not in str(e.value)
        _nothing_written(out)
