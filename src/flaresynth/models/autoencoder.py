"""The autoencoder of latent diffusion: a diffusers ``AutoencoderKL`` between images and small latents.

Latent diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models") trains the
diffusion model on the latents of a frozen autoencoder instead of on pixels: at 64×64 → 16×16×4 the U-Net works
on 16× fewer positions, which is what makes 64 px generators trainable on a CPU. The autoencoder is diffusers'
``AutoencoderKL`` (the LDM's KL-regularised VAE: ResNet encoder/decoder, one mid self-attention block,
diagonal-Gaussian posterior), built from :class:`flaresynth.config.AutoencoderConfig`; its loss is in
:class:`flaresynth.train.AutoencoderObjective` (no adversarial or perceptual term: both need networks this
project does not have for 171 Å images, and the L1 + KL recipe reconstructs the smooth disk well; the flare
kernels get their own weight, ``autoencoder.flare_weight``).

An autoencoder run's model folder (``RUN/model/``, :mod:`flaresynth.runs`) is ``AutoencoderKL.save_pretrained``
(``config.json`` + ``diffusion_pytorch_model.safetensors``, loadable without flaresynth) plus
``flaresynth.json`` (metadata, including the reconstruction benchmark of the run's test split).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL
from torch import nn

from flaresynth.config import AutoencoderConfig
from flaresynth.errors import FlaresynthError

MODEL_TYPE = "autoencoder"


def build_autoencoder(cfg: AutoencoderConfig, in_channels: int, sample_size: int) -> AutoencoderKL:
    """A fresh ``AutoencoderKL`` for ``in_channels``-channel images of side ``sample_size``."""
    n = len(cfg.block_out_channels)
    return AutoencoderKL(
        in_channels=in_channels,
        out_channels=in_channels,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.norm_num_groups,
        sample_size=sample_size,
        mid_block_add_attention=cfg.mid_attention,
    )


class LatentAutoencoder(nn.Module):
    """``AutoencoderKL`` with the training forward the loop needs: ``(x, eps) -> (x_rec, mean, logvar)``.

    One module, so that DDP wraps the forward that the loss calls (its gradients are then synchronised) and the
    posterior noise ``eps`` comes from the step's own generator (reproducible resumes, as for the ceVAE).
    """

    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        self.vae = vae

    @property
    def in_channels(self) -> int:
        return int(self.vae.config.in_channels)

    @property
    def sample_size(self) -> int:
        return int(self.vae.config.sample_size)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def downsample(self) -> int:
        """Image side / latent side."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        s = self.sample_size // self.downsample
        return (self.latent_channels, s, s)

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        posterior = self.vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * eps
        return self.vae.decode(z).sample, posterior.mean, posterior.logvar

    def describe(self) -> dict:
        """Shape facts stored in the run's metadata."""
        return {"in_channels": self.in_channels, "sample_size": self.sample_size,
                "latent_shape": list(self.latent_shape), "block_out_channels": list(self.vae.config.block_out_channels)}


@torch.no_grad()
def encode_means(model: LatentAutoencoder, images: torch.Tensor, device: str | torch.device = "cpu",
                 batch_size: int = 64) -> torch.Tensor:
    """Posterior means (N, c, h, w) float32 on the CPU of images (N, C, H, W) in [-1, 1], in batches on ``device``."""
    model = model.to(device).eval()
    out = [model.vae.encode(images[lo : lo + batch_size].to(device).float()).latent_dist.mean.float().cpu()
           for lo in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.zeros((0, *model.latent_shape))


@torch.no_grad()
def decode(model: LatentAutoencoder, latents: torch.Tensor, device: str | torch.device = "cpu",
           batch_size: int = 64) -> torch.Tensor:
    """Images (N, C, H, W) float32 on the CPU, clipped to [-1, 1], of (unscaled) latents (N, c, h, w)."""
    model = model.to(device).eval()
    out = [model.vae.decode(latents[lo : lo + batch_size].to(device).float()).sample.float().clamp(-1, 1).cpu()
           for lo in range(0, len(latents), batch_size)]
    return torch.cat(out) if out else torch.zeros((0, model.in_channels, model.sample_size, model.sample_size))


def save_autoencoder(model: LatentAutoencoder, folder: str | Path) -> Path:
    """``AutoencoderKL.save_pretrained`` into a model folder (metadata: :func:`flaresynth.runs.write_meta`)."""
    model.vae.save_pretrained(Path(folder))
    return Path(folder)


def load_autoencoder(folder: str | Path, device: str | torch.device = "cpu") -> LatentAutoencoder:
    """Read what :func:`save_autoencoder` wrote; eval mode, frozen."""
    try:
        vae = AutoencoderKL.from_pretrained(Path(folder))
    except (OSError, ValueError, RuntimeError) as exc:
        raise FlaresynthError(f"{folder}: autoencoder weights unreadable ({str(exc).splitlines()[0]})") from None
    return LatentAutoencoder(vae).to(device).eval().requires_grad_(False)


__all__ = [
    "MODEL_TYPE",
    "build_autoencoder",
    "LatentAutoencoder",
    "encode_means",
    "decode",
    "save_autoencoder",
    "load_autoencoder",
]
