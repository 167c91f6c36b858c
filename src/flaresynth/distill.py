"""Few-step sampling by distillation: classifier-free guidance folded into one forward, and 4 steps or fewer.

Run it::

    flaresynth distill --run RUN --out RUN2 --steps 4            # RUN: a DDPM run folder or demo:discrete
    flaresynth distill --run RUN --out RUN2 --steps 4 --resume   # continue an interrupted distillation
    flaresynth distill --run RUN --out RUN3 --steps 4 --method progressive   # the two-stage recipe below
    flaresynth distill --run RUN --out RUN4 --steps 4 --method consistency   # consistency distillation, below
    flaresynth sample --run RUN2 --out SAMPLES                   # its own 4 steps (DDIM; LCM if consistency), one forward each

The default, ``--method trajectory`` (below), was chosen by measurement: its 4-step students of both shipped
teachers land 0.0024 and 0.0039 (latent mean squared distance) from the teachers' DPM-Solver++ 20 samples of the
same noises, against 0.15 for the consistency students and 0.03 for the teacher's own DDIM 4, and they are the
shipped students (docs/latent_diffusion.md, "Session 42").

Two published methods, one after the other (Meng et al. 2023, "On Distillation of Guided Diffusion Models",
CVPR, whose two stages are exactly these):

1. **Guidance distillation** (their stage one). The student ε_s(x_t, t, c, w) takes the CFG weight w as an
   input and learns the teacher's guided output ε(x_t, c) + w·(ε(x_t, c) − ε(x_t, ∅)) (Ho & Salimans 2022;
   :func:`flaresynth.diffusion.guided_combine`), w ~ U[``guidance_min``, ``guidance_max``]: one forward per step
   instead of two. w enters like the timestep: sinusoidal features, then diffusers' ``TimestepEmbedding`` MLP,
   added to the conditioning vector the U-Net adds to its time embedding (:class:`~flaresynth.models.student.GuidanceStudent`). That MLP's
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

``--method consistency`` (the default from session 26 to 42, measured against the two stages above: on both
shipped teachers its 4-step students kept the teachers' judge F1 where the progressive ones lost a third of it;
docs/latent_diffusion.md, "Session 26") is one **consistency distillation**
stage (Song et al. 2023, "Consistency Models", ICML, Algorithm 2, with the guided teacher and w as an input as
in Luo et al. 2023, "Latent Consistency Models"). The student, started like the guidance stage's from the
teacher's conditional model, learns the consistency function f(z_t, t) = c_skip(t) z_t + c_out(t) x̂₀(z_t, t)
(:func:`flaresynth.diffusion.consistency_function`, ``LCMScheduler``'s c_skip and c_out) of the teacher's
guided DDIM ODE: on the ``--teacher-steps`` N-step grid (every T/N-th timestep, default 50 as in Luo et al.),
f at z_t must equal f at the point one guided teacher DDIM step down the grid. It samples with diffusers'
``LCMScheduler`` (multistep consistency sampling: predict x₀, add fresh noise down to the next of its
``--steps`` grid points, predict again); ``--stage-steps`` is its training length.

``--method trajectory`` regresses the student on the guided teacher's own sampling paths (after Luhman & Luhman
2021, "Knowledge Distillation in Iterative Generative Models", who distil a DDIM sampler's noise-to-image map into
one step; here into the student's few DDIM steps, with w as an input). First the teacher samples ``--trajectories``
requests (its own class requests, the classes taking turns, seeds from 1,000,000 so no evaluation's noise is among
them) with DPM-Solver++ on the ``--teacher-steps``-step trailing grid (default 20, the teachers' own sampler),
guided at w drawn per batch from ``--guidance-range`` within its guidance interval; its states at the points of the
student's ``--steps``-step trailing grid (999, 749, 499, 249 for 4) and its final sample are kept in
``OUT/trajectories.pt`` (:func:`teacher_trajectories`; ~80 MB for 4000 latent paths; written once, reused by
``--resume``). Then one training stage, started like the consistency stage's from the teacher's conditional model:
from a path's state at one grid point, one student DDIM step must land on the path's state at the next (its final
sample below the lowest), the progressive stage's target with the teacher's path instead of two teacher steps, the
ε MSE by default (``--snr-floor`` weights the x₀ error by max(SNR_t, γ) instead). The student samples with DDIM in
its ``--steps``, one forward each. Unlike the other methods it trains on the teacher's paths alone, not on noised
training images: what it learns is the map from noise to the teacher's image that the few-step sampler must compute.

The teacher's guidance interval (``sample.guidance_t_max``, Kynkäänniemi et al. 2024, "Applying Guidance in a
Limited Interval Improves Sample and Distribution Quality in Diffusion Models") is folded in too: with
``--guidance-t-max T`` (default: the teacher's config) the targets are the teacher's ODE guided only at t <= T
(its conditional output alone above), so the student's w is the weight inside that interval and the student
samples with w at each of its steps (its config has no interval of its own).

Steps are diffusers' ``DDIMScheduler`` (η = 0) with ``timestep_spacing="trailing"`` (Lin et al. 2024, "Common
Diffusion Noise Schedules and Sample Steps are Flawed"): a 4-step sampler then starts at t = T−1, where x_T
is the noise it is drawn as, instead of t = 750 with the default "leading" spacing. Training timesteps are the
points of the stage's own DDIM grid (all a sampler of that many steps ever visits). The student's run holds
that scheduler config, so ``flaresynth sample`` samples it with DDIM at its step count and nothing else.

Each stage is one ordinary training run of ``kind: student`` (:class:`flaresynth.train.DistillObjective` in the loop of
:func:`flaresynth.train.train`: accelerate, EMA, atomic resumable checkpoints, log, progress). The run folder::

    RUN2/
      config.yaml        the last stage's config (kind: student; sample: ddim, --steps)
      model/             the last stage's EMA weights (:func:`flaresynth.models.student.save_student`), the folder `flaresynth sample` reads
      log.jsonl          every stage's log lines, each with its "stage"
      provenance.json    command, teacher, data hash, the stages and their timings
      trajectories.pt    --method trajectory: the teacher's paths the student trained on
      trajectories.json  their request (count, teacher steps, w range, guidance interval) and drawing time
      stages/
        0-guidance-64/   a training run (config, log, checkpoints while it runs, model/)
        1-progressive-32/
        ...

A completed stage keeps only its ``model/`` (the next stage's teacher) and its log; ``--resume`` skips the
completed stages and resumes the interrupted one from its latest checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from flaresynth.config import CONSISTENCY_LOSSES, RunConfig
from flaresynth.dataset import open_dataset
from flaresynth.diffusion import make_sampler, sample_loop
from flaresynth.errors import FlaresynthError
from flaresynth.io import atomic_dir, atomic_file, read_json, write_json
from flaresynth.progress import ProgressBar
from flaresynth.runs import (
    AUTOENCODER_DIR,
    META_FILE,
    MODEL_DIR,
    PROVENANCE_FILE,
    latent_autoencoder_folder,
    model_folder,
    model_kind,
    open_run,
    read_meta,
    resolve,
)
from flaresynth.sampling import build_requests, conditions, request_embeddings
from flaresynth.train import train

STAGES = "stages"
METHODS = ("progressive", "consistency", "trajectory")
#: Defaults of `flaresynth distill`: the method and grid measured best (docs/latent_diffusion.md, "Session 26");
#: a trajectory student's teacher samples with DPM-Solver++ at the teachers' own step count.
DEFAULT_TEACHER_STEPS = {"progressive": 64, "consistency": 50, "trajectory": 20}
#: The teacher's paths of a trajectory distillation, in the student's run folder (kept: they are its training data).
TRAJECTORY_FILE = "trajectories.pt"
#: Beside it: the request the paths were drawn for and their cost (written after them, read without the 80 MB).
TRAJECTORY_RECORD = "trajectories.json"
#: How long the other processes of an `accelerate launch` wait for the main one to draw the teacher's paths.
PATHS_WAIT_SECONDS = 6 * 3600
DEFAULT_TRAJECTORIES = 4000
#: First request seed of the teacher's paths: far from an evaluation's (0, 1, ...), so a student never trains on
#: the noise an evaluation starts from.
TRAJECTORY_SEED = 1_000_000
#: Optimiser steps of the training stage(s); the shipped trajectory students took 3000 (batch 32, ~35 min here).
DEFAULT_STAGE_STEPS = {"progressive": 1000, "consistency": 1000, "trajectory": 3000}
DEFAULT_LR = 1e-4


# ------------------------------------------------------------------------------------------ the stages


def is_student(path: str | Path) -> bool:
    """True when ``path`` (a run or model folder, or a shipped name) holds a distilled student."""
    try:
        return model_kind(path) == "student"
    except FlaresynthError:
        return False



def stage_plan(teacher_steps: int, steps: int, num_train_timesteps: int = 1000,
               method: str = "trajectory") -> list[tuple[str, int, int]]:
    """(stage, teacher steps, student steps) of each stage. ``progressive``: guidance at N0, then halvings down
    to ``steps``; ``consistency``: one consistency stage on the N0-step grid; ``trajectory``: one stage on the
    teacher's N0-step paths."""
    if method not in METHODS:
        raise FlaresynthError(f"--method {method!r}: expected one of {', '.join(METHODS)}")
    if int(steps) != steps or steps < 1:
        raise FlaresynthError(f"--steps {steps!r}: expected a whole number >= 1")
    if int(teacher_steps) != teacher_steps or not 1 <= teacher_steps <= num_train_timesteps:
        raise FlaresynthError(f"--teacher-steps {teacher_steps!r}: expected a whole number from 1 to "
                              f"{num_train_timesteps} (the teacher's diffusion steps)")
    if steps > teacher_steps:
        raise FlaresynthError(f"--steps {steps}: more than the teacher's {teacher_steps} DDIM steps (--teacher-steps) "
                              "that distillation starts from")
    if method == "consistency":
        if num_train_timesteps % teacher_steps:
            raise FlaresynthError(f"--teacher-steps {teacher_steps}: expected a divisor of the teacher's "
                                  f"{num_train_timesteps} diffusion steps (the consistency grid is every T/N-th step)")
        return [("consistency", int(teacher_steps), int(steps))]
    if method == "trajectory":
        if num_train_timesteps % teacher_steps or teacher_steps % steps:
            raise FlaresynthError(f"--teacher-steps {teacher_steps}: expected a divisor of the teacher's "
                                  f"{num_train_timesteps} diffusion steps that is a multiple of --steps {steps} (the "
                                  "student's grid is then part of the teacher's)")
        return [("trajectory", int(teacher_steps), int(steps))]
    ratio = teacher_steps // steps
    if teacher_steps % steps or ratio & (ratio - 1):
        raise FlaresynthError(f"--steps {steps}: --teacher-steps {teacher_steps} must be {steps} times a power of two "
                              "(each progressive stage halves the steps)")
    plan, n = [("guidance", int(teacher_steps), int(teacher_steps))], int(teacher_steps)
    while n > steps:
        plan.append(("progressive", n, n // 2))
        n //= 2
    return plan


def trailing_grid(num_train_timesteps: int, steps: int) -> list[int]:
    """The timesteps of a ``steps``-step sampler with diffusers' ``"trailing"`` spacing (T−1, T−1−T/N, ...)."""
    k = num_train_timesteps // steps
    return [num_train_timesteps - 1 - j * k for j in range(steps)]


def teacher_trajectories(teacher: str | Path, n: int, teacher_steps: int, student_steps: int,
                         guidance_range: tuple[float, float], guidance_t_max: int | None,
                         seed: int = TRAJECTORY_SEED, batch_size: int = 50, device: str | None = None,
                         progress: bool = True) -> dict:
    """The guided teacher's DPM-Solver++ paths from ``n`` noises, kept at the student's grid points.

    The requests are the teacher's own class requests (:func:`flaresynth.sampling.build_requests`), the classes
    taking turns, so every class has n/5 paths whatever its share of the training set (a continuous teacher's
    flux drawn from the class's training quantiles as ``flaresynth sample`` draws it; an embedding teacher's
    embedding from its class Gaussian); seeds from ``seed`` on. Each batch of ``batch_size`` paths has one CFG
    weight w, uniform in ``guidance_range``, applied at t <= ``guidance_t_max``. The teacher steps on the
    ``teacher_steps``-step trailing grid, which holds the student's ``student_steps``-step one.

    Returns ``states`` (n, student_steps + 1, C, H, W): the path at each student grid point and its end (the
    teacher's sample, unclipped; latents for a latent teacher), ``timesteps``, ``guidance`` (n,), ``labels``,
    ``log_flux``, ``embedding`` (or ``None``) and ``seeds``.
    """
    model = open_run(teacher, device)
    trained = [c for c in model.classes if model.meta.get("train_counts", {}).get(c, 1) > 0]
    per_class = -(-int(n) // len(trained))
    table = build_requests(model, per_class=per_class, seed=seed)
    table = table.iloc[np.argsort(np.arange(len(table)) % per_class, kind="stable")[:n]]  # classes take turns
    emb = request_embeddings(model, table, "class-gaussian")[0] if model.conditioning == "discrete+embedding" else None
    cond, seeds = conditions(model, table, emb), table["seed"].to_numpy()
    grid = trailing_grid(int(model.meta["scheduler"]["num_train_timesteps"]), teacher_steps)
    keep = trailing_grid(int(model.meta["scheduler"]["num_train_timesteps"]), student_steps)
    rng = np.random.default_rng([int(seed), 0x5452414A])
    states = torch.zeros((n, len(keep) + 1, *model.sample_shape))
    guidance = torch.zeros(n)
    bar = ProgressBar(n * teacher_steps, f"teacher paths, dpm++ {teacher_steps} steps", unit="img·step") \
        if progress else None
    for lo in range(0, n, batch_size):
        hi = min(n, lo + batch_size)
        w = float(rng.uniform(*guidance_range))
        path: dict = {}
        sample_loop(model.network, make_sampler("dpm++", model.meta["scheduler"], timesteps=grid),
                    cond.index(slice(lo, hi)), seeds[lo:hi], model.sample_shape, guidance=w, device=model.device,
                    clip=False, guidance_t_max=guidance_t_max, states=path,
                    callback=(lambda _i, k=hi - lo: bar.update(k)) if bar is not None else None)
        states[lo:hi] = torch.stack([path[t] for t in keep] + [path[-1]], dim=1)
        guidance[lo:hi] = w
    if bar is not None:
        bar.close()
    return {"states": states, "timesteps": keep, "guidance": guidance, "labels": cond.labels,
            "log_flux": cond.log_flux, "embedding": cond.embedding, "seeds": torch.from_numpy(seeds.astype(np.int64)),
            "teacher_id": model.meta.get("model_id"), "teacher_steps": int(teacher_steps),
            "guidance_range": [float(v) for v in guidance_range], "guidance_t_max": guidance_t_max}


def _paths_request(paths: dict) -> dict:
    """What a file of teacher paths was drawn for (compared with what a distillation asks for)."""
    return {"n": len(paths["states"]), "teacher_steps": paths["teacher_steps"],
            "guidance_range": [float(v) for v in paths["guidance_range"]], "guidance_t_max": paths["guidance_t_max"]}


def _trajectory_file(out: Path, teacher: Path, n: int, teacher_steps: int, student_steps: int,
                     guidance_range: tuple[float, float], guidance_t_max: int | None, device, progress) -> dict:
    """The record of ``out/trajectories.pt`` (``trajectories.json``: its request and the seconds it took).

    The main process draws the paths once and writes the record after them; the other processes of an
    ``accelerate launch`` wait for the record (at most :data:`PATHS_WAIT_SECONDS`), so no process loads the 80 MB
    file here: each training stage reads it once (``train._read_trajectories``). Reused on resume.
    """
    path, record = out / TRAJECTORY_FILE, out / TRAJECTORY_RECORD
    if int(os.environ.get("RANK", "0")) == 0 and not record.is_file():
        if path.is_file():  # paths written before the record existed: read their request once
            paths = torch.load(path, weights_only=True)
        else:
            t0 = time.time()
            paths = teacher_trajectories(teacher, n, teacher_steps, student_steps, guidance_range, guidance_t_max,
                                         device=device, progress=progress)
            paths["seconds"] = round(time.time() - t0, 2)
            with atomic_file(path, "wb") as fh:
                torch.save(paths, fh)
        write_json(record, {**_paths_request(paths), "seconds": float(paths.get("seconds", 0.0))})
    waited = time.time()
    while not record.is_file():  # a crash of the main process ends the launch; a hung one must not hang us too
        if time.time() - waited > PATHS_WAIT_SECONDS:
            raise FlaresynthError(f"{record}: not written after {PATHS_WAIT_SECONDS} s; the main process draws the "
                                  "teacher's paths (see its log), then resume with --resume")
        time.sleep(5)
    found = read_json(record)
    asked = {"n": int(n), "teacher_steps": int(teacher_steps), "guidance_range": [float(v) for v in guidance_range],
             "guidance_t_max": guidance_t_max}
    drawn = {k: found.get(k) for k in asked}
    if drawn != asked:
        raise FlaresynthError(f"{path}: the teacher's paths of another request ({drawn}); this distillation asks for "
                              f"{asked} (choose another --out)")
    return found


#: ``guidance_t_max`` of :func:`distill` meaning "the teacher's config ``sample.guidance_t_max``".
TEACHER_CONFIG = "teacher"


def stage_config(teacher_cfg: RunConfig, stage: str, teacher: Path, teacher_steps: int, student_steps: int,
                 train_steps: int, lr: float, batch_size: int | None, guidance_range: tuple[float, float],
                 guidance_t_max: int | None = None, consistency_loss: str = "snr", snr_floor: float = 0.0,
                 sample_timesteps: list[int] | None = None, sample_guidance_t_max: int | None = None,
                 sample_guidance: float | None = None, trajectories: str | None = None,
                 sample_eta: float = 0.0) -> RunConfig:
    """The training config of one stage: the teacher's network and schedule, a ``distill`` section, short training.
    ``guidance_t_max`` (the teacher's guidance interval) goes into the targets; the stage samples at its sampler's
    own spacing with w at every step unless ``sample_timesteps`` / ``sample_guidance_t_max`` say otherwise, at
    ``sample_guidance`` (default: the teacher's w, clipped to ``guidance_range``) (its ``sample`` section, outside
    the fingerprint); ``consistency_loss`` and ``snr_floor`` are the consistency stage's distance (``DistillConfig``);
    ``trajectories``: a trajectory stage's file of the teacher's paths; ``sample_eta``: a DDIM student's η
    (``sample.eta``)."""
    d = teacher_cfg.to_dict()
    w = min(max(float(d["sample"]["guidance"] if sample_guidance is None else sample_guidance), guidance_range[0]),
            guidance_range[1])
    d.update(name=f"{d['name']}-student{student_steps}", kind="student")
    d["diffusion"]["loss_weighting"] = "none"  # what train.DistillObjective.loss does (plain ε MSE), whatever the teacher's
    d["distill"] = {"teacher": str(Path(teacher).resolve()), "stage": stage, "teacher_steps": int(teacher_steps),
                    "student_steps": int(student_steps), "guidance_min": float(guidance_range[0]),
                    "guidance_max": float(guidance_range[1]), "guidance_frequencies": d["distill"]["guidance_frequencies"],
                    "guidance_t_max": None if guidance_t_max is None else int(guidance_t_max),
                    "consistency_loss": consistency_loss, "snr_floor": float(snr_floor), "trajectories": trajectories}
    d["train"].update(steps=int(train_steps), lr=float(lr), warmup_steps=0, lr_schedule="cosine", sample_every=0,
                      checkpoint_every=min(int(d["train"]["checkpoint_every"]) or train_steps, train_steps))
    if batch_size is not None:
        d["train"]["batch_size"] = int(batch_size)
    sampler = "lcm" if stage == "consistency" else "ddim"
    d["sample"].update(sampler=sampler, steps=int(student_steps), guidance=w, grid_sampler=sampler,
                       grid_steps=int(student_steps), guidance_t_max=sample_guidance_t_max, timesteps=sample_timesteps,
                       eta=float(sample_eta) if sampler == "ddim" else 0.0)
    return RunConfig.from_dict(d, source=f"stage {stage} of the distillation")


def _check_sample_timesteps(timesteps: list[int], steps: int, teacher_steps: int, num_train_timesteps: int,
                            method: str) -> None:
    """``--sample-timesteps`` (a consistency student only): ``steps`` decreasing timesteps, points of its grid
    (t = k·n − 1 with k = T / N, as :mod:`flaresynth.diffusion` checks them when sampling)."""
    option = f"--sample-timesteps {','.join(map(str, timesteps))}"
    if method != "consistency":  # a progressive student samples with DDIM, which takes no explicit timesteps
        raise FlaresynthError(f"{option}: applies to --method consistency only")
    if len(timesteps) != steps:
        raise FlaresynthError(f"{option}: expected {steps} timesteps (--steps), got {len(timesteps)}")
    if any(a <= b for a, b in zip(timesteps, timesteps[1:])) or not 0 <= timesteps[-1] <= timesteps[0] < num_train_timesteps:
        raise FlaresynthError(f"{option}: expected decreasing whole numbers from {num_train_timesteps - 1} to 0")
    k = num_train_timesteps // teacher_steps
    off = [t for t in timesteps if (t + 1) % k]
    if off:
        raise FlaresynthError(f"{option}: {', '.join(map(str, off))} not on the student's {teacher_steps}-step grid "
                              f"(t = {k}·n − 1, --teacher-steps)")


def _stage_complete(folder: Path) -> bool:
    prov = folder / PROVENANCE_FILE
    return (folder / MODEL_DIR / META_FILE).is_file() and prov.is_file() and bool(read_json(prov).get("complete"))


def distill(
    run: str | Path,
    out: str | Path,
    steps: int = 4,
    *,
    method: str = "trajectory",
    teacher_steps: int | None = None,
    data: str | Path | None = None,
    stage_steps: int | None = None,
    guidance_steps: int | None = None,
    lr: float = DEFAULT_LR,
    batch_size: int | None = None,
    guidance_range: tuple[float, float] = (0.0, 4.0),
    guidance_t_max: int | None | str = TEACHER_CONFIG,
    consistency_loss: str = "snr",
    snr_floor: float = 0.0,
    sample_timesteps: Sequence[int] | None = None,
    sample_guidance_t_max: int | None = None,
    sample_guidance: float | None = None,
    sample_eta: float = 0.0,
    trajectories: int | None = None,
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
    steps : sampling steps of the student (one forward each).
    method : ``trajectory`` (one stage on the teacher's paths; the default, chosen by measurement: module
        docstring), ``consistency`` (one stage) or ``progressive`` (guidance, then halvings).
    teacher_steps : steps N0 of the teacher's grid (default 20 trajectory, 64 progressive, 50 consistency);
        progressive: ``steps`` × a power of two; consistency: a divisor of the teacher's diffusion steps;
        trajectory: a divisor of them that is a multiple of ``steps``.
    data : the teacher's dataset folder (default: the one its provenance names; the data hash must match).
    stage_steps : optimiser steps of each stage (default 3000 trajectory, 1000 otherwise); ``guidance_steps``
        those of the guidance stage (default ``stage_steps``).
    lr, batch_size : AdamW rate (cosine to 0 over each stage) and batch (default: the teacher's).
    guidance_range : the CFG weights w the student learns (uniform).
    guidance_t_max : the teacher guides only at timesteps t <= this in the targets (``None``: every timestep;
        default: the teacher's config ``sample.guidance_t_max``); a progressive stage from a student inherits it.
    consistency_loss : the consistency stage's distance, ``snr`` (default), ``snr-plus-one`` or ``pseudo-huber``
        (:class:`~flaresynth.config.DistillConfig`); ``snr_floor`` γ: with ``snr``, weight max(SNR_t, γ).
    sample_timesteps, sample_guidance_t_max : the student's sampling defaults (its config's ``sample.timesteps``,
        ``steps`` decreasing points of the teacher's grid, and ``sample.guidance_t_max``: w only at t <= it);
        default: the sampler's own spacing, w at every step.
    sample_eta : a DDIM student's default η (its config's ``sample.eta``; ``demo:discrete-student`` 0.3); not for
        ``consistency`` (LCM draws its own noise).
    sample_guidance : the student's default w (its config's ``sample.guidance``), inside ``guidance_range``;
        default: the teacher's ``sample.guidance`` (clipped to the range).
    trajectories : ``trajectory`` only: how many of the teacher's paths to train on (default 4000; written once
        to ``out/trajectories.pt``, :func:`teacher_trajectories`).
    resume : continue an interrupted distillation in ``out``.
    """
    out = Path(out)
    t_start = time.time()
    teacher_run = resolve(run)
    teacher_kind = model_kind(teacher_run)
    if teacher_kind in ("cevae", "autoencoder"):
        raise FlaresynthError(f"{run}: a {'ceVAE' if teacher_kind == 'cevae' else 'autoencoder'} run; only a "
                              "diffusion (DDPM) run can be distilled")
    if teacher_kind == "student":
        raise FlaresynthError(f"{run}: already a distilled student; distil its teacher instead "
                              "(--steps sets how few steps the new student takes)")
    teacher_folder = model_folder(teacher_run)
    meta = read_meta(teacher_folder)
    teacher_cfg = RunConfig.from_dict(meta["config"], source=str(teacher_folder / META_FILE))
    if teacher_cfg.kind != "ddpm":
        raise FlaresynthError(f"{teacher_folder / META_FILE}: config.kind: {teacher_cfg.kind!r}, expected ddpm")
    if teacher_steps is None:
        teacher_steps = DEFAULT_TEACHER_STEPS.get(method, DEFAULT_TEACHER_STEPS["progressive"])
    plan = stage_plan(teacher_steps, steps, teacher_cfg.diffusion.num_train_timesteps, method)
    if stage_steps is None:
        stage_steps = DEFAULT_STAGE_STEPS[method]
    if meta.get("latent"):
        # a latent teacher: every stage trains in the latents of the teacher's autoencoder (its own copy, or the
        # shipped one a shipped teacher names), at the teacher's scale (the student's inputs are the teacher's);
        # each stage, and so the student, keeps its own copy as any trained run does
        ae_dir = latent_autoencoder_folder(teacher_run, teacher_folder, meta)
        teacher_cfg.latent.autoencoder = str(ae_dir.resolve())
        teacher_cfg.latent.scaling_factor = float(meta["latent"]["scaling_factor"])
    for name, value in (("--stage-steps", stage_steps), ("--guidance-steps", guidance_steps),
                        ("--batch-size", batch_size)):
        if value is not None and (int(value) != value or value < 1):
            raise FlaresynthError(f"{name} {value!r}: expected a whole number >= 1")
    if not (math.isfinite(lr) and lr > 0):
        raise FlaresynthError(f"--lr {lr!r}: expected a positive number")
    if guidance_t_max == TEACHER_CONFIG:
        guidance_t_max = teacher_cfg.sample.guidance_t_max
    if guidance_t_max is not None and (int(guidance_t_max) != guidance_t_max or guidance_t_max < 0):
        raise FlaresynthError(f"--guidance-t-max {guidance_t_max!r}: expected a whole number >= 0 (a timestep; the "
                              "teacher guides only at t <= it)")
    if consistency_loss not in CONSISTENCY_LOSSES:
        raise FlaresynthError(f"--consistency-loss {consistency_loss!r}: expected one of {', '.join(CONSISTENCY_LOSSES)}")
    if method != "consistency" and consistency_loss != "snr":
        raise FlaresynthError(f"--consistency-loss {consistency_loss}: applies to --method consistency only")
    if not (math.isfinite(snr_floor) and snr_floor >= 0):
        raise FlaresynthError(f"--snr-floor {snr_floor!r}: expected a number >= 0")
    if snr_floor and (method not in ("consistency", "trajectory") or consistency_loss != "snr"):
        raise FlaresynthError(f"--snr-floor {snr_floor:g}: applies to --method trajectory, or to --method consistency "
                              "with --consistency-loss snr only")
    if trajectories is not None and method != "trajectory":
        raise FlaresynthError(f"--trajectories {trajectories}: applies to --method trajectory only")
    trajectories = DEFAULT_TRAJECTORIES if trajectories is None else trajectories
    if int(trajectories) != trajectories or trajectories < 1:
        raise FlaresynthError(f"--trajectories {trajectories!r}: expected a whole number >= 1")
    if sample_timesteps is not None:
        sample_timesteps = [int(t) for t in sample_timesteps]
        _check_sample_timesteps(sample_timesteps, steps, plan[-1][1], teacher_cfg.diffusion.num_train_timesteps,
                                method)
    if sample_guidance_t_max is not None and (int(sample_guidance_t_max) != sample_guidance_t_max
                                              or sample_guidance_t_max < 0):
        raise FlaresynthError(f"--sample-guidance-t-max {sample_guidance_t_max!r}: expected a whole number >= 0 (a "
                              "timestep; the student is given w only at t <= it)")
    w_lo, w_hi = (float(v) for v in guidance_range)
    if not 0 <= w_lo <= w_hi:
        raise FlaresynthError(f"--guidance-range {w_lo:g},{w_hi:g}: expected 0 <= min <= max")
    if not (math.isfinite(sample_eta) and 0 <= sample_eta <= 1):
        raise FlaresynthError(f"--sample-eta {sample_eta!r}: expected 0 <= eta <= 1")
    if sample_eta and method == "consistency":
        raise FlaresynthError(f"--sample-eta {sample_eta:g}: applies to a DDIM student (--method trajectory or "
                              "progressive); a consistency student samples with LCM")
    if sample_guidance is not None and not (math.isfinite(sample_guidance) and w_lo <= sample_guidance <= w_hi):
        raise FlaresynthError(f"--sample-guidance {sample_guidance!r}: expected a w inside --guidance-range "
                              f"{w_lo:g},{w_hi:g} (the weights the student learns)")
    if out.exists() and not resume:
        raise FlaresynthError(f"{out}: exists; choose another --out (or pass --resume to continue a distillation)")
    if resume and out.exists() and not (out / STAGES).is_dir() and not (out / TRAJECTORY_FILE).is_file():
        raise FlaresynthError(f"{out}: not a distillation to resume (no {STAGES}/ folder)")
    if data is None:
        prov = teacher_run / PROVENANCE_FILE
        data = read_json(prov).get("data") if prov.is_file() else None
        if not data or not Path(data).exists():
            raise FlaresynthError(f"{teacher_run}: its training dataset ({data or 'not recorded'}) is not here; "
                                  "pass --data DS (the teacher's dataset, checked by its data hash)")
    ds = open_dataset(data)
    if ds.manifest.get("data_hash") != meta.get("data_hash"):
        raise FlaresynthError(f"{ds.path / 'manifest.json'}: data_hash: not the dataset the teacher {run} was trained "
                              "on; pass the teacher's dataset with --data")

    paths_file, paths_seconds = None, 0.0
    if method == "trajectory":
        record = _trajectory_file(out, teacher_run, int(trajectories), plan[0][1], plan[0][2], (w_lo, w_hi),
                                  guidance_t_max, device, progress)
        paths_file, paths_seconds = str((out / TRAJECTORY_FILE).resolve()), float(record["seconds"])

    # under `accelerate launch` every process runs each stage; only the main one writes the run folder's top
    is_main = int(os.environ.get("RANK", "0")) == 0
    stages, sessions, teacher, logs = [], [], teacher_folder, []
    for i, (stage, n_teacher, n_student) in enumerate(plan):
        folder = out / STAGES / f"{i}-{stage}-{n_student}"
        n_train = (guidance_steps or stage_steps) if stage == "guidance" else stage_steps
        cfg = stage_config(teacher_cfg, stage, teacher, n_teacher, n_student, n_train, lr, batch_size,
                           (w_lo, w_hi), guidance_t_max if stage != "progressive" else None,
                           consistency_loss if stage == "consistency" else "snr",
                           snr_floor if stage in ("consistency", "trajectory") else 0.0,
                           *((sample_timesteps, sample_guidance_t_max, sample_guidance) if i == len(plan) - 1
                             else (None, None, None)), trajectories=paths_file if stage == "trajectory" else None,
                           sample_eta=sample_eta if i == len(plan) - 1 else 0.0)
        if not _stage_complete(folder):
            again = (folder / "config.yaml").is_file()
            train(ds.path, folder, None if again else cfg, resume=again, device=device, progress=progress,
                  command=command or ["flaresynth", *sys.argv[1:]])
            if is_main:
                shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # its model/ is all the next stage needs
        prov = read_json(folder / PROVENANCE_FILE)
        stages.append({"stage": stage, "folder": str(folder.relative_to(out)), "teacher_steps": n_teacher,
                       "student_steps": n_student, "train_steps": prov["steps"],
                       "seconds": sum(s["seconds"] for s in prov["sessions"])})
        sessions += [{"stage": stages[-1]["folder"], **s} for s in prov["sessions"]]
        if (folder / "log.jsonl").is_file():
            logs += [json.dumps({"stage": f"{i}-{stage}-{n_student}", **json.loads(ln)})
                     for ln in (folder / "log.jsonl").read_text().splitlines() if ln.strip()]
        teacher = folder / MODEL_DIR

    if not is_main:
        return out
    # the student's run folder: the last stage's config and model at the top, like any run; model/ (what
    # `flaresynth sample` reads) appears last, renamed into place when complete
    last = out / stages[-1]["folder"]
    shutil.copyfile(last / "config.yaml", out / "config.yaml")
    with atomic_file(out / "log.jsonl", "w") as fh:
        fh.write("".join(ln + "\n" for ln in logs))
    n_train = sum(s["train_steps"] for s in stages)
    write_json(out / PROVENANCE_FILE, {
        "stage": "distill", "run": str(out), "teacher": str(teacher_run), "teacher_id": meta.get("model_id"),
        "data": str(Path(ds.path).resolve()), "data_hash": meta.get("data_hash"), "method": method,
        "student_steps": int(steps),
        "teacher_steps": int(teacher_steps), "guidance_range": [w_lo, w_hi], "guidance_t_max": guidance_t_max,
        "consistency_loss": consistency_loss if method == "consistency" else None,
        **({"snr_floor": float(snr_floor)} if snr_floor else {}), "stages": stages,
        **({"trajectories": {"file": TRAJECTORY_FILE, "paths": int(trajectories), "seed": TRAJECTORY_SEED,
                             "seconds": paths_seconds}} if method == "trajectory" else {}),
        "steps": n_train, "planned_steps": n_train, "complete": True, "sessions": sessions,
        "parameters": read_json(last / MODEL_DIR / META_FILE).get("parameters"),
        "command": command or ["flaresynth", *sys.argv[1:]], "seconds": round(time.time() - t_start, 2),
    })
    if (last / AUTOENCODER_DIR).is_dir():  # a latent student decodes with the teacher's autoencoder
        with atomic_dir(out / AUTOENCODER_DIR, overwrite=True) as tmp:
            shutil.copytree(last / AUTOENCODER_DIR, tmp, dirs_exist_ok=True)
    with atomic_dir(out / MODEL_DIR, overwrite=True) as tmp:
        shutil.copytree(last / MODEL_DIR, tmp, dirs_exist_ok=True)
    return out


__all__ = [
    "is_student",
    "METHODS",
    "stage_plan",
    "stage_config",
    "distill",
]
