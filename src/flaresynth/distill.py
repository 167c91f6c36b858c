"""Few-step sampling by distillation: classifier-free guidance folded into one forward, then DDIM steps halved.

Run it::

    flaresynth distill --run RUN --out RUN2 --steps 4            # RUN: a DDPM run folder or demo:discrete
    flaresynth distill --run RUN --out RUN2 --steps 4 --resume   # continue an interrupted distillation
    flaresynth sample --run RUN2 --out SAMPLES                   # 4 DDIM steps, one forward each

Two published methods, one after the other (Meng et al. 2023, "On Distillation of Guided Diffusion Models",
CVPR, whose two stages are exactly these):

1. **Guidance distillation** (their stage one). The student ε_s(x_t, t, c, w) takes the CFG weight w as an
   input and learns the teacher's guided output ε(x_t, c) + w·(ε(x_t, c) − ε(x_t, ∅)) (Ho & Salimans 2022;
   :func:`flaresynth.diffusion.cfg_combine`), w ~ U[``guidance_min``, ``guidance_max``]: one forward per step
   instead of two. w enters like the timestep: sinusoidal features, then diffusers' ``TimestepEmbedding`` MLP,
   added to the conditioning vector the U-Net adds to its time embedding (:class:`GuidanceStudent`). That MLP's
   last layer starts at zero, so the student starts as the teacher's *conditional* model (w ignored).
2. **Progressive distillation** (Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of Diffusion
   Models", ICLR, Algorithm 2; Meng et al.'s stage two, with w as input). Each stage trains a student, started
   from its teacher (the previous stage's student), whose ONE DDIM step from x_t lands where TWO DDIM steps of
   the teacher land; the steps halve: ``--teacher-steps`` N0 (64) → 32 → ... → ``--steps``.

The target of a progressive stage: with z'' the teacher's two-step result and α, σ the signal and noise scales
(√ᾱ, √(1−ᾱ)), the x₀ that one DDIM step from z_t must predict to land on z'' is
x̃ = (z'' − (σ''/σ_t) z_t) / (α'' − (σ''/σ_t) α_t) (Salimans & Ho, Algorithm 2), i.e. the noise
ε̃ = (z_t − α_t x̃)/σ_t. Both stages minimise the mean squared error between the student's ε and its target ε
(the teacher's own "simple" loss; the teacher predicts ε, and the student keeps that parameterisation so it
starts exactly from the teacher's weights). Salimans & Ho weight the x-space error by max(SNR, 1) instead
(= the ε error × max(1, 1/SNR)); with the ε parameterisation that weighting did worse here: on the tiny test
model (4 -> 2 steps, 80 steps per stage) the 2-step student's mean squared distance to the teacher's guided
4-step samples was 0.212 with it against 0.171 without (0.202 before distillation), so it is not used.

Steps are diffusers' ``DDIMScheduler`` (η = 0) with ``timestep_spacing="trailing"`` (Lin et al. 2024, "Common
Diffusion Noise Schedules and Sample Steps are Flawed"): a 4-step sampler then starts at t = T−1, where x_T
is the noise it is drawn as, instead of t = 750 with the default "leading" spacing. Training timesteps are the
points of the stage's own DDIM grid (all a sampler of that many steps ever visits). The student's run holds
that scheduler config, so ``flaresynth sample`` samples it with DDIM at its step count and nothing else.

Each stage is one ordinary training run of ``kind: student`` (:class:`DistillObjective` in the loop of
:func:`flaresynth.train.train`: accelerate, EMA, atomic resumable checkpoints, log, progress). The run folder::

    RUN2/
      config.yaml        the last stage's config (kind: student; sample: ddim, --steps)
      model/             the last stage's EMA weights (:func:`save_student`), the folder `flaresynth sample` reads
      log.jsonl          every stage's log lines, each with its "stage"
      provenance.json    command, teacher, data hash, the stages and their timings
      stages/
        0-guidance-64/   a training run (config, log, checkpoints while it runs, model/)
        1-progressive-32/
        ...

A completed stage keeps only its ``model/`` (the next stage's teacher) and its log; ``--resume`` skips the
completed stages and resumes the interrupted one from its latest checkpoint.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import torch
from torch import nn

from flaresynth.config import RunConfig
from flaresynth.diffusion import cfg_combine
from flaresynth.errors import FlaresynthError
from flaresynth.io import atomic_dir, atomic_file, read_json, write_json
from flaresynth.models.conditioning import Condition, Conditioner
from flaresynth.models.unet import META_FILE
from flaresynth.train import EMBEDDING_CLASSES_FILE, DiffusionObjective

#: Weights of a student beside its U-Net: conditioner, class table (discrete teachers) and the w embedding.
STUDENT_FILE = "student.safetensors"
STAGES = "stages"
#: w is divided by this before its sinusoidal features (the usual CFG weights, 0..4, map to 0..1).
GUIDANCE_SCALE = 4.0
#: Defaults of `flaresynth distill` (measured choices still to be made: see the module's tests and benchmark).
DEFAULT_TEACHER_STEPS = 64
DEFAULT_STAGE_STEPS = 1000
DEFAULT_LR = 1e-4


# ------------------------------------------------------------------------------------------ the student


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
        from diffusers.models.embeddings import TimestepEmbedding

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
    from diffusers import UNet2DModel

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


def save_student(student: GuidanceStudent, folder: str | Path, meta: dict) -> Path:
    """A student's model folder: U-Net ``save_pretrained``, :data:`STUDENT_FILE`, ``flaresynth.json``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    student.unet.save_pretrained(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in student.state_dict().items() if not k.startswith("unet.")}
    save_file(state, str(folder / STUDENT_FILE))
    write_json(folder / META_FILE, {**meta, "conditioning": student.conditioner.describe(), "student": {
        **meta.get("student", {}), **student.describe()}})
    return folder


def is_student(path: str | Path) -> bool:
    """True when ``path`` (a run or model folder) holds a distilled student."""
    path = Path(path)
    for cand in (path / "model", path):
        if (cand / META_FILE).is_file():
            try:
                return "student" in read_json(cand / META_FILE)
            except (ValueError, OSError):
                return False
    return False


def load_student(folder: str | Path, device: str | torch.device = "cpu") -> tuple[GuidanceStudent, dict]:
    """Read a model folder written by :func:`save_student`: the student (eval mode) and its metadata."""
    from diffusers import UNet2DModel
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / META_FILE).is_file() or not (folder / STUDENT_FILE).is_file():
        raise FlaresynthError(f"{folder}: not a distilled student's model folder ({META_FILE} or {STUDENT_FILE} missing)")
    meta = read_json(folder / META_FILE)
    c, s = meta["conditioning"], meta["student"]
    try:
        unet = UNet2DModel.from_pretrained(folder)
    except (OSError, ValueError, RuntimeError) as exc:
        raise FlaresynthError(f"{folder}: U-Net weights unreadable ({str(exc).splitlines()[0]})") from None
    conditioner = Conditioner(c["kind"], c["n_classes"], c["time_embed_dim"], c["flux_frequencies"], c["embed_dim"])
    labels = nn.Embedding(c["n_classes"] + 1, c["time_embed_dim"]) if s["label_embedding"] else None
    student = GuidanceStudent(unet, conditioner, labels, s["guidance_frequencies"])
    state = load_file(str(folder / STUDENT_FILE))
    missing, unexpected = student.load_state_dict({**{f"unet.{k}": v for k, v in unet.state_dict().items()}, **state},
                                                  strict=False)
    if missing or unexpected:
        raise FlaresynthError(f"{folder / STUDENT_FILE}: weights do not fit the student "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return student.to(device).eval(), meta


# ------------------------------------------------------------------------------------------ DDIM steps


def student_scheduler_config(scheduler_config: dict) -> dict:
    """The DDIM sampler config of every stage: the training schedule, ``timestep_spacing="trailing"``."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(dict(scheduler_config), timestep_spacing="trailing")
    return {k: v for k, v in dict(sched.config).items() if not k.startswith("_")}


def ddim_scheduler(config: dict, steps: int):
    """diffusers ``DDIMScheduler`` (η = 0) of ``config`` with ``steps`` timesteps set."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(config)
    sched.set_timesteps(int(steps))
    return sched


def ddim_step(scheduler, model_output: torch.Tensor, timesteps: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
    """``DDIMScheduler.step`` for a batch whose items sit at different timesteps (one call per distinct t)."""
    out = torch.empty_like(sample)
    for t in torch.unique(timesteps).tolist():
        sel = timesteps == t
        out[sel] = scheduler.step(model_output[sel], int(t), sample[sel]).prev_sample
    return out


def _scales(scheduler, alpha_bar: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a = alpha_bar.to(like.device, torch.float32).view(-1, *([1] * (like.ndim - 1)))
    return a.sqrt(), (1 - a).sqrt()


def previous_alpha_bar(scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """ᾱ at the timestep one DDIM step of ``scheduler`` goes to from each of ``timesteps`` (as its ``step``)."""
    prev = timesteps - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    ab = scheduler.alphas_cumprod[prev.clamp(min=0).cpu()]
    return torch.where(prev.cpu() >= 0, ab, torch.as_tensor(float(scheduler.final_alpha_cumprod)))


def one_step_noise(scheduler, z_t: torch.Tensor, timesteps: torch.Tensor, z_target: torch.Tensor) -> torch.Tensor:
    """The ε with which ONE DDIM step of ``scheduler`` from ``z_t`` lands on ``z_target`` (module docstring)."""
    a_t, s_t = _scales(scheduler, scheduler.alphas_cumprod[timesteps.cpu()], z_t)
    a_p, s_p = _scales(scheduler, previous_alpha_bar(scheduler, timesteps), z_t)
    x0 = (z_target - (s_p / s_t) * z_t) / (a_p - (s_p / s_t) * a_t)
    return (z_t - a_t * x0) / s_t


# ------------------------------------------------------------------------------------------ the objective


def load_teacher(path: str | Path, device="cpu"):
    """The teacher of a stage: a DDPM ``Denoiser`` (guidance stage) or a :class:`GuidanceStudent`."""
    from flaresynth.models.unet import load_model
    from flaresynth.sampling import model_folder

    folder = model_folder(Path(path))
    return load_student(folder, device) if is_student(folder) else load_model(folder, device)


class DistillObjective(DiffusionObjective):
    """One distillation stage (config ``distill``) as an objective of :func:`flaresynth.train.train`.

    ``loss`` draws, from the step's generator and in this order, the grid timesteps, the noise and the CFG
    weights; the teacher (frozen, its EMA weights) makes the target without gradients.
    """

    name = "student"

    def __init__(self, cfg: RunConfig, data: dict, classes):
        super().__init__(cfg, data, classes)
        d = cfg.distill
        self.teacher, self.teacher_meta = load_teacher(d.teacher)
        self.teacher.requires_grad_(False)
        teacher_is_student = "student" in self.teacher_meta
        if teacher_is_student != (d.stage == "progressive"):
            raise FlaresynthError(f"{d.teacher}: distill.teacher: a {d.stage} stage needs a "
                                  f"{'distilled student' if d.stage == 'progressive' else 'DDPM'} as its teacher")
        self.sampler_config = student_scheduler_config(self.scheduler.config)
        self.student_sched = ddim_scheduler(self.sampler_config, d.student_steps)
        self.teacher_sched = ddim_scheduler(self.sampler_config, d.teacher_steps)
        self.grid = self.student_sched.timesteps.clone()

    def build_model(self) -> nn.Module:
        if self.cfg.distill.stage == "guidance":
            model = student_from_teacher(self.teacher, self.cfg.distill.guidance_frequencies)
        else:
            model = copy.deepcopy(self.teacher)
        return model.requires_grad_(True).train()

    def draw(self, x0: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z_t, t, w) of one batch: grid timesteps, the noised images, the CFG weights."""
        d, dev = self.cfg.distill, x0.device
        t = self.grid[torch.randint(0, len(self.grid), (len(x0),), generator=g)].to(dev)
        noise = torch.randn(x0.shape, generator=g).to(dev)
        w = (d.guidance_min + (d.guidance_max - d.guidance_min) * torch.rand(len(x0), generator=g)).to(dev)
        return self.student_sched.add_noise(x0, noise, t), t, w

    @torch.no_grad()
    def target(self, z: torch.Tensor, t: torch.Tensor, cond: Condition, w: torch.Tensor) -> torch.Tensor:
        """The ε the student should output at (z, t, c, w)."""
        self.teacher.to(z.device).eval()
        if self.cfg.distill.stage == "guidance":
            n = len(z)
            drop = torch.cat([torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)]).to(z.device)
            out = self.teacher(torch.cat([z, z]), torch.cat([t, t]), cond.twice(), drop)
            return cfg_combine(out[:n], out[n:], w.view(-1, *([1] * (z.ndim - 1))))
        half = self.teacher_sched
        z1 = ddim_step(half, self.teacher(z, t, cond, w), t, z)
        t1 = t - half.config.num_train_timesteps // half.num_inference_steps
        z2 = ddim_step(half, self.teacher(z1, t1, cond, w), t1, z1)
        return one_step_noise(self.student_sched, z, t, z2)

    def loss(self, model, x0: torch.Tensor, cond, g: torch.Generator) -> torch.Tensor:
        z, t, w = self.draw(x0, g)
        target = self.target(z, t, cond, w)
        pred = model(z, t, cond, w)
        return torch.mean((pred.float() - target.float()) ** 2)

    def meta(self) -> dict:
        d = self.cfg.distill
        return {"scheduler": self.sampler_config,
                "student": {"stage": d.stage, "steps": d.student_steps, "teacher_steps": d.teacher_steps,
                            "teacher": d.teacher, "teacher_id": self.teacher_meta.get("model_id"),
                            "guidance_range": [d.guidance_min, d.guidance_max]},
                **({"encoder_id": self.data["encoder_id"]} if "encoder_id" in self.data else {})}

    def save_final(self, raw_model, folder: Path, meta: dict) -> None:
        save_student(raw_model, folder, {**meta, "ema_weights": True})
        ddim_scheduler(self.sampler_config, self.cfg.distill.student_steps).save_pretrained(folder / "scheduler")
        if "class_embedding_gaussians" in self.data:
            self.data["class_embedding_gaussians"].save(folder / EMBEDDING_CLASSES_FILE)


# ------------------------------------------------------------------------------------------ the stages


def stage_plan(teacher_steps: int, steps: int, num_train_timesteps: int = 1000) -> list[tuple[str, int, int]]:
    """(stage, teacher steps, student steps) of each stage: guidance at N0, then halvings down to ``steps``."""
    if int(steps) != steps or steps < 1:
        raise FlaresynthError(f"--steps {steps!r}: expected a whole number >= 1")
    if int(teacher_steps) != teacher_steps or not 1 <= teacher_steps <= num_train_timesteps:
        raise FlaresynthError(f"--teacher-steps {teacher_steps!r}: expected a whole number from 1 to "
                              f"{num_train_timesteps} (the teacher's diffusion steps)")
    if steps > teacher_steps:
        raise FlaresynthError(f"--steps {steps}: more than the teacher's {teacher_steps} DDIM steps (--teacher-steps) "
                              "that distillation starts from and halves")
    ratio = teacher_steps // steps
    if teacher_steps % steps or ratio & (ratio - 1):
        raise FlaresynthError(f"--steps {steps}: --teacher-steps {teacher_steps} must be {steps} times a power of two "
                              "(each progressive stage halves the steps)")
    plan, n = [("guidance", int(teacher_steps), int(teacher_steps))], int(teacher_steps)
    while n > steps:
        plan.append(("progressive", n, n // 2))
        n //= 2
    return plan


def stage_config(teacher_cfg: RunConfig, stage: str, teacher: Path, teacher_steps: int, student_steps: int,
                 train_steps: int, lr: float, batch_size: int | None, guidance_range: tuple[float, float]) -> RunConfig:
    """The training config of one stage: the teacher's network and schedule, a ``distill`` section, short training."""
    d = teacher_cfg.to_dict()
    w = min(max(float(d["sample"]["guidance"]), guidance_range[0]), guidance_range[1])
    d.update(name=f"{d['name']}-student{student_steps}", kind="student")
    d["diffusion"]["loss_weighting"] = "none"  # what DistillObjective.loss does (plain ε MSE), whatever the teacher's
    d["distill"] = {"teacher": str(Path(teacher).resolve()), "stage": stage, "teacher_steps": int(teacher_steps),
                    "student_steps": int(student_steps), "guidance_min": float(guidance_range[0]),
                    "guidance_max": float(guidance_range[1]), "guidance_frequencies": d["distill"]["guidance_frequencies"]}
    d["train"].update(steps=int(train_steps), lr=float(lr), warmup_steps=0, lr_schedule="cosine", sample_every=0,
                      checkpoint_every=min(int(d["train"]["checkpoint_every"]) or train_steps, train_steps))
    if batch_size is not None:
        d["train"]["batch_size"] = int(batch_size)
    d["sample"].update(sampler="ddim", steps=int(student_steps), guidance=w, grid_sampler="ddim",
                       grid_steps=int(student_steps))
    return RunConfig.from_dict(d, source=f"stage {stage} of the distillation")


def _stage_complete(folder: Path) -> bool:
    prov = folder / "provenance.json"
    return (folder / "model" / META_FILE).is_file() and prov.is_file() and bool(read_json(prov).get("complete"))


def distill(
    run: str | Path,
    out: str | Path,
    steps: int = 4,
    *,
    teacher_steps: int = DEFAULT_TEACHER_STEPS,
    data: str | Path | None = None,
    stage_steps: int = DEFAULT_STAGE_STEPS,
    guidance_steps: int | None = None,
    lr: float = DEFAULT_LR,
    batch_size: int | None = None,
    guidance_range: tuple[float, float] = (0.0, 4.0),
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
    command: list[str] | None = None,
) -> Path:
    """Distil DDPM run ``run`` into a ``steps``-step student with w as input; returns the student's run folder.

    Parameters
    ----------
    run : the teacher: a DDPM run folder or shipped name (``demo:discrete``); not a ceVAE, not a student.
    out : the student's run folder (module docstring).
    steps : DDIM steps of the student (one forward each).
    teacher_steps : DDIM steps N0 the guidance stage works at; ``steps`` × a power of two.
    data : the teacher's dataset folder (default: the one its provenance names; the data hash must match).
    stage_steps : optimiser steps of each progressive stage; ``guidance_steps`` those of the guidance stage
        (default ``stage_steps``).
    lr, batch_size : AdamW rate (cosine to 0 over each stage) and batch (default: the teacher's).
    guidance_range : the CFG weights w the student learns (uniform).
    resume : continue an interrupted distillation in ``out``.
    """
    from flaresynth.dataset import open_dataset
    from flaresynth.models.cevae import is_cevae
    from flaresynth.sampling import model_folder, resolve_run
    from flaresynth.train import train

    out = Path(out)
    t_start = time.time()
    teacher_run = resolve_run(run)
    if is_cevae(teacher_run):
        raise FlaresynthError(f"{run}: a ceVAE run; only a diffusion (DDPM) run can be distilled")
    if is_student(teacher_run):
        raise FlaresynthError(f"{run}: already a distilled student; distil its teacher instead "
                              "(--steps sets how few steps the new student takes)")
    teacher_folder = model_folder(teacher_run)
    meta = read_json(teacher_folder / META_FILE)
    teacher_cfg = RunConfig.from_dict(meta["config"], source=str(teacher_folder / META_FILE))
    if teacher_cfg.kind != "ddpm":
        raise FlaresynthError(f"{teacher_folder / META_FILE}: config.kind: {teacher_cfg.kind!r}, expected ddpm")
    plan = stage_plan(teacher_steps, steps, teacher_cfg.diffusion.num_train_timesteps)
    for name, value in (("--stage-steps", stage_steps), ("--guidance-steps", guidance_steps),
                        ("--batch-size", batch_size)):
        if value is not None and (int(value) != value or value < 1):
            raise FlaresynthError(f"{name} {value!r}: expected a whole number >= 1")
    if not (math.isfinite(lr) and lr > 0):
        raise FlaresynthError(f"--lr {lr!r}: expected a positive number")
    w_lo, w_hi = (float(v) for v in guidance_range)
    if not 0 <= w_lo <= w_hi:
        raise FlaresynthError(f"--guidance-range {w_lo:g},{w_hi:g}: expected 0 <= min <= max")
    if out.exists() and not resume:
        raise FlaresynthError(f"{out}: exists; choose another --out (or pass --resume to continue a distillation)")
    if resume and out.exists() and not (out / STAGES).is_dir():
        raise FlaresynthError(f"{out}: not a distillation to resume (no {STAGES}/ folder)")
    if data is None:
        prov = teacher_run / "provenance.json"
        data = read_json(prov).get("data") if prov.is_file() else None
        if not data or not Path(data).exists():
            raise FlaresynthError(f"{teacher_run}: its training dataset ({data or 'not recorded'}) is not here; "
                                  "pass --data DS (the teacher's dataset, checked by its data hash)")
    ds = open_dataset(data)
    if ds.manifest.get("data_hash") != meta.get("data_hash"):
        raise FlaresynthError(f"{ds.path / 'manifest.json'}: data_hash: not the dataset the teacher {run} was trained "
                              "on; pass the teacher's dataset with --data")

    # under `accelerate launch` every process runs each stage; only the main one writes the run folder's top
    is_main = int(os.environ.get("RANK", "0")) == 0
    stages, sessions, teacher, logs = [], [], teacher_folder, []
    for i, (stage, n_teacher, n_student) in enumerate(plan):
        folder = out / STAGES / f"{i}-{stage}-{n_student}"
        n_train = (guidance_steps or stage_steps) if stage == "guidance" else stage_steps
        cfg = stage_config(teacher_cfg, stage, teacher, n_teacher, n_student, n_train, lr, batch_size,
                           (w_lo, w_hi))
        if not _stage_complete(folder):
            again = (folder / "config.yaml").is_file()
            train(ds.path, folder, None if again else cfg, resume=again, device=device, progress=progress,
                  command=command or ["flaresynth", *sys.argv[1:]])
            if is_main:
                shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # its model/ is all the next stage needs
        prov = read_json(folder / "provenance.json")
        stages.append({"stage": stage, "folder": str(folder.relative_to(out)), "teacher_steps": n_teacher,
                       "student_steps": n_student, "train_steps": prov["steps"],
                       "seconds": sum(s["seconds"] for s in prov["sessions"])})
        sessions += [{"stage": stages[-1]["folder"], **s} for s in prov["sessions"]]
        if (folder / "log.jsonl").is_file():
            logs += [json.dumps({"stage": f"{i}-{stage}-{n_student}", **json.loads(ln)})
                     for ln in (folder / "log.jsonl").read_text().splitlines() if ln.strip()]
        teacher = folder / "model"

    if not is_main:
        return out
    # the student's run folder: the last stage's config and model at the top, like any run; model/ (what
    # `flaresynth sample` reads) appears last, renamed into place when complete
    last = out / stages[-1]["folder"]
    shutil.copyfile(last / "config.yaml", out / "config.yaml")
    with atomic_file(out / "log.jsonl", "w") as fh:
        fh.write("".join(ln + "\n" for ln in logs))
    n_train = sum(s["train_steps"] for s in stages)
    write_json(out / "provenance.json", {
        "stage": "distill", "run": str(out), "teacher": str(teacher_run), "teacher_id": meta.get("model_id"),
        "data": str(Path(ds.path).resolve()), "data_hash": meta.get("data_hash"), "student_steps": int(steps),
        "teacher_steps": int(teacher_steps), "guidance_range": [w_lo, w_hi], "stages": stages,
        "steps": n_train, "planned_steps": n_train, "complete": True, "sessions": sessions,
        "parameters": read_json(last / "model" / META_FILE).get("parameters"),
        "command": command or ["flaresynth", *sys.argv[1:]], "seconds": round(time.time() - t_start, 2),
    })
    with atomic_dir(out / "model", overwrite=True) as tmp:
        shutil.copytree(last / "model", tmp, dirs_exist_ok=True)
    return out


__all__ = [
    "GuidanceStudent",
    "DistillObjective",
    "guidance_features",
    "student_from_teacher",
    "save_student",
    "load_student",
    "is_student",
    "load_teacher",
    "student_scheduler_config",
    "ddim_scheduler",
    "ddim_step",
    "one_step_noise",
    "stage_plan",
    "stage_config",
    "distill",
]
