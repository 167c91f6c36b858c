"""Training the conditional DDPM and the ceVAE: one loop for a CPU, one GPU, and ``accelerate launch`` (DDP).

Run it::

    flaresynth train --data DS --out RUN --preset demo                # CPU or one GPU
    flaresynth train --data DS --out RUN --preset demo --max-steps 500
    flaresynth train --data DS --out RUN --resume                     # continue from the latest checkpoint
    flaresynth train --data DS --out RUN --preset cevae-demo          # the ceVAE baseline (config kind: cevae)
    accelerate launch --num_processes 2 -m flaresynth train --data DS --out RUN --preset paper

The loop (:func:`train`) reads top to bottom: config -> accelerator -> data in RAM -> objective, model, EMA,
optimiser -> resume -> for each step: batch, loss, backward, clip, step, EMA, log, checkpoint, grid -> final
model. accelerate handles devices, DDP, mixed precision and gradient accumulation; nothing else changes.

What is trained is an *objective* (:func:`make_objective`, config ``kind``): :class:`DiffusionObjective`
(the DDPM's noise-prediction loss) or :class:`flaresynth.models.cevae.CevaeObjective` (the ceVAE's VAE +
context-encoding loss). An objective builds the model, computes a batch's loss from a per-step random
generator, and writes the training grids and the final model folder; the loop around it is shared.

Reproducibility: the batch of step s is a slice of a per-epoch permutation seeded by (seed, epoch), and the
random numbers of step s (DDPM: noise, timesteps and condition dropout; ceVAE: reparameterisation noise and
context masks) come from a generator seeded by (seed, s, micro-step, rank).
Nothing depends on how many steps ran before in this process, so on a CPU a run interrupted at a checkpoint and
resumed reproduces the uninterrupted run's weights bit for bit.

The run folder::

    RUN/
      config.yaml          the resolved config (in_channels filled in from the dataset)
      log.jsonl            one line per logged step: step, loss, images_per_s, lr, seconds
                           (+ the loss parts of the ceVAE: loss_rec, loss_kl, loss_ce)
      provenance.json      command, config, steps, data hash, world size, versions, timings
      checkpoints/
        step-000500/       state.pt (model, EMA, optimiser, LR scheduler, step, RNG states) + meta.json
        latest             name of the newest complete checkpoint (updated atomically, after the folder)
      samples/step-*.png   periodic class grids from the EMA weights
      model/               the final EMA weights: UNet2DModel.save_pretrained + flaresynth.json
                           (+ conditioner.safetensors when the conditioning is not inside the U-Net,
                           + embedding_classes.npz: per-class Gaussians of the image embeddings);
                           for a ceVAE: config.json + model.safetensors + flaresynth.json
                           + latent_classes.npz (per-class Gaussians of the training latents)

A checkpoint folder is written under a temporary name, renamed when complete, and only then named in
``latest``; ``meta.json`` holds the SHA-256 of ``state.pt``, so a damaged file is detected on resume.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from flaresynth import __version__
from flaresynth.config import RunConfig, load_config, load_preset, save_config
from flaresynth.diffusion import diffusion_loss, drop_mask, make_scheduler, sample_timesteps
from flaresynth.errors import FlaresynthError
from flaresynth.io import atomic_dir, atomic_file, read_json, sha256_file, write_json
from flaresynth.progress import ProgressBar
from flaresynth.transforms import resample

CHECKPOINTS = "checkpoints"
LATEST = "latest"
STATE_FILE = "state.pt"
#: Per-class Gaussians of a discrete+embedding run's training embeddings (``embedding_source: class-gaussian``).
EMBEDDING_CLASSES_FILE = "embedding_classes.npz"
#: Set to a folder to make every rank write rank<r>.json there (parameter digest, checkpoints written).
DEBUG_RANK_DIR_ENV = "FLARESYNTH_DEBUG_RANK_DIR"


# ------------------------------------------------------------------------------------------ config


def resolve_config(out: Path, config: RunConfig | str | Path | None, preset: str | None, resume: bool) -> RunConfig:
    """The config of this invocation: explicit config, preset, the run's own (on resume), or ``demo``."""
    if config is not None and preset is not None:
        raise FlaresynthError("give --config or --preset, not both")
    saved = out / "config.yaml"
    if isinstance(config, RunConfig):
        return config
    if config is not None:
        return load_config(config)
    if preset is not None:
        return load_preset(preset)
    if resume and saved.is_file():
        return load_config(saved)
    return load_preset("demo")


def resolve_for_dataset(cfg: RunConfig, ds) -> RunConfig:
    """Fill the dataset-dependent fields (``model.in_channels``) of a copy of ``cfg``."""
    d = cfg.to_dict()
    n_channels = int(ds.images.shape[1])
    if d["model"]["in_channels"] is None:
        d["model"]["in_channels"] = n_channels
    elif d["model"]["in_channels"] != n_channels:
        raise FlaresynthError(
            f"model.in_channels: {d['model']['in_channels']}, but the dataset {ds.path} has {n_channels} channel(s)"
        )
    return RunConfig.from_dict(d, source="config")


# ------------------------------------------------------------------------------------------ data


def channel_transforms(ds) -> list:
    """One intensity transform per dataset channel (manifest ``transform``: one object, or a list)."""
    from flaresynth.transforms import IntensityTransform

    t = ds.manifest["transform"]
    items = t if isinstance(t, list) else [t] * int(ds.images.shape[1])
    return [IntensityTransform.from_dict(d, source=str(ds.path / "manifest.json")) for d in items]


def load_training_data(ds, cfg: RunConfig, encoder=None) -> dict:
    """The whole training split in RAM at the model's resolution, with its conditions.

    Returns a dict with ``images`` (float32 tensor N×C×S×S), ``cond``
    (:class:`~flaresynth.models.conditioning.Condition`), ``train_counts``, ``class_log_flux`` and, for
    ``discrete+embedding``, ``embed_dim``, ``class_mean_embedding`` and ``class_embedding_gaussians``
    (:class:`~flaresynth.models.cevae.ClassGaussians`). A ceVAE run uses only images and labels.
    """
    from flaresynth.models.cevae import fit_class_gaussians
    from flaresynth.models.conditioning import Condition, as_encoder, embed_all, load_encoder

    idx = ds.split_indices("train")
    if len(idx) == 0:
        raise FlaresynthError(f"{ds.path / 'labels.csv'}: split: no 'train' rows to train on")
    classes = list(ds.classes)
    raw = np.asarray(ds.images[idx], dtype=np.float32)
    images = resample(raw, channel_transforms(ds), cfg.model.sample_size)
    labels = ds.label_index()[idx]
    flux = ds.labels["label_flux"].to_numpy(dtype=np.float64)[idx]
    kind = "discrete" if cfg.kind == "cevae" else cfg.conditioning.kind  # a ceVAE trains on images alone
    if kind == "continuous":
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
    }
    emb = None
    if kind == "discrete+embedding":
        enc = as_encoder(encoder) if encoder is not None else load_encoder(cfg.conditioning.encoder)
        # the encoder sees the dataset's own images (its resolution), not the resized ones
        emb = embed_all(enc, torch.from_numpy(raw))
        means = torch.zeros(len(classes), emb.shape[1])
        for i in range(len(classes)):
            if (labels == i).any():
                means[i] = emb[torch.from_numpy(labels == i)].mean(0)
        info["embed_dim"] = int(emb.shape[1])
        info["class_mean_embedding"] = means
        info["class_embedding_gaussians"] = fit_class_gaussians(emb.numpy(), labels, classes)
        # which encoder made them (a ceVAE's model id names its weights, not only its path)
        info["encoder_id"] = getattr(enc, "model_id", None) or str(cfg.conditioning.encoder)
    info["images"] = torch.from_numpy(images)
    info["cond"] = Condition(torch.from_numpy(labels.astype(np.int64)), torch.from_numpy(log_flux.astype(np.float32)), emb)
    return info


def batch_indices(n: int, global_batch: int, micro_step: int, seed: int) -> np.ndarray:
    """Dataset rows of global micro-batch ``micro_step``: consecutive slices of per-epoch permutations.

    Position p of the endless stream is row ``perm_e[p mod n]`` of epoch e = p // n, with ``perm_e`` seeded by
    (seed, e), so the batch is a pure function of (seed, micro_step).
    """
    pos = np.arange(micro_step * global_batch, (micro_step + 1) * global_batch, dtype=np.int64)
    epochs = pos // n
    out = np.empty_like(pos)
    for e in np.unique(epochs):
        perm = np.random.default_rng([int(seed), int(e)]).permutation(n)
        sel = epochs == e
        out[sel] = perm[pos[sel] % n]
    return out


def step_generator(seed: int, micro_step: int, rank: int) -> torch.Generator:
    """CPU generator of one micro-step's noise, timesteps and condition dropout on one rank."""
    state = np.random.SeedSequence([int(seed), int(micro_step), int(rank)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


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


class DiffusionObjective:
    """The DDPM: conditional U-Net, noise-prediction loss (:func:`flaresynth.diffusion.diffusion_loss`).

    ``loss`` draws, from the step's generator and in this order, the timesteps, the noise and the condition
    dropout (the order every earlier run used, so its checkpoints resume bit for bit).
    """

    name = "ddpm"

    def __init__(self, cfg: RunConfig, data: dict, classes):
        self.cfg = cfg
        self.data = data
        self.classes = tuple(classes)
        self.scheduler = make_scheduler(cfg.diffusion)
        self.parts: dict[str, torch.Tensor] = {}

    def build_model(self) -> torch.nn.Module:
        from flaresynth.models.unet import build_denoiser

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
        return diffusion_loss(model, self.scheduler, x0, cond, drop, noise, timesteps, c.diffusion)

    def meta(self) -> dict:
        extra = {"encoder_id": self.data["encoder_id"]} if "encoder_id" in self.data else {}
        return {"scheduler": {k: v for k, v in dict(self.scheduler.config).items() if not k.startswith("_")}, **extra}

    def sample_grid(self, raw_model, meta: dict, path: Path, step: int, dev) -> None:
        _sample_grid(raw_model, self.cfg, meta, path, step, dev)

    def save_final(self, raw_model, folder: Path, meta: dict) -> None:
        from flaresynth.models.unet import save_model

        save_model(raw_model, folder, {**meta, "ema_weights": True})
        make_scheduler(self.cfg.diffusion).save_pretrained(folder / "scheduler")
        if "class_embedding_gaussians" in self.data:
            self.data["class_embedding_gaussians"].save(folder / EMBEDDING_CLASSES_FILE)


def make_objective(cfg: RunConfig, data: dict, classes):
    """The objective of ``cfg.kind``: :class:`DiffusionObjective`, the ceVAE's ``CevaeObjective``, or a
    distillation stage's ``flaresynth.distill.DistillObjective``."""
    if cfg.kind == "cevae":
        from flaresynth.models.cevae import CevaeObjective

        return CevaeObjective(cfg, data, classes)
    if cfg.kind == "student":
        # imported here: flaresynth.distill imports this module
        from flaresynth.distill import DistillObjective

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
    import hashlib

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
) -> Path:
    """Train (or continue) a run; returns the run folder.

    Parameters
    ----------
    data : dataset folder (``flaresynth dataset build``).
    out : run folder.
    config : a :class:`RunConfig`, a YAML path, or ``None`` (``preset``, else the run's own on resume, else demo).
    preset : name of a shipped preset (demo, paper, paper128, tiny).
    max_steps : stop after this many optimiser steps in total (default: ``train.steps``); the LR schedule
        still follows ``train.steps``, so ``--max-steps`` then ``--resume`` equals one uninterrupted run.
    resume : continue from ``RUN/checkpoints/latest``.
    device : ``cpu``, ``cuda`` or ``None`` (accelerate's choice: a GPU when visible).
    encoder : an image encoder object for ``discrete+embedding`` (overrides ``conditioning.encoder``).
    progress : show a progress bar (main process only).
    """
    from accelerate import Accelerator
    from diffusers.training_utils import EMAModel

    from flaresynth.dataset import open_dataset
    from flaresynth.models.unet import count_parameters

    out = Path(out)
    t_start = time.time()
    if max_steps is not None and (int(max_steps) != max_steps or max_steps < 1):
        raise FlaresynthError(f"--max-steps {max_steps!r}: expected a whole number >= 1")

    # ---- config and dataset
    ds = open_dataset(data)
    cfg = resolve_for_dataset(resolve_config(out, config, preset, resume), ds)
    data_hash = ds.manifest.get("data_hash", "")
    ckpt_path = None
    if resume:
        if (out / "config.yaml").is_file():
            saved = resolve_for_dataset(load_config(out / "config.yaml"), ds)
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

    # ---- accelerator: devices, DDP, mixed precision, gradient accumulation
    if device not in (None, "cpu", "cuda"):
        raise FlaresynthError(f"--device {device!r}: expected cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise FlaresynthError("--device cuda: no CUDA GPU is visible")
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        # accelerate keeps its settings in a process-wide singleton; a second train() in the same process
        # (tests, notebooks, experiments) may ask for other ones, so start from a clean state
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)
    # cpu=True also when no GPU is visible: accelerate then runs several processes (torchrun, or
    # `accelerate launch --multi_gpu` on a CPU machine) as MULTI_CPU with the gloo backend instead of
    # falling back to independent single processes
    accelerator = Accelerator(
        cpu=device == "cpu" or (device is None and not torch.cuda.is_available()),
        gradient_accumulation_steps=cfg.train.grad_accum,
        mixed_precision=cfg.train.mixed_precision,
    )
    rank, world = accelerator.process_index, accelerator.num_processes
    is_main = accelerator.is_main_process
    accelerator.wait_for_everyone()  # every rank has checked the run folder before the main one writes to it

    # ---- data: the whole training split in RAM (no DataLoader workers: indexing a tensor is faster on a CPU)
    data_info = load_training_data(ds, cfg, encoder)
    images, cond_all = data_info["images"], data_info["cond"]
    n_train = images.shape[0]
    classes = list(ds.classes)

    # ---- objective, model, optimiser, LR schedule (same init on every rank)
    objective = make_objective(cfg, data_info, classes)
    torch.manual_seed(cfg.train.seed)
    model = objective.build_model()
    t = cfg.train
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=(t.adam_beta1, t.adam_beta2),
                                  weight_decay=t.weight_decay)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(t))
    n_params = count_parameters(model)

    # ---- resume: every rank reads the same checkpoint
    start_step, state = 0, None
    if ckpt_path is not None:
        state = read_checkpoint(ckpt_path)
        if state.get("fingerprint") != cfg.fingerprint():
            raise FlaresynthError(
                f"{ckpt_path}: checkpoint from another config (fingerprint {state.get('fingerprint')} vs "
                f"{cfg.fingerprint()}); resume with the run's own config.yaml"
            )
        if state.get("data_hash") != data_hash:
            raise FlaresynthError(f"{ckpt_path}: checkpoint trained on another dataset (data_hash differs from {ds.path})")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        lr_sched.load_state_dict(state["lr_scheduler"])
        start_step = int(state["step"])
        torch.set_rng_state(state["rng"]["torch"])
        if torch.cuda.is_available() and state["rng"].get("cuda"):
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])

    # the LR scheduler is stepped by us, once per optimiser step, so it is not handed to accelerate
    # (a prepared scheduler steps once per process)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model = accelerator.unwrap_model(model)
    dev = accelerator.device
    if state is not None and state.get("grad_scaler") and accelerator.scaler is not None:
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

    stop = t.steps if max_steps is None else int(max_steps)
    global_batch = t.batch_size * world
    log_path = out / "log.jsonl"
    if is_main:  # the run folder appears once data, model and checkpoint have loaded without error
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        _truncate_log(log_path, start_step)
        (out / "samples").mkdir(exist_ok=True)
    meta_common = {
        "classes": classes, "scheme": ds.scheme, "transform": ds.manifest["transform"], "channels": ds.channels,
        "in_channels": cfg.model.in_channels, "sample_size": cfg.model.sample_size,
        "dataset_image_size": int(ds.images.shape[-1]), "data_hash": data_hash,
        **objective.meta(),
        "train_counts": data_info["train_counts"], "class_log_flux": data_info["class_log_flux"],
        "config": cfg.to_dict(), "fingerprint": cfg.fingerprint(), "parameters": n_params,
    }
    written: list[str] = []

    def save_checkpoint(step: int) -> None:
        if not is_main:
            return
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        ckpt = {
            "step": step, "fingerprint": cfg.fingerprint(), "data_hash": data_hash, "world_size": world,
            "config": cfg.to_dict(), "model": raw_model.state_dict(), "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(), "lr_scheduler": lr_sched.state_dict(), "rng": rng,
            # fp16 loss scaling must resume where it was, or the first steps after a resume are skipped
            "grad_scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
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
            rows = batch_indices(n_train, global_batch, m, t.seed)[rank * t.batch_size : (rank + 1) * t.batch_size]
            rows_t = torch.from_numpy(rows)
            x0 = images[rows_t].to(dev)
            cond = cond_all.index(rows_t).to(dev)
            g = step_generator(t.seed, m, rank)
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
        lr_sched.step()
        loss_n += 1
        if ema is not None:
            ema.step(raw_model.parameters())

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
                          t_start, command, global_batch)
    _debug_rank_file(raw_model, rank, world, final_step, written)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return out


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


def _sample_grid(raw_model, cfg: RunConfig, meta: dict, path: Path, step: int, dev) -> None:
    """A DDPM per-class grid (fast sampler of ``sample.grid_sampler``); the caller swaps in the EMA weights."""
    import pandas as pd

    from flaresynth.sampling import TrainedModel, build_requests, generate, save_grid

    tm = TrainedModel(path=path.parent.parent, denoiser=raw_model,
                      meta={**meta, "conditioning": raw_model.conditioner.describe()}, device=torch.device(dev))
    table = build_requests(tm, per_class=cfg.sample.grid_per_class, seed=0)
    imgs = generate(tm, table, cfg.sample.grid_sampler, cfg.sample.grid_steps, cfg.sample.guidance)
    save_grid(imgs, list(pd.Series(table["label"]).astype(str)), path,
              title=f"step {step} | EMA | {cfg.sample.grid_sampler} {cfg.sample.grid_steps} | w={cfg.sample.guidance:g}")


def _save_final_model(objective, raw_model, ema, out: Path, meta: dict) -> None:
    """``RUN/model/`` from the EMA weights, written by the objective into a folder renamed when complete."""

    def run():
        with atomic_dir(out / "model", overwrite=True) as tmp:
            objective.save_final(raw_model, tmp, meta)

    _with_ema(raw_model, ema, run)


def _write_provenance(out, cfg, data, data_hash, ds, start_step, final_step, world, accelerator, n_params, t_start,
                      command, global_batch) -> None:
    import accelerate
    import diffusers

    path = out / "provenance.json"
    previous = read_json(path) if path.is_file() else {}
    sessions = previous.get("sessions", []) + [{
        "command": command if command is not None else [Path(sys.argv[0]).name, *sys.argv[1:]],
        "from_step": start_step, "to_step": final_step, "world_size": world,
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


def _debug_rank_file(raw_model, rank: int, world: int, step: int, written: list[str]) -> None:
    folder = os.environ.get(DEBUG_RANK_DIR_ENV)
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    write_json(Path(folder) / f"rank{rank}.json", {
        "rank": rank, "world_size": world, "step": step, "param_digest": param_digest(raw_model),
        "checkpoints_written": written, "pid": os.getpid(),
    })


__all__ = [
    "train",
    "DiffusionObjective",
    "make_objective",
    "resolve_config",
    "load_training_data",
    "batch_indices",
    "step_generator",
    "latest_checkpoint",
    "read_checkpoint",
    "write_checkpoint",
    "param_digest",
]
