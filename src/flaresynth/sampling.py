"""Generating images from a trained run: requests, batched guided sampling, and the samples folder.

``flaresynth sample --run RUN --out DIR`` (see :func:`sample`) opens the run (:func:`flaresynth.runs.open_run`)
and writes, through :func:`flaresynth.samples.write_samples`:

* ``samples.npy``: float32 (N, C, H, W) in model space [-1, 1] (no 8-bit quantisation, unlike the authors' code,
  fpramunno/Modelling_Solar_Image_with_DDPM); ``samples.csv`` with the requested class or flux and each image's seed;
* ``fits/NNNNN_<class>.fits``: each image in DN/s (the dataset's inverse intensity transform) with an AIA-like
  header that ``sunpy.map.Map`` opens as an AIA map (:func:`flaresynth.samples.fits_header`);
* ``grid.png``: rows = requested classes (or fluxes), in the AIA 171 colour map.

What can be requested depends on the conditioning: classes of the run's scheme (GOES letters A..X, or activity
levels low/medium/high) for every model; XRS-B fluxes in W/m² for every model (a discrete model uses the
flux's class; a continuous one the flux itself, also between or beyond its training classes). A class request
to a continuous model draws each image's flux from that class's training flux distribution (the run's stored
quantiles of log10 flux, inverse-CDF sampling with a generator seeded by the image's seed), so its samples are
as varied as the class and not all at its median; the drawn flux is the table's ``condition_log_flux`` and the
FITS card CONDLFLX. Runs trained before the quantiles were stored fall back to the class median, and the
table's ``flux_draw`` column says which was used.

Embedding source (``discrete+embedding`` runs; ``--embedding-source``, default the run's
``sample.embedding_source``, ``class-mean`` for runs made before the option existed):

* ``class-mean``: the mean training embedding of the requested class (stored with the weights);
* ``class-gaussian``: a draw from the Gaussian of the class's training embeddings (mean, full covariance,
  ridge; ``RUN/model/embedding_classes.npz``, :func:`flaresynth.models.cevae.fit_class_gaussians`), seeded
  per image from its seed (independently of its initial noise);
* ``image``: the embedding of a real image of the requested class, picked per image from the *train* split
  of a dataset folder (``--embedding-data DS``) with its seed and embedded by the run's own encoder
  (``conditioning.encoder``); the chosen dataset row is the table's ``embedding_row``.

Sampler: ``--sampler`` or the run's config (``sample.sampler`` and ``sample.steps``; DPM-Solver++ 20 for the
shipped 64 px DDPMs, DDIM 20 for the others); the paper's 1000-step DDPM is ``--sampler ddpm``.

A ceVAE run (``kind: cevae``) has no sampler: image i draws its latent z = m_k + L_k ε from N(m_k, Σ_k) of its
class k (fitted on the training latents at the end of training, ``RUN/model/latent_classes.npz``; see
:mod:`flaresynth.models.cevae`) with ε from ``torch.Generator().manual_seed(seed + i)``, or, with
``cevae.class_components`` > 1, from the component of the class's mixture its seed picks; then decodes z and clips
to [-1, 1] (:func:`generate_cevae`). A flux request uses the Gaussian of the flux's class (the ceVAE has no
continuous condition). It writes the same samples folder, so evaluation treats both generators alike.

Seeds: image i of a request list gets seed ``seed + i``; its initial noise and (DDPM) per-step noise come from
its own generator, so the same seed gives the same image whatever the batch size, up to float rounding (batched
kernels differ in the last bits). Run to run it is bit for bit on a CPU; on a GPU with ``deterministic``
(``--deterministic``: deterministic kernels, no TF32; :mod:`flaresynth.devices` states the scope).

The FITS geometry is described in :mod:`flaresynth.samples`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from flaresynth import __version__
from flaresynth.config import EMBEDDING_SOURCES, SampleConfig
from flaresynth.dataset import DatasetFolder, open_dataset
from flaresynth.devices import use_deterministic_kernels
from flaresynth.diffusion import SAMPLER_DEFAULT_STEPS, make_sampler, sample_loop
from flaresynth.errors import FlaresynthError, input_error
from flaresynth.labels import SCHEMES, class_to_flux, flux_to_label_index
from flaresynth.models.autoencoder import decode as decode_latents
from flaresynth.models.cevae import ClassGaussians, decode
from flaresynth.models.conditioning import Condition, as_encoder, embed_all
from flaresynth.progress import ProgressBar
from flaresynth.runs import EMBEDDING_CLASSES_FILE, Run, encoder_id, load_encoder, open_run, sample_section
from flaresynth.samples import NOMINAL_DATE_OBS, image_writer, write_samples

#: What the manifest and the FITS headers call the ceVAE's sampler.
CEVAE_SAMPLER = "cevae-class-gaussian"


# ------------------------------------------------------------------------------------------ requests


def parse_fluxes(values) -> list[float]:
    """Fluxes from CLI strings: numbers in W/m² or GOES classes (``M2.5``), comma-separated or repeated."""
    out = []
    for v in values or []:
        for item in str(v).split(","):
            item = item.strip()
            if not item:
                continue
            try:
                f = float(item)
            except ValueError:
                f = class_to_flux(item)
            if not math.isfinite(f) or f <= 0:
                raise FlaresynthError(f"--flux {item}: expected a positive XRS-B flux in W/m² (e.g. 3e-5) or a class like M2.5")
            out.append(f)
    return out


def parse_classes(values) -> list[str]:
    """Class names from CLI strings, comma-separated or repeated."""
    out = []
    for v in values or []:
        out += [c.strip() for c in str(v).split(",") if c.strip()]
    return out


def build_requests(model: Run, classes=None, fluxes=None, per_class: int = 8, seed: int = 0) -> pd.DataFrame:
    """One row per image: ``label``, ``requested_flux``, ``seed``, plus the condition the model gets.

    ``classes`` and ``fluxes`` may both be given; with neither, every class the model was trained on.
    Extra columns: ``flux_class`` (the class a requested flux falls in), ``condition_label`` (class index
    fed to the model), ``condition_log_flux`` (log10 W/m² fed to a continuous model).
    """
    if int(per_class) != per_class or per_class < 1:
        raise FlaresynthError(f"--per-class {per_class!r}: expected a whole number >= 1")
    names = model.classes
    scheme = model.meta["scheme"]
    counts = model.meta.get("train_counts", {c: 1 for c in names})
    trained = [c for c in names if counts.get(c, 0) > 0]
    class_log_flux = model.meta.get("class_log_flux", {})
    classes = list(classes or [])
    fluxes = [float(f) for f in (fluxes or [])]
    if not classes and not fluxes:
        classes = trained
    rows = []
    for c in classes:
        if c not in names:
            alt = {n.lower(): n for n in names}.get(c.lower())
            if alt is None:
                raise FlaresynthError(
                    f"--classes {c}: not a class of this model (scheme {scheme}: {', '.join(names)})"
                )
            c = alt
        if counts.get(c, 0) == 0:
            raise FlaresynthError(f"--classes {c}: the model saw no training image of class {c} (trained on {', '.join(trained)})")
        lf = class_log_flux.get(c, float("nan"))
        rows += [{"label": c, "requested_flux": float("nan"), "flux_class": c, "condition_label": names.index(c),
                  "condition_log_flux": lf}] * per_class
    for f in fluxes:
        if not math.isfinite(f) or f <= 0:
            raise FlaresynthError(f"--flux {f!r}: expected a positive XRS-B flux in W/m²")
        idx = int(flux_to_label_index(f, scheme))
        c = SCHEMES[scheme][idx]
        if model.conditioning != "continuous" and counts.get(c, 0) == 0:
            raise FlaresynthError(
                f"--flux {f:g}: its class {c} was not in the training data (trained on {', '.join(trained)})"
            )
        rows += [{"label": "", "requested_flux": f, "flux_class": c, "condition_label": idx,
                  "condition_log_flux": math.log10(f)}] * per_class
    table = pd.DataFrame(rows)
    table.insert(2, "seed", np.arange(len(table), dtype=np.int64) + int(seed))
    if model.conditioning == "continuous" and len(table):
        _draw_class_fluxes(table, model.meta.get("class_log_flux_quantiles") or {})
    return table


def _draw_class_fluxes(table: pd.DataFrame, quantiles: dict) -> None:
    """Per image of a class request: log10 flux drawn from the class's training quantiles (seeded by the image's
    seed); ``flux_draw`` records the rule (see the module docstring)."""
    probs = np.linspace(0, 1, 33)
    draw = np.where(table["label"] != "", "class-median", "requested").astype(object)
    log_flux = table["condition_log_flux"].to_numpy(dtype=np.float64).copy()
    for i in np.flatnonzero(table["label"].to_numpy() != ""):
        q = quantiles.get(table["label"].iat[i])
        if q is None:
            continue
        u = np.random.default_rng([int(table["seed"].iat[i]), 0x464C5558]).random()  # own stream per image seed
        log_flux[i] = float(np.interp(u, np.linspace(0, 1, len(q)) if len(q) != len(probs) else probs, q))
        draw[i] = "class-distribution"
    table["condition_log_flux"] = log_flux
    table["flux_draw"] = draw


def conditions(model: Run, table: pd.DataFrame, embeddings: torch.Tensor | None = None) -> Condition:
    """The :class:`~flaresynth.models.conditioning.Condition` batch of a request table.

    ``embeddings`` (N, D): the image embeddings of a ``discrete+embedding`` model; ``None``: the class means.
    """
    # torch.tensor copies: pandas hands out read-only views
    labels = torch.tensor(table["condition_label"].to_numpy(dtype=np.int64))
    log_flux = torch.tensor(table["condition_log_flux"].to_numpy(dtype=np.float32))
    emb = None
    if model.conditioning == "discrete+embedding":
        if embeddings is None:
            emb = model.network.conditioner.class_mean_embedding.detach().cpu()[labels]
        else:
            emb = torch.as_tensor(embeddings, dtype=torch.float32)
            if emb.shape[0] != len(table):
                raise ValueError(f"{emb.shape[0]} embeddings for {len(table)} requests")
    return Condition(labels, log_flux, emb)


def _derived_seed(seed: int, stream: int) -> int:
    """A 32-bit seed for another random stream of the image with ``seed`` (not its initial noise)."""
    return int(np.random.SeedSequence([int(seed), int(stream)]).generate_state(1)[0])


def request_embeddings(model: Run, table: pd.DataFrame, source: str = "class-mean", data=None,
                       encoder=None) -> tuple[torch.Tensor, np.ndarray]:
    """Embeddings (N, D) for the requests of a ``discrete+embedding`` model, and the dataset row behind each.

    ``source``: ``class-mean``, ``class-gaussian`` or ``image`` (module docstring). ``data``: dataset folder
    (path or opened) for ``image``. ``encoder``: an image encoder overriding the run's ``conditioning.encoder``.
    The second result holds the dataset row of each ``image`` embedding (-1 for the other sources).
    """
    if model.conditioning != "discrete+embedding":
        raise FlaresynthError(f"--embedding-source: only for discrete+embedding runs (this run is {model.conditioning})")
    if source not in EMBEDDING_SOURCES:
        raise FlaresynthError(f"--embedding-source {source!r}: expected one of {', '.join(EMBEDDING_SOURCES)}")
    labels = np.array(table["condition_label"], dtype=np.int64)  # copies: pandas hands out read-only views
    seeds = np.array(table["seed"], dtype=np.int64)
    rows = np.full(len(table), -1, dtype=np.int64)
    if source == "class-mean":
        return model.network.conditioner.class_mean_embedding.detach().cpu()[torch.from_numpy(labels)].clone(), rows
    if source == "class-gaussian":
        path = model.folder / EMBEDDING_CLASSES_FILE
        if not path.is_file():
            raise FlaresynthError(f"{path}: missing (the run predates per-class embedding Gaussians; "
                                  "use --embedding-source class-mean or image)")
        gauss = ClassGaussians.load(path)
        emb = np.zeros((len(table), gauss.dim))
        for k in np.unique(labels):
            sel = np.flatnonzero(labels == k)
            emb[sel] = gauss.sample(gauss.index(model.classes[k]), [_derived_seed(s, 1) for s in seeds[sel]])
        return torch.from_numpy(emb).float(), rows
    # image: a real training image of the class, embedded by the run's encoder
    if data is None:
        raise FlaresynthError("--embedding-source image: needs --embedding-data DS (a dataset folder with "
                              "training images of the requested classes)")
    ds = data if isinstance(data, DatasetFolder) else open_dataset(data)
    if ds.scheme != model.meta["scheme"]:
        raise FlaresynthError(f"{ds.path / 'manifest.json'}: scheme: {ds.scheme!r}, but the run has {model.meta['scheme']!r}")
    if list(ds.channels) != model.channels:
        # an encoder that takes any channel count (random:D) would embed other channels without complaint
        raise input_error(ds.path / "manifest.json", "channels", f"{', '.join(ds.channels)}, but the run {model.path} "
                          f"was trained on {', '.join(model.channels)} (the same channels in the same order are needed)")
    train_rows = ds.split_indices("train")
    ds_labels = ds.label_index()[train_rows]
    for k in np.unique(labels):
        cands = train_rows[ds_labels == k]
        if not len(cands):
            raise FlaresynthError(f"{ds.path / 'labels.csv'}: label: no training image of class {model.classes[k]} "
                                  "to take an embedding from")
        for i in np.flatnonzero(labels == k):
            rows[i] = cands[np.random.default_rng(_derived_seed(seeds[i], 2)).integers(len(cands))]
    # the run's encoder on the run's device (batched there); an encoder object given by the caller is fed where it is
    spec = model.meta["config"]["conditioning"]["encoder"]
    enc = as_encoder(encoder) if encoder is not None else load_encoder(spec, model.device)
    trained_with, found = model.meta.get("encoder_id"), encoder_id(enc, spec)
    if encoder is None and trained_with is not None and found != trained_with:
        # a ceVAE retrained under the same name embeds differently: the run would be fed vectors it never saw
        raise FlaresynthError(f"{model.path}: conditioning.encoder {spec} is now {found}, but the run was trained on "
                              f"the embeddings of {trained_with} (retrain the run on it, or use --embedding-source "
                              "class-gaussian)")
    images = torch.from_numpy(np.asarray(ds.images[np.sort(np.unique(rows))], dtype=np.float32))
    emb_unique = embed_all(enc, images)
    lookup = {int(r): j for j, r in enumerate(np.sort(np.unique(rows)))}
    return emb_unique[[lookup[int(r)] for r in rows]], rows


# ------------------------------------------------------------------------------------------ generation


def auto_batch_size(model: Run, guidance: float) -> int:
    """A batch that fits in memory: a rough activation estimate against a quarter of the free memory."""
    c, s, _ = model.sample_shape
    cfg = model.meta["config"]["model"]
    per_image = 0
    for i, w in enumerate(cfg["block_out_channels"]):
        r = s // 2**i
        per_image += (2 * cfg["layers_per_block"] + 4) * w * r * r * 4  # skips kept + working maps, float32
        if r in cfg["attention_resolutions"]:
            per_image += (w // cfg["attention_head_dim"]) * r**4 * 4  # a materialised attention matrix
    per_image *= 2 if guidance else 1
    if model.device.type == "cuda":
        free = torch.cuda.mem_get_info(model.device)[0]
        cap = 512
    else:
        free = _available_ram()
        cap = 64  # on a CPU a bigger batch is no faster
    return int(max(1, min(cap, free // 4 // max(per_image, 1))))


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


#: ``guidance_t_max`` of :func:`generate` and :func:`sample` meaning "the run's config ``sample.guidance_t_max``".
RUN_CONFIG = "run"


def resolve_guidance_t_max(model: Run, guidance_t_max: int | None | str = RUN_CONFIG) -> int | None:
    """The guidance interval's upper timestep a request runs: ``guidance_t_max``, or the run's configured one."""
    if guidance_t_max == RUN_CONFIG:
        guidance_t_max = model.sample_defaults.get("guidance_t_max")
    if guidance_t_max is not None and (int(guidance_t_max) != guidance_t_max or guidance_t_max < 0):
        raise FlaresynthError(f"--guidance-t-max {guidance_t_max!r}: expected a whole number >= 0 (a timestep; "
                              "guidance only at t <= it)")
    return None if guidance_t_max is None else int(guidance_t_max)


def _own_sampling(defaults: dict, sampler: str, steps: int | None) -> bool:
    """Whether a request is for the run's own sampler (``sample.sampler`` of ``defaults``) at its own step count
    (``sample.steps``, else the count of ``sample.timesteps``; ``steps`` ``None``: the sampler's default): only
    then do the run's ``sample.timesteps`` and ``sample.eta`` apply, which were chosen for that sampler."""
    own_steps = defaults.get("steps")
    if own_steps is None and defaults.get("timesteps") is not None:
        own_steps = len(defaults["timesteps"])
    return sampler == defaults.get("sampler") and (steps is None or own_steps in (None, int(steps)))


def resolve_timesteps(defaults: dict, sampler: str, steps: int | None,
                      timesteps: Sequence[int] | None | str = RUN_CONFIG) -> list[int] | None:
    """The explicit timesteps a request runs: ``timesteps``, or the run's configured ones (``sample.timesteps`` of
    ``defaults``, the run's config ``sample`` section) for a request of the run's own sampler at its own step
    count (:func:`_own_sampling`)."""
    if timesteps == RUN_CONFIG:
        timesteps = defaults.get("timesteps") if _own_sampling(defaults, sampler, steps) else None
    return None if timesteps is None else [int(t) for t in timesteps]


def resolve_eta(defaults: dict, sampler: str, steps: int | None, eta: float | str = RUN_CONFIG) -> float:
    """DDIM's η a request runs: ``eta``, or the run's configured one (``sample.eta`` of ``defaults``) for a
    request of the run's own sampler at its own step count (:func:`_own_sampling`), else 0."""
    if eta == RUN_CONFIG:
        eta = float(defaults.get("eta", 0.0)) if _own_sampling(defaults, sampler, steps) else 0.0
    if not (math.isfinite(eta) and 0 <= eta <= 1):
        raise FlaresynthError(f"--eta {eta!r}: expected 0 <= eta <= 1 (DDIM's share of fresh noise per step)")
    return float(eta)


def generate(model: Run, table: pd.DataFrame, sampler: str = "ddpm", steps: int | None = None,
             guidance: float = 2.0, batch_size: int | None = None, progress: bool = False,
             embeddings: torch.Tensor | None = None, guidance_t_max: int | None | str = RUN_CONFIG,
             timesteps: Sequence[int] | None | str = RUN_CONFIG, eta: float | str = RUN_CONFIG,
             decoder_noise: bool = True) -> np.ndarray:
    """Images for a request table: float32 (N, C, H, W) in [-1, 1].

    ``sampler``: ddpm | ddim | dpm++ | unipc | lcm (consistency students); ``steps`` ``None`` = the sampler's default; ``guidance`` = CFG w;
    ``guidance_t_max``: guidance only at timesteps t <= it (:func:`flaresynth.diffusion.sample_loop`; ``None``
    at every step; default the run's config ``sample.guidance_t_max``);
    ``timesteps``: the timesteps to visit, explicitly (default: :func:`resolve_timesteps`, the run's configured
    ones for its own sampler and step count; ``None``: the sampler's own spacing); ``eta``: DDIM's η (default:
    :func:`resolve_eta`, the run's ``sample.eta`` for its own sampler and step count, else 0);
    ``embeddings``: per-request image embeddings of a ``discrete+embedding`` model (``None``: class means;
    see :func:`request_embeddings`). A latent run samples latents and decodes them with its autoencoder
    (latents / scaling factor), batch by batch; with ``decoder_noise`` it adds a draw of the autoencoder's residual
    model to each decoded image, from the image's seed (:mod:`flaresynth.models.decoder_noise`; nothing when the
    autoencoder has none).
    """
    if steps is not None and (int(steps) != steps or steps < 1):
        raise FlaresynthError(f"--steps {steps!r}: expected a whole number >= 1")
    if not math.isfinite(guidance) or guidance < 0:
        raise FlaresynthError(f"--guidance {guidance!r}: expected a number >= 0 (0 = no guidance)")
    if batch_size is not None and batch_size < 1:
        raise FlaresynthError(f"--batch-size {batch_size!r}: expected a whole number >= 1")
    sched_cfg = model.meta["scheduler"]
    timesteps = resolve_timesteps(model.sample_defaults, sampler, steps, timesteps)
    eta = resolve_eta(model.sample_defaults, sampler, steps, eta)
    make_sampler(sampler, sched_cfg, steps, timesteps)  # validates name, steps and timesteps before any work
    if sampler == "lcm" and (model.meta.get("student") or {}).get("stage") != "consistency":
        raise FlaresynthError(f"--sampler lcm: {model.path} is not a consistency-distilled student; the LCM "
                              "sampler takes a consistency function, which a DDPM's noise prediction is not")
    guidance_t_max = resolve_guidance_t_max(model, guidance_t_max)
    batch = batch_size or auto_batch_size(model, guidance)
    cond = conditions(model, table, embeddings)
    seeds = table["seed"].to_numpy()
    n = len(table)
    n_steps = len(timesteps) if timesteps is not None else steps or SAMPLER_DEFAULT_STEPS[sampler]
    bar = None
    if progress:
        bar = ProgressBar(n * n_steps, f"{sampler} {n_steps} steps", unit="img·step")
    out = []
    for lo in range(0, n, batch):
        hi = min(n, lo + batch)
        sched = make_sampler(sampler, sched_cfg, steps, timesteps)  # fresh: multistep solvers keep per-run state
        cb = (lambda _i, k=hi - lo: bar.update(k)) if bar is not None else None
        x = sample_loop(model.network, sched, cond.index(slice(lo, hi)), seeds[lo:hi], model.sample_shape,
                        guidance=guidance, device=model.device, callback=cb, clip=model.latent is None,
                        guidance_t_max=guidance_t_max, eta=eta)
        if model.latent is not None:
            x = decode_latents(model.autoencoder, x / float(model.latent["scaling_factor"]), model.device)
            if decoder_noise and model.decoder_noise is not None:
                x = torch.from_numpy(model.decoder_noise.add(x.numpy(), seeds[lo:hi]))
        out.append(x)
    if bar is not None:
        bar.close()
    return torch.cat(out).numpy() if out else np.zeros((0, *model.image_shape), np.float32)


def check_student_settings(model: Run, sampler: str, steps: int | None, guidance: float) -> None:
    """A distilled student samples with the sampler and step count it was trained for, at a w it learned."""
    own_sampler, own_steps = model.meta["config"]["sample"]["sampler"], model.meta["student"]["steps"]
    if sampler != own_sampler or (steps is not None and int(steps) != own_steps):
        raise FlaresynthError(f"--sampler/--steps {sampler} {steps}: {model.path} is a distilled student trained for "
                              f"{own_sampler} {own_steps} steps; sample it with those (its defaults)")
    lo, hi = model.meta["student"]["guidance_range"]
    if not lo <= guidance <= hi:
        raise FlaresynthError(f"--guidance {guidance:g}: {model.path} is a distilled student that learned w from "
                              f"{lo:g} to {hi:g}")


def latents(model: Run, table: pd.DataFrame) -> np.ndarray:
    """(N, z_dim) float64 latents of a ceVAE request table: row i from its class's Gaussian and its seed."""
    z = np.zeros((len(table), model.gaussians.dim))
    flux_class = table["flux_class"].to_numpy()
    seeds = table["seed"].to_numpy()
    for c in dict.fromkeys(flux_class):
        rows = np.flatnonzero(flux_class == c)
        z[rows] = model.gaussians.sample(model.gaussians.index(str(c)), seeds[rows])
    return z


def generate_cevae(model: Run, table: pd.DataFrame, batch_size: int | None = None) -> np.ndarray:
    """Images of a ceVAE run for a request table: float32 (N, C, H, W) in [-1, 1] (decoded class-Gaussian
    latents; an image depends on its seed only, up to the last bits of the batched decoder)."""
    if batch_size is not None and batch_size < 1:
        raise FlaresynthError(f"--batch-size {batch_size!r}: expected a whole number >= 1")
    z = torch.from_numpy(latents(model, table)).float()
    return decode(model.network, z, model.device, batch_size=batch_size or 64).numpy()


# ------------------------------------------------------------------------------------------ samples folder


def sample_settings(meta: dict, sampler: str | None = None, steps: int | None = None,
                    guidance: float | None = None) -> tuple[str, int | None, float]:
    """The sampler, step count and CFG w a request of a run runs, from the run's metadata alone (its
    ``flaresynth.json``, :attr:`Run.meta`): ``sampler`` (its ``steps``, or its own default when ``None``), or with
    ``sampler`` ``None`` the run's configured default (config ``sample.sampler`` and ``sample.steps``, the config
    defaults when the run has no ``sample`` section; ``steps`` still overrides the count); ``guidance``, else the
    config's ``sample.guidance`` (2.0 when absent)."""
    d = sample_section(meta)
    if sampler is None:
        # a config without a sample section (no sampler in it): the config defaults
        sampler, default_steps = (d["sampler"], d.get("steps")) if d.get("sampler") else \
            (SampleConfig.sampler, SampleConfig.steps)
        steps = default_steps if steps is None else steps
    return sampler, steps, float(d.get("guidance", 2.0) if guidance is None else guidance)


def sample(run: str | Path | Run, out: str | Path, classes=None, fluxes=None, per_class: int = 8,
           sampler: str | None = None, steps: int | None = None, guidance: float | None = None, seed: int = 0,
           batch_size: int | None = None, device: str | None = None, fits: bool = True, grid: bool = True,
           overwrite: bool = False, progress: bool = False, embedding_source: str | None = None,
           embedding_data: str | Path | None = None, deterministic: bool = False,
           guidance_t_max: int | None | str = RUN_CONFIG, timesteps: Sequence[int] | None | str = RUN_CONFIG,
           eta: float | str = RUN_CONFIG, decoder_noise: bool = True) -> Path:
    """Generate images from a run (DDPM or ceVAE) and write a samples folder; returns its path.

    ``sampler``, ``steps``, ``guidance`` and ``progress`` do not apply to a ceVAE run and are ignored there (so
    code that loops over generators can pass the same arguments to every run).

    Parameters
    ----------
    run : run folder, shipped name (``demo:discrete``), or a run opened with :func:`flaresynth.runs.open_run`.
    out : samples folder to write (appears only when complete).
    classes : class names of the run's scheme (``["A", "M", "X"]`` or ``["low", "high"]``).
    fluxes : XRS-B fluxes in W/m².
    per_class : images per requested class or flux.
    sampler, steps : ``None`` = the run's default (config ``sample.sampler`` and, for that sampler,
        ``sample.steps``; another sampler without ``steps`` runs its own default number of steps).
    guidance : CFG w; ``None`` = the run's config.
    guidance_t_max : guidance only at timesteps t <= it; default the run's config (``None`` there: every step).
    timesteps : the timesteps the sampler visits, explicitly; default the run's config ``sample.timesteps`` when
        the run's own sampler runs at its own step count (``None``: the sampler's own spacing).
    eta : DDIM's η (ddim only); default the run's config ``sample.eta`` under the same rule, else 0.
    decoder_noise : latent runs: add a draw of the autoencoder's residual model to each decoded image, when the
        autoencoder has one (:mod:`flaresynth.models.decoder_noise`); ``False``: the decoder's images as they are.
    seed : image i gets seed ``seed + i``.
    batch_size : images per forward pass (``None``: sized to the free memory).
    device : cpu, cuda or ``None`` (GPU when visible).
    embedding_source : ``discrete+embedding`` runs: class-mean, class-gaussian or image (``None``: the run's
        default; ``image`` when only ``embedding_data`` is given).
    embedding_data : dataset folder the ``image`` embeddings come from (its train split).
    deterministic : deterministic GPU kernels and no TF32 for the rest of the process
        (:func:`flaresynth.devices.use_deterministic_kernels`), so a GPU repeats its images bit for bit.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FlaresynthError(f"{out}: exists; choose another --out (or pass overwrite)")
    if deterministic:
        use_deterministic_kernels()  # before the first GPU work: cuBLAS reads its setting when it starts
    model = run if isinstance(run, Run) else open_run(run, device)
    if model.kind == "autoencoder":
        raise FlaresynthError(f"{model.path}: an autoencoder run reconstructs but does not generate; train a latent "
                              "DDPM in its latents (config latent.autoencoder, preset demo64-latent) and sample that")
    if model.kind == "cevae":
        # the embedding options would be a mistake (a ceVAE has no image-embedding condition)
        for name, value in (("--embedding-source", embedding_source), ("--embedding-data", embedding_data)):
            if value is not None:
                raise FlaresynthError(f"{name}: not used by a ceVAE run ({run}), which decodes latents drawn from "
                                      "its per-class Gaussians")
        return _sample_cevae(model, out, classes, fluxes, per_class, seed, batch_size, fits, grid, overwrite)
    defaults = model.sample_defaults
    sampler, steps, guidance = sample_settings(model.meta, sampler, steps, guidance)
    if steps is not None and int(steps) < 1:
        raise FlaresynthError(f"--steps {steps}: expected a whole number >= 1")
    timesteps = resolve_timesteps(model.sample_defaults, sampler, steps, timesteps)
    eta = resolve_eta(model.sample_defaults, sampler, steps, eta)
    student = model.meta.get("student")
    if student is not None:
        check_student_settings(model, sampler, len(timesteps) if timesteps is not None else steps, guidance)
    table = build_requests(model, classes, fluxes, per_class, seed)
    embeddings, source = None, None
    if model.conditioning == "discrete+embedding":
        source = embedding_source or ("image" if embedding_data is not None else
                                      defaults.get("embedding_source", "class-mean"))
        embeddings, rows = request_embeddings(model, table, source, embedding_data)
        table["embedding_source"] = source
        if source == "image":
            table["embedding_row"] = rows
    elif embedding_source is not None or embedding_data is not None:
        raise FlaresynthError(f"--embedding-source: only for discrete+embedding runs (this run is {model.conditioning})")
    guidance_t_max = resolve_guidance_t_max(model, guidance_t_max)
    images = generate(model, table, sampler, steps, guidance, batch_size, progress=progress, embeddings=embeddings,
                      guidance_t_max=guidance_t_max, timesteps=timesteps, eta=eta, decoder_noise=decoder_noise)
    noised = bool(decoder_noise and model.decoder_noise is not None)
    n_steps = len(timesteps) if timesteps is not None else steps or SAMPLER_DEFAULT_STEPS[sampler]
    model_id, channels = model.model_id, model.channels

    def header(row) -> dict:
        cards = {
            "SAMPLER": (sampler, "diffusers scheduler used"),
            "NSTEPS": (int(n_steps), "sampling steps"),
            "CFGW": (guidance, "CFG w: e_c + w (e_c - e_u)"),
            "CONDKIND": (model.conditioning, "conditioning"),
        }
        if eta:
            cards["DDIMETA"] = (eta, "DDIM eta: share of fresh noise per step")
        if model.conditioning == "continuous":
            cards["CONDLFLX"] = (float(row["condition_log_flux"]), "[log10 W/m2] flux given to the model")
        if source is not None:
            cards["EMBSRC"] = (source, "where the image embedding came from")
        if model.latent is not None:
            cards["DECNOISE"] = (noised, "autoencoder residual model drawn and added")
        return cards

    extra = image_writer(images, table, model.transforms(), channels, model.scheme, model_id, header,
                         f"{model_id} | {sampler} {n_steps} steps{f' eta={eta:g}' if eta else ''} | w={guidance:g}",
                         fits=fits, grid=grid)
    manifest = {
        **_manifest_head(model, "flaresynth-ddpm", sampler, int(n_steps), guidance, seed, per_class),
        "guidance_convention": "eps_c + w (eps_c - eps_u); fpramunno/Modelling_Solar_Image_with_DDPM's lerp cfg_scale = w + 1",
        "guidance_t_max": guidance_t_max,
        **({"timesteps": timesteps} if timesteps is not None else {}),
        **({"eta": eta} if eta else {}),
        "conditioning": model.conditioning,
        **({"embedding_source": source} if source is not None else {}),
        **({"distilled": {k: student[k] for k in ("stage", "steps", "teacher_id", "guidance_range") if k in student}}
           if student is not None else {}),
        **({"embedding_data": str(embedding_data)} if source == "image" else {}),
        **({"latent": {**{k: model.latent[k] for k in ("autoencoder_id", "scaling_factor", "latent_shape")},
                       "decoder_noise": noised}} if model.latent is not None else {}),
        **_manifest_tail(model, ema_weights=True),
    }
    return write_samples(out, images, table, manifest, extra=extra, overwrite=overwrite)


def _manifest_head(model: Run, generator: str, sampler: str, steps: int, guidance: float | None, seed: int,
                   per_class: int) -> dict:
    """The samples-manifest keys every generator writes first: what made the images and how to read them."""
    return {
        "generator": generator,
        "classes": list(model.classes),
        "scheme": model.scheme,
        "transform": model.meta["transform"],
        "channels": model.channels,
        "image_size": int(model.image_shape[-1]),
        "sampler": sampler,
        "steps": steps,
        "guidance": guidance,
        "seed": int(seed),
        "per_class": int(per_class),
        "model_id": model.model_id,
        "run": str(model.path),
    }


def _manifest_tail(model: Run, ema_weights: bool) -> dict:
    """The samples-manifest keys every generator writes last: weights, nominal date, device, version."""
    return {
        "ema_weights": ema_weights,
        "date_obs": f"{NOMINAL_DATE_OBS} (nominal J2000 epoch; synthetic images have no observation time)",
        "device": str(model.device),
        "flaresynth_version": __version__,
    }


def _sample_cevae(model: Run, out: Path, classes, fluxes, per_class: int, seed: int, batch_size: int | None,
                  fits: bool, grid: bool, overwrite: bool) -> Path:
    """:func:`sample` for a ceVAE run: decoded class-Gaussian latents, the same samples folder."""
    table = build_requests(model, classes, fluxes, per_class, seed)
    images = generate_cevae(model, table, batch_size)
    model_id, channels = model.model_id, model.channels
    header = {
        "SAMPLER": (CEVAE_SAMPLER, "ceVAE: class latent Gaussian, decoded"),
        "NSTEPS": (1, "one decoder pass"),
        "CONDKIND": ("cevae", "generator: ceVAE baseline"),
    }
    extra = image_writer(images, table, model.transforms(), channels, model.scheme, model_id,
                         lambda row: header, f"{model_id} | ceVAE class-Gaussian latents", fits=fits, grid=grid)
    manifest = {
        **_manifest_head(model, "flaresynth-cevae", CEVAE_SAMPLER, 1, None, seed, per_class),
        "conditioning": "cevae",
        "latent_classes": model.gaussians.summary(),
        **_manifest_tail(model, ema_weights=bool(model.meta.get("ema_weights", True))),
    }
    return write_samples(out, images, table, manifest, extra=extra, overwrite=overwrite)


__all__ = [
    "CEVAE_SAMPLER",
    "parse_fluxes",
    "parse_classes",
    "build_requests",
    "conditions",
    "request_embeddings",
    "auto_batch_size",
    "generate",
    "resolve_eta",
    "check_student_settings",
    "sample_settings",
    "latents",
    "generate_cevae",
    "sample",
]
