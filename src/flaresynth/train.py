"""Training the conditional DDPM and the ceVAE: one loop for a CPU, one GPU, and ``accelerate launch`` (DDP).

Run it::

    flaresynth train --data DS --out RUN --preset demo                # CPU or one GPU
    flaresynth train --data DS --out RUN --preset demo --max-steps 500
    flaresynth train --data DS --out RUN --resume                     # continue from the latest checkpoint
    flaresynth train --data DS --out RUN --preset cevae-demo          # the ceVAE baseline (config kind: cevae)
    accelerate launch --num_processes 2 -m flaresynth train --data DS --out RUN --preset paper

The loop (:func:`train`) reads top to bottom: processes -> config and checkpoint (resolved by the main process)
-> accelerator -> data (memory-mapped) -> objective, model, EMA, optimiser -> resume -> for each step: batch,
loss, backward, clip, step, EMA, log, checkpoint, grid -> final model. accelerate handles devices, DDP, mixed
precision and gradient accumulation; nothing else changes.

Several processes (``accelerate launch``): the main process resolves the run folder (config, which checkpoint)
and tells the others; every process reads that checkpoint, and any that cannot (RUN on a disk only one machine
sees) stops the launch with one line, so RUN must be on a filesystem every machine shares. The global batch is
``train.batch_size`` per process times the processes, or ``train.global_batch`` split over them (printed at the
start); a checkpoint resumes only with as many processes as saved it, unless ``allow_world_size_change``.

What is trained is an *objective* (:func:`make_objective`, config ``kind``): :class:`DiffusionObjective`
(the DDPM's noise-prediction loss), :class:`CevaeObjective` (the ceVAE's VAE + context-encoding loss,
:func:`cevae_loss`; the network is :class:`flaresynth.models.cevae.CeVAE`), :class:`AutoencoderObjective`
(the autoencoder of latent diffusion, :func:`autoencoder_loss`) or :class:`DistillObjective` (one
stage of :mod:`flaresynth.distill`).

Latent diffusion (config ``latent.autoencoder``): the same loop and objectives on different data. The main
process encodes the training split once with the autoencoder into ``RUN/cache`` (posterior means × the scaling
factor, 1 / their std unless the config fixes it; the factor is kept in the checkpoints so a resume uses the
first session's), copies the autoencoder into ``RUN/autoencoder/``, and the model's metadata records the factor
and the autoencoder's id; sampling (:mod:`flaresynth.sampling`) decodes. Only "data -> x0" and "x0 -> image"
differ from pixel diffusion. An objective builds the model, computes a batch's loss from a per-step random
generator, and writes the training grids and the final model folder; the loop around it is shared.

Reproducibility: the batch of step s is a slice of a per-epoch permutation seeded by (seed, epoch), and the
random numbers of step s (DDPM: noise, timesteps and condition dropout; ceVAE: reparameterisation noise and
context masks) come from a generator seeded by (seed, micro-step, rank); the model's own draws (dropout) from
torch's global generators, reseeded from the same numbers before each micro-step, so each rank has its own.
Nothing depends on how many steps ran before in this process, and no generator state is saved, so on a CPU a
run interrupted at a checkpoint and resumed reproduces the uninterrupted run's weights bit for bit, and on GPUs
a resume does not depend on how many devices either session saw. A step the fp16 GradScaler skips (inf/NaN
gradients) advances neither the LR schedule nor the EMA.

The run folder (read back by :func:`flaresynth.runs.open_run`)::

    RUN/
      config.yaml          the resolved config (in_channels filled in from the dataset)
      log.jsonl            one line per logged step: step, loss, images_per_s, lr, seconds
                           (+ the loss parts of the ceVAE: loss_rec, loss_kl, loss_ce)
      provenance.json      command, config, steps, data hash, world size, versions, timings
      checkpoints/
        step-000500/       state.pt (model, EMA, optimiser, LR scheduler, GradScaler, step, world size)
                           + meta.json
        latest             name of the newest complete checkpoint (updated atomically, after the folder)
      cache/               during a session only: train_images.npy (the training split at the model's
                           resolution, or a latent run's scaled latents, memory-mapped by every process)
                           [+ train_embeddings.npz]
      autoencoder/         latent runs: a copy of the autoencoder's model folder
      samples/step-*.png   periodic class grids from the EMA weights
      model/               the final EMA weights: UNet2DModel.save_pretrained + flaresynth.json
                           (+ conditioner.safetensors when the conditioning is not inside the U-Net,
                           + embedding_classes.npz: per-class Gaussians of the image embeddings);
                           for a ceVAE: config.json + model.safetensors + flaresynth.json
                           + latent_classes.npz (per-class Gaussians of the training latents);
                           for an autoencoder: AutoencoderKL.save_pretrained + flaresynth.json (with the
                           reconstruction benchmark of the test split, also the last line of log.jsonl)

A checkpoint folder is written under a temporary name, renamed when complete, and only then named in
``latest``; ``meta.json`` holds the SHA-256 of ``state.pt``, so a damaged file is detected on resume.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import accelerate
import diffusers
import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState
from accelerate.utils import broadcast_object_list, gather_object
from diffusers.training_utils import EMAModel
from numpy.lib.format import open_memmap

from flaresynth import __version__
from flaresynth.config import RunConfig, load_config, load_preset, save_config, validate
from flaresynth.dataset import open_dataset
from flaresynth.devices import use_deterministic_kernels
from flaresynth.diffusion import (
    consistency_function,
    consistency_scheduler_config,
    ddim_scheduler,
    ddim_step,
    diffusion_loss,
    drop_mask,
    guided_combine,
    make_sampler,
    make_scheduler,
    one_step_noise,
    previous_timestep,
    sample_timesteps,
    snr,
    student_scheduler_config,
)
from flaresynth.errors import FlaresynthError
from flaresynth.figures import main_channel, save_grid
from flaresynth.io import atomic_dir, atomic_file, read_json, sha256_file, write_json
from flaresynth.metrics.reconstruction import format_table, reconstruction_errors
from flaresynth.models.autoencoder import MODEL_TYPE as AUTOENCODER_MODEL_TYPE
from flaresynth.models.autoencoder import (
    LatentAutoencoder,
    build_autoencoder,
    load_autoencoder,
    save_autoencoder,
)
from flaresynth.models.autoencoder import decode as decode_latents
from flaresynth.models.autoencoder import encode_means as encode_latents
from flaresynth.models.cevae import MODEL_TYPE as CEVAE_MODEL_TYPE
from flaresynth.models.cevae import (
    CeVAE,
    ClassGaussians,
    build_cevae,
    decode,
    encode_means,
    fit_class_gaussians,
)
from flaresynth.models.conditioning import Condition, as_encoder, embed_all
from flaresynth.models.decoder_noise import DECODER_NOISE_FILE, DecoderNoise, fit_decoder_noise
from flaresynth.models.student import save_student, student_from_teacher
from flaresynth.models.unet import build_denoiser, count_parameters, save_denoiser
from flaresynth.progress import ProgressBar
from flaresynth.runs import (
    AUTOENCODER_DIR,
    EMBEDDING_CLASSES_FILE,
    LATENT_CLASSES_FILE,
    META_FILE,
    MODEL_DIR,
    SCHEDULER_DIR,
    Run,
    autoencoder_meta,
    encoder_id,
    is_shipped_name,
    kind_of,
    load_encoder,
    model_folder,
    open_run,
    read_meta,
    resolve,
    write_meta,
)
from flaresynth.sampling import build_requests, generate
from flaresynth.transforms import channel_transforms, resample

CHECKPOINTS = "checkpoints"
LATEST = "latest"
STATE_FILE = "state.pt"
#: Set to a folder to make every rank write rank<r>.json there (parameter digest, checkpoints written, the
#: dataset rows of each of its micro-batches).
DEBUG_RANK_DIR_ENV = "FLARESYNTH_DEBUG_RANK_DIR"
#: ``RUN/cache/``: the training split at the model's resolution (and its embeddings) for one session, written by
#: the main process, memory-mapped by every process, removed when the session ends.
CACHE = "cache"
CACHE_IMAGES = "train_images.npy"
CACHE_EMBEDDINGS = "train_embeddings.npz"
#: Split the autoencoder run's reconstruction benchmark is measured on (the first of these that has rows).
RECONSTRUCTION_SPLITS = ("test", "val", "train")
#: Dataset rows read, resized and embedded at a time while the cache is written.
DATA_CHUNK = 256


# ------------------------------------------------------------------------------------------ config


def resolve_config(out: Path, config: RunConfig | str | Path | None, preset: str | None, resume: bool,
                   autoencoder: str | Path | None = None, init_from: str | Path | None = None) -> RunConfig:
    """The config of this invocation: explicit config, preset, the run's own (on resume), or ``demo``;
    ``autoencoder`` (``--autoencoder``) replaces its ``latent.autoencoder`` and ``init_from`` (``--init-from``) its
    ``train.init_from`` (each a path made absolute, or a shipped name such as ``demo:autoencoder`` kept as it is)."""
    if config is not None and preset is not None:
        raise FlaresynthError("give --config or --preset, not both")
    saved = out / "config.yaml"
    if isinstance(config, RunConfig):
        cfg = config
    elif config is not None:
        cfg = load_config(config)
    elif preset is not None:
        cfg = load_preset(preset)
    elif resume and saved.is_file():
        cfg = load_config(saved)
    else:
        cfg = load_preset("demo")
    if autoencoder is None and init_from is None:
        return cfg
    d = cfg.to_dict()
    if autoencoder is not None:
        if cfg.latent.autoencoder is None:
            raise FlaresynthError(f"--autoencoder {autoencoder}: the config {cfg.name!r} is a pixel one (no "
                                  "latent.autoencoder); use a latent preset such as demo64-latent")
        d["latent"]["autoencoder"] = _run_spec(autoencoder)
    if init_from is not None:
        d["train"]["init_from"] = _run_spec(init_from)
    return RunConfig.from_dict(d, source="--autoencoder" if init_from is None else "--init-from")


def _run_spec(run: str | Path) -> str:
    """A run named on the command line as the config keeps it: a shipped name as it is, a path made absolute."""
    return str(run) if is_shipped_name(str(run)) else str(Path(run).resolve())


def resolve_for_dataset(cfg: RunConfig, ds, out: Path | None = None) -> RunConfig:
    """Fill the dataset-dependent fields (``model.in_channels``) of a copy of ``cfg``.

    A latent run (``latent.autoencoder``) takes them from its autoencoder (:func:`latent_source` of ``out``),
    which must have been trained on this dataset: ``model.in_channels`` is the latent channels, and
    ``model.sample_size`` must be the latent side.
    """
    d = cfg.to_dict()
    n_channels = int(ds.images.shape[1])
    if cfg.latent.autoencoder is not None:
        folder, meta = autoencoder_meta(latent_source(cfg, out))
        ae = meta["autoencoder"]
        n_channels, side = int(ae["latent_shape"][0]), int(ae["latent_shape"][1])
        where = folder / META_FILE
        if int(ds.images.shape[-1]) != int(ae["sample_size"]) or int(ds.images.shape[1]) != int(ae["in_channels"]):
            raise FlaresynthError(
                f"{ds.path / 'manifest.json'}: images of {int(ds.images.shape[1])}x{int(ds.images.shape[-1])} px, but "
                f"the autoencoder {folder} works on {ae['in_channels']}x{ae['sample_size']} px images")
        if meta.get("data_hash") != ds.manifest.get("data_hash"):
            raise FlaresynthError(f"{where}: data_hash: the autoencoder was trained on another dataset than {ds.path}")
        if cfg.model.sample_size != side:
            raise FlaresynthError(f"model.sample_size: {cfg.model.sample_size}, but the latents of {folder} are "
                                  f"{side}x{side} (set model.sample_size: {side})")
    if d["model"]["in_channels"] is None:
        d["model"]["in_channels"] = n_channels
    elif d["model"]["in_channels"] != n_channels:
        what = "the autoencoder's latents have" if cfg.latent.autoencoder is not None else f"the dataset {ds.path} has"
        raise FlaresynthError(f"model.in_channels: {d['model']['in_channels']}, but {what} {n_channels} channel(s)")
    return RunConfig.from_dict(d, source="config")


def latent_source(cfg: RunConfig, out: Path | None = None) -> Path:
    """The autoencoder a latent run encodes with: the run's own copy (``RUN/autoencoder``) once it has one, else
    ``latent.autoencoder``."""
    if out is not None and (Path(out) / AUTOENCODER_DIR / META_FILE).is_file():
        return Path(out) / AUTOENCODER_DIR
    return Path(cfg.latent.autoencoder)


def latent_record(ae_meta: dict, scaling_factor: float | None) -> dict:
    """The ``latent`` section of a latent run's model metadata, from its autoencoder's metadata and the latent
    scaling factor (what :func:`flaresynth.runs.open_run` checks and sampling decodes with)."""
    ae = ae_meta["autoencoder"]
    return {"autoencoder": AUTOENCODER_DIR, "autoencoder_id": ae_meta.get("model_id"),
            "autoencoder_data_hash": ae_meta.get("data_hash"), "scaling_factor": scaling_factor,
            "image_size": int(ae["sample_size"]), "image_channels": int(ae["in_channels"]),
            "latent_shape": list(ae["latent_shape"])}


#: Config fields a run started from another run's weights (``train.init_from``) must share with it: the ones that
#: shape the network or give its output a meaning (``None``: every field of the section but those of
#: :data:`INIT_FREE_FIELDS`).
INIT_FIELDS = {
    "model": None,
    "diffusion": ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type"),
    "conditioning": ("kind", "flux_frequencies", "encoder"),
}
#: Fields that change how a network trains, not its weights' shapes: they may differ from the starting run's.
INIT_FREE_FIELDS = ("dropout",)


def initial_weights(cfg: RunConfig, classes, latent: dict | None) -> dict:
    """Check that the run ``cfg.train.init_from`` can start this one and return its metadata (no weights loaded).

    It must be a trained DDPM (not a student) with this config's :data:`INIT_FIELDS`, the dataset's classes and, for
    a latent run, the same autoencoder (by model id); anything else is a one-line error naming the field.
    """
    try:
        folder = model_folder(resolve(cfg.train.init_from))
    except FlaresynthError as exc:
        raise FlaresynthError(f"train.init_from: {exc}") from None
    meta, where = read_meta(folder), folder / META_FILE
    if kind_of(meta) != "ddpm" or "student" in meta:
        kind = "student" if "student" in meta else kind_of(meta)
        raise FlaresynthError(f"{where}: train.init_from needs a DDPM run, and this one is of kind {kind!r}")
    theirs, ours = meta["config"], cfg.to_dict()
    for section, keys in INIT_FIELDS.items():
        for key in keys or [k for k in ours[section] if k not in INIT_FREE_FIELDS]:
            if theirs[section].get(key) != ours[section][key]:
                raise FlaresynthError(f"{where}: {section}.{key}: {theirs[section].get(key)!r}, this config has "
                                      f"{ours[section][key]!r} (train.init_from needs the same network)")
    if list(meta["classes"]) != list(classes):
        raise FlaresynthError(f"{where}: classes: {', '.join(meta['classes'])}, the dataset has {', '.join(classes)}")
    ae_theirs = (meta.get("latent") or {}).get("autoencoder_id")
    ae_ours = None if latent is None else latent["meta"].get("model_id")
    if ae_theirs != ae_ours:
        raise FlaresynthError(f"{where}: latent.autoencoder_id: {ae_theirs}, this run's autoencoder is {ae_ours}")
    return meta


# ------------------------------------------------------------------------------------------ data


def _dataset_transforms(ds) -> list:
    """The dataset's per-channel intensity transforms (:func:`flaresynth.transforms.channel_transforms`)."""
    return channel_transforms(ds.manifest["transform"], int(ds.images.shape[1]), str(ds.path / "manifest.json"))


def _training_conditions(ds, cfg: RunConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Rows, class indices and log10 flux of the training split (checked), and the per-class summaries."""
    idx = ds.split_indices("train")
    if len(idx) == 0:
        raise FlaresynthError(f"{ds.path / 'labels.csv'}: split: no 'train' rows to train on")
    classes = list(ds.classes)
    labels = ds.label_index()[idx]
    flux = ds.labels["label_flux"].to_numpy(dtype=np.float64)[idx]
    if _conditioning_kind(cfg) == "continuous":
        bad = np.flatnonzero(~(np.isfinite(flux) & (flux > 0)))
        if len(bad):
            raise FlaresynthError(
                f"{ds.path / 'labels.csv'}: label_flux: row {int(idx[bad[0]])} is {flux[bad[0]]!r}, "
                "continuous conditioning needs a positive flux in W/m² on every training row"
            )
    log_flux = np.log10(np.clip(np.nan_to_num(flux, nan=1e-9), 1e-12, None))
    info = {
        "train_counts": {c: int((labels == i).sum()) for i, c in enumerate(classes)},
        "class_log_flux": {
            c: float(np.median(log_flux[labels == i])) for i, c in enumerate(classes) if (labels == i).any()
        },
        # the class's training flux distribution (33 quantiles of log10 flux), from which a class request to a
        # continuous model draws each image's flux (flaresynth.sampling.build_requests)
        "class_log_flux_quantiles": {
            c: np.quantile(log_flux[labels == i], np.linspace(0, 1, 33)).tolist()
            for i, c in enumerate(classes) if (labels == i).any()
        },
    }
    return idx, labels, log_flux, info


def _conditioning_kind(cfg: RunConfig) -> str:
    # a ceVAE and an autoencoder train on images alone
    return "discrete" if cfg.kind in ("cevae", "autoencoder") else cfg.conditioning.kind


def _training_encoder(cfg: RunConfig, encoder=None, device: str | torch.device = "cpu"):
    """The frozen encoder of a ``discrete+embedding`` run (loaded on ``device``; an encoder object given by the
    caller stays where it is and is fed there) and the id that names it in the saved model."""
    enc = as_encoder(encoder) if encoder is not None else load_encoder(cfg.conditioning.encoder, device)
    return enc, encoder_id(enc, cfg.conditioning.encoder)


#: ``train.flips`` → the image axes each training row is mirrored along, one tuple per row of the training set
#: (the frame as observed first)
FLIP_AXES = {"none": ((),), "ew": ((), (-1,)), "ns": ((), (-2,)), "ew+ns": ((), (-1,), (-2,), (-2, -1))}


def _mirrored(images: np.ndarray, axes: tuple) -> np.ndarray:
    """``images`` reversed along ``axes`` (contiguous, so torch takes it), or as they are for ``()``."""
    return np.ascontiguousarray(np.flip(images, axes)) if axes else images


def _embed_rows(ds, idx: np.ndarray, enc, flips: tuple = ((),)) -> torch.Tensor:
    """Embeddings (V·N, D) of dataset rows ``idx`` under each mirror of ``flips`` (:data:`FLIP_AXES`), read and
    embedded one chunk at a time.

    The encoder sees the dataset's own images (its resolution), not the ones resized for the model.
    """
    parts = [embed_all(enc, torch.from_numpy(_mirrored(np.asarray(ds.images[idx[lo : lo + DATA_CHUNK]],
                                                                  dtype=np.float32), axes)), batch_size=DATA_CHUNK)
             for axes in flips for lo in range(0, len(idx), DATA_CHUNK)]
    return torch.cat(parts)


def _write_latents(ds, idx: np.ndarray, autoencoder: Path, scaling_factor: float | None, device, images,
                   flips: tuple = ((),)) -> float:
    """Fill ``images`` (V·N, c, h, w) with the scaled latent means of dataset rows ``idx`` under each mirror of
    ``flips`` (:data:`FLIP_AXES`; row v·N + i is row i under mirror v); returns the scale.

    The autoencoder runs on ``device`` one chunk at a time and encodes each mirror on its own (its latents are
    not mirror-symmetric); the scale is ``scaling_factor`` or, when ``None``, 1 / std of the latents (all
    elements), measured here.
    """
    ae = load_autoencoder(autoencoder, device)
    transforms = _dataset_transforms(ds)
    n = len(idx)
    for lo in range(0, n, DATA_CHUNK):
        rows = resample(ds.images[idx[lo : lo + DATA_CHUNK]], transforms, ae.sample_size)
        for v, axes in enumerate(flips):
            images[v * n + lo : v * n + lo + len(rows)] = encode_latents(ae, torch.from_numpy(_mirrored(rows, axes)),
                                                                         device).numpy()
    chunks = range(0, len(images), DATA_CHUNK)
    if scaling_factor is None:
        # two passes in float64 over the chunks: no process holds the whole split
        size = images.size
        mean = sum(float(np.asarray(images[lo : lo + DATA_CHUNK], np.float64).sum()) for lo in chunks) / size
        var = sum(float(((np.asarray(images[lo : lo + DATA_CHUNK], np.float64) - mean) ** 2).sum())
                  for lo in chunks) / max(size - 1, 1)
        if not var > 0:
            raise FlaresynthError(f"{autoencoder}: the latents of the training split are constant; the autoencoder "
                                  "is unusable (train it longer)")
        scaling_factor = 1.0 / math.sqrt(var)
    for lo in chunks:
        images[lo : lo + DATA_CHUNK] *= np.float32(scaling_factor)
    return float(scaling_factor)


def _write_pixels(ds, idx: np.ndarray, size: int, images, flips: tuple = ((),)) -> None:
    """Fill ``images`` (V·N, C, size, size) with dataset rows ``idx`` at ``size`` px through the dataset's
    transforms, under each mirror of ``flips`` (row v·N + i is row i under mirror v)."""
    transforms, n = _dataset_transforms(ds), len(idx)
    for lo in range(0, n, DATA_CHUNK):
        rows = resample(ds.images[idx[lo : lo + DATA_CHUNK]], transforms, size)
        for v, axes in enumerate(flips):
            images[v * n + lo : v * n + lo + len(rows)] = _mirrored(rows, axes)


def write_training_cache(ds, cfg: RunConfig, folder: Path, encoder=None, device: str | torch.device = "cpu",
                         autoencoder: Path | None = None, scaling_factor: float | None = None) -> float | None:
    """Write the training split at the model's resolution (and its embeddings) into ``folder``, atomically.

    ``train_images.npy`` is float32 (N, C, S, S), written one chunk of rows at a time so that no process ever
    holds the whole split; ``train_embeddings.npz`` (``discrete+embedding`` only) holds the frozen encoder's
    ``embeddings`` (N, D), computed in batches on ``device``, and ``encoder_id``. :func:`load_training_data`
    memory-maps them. A latent run (``autoencoder``: the autoencoder's model folder) stores the latent means
    × the scaling factor instead of the images (:func:`_write_latents`) and returns that factor; the image
    encoder still sees the dataset's images.
    """
    idx, *_ = _training_conditions(ds, cfg)  # bad labels fail before anything is written
    size, flips = cfg.model.sample_size, FLIP_AXES[cfg.train.flips]
    channels = int(cfg.model.in_channels or ds.images.shape[1])
    with atomic_dir(folder, overwrite=True) as tmp:
        images = open_memmap(tmp / CACHE_IMAGES, mode="w+", dtype=np.float32,
                             shape=(len(flips) * len(idx), channels, size, size))
        if autoencoder is not None:
            scaling_factor = _write_latents(ds, idx, autoencoder, scaling_factor, device, images, flips)
        else:
            _write_pixels(ds, idx, size, images, flips)
        images.flush()
        del images
        if _conditioning_kind(cfg) == "discrete+embedding":
            enc, enc_id = _training_encoder(cfg, encoder, device)
            with open(tmp / CACHE_EMBEDDINGS, "wb") as fh:
                np.savez(fh, embeddings=_embed_rows(ds, idx, enc, flips).numpy(), encoder_id=np.array(enc_id))
    return scaling_factor if autoencoder is not None else None


def load_training_data(ds, cfg: RunConfig, encoder=None, cache: Path | None = None) -> dict:
    """The training split at the model's resolution, with its conditions.

    Without ``cache`` the images are read, resized and embedded here and held in RAM. With ``cache`` (a folder
    written by :func:`write_training_cache`) the images are memory-mapped from it and the embeddings read from
    it: the processes of one machine then share one copy of the split in the page cache, and the encoder ran
    once, in the process that wrote the cache.

    Returns a dict with ``images`` (float32 tensor N×C×S×S), ``cond``
    (:class:`~flaresynth.models.conditioning.Condition`), ``train_counts``, ``class_log_flux`` and, for
    ``discrete+embedding``, ``embed_dim``, ``class_mean_embedding``, ``class_embedding_gaussians``
    (:class:`~flaresynth.models.cevae.ClassGaussians`) and ``encoder_id``. A ceVAE run uses only images and
    labels.
    """
    idx, labels, log_flux, info = _training_conditions(ds, cfg)
    classes = list(ds.classes)
    flips = FLIP_AXES[cfg.train.flips]
    # every mirror is a row of its own, with its frame's conditions (train_counts still counts frames)
    labels, log_flux = np.tile(labels, len(flips)), np.tile(log_flux, len(flips))
    c, s = int(cfg.model.in_channels or ds.images.shape[1]), cfg.model.sample_size
    if cache is None and cfg.latent.autoencoder is not None:
        latents = np.zeros((len(labels), c, s, s), np.float32)
        ae_folder, _ = autoencoder_meta(latent_source(cfg))
        info["latent_scaling_factor"] = _write_latents(ds, idx, ae_folder, cfg.latent.scaling_factor, "cpu", latents,
                                                       flips)
        images = torch.from_numpy(latents)
    elif cache is None:
        pixels = np.zeros((len(labels), c, s, s), np.float32)
        _write_pixels(ds, idx, s, pixels, flips)
        images = torch.from_numpy(pixels)
    else:
        # copy-on-write map: torch wants a writable array; the pages stay shared because nothing writes them
        images = torch.from_numpy(np.load(cache / CACHE_IMAGES, mmap_mode="c"))
        if images.shape[0] != len(labels):
            raise FlaresynthError(f"{cache / CACHE_IMAGES}: {images.shape[0]} images, the train split has {len(idx)} "
                                  f"frames × {len(flips)} (train.flips: {cfg.train.flips})")
    emb = None
    if _conditioning_kind(cfg) == "discrete+embedding":
        if cache is None:
            enc, enc_id = _training_encoder(cfg, encoder)
            emb = _embed_rows(ds, idx, enc, flips)
        else:
            with np.load(cache / CACHE_EMBEDDINGS) as saved:
                emb, enc_id = torch.from_numpy(saved["embeddings"]), str(saved["encoder_id"])
        means = torch.zeros(len(classes), emb.shape[1])
        for i in range(len(classes)):
            if (labels == i).any():
                means[i] = emb[torch.from_numpy(labels == i)].mean(0)
        info["embed_dim"] = int(emb.shape[1])
        info["class_mean_embedding"] = means
        # per dimension, the spread of the embeddings around their class's mean: the unit of conditioning.embedding_noise
        info["embedding_within_class_std"] = (emb - means[torch.from_numpy(labels.astype(np.int64))]).std(0)
        info["class_embedding_gaussians"] = fit_class_gaussians(emb.numpy(), labels, classes)
        info["encoder_id"] = enc_id
    info["images"] = images
    info["cond"] = Condition(torch.from_numpy(labels.astype(np.int64)), torch.from_numpy(log_flux.astype(np.float32)), emb)
    return info


def batch_indices(n: int, global_batch: int, micro_step: int, seed: int, p: np.ndarray | None = None) -> np.ndarray:
    """Dataset rows of global micro-batch ``micro_step``: consecutive slices of per-epoch permutations.

    Position p of the endless stream is row ``perm_e[p mod n]`` of epoch e = p // n, with ``perm_e`` seeded by
    (seed, e), so the batch is a pure function of (seed, micro_step). With row probabilities ``p``
    (:func:`class_balance_weights`) the rows are drawn with replacement instead, from a generator seeded by
    (seed, micro_step): still a pure function of both.
    """
    if p is not None:
        return np.random.default_rng([int(seed), int(micro_step), 2]).choice(n, size=global_batch, p=p)
    pos = np.arange(micro_step * global_batch, (micro_step + 1) * global_batch, dtype=np.int64)
    epochs = pos // n
    out = np.empty_like(pos)
    for e in np.unique(epochs):
        perm = np.random.default_rng([int(seed), int(e)]).permutation(n)
        sel = epochs == e
        out[sel] = perm[pos[sel] % n]
    return out


def class_balance_weights(labels: np.ndarray, alpha: float) -> np.ndarray | None:
    """Row probabilities ∝ (training images of the row's class)^-α, summing to 1; ``None`` for α = 0 (plain
    epochs). ``train.class_balance`` in :class:`flaresynth.config.TrainConfig` says why."""
    if alpha == 0:
        return None
    counts = np.bincount(labels)
    w = counts[labels].astype(np.float64) ** -float(alpha)
    return w / w.sum()


def step_generator(seed: int, micro_step: int, rank: int) -> torch.Generator:
    """CPU generator of one micro-step's noise, timesteps and condition dropout on one rank."""
    state = np.random.SeedSequence([int(seed), int(micro_step), int(rank)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def dropout_seed(seed: int, micro_step: int, rank: int) -> int:
    """Seed of torch's global generators (CPU and every GPU) for one micro-step on one rank: the model's dropout.

    Seeded per micro-step and rank, each rank draws its own dropout masks, and they depend on the step alone:
    no generator state is saved, and a resume on any number of devices draws what the uninterrupted run drew.
    """
    state = np.random.SeedSequence([int(seed), int(micro_step), int(rank), 1]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 32 | int(state[1])


def per_process_batch(t, world: int) -> int:
    """Images per process and micro-step: ``train.batch_size``, or ``train.global_batch`` split evenly over the
    ``world`` processes and the ``grad_accum`` micro-steps of an optimiser step."""
    if t.global_batch is None:
        return t.batch_size
    if t.global_batch % (world * t.grad_accum):
        raise FlaresynthError(
            f"train.global_batch: {t.global_batch} images do not split evenly over {world} process(es) x "
            f"{t.grad_accum} accumulation step(s) (train.grad_accum)"
        )
    return t.global_batch // (world * t.grad_accum)


def lr_lambda(cfg) -> Callable[[int], float]:
    """LR multiplier of step s: linear warm-up over ``warmup_steps``, then constant or cosine to 0."""

    def f(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.lr_schedule == "cosine":
            span = max(1, cfg.steps - cfg.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - cfg.warmup_steps) / span)))
        return 1.0

    return f


# ------------------------------------------------------------------------------------------ objectives


def augment_embedding(cond: Condition, std: torch.Tensor, g: torch.Generator) -> Condition:
    """``cond`` with Gaussian noise of per-dimension ``std`` (D,) added to its embeddings, drawn from ``g``.

    Condition augmentation (Ho et al. 2022, "Cascaded Diffusion Models"): the network no longer sees the exact
    embedding of a training frame, so it cannot use it as that frame's address.
    """
    noise = torch.randn(cond.embedding.shape, generator=g) * std.float()
    return Condition(cond.labels, cond.log_flux, cond.embedding + noise.to(cond.embedding.device))


class DiffusionObjective:
    """The DDPM: conditional U-Net, noise-prediction loss (:func:`flaresynth.diffusion.diffusion_loss`).

    ``loss`` draws, from the step's generator and in this order, the timesteps, the noise and the condition
    dropout (the order every earlier run used, so its checkpoints resume bit for bit), then, only with
    ``conditioning.embedding_noise`` > 0, the noise added to the embeddings.
    """

    name = "ddpm"

    def __init__(self, cfg: RunConfig, data: dict, classes):
        self.cfg = cfg
        self.data = data
        self.classes = tuple(classes)
        self.scheduler = make_scheduler(cfg.diffusion)
        self.parts: dict[str, torch.Tensor] = {}
        self.autoencoder: LatentAutoencoder | None = None  # a latent run's decoder, for the training grids

    def build_model(self) -> torch.nn.Module:
        c = self.cfg
        model = build_denoiser(c.model, c.model.in_channels, c.conditioning.kind, len(self.classes),
                               flux_frequencies=c.conditioning.flux_frequencies, embed_dim=self.data.get("embed_dim"))
        if "class_mean_embedding" in self.data:
            model.conditioner.class_mean_embedding.copy_(self.data["class_mean_embedding"])
        return model

    def loss(self, model, x0: torch.Tensor, cond, g: torch.Generator) -> torch.Tensor:
        c, dev = self.cfg, x0.device
        timesteps = sample_timesteps(len(x0), c.diffusion.num_train_timesteps, g).to(dev)
        noise = torch.randn(x0.shape, generator=g).to(dev)
        drop = drop_mask(len(x0), c.conditioning.p_uncond, g).to(dev)
        if c.conditioning.embedding_noise > 0 and cond.embedding is not None:
            cond = augment_embedding(cond, c.conditioning.embedding_noise * self.data["embedding_within_class_std"], g)
        return diffusion_loss(model, self.scheduler, x0, cond, drop, noise, timesteps, c.diffusion)

    def meta(self) -> dict:
        extra = {"encoder_id": self.data["encoder_id"]} if "encoder_id" in self.data else {}
        return {"scheduler": {k: v for k, v in dict(self.scheduler.config).items() if not k.startswith("_")}, **extra}

    def sample_grid(self, raw_model, meta: dict, path: Path, step: int, dev) -> None:
        _sample_grid(raw_model, self.cfg, meta, path, step, dev, self.autoencoder)

    def save_final(self, raw_model, folder: Path, meta: dict) -> None:
        save_denoiser(raw_model, folder)
        write_meta(folder, {**meta, "ema_weights": True, "conditioning": raw_model.conditioner.describe()})
        make_scheduler(self.cfg.diffusion).save_pretrained(folder / SCHEDULER_DIR)
        if "class_embedding_gaussians" in self.data:
            self.data["class_embedding_gaussians"].save(folder / EMBEDDING_CLASSES_FILE)


# The ceVAE's objective (Zimmerer et al. 2018; FHNW i4Ds/sdo-cli ``sood ce_vae``): the loss formula and its
# differences from the FHNW code are in the docstring of :mod:`flaresynth.models.cevae`.


def flare_weights(x: torch.Tensor, flare_weight: float) -> torch.Tensor:
    """Per-pixel weights 1 + flare_weight · ((x + 1)/2)^4 of model-space images ``x`` in [-1, 1]: the bright
    kernels (a few pixels) decide the class, so they count more; the quiet disk stays near 1."""
    return 1.0 + flare_weight * ((x.float() + 1.0) / 2.0).clamp(0, 1) ** 4


def reconstruction_loss(x_rec: torch.Tensor, x: torch.Tensor, kind: str = "l1",
                        weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute (``l1``) or squared (``mse``) error per pixel, each times ``weights`` (broadcast; default 1),
    averaged over the batch; a scalar."""
    diff = x_rec.float() - x.float()
    err = diff.abs() if kind == "l1" else diff.pow(2)
    return (err if weights is None else err * weights).mean()


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)) averaged over latent dimensions and batch (FHNW's normalisation); a scalar."""
    return (0.5 * (mu.float().pow(2) + logvar.float().exp() - 1.0 - logvar.float())).mean()


def context_mask(x: torch.Tensor, generator: torch.Generator, max_squares: int = 2,
                 max_fraction: float = 0.5) -> torch.Tensor:
    """A copy of ``x`` (B, C, H, W) with random squares painted over (the context-encoding input).

    Per image: n ~ U{0..max_squares} squares, side ~ U{0..⌊max_fraction·min(H, W)⌋ − 1}, uniform position,
    one fill value ~ U(min, max of that image) per square (all channels). Random numbers come from the CPU
    ``generator`` in a fixed order, so the result depends only on its state.
    """
    b, _, h, w = x.shape
    j = int(max_squares)
    max_side = max(1, int(max_fraction * min(h, w)))
    n = torch.randint(0, j + 1, (b,), generator=generator)
    side = torch.randint(0, max_side, (b, j), generator=generator)
    pos = torch.rand(b, j, 2, generator=generator)
    u = torch.rand(b, j, generator=generator)
    if j == 0:
        return x.clone()
    top = torch.floor(pos[..., 0] * (h - side + 1)).long()
    left = torch.floor(pos[..., 1] * (w - side + 1)).long()
    flat = x.detach().flatten(1)
    lo, hi = flat.min(1).values.cpu(), flat.max(1).values.cpu()
    value = lo[:, None] + u * (hi - lo)[:, None]
    rows, cols = torch.arange(h), torch.arange(w)
    out = x.clone()
    for k in range(j):  # later squares paint over earlier ones
        active = (k < n)[:, None, None]
        inside = ((rows[None, :, None] >= top[:, k, None, None]) & (rows[None, :, None] < (top[:, k] + side[:, k])[:, None, None])
                  & (cols[None, None, :] >= left[:, k, None, None]) & (cols[None, None, :] < (left[:, k] + side[:, k])[:, None, None])
                  & active)
        inside = inside[:, None].to(x.device)
        out = torch.where(inside, value[:, k].to(x.device, x.dtype)[:, None, None, None], out)
    return out


def cevae_loss(model, x: torch.Tensor, generator: torch.Generator, ce_factor: float = 0.5, beta: float = 0.01,
               rec_loss: str = "l1", max_squares: int = 2, max_fraction: float = 0.5, flare_weight: float = 0.0):
    """The ceVAE loss of one batch (module docstring) and its parts ``rec``, ``kl``, ``ce`` (detached).

    ``model`` is called once, ``model(inputs, eps) -> (x_rec, mu, logvar)``, on the batch and (when
    ``ce_factor > 0``) its masked copy stacked behind it; ``eps`` comes from ``generator`` (CPU).
    ``flare_weight`` > 0 weighs each pixel's error by :func:`flare_weights` of the unmasked image.
    """
    b = x.shape[0]
    inputs = x
    if ce_factor > 0:
        inputs = torch.cat([x, context_mask(x, generator, max_squares, max_fraction)])
    net = model.module if hasattr(model, "module") else model  # DDP wraps the CeVAE
    eps = torch.randn(inputs.shape[0], net.z_dim, generator=generator).to(x.device)
    x_rec, mu, logvar = model(inputs, eps)
    weights = flare_weights(x, flare_weight) if flare_weight > 0 else None  # from model space, before scaling
    # errors in standardised units (divided by the residual std), so β weighs the KL against errors of order 1
    x_rec, x = x_rec / net.scale, x / net.scale
    rec = reconstruction_loss(x_rec[:b], x, rec_loss, weights)
    kl = kl_divergence(mu[:b], logvar[:b])
    loss = (1.0 - ce_factor) * (rec + beta * kl)
    parts = {"rec": rec.detach(), "kl": kl.detach()}
    if ce_factor > 0:
        ce = reconstruction_loss(x_rec[b:], x, rec_loss, weights)
        loss = loss + ce_factor * ce
        parts["ce"] = ce.detach()
    return loss, parts


class CevaeObjective:
    """The ceVAE (:class:`~flaresynth.models.cevae.CeVAE`, the paper's baseline): VAE + context-encoding loss
    (:func:`cevae_loss`), per-class latent Gaussians fitted at the end (what its sampler draws from).

    ``data`` is the loop's :func:`load_training_data` result (images at the model's
    resolution and their class labels), used at the end to fit the per-class latent Gaussians.
    """

    name = CEVAE_MODEL_TYPE

    def __init__(self, cfg, data: dict, classes):
        self.cfg = cfg
        self.data = data
        self.classes = tuple(classes)
        self.parts: dict[str, torch.Tensor] = {}

    def build_model(self) -> CeVAE:
        model = build_cevae(self.cfg, self.cfg.model.in_channels)
        if self.cfg.cevae.standardize:
            model.set_standardization(self.data["images"])
        return model

    def loss(self, model, x0: torch.Tensor, cond, generator: torch.Generator) -> torch.Tensor:
        e = self.cfg.cevae
        loss, self.parts = cevae_loss(model, x0, generator, e.ce_factor, e.beta, e.rec_loss, e.mask_max_squares,
                                      e.mask_max_fraction, e.flare_weight)
        return loss

    def meta(self) -> dict:
        return {"model_type": CEVAE_MODEL_TYPE}

    def fit_gaussians(self, model: CeVAE, device) -> ClassGaussians:
        """Per-class Gaussians (or mixtures, ``cevae.class_components``) of the training images' latent means under
        the model's current weights."""
        mu = encode_means(model, self.data["images"], device)
        return fit_class_gaussians(mu.numpy(), self.data["cond"].labels.numpy(), self.classes,
                                   self.cfg.cevae.class_ridge, self.cfg.cevae.class_components)

    def sample_grid(self, model: CeVAE, meta: dict, path: Path, step: int, device) -> None:
        """A per-class grid of decoded class-Gaussian draws (weights already swapped to EMA by the loop)."""
        gauss = self.fit_gaussians(model, device)
        per = self.cfg.sample.grid_per_class
        labels, z = [], []
        for k, c in enumerate(self.classes):
            if gauss.counts[k]:
                z.append(gauss.sample(k, range(per)))
                labels += [c] * per
        images = decode(model, torch.from_numpy(np.concatenate(z)).float(), device)
        save_grid(images.numpy(), labels, path, channels=meta.get("channels"),
                  title=f"step {step} | EMA | ceVAE class-Gaussian latents")

    def save_final(self, model: CeVAE, folder: Path, meta: dict) -> None:
        """Weights, config, per-class latent Gaussians and ``flaresynth.json`` into ``folder``."""
        model.save_pretrained(folder)
        gauss = self.fit_gaussians(model, next(model.parameters()).device)
        gauss.save(folder / LATENT_CLASSES_FILE)
        write_meta(folder, {
            **meta, "model_type": CEVAE_MODEL_TYPE, "cevae": model.describe(), "ema_weights": True,
            "latent_classes": {**gauss.summary(), "file": LATENT_CLASSES_FILE,
                               "fit": "latent means of the train split at the model resolution, final EMA weights"},
        })


def _open_for_refit(run: str | Path, data: str | Path, kind: str, why: str) -> tuple[Run, object, RunConfig]:
    """(opened run, dataset, config) of a run folder to refit after training: a run folder of ``kind`` with its
    config.yaml, and ``data`` its own dataset (by data hash); else one line naming the file (``why`` after a wrong
    kind)."""
    folder = Path(run)
    if is_shipped_name(str(run)) or not (folder / "config.yaml").is_file():
        raise FlaresynthError(f"{run}: not a run folder with its config.yaml (a shipped run is refitted in a copy)")
    model = open_run(folder, "cpu")
    if model.kind != kind:
        raise FlaresynthError(f"{folder / MODEL_DIR / META_FILE}: model_type: {model.kind!r}, {why}")
    ds = open_dataset(data)
    if ds.manifest.get("data_hash") != model.meta.get("data_hash"):
        raise FlaresynthError(f"{ds.path / 'manifest.json'}: data_hash: not the dataset {folder} was trained on")
    return model, ds, load_config(folder / "config.yaml")


def refit_class_latents(run: str | Path, data: str | Path, components: int) -> ClassGaussians:
    """Refit a trained ceVAE run's per-class latent Gaussians as mixtures of up to ``components`` (its
    ``cevae.class_components``; 1: one Gaussian per class), without retraining.

    The training split of ``data`` (the run's dataset, checked by its data hash) is encoded with the run's EMA
    weights and fitted exactly as at the end of training; ``RUN/model/latent_classes.npz``, the model's
    ``flaresynth.json`` and ``RUN/config.yaml`` are rewritten, each atomically. Returns the new fit.
    """
    folder = Path(run)
    model, ds, cfg = _open_for_refit(run, data, CEVAE_MODEL_TYPE, "only a ceVAE run has class latents to refit")
    cfg.cevae.class_components = components
    validate(cfg, str(folder / "config.yaml"))
    gauss = CevaeObjective(cfg, load_training_data(ds, cfg), ds.classes).fit_gaussians(model.network, "cpu")
    gauss.save(model.folder / LATENT_CLASSES_FILE)
    # the fit's own summary replaces the old one (a refit to one Gaussian has no "components"); the weights it
    # encodes with are the saved ones (a shipped run's are float16), not training's last float32 EMA
    kept = {"file": model.meta.get("latent_classes", {}).get("file", LATENT_CLASSES_FILE),
            "fit": "latent means of the train split at the model resolution, the run's saved EMA weights (refitted)"}
    meta = {**model.meta, "config": cfg.to_dict(), "latent_classes": {**kept, **gauss.summary()}}
    write_meta(model.folder, meta)
    save_config(cfg, folder / "config.yaml")
    return gauss


def fit_autoencoder_noise(model: LatentAutoencoder, images: torch.Tensor, device="cpu") -> DecoderNoise:
    """The residual model (:mod:`flaresynth.models.decoder_noise`) of ``images`` (N, C, H, W) in [-1, 1] and their
    reconstructions by ``model`` (posterior mean, decoded)."""
    images = torch.as_tensor(np.asarray(images, dtype=np.float32))
    rec = decode_latents(model, encode_latents(model, images, device), device)
    return fit_decoder_noise(images.numpy(), rec.numpy())


def refit_decoder_noise(run: str | Path, data: str | Path) -> DecoderNoise:
    """Fit (again) a trained autoencoder run's residual model on the training split of ``data`` (the run's dataset,
    checked by its data hash), with the run's saved weights; ``RUN/model/decoder_noise.npz`` and the model's
    ``flaresynth.json`` are rewritten, each atomically. Returns the new fit."""
    model, ds, cfg = _open_for_refit(run, data, AUTOENCODER_MODEL_TYPE,
                                     "but a decoder noise model is fitted to an autoencoder run")
    noise = fit_autoencoder_noise(model.network, load_training_data(ds, cfg)["images"])
    noise.save(model.folder / DECODER_NOISE_FILE)
    write_meta(model.folder, {**model.meta, "decoder_noise": noise.summary()})
    return noise


def autoencoder_loss(model, x: torch.Tensor, generator: torch.Generator, kl_weight: float = 1e-6,
                     rec_loss: str = "l1", flare_weight: float = 0.0):
    """The autoencoder's loss of one batch and its parts ``rec``, ``kl`` (detached).

    Per image: reconstruction error summed over pixels (each weighted by 1 + flare_weight·((x + 1)/2)^4) plus
    kl_weight × the KL of the posterior summed over latent elements, divided by the image's pixel count (the LDM
    recipe's sum-over-elements balance, per pixel); averaged over the batch. ``model`` is called once,
    ``model(x, eps) -> (x_rec, mean, logvar)``, with ``eps`` from ``generator`` (CPU).
    """
    net = model.module if hasattr(model, "module") else model  # DDP wraps the LatentAutoencoder
    eps = torch.randn((len(x), *net.latent_shape), generator=generator).to(x.device)
    x_rec, mean, logvar = model(x, eps)
    diff = x_rec.float() - x.float()
    err = diff.abs() if rec_loss == "l1" else diff.pow(2)
    if flare_weight > 0:
        err = err * flare_weights(x, flare_weight)
    n_pixels = x[0].numel()
    rec = err.flatten(1).sum(1).mean() / n_pixels
    kl = (0.5 * (mean.float().pow(2) + logvar.float().exp() - 1.0 - logvar.float())).flatten(1).sum(1).mean() / n_pixels
    return rec + kl_weight * kl, {"rec": rec.detach(), "kl": kl.detach()}


def reconstruction_benchmark(model: LatentAutoencoder, ds, split: str | None = None, device="cpu") -> dict:
    """Flare-kernel fidelity (:func:`flaresynth.metrics.reconstruction.reconstruction_errors`) of an
    autoencoder's reconstructions (posterior mean, decoded) of a dataset split: ``split``, or the first non-empty
    one of :data:`RECONSTRUCTION_SPLITS`. Returns ``{"split", "per_class", "seconds"}``: ``per_class`` of 171 Å
    (else the first channel); on several channels also ``channel`` (its name) and ``per_channel`` (every channel's)."""
    t0 = time.perf_counter()
    if split is None:
        split = next((s for s in RECONSTRUCTION_SPLITS if len(ds.split_indices(s))), "train")
    idx = ds.split_indices(split)
    if not len(idx):
        raise FlaresynthError(f"{ds.path / 'labels.csv'}: split: no {split!r} rows to measure reconstructions on")
    transforms = _dataset_transforms(ds)
    real, rec = [], []
    for lo in range(0, len(idx), DATA_CHUNK):
        x = torch.from_numpy(resample(ds.images[idx[lo : lo + DATA_CHUNK]], transforms, model.sample_size))
        real.append(x.numpy())
        rec.append(decode_latents(model, encode_latents(model, x, device), device).numpy())
    real, rec, labels = np.concatenate(real), np.concatenate(rec), ds.label_index()[idx]
    names = list(ds.channels)
    per_channel = {ch: reconstruction_errors(real, rec, labels, tuple(ds.classes), transforms, channel=c)
                   for c, ch in enumerate(names)}
    main = main_channel(names)[1]
    out = {"split": split, "per_class": per_channel[main], "seconds": round(time.perf_counter() - t0, 2)}
    if len(names) > 1:
        out.update(channel=main, per_channel=per_channel)
    return out


class AutoencoderObjective:
    """The autoencoder of latent diffusion (:mod:`flaresynth.models.autoencoder`, config ``autoencoder``):
    L1 (+ flare weight) reconstruction + small KL (:func:`autoencoder_loss`).

    At the end it measures its reconstructions of the dataset's test split (:data:`RECONSTRUCTION_SPLITS`):
    peak-brightness and brightest-region area errors per class
    (:func:`flaresynth.metrics.reconstruction.reconstruction_errors`), stored in ``flaresynth.json`` and
    logged (:attr:`report`).
    """

    name = AUTOENCODER_MODEL_TYPE

    def __init__(self, cfg: RunConfig, data: dict, classes, ds=None):
        self.cfg = cfg
        self.data = data
        self.classes = tuple(classes)
        self.ds = ds
        self.parts: dict[str, torch.Tensor] = {}
        self.report: dict | None = None

    def build_model(self) -> LatentAutoencoder:
        return LatentAutoencoder(build_autoencoder(self.cfg.autoencoder, self.cfg.model.in_channels,
                                                   self.cfg.model.sample_size))

    def loss(self, model, x0: torch.Tensor, cond, generator: torch.Generator) -> torch.Tensor:
        a = self.cfg.autoencoder
        loss, self.parts = autoencoder_loss(model, x0, generator, a.kl_weight, a.rec_loss, a.flare_weight)
        return loss

    def meta(self) -> dict:
        return {"model_type": AUTOENCODER_MODEL_TYPE}

    def _reconstruct(self, model: LatentAutoencoder, images: torch.Tensor, device) -> torch.Tensor:
        return decode_latents(model, encode_latents(model, images, device), device)

    def sample_grid(self, model: LatentAutoencoder, meta: dict, path: Path, step: int, device) -> None:
        """Training images of each class (first rows) above their reconstructions (EMA weights)."""
        labels = self.data["cond"].labels.numpy()
        rows = np.concatenate([np.flatnonzero(labels == k)[: self.cfg.sample.grid_per_class]
                               for k in range(len(self.classes))])
        x = self.data["images"][torch.from_numpy(rows)].float()
        rec = self._reconstruct(model, x, device)
        names = [self.classes[int(k)] for k in labels[rows]]
        save_grid(np.concatenate([x.numpy(), rec.numpy()]), names + [f"{n} rec" for n in names], path,
                  channels=meta.get("channels"),
                  title=f"step {step} | EMA | autoencoder: originals, then reconstructions")

    def benchmark(self, model: LatentAutoencoder, device) -> dict:
        """:func:`reconstruction_benchmark` of the run's dataset."""
        return reconstruction_benchmark(model, self.ds, device=device)

    def save_final(self, model: LatentAutoencoder, folder: Path, meta: dict) -> None:
        """Weights, the decoder's residual model of the training rows (``decoder_noise.npz``), and
        ``flaresynth.json`` with the reconstruction benchmark (also logged by the loop)."""
        save_autoencoder(model, folder)
        device = next(model.parameters()).device
        noise = fit_autoencoder_noise(model, self.data["images"], device)
        noise.save(folder / DECODER_NOISE_FILE)
        extra = {}
        if self.ds is not None:
            self.report = {"reconstruction": self.benchmark(model, device)}
            extra = self.report
        write_meta(folder, {**meta, "model_type": AUTOENCODER_MODEL_TYPE, "autoencoder": model.describe(),
                            "ema_weights": True, "decoder_noise": noise.summary(), **extra})


class DistillObjective(DiffusionObjective):
    """One distillation stage (config ``distill``; :mod:`flaresynth.distill`): guidance or progressive
    distillation of a teacher run into a :class:`~flaresynth.models.student.GuidanceStudent`.

    ``loss`` draws, from the step's generator and in this order, the grid timesteps, the noise and the CFG
    weights; the teacher (frozen, its EMA weights) makes the target without gradients.
    """

    name = "student"

    def __init__(self, cfg: RunConfig, data: dict, classes):
        super().__init__(cfg, data, classes)
        d = cfg.distill
        teacher = open_run(d.teacher, "cpu")  # the frozen teacher, moved to the batch's device in target()
        self.teacher, self.teacher_meta = teacher.network, teacher.meta
        self.teacher.requires_grad_(False)
        teacher_is_student = "student" in self.teacher_meta
        if teacher_is_student != (d.stage == "progressive"):
            raise FlaresynthError(f"{d.teacher}: distill.teacher: a {d.stage} stage needs a "
                                  f"{'distilled student' if d.stage == 'progressive' else 'DDPM'} as its teacher")
        ddim_config = student_scheduler_config(self.scheduler.config)
        self.teacher_sched = ddim_scheduler(ddim_config, d.teacher_steps)
        if d.stage == "consistency":
            # trained on every point of the teacher's grid; samples on student_steps of them (LCMScheduler)
            self.sampler_config = consistency_scheduler_config(self.scheduler.config, d.teacher_steps)
            self.student_sched = make_sampler("lcm", self.sampler_config, d.student_steps)
            self.grid = self.teacher_sched.timesteps.clone()
        else:
            self.sampler_config = ddim_config
            self.student_sched = ddim_scheduler(ddim_config, d.student_steps)
            self.grid = self.student_sched.timesteps.clone()
        if d.stage == "trajectory":  # the teacher's paths at the points of self.grid
            self.paths = _read_trajectories(d.trajectories, ddim_config, d.student_steps)

    def build_model(self) -> torch.nn.Module:
        if self.cfg.distill.stage in ("guidance", "consistency", "trajectory"):
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
    def guided_teacher(self, z: torch.Tensor, t: torch.Tensor, cond: Condition, w: torch.Tensor) -> torch.Tensor:
        """The DDPM teacher's guided ε(z, c) + w·(ε(z, c) − ε(z, ∅)), both passes in one forward; w is 0 at
        timesteps above ``distill.guidance_t_max`` (the guidance interval the student learns to sample with)."""
        self.teacher.to(z.device).eval()
        t_max = self.cfg.distill.guidance_t_max
        if t_max is not None:
            w = torch.where(t <= t_max, w, torch.zeros_like(w))
        n = len(z)
        drop = torch.cat([torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)]).to(z.device)
        out = self.teacher(torch.cat([z, z]), torch.cat([t, t]), cond.twice(), drop)
        return guided_combine(out[:n], out[n:], w.view(-1, *([1] * (z.ndim - 1))))

    @torch.no_grad()
    def target(self, z: torch.Tensor, t: torch.Tensor, cond: Condition, w: torch.Tensor) -> torch.Tensor:
        """The ε the student should output at (z, t, c, w) (guidance and progressive stages)."""
        if self.cfg.distill.stage == "guidance":
            return self.guided_teacher(z, t, cond, w)
        self.teacher.to(z.device).eval()
        half = self.teacher_sched
        z1 = ddim_step(half, self.teacher(z, t, cond, w), t, z)
        t1 = previous_timestep(half, t)
        z2 = ddim_step(half, self.teacher(z1, t1, cond, w), t1, z1)
        return one_step_noise(self.student_sched, z, t, z2)

    def loss(self, model, x0: torch.Tensor, cond, g: torch.Generator) -> torch.Tensor:
        if self.cfg.distill.stage == "trajectory":
            return self.trajectory_loss(model, len(x0), x0.device, g)
        z, t, w = self.draw(x0, g)
        if self.cfg.distill.stage == "consistency":
            return self.consistency_loss(model, z, t, cond, w)
        target = self.target(z, t, cond, w)
        pred = model(z, t, cond, w)
        return torch.mean((pred.float() - target.float()) ** 2)

    def consistency_loss(self, model, z: torch.Tensor, t: torch.Tensor, cond: Condition,
                         w: torch.Tensor) -> torch.Tensor:
        """Consistency distillation (Song et al. 2023, Algorithm 2): f(z_t, t) should equal f(ẑ, t − T/N) with ẑ
        the teacher's guided DDIM step from z_t down the grid; f is :func:`~flaresynth.diffusion.consistency_function`
        and the target's f the student itself without gradients (θ⁻ = θ: Song & Dhariwal 2023, "Improved Techniques
        for Training Consistency Models"). Below the grid's lowest point the target is ẑ itself (c_skip(0) = 1).
        The distance is ``distill.consistency_loss``'s: by default the squared error in x₀ weighted by SNR_t, i.e.
        the ε-space MSE of the other stages (an ε parameterisation at t = 999 turns an ε error e into an x₀ error
        e/√ᾱ ≈ 150 e, which unweighted would drown every other timestep), but which leaves the highest-noise
        points, where a few-step sampler takes its first step, almost no weight (``distill.snr_floor`` γ bounds
        it from below: max(SNR_t, γ)); ``snr-plus-one`` gives them weight 1 (the v-space MSE); ``pseudo-huber``
        is per image √(‖Δ‖² + c²) − c, about ‖Δ‖ when large, so each image's gradient has about unit size whatever
        its timestep."""
        sched = self.student_sched
        with torch.no_grad():
            z_prev = ddim_step(self.teacher_sched, self.guided_teacher(z, t, cond, w), t, z)
            t_prev = previous_timestep(self.teacher_sched, t).clamp(min=0)
            target = consistency_function(sched, model(z_prev, t_prev, cond, w).float(), t_prev, z_prev)
        pred = consistency_function(sched, model(z, t, cond, w).float(), t, z)
        diff = pred - target.float()
        kind = self.cfg.distill.consistency_loss
        if kind == "pseudo-huber":
            c = 0.00054 * math.sqrt(diff[0].numel())  # Song & Dhariwal 2023, section 3.3
            return torch.mean(torch.sqrt(diff.flatten(1).pow(2).sum(1) + c * c) - c)
        weight = snr(sched, t) + 1.0 if kind == "snr-plus-one" else snr(sched, t).clamp(min=self.cfg.distill.snr_floor)
        return torch.mean(weight.view(-1, *([1] * (z.ndim - 1))) * diff ** 2)

    def trajectory_loss(self, model, n: int, dev, g: torch.Generator) -> torch.Tensor:
        """Regression on the teacher's paths (after Luhman & Luhman 2021, with the student's few steps): ``n``
        (path, grid point) pairs drawn from the step's generator; one student DDIM step from the path's state z_t
        should land on its state at the next grid point (its end below the lowest), i.e. output the ε of
        :func:`~flaresynth.diffusion.one_step_noise`. γ = ``distill.snr_floor`` > 0 weights the squared x₀ error by
        max(SNR_t, γ) (an ε error e at t is an x₀ error e/√SNR_t), more weight on the step from pure noise than
        the plain ε MSE of γ = 0 gives it; γ = 0.003 ended farther from the teacher's held-out paths than γ = 0
        (docs/latent_diffusion.md, "Session 42")."""
        p = self.paths
        i = torch.randint(0, len(p["states"]), (n,), generator=g)
        k = torch.randint(0, p["states"].shape[1] - 1, (n,), generator=g)
        z, z_next = p["states"][i, k].to(dev), p["states"][i, k + 1].to(dev)
        t = self.grid[k].to(dev)
        cond = Condition(p["labels"][i], p["log_flux"][i], None if p["embedding"] is None else p["embedding"][i])
        target = one_step_noise(self.student_sched, z, t, z_next)
        pred = model(z, t, cond.to(dev), p["guidance"][i].to(dev)).float()
        ratio = snr(self.student_sched, t)
        weight = ratio.clamp(min=self.cfg.distill.snr_floor) / ratio
        return torch.mean(weight.view(-1, *([1] * (z.ndim - 1))) * (pred - target.float()) ** 2)

    def meta(self) -> dict:
        d = self.cfg.distill
        return {"scheduler": self.sampler_config,
                "student": {"stage": d.stage, "steps": d.student_steps, "teacher_steps": d.teacher_steps,
                            "teacher": d.teacher, "teacher_id": self.teacher_meta.get("model_id"),
                            "guidance_range": [d.guidance_min, d.guidance_max],
                            **({"guidance_t_max": d.guidance_t_max} if d.guidance_t_max is not None else {}),
                            **({"consistency_loss": d.consistency_loss} if d.consistency_loss != "snr" else {}),
                            **({"snr_floor": d.snr_floor} if d.snr_floor else {})},
                **({"encoder_id": self.data["encoder_id"]} if "encoder_id" in self.data else {})}

    def save_final(self, raw_model, folder: Path, meta: dict) -> None:
        save_student(raw_model, folder)
        write_meta(folder, {**meta, "ema_weights": True, "conditioning": raw_model.conditioner.describe(),
                            "student": {**meta.get("student", {}), **raw_model.describe()}})
        self.student_sched.save_pretrained(folder / SCHEDULER_DIR)
        if "class_embedding_gaussians" in self.data:
            self.data["class_embedding_gaussians"].save(folder / EMBEDDING_CLASSES_FILE)


def _read_trajectories(path: str, ddim_config: dict, student_steps: int) -> dict:
    """A trajectory stage's teacher paths (:func:`flaresynth.distill.teacher_trajectories`), checked against the
    student's DDIM grid."""
    if not Path(path).is_file():
        raise FlaresynthError(f"{path}: missing (distill.trajectories: the teacher's paths a trajectory stage "
                              "trains on; `flaresynth distill --method trajectory` writes them)")
    paths = torch.load(path, weights_only=True)
    grid = [int(t) for t in ddim_scheduler(ddim_config, student_steps).timesteps]
    if [int(t) for t in paths["timesteps"]] != grid:
        raise FlaresynthError(f"{path}: timesteps: {paths['timesteps']}, but the student's {student_steps} DDIM steps "
                              f"are at {grid}")
    return paths


def make_objective(cfg: RunConfig, data: dict, classes, ds=None):
    """The objective of ``cfg.kind``: :class:`DiffusionObjective`, :class:`CevaeObjective`,
    :class:`AutoencoderObjective` (``ds``: the dataset its benchmark reads), or a distillation stage's
    :class:`DistillObjective`."""
    if cfg.kind == "cevae":
        return CevaeObjective(cfg, data, classes)
    if cfg.kind == "autoencoder":
        return AutoencoderObjective(cfg, data, classes, ds)
    if cfg.kind == "student":
        return DistillObjective(cfg, data, classes)
    return DiffusionObjective(cfg, data, classes)


# ------------------------------------------------------------------------------------------ checkpoints


def latest_checkpoint(out: Path) -> Path | None:
    """The checkpoint folder named by ``RUN/checkpoints/latest`` (``None`` if there is none)."""
    pointer = out / CHECKPOINTS / LATEST
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    path = out / CHECKPOINTS / name
    if not name or not path.is_dir():
        raise FlaresynthError(f"{pointer}: names {name!r}, which is not a checkpoint folder")
    return path


def read_checkpoint(path: Path) -> dict:
    """Load and verify a checkpoint (checksum first, so a damaged file is a clear error)."""
    meta_path, state_path = path / "meta.json", path / STATE_FILE
    if not meta_path.is_file() or not state_path.is_file():
        raise FlaresynthError(f"{path}: checkpoint incomplete (meta.json or {STATE_FILE} missing)")
    try:
        meta = read_json(meta_path)
    except (ValueError, OSError):
        raise FlaresynthError(f"{meta_path}: checkpoint corrupted (unreadable JSON)") from None
    if sha256_file(state_path) != meta.get("sha256"):
        raise FlaresynthError(f"{state_path}: checkpoint corrupted (SHA-256 differs from meta.json)")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure means the same thing to the user
        raise FlaresynthError(f"{state_path}: checkpoint corrupted ({type(exc).__name__})") from None
    return state


def write_checkpoint(out: Path, step: int, state: dict, keep: int) -> Path:
    """Write ``checkpoints/step-NNNNNN`` atomically, then point ``latest`` at it, then prune old ones."""
    root = out / CHECKPOINTS
    name = f"step-{step:07d}"
    target = root / name
    with atomic_dir(target, overwrite=True) as tmp:
        with atomic_file(tmp / STATE_FILE) as fh:
            torch.save(state, fh)
        write_json(tmp / "meta.json", {
            "step": step, "fingerprint": state["fingerprint"], "data_hash": state["data_hash"],
            "sha256": sha256_file(tmp / STATE_FILE), "bytes": (tmp / STATE_FILE).stat().st_size,
        })
    with atomic_file(root / LATEST, "w") as fh:
        fh.write(name + "\n")
    old = sorted(p for p in root.glob("step-*") if p.is_dir() and p.name != name)
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return target


def param_digest(module: torch.nn.Module) -> str:
    """SHA-256 over all parameters and buffers (name order): equal digests = identical weights."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ the loop


def train(
    data: str | Path,
    out: str | Path,
    config: RunConfig | str | Path | None = None,
    *,
    preset: str | None = None,
    max_steps: int | None = None,
    resume: bool = False,
    device: str | None = None,
    encoder=None,
    progress: bool = True,
    command: list[str] | None = None,
    deterministic: bool = False,
    allow_world_size_change: bool = False,
    autoencoder: str | Path | None = None,
    init_from: str | Path | None = None,
) -> Path:
    """Train (or continue) a run; returns the run folder.

    Parameters
    ----------
    data : dataset folder (``flaresynth dataset build``).
    out : run folder. Several machines (``accelerate launch --num_machines``) must see it on one shared
        filesystem: the main process writes it and every process reads the checkpoint it resumes from.
    config : a :class:`RunConfig`, a YAML path, or ``None`` (``preset``, else the run's own on resume, else demo).
    preset : name of a shipped preset (demo, paper, paper128, tiny).
    max_steps : stop after this many optimiser steps in total (default: ``train.steps``); the LR schedule
        still follows ``train.steps``, so ``--max-steps`` then ``--resume`` equals one uninterrupted run.
    resume : continue from ``RUN/checkpoints/latest``.
    device : ``cpu``, ``cuda`` or ``None`` (accelerate's choice: a GPU when visible).
    encoder : an image encoder object for ``discrete+embedding`` (overrides ``conditioning.encoder``).
    progress : show a progress bar (main process only).
    deterministic : deterministic GPU kernels, no TF32 (:func:`flaresynth.devices.use_deterministic_kernels`).
    allow_world_size_change : resume a checkpoint saved by another number of processes (the batch, or with
        ``train.global_batch`` the per-process random streams, then differ from the interrupted run's).
    autoencoder : a latent config's autoencoder run (replaces ``latent.autoencoder``).
    init_from : a trained DDPM run whose EMA weights start this one (replaces ``train.init_from``).
    """
    out = Path(out)
    t_start = time.time()
    if max_steps is not None and (int(max_steps) != max_steps or max_steps < 1):
        raise FlaresynthError(f"--max-steps {max_steps!r}: expected a whole number >= 1")
    if device not in (None, "cpu", "cuda"):
        raise FlaresynthError(f"--device {device!r}: expected cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise FlaresynthError("--device cuda: no CUDA GPU is visible")
    if deterministic:
        use_deterministic_kernels()

    # ---- processes first, so that the main one can decide about the run folder for all of them
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        # accelerate keeps its settings in a process-wide singleton; a second train() in the same process
        # (tests, notebooks, experiments) may ask for other ones, so start from a clean state
        AcceleratorState._reset_state(reset_partial_state=True)
    # cpu=True also when no GPU is visible: accelerate then runs several processes (torchrun, or
    # `accelerate launch --multi_gpu` on a CPU machine) as MULTI_CPU with the gloo backend instead of
    # falling back to independent single processes
    use_cpu = device == "cpu" or (device is None and not torch.cuda.is_available())
    procs = PartialState(cpu=use_cpu)
    rank, world, is_main = procs.process_index, procs.num_processes, procs.is_main_process

    # ---- config, dataset and the checkpoint to resume: the main process resolves them (on node-local disks
    # the other nodes would see no checkpoint and start at step 0); every process checks it reads the same
    ds = _on_every_process(procs, lambda: open_dataset(data))
    plan = _on_main_process(procs, lambda: _plan_session(out, ds, config, preset, resume, autoencoder, init_from))
    cfg, ckpt_name = plan["config"], plan["checkpoint"]
    data_hash = ds.manifest.get("data_hash", "")
    t = cfg.train
    batch_size = per_process_batch(t, world)
    global_batch = batch_size * world  # images per micro-step, all processes together
    state = None
    if ckpt_name is not None:
        ckpt_path = out / CHECKPOINTS / ckpt_name
        state = _on_every_process(procs, lambda: _read_named_checkpoint(ckpt_path, plan["step"], rank))
        if state.get("fingerprint") != cfg.fingerprint():
            raise FlaresynthError(
                f"{ckpt_path}: checkpoint from another config (fingerprint {state.get('fingerprint')} vs "
                f"{cfg.fingerprint()}); resume with the run's own config.yaml"
            )
        if state.get("data_hash") != data_hash:
            raise FlaresynthError(f"{ckpt_path}: checkpoint trained on another dataset (data_hash differs from {ds.path})")
        saved_world = int(state.get("world_size", 1))
        if saved_world != world and not allow_world_size_change:
            what = ("the per-process random streams" if t.global_batch is not None
                    else f"the global batch ({t.batch_size * saved_world} -> {global_batch}) and the data order")
            raise FlaresynthError(
                f"{ckpt_path}: saved by {saved_world} process(es), this launch has {world}: {what} would change; "
                "launch as many processes, or pass --allow-world-size-change"
            )

    # a first session started from another run's weights: checked before anything is written
    init_meta, init_id = None, None
    if state is None and t.init_from is not None:
        init_meta = _on_main_process(procs, lambda: initial_weights(cfg, ds.classes, plan["latent"]))
        init_id = init_meta.get("model_id")
    elif state is not None:
        init_id = state.get("init_from_id")

    # ---- accelerator: devices, DDP, mixed precision, gradient accumulation (on the state made above)
    accelerator = Accelerator(cpu=use_cpu, gradient_accumulation_steps=t.grad_accum,
                              mixed_precision=t.mixed_precision)
    if is_main:
        print(f"train {cfg.name}: global batch {global_batch * t.grad_accum} images per optimiser step = "
              f"{batch_size} per process x {world} process(es) x {t.grad_accum} accumulation step(s); "
              f"lr {t.lr:g} (not scaled with the batch)", file=sys.stderr)

    # ---- data: the main process writes the training split at the model's resolution into RUN/cache (and runs
    # the frozen encoder, once, batched on its GPU); every process memory-maps it, so one copy per machine sits
    # in the page cache. A latent run caches the scaled latents of its autoencoder instead; the scale is the
    # config's, else the one the run measured in its first session (kept in its checkpoints), else measured now
    latent = plan["latent"]
    ae_folder = Path(latent["folder"]) if latent is not None else None
    scaling = cfg.latent.scaling_factor
    if scaling is None and state is not None:
        scaling = state.get("latent_scaling_factor")
    if scaling is None and init_meta is not None and init_meta.get("latent"):
        scaling = init_meta["latent"]["scaling_factor"]  # the latents scaled as the starting weights learnt them
    if state is not None and "encoder_id" in state and _conditioning_kind(cfg) == "discrete+embedding":
        # before the cache is rewritten: the fingerprint names the encoder by its spec (cevae:demo:cevae), which may
        # now load other weights, whose embeddings would replace the cached ones for nothing. Loaded once, on the
        # device the cache is embedded on, and handed on to write_training_cache
        encoder, now = _training_encoder(cfg, encoder, accelerator.device)
        if now != state["encoder_id"]:
            raise FlaresynthError(
                f"{out / CHECKPOINTS / ckpt_name}: trained on the embeddings of encoder {state['encoder_id']}, "
                f"{cfg.conditioning.encoder} is now {now}; resume with the encoder it was trained with"
            )
    fresh = is_main and not out.exists()
    cache = out / CACHE
    try:
        scaling = _on_main_process(procs, lambda: write_training_cache(ds, cfg, cache, encoder, accelerator.device,
                                                                       ae_folder, scaling))
        data_info = _on_every_process(procs, lambda: load_training_data(ds, cfg, cache=cache))
    except BaseException:
        if fresh:  # nothing of a run that never started stays on disk
            shutil.rmtree(out, ignore_errors=True)
        raise
    images, cond_all = data_info["images"], data_info["cond"]
    n_train = images.shape[0]
    row_p = class_balance_weights(cond_all.labels.numpy(), t.class_balance)
    classes = list(ds.classes)

    # ---- objective, model, optimiser, LR schedule (same init on every rank)
    objective = make_objective(cfg, data_info, classes, ds)
    torch.manual_seed(t.seed)
    model = objective.build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=(t.adam_beta1, t.adam_beta2),
                                  weight_decay=t.weight_decay)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(t))
    n_params = count_parameters(model)
    start_step = 0
    if init_meta is not None:  # every process loads them: the same start on every rank, as a seeded init is
        model.load_state_dict(open_run(t.init_from, "cpu").network.state_dict())
    if state is not None:
        model.load_state_dict(state["model"])
        lr_sched.load_state_dict(state["lr_scheduler"])
        start_step = int(state["step"])
        # no generator state to restore: every random draw of step s comes from generators seeded by
        # (seed, s, rank) (step_generator, dropout_seed), whatever the device count of either session

    # the LR scheduler is stepped by us, once per optimiser step, so it is not handed to accelerate
    # (a prepared scheduler steps once per process)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model = accelerator.unwrap_model(model)
    dev = accelerator.device
    if state is not None:
        # after prepare: the moments follow their parameters to the device while Adam's step counters stay
        # on the CPU (loaded before, they would move to the GPU and AdamW would read each back every step)
        optimizer.load_state_dict(state["optimizer"])
        if state.get("grad_scaler") and accelerator.scaler is not None:
            accelerator.scaler.load_state_dict(state["grad_scaler"])

    # ---- EMA of the weights: main process only (DDP keeps the weights identical on every rank)
    ema = None
    if is_main:
        ema = EMAModel(raw_model.parameters(), decay=t.ema_decay, use_ema_warmup=t.ema_warmup,
                       power=t.ema_power, update_after_step=t.ema_update_after_step)
        if state is not None:
            ema.load_state_dict(state["ema"])
        ema.to(dev)
    state = None
    if latent is not None and is_main and t.sample_every:
        objective.autoencoder = load_autoencoder(ae_folder, dev)  # the training grids decode with it

    stop = t.steps if max_steps is None else int(max_steps)
    log_path = out / "log.jsonl"
    if is_main:  # the run folder appears once data, model and checkpoint have loaded without error
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        _truncate_log(log_path, start_step)
        (out / "samples").mkdir(exist_ok=True)
        if latent is not None and ae_folder != out / AUTOENCODER_DIR:
            # the run's own copy: `flaresynth sample --run RUN` and a resume need nothing outside RUN
            with atomic_dir(out / AUTOENCODER_DIR, overwrite=True) as tmp:
                shutil.copytree(ae_folder, tmp, dirs_exist_ok=True)
            print(f"train {cfg.name}: latent diffusion in the latents of {ae_folder} (copied to "
                  f"{out / AUTOENCODER_DIR}), scaling factor {scaling:.5g}", file=sys.stderr)
    meta_common = {
        "classes": classes, "scheme": ds.scheme, "transform": ds.manifest["transform"], "channels": ds.channels,
        "in_channels": cfg.model.in_channels, "sample_size": cfg.model.sample_size,
        "dataset_image_size": int(ds.images.shape[-1]), "data_hash": data_hash,
        **objective.meta(),
        "train_counts": data_info["train_counts"], "class_log_flux": data_info["class_log_flux"],
        "class_log_flux_quantiles": data_info["class_log_flux_quantiles"],
        "config": cfg.to_dict(), "fingerprint": cfg.fingerprint(), "parameters": n_params,
    }
    if t.init_from is not None:
        meta_common["init_from"] = {"run": t.init_from, "model_id": init_id}
    if latent is not None:
        meta_common["latent"] = latent_record(latent["meta"], scaling)
    written: list[str] = []
    rows_seen: list[list[int]] | None = [] if os.environ.get(DEBUG_RANK_DIR_ENV) else None

    provenance = out / "provenance.json"  # the sessions that trained this run before this one (resume)
    earlier_sessions = read_json(provenance).get("sessions", []) if is_main and provenance.is_file() else []

    def save_checkpoint(step: int) -> None:
        if not is_main:
            return
        ckpt = {
            "step": step, "fingerprint": cfg.fingerprint(), "data_hash": data_hash, "world_size": world,
            "config": cfg.to_dict(), "model": raw_model.state_dict(), "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(), "lr_scheduler": lr_sched.state_dict(),
            # fp16 loss scaling must resume where it was, or the first steps after a resume are skipped
            "grad_scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
            "latent_scaling_factor": scaling, "encoder_id": data_info.get("encoder_id"), "init_from_id": init_id,
        }
        written.append(write_checkpoint(out, step, ckpt, t.keep_checkpoints).name)

    bar = None
    if progress and is_main:
        bar = ProgressBar(stop, f"train {cfg.name}", unit="step", initial=min(start_step, stop))

    # ---- the loop
    model.train()
    loss_sum, loss_n, t_window, step = torch.zeros((), device=dev), 0, time.perf_counter(), start_step
    parts_sum: dict[str, torch.Tensor] = {}  # the objective's loss parts (ceVAE: rec, kl, ce), for the log
    for step in range(start_step + 1, stop + 1):
        for micro in range(t.grad_accum):
            m = (step - 1) * t.grad_accum + micro  # global micro-step number: the seed of everything below
            rows = batch_indices(n_train, global_batch, m, t.seed, row_p)[rank * batch_size : (rank + 1) * batch_size]
            if rows_seen is not None:
                rows_seen.append(rows.tolist())
            rows_t = torch.from_numpy(rows)
            x0 = images[rows_t].to(dev)
            cond = cond_all.index(rows_t).to(dev)
            g = step_generator(t.seed, m, rank)
            torch.manual_seed(dropout_seed(t.seed, m, rank))  # the model's own draws (dropout), CPU and GPUs
            with accelerator.accumulate(model):
                loss = objective.loss(model, x0, cond, g)
                accelerator.backward(loss)
                if accelerator.sync_gradients and t.grad_clip > 0:
                    accelerator.clip_grad_norm_(model.parameters(), t.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach() / t.grad_accum
            for k, v in objective.parts.items():
                parts_sum[k] = parts_sum.get(k, torch.zeros((), device=dev)) + v / t.grad_accum
        lr_used = optimizer.param_groups[0]["lr"]
        # fp16: a step the GradScaler skipped (inf/NaN gradients) changed no weight, so it moves neither the
        # LR schedule nor the EMA (the same answer on every rank: the gradients were all-reduced first)
        if not accelerator.optimizer_step_was_skipped:
            lr_sched.step()
            if ema is not None:
                ema.step(raw_model.parameters())
        loss_n += 1

        if step % t.log_every == 0 or step == stop:
            mean_loss = accelerator.reduce(loss_sum / loss_n, reduction="mean").item()  # a collective: all ranks
            parts = {}
            if parts_sum:  # same keys on every rank: one more collective
                names = sorted(parts_sum)
                values = accelerator.reduce(torch.stack([parts_sum[k] for k in names]) / loss_n, reduction="mean")
                parts = {f"loss_{k}": round(float(v), 6) for k, v in zip(names, values.tolist(), strict=True)}
            elapsed = time.perf_counter() - t_window
            ips = loss_n * global_batch * t.grad_accum / max(elapsed, 1e-9)
            if is_main:
                entry = {"step": step, "loss": mean_loss, **parts, "images_per_s": round(ips, 2),
                         "lr": lr_used, "seconds_per_step": round(elapsed / loss_n, 4),
                         "world_size": world, "time": round(time.time() - t_start, 2)}
                with open(log_path, "a") as fh:
                    fh.write(json.dumps(entry) + "\n")
                if bar is not None:
                    bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{ips:.1f}")
            loss_sum, loss_n, t_window = torch.zeros((), device=dev), 0, time.perf_counter()
            parts_sum = {}
        if bar is not None:
            bar.update(1)
        t_extra = time.perf_counter()
        if t.checkpoint_every and step % t.checkpoint_every == 0 and step != stop:
            save_checkpoint(step)
            if is_main:  # the session's record so far: a run stopped here and resumed keeps this session's command
                _write_provenance(out, cfg, data, data_hash, ds, start_step, step, world, accelerator, n_params,
                                  t_start, command, global_batch, batch_size, earlier_sessions)
        if is_main and t.sample_every and step % t.sample_every == 0:
            grid_path = out / "samples" / f"step-{step:07d}.png"
            _with_ema(raw_model, ema, lambda p=grid_path, s=step: objective.sample_grid(raw_model, meta_common, p, s, dev))
        t_window += time.perf_counter() - t_extra  # images/s counts training only

    # ---- the end: a checkpoint to resume from, and the EMA weights as a plain diffusers model
    if bar is not None:
        bar.close()
    final_step = max(step, start_step)
    if final_step > start_step:
        save_checkpoint(final_step)
    if is_main:
        tag = cfg.conditioning.kind if cfg.kind == "ddpm" else cfg.kind
        _save_final_model(objective, raw_model, ema, out, {**meta_common, "step": final_step,
                                                           "model_id": f"{out.name}-{tag}-{cfg.fingerprint()}@{final_step}"})
        _write_provenance(out, cfg, data, data_hash, ds, start_step, final_step, world, accelerator, n_params,
                          t_start, command, global_batch, batch_size, earlier_sessions)
        report = getattr(objective, "report", None)
        if report:  # the objective's end-of-training measurements (the autoencoder's reconstruction benchmark)
            with open(log_path, "a") as fh:
                fh.write(json.dumps({"step": final_step, **report}) + "\n")
            if "reconstruction" in report:
                rec = report["reconstruction"]
                for ch, errors in (rec.get("per_channel") or {"": rec["per_class"]}).items():
                    print(f"train {cfg.name}: reconstruction of the {rec['split']} split (flare kernels"
                          f"{', ' + ch if ch else ''})\n{format_table(errors)}", file=sys.stderr)
    _debug_rank_file(raw_model, optimizer, rank, world, final_step, written, rows_seen)
    accelerator.wait_for_everyone()
    if is_main:  # every process is past its last read of the cache
        shutil.rmtree(cache, ignore_errors=True)
    accelerator.end_training()
    return out


def _on_main_process(procs, fn):
    """Run ``fn`` on the main process only and give its result to every process.

    A :class:`FlaresynthError` there is raised on every process with the same message, so none is left
    waiting for the others. The result must pickle (it is broadcast).
    """
    box = [None]
    if procs.is_main_process:
        try:
            box = [(fn(), None)]
        except FlaresynthError as exc:
            box = [(None, str(exc))]
    broadcast_object_list(box)  # a collective: the other processes wait here for the main one
    value, error = box[0]
    if error is not None:
        raise FlaresynthError(error)
    return value


def _on_every_process(procs, fn):
    """Run ``fn`` on every process; if it raises :class:`FlaresynthError` on any, raise it on all of them."""
    try:
        value, error = fn(), None
    except FlaresynthError as exc:
        value, error = None, str(exc)
    errors = [e for e in gather_object([error]) if e is not None]  # a collective: every process answers
    if errors:
        raise FlaresynthError(error or errors[0])
    return value


def _plan_session(out: Path, ds, config, preset, resume: bool, autoencoder=None, init_from=None) -> dict:
    """The main process's view of the run folder: the config, the checkpoint to resume (name, step), and a
    latent run's autoencoder (model folder and metadata)."""
    cfg = resolve_for_dataset(resolve_config(out, config, preset, resume, autoencoder, init_from), ds, out)
    ckpt_path = None
    if resume:
        if (out / "config.yaml").is_file():
            saved = resolve_for_dataset(load_config(out / "config.yaml"), ds, out)
            if saved.fingerprint() != cfg.fingerprint():
                raise FlaresynthError(
                    f"{out / 'config.yaml'}: the run was made with another config (fingerprint {saved.fingerprint()} "
                    f"vs {cfg.fingerprint()}); resume without --config/--preset or use another --out"
                )
        ckpt_path = latest_checkpoint(out)
        if ckpt_path is None and not (out / "config.yaml").is_file():
            raise FlaresynthError(f"{out}: no run to resume (no config.yaml, no checkpoints/latest)")
        # a run stopped before its first checkpoint starts again from step 0
    elif (out / "config.yaml").exists() or (out / CHECKPOINTS).exists():
        raise FlaresynthError(f"{out}: already holds a run; pass --resume to continue it, or choose another --out")
    step = None
    if ckpt_path is not None:
        try:
            step = int(read_json(ckpt_path / "meta.json")["step"])
        except (OSError, ValueError, KeyError, TypeError):
            step = None  # read_checkpoint, on every process, says what is wrong with it
    latent = None
    if cfg.latent.autoencoder is not None:
        folder, meta = autoencoder_meta(latent_source(cfg, out))
        latent = {"folder": str(folder), "meta": meta}
    return {"config": cfg, "checkpoint": None if ckpt_path is None else ckpt_path.name, "step": step, "latent": latent}


def _read_named_checkpoint(path: Path, step: int | None, rank: int) -> dict:
    """Read the checkpoint the main process chose; a process that cannot, or finds another step, says so."""
    where = f"process {rank} on {platform.node()}"
    if not path.is_dir():
        raise FlaresynthError(f"{path}: no such checkpoint as seen by {where} (the main process resumes from it); "
                              "RUN must be on a filesystem every machine shares")
    state = read_checkpoint(path)
    if step is not None and int(state["step"]) != step:
        raise FlaresynthError(f"{path}: step {int(state['step'])} as read by {where}, {step} for the main process; "
                              "RUN must be on a filesystem every machine shares")
    return state


# ------------------------------------------------------------------------------------------ helpers


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines after ``step`` (steps an interrupted run did after its last checkpoint)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
    with atomic_file(path, "w") as fh:
        fh.write("".join(ln + "\n" for ln in keep))


def _with_ema(raw_model, ema, fn):
    """Run ``fn()`` with the EMA weights swapped into ``raw_model``, then put the live weights back."""
    ema.store(raw_model.parameters())
    ema.copy_to(raw_model.parameters())
    was_training = raw_model.training
    raw_model.eval()
    try:
        return fn()
    finally:
        ema.restore(raw_model.parameters())
        raw_model.train(was_training)


def _sample_grid(raw_model, cfg: RunConfig, meta: dict, path: Path, step: int, dev, autoencoder=None) -> None:
    """A DDPM per-class grid (fast sampler of ``sample.grid_sampler``; a latent run's ``autoencoder`` decodes);
    the caller swaps in the EMA weights."""
    run = path.parent.parent
    tm = Run(path=run, folder=run / MODEL_DIR, kind="ddpm", meta={**meta, "conditioning": raw_model.conditioner.describe()},
             network=raw_model, device=torch.device(dev), autoencoder=autoencoder)
    table = build_requests(tm, per_class=cfg.sample.grid_per_class, seed=0)
    imgs = generate(tm, table, cfg.sample.grid_sampler, cfg.sample.grid_steps, cfg.sample.guidance)
    save_grid(imgs, list(pd.Series(table["label"]).astype(str)), path, channels=meta.get("channels"),
              title=f"step {step} | EMA | {cfg.sample.grid_sampler} {cfg.sample.grid_steps} | w={cfg.sample.guidance:g}")


def _save_final_model(objective, raw_model, ema, out: Path, meta: dict) -> None:
    """``RUN/model/`` from the EMA weights, written by the objective into a folder renamed when complete."""

    def run():
        with atomic_dir(out / MODEL_DIR, overwrite=True) as tmp:
            objective.save_final(raw_model, tmp, meta)

    _with_ema(raw_model, ema, run)


def _write_provenance(out, cfg, data, data_hash, ds, start_step, final_step, world, accelerator, n_params, t_start,
                      command, global_batch, batch_size, earlier) -> None:
    """``RUN/provenance.json``: the sessions before this one (``earlier``, read when it started) and this session's
    record (command, steps, seconds) up to ``final_step``; written at each checkpoint and at the end."""
    path = out / "provenance.json"
    sessions = list(earlier) + [{
        "command": command if command is not None else [Path(sys.argv[0]).name, *sys.argv[1:]],
        "from_step": start_step, "to_step": final_step, "world_size": world, "batch_per_process": batch_size,
        "device": str(accelerator.device), "mixed_precision": accelerator.mixed_precision,
        "seconds": round(time.time() - t_start, 2),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
    }]
    write_json(path, {
        "stage": "train",
        "run": str(out),
        "data": str(Path(data).resolve()),
        "data_hash": data_hash,
        "dataset_image_size": int(ds.images.shape[-1]),
        "n_train": int(len(ds.split_indices("train"))),
        "config": cfg.to_dict(),
        "fingerprint": cfg.fingerprint(),
        "steps": final_step,
        "planned_steps": cfg.train.steps,
        "complete": final_step >= cfg.train.steps,
        "world_size": world,
        "images_per_step": global_batch * cfg.train.grad_accum,
        "parameters": n_params,
        "sessions": sessions,
        "versions": {
            "flaresynth": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "accelerate": accelerate.__version__, "python": platform.python_version(),
        },
    })


def _debug_rank_file(raw_model, optimizer, rank: int, world: int, step: int, written: list[str], rows_seen) -> None:
    folder = os.environ.get(DEBUG_RANK_DIR_ENV)
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    write_json(Path(folder) / f"rank{rank}.json", {
        "rank": rank, "world_size": world, "step": step, "param_digest": param_digest(raw_model),
        "checkpoints_written": written, "pid": os.getpid(), "batch_rows": rows_seen,
        "optimizer_state_devices": _state_devices(optimizer),
    })


def _state_devices(optimizer) -> dict[str, list[str]]:
    """Device types holding each kind of optimiser state (AdamW: exp_avg, exp_avg_sq, step)."""
    kinds: dict[str, set[str]] = {}
    for per_param in optimizer.state_dict()["state"].values():
        for k, v in per_param.items():
            if torch.is_tensor(v):
                kinds.setdefault(k, set()).add(v.device.type)
    return {k: sorted(v) for k, v in sorted(kinds.items())}


__all__ = [
    "train",
    "DiffusionObjective",
    "CevaeObjective",
    "refit_class_latents",
    "DistillObjective",
    "cevae_loss",
    "AutoencoderObjective",
    "autoencoder_loss",
    "reconstruction_benchmark",
    "fit_autoencoder_noise",
    "refit_decoder_noise",
    "latent_source",
    "latent_record",
    "context_mask",
    "kl_divergence",
    "reconstruction_loss",
    "make_objective",
    "resolve_config",
    "load_training_data",
    "write_training_cache",
    "per_process_batch",
    "dropout_seed",
    "batch_indices",
    "class_balance_weights",
    "step_generator",
    "latest_checkpoint",
    "read_checkpoint",
    "write_checkpoint",
    "param_digest",
]
