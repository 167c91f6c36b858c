"""The ceVAE: network, loss, training through the shared loop, class-Gaussian sampling, the frozen encoder."""

import json
import shutil

import numpy as np
import pytest
import torch

import flaresynth.train
from flaresynth.config import RunConfig, load_config, load_preset, save_config
from flaresynth.dataset import open_dataset
from flaresynth.diffusion import drop_mask, sample_timesteps
from flaresynth.errors import FlaresynthError
from flaresynth.models.cevae import (
    CeVAE,
    ClassGaussians,
    decode,
    encode_means,
    fit_class_gaussians,
    parameter_count,
)
from flaresynth.models.conditioning import Condition
from flaresynth.runs import load_encoder, open_run, read_meta, write_meta
from flaresynth.samples import open_samples
from flaresynth.train import (
    DiffusionObjective,
    augment_embedding,
    cevae_loss,
    context_mask,
    kl_divergence,
    latest_checkpoint,
    load_training_data,
    read_checkpoint,
    reconstruction_loss,
    refit_class_latents,
    train,
)
from flaresynth.transforms import channel_transforms, resample
from toy import cli_here, make_dataset, toy_images


def tiny_cevae(steps=4, **train_keys) -> RunConfig:
    cfg = load_preset("cevae-tiny")
    cfg.train.steps = steps
    for k, v in train_keys.items():
        setattr(cfg.train, k, v)
    return cfg


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "ds")


@pytest.fixture(scope="module")
def run(ds, tmp_path_factory):
    """A tiny ceVAE trained 6 steps (EMA weights, class Gaussians, a training grid at step 3)."""
    return train(ds, tmp_path_factory.mktemp("runs") / "cevae", tiny_cevae(steps=6, sample_every=3), progress=False)


# ------------------------------------------------------------------------------------------ network and loss


def test_shapes_parameters_and_save_round_trip_at_every_size(tmp_path):
    for size, z, fmaps in ((32, 128, [16, 64, 256, 1024]), (64, 16, [8, 16, 32]), (128, 4, [4, 4])):
        assert parameter_count(size, z, fmaps) == sum(p.numel() for p in CeVAE(1, size, z, fmaps).parameters())
    assert parameter_count(64) == 13_280_656  # the FHNW network (16/64/256/1024, z 128) at 64 px
    m = CeVAE(in_channels=2, sample_size=32, z_dim=6, fmap_sizes=[4, 8])
    x = torch.rand(3, 2, 32, 32) * 2 - 1
    x_rec, mu, logvar = m(x, torch.randn(3, 6))
    assert x_rec.shape == x.shape and mu.shape == logvar.shape == (3, 6)
    m.save_pretrained(tmp_path / "m")
    back = CeVAE.from_pretrained(tmp_path / "m")
    assert not back.training and back.describe() == m.describe()
    torch.testing.assert_close(back.encode(x)[0], m.encode(x)[0], rtol=0, atol=0)
    with pytest.raises(FlaresynthError, match="cannot be halved"):
        CeVAE(1, 24, 8, [8, 16, 32, 64])
    with pytest.raises(FlaresynthError, match="expected"):
        m.encode(torch.zeros(1, 1, 32, 32))


def test_loss_is_the_fhnw_weighting_of_vae_and_context_encoder_terms():
    torch.manual_seed(0)
    m = CeVAE(1, 16, 8, [8, 16, 32])
    x = torch.from_numpy(toy_images(6, 16)[0])
    loss, parts = cevae_loss(m, x, torch.Generator().manual_seed(3), ce_factor=0.3, beta=0.2)
    # recompute from the same random stream: mask first, then one ε for the batch and its masked copy
    g = torch.Generator().manual_seed(3)
    masked = context_mask(x, g)
    eps = torch.randn(12, 8, generator=g)
    x_rec, mu, logvar = m(torch.cat([x, masked]), eps)
    rec = (x_rec[:6] - x).abs().mean()
    kl = (0.5 * (mu[:6] ** 2 + logvar[:6].exp() - 1 - logvar[:6])).mean()
    ce = (x_rec[6:] - x).abs().mean()
    torch.testing.assert_close(loss, 0.7 * (rec + 0.2 * kl) + 0.3 * ce)
    torch.testing.assert_close(torch.stack([parts["rec"], parts["kl"], parts["ce"]]), torch.stack([rec, kl, ce]).detach())
    assert kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3)) == 0
    assert reconstruction_loss(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), "mse") == 1
    # ce_factor 0: a plain VAE, no masked copies
    loss0, parts0 = cevae_loss(m, x, torch.Generator().manual_seed(3), ce_factor=0.0, beta=0.2)
    assert "ce" not in parts0 and torch.isclose(loss0, parts0["rec"] + 0.2 * parts0["kl"])
    # flare_weight: each pixel's error (of the image and of its masked copy) times 1 + w·((x + 1)/2)^4 of the image
    loss_w, parts_w = cevae_loss(m, x, torch.Generator().manual_seed(3), ce_factor=0.3, beta=0.2, flare_weight=5.0)
    w = 1 + 5.0 * ((x + 1) / 2).clamp(0, 1) ** 4
    rec_w, ce_w = ((x_rec[:6] - x).abs() * w).mean(), ((x_rec[6:] - x).abs() * w).mean()
    torch.testing.assert_close(loss_w, 0.7 * (rec_w + 0.2 * kl) + 0.3 * ce_w)
    assert parts_w["rec"] > parts["rec"]


def test_context_masks_paint_squares_inside_each_images_range():
    x = torch.from_numpy(toy_images(64, 16, seed=1)[0])
    out = context_mask(x, torch.Generator().manual_seed(0), max_squares=2, max_fraction=0.5)
    again = context_mask(x, torch.Generator().manual_seed(0), max_squares=2, max_fraction=0.5)
    assert torch.equal(out, again) and out.shape == x.shape
    changed = (out != x).flatten(1)
    n_changed = changed.sum(1)
    assert (n_changed == 0).any() and (n_changed > 0).sum() > 30  # some images untouched, most painted
    assert n_changed.max() <= 2 * 7 * 7  # at most two squares of side < 16/2
    for i in torch.nonzero(n_changed > 0).flatten():
        vals = out[i].flatten()[changed[i]]
        assert x[i].min() <= vals.min() and vals.max() <= x[i].max()
        assert len(torch.unique(vals)) <= 2  # one fill value per square
    assert torch.equal(context_mask(x, torch.Generator(), max_squares=0), x)


def test_reconstruction_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    m = CeVAE(1, 16, 8, [8, 16, 32])
    x = torch.from_numpy(toy_images(16, 16, seed=2)[0])
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)

    def rec_of_means():
        with torch.no_grad():
            return reconstruction_loss(m(x)[0], x).item()

    before = rec_of_means()
    for _ in range(150):
        loss, _ = cevae_loss(m, x, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = rec_of_means()
    assert after < 0.4 * before, (before, after)


# ------------------------------------------------------------------------------------------ class Gaussians


def test_class_gaussians_fit_and_sample_the_fitted_mean_and_covariance(tmp_path):
    rng = np.random.default_rng(0)
    d = 4
    a = rng.standard_normal((d, d))
    true_cov = a @ a.T + 0.5 * np.eye(d)
    z0 = rng.multivariate_normal([1.0, -2.0, 0.5, 3.0], true_cov, size=300)
    z1 = rng.normal(0, 1, (50, d)) * [1, 2, 3, 4]
    lone = np.array([[5.0, 5.0, 5.0, 5.0]])
    latents = np.concatenate([z0, z1, lone])
    labels = np.array([0] * 300 + [2] * 50 + [3])
    g = fit_class_gaussians(latents, labels, ["A", "B", "C", "M"], ridge=1e-2)
    assert list(g.counts) == [300, 0, 50, 1] and list(g.fallback) == [False, False, False, True]
    cov0 = np.cov(z0, rowvar=False)
    np.testing.assert_allclose(g.means[0], z0.mean(0))
    np.testing.assert_allclose(g.covs[0], cov0 + 1e-2 * np.trace(cov0) / d * np.eye(d))
    assert np.isnan(g.means[1]).all()
    # a lone image: its latent, with the diagonal of the pooled within-class covariance
    pooled = (299 * cov0 + 49 * np.cov(z1, rowvar=False)) / 348
    np.testing.assert_allclose(g.means[3], lone[0])
    np.testing.assert_allclose(g.covs[3], np.diag(np.diag(pooled)) + 1e-2 * np.trace(pooled) / d * np.eye(d))
    # draws reproduce the stored mean and covariance
    g.save(tmp_path / "g.npz")
    back = ClassGaussians.load(tmp_path / "g.npz")
    assert back.classes == ("A", "B", "C", "M")
    draws = back.sample(back.index("A"), range(20000))
    np.testing.assert_allclose(draws.mean(0), g.means[0], atol=4 * np.sqrt(np.diag(g.covs[0]).max() / 20000))
    emp = np.cov(draws, rowvar=False)
    scale = np.sqrt(np.outer(np.diag(g.covs[0]), np.diag(g.covs[0])))
    assert np.abs(emp - g.covs[0]).max() / scale.max() < 0.05
    # a draw depends only on its own seed
    np.testing.assert_allclose(back.sample(0, [7])[0], back.sample(0, [3, 5, 7])[2], rtol=1e-12)
    with pytest.raises(FlaresynthError, match="no fitted latent Gaussian"):
        back.index("B")


def test_class_mixtures_find_a_classs_modes_and_draw_them_in_proportion(tmp_path):
    rng = np.random.default_rng(1)
    d = 6
    modes = np.array([[4.0] * d, [-4.0] * d])
    two = np.concatenate([modes[0] + rng.normal(0, 0.5, (90, d)), modes[1] + rng.normal(0, 0.5, (30, d))])
    few = rng.normal(0, 1, (9, d))  # under 2 x IMAGES_PER_COMPONENT: keeps its single Gaussian
    latents, labels = np.concatenate([two, few]), np.array([0] * 120 + [1] * 9)
    single = fit_class_gaussians(latents, labels, ["A", "B"])
    g = fit_class_gaussians(latents, labels, ["A", "B"], components=2)
    assert single.mix_weights is None and g.summary()["components"] == [2, 1]
    np.testing.assert_allclose(g.means, single.means)  # the class moments stay what they were
    np.testing.assert_allclose(g.covs, single.covs)
    order = np.argsort(-g.mix_means[0, :, 0])
    np.testing.assert_allclose(g.mix_means[0, order], [two[:90].mean(0), two[90:].mean(0)], atol=1e-6)
    np.testing.assert_allclose(g.mix_weights[0, order], [0.75, 0.25], atol=1e-6)
    # the mixture's draws sit at the two modes in those shares; the single Gaussian's mostly between them
    draws, plain = g.sample(0, range(4000)), single.sample(0, range(4000))
    assert abs((draws[:, 0] > 0).mean() - 0.75) < 0.03
    assert (np.abs(np.abs(draws[:, 0]) - 4) < 2).mean() > 0.97 > 0.6 > (np.abs(np.abs(plain[:, 0]) - 4) < 1).mean()
    np.testing.assert_array_equal(g.sample(1, range(50)), single.sample(1, range(50)))
    # saved compactly (float16 factors) and loaded back: the same draws to float16 precision, each from its own seed
    g.save(tmp_path / "g.npz")
    back = ClassGaussians.load(tmp_path / "g.npz")
    assert back.summary() == g.summary()
    np.testing.assert_allclose(back.sample(0, range(200)), g.sample(0, range(200)), atol=2e-2)
    np.testing.assert_allclose(back.sample(0, [7])[0], back.sample(0, [3, 5, 7])[2], rtol=1e-12)
    with pytest.raises(FlaresynthError, match="class components 0"):
        fit_class_gaussians(latents, labels, ["A", "B"], components=0)


# ------------------------------------------------------------------------------------------ the training loop


def test_train_writes_a_cevae_run_and_resume_reproduces_it(ds, run, tmp_path):
    log = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3, 4, 5, 6]
    assert {"loss", "loss_rec", "loss_kl", "loss_ce", "images_per_s"} <= set(log[0])
    assert (run / "samples" / "step-0000003.png").stat().st_size > 1000  # class-Gaussian grid, EMA weights
    files = {p.name for p in (run / "model").iterdir()}
    assert files == {"config.json", "model.safetensors", "flaresynth.json", "latent_classes.npz"}
    opened = open_run(run, "cpu")
    model, meta = opened.network, opened.meta
    assert opened.kind == "cevae" and meta["model_type"] == "cevae" and meta["sample_size"] == 16 and meta["step"] == 6
    assert meta["latent_classes"]["counts"] == [6, 6, 6, 6, 6]
    # the saved weights are the EMA weights
    state = read_checkpoint(latest_checkpoint(run))
    ema = dict(zip([k for k, _ in model.named_parameters()], state["ema"]["shadow_params"], strict=True))
    assert torch.equal(model.encoder[0].weight, ema["encoder.0.weight"])
    assert not torch.equal(ema["encoder.0.weight"], state["model"]["encoder.0.weight"])
    # the class Gaussians are those of the training latents under the saved weights
    d = open_dataset(ds)
    idx = d.split_indices("train")
    x = resample(np.asarray(d.images[idx]), channel_transforms(d.manifest["transform"], 1), 16)
    mu = encode_means(model, torch.from_numpy(x)).numpy()
    g = ClassGaussians.load(run / "model" / "latent_classes.npz")
    labels = d.label_index()[idx]
    np.testing.assert_allclose(g.means[4], mu[labels == 4].mean(0), rtol=1e-5, atol=1e-6)

    # CLI: --config YAML, stop at 3, resume to 6: the same weights as the uninterrupted library run (whose
    # training grid at step 3 left the weights and the random streams alone)
    cfg_path = tmp_path / "cevae.yaml"
    save_config(tiny_cevae(steps=6), cfg_path)
    r = cli_here("train", "--data", str(ds), "--out", str(tmp_path / "cut"), "--config", str(cfg_path), "--max-steps", "3",
            "--no-progress")
    assert r.returncode == 0, r.stderr
    assert latest_checkpoint(tmp_path / "cut").name == "step-0000003"
    r = cli_here("train", "--data", str(ds), "--out", str(tmp_path / "cut"), "--resume", "--no-progress")
    assert r.returncode == 0, r.stderr
    a = read_checkpoint(latest_checkpoint(run))
    b = read_checkpoint(latest_checkpoint(tmp_path / "cut"))
    assert a["step"] == b["step"] == 6
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for u, v in zip(a["ema"]["shadow_params"], b["ema"]["shadow_params"], strict=True):
        assert torch.equal(u, v)


def test_cevae_config_keys_are_checked_and_the_ddpm_fingerprint_ignores_them(tmp_path):
    bad = tmp_path / "bad.yaml"
    for text, needle in [
        ("kind: gan\n", r"kind: 'gan' unknown"),
        ("kind: cevae\ncevae:\n  ce_factor: 1.5\n", r"cevae.ce_factor: 1.5"),
        ("kind: cevae\ncevae:\n  rec_loss: l3\n", r"cevae.rec_loss: 'l3' unknown"),
        ("kind: cevae\nmodel:\n  sample_size: 24\n", r"model.sample_size: 24 cannot be halved 4 times"),
        ("kind: cevae\ncevae:\n  zdim: 3\n", r"cevae.zdim: unknown key"),
        ("sample:\n  embedding_source: nearest\n", r"sample.embedding_source: 'nearest' unknown"),
        ("kind: cevae\ncevae:\n  class_components: 0\n", r"cevae.class_components: 0, expected a whole number"),
        ("kind: cevae\ncevae:\n  flare_weight: -1\n", r"cevae.flare_weight"),
    ]:
        bad.write_text(text)
        with pytest.raises(FlaresynthError, match=needle):
            load_config(bad)
    # the ceVAE ignores U-Net keys (a 16 px ceVAE with the default attention resolutions is fine)
    assert load_preset("cevae-tiny").model.attention_resolutions == [32, 16, 8]
    a, b = load_preset("tiny"), load_preset("tiny")
    b.cevae.z_dim = 3
    assert a.fingerprint() == b.fingerprint()
    c, e = load_preset("cevae-tiny"), load_preset("cevae-tiny")
    e.diffusion.beta_end = 0.03
    assert c.fingerprint() == e.fingerprint()
    e.cevae.class_components = 8  # fitted after training: a run refitted with it still resumes
    assert c.fingerprint() == e.fingerprint()
    e.cevae.flare_weight = 10.0  # a later key: at 0 it hashes as before, otherwise it changes a training step
    assert c.fingerprint() != e.fingerprint()
    e.cevae.flare_weight = 0.0
    assert c.fingerprint() == e.fingerprint()
    e.cevae.beta = 0.5
    assert c.fingerprint() != e.fingerprint()


# ------------------------------------------------------------------------------------------ the encoder


def test_encoder_gives_repeatable_latent_means_whatever_the_batch(ds, run):
    enc = load_encoder(f"cevae:{run}")
    assert enc.dim == 8
    images = torch.from_numpy(np.array(open_dataset(ds).images[:9]))  # 32 px: resized to the model's 16
    a = enc.embed(images)
    b = enc.embed(images)
    c = torch.cat([enc.embed(images[i : i + 4]) for i in range(0, 9, 4)])
    d = enc.embed(images[5:6])
    assert a.shape == (9, 8) and a.dtype == torch.float32
    assert torch.equal(a, b)  # the same images in the same batches: bit for bit
    # in other batches only the last bits may change (the encoder runs batched; kernels are chosen by shape)
    torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a[5:6], d, rtol=1e-4, atol=1e-5)
    # the latent MEAN: the model's encoder output at the model's resolution, no sampling
    opened = open_run(run, "cpu")
    model = opened.network
    x16 = resample(images.numpy(), opened.transforms(), 16)
    with torch.no_grad():
        mu, _ = model.encode(torch.from_numpy(x16))
    torch.testing.assert_close(a, mu, rtol=1e-4, atol=1e-5)
    with pytest.raises(FlaresynthError, match=r"takes images of 1 channel\(s\), got 3 channel\(s\)"):
        enc.embed(torch.zeros(2, 3, 16, 16))
    with pytest.raises(FlaresynthError, match="model/flaresynth.json: missing"):
        load_encoder(f"cevae:{ds}")


def test_embedding_ddpm_trains_and_samples_with_the_cevae_encoder(ds, run, tmp_path):
    cfg = load_preset("tiny")
    cfg.train.steps = 2
    cfg.conditioning.kind = "discrete+embedding"
    cfg.conditioning.encoder = f"cevae:{run}"
    save_config(cfg, tmp_path / "ddpm.yaml")
    r = cli_here("train", "--data", str(ds), "--out", str(tmp_path / "ddpm"), "--config", str(tmp_path / "ddpm.yaml"),
            "--no-progress")
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "ddpm" / "model" / "flaresynth.json").read_text())
    assert meta["conditioning"]["embed_dim"] == 8
    assert meta["encoder_id"] == json.loads((run / "model" / "flaresynth.json").read_text())["model_id"]
    # the class means the DDPM stores are the means of the encoder's embeddings of the training images
    from safetensors.torch import load_file

    stored = load_file(str(tmp_path / "ddpm" / "model" / "conditioner.safetensors"))["class_mean_embedding"]
    d = open_dataset(ds)
    idx = d.split_indices("train")
    emb = load_encoder(f"cevae:{run}").embed(torch.from_numpy(np.asarray(d.images[idx])))
    labels = torch.from_numpy(d.label_index()[idx])
    torch.testing.assert_close(stored[3], emb[labels == 3].mean(0))

    out = tmp_path / "s"
    r = cli_here("sample", "--run", str(tmp_path / "ddpm"), "--out", str(out), "--classes", "A,M", "--per-class", "2",
            "--sampler", "dpm++", "--steps", "2", "--embedding-source", "class-gaussian", "--no-progress")
    assert r.returncode == 0, r.stderr
    s = open_samples(out)
    assert s.images.shape == (4, 1, 16, 16) and s.manifest["embedding_source"] == "class-gaussian"
    assert np.isfinite(s.images).all()

    from flaresynth.sampling import build_requests, generate, request_embeddings

    m = open_run(tmp_path / "ddpm")
    table = build_requests(m, classes=["C", "X"], per_class=3, seed=4)
    mean_emb, _ = request_embeddings(m, table, "class-mean")
    torch.testing.assert_close(mean_emb[0], stored[2])
    gauss_emb, _ = request_embeddings(m, table, "class-gaussian")
    assert not torch.equal(gauss_emb[0], gauss_emb[1])  # a draw per image
    img_emb, rows = request_embeddings(m, table, "image", ds)
    assert list(d.labels["label"].iloc[rows]) == ["C"] * 3 + ["X"] * 3
    assert (d.labels["split"].iloc[rows] == "train").all()
    torch.testing.assert_close(img_emb, load_encoder(f"cevae:{run}").embed(torch.from_numpy(np.asarray(d.images[rows]))))
    a = generate(m, table, "ddim", 2, 1.0, embeddings=img_emb)
    b = generate(m, table, "ddim", 2, 1.0, embeddings=mean_emb)
    assert a.shape == (6, 1, 16, 16) and not np.allclose(a, b)  # the embedding reaches the network
    with pytest.raises(FlaresynthError, match="needs --embedding-data"):
        request_embeddings(m, table, "image")
    # the ceVAE named by the config was retrained since (another model id): its embeddings are refused, one line
    m.meta["encoder_id"] = "cevae-cevae-0000000000000000@1"
    with pytest.raises(FlaresynthError, match=r"is now cevae-.*trained on the embeddings of cevae-cevae-0000000000000000@1"):
        request_embeddings(m, table, "image", ds)
    assert request_embeddings(m, table, "image", ds, encoder=load_encoder(f"cevae:{run}"))[0].shape == img_emb.shape


def test_an_embedding_run_does_not_resume_on_another_encoder_under_the_same_name(ds, run, tmp_path, monkeypatch):
    encoder = tmp_path / "cevae"
    shutil.copytree(run, encoder)
    cfg = load_preset("tiny")
    cfg.train.steps = 3
    cfg.conditioning.kind = "discrete+embedding"
    cfg.conditioning.encoder = f"cevae:{encoder}"
    train(ds, tmp_path / "ddpm", cfg, max_steps=2, progress=False)
    # the folder the config names now holds another ceVAE (its model id differs): the embeddings would change
    meta = read_meta(encoder / "model")
    write_meta(encoder / "model", {**meta, "model_id": "cevae-cevae-0000000000000000@1"})
    cached = []
    monkeypatch.setattr(flaresynth.train, "write_training_cache", lambda *a, **k: cached.append(a))
    with pytest.raises(FlaresynthError, match=r"step-0000002: trained on the embeddings of encoder cevae-.*, "
                                              r"cevae:.* is now cevae-cevae-0000000000000000@1"):
        train(ds, tmp_path / "ddpm", resume=True, progress=False)
    assert cached == []  # refused before the split was embedded by the other encoder
    monkeypatch.undo()
    write_meta(encoder / "model", meta)
    # the same encoder: the resume goes on, and loads it once (for the check and the cache alike)
    loads = []
    load = flaresynth.train.load_encoder
    monkeypatch.setattr(flaresynth.train, "load_encoder", lambda *a: loads.append(a) or load(*a))
    train(ds, tmp_path / "ddpm", resume=True, progress=False)
    assert len(loads) == 1
    assert json.loads((tmp_path / "ddpm" / "model" / "flaresynth.json").read_text())["encoder_id"] == meta["model_id"]


def test_embedding_noise_is_drawn_at_the_within_class_spread_and_reaches_the_network(ds, run):
    cfg = load_preset("tiny")
    cfg.conditioning.kind = "discrete+embedding"
    cfg.conditioning.encoder = f"cevae:{run}"
    d = open_dataset(ds)
    data = load_training_data(d, cfg)
    emb, labels = data["cond"].embedding, data["cond"].labels
    spread = torch.stack([emb[i] - emb[labels == labels[i]].mean(0) for i in range(len(emb))]).std(0)
    torch.testing.assert_close(data["embedding_within_class_std"], spread)

    # the noise has the asked per-dimension std (zero where asked zero), drawn from the step's generator
    n, std = 20000, torch.tensor([0.0, 0.5, 2.0])
    cond = Condition(torch.zeros(n, dtype=torch.long), torch.zeros(n), torch.ones(n, 3))
    noised = augment_embedding(cond, std, torch.Generator().manual_seed(0))
    delta = noised.embedding - cond.embedding
    assert torch.equal(delta[:, 0], torch.zeros(n))
    torch.testing.assert_close(delta[:, 1:].std(0), std[1:], rtol=0.03, atol=0)
    assert torch.equal(noised.labels, cond.labels)
    again = augment_embedding(cond, std, torch.Generator().manual_seed(0))
    assert torch.equal(again.embedding, noised.embedding)

    # in the loss: without embedding_noise the draws are the earlier runs' (timesteps, noise, dropout, nothing
    # more); with it the loss changes, so the noised embedding is what the network sees
    cfg.model.in_channels = data["images"].shape[1]  # train() sets it from the dataset
    objective = DiffusionObjective(cfg, data, d.classes)
    torch.manual_seed(0)
    model = objective.build_model()
    x0 = data["images"][:8]
    batch = data["cond"].index(torch.arange(8))
    g0, g1 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    with torch.no_grad():
        plain = objective.loss(model, x0, batch, g0)
        cfg.conditioning.embedding_noise = 1.0
        noisy = objective.loss(model, x0, batch, g1)
    ref = torch.Generator().manual_seed(3)
    sample_timesteps(8, cfg.diffusion.num_train_timesteps, ref)
    torch.randn(x0.shape, generator=ref)
    drop_mask(8, cfg.conditioning.p_uncond, ref)
    assert torch.equal(g0.get_state(), ref.get_state())
    assert not torch.equal(g1.get_state(), ref.get_state())
    assert not torch.isclose(plain, noisy)


# ------------------------------------------------------------------------------------------ the baseline generator


def test_cevae_samples_folder_is_the_ddpm_format_and_evaluation_reads_it(ds, run, tmp_path):
    import sunpy.map
    from astropy.io import fits

    from flaresynth.evaluate import EvaluateConfig, evaluate
    from flaresynth.sampling import sample
    from flaresynth.transforms import IntensityTransform

    out = tmp_path / "s"
    r = cli_here("sample", "--run", str(run), "--out", str(out), "--classes", "A,X", "--flux", "3e-5", "--per-class", "3",
            "--seed", "5", "--no-progress")
    assert r.returncode == 0, r.stderr
    s = open_samples(out)
    assert s.images.shape == (9, 1, 16, 16) and s.images.dtype == np.float32
    assert list(s.table["label"]) == ["A"] * 3 + ["X"] * 3 + [""] * 3
    assert list(s.table["seed"]) == list(range(5, 14))
    assert s.manifest["generator"] == "flaresynth-cevae" and s.manifest["counts"]["X"] == 3
    assert np.abs(s.images).max() <= 1 and np.ptp(np.asarray(s.images), axis=0).max() > 0
    assert (out / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    path = out / s.table["file"].iloc[7]
    assert isinstance(sunpy.map.Map(path), sunpy.map.sources.AIAMap)
    h = fits.getheader(path)
    assert (h["GOESCLS"], h["SAMPLER"], h["SEED"], h["BUNIT"]) == ("M", "cevae-class-gaussian", 12, "DN/s")
    tr = IntensityTransform.from_dict(s.manifest["transform"])
    np.testing.assert_allclose(fits.getdata(path), tr.inverse(np.asarray(s.images[7, 0])), rtol=1e-5)

    # image i is the decoded draw of its class Gaussian with seed i
    cr = open_run(run)
    z = cr.gaussians.sample(cr.gaussians.index("X"), [8])
    np.testing.assert_allclose(s.images[3], decode(cr.network, torch.from_numpy(z).float())[0].numpy(), atol=1e-5)
    again = sample(run, tmp_path / "again", classes=["X"], per_class=1, seed=8, fits=False, grid=False)
    np.testing.assert_allclose(open_samples(again).images[0], s.images[3], atol=1e-5)
    # DDPM sampler settings do not apply and are ignored (one call for every generator); embeddings are an error
    same = sample(run, tmp_path / "same", classes=["X"], per_class=1, seed=8, sampler="ddim", steps=3, guidance=2.0,
                  fits=False, grid=False)
    assert open_samples(same).manifest["sampler"] == "cevae-class-gaussian"
    np.testing.assert_allclose(open_samples(same).images[0], s.images[3], atol=1e-5)
    with pytest.raises(FlaresynthError, match="--embedding-source: not used by a ceVAE run"):
        sample(run, tmp_path / "g", embedding_source="image")

    result = evaluate(ds, out, tmp_path / "eval", EvaluateConfig(features=["domain"], repeats=1, clusters=2,
                                                                 figures=False, referee="off", judge_max_epochs=2))
    assert result["metrics"] and (tmp_path / "eval" / "metrics.json").is_file()
    assert result["generated"]["generator"] == "flaresynth-cevae" and result["generated"]["n"] == 9


def test_a_runs_class_latents_are_refitted_as_at_the_end_of_training_and_sampled_as_mixtures(ds, run, tmp_path, capsys):
    from flaresynth.sampling import sample

    copy = tmp_path / "cevae"
    shutil.copytree(run, copy)
    trained = ClassGaussians.load(copy / "model" / "latent_classes.npz")
    again = refit_class_latents(copy, ds, 1)
    np.testing.assert_allclose(again.means, trained.means, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(again.covs, trained.covs, rtol=1e-4, atol=1e-7)
    # 6 training images a class: too few for 2 components (5 each), so every class keeps its Gaussian; the count a
    # former mixture fit recorded goes with it
    meta = read_meta(copy / "model")
    write_meta(copy / "model", {**meta, "latent_classes": {**meta["latent_classes"], "components": [8] * 5}})
    assert refit_class_latents(copy, ds, 2).mix_weights is None
    assert load_config(copy / "config.yaml").cevae.class_components == 2
    assert open_run(copy).meta["config"]["cevae"]["class_components"] == 2
    assert "components" not in open_run(copy).meta["latent_classes"]  # no mixture: no stale count either
    # the command line's door to the same refit
    r = cli_here("refit", "--run", str(copy), "--data", str(ds), "--components", "1", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["counts"] == [int(n) for n in again.counts]
    assert load_config(copy / "config.yaml").cevae.class_components == 1
    r = cli_here("refit", "--run", "demo:cevae", "--data", str(ds), "--components", "2")
    assert r.returncode == 2 and "not a run folder" in r.stderr
    # a mixture file (as a larger class gets) is what the run samples from, image i from seed i alone
    rng = np.random.default_rng(0)
    latents = np.concatenate([rng.normal(c, 0.1, (20, trained.dim)) for c in (-1.0, 1.0)] * 5)
    mixture = fit_class_gaussians(latents, np.repeat(np.arange(5), 40), trained.classes, components=2)
    mixture.save(copy / "model" / "latent_classes.npz")
    s = open_samples(sample(copy, tmp_path / "s", classes=["X"], per_class=3, seed=4, fits=False, grid=False))
    z = open_run(copy).gaussians.sample(4, [5])
    np.testing.assert_allclose(s.images[1], decode(open_run(copy).network, torch.from_numpy(z).float())[0].numpy(),
                               atol=1e-5)
    assert s.manifest["latent_classes"]["components"] == [2] * 5
    # bad input: a shipped name, another dataset, a bad count; the files stay as they were
    before = (copy / "model" / "latent_classes.npz").read_bytes()
    other = make_dataset(tmp_path / "other", seed=3)
    for target, data, k, what in (("demo:cevae", ds, 2, "not a run folder"), (copy, other, 2, "data_hash"),
                                  (copy, ds, 0, "cevae.class_components: 0")):
        with pytest.raises(FlaresynthError, match=what):
            refit_class_latents(target, data, k)
    assert (copy / "model" / "latent_classes.npz").read_bytes() == before
