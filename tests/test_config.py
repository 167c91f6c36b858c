"""Run configs: presets, YAML in and out, partial files, and one-line errors that name the file and the key."""

import pytest
import yaml

from flaresynth.config import PRESETS, RunConfig, load_config, load_preset, save_config
from flaresynth.errors import FlaresynthError


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_and_round_trips(name, tmp_path):
    cfg = load_preset(name)
    assert cfg.kind in ("ddpm", "cevae", "autoencoder")
    save_config(cfg, tmp_path / "config.yaml")
    back = load_config(tmp_path / "config.yaml")
    assert back == cfg and back.fingerprint() == cfg.fingerprint()


def test_a_partial_file_keeps_the_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.001\n  steps: 7\nsample:\n  guidance: 0\n")
    cfg = load_config(path)
    default = RunConfig()
    assert cfg.train.lr == 0.001 and cfg.train.steps == 7 and cfg.sample.guidance == 0.0
    assert cfg.model == default.model and cfg.diffusion == default.diffusion
    assert cfg.train.batch_size == default.train.batch_size
    # the paper's diffusion is the default (Ramunno et al. 2024: 1000 steps, linear beta 1e-4..0.02, epsilon)
    d = default.diffusion
    assert (d.num_train_timesteps, d.beta_schedule, d.beta_start, d.beta_end, d.prediction_type) == \
        (1000, "linear", 1e-4, 0.02, "epsilon")


@pytest.mark.parametrize(("text", "message"), [
    ("train:\n  lr: fast\n", "train.lr: expected a number, got 'fast'"),
    ("train:\n  steps: 2.5\n", "train.steps: expected a whole number"),
    ("train:\n  steps: true\n", "train.steps: expected a whole number"),
    ("trian:\n  lr: 0.1\n", "trian: unknown key"),
    ("model:\n  widths: [32]\n", "model.widths: unknown key"),
    ("model: 3\n", "model: expected a mapping"),
    ("kind: gan\n", "kind: 'gan' unknown, expected one of ddpm, cevae"),
    ("model:\n  attention_resolutions: [7]\n", "model.attention_resolutions: 7 px is not a level"),
    ("diffusion:\n  beta_start: 0.1\n  beta_end: 0.01\n", "diffusion.beta_start/beta_end"),
    ("conditioning:\n  kind: discrete+embedding\n", "conditioning.encoder: missing"),
    ("conditioning:\n  p_uncond: 1.5\n", "conditioning.p_uncond: 1.5"),
    ("conditioning:\n  embedding_noise: -0.5\n", "conditioning.embedding_noise: -0.5, expected >= 0"),
    ("conditioning:\n  embedding_noise: 0.5\n", "needs conditioning.kind discrete+embedding"),
    ("train:\n  ema_decay: 1.0\n", "train.ema_decay"),
    ("sample:\n  sampler: euler\n", "sample.sampler: 'euler' unknown"),
    ("sample:\n  timesteps: [499, 999]\n", "sample.timesteps: [499, 999], expected decreasing"),
    ("sample:\n  timesteps: [999, 499]\n  steps: 4\n", "sample.steps: 4, but sample.timesteps holds 2"),
    ("sample:\n  sampler: ddim\n  eta: 1.5\n", "sample.eta: 1.5, expected 0 <= eta <= 1"),
    ("sample:\n  sampler: dpm++\n  eta: 0.3\n", "sample.eta: 0.3 applies to the ddim sampler"),
    ("kind: cevae\nmodel:\n  sample_size: 24\ncevae:\n  fmap_sizes: [8, 16, 32, 64]\n", "cannot be halved 4 times"),
])
def test_bad_values_name_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(FlaresynthError) as exc:
        load_config(path)
    assert str(exc.value).startswith(f"{path}: ") and message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_unreadable_files_and_unknown_presets(tmp_path):
    with pytest.raises(FlaresynthError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("train:\n  lr: [1,\n")
    with pytest.raises(FlaresynthError, match=r"not valid YAML at line \d"):
        load_config(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(FlaresynthError, match="expected a mapping of sections"):
        load_config(tmp_path / "list.yaml")
    assert load_config(_write(tmp_path / "empty.yaml", "")) == RunConfig()
    with pytest.raises(FlaresynthError, match="preset 'huge': unknown"):
        load_preset("huge")


def _write(path, text):
    path.write_text(text)
    return path


def test_fingerprint_follows_what_a_training_step_computes():
    base = load_preset("tiny")
    same = RunConfig.from_dict(yaml.safe_load(yaml.safe_dump(base.to_dict())))
    same.train.steps, same.train.log_every, same.name = 99, 3, "renamed"
    same.sample.guidance = 5.0
    assert same.fingerprint() == base.fingerprint()  # length, logging and sampling defaults may change on resume
    other = RunConfig.from_dict(base.to_dict())
    other.train.lr *= 2
    assert other.fingerprint() != base.fingerprint()
    unused = RunConfig.from_dict(base.to_dict())
    unused.cevae.z_dim += 1  # a ddpm run does not use the cevae section
    assert unused.fingerprint() == base.fingerprint()


def test_embedding_noise_is_part_of_the_fingerprint_when_set():
    # at 0 it is left out, so runs from before the key existed resume: the shipped runs' fingerprint tests
    # (tests/test_train.py, tests/test_diffusion.py) check that
    fingerprints = set()
    for noise in (0.0, 0.5, 1.0):
        cfg = load_preset("demo64-latent-embedding")
        cfg.conditioning.embedding_noise = noise
        fingerprints.add(cfg.fingerprint())
    assert len(fingerprints) == 3
