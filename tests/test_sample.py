"""Sampling: requests, seeds, samplers, the samples folder (FITS opened by sunpy, PNG grid), bad input."""

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from flaresynth import pretrained
from flaresynth.config import load_preset
from flaresynth.diffusion import guided_step_count, make_sampler
from flaresynth.errors import FlaresynthError
from flaresynth.runs import (
    META_FILE,
    MODEL_DIR,
    load_encoder,
    model_kind,
    open_run,
    resolve_shipped,
    shipped_runs,
)
from flaresynth.samples import open_samples
from flaresynth.sampling import build_requests, generate, parse_fluxes, sample
from flaresynth.train import train
from toy import cli, cli_here, make_dataset, one_line_error


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A discrete run trained without any X image, and a continuous run (2 steps each)."""
    root = tmp_path_factory.mktemp("sample")
    no_x = make_dataset(root / "ds_no_x", classes=("A", "B", "C", "M"))
    full = make_dataset(root / "ds")
    cfg = load_preset("tiny")
    cfg.train.steps = 2
    discrete = train(no_x, root / "discrete", cfg, progress=False)
    cfg.conditioning.kind = "continuous"
    continuous = train(full, root / "continuous", cfg, progress=False)
    return {"discrete": discrete, "continuous": continuous}


def test_same_seed_same_images_and_per_image_seeds(runs):
    m = open_run(runs["discrete"])
    table = build_requests(m, classes=["A", "M"], per_class=3, seed=7)
    assert list(table["seed"]) == [7, 8, 9, 10, 11, 12]
    a = generate(m, table, "ddpm", 4, 1.0, batch_size=6)
    b = generate(m, table, "ddpm", 4, 1.0, batch_size=6)
    assert a.dtype == np.float32 and a.shape == (6, 1, 16, 16)
    assert np.array_equal(a, b)
    # an image depends on its own seed, not on its batch
    c = generate(m, table, "ddpm", 4, 1.0, batch_size=2)
    np.testing.assert_allclose(a, c, atol=1e-4)
    other = generate(m, build_requests(m, classes=["A", "M"], per_class=3, seed=8), "ddpm", 4, 1.0, batch_size=6)
    assert not np.allclose(a, other)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++", "unipc"])
def test_each_sampler_runs(runs, sampler):
    m = open_run(runs["discrete"])
    x = generate(m, build_requests(m, classes=["C"], per_class=2), sampler, 3, 2.0)
    assert x.shape == (2, 1, 16, 16) and np.isfinite(x).all() and x.min() >= -1 and x.max() <= 1


def test_continuous_model_takes_any_flux(runs):
    m = open_run(runs["continuous"])
    table = build_requests(m, fluxes=parse_fluxes(["3e-5,2e-3", "X2"]), per_class=1, seed=0)
    assert list(table["flux_class"]) == ["M", "X", "X"] and (table["label"] == "").all()
    # same seed for every row: only the flux differs, and the images differ with it
    table["seed"] = 0
    x = generate(m, table, "dpm++", 3, 0.0)
    assert not np.allclose(x[0], x[1]) and not np.allclose(x[1], x[2])
    cls = build_requests(m, classes=["B"], per_class=1)
    assert -7 < cls["condition_log_flux"].iloc[0] < -6  # inside class B's training flux range


def test_continuous_class_requests_draw_a_flux_per_image_from_the_training_distribution(runs):
    m = open_run(runs["continuous"])
    table = build_requests(m, classes=["C", "M"], per_class=6, seed=3)
    lf = table["condition_log_flux"].to_numpy()
    assert (table["flux_draw"] == "class-distribution").all()
    for c in ("C", "M"):
        q = m.meta["class_log_flux_quantiles"][c]
        mine = lf[table["label"].to_numpy() == c]
        assert len(np.unique(mine)) == 6  # different fluxes per image
        assert (mine >= q[0]).all() and (mine <= q[-1]).all()  # within the class's training fluxes
    # seeded: the same seeds give the same draws, other seeds other draws
    assert np.array_equal(build_requests(m, classes=["C", "M"], per_class=6, seed=3)["condition_log_flux"], lf)
    assert not np.array_equal(build_requests(m, classes=["C", "M"], per_class=6, seed=4)["condition_log_flux"], lf)
    # a run that stored only the class medians (trained before the quantiles) falls back to them, and says so
    m.meta = {k: v for k, v in m.meta.items() if k != "class_log_flux_quantiles"}
    old = build_requests(m, classes=["C"], per_class=3)
    assert (old["flux_draw"] == "class-median").all()
    assert np.allclose(old["condition_log_flux"], m.meta["class_log_flux"]["C"])


def test_requests_are_validated(runs):
    m = open_run(runs["discrete"])
    with pytest.raises(FlaresynthError, match="saw no training image of class X"):
        build_requests(m, classes=["X"])
    with pytest.raises(FlaresynthError, match="not a class of this model"):
        build_requests(m, classes=["low"])
    with pytest.raises(FlaresynthError, match="class X was not in the training data"):
        build_requests(m, fluxes=[2e-4])
    assert list(build_requests(m, per_class=1)["label"]) == ["A", "B", "C", "M"]  # default: trained classes
    for bad in (["0"], ["-1e-5"], ["nan"], ["Z3"]):
        with pytest.raises(FlaresynthError, match="flux|class"):
            parse_fluxes(bad)


def test_cli_sample_writes_fits_sunpy_opens_as_aia_maps(runs, tmp_path):
    import sunpy.map
    from astropy.io import fits
    from sunpy.map.sources import AIAMap

    from flaresynth.transforms import IntensityTransform

    out = tmp_path / "s"
    r = cli("sample", "--run", str(runs["discrete"]), "--out", str(out), "--classes", "A,M", "--flux", "3e-6",
            "--per-class", "2", "--sampler", "dpm++", "--steps", "3", "--guidance", "1.5", "--seed", "5",
            "--no-progress")
    assert r.returncode == 0, r.stderr
    s = open_samples(out)
    assert s.images.shape == (6, 1, 16, 16)
    assert list(s.table["label"]) == ["A", "A", "M", "M", "", ""]
    assert list(s.table["seed"]) == [5, 6, 7, 8, 9, 10]
    assert s.manifest["sampler"] == "dpm++" and s.manifest["steps"] == 3 and s.manifest["guidance"] == 1.5
    assert s.manifest["conditioning"] == "discrete" and s.manifest["model_id"]
    assert (out / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    path = out / s.table["file"].iloc[2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = sunpy.map.Map(path)
    assert isinstance(m, AIAMap)
    assert m.wavelength.value == 171 and str(m.unit) == "DN / s"
    assert m.scale.axis1.value == pytest.approx(4.8 * 512 / 16)
    assert m.rsun_obs.value == pytest.approx(976.0)
    # the observer of the SDOMLv2 frame: on the Sun-Earth line, where the solar radius appears as 976"
    obs = m.observer_coordinate
    assert obs.lon.deg == pytest.approx(0) and obs.lat.deg == pytest.approx(0)
    assert obs.radius.to_value("m") == pytest.approx(696e6 / np.sin(np.radians(976 / 3600)), rel=1e-9)
    assert m.date.isot.startswith("2000-01-01T12:00:00") and m.detector == "AIA"
    assert m.reference_pixel.x.value == pytest.approx(7.5)  # the disk centre is the image centre (0-based)
    h = fits.getheader(path)
    for key in ("CTYPE1", "CUNIT1", "CDELT1", "CRPIX1", "TELESCOP", "INSTRUME", "WAVELNTH", "WAVEUNIT", "DSUN_OBS",
                "HGLN_OBS", "HGLT_OBS", "DATE-OBS", "RSUN_OBS"):
        assert key in h, key
    assert (h["CTYPE1"], h["CTYPE2"], h["TELESCOP"], h["INSTRUME"]) == ("HPLN-TAN", "HPLT-TAN", "SDO/AIA", "AIA_3")
    assert (h["GOESCLS"], h["SAMPLER"], h["NSTEPS"], h["CFGW"], h["SEED"]) == ("M", "dpm++", 3, 1.5, 7)
    assert h["MODELID"] == s.manifest["model_id"]
    flux_header = fits.getheader(out / s.table["file"].iloc[4])
    assert flux_header["GOESFLUX"] == pytest.approx(3e-6) and flux_header["GOESCLS"] == "C"
    # pixel values are DN/s: the inverse of the dataset's intensity transform
    tr = IntensityTransform.from_dict(s.manifest["transform"])
    np.testing.assert_allclose(m.data, tr.inverse(np.asarray(s.images[2, 0])), rtol=1e-5)


class _RowCounter(torch.nn.Module):
    """Pass-through denoiser counting the rows (images) it is given."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.rows = inner, 0

    @property
    def conditioner(self):
        return self.inner.conditioner

    def forward(self, x, t, cond, drop):
        self.rows += int(x.shape[0])
        return self.inner(x, t, cond, drop)


def test_guidance_interval_guides_only_the_late_steps(runs, tmp_path):
    m = open_run(runs["discrete"])
    table = build_requests(m, classes=["A", "M"], per_class=2, seed=3)

    def run(t_max, guidance=2.0, model=m):
        counter = _RowCounter(model.network)
        images = generate(replace(model, network=counter), table, "ddim", 4, guidance, batch_size=4,
                          guidance_t_max=t_max)
        return images, counter.rows / len(table)

    every, rows_every = run(None)
    # DDIM 4 on the 1000-step schedule visits t = 750, 500, 250, 0: two rows a guided step, one otherwise
    assert guided_step_count(make_sampler("ddim", m.meta["scheduler"], 4), 500) == 3
    assert rows_every == 8 and run(999)[1] == 8 and run(500)[1] == 4 + 3 and run(100)[1] == 4 + 1
    np.testing.assert_array_equal(run(999)[0], every)  # an interval holding every step is plain guidance
    late, _ = run(500)
    assert not np.allclose(late, every)
    # the first step unguided, the rest guided: the same images as guidance_t_max=500 asked for explicitly
    # through the run's config (the default of generate and sample), and recorded in the samples manifest
    configured = replace(m, meta={**m.meta, "config": {**m.meta["config"],
                                                       "sample": {**m.meta["config"]["sample"], "guidance_t_max": 500}}})
    np.testing.assert_array_equal(generate(configured, table, "ddim", 4, 2.0, batch_size=4), late)
    out = sample(configured, tmp_path / "s", classes=["A", "M"], per_class=2, seed=3, sampler="ddim", steps=4,
                 guidance=2.0, fits=False, grid=False)
    assert open_samples(out).manifest["guidance_t_max"] == 500
    np.testing.assert_allclose(open_samples(out).images, late, atol=1e-6)
    with pytest.raises(FlaresynthError, match="--guidance-t-max -1"):
        generate(m, table, "ddim", 4, 2.0, guidance_t_max=-1)


def test_ddim_eta_draws_fresh_noise_per_image_and_comes_from_the_run_for_its_own_sampler(runs, tmp_path):
    from astropy.io import fits

    m = open_run(runs["discrete"])
    table = build_requests(m, classes=["A", "M"], per_class=2, seed=3)
    plain = generate(m, table, "ddim", 4, 1.0, batch_size=4, eta=0.0)
    noisy = generate(m, table, "ddim", 4, 1.0, batch_size=4, eta=0.5)
    assert not np.allclose(plain, noisy)
    # the fresh noise comes from each image's own generator: the same images in other batches
    np.testing.assert_allclose(generate(m, table, "ddim", 4, 1.0, batch_size=1, eta=0.5), noisy, atol=1e-5)
    np.testing.assert_array_equal(generate(m, table, "ddim", 4, 1.0, batch_size=4, eta=0.5), noisy)
    # a run whose config samples DDIM 4 at eta 0.5 does so by default, and only with its own sampler and steps
    own = {**m.meta["config"]["sample"], "sampler": "ddim", "steps": 4, "eta": 0.5}
    configured = replace(m, meta={**m.meta, "config": {**m.meta["config"], "sample": own}})
    np.testing.assert_array_equal(generate(configured, table, "ddim", 4, 1.0, batch_size=4), noisy)
    np.testing.assert_array_equal(generate(configured, table, "ddim", 8, 1.0, batch_size=4),
                                  generate(m, table, "ddim", 8, 1.0, batch_size=4))
    out = sample(configured, tmp_path / "s", classes=["A", "M"], per_class=2, seed=3, guidance=1.0, grid=False)
    s = open_samples(out)
    assert s.manifest["eta"] == 0.5 and s.manifest["sampler"] == "ddim"
    np.testing.assert_allclose(s.images, noisy, atol=1e-6)
    assert fits.getheader(out / s.table["file"].iloc[0])["DDIMETA"] == 0.5
    assert "eta" not in open_samples(sample(m, tmp_path / "p", classes=["A"], per_class=1, sampler="ddim", steps=4,
                                            fits=False, grid=False)).manifest
    for kwargs, what in (({"sampler": "dpm++", "eta": 0.5}, "--eta 0.5: applies to the ddim sampler only"),
                         ({"sampler": "ddim", "eta": 1.5}, "--eta 1.5")):
        with pytest.raises(FlaresynthError, match=what):
            generate(m, table, steps=4, guidance=1.0, **kwargs)
    line = one_line_error(cli_here("sample", "--run", str(runs["discrete"]), "--out", str(tmp_path / "bad"), "--sampler",
                                   "unipc", "--eta", "0.3"))
    assert "--eta 0.3: applies to the ddim sampler only" in line and not (tmp_path / "bad").exists()


def test_library_sample_defaults_come_from_the_run(runs, tmp_path):
    out = sample(runs["continuous"], tmp_path / "c", fluxes=[1e-5], per_class=2, steps=2, fits=False, grid=False)
    s = open_samples(out)
    assert s.manifest["sampler"] == "ddpm" and s.manifest["guidance"] == 1.0  # the tiny preset's sample section
    assert not (out / "fits").exists()
    with pytest.raises(FlaresynthError, match="exists"):
        sample(runs["continuous"], out, per_class=1, steps=2)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--classes", "X"], "no training image of class X"),
        (["--flux", "0"], "--flux 0"),
        (["--flux=-3e-5"], "positive"),
        (["--steps", "0"], "--steps 0"),
        (["--guidance-t-max", "-1"], "--guidance-t-max -1"),
    ],
)
def test_cli_bad_input_is_one_line(runs, tmp_path, args, needle):
    line = one_line_error(cli_here("sample", "--run", str(runs["discrete"]), "--out", str(tmp_path / "o"), *args))
    assert needle in line


def test_cli_shipped_run_names_resolve_or_say_what_exists(tmp_path):
    r = cli("sample", "--run", "demo:discrete", "--out", str(tmp_path / "o"), "--steps", "2", "--per-class", "1")
    if "demo:discrete" in shipped_runs():
        assert r.returncode == 0, r.stderr
    else:
        line = one_line_error(r)
        assert "demo:discrete" in line and "shipped runs installed" in line
    with pytest.raises(FlaresynthError, match="unknown shipped run"):
        resolve_shipped("demo:nonsense")


#: Shipped runs this release must hold (the students' folders are added when they are trained; see pretrained).
RELEASED = ("demo:discrete", "demo:continuous", "demo:embedding", "demo:cevae")


def test_every_shipped_run_has_its_weights():
    """A shipped run whose weights are missing is a broken package, not a reason to skip; a name without its
    folder is not installed (and not listed)."""
    present = {name for name, folder in pretrained.SHIPPED.items() if (pretrained.HERE / folder).exists()}
    assert set(RELEASED) <= present
    for name in present:
        model = pretrained.HERE / pretrained.SHIPPED[name] / MODEL_DIR
        weights = [p for p in model.glob("*.safetensors") if p.stat().st_size > 0] if model.is_dir() else []
        assert (model / META_FILE).is_file() and weights, f"{name}: no weights in {model}"
    assert set(shipped_runs()) == present


def test_every_shipped_run_samples_each_class(tmp_path):
    """Including the ceVAE baseline and the embedding DDPM, whose encoder is named ``cevae:demo:cevae``; a
    distilled student in its own steps. The shipped autoencoder is no generator and is refused in one line."""
    for name in shipped_runs():
        if model_kind(name) == "autoencoder":
            with pytest.raises(FlaresynthError, match="reconstructs but does not generate"):
                sample(name, tmp_path / name.replace(":", "-"), per_class=1, fits=False)
            continue
        fast = {} if name.endswith("-student") else {"sampler": "dpm++", "steps": 2}
        out = sample(name, tmp_path / name.replace(":", "-"), per_class=1, fits=False, **fast)
        s = open_samples(out)
        # GOES classes, or demo:activity3's levels at 128 px
        expected = ["low", "medium", "high"] if name == "demo:activity3" else ["A", "B", "C", "M", "X"]
        assert list(s.table["label"]) == expected, name
        assert s.images.shape[-1] == (128 if name == "demo:activity3" else 64), name
        assert np.isfinite(s.images).all() and s.images.std() > 0, name


def test_shipped_cevae_is_an_encoder_by_name():
    assert "demo:cevae" in shipped_runs()
    enc = load_encoder("cevae:demo:cevae")
    x = torch.zeros(2, 1, 64, 64)
    assert enc.embed(x).shape == (2, enc.dim)


def test_activity_levels_of_an_activity3_run(tmp_path):
    ds = make_dataset(tmp_path / "ds3", n=30, scheme="activity3")
    cfg = load_preset("tiny")
    cfg.train.steps = 1
    m = open_run(train(ds, tmp_path / "act", cfg, progress=False))
    assert m.classes == ("low", "medium", "high") and m.network.unet.config.num_class_embeds == 4
    table = build_requests(m, classes=["low", "High"], fluxes=[3e-5], per_class=1)
    assert list(table["flux_class"]) == ["low", "high", "high"]
    with pytest.raises(FlaresynthError, match="not a class of this model"):
        build_requests(m, classes=["M"])
    assert generate(m, table, "dpm++", 2, 1.0).shape == (3, 1, 16, 16)
