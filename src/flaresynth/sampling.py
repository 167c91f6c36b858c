"""Generating images from a trained run: requests, batched guided sampling, and the samples folder.

``flaresynth sample --run RUN --out DIR`` (see :func:`sample`) writes, through
:func:`flaresynth.samples.write_samples`:

* ``samples.npy``: float32 (N, C, H, W) in model space [-1, 1] (no 8-bit quantisation, unlike the authors' code,
  fpramunno/Modelling_Solar_Image_with_DDPM); ``samples.csv`` with the requested class or flux and each image's seed;
* ``fits/NNNNN_<class>.fits``: each image in DN/s (the dataset's inverse intensity transform) with an AIA-like
  header that ``sunpy.map.Map`` opens as an AIA map (:func:`fits_header`);
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

A ceVAE run (``kind: cevae``) has no sampler: :func:`sample` hands it to
:func:`flaresynth.cevae_sampling.sample_cevae`, which writes the same samples folder.

Seeds: image i of a request list gets seed ``seed + i``; its initial noise and (DDPM) per-step noise come from
its own generator, so the same seed gives the same image whatever the batch size.

FITS geometry: the synthetic image was never observed, so the header describes the frame its training data
had. SDOMLv2 rescales every AIA image so the solar radius is 976″ (Galvez et al. 2019, ApJS 242, 7) at 4.8″/px for
512 px, so CDELT = 4.8·512/size ″/px, RSUN_OBS = 976″, and the observer sits on the Sun–Earth line
(HGLN_OBS = HGLT_OBS = 0) at DSUN_OBS = RSUN_REF / sin(976″) = 1.4709e11 m (0.983 au). DATE-OBS is a nominal
epoch, J2000.0 (2000-01-01T12:00:00, when Earth was at that distance): it carries no information about the
image and only fixes the coordinate frame's time for sunpy.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from flaresynth import __version__
from flaresynth.diffusion import SAMPLER_DEFAULT_STEPS, make_sampler, sample_loop
from flaresynth.distill import is_student, load_student
from flaresynth.errors import FlaresynthError
from flaresynth.labels import SCHEMES, flux_to_class, flux_to_label_index
from flaresynth.progress import ProgressBar

#: Nominal observation time written as DATE-OBS (see the module docstring).
NOMINAL_DATE_OBS = "2000-01-01T12:00:00.000"
SDOML_RSUN_ARCSEC = 976.0
SDOML_CDELT_512 = 4.8
RSUN_REF_M = 696_000_000.0
#: AIA telescope number of each channel (AIA_1: 131/335, AIA_2: 193/211, AIA_3: 171/UV, AIA_4: 94/304).
AIA_TELESCOPE = {94: 4, 131: 1, 171: 3, 193: 2, 211: 2, 304: 4, 335: 1, 1600: 3, 1700: 3, 4500: 3}


@dataclass
class TrainedModel:
    """A trained run opened for sampling."""

    path: Path
    denoiser: torch.nn.Module
    meta: dict
    device: torch.device

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.meta["classes"])

    @property
    def kind(self) -> str:
        return self.meta["conditioning"]["kind"]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (int(self.meta["in_channels"]), int(self.meta["sample_size"]), int(self.meta["sample_size"]))

    def transforms(self):
        """One intensity transform per channel (model space <-> DN/s)."""
        from flaresynth.transforms import IntensityTransform

        t = self.meta["transform"]
        items = t if isinstance(t, list) else [t] * self.image_shape[0]
        return [IntensityTransform.from_dict(d, source=str(self.path / "flaresynth.json")) for d in items]


def resolve_run(run: str | Path) -> Path:
    """Run folder of ``run``: a path, or a shipped name like ``demo:discrete``."""
    from flaresynth import pretrained

    path = Path(run)
    if not path.exists() and pretrained.is_shipped_name(str(run)):
        return pretrained.resolve(str(run))
    if not path.is_dir():
        raise FlaresynthError(f"{run}: no such run folder (train one with `flaresynth train`)")
    return path


def model_folder(run: Path) -> Path:
    """``RUN/model`` (or ``run`` itself when it is a model folder)."""
    for cand in (run / "model", run):
        if (cand / "flaresynth.json").is_file():
            return cand
    raise FlaresynthError(f"{run}: no trained model (model/flaresynth.json missing; did the training finish?)")


def pick_device(device: str | None) -> torch.device:
    """``cpu``, ``cuda`` or ``None`` (a GPU when one is visible)."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise FlaresynthError(f"--device {device!r}: expected cpu or cuda")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise FlaresynthError(f"--device {device}: no CUDA GPU is visible")
    return torch.device(device)


def load_run(run: str | Path, device: str | None = None) -> TrainedModel:
    """Open a DDPM run or a distilled student (folder or shipped name) for sampling; weights are the EMA weights
    the run saved."""
    from flaresynth.models.cevae import is_cevae
    from flaresynth.models.unet import load_model

    path = resolve_run(run)
    if is_cevae(path):
        raise FlaresynthError(
            f"{path}: a ceVAE run, not a diffusion model (open it with flaresynth.cevae_sampling.load_cevae_run; "
            "`flaresynth sample` handles both)"
        )
    dev = pick_device(device)
    folder = model_folder(path)
    denoiser, meta = load_student(folder, dev) if is_student(folder) else load_model(folder, device=dev)
    return TrainedModel(path=path, denoiser=denoiser, meta=meta, device=dev)


# ------------------------------------------------------------------------------------------ requests


def parse_fluxes(values) -> list[float]:
    """Fluxes from CLI strings: numbers in W/m² or GOES classes (``M2.5``), comma-separated or repeated."""
    from flaresynth.labels import class_to_flux

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


def build_requests(model: TrainedModel, classes=None, fluxes=None, per_class: int = 8, seed: int = 0) -> pd.DataFrame:
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
        if model.kind != "continuous" and counts.get(c, 0) == 0:
            raise FlaresynthError(
                f"--flux {f:g}: its class {c} was not in the training data (trained on {', '.join(trained)})"
            )
        rows += [{"label": "", "requested_flux": f, "flux_class": c, "condition_label": idx,
                  "condition_log_flux": math.log10(f)}] * per_class
    table = pd.DataFrame(rows)
    table.insert(2, "seed", np.arange(len(table), dtype=np.int64) + int(seed))
    if model.kind == "continuous" and len(table):
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


def conditions(model: TrainedModel, table: pd.DataFrame, embeddings: torch.Tensor | None = None):
    """The :class:`~flaresynth.models.conditioning.Condition` batch of a request table.

    ``embeddings`` (N, D): the image embeddings of a ``discrete+embedding`` model; ``None``: the class means.
    """
    from flaresynth.models.conditioning import Condition

    # torch.tensor copies: pandas hands out read-only views
    labels = torch.tensor(table["condition_label"].to_numpy(dtype=np.int64))
    log_flux = torch.tensor(table["condition_log_flux"].to_numpy(dtype=np.float32))
    emb = None
    if model.kind == "discrete+embedding":
        if embeddings is None:
            emb = model.denoiser.conditioner.class_mean_embedding.detach().cpu()[labels]
        else:
            emb = torch.as_tensor(embeddings, dtype=torch.float32)
            if emb.shape[0] != len(table):
                raise ValueError(f"{emb.shape[0]} embeddings for {len(table)} requests")
    return Condition(labels, log_flux, emb)


def _derived_seed(seed: int, stream: int) -> int:
    """A 32-bit seed for another random stream of the image with ``seed`` (not its initial noise)."""
    return int(np.random.SeedSequence([int(seed), int(stream)]).generate_state(1)[0])


def request_embeddings(model: TrainedModel, table: pd.DataFrame, source: str = "class-mean", data=None,
                       encoder=None) -> tuple[torch.Tensor, np.ndarray]:
    """Embeddings (N, D) for the requests of a ``discrete+embedding`` model, and the dataset row behind each.

    ``source``: ``class-mean``, ``class-gaussian`` or ``image`` (module docstring). ``data``: dataset folder
    (path or opened) for ``image``. ``encoder``: an image encoder overriding the run's ``conditioning.encoder``.
    The second result holds the dataset row of each ``image`` embedding (-1 for the other sources).
    """
    from flaresynth.config import EMBEDDING_SOURCES

    if model.kind != "discrete+embedding":
        raise FlaresynthError(f"--embedding-source: only for discrete+embedding runs (this run is {model.kind})")
    if source not in EMBEDDING_SOURCES:
        raise FlaresynthError(f"--embedding-source {source!r}: expected one of {', '.join(EMBEDDING_SOURCES)}")
    labels = np.array(table["condition_label"], dtype=np.int64)  # copies: pandas hands out read-only views
    seeds = np.array(table["seed"], dtype=np.int64)
    rows = np.full(len(table), -1, dtype=np.int64)
    if source == "class-mean":
        return model.denoiser.conditioner.class_mean_embedding.detach().cpu()[torch.from_numpy(labels)].clone(), rows
    if source == "class-gaussian":
        from flaresynth.models.cevae import ClassGaussians
        from flaresynth.train import EMBEDDING_CLASSES_FILE

        path = model_folder(model.path) / EMBEDDING_CLASSES_FILE
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
    from flaresynth.dataset import DatasetFolder, open_dataset
    from flaresynth.models.conditioning import as_encoder, embed_all, load_encoder

    if data is None:
        raise FlaresynthError("--embedding-source image: needs --embedding-data DS (a dataset folder with "
                              "training images of the requested classes)")
    ds = data if isinstance(data, DatasetFolder) else open_dataset(data)
    if ds.scheme != model.meta["scheme"]:
        raise FlaresynthError(f"{ds.path / 'manifest.json'}: scheme: {ds.scheme!r}, but the run has {model.meta['scheme']!r}")
    train_rows = ds.split_indices("train")
    ds_labels = ds.label_index()[train_rows]
    for k in np.unique(labels):
        cands = train_rows[ds_labels == k]
        if not len(cands):
            raise FlaresynthError(f"{ds.path / 'labels.csv'}: label: no training image of class {model.classes[k]} "
                                  "to take an embedding from")
        for i in np.flatnonzero(labels == k):
            rows[i] = cands[np.random.default_rng(_derived_seed(seeds[i], 2)).integers(len(cands))]
    enc = as_encoder(encoder) if encoder is not None else load_encoder(model.meta["config"]["conditioning"]["encoder"])
    images = torch.from_numpy(np.asarray(ds.images[np.sort(np.unique(rows))], dtype=np.float32))
    emb_unique = embed_all(enc, images)
    lookup = {int(r): j for j, r in enumerate(np.sort(np.unique(rows)))}
    return emb_unique[[lookup[int(r)] for r in rows]], rows


# ------------------------------------------------------------------------------------------ generation


def auto_batch_size(model: TrainedModel, guidance: float) -> int:
    """A batch that fits in memory: a rough activation estimate against a quarter of the free memory."""
    c, s, _ = model.image_shape
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


def generate(model: TrainedModel, table: pd.DataFrame, sampler: str = "ddpm", steps: int | None = None,
             guidance: float = 2.0, batch_size: int | None = None, progress: bool = False,
             embeddings: torch.Tensor | None = None) -> np.ndarray:
    """Images for a request table: float32 (N, C, H, W) in [-1, 1].

    ``sampler``: ddpm | ddim | dpm++ | unipc; ``steps`` ``None`` = the sampler's default; ``guidance`` = CFG w;
    ``embeddings``: per-request image embeddings of a ``discrete+embedding`` model (``None``: class means;
    see :func:`request_embeddings`).
    """
    if steps is not None and (int(steps) != steps or steps < 1):
        raise FlaresynthError(f"--steps {steps!r}: expected a whole number >= 1")
    if not math.isfinite(guidance) or guidance < 0:
        raise FlaresynthError(f"--guidance {guidance!r}: expected a number >= 0 (0 = no guidance)")
    if batch_size is not None and batch_size < 1:
        raise FlaresynthError(f"--batch-size {batch_size!r}: expected a whole number >= 1")
    sched_cfg = model.meta["scheduler"]
    make_sampler(sampler, sched_cfg, steps)  # validates name and steps before any work
    batch = batch_size or auto_batch_size(model, guidance)
    cond = conditions(model, table, embeddings)
    seeds = table["seed"].to_numpy()
    n = len(table)
    n_steps = steps or SAMPLER_DEFAULT_STEPS[sampler]
    bar = None
    if progress:
        bar = ProgressBar(n * n_steps, f"{sampler} {n_steps} steps", unit="img·step")
    out = []
    for lo in range(0, n, batch):
        hi = min(n, lo + batch)
        sched = make_sampler(sampler, sched_cfg, steps)  # fresh: multistep solvers keep per-run state
        cb = (lambda _i, k=hi - lo: bar.update(k)) if bar is not None else None
        out.append(sample_loop(model.denoiser, sched, cond.index(slice(lo, hi)), seeds[lo:hi], model.image_shape,
                               guidance=guidance, device=model.device, callback=cb))
    if bar is not None:
        bar.close()
    return torch.cat(out).numpy() if out else np.zeros((0, *model.image_shape), np.float32)


def check_student_settings(model: TrainedModel, sampler: str, steps: int | None, guidance: float) -> None:
    """A distilled student samples with the sampler and step count it was trained for, at a w it learned."""
    own_sampler, own_steps = model.meta["config"]["sample"]["sampler"], model.meta["student"]["steps"]
    if sampler != own_sampler or (steps is not None and int(steps) != own_steps):
        raise FlaresynthError(f"--sampler/--steps {sampler} {steps}: {model.path} is a distilled student trained for "
                              f"{own_sampler} {own_steps} steps; sample it with those (its defaults)")
    lo, hi = model.meta["student"]["guidance_range"]
    if not lo <= guidance <= hi:
        raise FlaresynthError(f"--guidance {guidance:g}: {model.path} is a distilled student that learned w from "
                              f"{lo:g} to {hi:g}")


# ------------------------------------------------------------------------------------------ writing


def channel_wavelength(channel: str) -> int:
    """``'171A'`` -> 171."""
    digits = "".join(ch for ch in str(channel) if ch.isdigit())
    return int(digits) if digits else 171


def fits_header(size: int, channel: str = "171A", extra: dict | None = None):
    """An AIA-like FITS header for a synthetic ``size``×``size`` image in DN/s (geometry: module docstring)."""
    from astropy.io import fits

    wave = channel_wavelength(channel)
    cdelt = SDOML_CDELT_512 * 512 / size
    dsun = RSUN_REF_M / math.sin(math.radians(SDOML_RSUN_ARCSEC / 3600.0))
    h = fits.Header()
    cards = [
        ("TELESCOP", "SDO/AIA", "synthetic image in the SDO/AIA frame"),
        ("INSTRUME", f"AIA_{AIA_TELESCOPE.get(wave, 3)}", "AIA telescope of this wavelength"),
        ("DETECTOR", "AIA", None),
        ("WAVELNTH", wave, "[angstrom] channel"),
        ("WAVEUNIT", "angstrom", None),
        ("BUNIT", "DN/s", "exposure-normalised, as SDOMLv2"),
        ("PIXLUNIT", "DN/s", None),
        ("DATE-OBS", NOMINAL_DATE_OBS, "nominal epoch (J2000), not an observation"),
        ("T_OBS", NOMINAL_DATE_OBS, "nominal epoch (J2000), not an observation"),
        ("CTYPE1", "HPLN-TAN", None),
        ("CTYPE2", "HPLT-TAN", None),
        ("CUNIT1", "arcsec", None),
        ("CUNIT2", "arcsec", None),
        ("CDELT1", cdelt, "[arcsec/pix] SDOMLv2 4.8 at 512 px"),
        ("CDELT2", cdelt, "[arcsec/pix]"),
        ("CRPIX1", (size + 1) / 2.0, "disk centre = image centre"),
        ("CRPIX2", (size + 1) / 2.0, None),
        ("CRVAL1", 0.0, "[arcsec]"),
        ("CRVAL2", 0.0, "[arcsec]"),
        ("CROTA2", 0.0, "[deg] solar north up"),
        ("RSUN_OBS", SDOML_RSUN_ARCSEC, "[arcsec] SDOMLv2 normalised radius"),
        ("RSUN_REF", RSUN_REF_M, "[m]"),
        ("DSUN_OBS", dsun, "[m] distance where RSUN_REF appears as RSUN_OBS"),
        ("HGLN_OBS", 0.0, "[deg] observer on the Sun-Earth line"),
        ("HGLT_OBS", 0.0, "[deg]"),
        ("SYNTHETI", True, "generated by flaresynth, not observed"),
    ]
    for key, value, comment in cards:
        h[key] = (value, comment) if comment else value
    for key, value in (extra or {}).items():
        h[key] = value
    return h


def write_fits(path: Path, image_dn: np.ndarray, channels: list[str], extra: dict) -> None:
    """One FITS file: the first channel in the primary HDU, any further channel in an image extension."""
    from astropy.io import fits

    size = image_dn.shape[-1]
    hdus = []
    for i, ch in enumerate(channels):
        header = fits_header(size, ch, extra)
        data = np.asarray(image_dn[i], dtype=np.float32)
        hdus.append(fits.PrimaryHDU(data, header) if i == 0 else fits.ImageHDU(data, header))
    fits.HDUList(hdus).writeto(path, overwrite=True)


def save_grid(images: np.ndarray, row_labels: list[str], path: Path, title: str = "", n_cols: int | None = None,
              channel: str = "171A") -> None:
    """PNG grid of model-space images (first channel), one row per distinct label, in the channel's AIA
    colour map (sunpy's ``sdoaia171`` for 171 Å)."""
    import sunpy.visualization.colormaps  # noqa: F401  (registers the sdoaia* colour maps)
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    groups: dict[str, list[int]] = {}
    for i, lab in enumerate(row_labels):
        groups.setdefault(lab, []).append(i)
    n_cols = n_cols or max(len(v) for v in groups.values())
    n_rows = len(groups)
    width = 1.2 * n_cols + 0.8
    if title:
        title = "\n".join(textwrap.wrap(title, width=max(20, int(width * 13))))
    top = 0.25 + 0.18 * title.count("\n") if title else 0.05
    fig = Figure(figsize=(width, 1.2 * n_rows + top))
    name = f"sdoaia{channel_wavelength(channel)}"
    cmap = colormaps[name if name in colormaps else "sdoaia171"]
    for r, (lab, idx) in enumerate(groups.items()):
        for c in range(n_cols):
            ax = fig.add_subplot(n_rows, n_cols, r * n_cols + c + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if c < len(idx):
                ax.imshow(images[idx[c], 0], cmap=cmap, vmin=-1, vmax=1, origin="lower", interpolation="nearest")
            if c == 0:
                ax.set_ylabel(lab, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=8)
    height = 1.2 * n_rows + top
    fig.subplots_adjust(left=0.8 / width, right=0.99, bottom=0.01, top=1 - top / height, wspace=0.04, hspace=0.04)
    fig.savefig(path, dpi=100)


def _row_label(row) -> str:
    if row["label"]:
        return str(row["label"])
    return f"{flux_to_class(row['requested_flux'])}"


def image_writer(images: np.ndarray, table: pd.DataFrame, transforms, channels: list[str], scheme: str,
                 model_id: str, header: Callable[[pd.Series], dict], grid_title: str, fits: bool = True,
                 grid: bool = True) -> Callable[[Path], None]:
    """The ``extra`` step of :func:`flaresynth.samples.write_samples` shared by every generator: one FITS file
    per image in DN/s (``fits/NNNNN_<label>.fits``, named in the table's ``file`` column) with the common
    header cards plus the generator's own (``header(row)``), and the PNG grid."""
    names = [f"{i:05d}_{_row_label(row)}.fits" for i, row in table.iterrows()]
    if fits:
        table["file"] = [f"fits/{n}" for n in names]

    def extra(tmp: Path) -> None:
        if fits:
            (tmp / "fits").mkdir()
            for i, row in table.iterrows():
                dn = np.stack([transforms[c].inverse(images[i, c]) for c in range(images.shape[1])])
                req_flux = row["requested_flux"]
                cards = {
                    "GOESCLS": (row["label"] or row["flux_class"], f"requested class (scheme {scheme})"),
                    "GOESFLUX": (float(req_flux) if np.isfinite(req_flux) else "none", "[W/m2] requested XRS-B flux"),
                    "SEED": (int(row["seed"]), "seed of this image"),
                    # a long id keeps its full value and drops the comment, so the card stays within 80 characters
                    "MODELID": (str(model_id)[:68], "flaresynth model id" if len(str(model_id)) <= 46 else ""),
                    **header(row),
                }
                write_fits(tmp / "fits" / names[i], dn, channels, cards)
        if grid:
            save_grid(images, [_row_label(r) for _, r in table.iterrows()], tmp / "grid.png", title=grid_title,
                      channel=channels[0])

    return extra


def sample(run: str | Path, out: str | Path, classes=None, fluxes=None, per_class: int = 8,
           sampler: str | None = None, steps: int | None = None, guidance: float | None = None, seed: int = 0,
           batch_size: int | None = None, device: str | None = None, fits: bool = True, grid: bool = True,
           overwrite: bool = False, progress: bool = False, embedding_source: str | None = None,
           embedding_data: str | Path | None = None) -> Path:
    """Generate images from a run (DDPM or ceVAE) and write a samples folder; returns its path.

    A ceVAE run goes to :func:`flaresynth.cevae_sampling.sample_cevae`; ``sampler``, ``steps``, ``guidance``
    and ``progress`` do not apply to it and are ignored.

    Parameters
    ----------
    run : run folder or shipped name (``demo:discrete``).
    out : samples folder to write (appears only when complete).
    classes : class names of the run's scheme (``["A", "M", "X"]`` or ``["low", "high"]``).
    fluxes : XRS-B fluxes in W/m².
    per_class : images per requested class or flux.
    sampler, steps, guidance : ``None`` = the run's defaults (config ``sample``); guidance is CFG w.
    seed : image i gets seed ``seed + i``.
    batch_size : images per forward pass (``None``: sized to the free memory).
    device : cpu, cuda or ``None`` (GPU when visible).
    embedding_source : ``discrete+embedding`` runs: class-mean, class-gaussian or image (``None``: the run's
        default; ``image`` when only ``embedding_data`` is given).
    embedding_data : dataset folder the ``image`` embeddings come from (its train split).
    """
    from flaresynth.models.cevae import is_cevae

    out = Path(out)
    if out.exists() and not overwrite:
        raise FlaresynthError(f"{out}: exists; choose another --out (or pass overwrite)")
    if is_cevae(resolve_run(run)):
        # sampler, steps and guidance do not apply (one decoder pass) and are ignored, so code that loops
        # over generators can pass the same arguments to every run; the embedding options would be a mistake
        for name, value in (("--embedding-source", embedding_source), ("--embedding-data", embedding_data)):
            if value is not None:
                raise FlaresynthError(f"{name}: not used by a ceVAE run ({run}), which decodes latents drawn from "
                                      "its per-class Gaussians")
        from flaresynth.cevae_sampling import sample_cevae

        return sample_cevae(resolve_run(run), out, classes, fluxes, per_class, seed, batch_size, device, fits, grid,
                            overwrite)
    model = load_run(run, device)
    defaults = model.meta["config"]["sample"]
    sampler = sampler or defaults["sampler"]
    steps = steps if steps is not None else defaults["steps"]
    guidance = float(defaults["guidance"] if guidance is None else guidance)
    if steps is not None and int(steps) < 1:
        raise FlaresynthError(f"--steps {steps}: expected a whole number >= 1")
    student = model.meta.get("student")
    if student is not None:
        check_student_settings(model, sampler, steps, guidance)
    table = build_requests(model, classes, fluxes, per_class, seed)
    embeddings, source = None, None
    if model.kind == "discrete+embedding":
        source = embedding_source or ("image" if embedding_data is not None else
                                      defaults.get("embedding_source", "class-mean"))
        embeddings, rows = request_embeddings(model, table, source, embedding_data)
        table["embedding_source"] = source
        if source == "image":
            table["embedding_row"] = rows
    elif embedding_source is not None or embedding_data is not None:
        raise FlaresynthError(f"--embedding-source: only for discrete+embedding runs (this run is {model.kind})")
    images = generate(model, table, sampler, steps, guidance, batch_size, progress=progress, embeddings=embeddings)
    n_steps = steps or SAMPLER_DEFAULT_STEPS[sampler]
    model_id = model.meta.get("model_id", model.path.name)
    channels = list(model.meta.get("channels") or ["171A"])

    def header(row) -> dict:
        cards = {
            "SAMPLER": (sampler, "diffusers scheduler used"),
            "NSTEPS": (int(n_steps), "sampling steps"),
            "CFGW": (guidance, "CFG w: e_c + w (e_c - e_u)"),
            "CONDKIND": (model.kind, "conditioning"),
        }
        if model.kind == "continuous":
            cards["CONDLFLX"] = (float(row["condition_log_flux"]), "[log10 W/m2] flux given to the model")
        if source is not None:
            cards["EMBSRC"] = (source, "where the image embedding came from")
        return cards

    extra = image_writer(images, table, model.transforms(), channels, model.meta["scheme"], model_id, header,
                         f"{model_id} | {sampler} {n_steps} steps | w={guidance:g}", fits=fits, grid=grid)

    manifest = {
        "generator": "flaresynth-ddpm",
        "classes": list(model.classes),
        "scheme": model.meta["scheme"],
        "transform": model.meta["transform"],
        "channels": channels,
        "image_size": int(model.image_shape[-1]),
        "sampler": sampler,
        "steps": int(n_steps),
        "guidance": guidance,
        "guidance_convention": "eps_c + w (eps_c - eps_u); fpramunno/Modelling_Solar_Image_with_DDPM's lerp cfg_scale = w + 1",
        "seed": int(seed),
        "per_class": int(per_class),
        "model_id": model_id,
        "run": str(model.path),
        "conditioning": model.kind,
        **({"embedding_source": source} if source is not None else {}),
        **({"distilled": {k: student[k] for k in ("stage", "steps", "teacher_id", "guidance_range") if k in student}}
           if student is not None else {}),
        **({"embedding_data": str(embedding_data)} if source == "image" else {}),
        "ema_weights": True,
        "date_obs": f"{NOMINAL_DATE_OBS} (nominal J2000 epoch; synthetic images have no observation time)",
        "device": str(model.device),
        "flaresynth_version": __version__,
    }
    from flaresynth.samples import write_samples

    return write_samples(out, images, table, manifest, extra=extra, overwrite=overwrite)


__all__ = [
    "TrainedModel",
    "resolve_run",
    "load_run",
    "parse_fluxes",
    "parse_classes",
    "build_requests",
    "conditions",
    "request_embeddings",
    "generate",
    "fits_header",
    "write_fits",
    "save_grid",
    "sample",
]
