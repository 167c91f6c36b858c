"""Feature encoders: tiny CLIP / DINOv2 towers from local folders (offline), EfficientNet-Lite0, errors."""

import importlib.util
import json
import os
import sys

import numpy as np
import pytest

from flaresynth.errors import FlaresynthError
from flaresynth.metrics.features import (
    encoder_name,
    fd_metric_name,
    make_encoder,
    parse_feature_specs,
)


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    """Tiny randomly initialised CLIP and DINOv2 vision towers saved with save_pretrained."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, Dinov2Config, Dinov2Model
    from transformers.utils import logging as hf_logging

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    hf_logging.disable_progress_bar()
    root = tmp_path_factory.mktemp("towers")
    torch.manual_seed(0)
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                          num_attention_heads=2, image_size=32, patch_size=8, projection_dim=24))
    clip.save_pretrained(root / "clip")
    dino = Dinov2Model(Dinov2Config(hidden_size=40, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                    image_size=28, patch_size=14))
    dino.save_pretrained(root / "dinov2")
    # a preprocessor config, as real DINOv2 folders have: its crop size and normalisation must be used
    (root / "dinov2" / "preprocessor_config.json").write_text(json.dumps(
        {"crop_size": {"height": 56, "width": 56}, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}))
    hf_logging.enable_progress_bar()
    return root


def images(n=6, size=32, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 1, size, size)).astype(np.float32)


@pytest.mark.parametrize("kind, dim, size", [("clip", 24, 32), ("dinov2", 40, 56)])
def test_local_towers_load_offline_and_encode_deterministically(towers, kind, dim, size):
    enc = make_encoder(f"{kind}:{towers / kind}")
    assert enc.name == kind and enc.dim == dim and enc.size == size
    x = images()
    f = enc.encode(x)
    assert f.shape == (6, dim) and f.dtype == np.float64 and np.isfinite(f).all()
    np.testing.assert_allclose(f, enc.encode(x, batch_size=4), rtol=1e-5, atol=1e-6)  # batching changes nothing
    np.testing.assert_array_equal(f, make_encoder(f"{kind}:{towers / kind}").encode(x))  # a reload neither
    assert not np.allclose(f[0], f[1])
    # other image sizes go through the same resize to the encoder's input size
    assert enc.encode(images(2, size=64)).shape == (2, dim)
    assert enc.info()["weights"]["sha256"]


def test_rgb_mapping_is_linear_replicated_and_uses_the_folder_normalisation(towers):
    import torch

    enc = make_encoder(f"dinov2:{towers / 'dinov2'}")
    x = torch.full((1, 1, 56, 56), -1.0)
    x[..., :28] = 1.0
    x[..., 0, 40] = 0.0
    y = enc.preprocess(x)
    assert y.shape == (1, 3, 56, 56)
    # [-1, 1] -> [0, 1] -> (v - 0.5) / 0.25, identical on the three channels; out-of-range values clipped
    assert float(y[0, 0, 10, 5]) == pytest.approx((1.0 - 0.5) / 0.25)
    assert float(y[0, 1, 10, 50]) == pytest.approx((0.0 - 0.5) / 0.25)
    assert float(y[0, 2, 0, 40]) == pytest.approx((0.5 - 0.5) / 0.25)
    assert torch.equal(y[:, 0], y[:, 2])
    assert torch.equal(enc.preprocess(torch.full((1, 1, 56, 56), 3.0)), enc.preprocess(torch.full((1, 1, 56, 56), 1.0)))


def test_missing_or_wrong_paths_are_one_line_errors(towers, tmp_path):
    with pytest.raises(FlaresynthError, match=r"--features clip:/no/such/dir: no such folder"):
        make_encoder("clip:/no/such/dir")
    with pytest.raises(FlaresynthError, match="needs a local path"):
        make_encoder("dinov2")
    with pytest.raises(FlaresynthError, match="model_type"):
        make_encoder(f"clip:{towers / 'dinov2'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FlaresynthError, match="config.json missing"):
        make_encoder(f"dinov2:{tmp_path / 'empty'}")
    with pytest.raises(FlaresynthError, match="unknown encoder"):
        make_encoder("vgg16")
    with pytest.raises(FlaresynthError, match="needs a judge"):
        make_encoder("domain")


def test_spec_parsing_and_metric_names():
    assert parse_feature_specs("domain, effnet-lite0,clip:/a/b") == ["domain", "effnet-lite0", "clip:/a/b"]
    assert [encoder_name(s) for s in ("domain", "effnet-lite0", "clip:/x", "dinov2:/y", "inception:/z")] == [
        "domain", "effnet", "clip", "dinov2", "inception"]
    assert fd_metric_name("inception") == "FID" and fd_metric_name("clip") == "FD_clip"
    with pytest.raises(FlaresynthError, match="given twice"):
        parse_feature_specs("clip:/a,clip:/b")
    with pytest.raises(FlaresynthError):
        parse_feature_specs(" , ")


@pytest.mark.skipif(importlib.util.find_spec("torch_fidelity") is not None, reason="torch-fidelity is installed")
def test_inception_without_torch_fidelity_names_the_extra(tmp_path):
    with pytest.raises(FlaresynthError, match=r"flaresynth\[inception\]"):
        make_encoder(f"inception:{tmp_path / 'pt_inception.pth'}")


def test_effnet_lite0_features_are_1280_d_and_deterministic():
    enc = make_encoder("effnet-lite0")
    assert enc.name == "effnet" and enc.dim == 1280 and enc.size == 224
    x = images(2, size=64, seed=1)
    f = enc.encode(x)
    assert f.shape == (2, 1280) and f.dtype == np.float64
    np.testing.assert_array_equal(f, enc.encode(x))  # the same call, the same numbers
    np.testing.assert_allclose(f, enc.encode(x, batch_size=1), rtol=1e-4, atol=1e-5)  # float32 kernels differ by batch
    assert np.linalg.norm(f[0] - f[1]) > 1e-3 * np.linalg.norm(f[0])
    assert len(enc.info()["weights"]["sha256"]) == 64
    # the pretrained ImageNet weights are loaded (random BatchNorm would have running_var == 1)
    assert float(enc.model._bn1.running_var.mean()) != pytest.approx(1.0, abs=0.05)


def test_effnet_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
    with pytest.raises(FlaresynthError, match=r"flaresynth\[effnet\]"):
        make_encoder("effnet-lite0")


def test_rgb_encoders_refuse_multichannel_images(towers):
    enc = make_encoder(f"clip:{towers / 'clip'}")
    with pytest.raises(FlaresynthError, match="1-channel"):
        enc.encode(np.zeros((2, 2, 32, 32), np.float32))
