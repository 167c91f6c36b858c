"""What the diffusion model is conditioned on, and the null condition classifier-free guidance needs.

Three kinds (config ``conditioning.kind``), all feeding a vector that is *added to the U-Net's time
embedding*, as in the paper's ``UNet_conditional`` (fpramunno/Modelling_Solar_Image_with_DDPM) and diffusers' ``UNet2DModel``:

``discrete``
    The class index (5 GOES letters A..X or 3 activity levels) through UNet2DModel's own
    ``nn.Embedding(num_class_embeds = n_classes + 1)``; the last row is the learned null class. Nothing lives
    outside the U-Net, so ``UNet2DModel.from_pretrained`` alone gives a usable model.
``continuous``
    log10 of the XRS-B flux (W/m²), mapped by u = (log10 F + 5.5) / 3.5 (so 1e-9..1e-2 W/m² is -1..1), then
    sinusoidal features [u, sin(f_k u), cos(f_k u)], f_k = π 2^k / 2, then an MLP to the time-embedding width;
    the U-Net takes it with ``class_embed_type="identity"``. Any flux can be asked for, also between and
    beyond the training classes. The null condition is a learned vector.
``discrete+embedding``
    A class embedding plus a linear projection of an image-embedding vector from a frozen encoder (the paper's
    ceVAE experiment; how the paper coupled them is not published). The null condition
    is the null class plus a learned null vector. To sample a class without a reference image, the mean
    embedding of that class's training images (stored with the weights) stands in.

Encoders plug in through the small :class:`ImageEncoder` protocol: ``dim`` and ``embed(images)`` mapping
(B, C, H, W) images in [-1, 1] to (B, dim) vectors. :func:`flaresynth.runs.load_encoder` reads the config
string (``conditioning.encoder``).

The null branch is always part of the graph (``torch.where`` rather than indexing), so every parameter gets a
gradient in every step, which DistributedDataParallel requires.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from flaresynth.errors import FlaresynthError

#: log10 flux -> u: (log10 F - LOG_FLUX_CENTER) / LOG_FLUX_HALF_RANGE maps 1e-9..1e-2 W/m² onto -1..1.
LOG_FLUX_CENTER = -5.5
LOG_FLUX_HALF_RANGE = 3.5


@runtime_checkable
class ImageEncoder(Protocol):
    """A frozen image encoder: images (B, C, H, W) in [-1, 1] -> vectors (B, dim)."""

    dim: int

    def embed(self, images: torch.Tensor) -> torch.Tensor: ...


class RandomProjectionEncoder(nn.Module):
    """A fixed random linear encoder (for tests and as a stand-in): 8×8 area pooling, then a seeded projection.

    The projection depends only on ``(dim, seed, channels)``, not on the image size.
    """

    def __init__(self, dim: int = 16, seed: int = 0):
        super().__init__()
        self.dim = int(dim)
        self.seed = int(seed)

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        pooled = nn.functional.adaptive_avg_pool2d(images.float(), 8).flatten(1)
        g = torch.Generator().manual_seed(self.seed)
        w = torch.randn(pooled.shape[1], self.dim, generator=g) / math.sqrt(pooled.shape[1])
        return pooled @ w.to(pooled.device)


class CallableEncoder:
    """Wrap any callable or ``nn.Module`` mapping images to (B, D) vectors as an :class:`ImageEncoder`."""

    def __init__(self, fn, dim: int | None = None):
        self.fn = fn
        self._dim = dim

    @property
    def dim(self) -> int:
        if self._dim is None:
            raise FlaresynthError("image encoder: its output size is unknown until it has embedded a batch")
        return self._dim

    @property
    def device(self) -> torch.device | None:
        """Where a wrapped module's weights are (its inputs go there); ``None`` for a plain callable."""
        if isinstance(self.fn, nn.Module):
            for tensor in (*self.fn.parameters(), *self.fn.buffers()):
                return tensor.device
        return None

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, D) float32 vectors on the CPU. A wrapped module gets the images on its
        own device (a user's encoder may live on a GPU while the images come from the CPU)."""
        dev = self.device
        out = self.fn(images if dev is None else images.to(dev))
        if isinstance(out, tuple | list):
            out = out[0]  # e.g. (mu, logvar) of a VAE encoder: the mean is the embedding
        out = out.flatten(1).float().cpu()
        self._dim = out.shape[1]
        return out


def as_encoder(obj) -> ImageEncoder:
    """Accept an :class:`ImageEncoder`, or any callable mapping images to vectors."""
    if hasattr(obj, "embed") and hasattr(obj, "dim"):
        return obj
    if callable(obj):
        if isinstance(obj, nn.Module):
            obj.eval()
        return CallableEncoder(obj)
    raise FlaresynthError(f"image encoder {obj!r}: expected an object with embed() and dim, or a callable")


@torch.no_grad()
def embed_all(encoder: ImageEncoder, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Embed (N, C, H, W) images in batches -> float32 (N, D) on the CPU."""
    out = [encoder.embed(images[i : i + batch_size]).float().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, encoder.dim)


@dataclass
class Condition:
    """One batch of conditions: class ``labels`` (B,) int64, ``log_flux`` (B,) float32 log10 W/m², and for
    ``discrete+embedding`` the image ``embedding`` (B, D). Unused fields may hold anything of the right shape."""

    labels: torch.Tensor
    log_flux: torch.Tensor
    embedding: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device) -> Condition:
        emb = None if self.embedding is None else self.embedding.to(device)
        return Condition(self.labels.to(device), self.log_flux.to(device), emb)

    def index(self, idx) -> Condition:
        emb = None if self.embedding is None else self.embedding[idx]
        return Condition(self.labels[idx], self.log_flux[idx], emb)

    def twice(self) -> Condition:
        """The batch repeated (for the one-forward conditional + unconditional CFG pass)."""
        emb = None if self.embedding is None else torch.cat([self.embedding, self.embedding])
        return Condition(torch.cat([self.labels, self.labels]), torch.cat([self.log_flux, self.log_flux]), emb)


def flux_features(log_flux: torch.Tensor, n_frequencies: int) -> torch.Tensor:
    """(B,) log10 flux (W/m²) -> (B, 1 + 2·n) features [u, sin(f_k u), cos(f_k u)], f_k = π 2^k / 2."""
    u = ((log_flux.float() - LOG_FLUX_CENTER) / LOG_FLUX_HALF_RANGE)[:, None]
    freqs = (2.0 ** torch.arange(n_frequencies, device=u.device, dtype=torch.float32)) * (math.pi / 2)
    return torch.cat([u, torch.sin(u * freqs), torch.cos(u * freqs)], dim=1)


class Conditioner(nn.Module):
    """Map a :class:`Condition` and a drop mask to the U-Net's ``class_labels`` argument.

    Parameters
    ----------
    kind : ``discrete``, ``continuous`` or ``discrete+embedding``.
    n_classes : number of classes of the label scheme; index ``n_classes`` is the null class.
    time_embed_dim : width of the U-Net's time embedding (4 × its first block width).
    flux_frequencies : number of sinusoidal frequencies for ``continuous``.
    embed_dim : encoder output size for ``discrete+embedding``.
    """

    def __init__(self, kind: str, n_classes: int, time_embed_dim: int, flux_frequencies: int = 8,
                 embed_dim: int | None = None):
        super().__init__()
        self.kind = kind
        self.n_classes = int(n_classes)
        self.null_class = int(n_classes)
        self.time_embed_dim = int(time_embed_dim)
        self.flux_frequencies = int(flux_frequencies)
        self.embed_dim = embed_dim
        if kind == "continuous":
            n_in = 1 + 2 * self.flux_frequencies
            self.flux_mlp = nn.Sequential(
                nn.Linear(n_in, time_embed_dim), nn.SiLU(), nn.Linear(time_embed_dim, time_embed_dim)
            )
            self.null = nn.Parameter(torch.zeros(time_embed_dim))
        elif kind == "discrete+embedding":
            if not embed_dim:
                raise FlaresynthError("discrete+embedding conditioning: the encoder's output size is unknown")
            self.class_embedding = nn.Embedding(self.n_classes + 1, time_embed_dim)
            self.embed_proj = nn.Sequential(nn.LayerNorm(embed_dim, elementwise_affine=False),
                                            nn.Linear(embed_dim, time_embed_dim))
            self.null = nn.Parameter(torch.zeros(time_embed_dim))
            # Mean training embedding of each class: what a class request uses when no image is given.
            self.register_buffer("class_mean_embedding", torch.zeros(self.n_classes, embed_dim))
        elif kind != "discrete":
            raise FlaresynthError(f"conditioning.kind {kind!r}: expected discrete, continuous or discrete+embedding")

    @property
    def native(self) -> bool:
        """True when the U-Net alone holds the conditioning (nothing to save beside it)."""
        return self.kind == "discrete"

    def forward(self, cond: Condition, drop: torch.Tensor) -> torch.Tensor:
        """``class_labels`` for ``UNet2DModel.forward``: (B,) int64 class indices for ``discrete``, else a
        (B, time_embed_dim) vector. ``drop`` (B,) bool marks the items given the null condition."""
        drop = drop.to(cond.labels.device, dtype=torch.bool)
        if self.kind == "discrete":
            return torch.where(drop, torch.full_like(cond.labels, self.null_class), cond.labels)
        if self.kind == "continuous":
            vec = self.flux_mlp(flux_features(cond.log_flux, self.flux_frequencies))
            return torch.where(drop[:, None], self.null.expand_as(vec), vec)
        labels = torch.where(drop, torch.full_like(cond.labels, self.null_class), cond.labels)
        if cond.embedding is None:
            raise FlaresynthError("discrete+embedding conditioning: no image embedding was given")
        vec = self.embed_proj(cond.embedding.float())
        return self.class_embedding(labels) + torch.where(drop[:, None], self.null.expand_as(vec), vec)

    def describe(self) -> dict:
        """JSON-ready constructor arguments (stored beside the weights)."""
        return {
            "kind": self.kind,
            "n_classes": self.n_classes,
            "null_class": self.null_class,
            "time_embed_dim": self.time_embed_dim,
            "flux_frequencies": self.flux_frequencies,
            "embed_dim": self.embed_dim,
            "log_flux_center": LOG_FLUX_CENTER,
            "log_flux_half_range": LOG_FLUX_HALF_RANGE,
        }


__all__ = [
    "ImageEncoder",
    "RandomProjectionEncoder",
    "CallableEncoder",
    "as_encoder",
    "embed_all",
    "Condition",
    "Conditioner",
    "flux_features",
]
