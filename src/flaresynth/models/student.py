"""The distilled student: a denoiser that takes the CFG weight w as an input (one forward per sampling step).

What it is trained on and how is :mod:`flaresynth.distill` (Meng et al. 2023, "On Distillation of Guided Diffusion
Models"; Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of Diffusion Models"). A student's model
folder is the U-Net's ``save_pretrained`` folder plus :data:`STUDENT_FILE` and the run's ``flaresynth.json``
(:mod:`flaresynth.runs`, model kind ``student``).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
from diffusers import UNet2DModel
from diffusers.models.embeddings import TimestepEmbedding
from safetensors.torch import load_file, save_file
from torch import nn

from flaresynth.errors import FlaresynthError
from flaresynth.models.conditioning import Condition, Conditioner

#: Weights of a student beside its U-Net: conditioner, class table (discrete teachers) and the w embedding.
STUDENT_FILE = "student.safetensors"
#: w is divided by this before its sinusoidal features (the usual CFG weights, 0..4, map to 0..1).
GUIDANCE_SCALE = 4.0


def guidance_features(guidance: torch.Tensor, n_frequencies: int) -> torch.Tensor:
    """(B,) CFG weights -> (B, 1 + 2·n) features [u, sin(f_k u), cos(f_k u)], u = w / 4, f_k = π 2^k / 2."""
    u = (guidance.float() / GUIDANCE_SCALE)[:, None]
    freqs = (2.0 ** torch.arange(n_frequencies, device=u.device, dtype=torch.float32)) * (math.pi / 2)
    return torch.cat([u, torch.sin(u * freqs), torch.cos(u * freqs)], dim=1)


class GuidanceStudent(nn.Module):
    """A denoiser with the CFG weight as an input: ``(x_t, t, condition, w) -> ε`` in one forward.

    ``unet`` takes a ready conditioning vector (``class_embed_type="identity"``); the vector is the teacher's
    conditioning (its :class:`~flaresynth.models.conditioning.Conditioner`, or for a ``discrete`` teacher the
    U-Net's own class table, moved out as ``label_embedding``) plus the embedding of w.
    """

    #: read by :func:`flaresynth.diffusion.guided_output`: one forward with w instead of the CFG pair
    takes_guidance = True

    def __init__(self, unet, conditioner: Conditioner, label_embedding: nn.Embedding | None, guidance_frequencies: int):
        super().__init__()
        self.unet = unet
        self.conditioner = conditioner
        self.label_embedding = label_embedding
        self.guidance_frequencies = int(guidance_frequencies)
        self.guidance_embedding = TimestepEmbedding(1 + 2 * self.guidance_frequencies, conditioner.time_embed_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Condition, guidance: torch.Tensor) -> torch.Tensor:
        if self.label_embedding is not None:
            vec = self.label_embedding(cond.labels)
        else:
            vec = self.conditioner(cond, torch.zeros(len(cond), dtype=torch.bool, device=x.device))
        guidance = torch.as_tensor(guidance, dtype=torch.float32, device=x.device).expand(x.shape[0])
        vec = vec + self.guidance_embedding(guidance_features(guidance, self.guidance_frequencies))
        return self.unet(x, t, class_labels=vec, return_dict=False)[0]

    def describe(self) -> dict:
        """JSON-ready description (stored beside the weights as ``flaresynth.json``'s ``student``)."""
        return {"guidance_frequencies": self.guidance_frequencies, "guidance_scale": GUIDANCE_SCALE,
                "label_embedding": self.label_embedding is not None}


def student_from_teacher(teacher, guidance_frequencies: int = 8) -> GuidanceStudent:
    """A :class:`GuidanceStudent` that computes exactly the teacher's conditional output (for any w) at first.

    ``teacher``: a :class:`flaresynth.models.unet.Denoiser`. A discrete teacher's class table (inside its
    U-Net) moves out into ``label_embedding``; everything else is copied.
    """
    unet_cfg = dict(teacher.unet.config)
    state = {k: v.clone() for k, v in teacher.unet.state_dict().items()}
    label_embedding = None
    if teacher.conditioner.native:
        table = state.pop("class_embedding.weight")
        label_embedding = nn.Embedding(*table.shape)
        label_embedding.weight.data.copy_(table)
        unet_cfg.update(num_class_embeds=None, class_embed_type="identity")
    unet = UNet2DModel.from_config({k: v for k, v in unet_cfg.items() if not k.startswith("_")})
    unet.load_state_dict(state)
    student = GuidanceStudent(unet, copy.deepcopy(teacher.conditioner), label_embedding, guidance_frequencies)
    # w starts with no effect: the student begins as the teacher's conditional model
    nn.init.zeros_(student.guidance_embedding.linear_2.weight)
    nn.init.zeros_(student.guidance_embedding.linear_2.bias)
    return student.to(next(teacher.parameters()).device)


def save_student(student: GuidanceStudent, folder: str | Path) -> Path:
    """Write a student's weights into a model folder: U-Net ``save_pretrained`` and :data:`STUDENT_FILE`
    (conditioner, class table, w embedding). The run's metadata is :func:`flaresynth.runs.write_meta`'s."""
    folder = Path(folder)
    student.unet.save_pretrained(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in student.state_dict().items() if not k.startswith("unet.")}
    save_file(state, str(folder / STUDENT_FILE))
    return folder


def load_student(folder: str | Path, meta: dict, device: str | torch.device = "cpu") -> GuidanceStudent:
    """Read the weights :func:`save_student` wrote; ``meta`` is the run's metadata (its ``conditioning`` and
    ``student`` descriptions). Eval mode."""
    folder = Path(folder)
    c, s = meta["conditioning"], meta["student"]
    try:
        unet = UNet2DModel.from_pretrained(folder)
    except (OSError, ValueError, RuntimeError) as exc:
        raise FlaresynthError(f"{folder}: U-Net weights unreadable ({str(exc).splitlines()[0]})") from None
    conditioner = Conditioner(c["kind"], c["n_classes"], c["time_embed_dim"], c["flux_frequencies"], c["embed_dim"])
    labels = nn.Embedding(c["n_classes"] + 1, c["time_embed_dim"]) if s["label_embedding"] else None
    student = GuidanceStudent(unet, conditioner, labels, s["guidance_frequencies"])
    try:
        state = load_file(str(folder / STUDENT_FILE))
    except (OSError, RuntimeError) as exc:
        raise FlaresynthError(f"{folder / STUDENT_FILE}: unreadable ({str(exc).splitlines()[0]})") from None
    missing, unexpected = student.load_state_dict({**{f"unet.{k}": v for k, v in unet.state_dict().items()}, **state},
                                                  strict=False)
    if missing or unexpected:
        raise FlaresynthError(f"{folder / STUDENT_FILE}: weights do not fit the student "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return student.to(device).eval()


__all__ = ["STUDENT_FILE", "GUIDANCE_SCALE", "GuidanceStudent", "guidance_features", "student_from_teacher",
           "save_student", "load_student"]
