"""Config, network, conditioning, loss and classifier-free guidance (no dataset, no files but YAML)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import flaresynth
from flaresynth.config import RunConfig, load_config, load_preset, save_config
from flaresynth.diffusion import (
    diffusion_loss,
    drop_mask,
    guided_combine,
    guided_output,
    loss_weights,
    make_sampler,
    make_scheduler,
    snr,
)
from flaresynth.errors import FlaresynthError
from flaresynth.models.conditioning import (
    Condition,
    RandomProjectionEncoder,
    as_encoder,
    flux_features,
)
from flaresynth.models.unet import build_denoiser, build_unet, count_parameters
from flaresynth.runs import load_encoder
from flaresynth.train import batch_indices, step_generator

N_CLASSES = 5


def tiny_denoiser(kind="discrete", seed=0, embed_dim=None):
    cfg = load_preset("tiny")
    torch.manual_seed(seed)
    return build_denoiser(cfg.model, 1, kind, N_CLASSES, flux_frequencies=4, embed_dim=embed_dim)


def batch(n=6, embed_dim=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(n, 1, 16, 16, generator=g) * 2 - 1
    labels = torch.arange(n) % N_CLASSES
    log_flux = -8.0 + labels.float() + torch.rand(n, generator=g)
    emb = torch.randn(n, embed_dim, generator=g) if embed_dim else None
    return x0, Condition(labels, log_flux, emb), g


# ------------------------------------------------------------------------------------------ config


def test_presets_load_and_round_trip_through_yaml(tmp_path):
    for name in ("demo", "paper", "paper128", "tiny"):
        cfg = load_preset(name)
        assert cfg.name == name
        save_config(cfg, tmp_path / f"{name}.yaml")
        assert load_config(tmp_path / f"{name}.yaml") == cfg
    assert load_preset("paper").diffusion.num_train_timesteps == 1000
    assert load_preset("paper").diffusion.beta_end == 0.02


def test_unknown_and_ill_typed_keys_name_the_key_and_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: 1e-3\n  leraning_rate: 3\n")
    with pytest.raises(FlaresynthError, match=r"bad.yaml: train.leraning_rate: unknown key"):
        load_config(bad)
    bad.write_text("train:\n  batch_size: many\n")
    with pytest.raises(FlaresynthError, match=r"bad.yaml: train.batch_size: expected a whole number"):
        load_config(bad)
    bad.write_text("model:\n  block_out_channels: [16, x]\n")
    with pytest.raises(FlaresynthError, match=r"model.block_out_channels\[1\]"):
        load_config(bad)
    bad.write_text("conditioning:\n  kind: text\n")
    with pytest.raises(FlaresynthError, match=r"conditioning.kind: 'text' unknown"):
        load_config(bad)
    bad.write_text("model:\n  sample_size: 16\n  block_out_channels: [32, 32]\n  attention_resolutions: [4]\n")
    with pytest.raises(FlaresynthError, match=r"attention_resolutions: 4 px is not a level"):
        load_config(bad)
    # YAML reads 1e-3 (no dot) as a string; a float field must still accept only numbers
    bad.write_text("train:\n  lr: fast\n")
    with pytest.raises(FlaresynthError, match=r"train.lr: expected a number, got 'fast'"):
        load_config(bad)


def test_fingerprint_ignores_run_length_but_not_the_recipe():
    a, b = load_preset("tiny"), load_preset("tiny")
    b.train.steps, b.train.checkpoint_every, b.sample.guidance = 999, 7, 5.0
    assert a.fingerprint() == b.fingerprint()
    b.train.lr = 0.5
    assert a.fingerprint() != b.fingerprint()
    c = load_preset("tiny")
    c.train.class_balance = 0.5
    assert c.fingerprint() != a.fingerprint()


def test_shipped_runs_still_have_the_fingerprint_they_were_trained_with():
    # a new config field must not change old runs' fingerprints, or they no longer resume
    shipped = [p for p in (Path(flaresynth.__file__).parent / "pretrained").glob("*/provenance.json")
               if "fingerprint" in json.loads(p.read_text())]
    assert len(shipped) >= 4
    for prov in shipped:
        assert load_config(prov.parent / "config.yaml").fingerprint() == json.loads(prov.read_text())["fingerprint"], prov


# ------------------------------------------------------------------------------------------ network


def test_paper_preset_has_the_papers_parameter_count():
    cfg = load_preset("paper")
    n = count_parameters(build_unet(cfg.model, 1, "discrete", N_CLASSES))
    # the paper's UNet_conditional: 23,332,737 parameters (fpramunno/Modelling_Solar_Image_with_DDPM)
    assert abs(n - 23_332_737) / 23_332_737 < 0.01, n


def test_discrete_model_uses_the_native_class_embedding_with_a_null_row():
    d = tiny_denoiser("discrete")
    assert d.unet.config.num_class_embeds == N_CLASSES + 1
    assert d.conditioner.native and not list(d.conditioner.parameters())
    for kind in ("continuous", "discrete+embedding"):
        other = tiny_denoiser(kind, embed_dim=12 if kind != "continuous" else None)
        assert other.unet.config.class_embed_type == "identity"
        assert not other.conditioner.native


# ------------------------------------------------------------------------------------------ loss


def test_one_training_step_lowers_the_loss_on_a_fixed_batch():
    cfg = load_preset("tiny")
    model = tiny_denoiser()
    sched = make_scheduler(cfg.diffusion)
    x0, cond, g = batch(8)
    t = torch.randint(0, 1000, (8,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    drop = torch.zeros(8, dtype=torch.bool)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = diffusion_loss(model, sched, x0, cond, drop, noise, t, cfg.diffusion)
    before.backward()
    opt.step()
    with torch.no_grad():
        after = diffusion_loss(model, sched, x0, cond, drop, noise, t, cfg.diffusion)
    assert after.item() < before.item()


def test_v_prediction_target_and_min_snr_weights():
    cfg = load_preset("tiny").diffusion
    cfg.prediction_type, cfg.loss_weighting, cfg.snr_gamma = "v_prediction", "min_snr", 5.0
    sched = make_scheduler(cfg)
    x0, cond, g = batch(4)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([1, 100, 500, 999])
    v = sched.get_velocity(x0, noise, t)
    exact = diffusion_loss(lambda *a: v, sched, x0, cond, torch.zeros(4, dtype=torch.bool), noise, t, cfg)
    wrong = diffusion_loss(lambda *a: noise, sched, x0, cond, torch.zeros(4, dtype=torch.bool), noise, t, cfg)
    assert exact.item() == 0.0 and wrong.item() > 0.0
    s = snr(sched, t)
    a = sched.alphas_cumprod[t]
    assert torch.allclose(s, a / (1 - a))
    w = loss_weights(sched, t, cfg)
    assert torch.allclose(w, torch.clamp(s, max=5.0) / (s + 1))
    cfg.prediction_type = "epsilon"
    w_eps = loss_weights(sched, t, cfg)
    assert w_eps[0] < 1e-2 and w_eps[-1] == pytest.approx(1.0)  # low noise is down-weighted, high noise not


# ------------------------------------------------------------------------------------------ guidance


def test_condition_dropout_with_p_uncond_1_makes_training_ignore_labels():
    cfg = load_preset("tiny")
    sched = make_scheduler(cfg.diffusion)

    def one_step(labels, p_uncond):
        model = tiny_denoiser("continuous")
        x0, cond, g = batch(6)
        cond = Condition(labels, labels.float() - 8.0)
        t = torch.randint(0, 1000, (6,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        drop = drop_mask(6, p_uncond, torch.Generator().manual_seed(0))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        diffusion_loss(model, sched, x0, cond, drop, noise, t, cfg.diffusion).backward()
        opt.step()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    a, b = torch.tensor([0, 1, 2, 3, 4, 0]), torch.tensor([4, 4, 3, 0, 1, 2])
    assert drop_mask(1000, 1.0).all() and not drop_mask(1000, 0.0).any()
    assert torch.equal(one_step(a, 1.0), one_step(b, 1.0))
    assert not torch.equal(one_step(a, 0.0), one_step(b, 0.0))


@pytest.mark.parametrize("kind", ["discrete", "continuous", "discrete+embedding"])
def test_batched_cfg_forward_equals_two_separate_forwards(kind):
    emb_dim = 12 if kind == "discrete+embedding" else None
    model = tiny_denoiser(kind, embed_dim=emb_dim).eval()
    # make the null condition differ from zero so the two passes really differ
    with torch.no_grad():
        for p in model.conditioner.parameters():
            p.add_(0.5 * torch.randn_like(p))
    x, cond, _ = batch(5, emb_dim)
    t = torch.tensor(321)
    w = 2.5
    with torch.no_grad():
        batched = guided_output(model, x, t, cond, w)
        c = model(x, t.expand(5), cond, torch.zeros(5, dtype=torch.bool))
        u = model(x, t.expand(5), cond, torch.ones(5, dtype=torch.bool))
    assert not torch.allclose(c, u)
    assert torch.allclose(batched, c + w * (c - u), atol=1e-5)
    assert torch.allclose(guided_output(model, x, t, cond, 0.0), c, atol=1e-5)


def test_cfg_weight_convention_matches_the_seed_codes_lerp():
    c, u = torch.randn(3, 4), torch.randn(3, 4)
    w = 2.0
    # fpramunno/Modelling_Solar_Image_with_DDPM: torch.lerp(uncond, cond, cfg_scale) with cfg_scale = w + 1
    assert torch.allclose(guided_combine(c, u, w), torch.lerp(u, c, w + 1), atol=1e-6)
    assert torch.equal(guided_combine(c, u, 0.0), c)


# ------------------------------------------------------------------------------------------ conditioning


def test_continuous_conditioning_accepts_any_flux_and_separates_them():
    model = tiny_denoiser("continuous")
    lf = torch.log10(torch.tensor([1e-9, 3e-6, 3.1e-6, 5e-5, 2e-2]))
    feats = flux_features(lf, 4)
    assert feats.shape == (5, 9) and torch.isfinite(feats).all()
    vec = model.conditioner(Condition(torch.zeros(5, dtype=torch.long), lf), torch.zeros(5, dtype=torch.bool))
    assert vec.shape == (5, model.unet.config.block_out_channels[0] * 4)
    assert len({tuple(v.tolist()) for v in vec}) == 5  # every flux, also X20 and A0.1, has its own vector


def test_image_encoders_plug_in():
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    enc = load_encoder("random:7:3")
    assert isinstance(enc, RandomProjectionEncoder) and enc.dim == 7
    e = enc.embed(x)
    assert e.shape == (3, 7)
    assert torch.equal(e, load_encoder("random:7:3").embed(x))  # fixed projection
    assert torch.allclose(enc.embed(torch.nn.functional.interpolate(x, 64)), e, atol=1e-6)  # size-independent
    wrapped = as_encoder(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(1024, 5)))
    assert wrapped.embed(x).shape == (3, 5) and wrapped.dim == 5
    for spec in ("nonsense", "random:x", "cevae:/nonexistent/cevae", "torchscript:/nonexistent.pt"):
        with pytest.raises(FlaresynthError):
            load_encoder(spec)


# ------------------------------------------------------------------------------------------ order, samplers


def test_batches_and_noise_are_a_function_of_seed_and_step():
    n, gb = 10, 4
    stream = np.concatenate([batch_indices(n, gb, m, seed=3) for m in range(5)])
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))  # epochs
    assert np.array_equal(batch_indices(n, gb, 2, 3), batch_indices(n, gb, 2, 3))
    assert not np.array_equal(batch_indices(n, gb, 0, 3), batch_indices(n, gb, 0, 4))
    a = torch.randn(3, generator=step_generator(0, 5, 0))
    assert torch.equal(a, torch.randn(3, generator=step_generator(0, 5, 0)))
    assert not torch.equal(a, torch.randn(3, generator=step_generator(0, 5, 1)))


def test_samplers_and_step_validation():
    conf = dict(make_scheduler(load_preset("tiny").diffusion).config)
    names = {"ddpm": "DDPMScheduler", "ddim": "DDIMScheduler", "dpm++": "DPMSolverMultistepScheduler",
             "unipc": "UniPCMultistepScheduler"}
    for name, cls in names.items():
        s = make_sampler(name, conf, 10)
        assert type(s).__name__ == cls and len(s.timesteps) == 10
    assert len(make_sampler("ddpm", conf).timesteps) == 1000
    assert len(make_sampler("dpm++", conf).timesteps) == 20
    assert make_sampler("dpm++", conf, 5).config.algorithm_type == "dpmsolver++"
    for bad in (0, 1001, 2.5):
        with pytest.raises(FlaresynthError, match="--steps"):
            make_sampler("ddpm", conf, bad)
    with pytest.raises(FlaresynthError, match="--sampler"):
        make_sampler("euler", conf, 10)
    # explicit timesteps: visited as given by the samplers that take them, refused by the others
    assert make_sampler("dpm++", conf, timesteps=[999, 699, 399, 99]).timesteps.tolist() == [999, 699, 399, 99]
    assert make_sampler("ddpm", conf, 3, timesteps=[900, 500, 0]).timesteps.tolist() == [900, 500, 0]
    for name, steps, timesteps, what in (("ddim", None, [999, 499], "the ddim sampler takes no explicit timesteps"),
                                         ("dpm++", None, [499, 999], "expected decreasing"),
                                         ("dpm++", None, [1000, 499], "expected decreasing"),
                                         ("dpm++", 3, [999, 499], "--steps 3: but --timesteps lists 2")):
        with pytest.raises(FlaresynthError, match=what):
            make_sampler(name, conf, steps, timesteps)


@pytest.mark.parametrize("name", ["dpm++", "unipc"])
def test_multistep_solvers_clip_the_predicted_image_like_ddpm_and_ddim(name):
    """With clip_sample (the default) every sampler keeps its x0 prediction in [-1, 1]; without it none does."""
    conf = dict(make_scheduler(load_preset("tiny").diffusion).config)
    assert conf["clip_sample"]
    sched = make_sampler(name, conf, 5)
    assert sched.config.thresholding and sched.config.sample_max_value == 1.0
    x0 = torch.linspace(-3, 3, 2 * 16).reshape(2, 1, 4, 4)
    np.testing.assert_array_equal(sched._threshold_sample(x0).numpy(), x0.clamp(-1, 1).numpy())
    assert not make_sampler(name, {**conf, "clip_sample": False}, 5).config.thresholding


def test_run_config_from_partial_dict_keeps_defaults():
    cfg = RunConfig.from_dict({"train": {"lr": 1}}, source="x")
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.diffusion.beta_start == 1e-4 and math.isclose(cfg.conditioning.p_uncond, 0.1)
