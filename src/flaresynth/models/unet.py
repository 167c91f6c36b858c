"""The denoising network: a diffusers ``UNet2DModel`` built from :class:`flaresynth.config.ModelConfig`.

Why diffusers' U-Net rather than a copy of the paper's ``UNet_conditional`` (fpramunno/Modelling_Solar_Image_with_DDPM,
``model_architecture/modules.py``): it has
the same ingredients (ResNet blocks with GroupNorm, self-attention at chosen resolutions, sinusoidal time
embedding with the class embedding *added* to it), decouples resolution from width (there
``image_size`` sets both), takes any number of channels, and a saved model loads with plain
``UNet2DModel.from_pretrained`` without flaresynth. The ``paper`` preset (64×64, widths 64/128/256/320,
attention at 32/16/8 px) has 23.26 M parameters against the paper's 23.33 M.

A model folder (``RUN/model/``, :mod:`flaresynth.runs`) is a ``save_pretrained`` folder of the U-Net plus::

    flaresynth.json           the run's metadata (:func:`flaresynth.runs.write_meta`)
    conditioner.safetensors   the conditioner's weights when they are not inside the U-Net
                              (continuous and discrete+embedding; discrete lives in the U-Net's embedding)
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import UNet2DModel
from safetensors.torch import load_file, save_file
from torch import nn

from flaresynth.config import ModelConfig
from flaresynth.errors import FlaresynthError
from flaresynth.models.conditioning import Condition, Conditioner

CONDITIONER_FILE = "conditioner.safetensors"


def block_types(cfg: ModelConfig) -> tuple[list[str], list[str]]:
    """Down and up block names: attention blocks at the levels listed in ``attention_resolutions``."""
    down = ["AttnDownBlock2D" if r in cfg.attention_resolutions else "DownBlock2D" for r in cfg.level_resolutions()]
    up = [d.replace("Down", "Up") for d in reversed(down)]
    return down, up


def time_embed_dim(cfg: ModelConfig) -> int:
    """Width of UNet2DModel's time embedding (4 × the first block width): the conditioning vector's width."""
    return 4 * cfg.block_out_channels[0]


def build_unet(cfg: ModelConfig, in_channels: int, kind: str, n_classes: int):
    """A fresh ``UNet2DModel`` for ``in_channels`` image channels and a conditioning ``kind``.

    ``discrete`` uses the U-Net's own class embedding with ``n_classes + 1`` rows (the last is the null class);
    the other kinds take a ready (B, time_embed_dim) vector (``class_embed_type="identity"``).
    """
    down, up = block_types(cfg)
    native = kind == "discrete"
    return UNet2DModel(
        sample_size=cfg.sample_size,
        in_channels=in_channels,
        out_channels=in_channels,
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=cfg.norm_num_groups,
        dropout=cfg.dropout,
        add_attention=cfg.mid_attention,
        num_class_embeds=n_classes + 1 if native else None,
        class_embed_type=None if native else "identity",
    )


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class Denoiser(nn.Module):
    """U-Net plus conditioner: ``(x_t, t, condition, drop) -> model output`` (ε or v).

    One module so that one optimiser, one EMA and one DDP wrapper cover both.
    """

    def __init__(self, unet, conditioner: Conditioner):
        super().__init__()
        self.unet = unet
        self.conditioner = conditioner

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Condition, drop: torch.Tensor) -> torch.Tensor:
        class_labels = self.conditioner(cond, drop)
        return self.unet(x, t, class_labels=class_labels, return_dict=False)[0]


def build_denoiser(cfg: ModelConfig, in_channels: int, kind: str, n_classes: int, flux_frequencies: int = 8,
                   embed_dim: int | None = None) -> Denoiser:
    """U-Net and conditioner for a run."""
    unet = build_unet(cfg, in_channels, kind, n_classes)
    cond = Conditioner(kind, n_classes, time_embed_dim(cfg), flux_frequencies=flux_frequencies, embed_dim=embed_dim)
    return Denoiser(unet, cond)


def save_denoiser(denoiser: Denoiser, folder: str | Path) -> Path:
    """Write the weights into a model folder: U-Net ``save_pretrained`` and the conditioner's weights if any.

    The run's metadata (``flaresynth.json``) is written by :func:`flaresynth.runs.write_meta`.
    """
    folder = Path(folder)
    denoiser.unet.save_pretrained(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in denoiser.conditioner.state_dict().items()}
    if state:
        save_file(state, str(folder / CONDITIONER_FILE))
    return folder


def load_denoiser(folder: str | Path, conditioning: dict, device: str | torch.device = "cpu") -> Denoiser:
    """Read the weights :func:`save_denoiser` wrote; ``conditioning`` is the conditioner's
    :meth:`~flaresynth.models.conditioning.Conditioner.describe` (stored in the run's metadata). Eval mode."""
    folder = Path(folder)
    c = conditioning
    try:
        unet = UNet2DModel.from_pretrained(folder)
    except (OSError, ValueError, RuntimeError) as exc:
        raise FlaresynthError(f"{folder}: U-Net weights unreadable ({str(exc).splitlines()[0]})") from None
    conditioner = Conditioner(c["kind"], c["n_classes"], c["time_embed_dim"], c["flux_frequencies"], c["embed_dim"])
    if (folder / CONDITIONER_FILE).is_file():
        try:
            conditioner.load_state_dict(load_file(str(folder / CONDITIONER_FILE)))
        except (OSError, RuntimeError) as exc:
            raise FlaresynthError(f"{folder / CONDITIONER_FILE}: unreadable ({str(exc).splitlines()[0]})") from None
    elif not conditioner.native:
        raise FlaresynthError(f"{folder / CONDITIONER_FILE}: missing ({c['kind']} conditioning needs it)")
    return Denoiser(unet, conditioner).to(device).eval()


__all__ = [
    "block_types",
    "time_embed_dim",
    "build_unet",
    "build_denoiser",
    "count_parameters",
    "Denoiser",
    "save_denoiser",
    "load_denoiser",
]
