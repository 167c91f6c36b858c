"""Latent diffusion: the autoencoder run kind, its flare-kernel benchmark, and DDPMs trained in its latents."""

import importlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from flaresynth.config import RunConfig, load_config, load_preset
from flaresynth.dataset import open_dataset
from flaresynth.diffusion import make_scheduler
from flaresynth.distill import distill
from flaresynth.errors import FlaresynthError
from flaresynth.metrics.reconstruction import kernel_stats, reconstruction_errors
from flaresynth.models.autoencoder import LatentAutoencoder, build_autoencoder, decode, encode_means
from flaresynth.models.decoder_noise import DecoderNoise, fit_decoder_noise
from flaresynth.runs import AUTOENCODER_DIR, open_run
from flaresynth.sampling import build_requests, generate, sample
from flaresynth.train import DiffusionObjective, load_training_data, resolve_config, step_generator, train
from flaresynth.transforms import channel_transforms
from toy import cli, cli_here, make_dataset, one_line_error


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("latent") / "ds", n=40, size=64)


@pytest.fixture(scope="module")
def ae_run(data, tmp_path_factory):
    """A tiny autoencoder (64 px -> 16x16x2) trained 4 steps on the toy dataset."""
    return train(data, tmp_path_factory.mktemp("ae") / "ae", preset="autoencoder-tiny", progress=False)


def latent_cfg(kind: str = "discrete") -> RunConfig:
    d = load_preset("tiny-latent").to_dict()
    d["conditioning"]["kind"] = kind
    if kind == "discrete+embedding":
        d["conditioning"]["encoder"] = "random:8"
    return RunConfig.from_dict(d)


def test_autoencoder_round_trip_shapes():
    cfg = load_preset("autoencoder-tiny")
    torch.manual_seed(0)
    ae = LatentAutoencoder(build_autoencoder(cfg.autoencoder, 1, 64))
    x = torch.rand(3, 1, 64, 64) * 2 - 1
    z = encode_means(ae, x)
    assert z.shape == (3, *ae.latent_shape) == (3, 2, 16, 16) and z.dtype == torch.float32
    y = decode(ae, z)
    assert y.shape == x.shape and y.dtype == torch.float32 and y.abs().max() <= 1


def test_autoencoder_run_opens_and_reports_reconstruction(ae_run):
    run = open_run(ae_run, "cpu")
    assert run.kind == "autoencoder" and run.image_shape == (1, 64, 64)
    rec = run.meta["reconstruction"]
    assert rec["split"] == "test" and set(rec["per_class"]) == {"all", "A", "B", "C", "M", "X"}
    log = [json.loads(ln) for ln in (ae_run / "log.jsonl").read_text().splitlines()]
    assert log[-1]["reconstruction"] == rec and "loss_rec" in log[0] and "loss_kl" in log[0]


def test_reconstruction_errors_see_a_dimmed_flare():
    t = channel_transforms({"channel": "171A", "lo": 5.0, "hi": 3500.0}, 1)
    yy, xx = np.mgrid[0:64, 0:64]
    disk = np.where(np.hypot(xx - 31.5, yy - 31.5) < 24, 100.0, 5.0)
    flare = 2000.0 * np.exp(-((xx - 30) ** 2 + (yy - 28) ** 2) / 8.0)
    real_dn = np.stack([disk + flare, disk + flare])
    dim_dn = np.stack([disk + flare, disk + 0.1 * flare])
    peaks, areas = kernel_stats(real_dn)
    assert peaks[0] == pytest.approx(2000.0, rel=0.01) and areas[0] > 5
    real = t[0].forward(real_dn)[:, None].astype(np.float32)
    rec = t[0].forward(dim_dn)[:, None].astype(np.float32)
    err = reconstruction_errors(real, rec, np.array([3, 4]), ("A", "B", "C", "M", "X"), t)
    assert err["M"]["peak_error_dex"] == 0 and err["M"]["l1"] == 0
    assert err["X"]["peak_bias_dex"] == pytest.approx(np.log10(201) - np.log10(2001), abs=0.02)


def test_latent_training_lowers_the_loss_on_a_fixed_batch(data, ae_run):
    cfg = RunConfig.from_dict({**latent_cfg().to_dict(), "latent": {"autoencoder": str(ae_run)},
                               "model": {**latent_cfg().to_dict()["model"], "in_channels": 2}})
    info = load_training_data(open_dataset(data), cfg)
    assert info["images"].shape[1:] == (2, 16, 16)
    assert info["images"].std().item() == pytest.approx(1.0, abs=0.05)  # scaled to unit variance
    obj = DiffusionObjective(cfg, info, ("A", "B", "C", "M", "X"))
    torch.manual_seed(0)
    model = obj.build_model()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    x0, cond = info["images"][:8], info["cond"].index(torch.arange(8))

    def fixed_loss():
        with torch.no_grad():
            return obj.loss(model, x0, cond, step_generator(0, 0, 0)).item()

    before = fixed_loss()
    for i in range(25):
        loss = obj.loss(model, x0, cond, step_generator(0, i + 1, 0))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert fixed_loss() < 0.8 * before


def test_latent_flips_encode_each_mirrored_frame(data, ae_run):
    d = {**latent_cfg().to_dict(), "latent": {"autoencoder": str(ae_run)},
         "model": {**latent_cfg().to_dict()["model"], "in_channels": 2}}
    d["train"]["flips"] = "ew"
    info = load_training_data(open_dataset(data), RunConfig.from_dict(d))
    ds = open_dataset(data)
    frames = torch.from_numpy(np.asarray(ds.images[ds.split_indices("train")], dtype=np.float32))  # already 64 px
    ae = open_run(ae_run, "cpu").network
    z = torch.cat([encode_means(ae, frames), encode_means(ae, frames.flip(-1))])
    scale = info["latent_scaling_factor"]
    assert scale == pytest.approx(1 / z.std().item(), rel=1e-4)  # measured over both orientations
    torch.testing.assert_close(info["images"], z * scale, atol=1e-5, rtol=1e-4)
    n = len(frames)
    # the autoencoder is not mirror-symmetric: a mirrored frame's latent is not the mirrored latent
    assert not torch.allclose(info["images"][n:], info["images"][:n].flip(-1), atol=1e-3)


@pytest.mark.parametrize("kind", ["discrete", "continuous", "discrete+embedding"])
def test_latent_run_trains_resumes_and_samples_self_contained(data, ae_run, tmp_path, kind):
    ae = tmp_path / "ae"
    shutil.copytree(ae_run, ae)
    run = tmp_path / "run"
    train(data, run, latent_cfg(kind), autoencoder=ae, max_steps=2, progress=False)
    assert (run / AUTOENCODER_DIR / "flaresynth.json").is_file()
    shutil.rmtree(ae)  # the run holds its autoencoder: resume and sampling need nothing else
    train(data, run, resume=True, progress=False)
    assert json.loads((run / "provenance.json").read_text())["steps"] == 4
    meta = json.loads((run / "model" / "flaresynth.json").read_text())
    assert meta["sample_size"] == 16 and meta["in_channels"] == 2 and meta["latent"]["image_size"] == 64
    if kind == "discrete":  # the command line, once: `flaresynth sample --run RUN` alone
        r = cli("sample", "--run", str(run), "--out", str(tmp_path / "s"), "--per-class", "1", "--sampler", "ddim",
                "--steps", "2", "--no-progress")
        assert r.returncode == 0, r.stderr
    else:
        sample(run, tmp_path / "s", per_class=1, sampler="ddim", steps=2)
    images = np.load(tmp_path / "s" / "samples.npy")
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert images.shape == (5, 1, 64, 64) and manifest["image_size"] == 64 and manifest["latent"]["latent_shape"] == [2, 16, 16]
    assert np.isfinite(images).all() and images.std() > 0


def test_latent_run_reloads_and_samples_identically(data, ae_run, tmp_path):
    run = train(data, tmp_path / "run", latent_cfg(), autoencoder=ae_run, progress=False)
    table = build_requests(open_run(run, "cpu"), per_class=1, seed=3)
    outs = [generate(open_run(run, "cpu"), table, sampler, 3, 1.0) for sampler in ("dpm++", "dpm++", "ddpm")]
    assert outs[0].shape == (5, 1, 64, 64)
    np.testing.assert_array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2])


def test_autoencoder_fits_its_decoder_noise_and_latent_runs_add_a_draw_per_seed(data, ae_run, tmp_path):
    ae = open_run(ae_run, "cpu")
    assert ae.meta["decoder_noise"]["file"] == "decoder_noise.npz" and ae.decoder_noise is not None
    # fitted to the residuals of the training rows' reconstructions
    images = load_training_data(open_dataset(data), load_config(ae_run / "config.yaml"))["images"]
    expected = fit_decoder_noise(images.numpy(), decode(ae.network, encode_means(ae.network, images)).numpy())
    np.testing.assert_allclose(ae.decoder_noise.std, expected.std, rtol=1e-4, atol=1e-6)
    # refitted in a copy, through the command line, to the same model
    copy = tmp_path / "ae"
    shutil.copytree(ae_run, copy)
    (copy / "model" / "decoder_noise.npz").unlink()
    r = cli_here("refit", "--run", str(copy), "--data", str(data), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["shape"] == [1, 64, 64]
    np.testing.assert_allclose(DecoderNoise.load(copy / "model" / "decoder_noise.npz").std, expected.std, rtol=1e-4,
                               atol=1e-6)
    r = cli_here("refit", "--run", str(copy), "--data", str(data), "--components", "2")
    assert r.returncode == 2 and "autoencoder run, which has no class latents" in r.stderr
    # a latent run adds image i's draw, from seed i, to the decoded image; without it, the decoded image as it is
    run = train(data, tmp_path / "run", latent_cfg(), autoencoder=copy, max_steps=1, progress=False)
    model = open_run(run, "cpu")
    table = build_requests(model, per_class=1, seed=3)
    plain = generate(model, table, "ddim", 2, 1.0, decoder_noise=False)
    noisy = generate(model, table, "ddim", 2, 1.0)
    np.testing.assert_allclose(noisy, model.decoder_noise.add(plain, table["seed"]), atol=1e-6)
    assert np.abs(noisy - plain).mean() > 1e-3
    r = cli("sample", "--run", str(run), "--out", str(tmp_path / "s"), "--per-class", "1", "--seed", "3",
            "--sampler", "ddim", "--steps", "2", "--guidance", "1", "--no-decoder-noise", "--no-progress", "--no-fits")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["latent"]["decoder_noise"] is False
    np.testing.assert_allclose(np.load(tmp_path / "s" / "samples.npy"), plain, atol=1e-6)
    # an autoencoder without the model (trained before it) decodes as before
    (run / AUTOENCODER_DIR / "decoder_noise.npz").unlink()
    assert open_run(run, "cpu").decoder_noise is None
    np.testing.assert_array_equal(generate(open_run(run, "cpu"), table, "ddim", 2, 1.0), plain)
    # a model of another image shape is refused, naming the file
    DecoderNoise(np.linspace(-1, 1, 3), np.ones((1, 2)), np.ones((1, 8, 8))).save(run / AUTOENCODER_DIR / "decoder_noise.npz")
    with pytest.raises(FlaresynthError, match=r"decoder_noise.npz: fits images of shape \(1, 8, 8\)"):
        open_run(run, "cpu")


def test_latent_student_samples_with_the_teachers_autoencoder(data, ae_run, tmp_path):
    teacher = train(data, tmp_path / "teacher", latent_cfg(), autoencoder=ae_run, progress=False)
    student = distill(teacher, tmp_path / "student", steps=2, teacher_steps=4, stage_steps=1, trajectories=10,
                      progress=False)
    assert (student / AUTOENCODER_DIR / "flaresynth.json").is_file()
    out = sample(student, tmp_path / "s", per_class=1)
    assert np.load(out / "samples.npy").shape == (5, 1, 64, 64)


def with_train(cfg: RunConfig, **train_keys) -> RunConfig:
    d = cfg.to_dict()
    d["train"].update(train_keys)
    return RunConfig.from_dict(d)


def test_init_from_starts_at_the_runs_ema_weights_and_keeps_its_id(data, ae_run, tmp_path):
    first = train(data, tmp_path / "first", latent_cfg(), autoencoder=ae_run, progress=False)
    start = open_run(first, "cpu")
    # one step at a vanishing learning rate: the new run's weights are still the ones it started from
    # (dropout changes training, not the weights' shapes: it may differ from the starting run's)
    cfg = with_train(latent_cfg(), init_from=str(first), lr=1e-12, steps=2, seed=7)
    cfg = RunConfig.from_dict({**cfg.to_dict(), "model": {**cfg.to_dict()["model"], "dropout": 0.1}})
    run = train(data, tmp_path / "next", cfg, autoencoder=ae_run, max_steps=1, progress=False)
    now = open_run(run, "cpu")
    for (name, a), b in zip(start.network.state_dict().items(), now.network.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=0, msg=name)
    # the same config without init_from starts elsewhere (seed 7's random weights)
    fresh = open_run(train(data, tmp_path / "fresh", with_train(cfg, init_from=None), autoencoder=ae_run, max_steps=1,
                           progress=False), "cpu")
    assert not torch.allclose(fresh.network.state_dict()["unet.conv_in.weight"], start.network.state_dict()["unet.conv_in.weight"])
    assert now.meta["latent"]["scaling_factor"] == start.meta["latent"]["scaling_factor"]
    assert now.meta["init_from"] == {"run": str(first), "model_id": start.meta["model_id"]}
    train(data, run, resume=True, progress=False)  # the resume keeps the starting run's id
    assert json.loads((run / "model" / "flaresynth.json").read_text())["init_from"]["model_id"] == start.meta["model_id"]


# ------------------------------------------------------------------------------------------ bad input


def test_bad_autoencoder_one_line_and_nothing_written(data, ae_run, tmp_path):
    out = tmp_path / "run"
    r = cli_here("train", "--data", str(data), "--out", str(out), "--preset", "tiny-latent", "--autoencoder",
                 str(tmp_path / "nowhere"), "--no-progress")
    assert "no such autoencoder run" in one_line_error(r) and not out.exists()
    # a run of another kind (a pixel DDPM) is no autoencoder
    pixel = train(data, tmp_path / "pixel", load_preset("tiny"), max_steps=1, progress=False)
    with pytest.raises(FlaresynthError, match="model_type: 'ddpm', but latent.autoencoder needs an autoencoder"):
        train(data, out, latent_cfg(), autoencoder=pixel, progress=False)
    assert not out.exists()
    # a dataset of another image size, and one of the same size but other images
    small = make_dataset(tmp_path / "ds32", n=40, size=32)
    with pytest.raises(FlaresynthError, match="images of 1x32 px, but the autoencoder"):
        train(small, out, latent_cfg(), autoencoder=ae_run, progress=False)
    assert not out.exists()
    other = make_dataset(tmp_path / "other", n=40, size=64, seed=5)
    with pytest.raises(FlaresynthError, match="trained on another dataset"):
        train(other, out, latent_cfg(), autoencoder=ae_run, progress=False)
    assert not out.exists()
    # a pixel config with --autoencoder, and clip_sample on latents
    with pytest.raises(FlaresynthError, match="is a pixel one"):
        train(data, out, load_preset("tiny"), autoencoder=ae_run, progress=False)
    with pytest.raises(FlaresynthError, match="diffusion.clip_sample"):
        RunConfig.from_dict({"latent": {"autoencoder": str(ae_run)}})
    assert not out.exists()


def test_init_from_another_network_or_kind_one_line_and_nothing_written(data, ae_run, tmp_path):
    first = train(data, tmp_path / "first", latent_cfg(), autoencoder=ae_run, max_steps=1, progress=False)
    wider = latent_cfg().to_dict()
    wider["model"]["block_out_channels"] = [c * 2 for c in wider["model"]["block_out_channels"]]
    wider["train"]["init_from"] = str(first)
    out = tmp_path / "run"
    for cfg, message in [
        (RunConfig.from_dict(wider), "model.block_out_channels: "),
        (with_train(latent_cfg("continuous"), init_from=str(first)), "conditioning.kind: 'discrete', this config has 'continuous'"),
        (with_train(latent_cfg(), init_from=str(ae_run)), "needs a DDPM run, and this one is of kind 'autoencoder'"),
    ]:
        with pytest.raises(FlaresynthError, match=message):
            train(data, out, cfg, autoencoder=ae_run, progress=False)
        assert not out.exists()
    r = cli_here("train", "--data", str(data), "--out", str(out), "--preset", "tiny-latent", "--autoencoder", str(ae_run),
                 "--init-from", str(tmp_path / "nowhere"), "--no-progress")
    assert f"train.init_from: {tmp_path / 'nowhere'}: no such run folder" in one_line_error(r) and not out.exists()
    # the same network in another autoencoder's latents
    ae2 = train(data, tmp_path / "ae2", with_train(load_preset("autoencoder-tiny"), seed=1), progress=False)
    other = train(data, tmp_path / "other", latent_cfg(), autoencoder=ae2, max_steps=1, progress=False)
    with pytest.raises(FlaresynthError, match="latent.autoencoder_id: ae2-.*, this run's autoencoder is ae-"):
        train(data, out, with_train(latent_cfg(), init_from=str(other)), autoencoder=ae_run, progress=False)
    assert not out.exists()
    with pytest.raises(FlaresynthError, match="train.init_from: only a ddpm run"):
        RunConfig.from_dict({"kind": "cevae", "train": {"init_from": str(first)}})


def test_autoencoder_option_takes_a_shipped_name_or_a_path(tmp_path, monkeypatch):
    # `--autoencoder demo:autoencoder` names the package's autoencoder; a relative path becomes absolute
    cfg = resolve_config(tmp_path / "run", None, "demo64-latent", False, autoencoder="demo:autoencoder")
    assert cfg.latent.autoencoder == "demo:autoencoder"
    monkeypatch.chdir(tmp_path)
    cfg = resolve_config(tmp_path / "run", None, "demo64-latent", False, autoencoder="ae")
    assert cfg.latent.autoencoder == str(tmp_path / "ae")


def test_latent_run_without_its_autoencoder_and_autoencoder_as_generator(data, ae_run, tmp_path):
    run = train(data, tmp_path / "run", latent_cfg(), autoencoder=ae_run, max_steps=1, progress=False)
    shutil.rmtree(run / AUTOENCODER_DIR)
    r = cli_here("sample", "--run", str(run), "--out", str(tmp_path / "s"), "--no-progress")
    assert f"{run / AUTOENCODER_DIR}: missing" in one_line_error(r) and not (tmp_path / "s").exists()
    with pytest.raises(FlaresynthError, match="does not generate"):
        sample(ae_run, tmp_path / "s")
    with pytest.raises(FlaresynthError, match="autoencoder run; only a diffusion"):
        distill(ae_run, tmp_path / "st", progress=False)
    assert not (tmp_path / "s").exists() and not (tmp_path / "st").exists()


def test_fingerprint_counts_the_latent_section_only_when_used():
    pixel = load_preset("tiny")
    d = pixel.to_dict()
    d["autoencoder"]["latent_channels"] = 8  # unused by a ddpm run
    assert RunConfig.from_dict(d).fingerprint() == pixel.fingerprint()
    a, b = latent_cfg(), latent_cfg()
    b.latent.scaling_factor = 0.5
    assert a.fingerprint() != b.fingerprint() != pixel.fingerprint()
    assert make_scheduler(a.diffusion).config.clip_sample is False


def test_autoencoder_fidelity_benchmark(data, ae_run, tmp_path, capsys, monkeypatch):
    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(bench))
    module = importlib.import_module("autoencoder_fidelity")
    monkeypatch.setattr(sys, "argv", ["autoencoder_fidelity.py", "--ae", str(ae_run), "--data", str(data), "--split",
                                      "train", "--out", str(tmp_path), "--threads", "1", "--quick"])
    capsys.readouterr()
    module.main()
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "train" and result["same_dataset"] is True
    assert result["per_class"]["all"]["n"] == 30 and json.loads((tmp_path / "autoencoder_fidelity.json").read_text()) == result


def test_accelerate_launch_two_processes_trains_a_latent_run(data, ae_run, tmp_path):
    """Two gloo processes (as tests/test_accelerate.py): one model, the main process encodes and copies."""
    import os
    import subprocess

    from flaresynth.train import DEBUG_RANK_DIR_ENV
    from test_accelerate import free_port

    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("accelerate launcher not installed")
    run, ranks = tmp_path / "run", tmp_path / "ranks"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="",
               **{DEBUG_RANK_DIR_ENV: str(ranks)})
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           "-m", "flaresynth", "train", "--data", str(data), "--out", str(run), "--preset", "tiny-latent",
           "--autoencoder", str(ae_run), "--device", "cpu", "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    info = [json.loads((ranks / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert [i["world_size"] for i in info] == [2, 2] and info[0]["param_digest"] == info[1]["param_digest"]
    assert (run / AUTOENCODER_DIR / "flaresynth.json").is_file() and not (run / "cache").exists()
    assert np.load(sample(run, tmp_path / "s", per_class=1) / "samples.npy").shape == (5, 1, 64, 64)
