"""The 128 px activity3 generator on the latent route (issue 14 item 3): the autoencoder-demo128 and
activity3-latent128 presets, and a tiny run of the same structure end to end (128 px activity3 dataset ->
autoencoder -> latent DDPM -> one sample per level)."""

import json

import numpy as np
import pandas as pd

from flaresynth.config import RunConfig, load_preset
from flaresynth.labels import ACTIVITY3
from flaresynth.models.autoencoder import LatentAutoencoder, build_autoencoder
from flaresynth.models.unet import build_unet
from flaresynth.runs import AUTOENCODER_DIR, open_run
from flaresynth.sampling import sample
from flaresynth.train import train
from toy import make_dataset


def test_the_128px_presets_describe_an_activity3_latent_model():
    ae_cfg, ddpm = load_preset("autoencoder-demo128"), load_preset("activity3-latent128")
    assert ae_cfg.kind == "autoencoder" and ae_cfg.model.sample_size == 128
    ae = LatentAutoencoder(build_autoencoder(ae_cfg.autoencoder, 1, ae_cfg.model.sample_size))
    assert ae.latent_shape == (4, 16, 16)
    # the latent DDPM works on that latent: its side, and (from the autoencoder at train time) its channels
    assert ddpm.kind == "ddpm" and ddpm.latent.autoencoder is not None
    assert ddpm.model.sample_size == ae.latent_shape[1] and not ddpm.diffusion.clip_sample
    assert ddpm.conditioning.kind == "discrete" and ddpm.conditioning.p_uncond > 0 and ddpm.sample.guidance > 0
    assert ddpm.train.ema_decay > 0
    # discrete conditioning over the three activity levels: one class-embedding row per level plus the null one
    unet = build_unet(ddpm.model, ae.latent_shape[0], ddpm.conditioning.kind, len(ACTIVITY3))
    assert unet.config.num_class_embeds == len(ACTIVITY3) + 1 and unet.config.sample_size == 16


def _tiny(preset: str, **sections) -> RunConfig:
    """The shipped preset with small widths and 2 steps: the same structure (levels, latent side) at test cost."""
    d = load_preset(preset).to_dict()
    for section, values in sections.items():
        d[section].update(values)
    d["train"].update(steps=2, batch_size=4, warmup_steps=0, log_every=1, checkpoint_every=2, sample_every=0)
    return RunConfig.from_dict(d)


def test_tiny_128px_activity3_latent_run_samples_each_level(tmp_path):
    # GOES classes A..X cycle, so every activity level (low = A/B, medium = C, high = M/X) is in the train split
    data = make_dataset(tmp_path / "ds", n=15, n_train=10, size=128, scheme="activity3")
    ae_cfg = _tiny("autoencoder-demo128", autoencoder={"block_out_channels": [8, 8, 8, 8], "norm_num_groups": 4,
                                                       "mid_attention": False})
    ae = train(data, tmp_path / "ae", ae_cfg, progress=False)
    assert open_run(ae, "cpu").meta["autoencoder"]["latent_shape"] == [4, 16, 16]
    ddpm_cfg = _tiny("activity3-latent128", model={"block_out_channels": [8, 16], "norm_num_groups": 4,
                                                   "attention_resolutions": [8]})
    run = train(data, tmp_path / "run", ddpm_cfg, autoencoder=ae, progress=False)
    assert (run / AUTOENCODER_DIR / "flaresynth.json").is_file()
    opened = open_run(run, "cpu")
    assert opened.scheme == "activity3" and opened.classes == ACTIVITY3 and opened.image_shape == (1, 128, 128)
    out = sample(run, tmp_path / "s", per_class=1, sampler="ddim", steps=2)
    images = np.load(out / "samples.npy")
    table = pd.read_csv(out / "samples.csv")
    manifest = json.loads((out / "manifest.json").read_text())
    assert images.shape == (3, 1, 128, 128) and np.isfinite(images).all()
    assert sorted(table["label"]) == sorted(ACTIVITY3) and manifest["scheme"] == "activity3"
    assert list(table["condition_label"]) == [ACTIVITY3.index(c) for c in table["label"]]
    assert manifest["image_size"] == 128 and manifest["latent"]["latent_shape"] == [4, 16, 16]


def test_shipped_activity3_generator_is_a_128px_latent_run_with_its_own_autoencoder():
    """demo:activity3 (the two presets above, trained on the default period at --scheme activity3 --size 128):
    three levels at 128 px, decoded by the f = 8 autoencoder it carries, and the same images for the same seed."""
    run = open_run("demo:activity3", "cpu")
    assert (run.kind, run.scheme, run.classes, run.image_shape) == ("ddpm", "activity3", ACTIVITY3, (1, 128, 128))
    assert run.autoencoder is not None and (run.path / AUTOENCODER_DIR / "flaresynth.json").is_file()
    assert run.meta["config"]["name"] == "activity3-latent128"


def test_shipped_activity3_samples_reproduce_for_a_seed(tmp_path):
    a, b = (sample("demo:activity3", tmp_path / name, classes=["high"], per_class=2, sampler="ddim", steps=4,
                   fits=False, grid=False) for name in ("a", "b"))
    x = np.load(a / "samples.npy")
    assert x.shape == (2, 1, 128, 128) and np.isfinite(x).all() and x.std() > 0
    assert np.array_equal(x, np.load(b / "samples.npy"))
