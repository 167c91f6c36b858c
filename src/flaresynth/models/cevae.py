"""The ceVAE: the paper's baseline generator and the image encoder of its third conditioning experiment.

Ramunno et al. 2024 compare their DDPMs with a ceVAE, the context-encoding VAE of
Zimmerer et al. (2018, "Context-encoding Variational Autoencoder for Unsupervised Anomaly Detection",
arXiv:1812.05941; 2019, arXiv:1907.12258) that Giger & Csillaghy (2024, Space Weather 22, e2023SW003516)
trained on full-disk SDO/AIA images with the FHNW code (i4Ds/sdo-cli ``sood ce_vae``, itself adapted from
MIC-DKFZ/mood). This module follows that code; the differences are listed at the end.

Network (:class:`CeVAE`, FHNW ``VAE`` with ``BasicEncoder``/``BasicGenerator``)
-------------------------------------------------------------------------------
Encoder: one 3×3 stride-2 convolution + LeakyReLU(0.01) per entry of ``fmap_sizes`` (FHNW: 16, 64, 256, 1024),
then one convolution whose kernel covers the whole remaining grid (size / 2^L px, L = number of levels) to
2·z_dim channels at 1×1: μ and log σ². Decoder: the mirror image, a transposed convolution from z (1×1) to the
bottom grid, then one 4×4 stride-2 transposed convolution + LeakyReLU per level, the last one to the image
channels with no activation. No normalisation, no biases (as FHNW). The same network serves every size and
any number of channels: with the four FHNW levels the bottom grid is 2, 4, 8, 16 px at 32, 64, 128, 256 px,
so only the two dense bottom layers grow with the size (∝ size²). Parameters with z_dim 128 and FHNW widths,
1 channel: 8.56 M at 32 px, 13.28 M at 64, 32.15 M at 128, 107.6 M at 256 (z_dim 256, FHNW's 256-px config:
208 M). Presets may use narrower ``fmap_sizes`` (``cevae.fmap_sizes``) for a CPU.

Loss (:func:`flaresynth.train.cevae_loss`, the training objective beside the DDPM's), exactly the FHNW ``training_step`` weighting::

    loss = (1 − ce_factor) · (rec(x̂, x) + β · KL) + ce_factor · rec(x̂_ce, x)

* VAE branch: x̂ = dec(z), z = μ(x) + σ(x)·ε (reparameterisation). ``rec`` is the mean absolute error per
  pixel (FHNW ``rec_loss_fn``: −log of a unit Laplace likelihood up to a constant, averaged over C×H×W) or,
  with ``rec_loss: mse``, the mean squared error; both in the dataset's model space [-1, 1].
  KL = mean over the z_dim latent dimensions of KL(N(μ, σ²) ‖ N(0, 1)) (FHNW averages over dimensions
  rather than summing, so β = 0.01 is a weak prior: per image it weighs KL/z_dim against the mean pixel
  error). Both are averaged over the batch.
* Context-encoding branch (Zimmerer's "CE" term; Pathak et al. 2016's context encoder): the same encoder and
  decoder reconstruct the *full* image x from a copy with random squares painted over. Per image, the number of
  squares is uniform on 0..``mask_max_squares`` (FHNW: 0, 1, 2), each square's side uniform on
  0..⌊``mask_max_fraction``·size⌋ − 1 px (FHNW: below size/2) at a uniform position, filled with one value
  uniform between the image's minimum and maximum. z is sampled here too, as in FHNW; the KL of this branch
  is not counted. Both branches run as one forward pass on the concatenated batch (2B images).

Standardisation (our addition, ``cevae.standardize``, on by default)
-------------------------------------------------------------------
Full-disk images of one instrument differ little from each other: on the simulated Sun the per-pixel std
across images is 0.028 in model space, and the mean image alone has an L1 error of 0.0195. Fed raw, the
ceVAE collapsed to the mean image (reconstruction std across images 2 % of the data's, whatever β from 0.01
to 1e-5): the reparameterisation noise (σ ≈ 1 at the start) swamps latent means that need only tiny values to
encode the data. So the network sees (x − m)/s, m the per-pixel mean of the training images and s the std
of the residuals per channel (buffers ``center`` and ``scale``, saved with the weights), decodes back to
m + s·out, and its reconstruction errors are measured in units of s. This is an affine reparameterisation
of the same model; ``standardize: false`` restores the FHNW input.

Flare weight (our addition, ``cevae.flare_weight``, 0 by default)
-----------------------------------------------------------------
The FHNW loss averages its error over all pixels, and a flare is a few of them: the ceVAE was built for anomaly
detection, where not reconstructing a flare is the point. As a generator of flare classes that loses the class.
The shipped ``demo:cevae`` kept so little that a linear read-out of its latent means found the test classes at
macro-F1 0.42, and its own reconstructions of the test frames reached half the judges' F1 on the real frames.
With ``flare_weight`` w > 0 each pixel's error (of both branches) is weighted by 1 + w·((x + 1)/2)^4 of the
unmasked image (:func:`flaresynth.train.flare_weights`, the latent autoencoder's rule). The ``cevae-demo64``
preset uses w = 300 (docs/latent_diffusion.md, "Session 44"). Dark features (filaments, coronal holes) weigh
relatively less, and the weighted ceVAE draws fewer of them.

Defaults (``flaresynth.config.CevaeConfig``): z_dim 128, fmap_sizes [16, 64, 256, 1024], ce_factor 0.5,
β 0.01, L1, Adam lr 1e-4 in FHNW (our presets choose their own lr; the loop uses AdamW with weight decay 0).

Class-conditional sampling (the baseline generator)
---------------------------------------------------
The ceVAE is trained without labels. To generate class k, the latent means μ of the *training* images of class
k (encoded with the final EMA weights at the model's resolution) are fitted with a Gaussian N(m_k, Σ_k): the
mean and the full sample covariance (ddof 1), plus a ridge λ·I with λ = ``class_ridge``·trace(Σ_k)/z_dim, so
Σ_k is positive definite even when the class has fewer images than latent dimensions (then the Gaussian
mostly spreads along the span of its few images). A class with a single image gets the diagonal of the pooled
within-class covariance (Σ over classes with ≥ 2 images of (n_k − 1)Σ_k, / Σ (n_k − 1)); if no class has two
images, the covariance of all latents; with a single image overall, the prior N(0, I). Sampling draws
z = m_k + L_k ε with Σ_k = L_k L_kᵀ (float64 Cholesky) and ε from the image's own seeded generator, then
decodes it and clips to [-1, 1] (:class:`ClassGaussians`, :func:`flaresynth.sampling.generate_cevae`). The Gaussians
are stored with the weights (``RUN/model/latent_classes.npz``), so sampling needs no dataset.

One Gaussian per class spreads a class over the whole region its latents span, and the region's centre decodes to
a blurred disc that is no class in particular (on the demo's data, shrinking the draws towards the mean lowers the
judge's F1 further). With ``cevae.class_components`` M > 1 a class of n images is drawn instead from a mixture of
min(M, n // 5) full-covariance Gaussians fitted to its latents (scikit-learn's ``GaussianMixture``, the same ridge
on each component's diagonal; a class with fewer than 10 images keeps its single Gaussian): "ex-post density
estimation" of the aggregate posterior, as Ghosh et al. (2020, "From Variational to Deterministic Autoencoders",
ICLR) sample their autoencoders. Image i picks its component with its own seed (:data:`COMPONENT_STREAM`) and
draws its noise from its seeded torch generator as above. The shipped ``demo:cevae`` uses M = 16 (M = 8 until
session 45): more components lower FD further but draw more images near one training day; 16 was chosen on the
validation split's FD with that cost in view (docs/latent_diffusion.md, "Session 43" and "Session 45").
:func:`flaresynth.train.refit_class_latents` (``flaresynth refit``) refits a trained run.

The encoder (third conditioning experiment)
-------------------------------------------
:func:`flaresynth.runs.load_encoder` (``cevae:RUN``) returns a :class:`CevaeEncoder`, an :class:`~flaresynth.models.conditioning.ImageEncoder`
mapping (B, C, H, W) images in [-1, 1] to their latent means μ (B, z_dim): eval mode, no gradient, no
sampling. Images of another size are first resized like the training loader does (back to DN/s with the
run's intensity transform, area mean, forward again). Images are encoded in batches on the encoder's device
(:func:`encode_means`); an image's embedding then depends on its batch only in the last bits (convolution
kernels are chosen by shape). A DDPM uses it frozen with ``conditioning.encoder: cevae:RUN``.

Differences from the FHNW code, all deliberate: log σ² instead of log σ as the encoder output (the same
model, parameterised like the usual VAE; clamped to [-30, 20] against overflow); all context squares are kept
(the FHNW ``mask_random_squares`` re-creates its mask in each iteration, so only the last square survives);
the fill value spans each image's own range (FHNW: the batch's), so an image's loss does not depend on its
batch-mates; the random numbers come from the training loop's per-step generator, so a resumed run is
reproducible; optional MSE; the optional flare weight (above); no GECO (FHNW's ``use_geco`` is off by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from flaresynth.errors import FlaresynthError
from flaresynth.io import atomic_file, read_json, write_json
from flaresynth.transforms import channel_transforms, resample, resize

#: ``model_type`` of a ceVAE run in its ``flaresynth.json`` (:mod:`flaresynth.runs`).
MODEL_TYPE = "cevae"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
LOGVAR_RANGE = (-30.0, 20.0)
#: Images per forward pass of the encoder (:func:`encode_means`).
ENCODE_BATCH = 64
#: Relative ridge of a fitted class covariance when none is configured.
DEFAULT_RIDGE = 1e-3
#: A class's mixture has at most one component per this many training images (fewer: its single Gaussian).
IMAGES_PER_COMPONENT = 5
#: Stream of a seed's random generator that picks its mixture component (the noise itself comes from torch's).
COMPONENT_STREAM = 0x434D50


# ------------------------------------------------------------------------------------------ network


class CeVAE(nn.Module):
    """Convolutional VAE (FHNW ``VAE``): images (B, C, S, S) <-> latents (B, z_dim).

    Parameters
    ----------
    in_channels : image channels.
    sample_size : image side S in pixels; must be divisible by 2^len(fmap_sizes).
    z_dim : latent size.
    fmap_sizes : encoder feature maps per stride-2 level (the decoder mirrors them).
    bias : give every convolution a bias (FHNW: none).
    """

    def __init__(self, in_channels: int = 1, sample_size: int = 64, z_dim: int = 128,
                 fmap_sizes: tuple[int, ...] | list[int] = (16, 64, 256, 1024), bias: bool = False):
        super().__init__()
        fmap_sizes = [int(f) for f in fmap_sizes]
        levels = len(fmap_sizes)
        if not fmap_sizes or sample_size % 2**levels:
            raise FlaresynthError(
                f"ceVAE: sample_size {sample_size} cannot be halved {levels} times (one per feature-map level)"
            )
        self.in_channels, self.sample_size, self.z_dim = int(in_channels), int(sample_size), int(z_dim)
        self.fmap_sizes = fmap_sizes
        self.bias = bool(bias)
        bottom = self.sample_size // 2**levels
        enc: list[nn.Module] = []
        c = self.in_channels
        for f in fmap_sizes:
            enc += [nn.Conv2d(c, f, 3, stride=2, padding=1, bias=self.bias), nn.LeakyReLU()]
            c = f
        enc.append(nn.Conv2d(c, 2 * self.z_dim, bottom, stride=1, padding=0, bias=self.bias))
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.ConvTranspose2d(self.z_dim, fmap_sizes[-1], bottom, stride=1, padding=0, bias=self.bias),
                                nn.LeakyReLU()]
        c = fmap_sizes[-1]
        for f in reversed(fmap_sizes[:-1]):
            dec += [nn.ConvTranspose2d(c, f, 4, stride=2, padding=1, bias=self.bias), nn.LeakyReLU()]
            c = f
        dec.append(nn.ConvTranspose2d(c, self.in_channels, 4, stride=2, padding=1, bias=self.bias))
        self.decoder = nn.Sequential(*dec)
        # Standardisation of the input (see "Standardisation" in the module docstring): identity until
        # set_standardization() is given the training images; saved with the weights.
        self.register_buffer("center", torch.zeros(1, self.in_channels, self.sample_size, self.sample_size))
        self.register_buffer("scale", torch.ones(1, self.in_channels, 1, 1))

    @torch.no_grad()
    def set_standardization(self, images: torch.Tensor) -> None:
        """Centre on the per-pixel mean of ``images`` (N, C, S, S) and scale by the residuals' std per channel."""
        images = images.float()
        center = images.mean(0, keepdim=True)
        scale = (images - center).std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
        self.center.copy_(center.to(self.center.device))
        self.scale.copy_(scale.to(self.scale.device))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, S, S) -> μ, log σ² (each (B, z_dim))."""
        if x.shape[1:] != (self.in_channels, self.sample_size, self.sample_size):
            raise FlaresynthError(
                f"ceVAE: images of shape {tuple(x.shape[1:])}, expected "
                f"{(self.in_channels, self.sample_size, self.sample_size)}"
            )
        mu, logvar = self.encoder((x - self.center) / self.scale).flatten(1).chunk(2, dim=1)
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, z_dim) -> (B, C, S, S) in model space (not clipped)."""
        return self.decoder(z[:, :, None, None]) * self.scale + self.center

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None):
        """Reconstruction, μ and log σ²; z = μ + σ·``eps`` (``eps`` ``None``: z = μ)."""
        mu, logvar = self.encode(x)
        z = mu if eps is None else mu + torch.exp(0.5 * logvar) * eps.to(mu.dtype)
        return self.decode(z), mu, logvar

    def describe(self) -> dict:
        """JSON-ready constructor arguments."""
        return {"_class_name": "CeVAE", "in_channels": self.in_channels, "sample_size": self.sample_size,
                "z_dim": self.z_dim, "fmap_sizes": list(self.fmap_sizes), "bias": self.bias}

    def save_pretrained(self, folder: str | Path) -> Path:
        """``config.json`` (constructor arguments) and ``model.safetensors`` (weights) in ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(folder / WEIGHTS_FILE))
        write_json(folder / CONFIG_FILE, self.describe())
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> CeVAE:
        """Read a folder written by :meth:`save_pretrained` (eval mode)."""
        folder = Path(folder)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (folder / name).is_file():
                raise FlaresynthError(f"{folder / name}: missing (not a ceVAE model folder)")
        cfg = read_json(folder / CONFIG_FILE)
        if cfg.get("_class_name") != "CeVAE":
            raise FlaresynthError(f"{folder / CONFIG_FILE}: _class_name {cfg.get('_class_name')!r}, expected 'CeVAE'")
        model = cls(cfg["in_channels"], cfg["sample_size"], cfg["z_dim"], cfg["fmap_sizes"], cfg.get("bias", False))
        try:
            model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
        except (OSError, RuntimeError) as exc:
            raise FlaresynthError(f"{folder / WEIGHTS_FILE}: unreadable ({str(exc).splitlines()[0]})") from None
        return model.eval()


def build_cevae(cfg, in_channels: int) -> CeVAE:
    """The ceVAE of a :class:`~flaresynth.config.RunConfig` (``model.sample_size``, ``cevae`` section)."""
    return CeVAE(in_channels, cfg.model.sample_size, cfg.cevae.z_dim, cfg.cevae.fmap_sizes, cfg.cevae.bias)


# ------------------------------------------------------------------------------------------ encoding


@torch.no_grad()
def encode_means(model: CeVAE, images: torch.Tensor, device: str | torch.device | None = None,
                 batch_size: int = ENCODE_BATCH) -> torch.Tensor:
    """Latent means μ (N, z_dim) float32 on the CPU of model-space images (N, C, S, S); eval mode, no grad.

    ``batch_size`` images per forward pass on ``device`` (default: the model's). The same images in the same
    order give the same μ bit for bit; in another batch an image's μ may differ in the last bits.
    """
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device if device is None else torch.device(device)
    try:
        out = [model.encode(images[i : i + batch_size].to(dev, torch.float32))[0].cpu()
               for i in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, model.z_dim)


# ------------------------------------------------------------------------------------------ class Gaussians


@dataclass
class ClassGaussians:
    """One Gaussian N(mean_k, cov_k), or a mixture of Gaussians, per class in a latent (or embedding) space; module
    docstring.

    ``counts`` (K,) images behind each fit (0: no Gaussian, NaN mean/cov); ``fallback`` (K,) True where the
    covariance is the pooled diagonal (a class with one image); ``ridge`` the relative ridge used. ``means`` and
    ``covs`` are each class's mean and ridged covariance. With ``mix_weights`` (K, M) a class whose weights are not
    all zero is drawn from its mixture instead: components ``mix_means`` (K, M, d) with Cholesky factors
    ``mix_chols`` (K, M, d, d) (:func:`fit_class_gaussians` with ``components`` > 1).
    """

    classes: tuple[str, ...]
    counts: np.ndarray
    means: np.ndarray
    covs: np.ndarray
    fallback: np.ndarray
    ridge: float
    mix_weights: np.ndarray | None = None
    mix_means: np.ndarray | None = None
    mix_chols: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def components(self, k: int) -> int:
        """Mixture components of class ``k`` (1: its single Gaussian)."""
        return 1 if self.mix_weights is None else max(1, int(np.count_nonzero(self.mix_weights[k])))

    def index(self, name: str) -> int:
        """Index of class ``name`` (one that has a Gaussian)."""
        if name not in self.classes or self.counts[self.classes.index(name)] == 0:
            have = [c for c, n in zip(self.classes, self.counts, strict=True) if n > 0]
            raise FlaresynthError(f"class {name}: no fitted latent Gaussian (classes with training images: {', '.join(have)})")
        return self.classes.index(name)

    def sample(self, k: int, seeds) -> np.ndarray:
        """(len(seeds), dim) float64 draws from class ``k``; draw i uses only ``torch.Generator(seeds[i])`` (its
        noise) and, for a mixture, ``numpy.random.default_rng([seeds[i], COMPONENT_STREAM])`` (its component)."""
        seeds = [int(s) for s in seeds]
        eps = np.stack([torch.randn(self.dim, generator=torch.Generator().manual_seed(s),
                                    dtype=torch.float64).numpy() for s in seeds]) if seeds else np.zeros((0, self.dim))
        if self.components(k) == 1:
            return self.means[k][None, :] + eps @ np.linalg.cholesky(self.covs[k]).T
        w = self.mix_weights[k]
        j = np.array([np.random.default_rng([s, COMPONENT_STREAM]).choice(len(w), p=w) for s in seeds], dtype=np.int64)
        return self.mix_means[k, j] + np.einsum("nij,nj->ni", self.mix_chols[k, j], eps)

    def save(self, path: str | Path) -> None:
        """Write an ``.npz``, atomically (classes, counts, means, covs, fallback, ridge; a mixture's weights, means and Cholesky
        factors too, their lower triangles in float16 to keep a shipped run small)."""
        arrays = {"classes": np.array(self.classes, dtype=str), "counts": self.counts, "means": self.means,
                  "covs": self.covs, "fallback": self.fallback, "ridge": np.float64(self.ridge)}
        if self.mix_weights is not None:
            rows, cols = np.tril_indices(self.dim)
            del arrays["covs"]
            arrays.update(covs_tril=self.covs[..., rows, cols].astype(np.float32), mix_weights=self.mix_weights,
                          mix_means=self.mix_means, mix_chols_tril=self.mix_chols[..., rows, cols].astype(np.float16))
        with atomic_file(path, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> ClassGaussians:
        path = Path(path)
        if not path.is_file():
            raise FlaresynthError(f"{path}: missing (per-class latent Gaussians; written at the end of training)")
        with np.load(path, allow_pickle=False) as z:
            d = int(z["means"].shape[1])
            rows, cols = np.tril_indices(d)

            def unpack(tril: np.ndarray, symmetric: bool) -> np.ndarray:
                full = np.zeros((*tril.shape[:-1], d, d))
                full[..., rows, cols] = tril
                if symmetric:
                    full[..., cols, rows] = tril
                return full

            covs = z["covs"] if "covs" in z else unpack(z["covs_tril"].astype(np.float64), True)
            mix = (z["mix_weights"], z["mix_means"], unpack(z["mix_chols_tril"].astype(np.float64), False)) \
                if "mix_weights" in z else (None, None, None)
            return cls(tuple(str(c) for c in z["classes"]), z["counts"], z["means"], covs, z["fallback"],
                       float(z["ridge"]), *mix)

    def summary(self) -> dict:
        """JSON-ready counts and fallbacks per class (and mixture components, when any class has several)."""
        out = {"classes": list(self.classes), "counts": [int(n) for n in self.counts],
               "fallback": [bool(f) for f in self.fallback], "ridge": self.ridge, "dim": self.dim}
        if self.mix_weights is not None:
            out["components"] = [self.components(k) for k in range(len(self.classes))]
        return out


def _ridge(cov: np.ndarray, ridge: float) -> float:
    """λ = ``ridge`` × the covariance's mean variance (× 1 when it has none)."""
    scale = float(np.trace(cov)) / cov.shape[0]
    return ridge * (scale if scale > 0 else 1.0)


def _ridged(cov: np.ndarray, ridge: float) -> np.ndarray:
    lam = _ridge(cov, ridge)
    return cov + lam * np.eye(cov.shape[0]) if lam > 0 else cov


def fit_class_gaussians(latents, labels, classes, ridge: float = DEFAULT_RIDGE,
                        components: int = 1) -> ClassGaussians:
    """Fit one Gaussian per class to ``latents`` (N, d) with integer ``labels`` (N,) into ``classes``.

    Mean and sample covariance (ddof 1) per class with ≥ 2 images, plus ``ridge``·trace/d on the diagonal;
    a class with one image: its latent as the mean, the pooled within-class covariance's diagonal (module
    docstring for the fallbacks); a class with none: NaN and count 0. With ``components`` > 1, a class of n
    images is drawn from a mixture of min(``components``, n // :data:`IMAGES_PER_COMPONENT`) full-covariance
    Gaussians (scikit-learn's ``GaussianMixture``, EM from k-means, the same ridge on each component's diagonal)
    where that is at least 2, from its single Gaussian otherwise (module docstring).
    """
    if int(components) != components or components < 1:
        raise FlaresynthError(f"class components {components!r}: expected a whole number >= 1")
    z = np.asarray(latents, dtype=np.float64)
    labels = np.asarray(labels)
    k, d = len(classes), z.shape[1]
    counts = np.array([int((labels == i).sum()) for i in range(k)], dtype=np.int64)
    means = np.full((k, d), np.nan)
    covs = np.full((k, d, d), np.nan)
    fallback = np.zeros(k, dtype=bool)
    lams = np.zeros(k)  # each class's ridge, also its mixture components'
    scatter, dof = np.zeros((d, d)), 0
    for i in range(k):
        zi = z[labels == i]
        if len(zi):
            means[i] = zi.mean(0)
        if len(zi) >= 2:
            cov = np.atleast_2d(np.cov(zi, rowvar=False, ddof=1))
            lams[i] = _ridge(cov, ridge)
            covs[i] = _ridged(cov, ridge)
            scatter += (len(zi) - 1) * cov
            dof += len(zi) - 1
    if (counts == 1).any():
        if dof > 0:
            pooled = scatter / dof
        elif len(z) >= 2:
            pooled = np.atleast_2d(np.cov(z, rowvar=False, ddof=1))
        else:
            pooled = np.eye(d)
        for i in np.flatnonzero(counts == 1):
            covs[i] = _ridged(np.diag(np.diag(pooled)), ridge)
            fallback[i] = True
    sizes = [min(int(components), int(n) // IMAGES_PER_COMPONENT) for n in counts]
    if max(sizes, default=0) < 2:
        return ClassGaussians(tuple(classes), counts, means, covs, fallback, float(ridge))
    # scikit-learn only here: every run that is opened imports this module, and only a mixture's fit needs it
    from sklearn.mixture import GaussianMixture

    m = max(sizes)
    weights, mix_means, chols = np.zeros((k, m)), np.zeros((k, m, d)), np.zeros((k, m, d, d))
    for i, size in enumerate(sizes):
        if size < 2:
            continue
        mix = GaussianMixture(size, covariance_type="full", reg_covar=lams[i], random_state=0).fit(z[labels == i])
        weights[i, :size] = mix.weights_ / mix.weights_.sum()
        mix_means[i, :size] = mix.means_
        chols[i, :size] = np.linalg.cholesky(mix.covariances_)
    return ClassGaussians(tuple(classes), counts, means, covs, fallback, float(ridge), weights, mix_means, chols)


@torch.no_grad()
def decode(model: CeVAE, z: torch.Tensor, device=None, batch_size: int = 64) -> torch.Tensor:
    """Decode latents (N, z_dim) -> float32 images (N, C, S, S) on the CPU, clipped to [-1, 1]."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device if device is None else torch.device(device)
    try:
        out = [model.decode(z[i : i + batch_size].to(dev, torch.float32)).clamp(-1, 1).float().cpu()
               for i in range(0, len(z), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, model.in_channels, model.sample_size, model.sample_size)


# ------------------------------------------------------------------------------------------ encoder


class CevaeEncoder:
    """A frozen ceVAE encoder as an :class:`~flaresynth.models.conditioning.ImageEncoder`: images -> μ."""

    def __init__(self, model: CeVAE, meta: dict | None = None, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.device = torch.device(device)
        self.dim = model.z_dim
        meta = meta or {}
        self.model_id = meta.get("model_id")
        t = meta.get("transform")
        self.transforms = channel_transforms(t, model.in_channels, "ceVAE metadata") if t is not None else None

    def _to_model_size(self, x: torch.Tensor) -> torch.Tensor:
        """Resize like the training loader (:func:`flaresynth.transforms.resample`: via DN/s)."""
        s = self.model.sample_size
        if x.shape[-2:] == (s, s):
            return x
        if self.transforms is None:
            return resize(x, s)  # no transform known: resize the model-space values directly
        return torch.from_numpy(resample(x.cpu().numpy(), self.transforms, s))

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images in [-1, 1] -> (B, z_dim) float32 latent means (CPU)."""
        x = torch.as_tensor(images).float()
        if x.ndim != 4 or x.shape[1] != self.model.in_channels:
            got = f"{x.shape[1]} channel(s)" if x.ndim == 4 else f"shape {tuple(x.shape)}"
            raise FlaresynthError(
                f"ceVAE encoder {self.model_id or ''}: takes images of {self.model.in_channels} channel(s), got {got} "
                f"(embeddings need a ceVAE trained on the same channels: train one on this dataset with --preset "
                f"cevae-demo64 and set conditioning.encoder: cevae:RUN)"
            )
        return encode_means(self.model, self._to_model_size(x), self.device)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def parameter_count(sample_size: int, z_dim: int = 128, fmap_sizes=(16, 64, 256, 1024), in_channels: int = 1) -> int:
    """Parameters of :class:`CeVAE` for a configuration, without building it."""
    b2 = (sample_size // 2 ** len(fmap_sizes)) ** 2
    n, c = 0, in_channels
    for f in fmap_sizes:
        n += c * f * 9
        c = f
    n += c * 2 * z_dim * b2 + z_dim * c * b2
    for f in reversed(list(fmap_sizes[:-1])):
        n += c * f * 16
        c = f
    return n + c * in_channels * 16


__all__ = [
    "CeVAE",
    "build_cevae",
    "encode_means",
    "decode",
    "ClassGaussians",
    "fit_class_gaussians",
    "CevaeEncoder",
    "count_parameters",
    "parameter_count",
]
