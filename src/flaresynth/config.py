"""Typed configuration of a training run: dataclasses, YAML in and out, errors that name the key.

A run is described by one :class:`RunConfig`: what is trained (``kind``) and nine sections::

    name: demo
    kind: ddpm    # ddpm (the conditional diffusion model) | cevae (the ceVAE baseline and embedding encoder)
                  # | student (a few-step DDPM distilled from a ddpm run, see flaresynth.distill)
                  # | autoencoder (the image <-> latent autoencoder of latent diffusion, see
                  #   flaresynth.models.autoencoder)
    model:        # the U-Net (diffusers UNet2DModel), see flaresynth.models.unet; for a ceVAE only
                  # sample_size and in_channels are used
    diffusion:    # noise schedule, prediction target, loss weighting, see flaresynth.diffusion (ddpm only)
    conditioning: # discrete | continuous | discrete+embedding, p_uncond, see flaresynth.models.conditioning
                  # (ddpm only)
    cevae:        # latent size, feature maps, loss weights, context-encoding masks (cevae only),
                  # see flaresynth.models.cevae
    distill:      # teacher, stage and step counts of one distillation stage (student only)
    autoencoder:  # widths, latent channels, KL and flare weights of the autoencoder (autoencoder only)
    latent:       # the autoencoder a latent DDPM (or its student) works in (ddpm, student; optional)
    train:        # optimiser, EMA, steps, checkpoints, see flaresynth.train (every kind)
    sample:       # default sampler, guidance and embedding source of `flaresynth sample`, training grids

Presets ship with the package (``flaresynth/configs/<preset>.yaml``, :data:`PRESETS`)
and are read with
:func:`load_preset`. A YAML file may hold only some keys: the others keep the dataclass defaults. Unknown keys
and ill-typed values raise :class:`~flaresynth.errors.FlaresynthError` naming the file and the dotted key, e.g.
``my.yaml: train.lr: expected a number, got 'fast'``.

The defaults are the paper's diffusion (Ramunno et al. 2024: 1000 steps, linear β from
1e-4 to 0.02, ε-prediction, MSE); everything else is a documented choice of ours.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from flaresynth.errors import FlaresynthError

RUN_KINDS = ("ddpm", "cevae", "student", "autoencoder")
#: Stages of a distilled student (see flaresynth.distill).
DISTILL_STAGES = ("guidance", "progressive", "consistency", "trajectory")
CONSISTENCY_LOSSES = ("snr", "snr-plus-one", "pseudo-huber")
CONDITIONING_KINDS = ("discrete", "continuous", "discrete+embedding")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction")
LOSS_WEIGHTINGS = ("none", "min_snr")
VARIANCE_TYPES = ("fixed_small", "fixed_large")
LR_SCHEDULES = ("constant", "cosine")
MIXED_PRECISION = ("no", "fp16", "bf16")
#: ``train.flips``: the mirror images each training image is also shown as (east-west: the columns reversed;
#: north-south: the rows reversed)
FLIPS = ("none", "ew", "ns", "ew+ns")
SAMPLERS = ("ddpm", "ddim", "dpm++", "unipc", "lcm")
PRESETS = ("demo", "demo-continuous", "demo-embedding", "paper", "paper128", "tiny", "cevae-demo", "cevae-demo64",
           "cevae-tiny", "autoencoder-demo", "autoencoder-tiny", "demo64-latent", "demo64-latent-continuous",
           "demo64-latent-embedding", "tiny-latent", "autoencoder-demo128", "activity3-latent128")
#: Where the embedding of a ``discrete+embedding`` request comes from (see flaresynth.sampling).
EMBEDDING_SOURCES = ("class-mean", "class-gaussian", "image")
CEVAE_REC_LOSSES = ("l1", "mse")
AUTOENCODER_REC_LOSSES = ("l1", "mse")


@dataclass
class ModelConfig:
    """The U-Net: a diffusers ``UNet2DModel`` (see :func:`flaresynth.models.unet.build_unet`).

    ``sample_size`` is the image side in pixels the model works at; a dataset of another size is resized once
    at load time. ``in_channels`` ``None`` means "as many as the dataset has". Attention layers sit at the
    levels whose resolution (pixels) is listed in ``attention_resolutions``; the middle block always has one
    when ``mid_attention``.
    """

    sample_size: int = 64
    in_channels: int | None = None
    block_out_channels: list[int] = field(default_factory=lambda: [64, 128, 256, 320])
    layers_per_block: int = 1
    attention_resolutions: list[int] = field(default_factory=lambda: [32, 16, 8])
    attention_head_dim: int = 8
    norm_num_groups: int = 32
    dropout: float = 0.0
    mid_attention: bool = True

    def level_resolutions(self) -> list[int]:
        """Resolution in pixels of each U-Net level (the last level has no downsampling)."""
        return [self.sample_size // 2**i for i in range(len(self.block_out_channels))]


@dataclass
class DiffusionConfig:
    """Forward process and training objective (diffusers ``DDPMScheduler`` config plus the loss).

    Defaults are the paper's: T = 1000, linear β 1e-4 → 0.02, ε-prediction, plain MSE. Options: other β
    schedules, ``v_prediction``, and min-SNR-γ loss weighting (Hang et al. 2023), ``loss_weighting: min_snr``.
    ``clip_sample`` clips the predicted x₀ to [-1, 1] inside the DDPM/DDIM update (diffusers' default);
    ``variance_type: fixed_large`` (σ² = β_t) with ``clip_sample: false`` is the update of the authors'
    code (fpramunno/Modelling_Solar_Image_with_DDPM).
    """

    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction_type: str = "epsilon"
    loss_weighting: str = "none"
    snr_gamma: float = 5.0
    clip_sample: bool = True
    variance_type: str = "fixed_small"


@dataclass
class ConditioningConfig:
    """What the model is conditioned on; every kind has a learned null condition for classifier-free guidance.

    ``discrete``: the class (GOES letter or activity level) through UNet2DModel's own class embedding, with one
    extra row, the last, for the null class. ``continuous``: log10 of the XRS-B flux (W/m²) through sinusoidal
    features and an MLP. ``discrete+embedding``: the class plus a projected vector from a frozen image encoder
    named by ``encoder`` (``random:DIM[:SEED]``, ``cevae:PATH``, ``torchscript:PATH`` or ``module:callable``).
    ``p_uncond`` is the probability that training drops the condition (replaces it by the null one).
    ``embedding_noise`` (``discrete+embedding`` only): condition augmentation (Ho et al. 2022, cascaded diffusion),
    Gaussian noise added to each training image's embedding, its std this many times the within-class std of
    each embedding dimension; 0 (the default) feeds the exact embedding, which lets a network that can single out
    a training frame by its embedding learn to redraw that frame.
    """

    kind: str = "discrete"
    p_uncond: float = 0.1
    flux_frequencies: int = 8
    encoder: str | None = None
    embedding_noise: float = 0.0


@dataclass
class CevaeConfig:
    """The ceVAE (``kind: cevae``; :mod:`flaresynth.models.cevae` documents the model and the loss).

    Defaults are the FHNW implementation's (i4Ds/sdo-cli ``config/ce-vae/defaults.yaml``, the
    ceVAE of Ramunno et al. 2024): latent ``z_dim`` 128, encoder feature maps 16/64/256/1024 (one stride-2 level each, the decoder
    mirrors them), ``ce_factor`` 0.5, KL weight ``beta`` 0.01, L1 reconstruction. The loss is
    (1 − ce_factor)·(rec + beta·KL) + ce_factor·rec_ce. Context-encoding masks: per image 0..``mask_max_squares``
    squares of side 0..``mask_max_fraction``·size, each filled with one value drawn between the image's min and
    max. ``class_ridge`` is the relative ridge added to each per-class latent covariance (× its mean variance).
    ``class_components`` > 1 draws each class from a mixture of up to that many Gaussians instead of one (a
    component per 5 training images at most; fitted after training, so outside the fingerprint).
    ``standardize`` (ours, on by default) feeds the network (x − mean image)/residual std and measures errors in
    those units; without it the ceVAE collapses to the mean image on full-disk data (``models/cevae.py``).
    ``flare_weight`` (ours, 0 = FHNW's plain loss) weighs each pixel's reconstruction error by
    1 + flare_weight · ((x + 1) / 2)^4 (x in model space), as the autoencoder's ``flare_weight`` does.
    """

    z_dim: int = 128
    fmap_sizes: list[int] = field(default_factory=lambda: [16, 64, 256, 1024])
    bias: bool = False
    standardize: bool = True
    ce_factor: float = 0.5
    beta: float = 0.01
    rec_loss: str = "l1"
    mask_max_squares: int = 2
    mask_max_fraction: float = 0.5
    class_ridge: float = 1e-3
    class_components: int = 1
    flare_weight: float = 0.0


@dataclass
class DistillConfig:
    """One stage of distilling a guided DDPM into a few-step student (``kind: student``; :mod:`flaresynth.distill`).

    ``stage: guidance`` (Meng et al. 2023): the student, which takes the CFG weight w as an input, learns the
    teacher's guided output ε(x,c) + w·(ε(x,c) − ε(x,∅)) in one forward, at the timesteps of a
    ``teacher_steps``-step DDIM sampler (``student_steps`` equals it). ``stage: progressive`` (Salimans & Ho
    2022): one DDIM step of the student, ``student_steps`` = ``teacher_steps`` / 2, lands where two DDIM steps
    of the teacher (the previous stage's student) land. ``stage: consistency`` (Song et al. 2023; Luo et al.
    2023): a student with w as input learns the consistency function of the teacher's guided DDIM ODE on the
    ``teacher_steps``-step grid and samples in ``student_steps`` of its points with ``LCMScheduler``. ``teacher``
    is the teacher's run or model folder; w is
    drawn uniformly from [``guidance_min``, ``guidance_max``] and enters through ``guidance_frequencies``
    sinusoidal features added to the conditioning embedding. ``guidance_t_max``: the DDPM teacher's guidance
    applies only at timesteps t <= this in the targets (its conditional output alone above: the guidance interval
    of ``sample.guidance_t_max``), so the student's w is the weight inside that interval and the student samples
    with w at every one of its steps; ``None``: guidance at every timestep. ``consistency_loss`` (consistency
    stage): the distance between the student's and its target's x₀, ``snr`` the squared error weighted by SNR_t
    (the ε-space MSE), ``snr-plus-one`` weighted by SNR_t + 1 (the v-space MSE, Salimans & Ho 2022, which keeps
    weight at high noise, where a few-step sampler's first step is taken) or ``pseudo-huber``, unweighted
    √(‖Δ‖² + c²) − c per image with c = 0.00054·√dim (Song & Dhariwal 2023, "Improved Techniques for Training
    Consistency Models"; Luo et al. 2023 use it for LCM). ``snr_floor`` γ > 0 (with ``snr``): weight max(SNR_t, γ),
    the SNR weight at low noise and a bounded one at high noise (Salimans & Ho 2022's truncated SNR has γ = 1).
    ``stage: trajectory`` (after Luhman & Luhman 2021, "Knowledge Distillation in Iterative Generative Models"):
    the guided teacher's DPM-Solver++ paths from noise, ``teacher_steps`` steps on the trailing grid, were
    written once to the file ``trajectories`` (:func:`flaresynth.distill.teacher_trajectories`); one DDIM step
    of the student (``student_steps`` on the trailing grid, every one a point of the teacher's) from the path's
    state at a grid point lands on its state at the next, the x₀ error weighted by max(SNR_t, ``snr_floor``)
    as in the consistency stage.
    """

    teacher: str | None = None
    stage: str = "guidance"
    teacher_steps: int = 64
    student_steps: int = 64
    guidance_min: float = 0.0
    guidance_max: float = 4.0
    guidance_frequencies: int = 8
    guidance_t_max: int | None = None
    consistency_loss: str = "snr"
    snr_floor: float = 0.0
    trajectories: str | None = None


@dataclass
class AutoencoderConfig:
    """The autoencoder of latent diffusion (``kind: autoencoder``; :mod:`flaresynth.models.autoencoder`).

    A diffusers ``AutoencoderKL`` (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion
    Models"): one encoder/decoder level per entry of ``block_out_channels``, each but the last halving the side,
    so (32, 64, 64) maps 64×64 images to 16×16×``latent_channels`` latents. Loss: per-pixel reconstruction
    (``rec_loss``) + ``kl_weight`` · KL, both summed over an image and divided by its pixel count, as in the
    LDM recipe (KL weight 1e-6), plus ``flare_weight``: the reconstruction error of a pixel is weighted by
    1 + flare_weight · ((x + 1) / 2)^4 (x in model space [-1, 1]), so the bright flare kernels, the few pixels
    that decide the class, count more than the quiet disk (0 turns it off). ``mid_attention``: the
    self-attention block at the lowest resolution (diffusers' default).
    """

    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 32
    mid_attention: bool = True
    kl_weight: float = 1e-6
    rec_loss: str = "l1"
    flare_weight: float = 0.0


@dataclass
class LatentConfig:
    """Latent diffusion (``kind: ddpm`` or ``student``): the diffusion model works on the latents of a trained
    autoencoder run instead of on pixels.

    ``autoencoder``: the autoencoder run folder (``flaresynth train --preset autoencoder-demo``), trained on the
    same dataset. Training encodes the training split once (the posterior means) and multiplies them by
    ``scaling_factor``; ``None`` measures it as 1 / std of those latents (Rombach et al. 2022, Sec. 4.3.2), so
    the diffusion sees latents of unit variance. ``model.sample_size`` is then the latent side and
    ``model.in_channels`` the latent channels. The run keeps a copy of the autoencoder (``RUN/autoencoder/``).
    """

    autoencoder: str | None = None
    scaling_factor: float | None = None


@dataclass
class TrainConfig:
    """Optimisation. ``batch_size`` is per process and per micro-step; the batch of one optimiser step (the
    global batch) is ``batch_size × processes × grad_accum``, so it grows with the number of GPUs. Set
    ``global_batch`` instead to fix the images per optimiser step whatever the number of processes: each process
    then takes ``global_batch / (processes × grad_accum)`` images per micro-step (it must divide evenly) and
    ``batch_size`` is not used. The learning rate is never scaled with the batch. ``steps`` is the planned
    length (the LR schedule's length); ``flaresynth train --max-steps`` may stop earlier, and ``--resume``
    continues.

    EMA (diffusers ``EMAModel``): decay ``min(ema_decay, 1 - (1 + n)^-ema_power)`` with ``ema_warmup``, else
    ``min(ema_decay, (1 + n)/(10 + n))``, where n counts updates after ``ema_update_after_step`` (before that
    the EMA simply copies the weights, which is the 2000-step warm start of fpramunno/Modelling_Solar_Image_with_DDPM).

    ``class_balance`` α: a training image of a class with n training images is drawn with probability ∝ n^-α, so
    each class's share of the batches is ∝ n^(1-α) (0: every image equally, in per-epoch permutations; 1: every
    class equally; 0.5 between). M and X frames are ~1 % of a year of AIA images, so at α = 0 the conditional
    model sees an X-class condition a few times per thousand images. With α > 0 the rows are drawn with
    replacement, still a pure function of (seed, micro-step), so resume and multi-process runs are unchanged.

    ``init_from`` (``kind: ddpm`` only): a trained DDPM run (folder or shipped name such as ``demo:discrete``) whose
    final EMA weights start the network and its EMA at step 0 instead of a random initialisation: fine-tuning, or
    training on with a new learning-rate schedule. The optimiser starts afresh (the run's own ``lr``,
    ``warmup_steps``, ``lr_schedule``). That run must have this config's network, noise schedule, conditioning and
    classes, and a latent one the same autoencoder (:func:`flaresynth.train.initial_weights`); its model id is
    kept in the new run's metadata (``init_from``).

    ``flips``: augmentation by mirror images, for small training sets (Ho et al. 2020 trained on CIFAR-10 with
    random horizontal flips). ``ew`` adds each training image reversed east-west, ``ns`` north-south, ``ew+ns``
    both and both together (4 images per frame). Why a mirror can pass for a frame: active regions emerge at every
    longitude and rotate across the disk, the activity belts sit on both sides of the equator, and a mirrored
    frame keeps its GOES class. Joy's-law tilt (leading polarity nearer the equator) survives a north-south mirror
    but not an east-west one. Check it on the data with ``benchmarks/mirror_invariance.py``: on the default
    simulated dataset the judges cannot tell either mirror from the observed frames, but EfficientNet-Lite0's
    features see the north-south one, so ``ew`` is the safer choice. Every mirror is a row of the training set
    (encoded by the autoencoder on its own for a latent run, embedded on its own for ``discrete+embedding``), so an
    epoch shows each frame once in every orientation. On the demo's teachers ``ew+ns`` removed the excess of
    near-copies of training frames but did not bring the generated images nearer the real ones
    (docs/latent_diffusion.md, "Session 49").
    """

    steps: int = 10000
    batch_size: int = 32
    global_batch: int | None = None
    lr: float = 3e-4
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    grad_clip: float = 1.0
    grad_accum: int = 1
    ema_decay: float = 0.9999
    ema_warmup: bool = True
    ema_power: float = 0.75
    ema_update_after_step: int = 0
    seed: int = 0
    mixed_precision: str | None = None
    log_every: int = 10
    checkpoint_every: int = 500
    sample_every: int = 0
    keep_checkpoints: int = 2
    class_balance: float = 0.0
    init_from: str | None = None
    flips: str = "none"


@dataclass
class SampleConfig:
    """Defaults of ``flaresynth sample`` (each can be overridden there) and of the training-time grids.

    ``guidance`` is Ho & Salimans' w in ε̃ = ε(x,c) + w·(ε(x,c) − ε(x,∅)); w = 0 is the purely conditional
    model. The ``cfg_scale`` of fpramunno/Modelling_Solar_Image_with_DDPM (a ``torch.lerp``
    weight) is w + 1, so its default 3 is w = 2 here.
    ``steps`` ``None`` means the sampler's default (1000 for ddpm, 20 for dpm++/unipc, 50 for ddim).
    ``embedding_source`` (``discrete+embedding`` runs): a class request is conditioned on the mean training
    embedding of the class (``class-mean``), on a draw from the per-class Gaussian of the training embeddings
    (``class-gaussian``), or on the embedding of a real training image of the class (``image``, needs a
    dataset at sampling time).
    ``guidance_t_max``: apply the guidance only at timesteps t <= this, the conditional output alone above it
    (Kynkäänniemi et al. 2024, "Applying Guidance in a Limited Interval Improves Sample and Distribution Quality
    in Diffusion Models"); ``None``: at every step.
    ``timesteps``: the timesteps ``sampler`` visits, explicitly (decreasing; ``steps`` is then their count; for a
    consistency student points of its distillation grid); used whenever the run's own sampler is asked for at its
    own step count; ``None``: the sampler's own spacing.
    ``eta``: DDIM's η (Song et al. 2021), the share of each step's noise drawn afresh (0: the deterministic ODE
    step, 1: DDPM's ancestral variance); ddim only, used like ``timesteps``.
    """

    sampler: str = "ddpm"
    steps: int | None = None
    guidance: float = 2.0
    guidance_t_max: int | None = None
    timesteps: list[int] | None = None
    grid_per_class: int = 4
    grid_sampler: str = "dpm++"
    grid_steps: int = 20
    embedding_source: str = "class-mean"
    eta: float = 0.0


#: Keys added after runs were trained without them, with the value that means "as before": at that value a key is
#: left out of :meth:`RunConfig.fingerprint`, so those runs hash as they did and still resume.
FINGERPRINT_LATE_KEYS = {
    ("distill", "guidance_t_max"): None,
    ("distill", "consistency_loss"): "snr",
    ("distill", "snr_floor"): 0.0,
    ("distill", "trajectories"): None,
    ("train", "class_balance"): 0.0,  # plain epochs
    ("train", "init_from"): None,  # random initial weights
    ("train", "flips"): "none",  # every frame as observed
    ("conditioning", "embedding_noise"): 0.0,  # the exact embedding
    ("cevae", "flare_weight"): 0.0,  # FHNW's unweighted reconstruction error
}


@dataclass
class RunConfig:
    """Everything that defines a training run (saved as ``RUN/config.yaml``)."""

    name: str = "custom"
    kind: str = "ddpm"
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    cevae: CevaeConfig = field(default_factory=CevaeConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def to_dict(self) -> dict:
        """Plain nested dict (lists, not tuples) ready for YAML/JSON."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None, source: str = "config") -> RunConfig:
        """Build from a (possibly partial) nested dict; ``source`` names the file in error messages."""
        cfg = _build(cls, data or {}, source, "")
        validate(cfg, source)
        return cfg

    def fingerprint(self) -> str:
        """Hash of everything that changes what a training step computes.

        Resuming needs the same fingerprint. Left out: the planned length, logging, checkpoint and grid
        intervals, ``batch_size`` when ``global_batch`` replaces it, and the sampling defaults, which may change between an interrupted run and its resume;
        and the sections the run's ``kind`` does not use (so a ``ddpm`` config hashes exactly as it did
        before ``kind``, ``cevae``, ``distill``, ``autoencoder`` and ``latent`` existed, and old runs still resume;
        ``latent`` counts only when it names an autoencoder), and the keys of :data:`FINGERPRINT_LATE_KEYS` at their "as before" value.
        """
        d = self.to_dict()
        for key in ("name", "sample", "autoencoder", "latent"):
            d.pop(key)
        kind = d.pop("kind")
        small_model = {k: d["model"][k] for k in ("sample_size", "in_channels")}
        if kind == "cevae":
            # the class mixture is fitted after training: it changes what the run samples, not a training step
            d["cevae"].pop("class_components")
            d = {"kind": kind, "model": small_model, "cevae": d["cevae"], "train": d["train"]}
        elif kind == "autoencoder":
            d = {"kind": kind, "model": small_model, "autoencoder": dataclasses.asdict(self.autoencoder),
                 "train": d["train"]}
        else:  # ddpm, student
            d.pop("cevae")
            if kind == "student":
                d["kind"] = kind
            else:
                d.pop("distill")
            if self.latent.autoencoder is not None:
                d["latent"] = dataclasses.asdict(self.latent)
        for key in ("steps", "log_every", "checkpoint_every", "sample_every", "keep_checkpoints"):
            d["train"].pop(key)
        # global_batch, when set, replaces batch_size; unset, it is left out so older configs hash as before
        if d["train"].pop("global_batch") is not None:
            d["train"]["global_batch"] = self.train.global_batch
            d["train"].pop("batch_size")
        for (section, key), absent in FINGERPRINT_LATE_KEYS.items():
            if section in d and d[section][key] == absent:
                d[section].pop(key)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- YAML


def load_config(path: str | Path) -> RunConfig:
    """Read a run config from a YAML file (missing keys keep their defaults)."""
    path = Path(path)
    if not path.is_file():
        raise FlaresynthError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise FlaresynthError(f"{path}: not valid YAML{where}") from None
    if data is not None and not isinstance(data, dict):
        raise FlaresynthError(f"{path}: expected a mapping of sections (model, diffusion, ...), got {type(data).__name__}")
    return RunConfig.from_dict(data, source=str(path))


def load_preset(name: str) -> RunConfig:
    """A preset shipped with the package (one of :data:`PRESETS`, e.g. ``demo``, ``paper128``, ``tiny``,
    ``autoencoder-demo128``)."""
    if name not in PRESETS:
        raise FlaresynthError(f"preset {name!r}: unknown, expected one of {', '.join(PRESETS)}")
    text = resources.files("flaresynth").joinpath("configs", f"{name}.yaml").read_text()
    return RunConfig.from_dict(yaml.safe_load(text), source=f"preset {name}")


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write ``cfg`` as YAML, atomically."""
    from flaresynth.io import atomic_file

    with atomic_file(path, "w") as fh:
        yaml.safe_dump(cfg.to_dict(), fh, sort_keys=False)


# ----------------------------------------------------------------------------------------- checking


def _type_name(tp) -> str:
    if tp is float:
        return "a number"
    if tp is int:
        return "a whole number"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    origin = typing.get_origin(tp)
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0]).removeprefix('a ')}s"
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    return getattr(tp, "__name__", str(tp))


def _coerce(tp, value, source: str, key: str):
    """Check ``value`` against the annotation ``tp``; return it (ints accepted for floats)."""
    bad = FlaresynthError(f"{source}: {key}: expected {_type_name(tp)}, got {value!r}")
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, source, key)
            except FlaresynthError:
                pass
        raise bad
    if origin is list:
        if not isinstance(value, list | tuple):
            raise bad
        (item,) = typing.get_args(tp)
        return [_coerce(item, v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, source, key + ".")
    raise bad  # pragma: no cover - only the types above are used


def _build(cls, data, source: str, prefix: str):
    if not isinstance(data, dict):
        raise FlaresynthError(f"{source}: {prefix.rstrip('.') or 'top level'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise FlaresynthError(
                f"{source}: {prefix}{key}: unknown key (expected one of {', '.join(sorted(names))})"
            )
    kwargs = {k: _coerce(hints[k], v, source, f"{prefix}{k}") for k, v in data.items()}
    return cls(**kwargs)


def _choice(source: str, key: str, value, allowed) -> None:
    if value not in allowed:
        raise FlaresynthError(f"{source}: {key}: {value!r} unknown, expected one of {', '.join(allowed)}")


def _positive(source: str, key: str, value, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise FlaresynthError(f"{source}: {key}: {value!r}, expected {'>= 0' if allow_zero else '> 0'}")


def validate(cfg: RunConfig, source: str = "config") -> None:
    """Check values (not only types) and raise a one-line error naming the key."""
    m, d, c = cfg.model, cfg.diffusion, cfg.conditioning
    _choice(source, "kind", cfg.kind, RUN_KINDS)
    _positive(source, "model.sample_size", m.sample_size)
    if m.in_channels is not None:
        _positive(source, "model.in_channels", m.in_channels)
    _validate_train_and_sample(cfg, source)
    if cfg.kind == "cevae":
        _validate_cevae(cfg, source)
        return
    if cfg.kind == "autoencoder":
        _validate_autoencoder(cfg, source)
        return
    if cfg.kind == "student":
        _validate_distill(cfg, source)
    if not m.block_out_channels:
        raise FlaresynthError(f"{source}: model.block_out_channels: expected at least one width")
    for w in m.block_out_channels:
        if w <= 0 or w % m.norm_num_groups:
            raise FlaresynthError(
                f"{source}: model.block_out_channels: {w} is not a positive multiple of model.norm_num_groups "
                f"({m.norm_num_groups})"
            )
    if m.sample_size % 2 ** (len(m.block_out_channels) - 1):
        raise FlaresynthError(
            f"{source}: model.sample_size: {m.sample_size} cannot be halved {len(m.block_out_channels) - 1} times "
            f"(one per extra level of model.block_out_channels)"
        )
    levels = m.level_resolutions()
    for r in m.attention_resolutions:
        if r not in levels:
            raise FlaresynthError(
                f"{source}: model.attention_resolutions: {r} px is not a level of this U-Net ({levels})"
            )
    _positive(source, "model.layers_per_block", m.layers_per_block)
    _positive(source, "model.attention_head_dim", m.attention_head_dim)
    if not 0 <= m.dropout < 1:
        raise FlaresynthError(f"{source}: model.dropout: {m.dropout}, expected 0 <= dropout < 1")

    _positive(source, "diffusion.num_train_timesteps", d.num_train_timesteps)
    _choice(source, "diffusion.beta_schedule", d.beta_schedule, BETA_SCHEDULES)
    _choice(source, "diffusion.prediction_type", d.prediction_type, PREDICTION_TYPES)
    _choice(source, "diffusion.loss_weighting", d.loss_weighting, LOSS_WEIGHTINGS)
    _choice(source, "diffusion.variance_type", d.variance_type, VARIANCE_TYPES)
    if not 0 < d.beta_start < d.beta_end < 1:
        raise FlaresynthError(f"{source}: diffusion.beta_start/beta_end: expected 0 < beta_start < beta_end < 1")
    _positive(source, "diffusion.snr_gamma", d.snr_gamma)

    _choice(source, "conditioning.kind", c.kind, CONDITIONING_KINDS)
    if not 0 <= c.p_uncond <= 1:
        raise FlaresynthError(f"{source}: conditioning.p_uncond: {c.p_uncond}, expected a probability in [0, 1]")
    _positive(source, "conditioning.flux_frequencies", c.flux_frequencies)
    if not c.embedding_noise >= 0:
        raise FlaresynthError(f"{source}: conditioning.embedding_noise: {c.embedding_noise}, expected >= 0 "
                              "(a multiple of the within-class std of the embeddings)")
    if c.embedding_noise and c.kind != "discrete+embedding":
        raise FlaresynthError(f"{source}: conditioning.embedding_noise: {c.embedding_noise} needs conditioning.kind "
                              f"discrete+embedding (this run's kind is {c.kind}: there is no embedding to noise)")
    if cfg.latent.autoencoder is not None:
        if not cfg.latent.autoencoder:
            raise FlaresynthError(f"{source}: latent.autoencoder: empty (an autoencoder run folder, or null for pixels)")
        if cfg.latent.scaling_factor is not None:
            _positive(source, "latent.scaling_factor", cfg.latent.scaling_factor)
        if d.clip_sample:
            raise FlaresynthError(f"{source}: diffusion.clip_sample: true would clip the latents (unit variance, not "
                                  "[-1, 1]) at every sampling step; a latent run needs false")
    if c.kind == "discrete+embedding" and not c.encoder:
        raise FlaresynthError(
            f"{source}: conditioning.encoder: missing (discrete+embedding needs an image encoder, "
            "e.g. 'cevae:PATH' or 'random:64')"
        )


def _validate_train_and_sample(cfg: RunConfig, source: str) -> None:
    t, s, d = cfg.train, cfg.sample, cfg.diffusion
    for key in ("steps", "batch_size", "grad_accum", "log_every", "keep_checkpoints"):
        _positive(source, f"train.{key}", getattr(t, key))
    for key in ("warmup_steps", "ema_update_after_step", "checkpoint_every", "sample_every", "weight_decay", "grad_clip"):
        _positive(source, f"train.{key}", getattr(t, key), allow_zero=True)
    if t.global_batch is not None:
        _positive(source, "train.global_batch", t.global_batch)
    _positive(source, "train.lr", t.lr)
    _choice(source, "train.lr_schedule", t.lr_schedule, LR_SCHEDULES)
    if not 0 <= t.ema_decay < 1:
        raise FlaresynthError(f"{source}: train.ema_decay: {t.ema_decay}, expected 0 <= decay < 1")
    if not 0 <= t.class_balance <= 1:
        raise FlaresynthError(f"{source}: train.class_balance: {t.class_balance}, expected 0 <= α <= 1 "
                              "(0 every image equally, 1 every class equally)")
    _choice(source, "train.flips", t.flips, FLIPS)
    if t.mixed_precision is not None:
        _choice(source, "train.mixed_precision", t.mixed_precision, MIXED_PRECISION)
    if t.init_from is not None and cfg.kind != "ddpm":
        raise FlaresynthError(f"{source}: train.init_from: only a ddpm run starts from another run's weights "
                              f"(kind: {cfg.kind})")

    _choice(source, "sample.sampler", s.sampler, SAMPLERS)
    _choice(source, "sample.grid_sampler", s.grid_sampler, SAMPLERS)
    if s.steps is not None:
        _positive(source, "sample.steps", s.steps)
    _positive(source, "sample.grid_steps", s.grid_steps)
    _positive(source, "sample.grid_per_class", s.grid_per_class)
    _positive(source, "sample.guidance", s.guidance, allow_zero=True)
    if s.guidance_t_max is not None:
        _positive(source, "sample.guidance_t_max", s.guidance_t_max, allow_zero=True)
    if s.timesteps is not None:
        ts = list(s.timesteps)
        if not ts or any(int(t) != t or not 0 <= t < d.num_train_timesteps for t in ts) or \
                any(a <= b for a, b in zip(ts, ts[1:])):
            raise FlaresynthError(f"{source}: sample.timesteps: {ts!r}, expected decreasing whole numbers from "
                                  f"{d.num_train_timesteps - 1} to 0")
        if s.steps is not None and s.steps != len(ts):
            raise FlaresynthError(f"{source}: sample.steps: {s.steps}, but sample.timesteps holds {len(ts)}")
    _choice(source, "sample.embedding_source", s.embedding_source, EMBEDDING_SOURCES)
    if not 0 <= s.eta <= 1:
        raise FlaresynthError(f"{source}: sample.eta: {s.eta!r}, expected 0 <= eta <= 1")
    if s.eta and s.sampler != "ddim":
        raise FlaresynthError(f"{source}: sample.eta: {s.eta!r} applies to the ddim sampler (sample.sampler: {s.sampler})")


def _validate_distill(cfg: RunConfig, source: str) -> None:
    e = cfg.distill
    if not e.teacher:
        raise FlaresynthError(f"{source}: distill.teacher: missing (a student needs the run it is distilled from)")
    _choice(source, "distill.stage", e.stage, DISTILL_STAGES)
    _choice(source, "distill.consistency_loss", e.consistency_loss, CONSISTENCY_LOSSES)
    if not (math.isfinite(e.snr_floor) and e.snr_floor >= 0):
        raise FlaresynthError(f"{source}: distill.snr_floor: {e.snr_floor!r}, expected a number >= 0")
    if e.snr_floor and (e.stage not in ("consistency", "trajectory") or e.consistency_loss != "snr"):
        raise FlaresynthError(f"{source}: distill.snr_floor: applies to a consistency stage with consistency_loss "
                              f"snr or a trajectory stage only, not to this {e.stage} stage with {e.consistency_loss!r}")
    if (e.stage == "trajectory") != (e.trajectories is not None):
        raise FlaresynthError(f"{source}: distill.trajectories: {'missing' if e.trajectories is None else 'given'}; "
                              "a trajectory stage, and only it, reads the teacher's paths from this file")
    if e.stage != "consistency" and e.consistency_loss != "snr":
        raise FlaresynthError(f"{source}: distill.consistency_loss: {e.consistency_loss!r} applies to the "
                              f"consistency stage only, not to a {e.stage} stage")
    _positive(source, "distill.teacher_steps", e.teacher_steps)
    _positive(source, "distill.student_steps", e.student_steps)
    if e.stage == "consistency":
        if e.student_steps > e.teacher_steps:
            raise FlaresynthError(f"{source}: distill.student_steps: {e.student_steps}, expected at most "
                                  f"distill.teacher_steps ({e.teacher_steps}), the grid the student's steps are taken from")
        if cfg.diffusion.num_train_timesteps % e.teacher_steps:
            raise FlaresynthError(f"{source}: distill.teacher_steps: {e.teacher_steps}, expected a divisor of "
                                  f"diffusion.num_train_timesteps ({cfg.diffusion.num_train_timesteps}): the "
                                  "consistency grid is every T/N-th timestep")
    elif e.stage == "trajectory":
        n = cfg.diffusion.num_train_timesteps
        if n % e.teacher_steps or e.teacher_steps % e.student_steps:
            raise FlaresynthError(f"{source}: distill.teacher_steps/student_steps: {e.teacher_steps}/"
                                  f"{e.student_steps}, expected a divisor of diffusion.num_train_timesteps ({n}) "
                                  "that is a multiple of student_steps (the student's trailing grid is then part "
                                  "of the teacher's)")
    else:
        want = e.teacher_steps if e.stage == "guidance" else e.teacher_steps / 2
        if e.student_steps != want:
            raise FlaresynthError(f"{source}: distill.student_steps: {e.student_steps}, expected {want:g} for a "
                                  f"{e.stage} stage from {e.teacher_steps} teacher steps")
    if e.teacher_steps > cfg.diffusion.num_train_timesteps:
        raise FlaresynthError(f"{source}: distill.teacher_steps: {e.teacher_steps}, expected at most "
                              f"diffusion.num_train_timesteps ({cfg.diffusion.num_train_timesteps})")
    if not 0 <= e.guidance_min <= e.guidance_max:
        raise FlaresynthError(f"{source}: distill.guidance_min/guidance_max: expected 0 <= guidance_min <= guidance_max")
    _positive(source, "distill.guidance_frequencies", e.guidance_frequencies)
    if e.guidance_t_max is not None:
        _positive(source, "distill.guidance_t_max", e.guidance_t_max, allow_zero=True)


def _validate_autoencoder(cfg: RunConfig, source: str) -> None:
    a, size = cfg.autoencoder, cfg.model.sample_size
    if not a.block_out_channels:
        raise FlaresynthError(f"{source}: autoencoder.block_out_channels: expected at least one width")
    for w in a.block_out_channels:
        if w <= 0 or w % a.norm_num_groups:
            raise FlaresynthError(f"{source}: autoencoder.block_out_channels: {w} is not a positive multiple of "
                                  f"autoencoder.norm_num_groups ({a.norm_num_groups})")
    if size % 2 ** (len(a.block_out_channels) - 1):
        raise FlaresynthError(f"{source}: model.sample_size: {size} cannot be halved {len(a.block_out_channels) - 1} "
                              "times (one per extra level of autoencoder.block_out_channels)")
    _positive(source, "autoencoder.layers_per_block", a.layers_per_block)
    _positive(source, "autoencoder.latent_channels", a.latent_channels)
    _positive(source, "autoencoder.kl_weight", a.kl_weight, allow_zero=True)
    _positive(source, "autoencoder.flare_weight", a.flare_weight, allow_zero=True)
    _choice(source, "autoencoder.rec_loss", a.rec_loss, AUTOENCODER_REC_LOSSES)
    if cfg.latent.autoencoder is not None:
        raise FlaresynthError(f"{source}: latent.autoencoder: an autoencoder run does not train in another one's latents")


def _validate_cevae(cfg: RunConfig, source: str) -> None:
    e, size = cfg.cevae, cfg.model.sample_size
    _positive(source, "cevae.z_dim", e.z_dim)
    if not e.fmap_sizes:
        raise FlaresynthError(f"{source}: cevae.fmap_sizes: expected at least one feature-map width")
    for i, w in enumerate(e.fmap_sizes):
        _positive(source, f"cevae.fmap_sizes[{i}]", w)
    if size % 2 ** len(e.fmap_sizes):
        raise FlaresynthError(
            f"{source}: model.sample_size: {size} cannot be halved {len(e.fmap_sizes)} times "
            f"(one per entry of cevae.fmap_sizes)"
        )
    if not 0 <= e.ce_factor <= 1:
        raise FlaresynthError(f"{source}: cevae.ce_factor: {e.ce_factor}, expected 0 <= ce_factor <= 1")
    _positive(source, "cevae.beta", e.beta, allow_zero=True)
    _choice(source, "cevae.rec_loss", e.rec_loss, CEVAE_REC_LOSSES)
    _positive(source, "cevae.mask_max_squares", e.mask_max_squares, allow_zero=True)
    if not 0 < e.mask_max_fraction <= 1:
        raise FlaresynthError(
            f"{source}: cevae.mask_max_fraction: {e.mask_max_fraction}, expected 0 < fraction <= 1"
        )
    _positive(source, "cevae.class_ridge", e.class_ridge, allow_zero=True)
    _positive(source, "cevae.flare_weight", e.flare_weight, allow_zero=True)
    if isinstance(e.class_components, bool) or not isinstance(e.class_components, int) or e.class_components < 1:
        raise FlaresynthError(f"{source}: cevae.class_components: {e.class_components!r}, expected a whole number >= 1")


__all__ = [
    "ModelConfig",
    "DiffusionConfig",
    "ConditioningConfig",
    "CevaeConfig",
    "DistillConfig",
    "AutoencoderConfig",
    "LatentConfig",
    "TrainConfig",
    "SampleConfig",
    "RunConfig",
    "load_config",
    "load_preset",
    "save_config",
    "validate",
    "RUN_KINDS",
    "CONDITIONING_KINDS",
    "EMBEDDING_SOURCES",
    "SAMPLERS",
    "PRESETS",
]

