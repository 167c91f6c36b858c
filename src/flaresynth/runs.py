"""Trained runs: the run folder, what kind of model it holds, and the one door to open it (:func:`open_run`).

A run is what ``flaresynth train`` writes (:mod:`flaresynth.train`), or a shipped run named like
``demo:discrete`` (:mod:`flaresynth.pretrained`). Opening one resolves the name or path once, reads the
metadata, checks the files, picks the device and loads the weights, like diffusers' ``from_pretrained``::

    RUN/
      config.yaml          the resolved training config          (CONFIG_FILE)
      provenance.json      command, data hash, versions, timings (PROVENANCE_FILE)
      model/               the final EMA weights                 (MODEL_DIR)
        flaresynth.json    metadata: model_type, classes, scheme, intensity transform, conditioning,
                           scheduler, config, train counts, ...  (META_FILE)
        DDPM:  config.json + diffusion_pytorch_model.safetensors (UNet2DModel.save_pretrained),
               conditioner.safetensors (continuous, discrete+embedding), scheduler/,
               embedding_classes.npz (discrete+embedding: per-class embedding Gaussians)
        ceVAE: config.json + model.safetensors, latent_classes.npz (per-class latent Gaussians)
        student (distilled, :mod:`flaresynth.distill`): the DDPM's U-Net files + student.safetensors, scheduler/
        autoencoder (of latent diffusion, :mod:`flaresynth.models.autoencoder`): AutoencoderKL.save_pretrained
      autoencoder/         latent runs only (DDPM or student with a ``latent`` section in flaresynth.json): a
                           copy of the autoencoder run's model folder, so the run needs nothing else to sample
                           (a shipped latent run has none: it names a shipped autoencoder run instead, below)

The model kind (:func:`kind_of`) is ``flaresynth.json``'s ``model_type``; DDPM runs and distilled students
predate the field and are told apart by the ``student`` section. A kind is opened by its loader in
:data:`_LOADERS`; a new kind adds its loader there and its name to :data:`MODEL_KINDS`. A latent DDPM is a DDPM
(or student) whose metadata has a ``latent`` section (scaling factor, the autoencoder's id and data hash):
:func:`open_run` then also opens its autoencoder (:attr:`Run.autoencoder`, found by
:func:`latent_autoencoder_folder`), and sampling decodes with it: ``RUN/autoencoder/``, or, when the ``latent``
section's ``autoencoder`` is a shipped name (``demo:autoencoder``), that shipped run, so the package holds the
autoencoder its latent runs share once (:mod:`flaresynth.pretrained`). Either way its ``model_id`` must be the
``autoencoder_id`` the run recorded.

Everything that opens a run asks this module: sampling, the demo, the report, the image encoder of a
``discrete+embedding`` DDPM (:func:`load_encoder`, ``conditioning.encoder: cevae:RUN``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flaresynth import pretrained
from flaresynth.errors import FlaresynthError
from flaresynth.io import atomic_file, read_json, write_json
from flaresynth.transforms import IntensityTransform, channel_transforms

if TYPE_CHECKING:
    import torch

    from flaresynth.models.autoencoder import LatentAutoencoder
    from flaresynth.models.cevae import CevaeEncoder, ClassGaussians
    from flaresynth.models.conditioning import ImageEncoder
    from flaresynth.models.decoder_noise import DecoderNoise

# torch, diffusers and the networks are imported inside the functions that load weights: the report and the
# demo's summary read run folders (metadata, file names) without them, and importing them costs seconds
# (measured on the project's 2-core machine, busy: `import diffusers` 7.6 s and `import torch` 3.4 s of CPU time,
# against 0.1 s for `import flaresynth.report`, which imports this module for its file names).

MODEL_DIR = "model"
META_FILE = "flaresynth.json"
CONFIG_FILE = "config.yaml"
PROVENANCE_FILE = "provenance.json"
SCHEDULER_DIR = "scheduler"
#: Per-class Gaussians of a discrete+embedding run's training embeddings (``embedding_source: class-gaussian``).
EMBEDDING_CLASSES_FILE = "embedding_classes.npz"
#: Per-class Gaussians of a ceVAE run's training latents (what its sampler draws from).
LATENT_CLASSES_FILE = "latent_classes.npz"
#: ``RUN/autoencoder/``: a latent run's copy of its autoencoder's model folder.
AUTOENCODER_DIR = "autoencoder"
#: Model kinds this version opens (:func:`kind_of`).
MODEL_KINDS = ("ddpm", "cevae", "student", "autoencoder")
#: Kinds without a diffusion scheduler or conditioning.
_NOT_DIFFUSION = ("cevae", "autoencoder")
#: Fields every ``flaresynth.json`` holds.
META_FIELDS = ("classes", "scheme", "transform")


@dataclass
class Run:
    """A trained run opened for use: its weights on a device and its metadata.

    ``path`` is the run folder, ``folder`` its model folder (``RUN/model``, or ``path`` when a model folder was
    opened); ``network`` the :class:`~flaresynth.models.unet.Denoiser` of a DDPM or the
    :class:`~flaresynth.models.cevae.CeVAE` or the :class:`~flaresynth.models.autoencoder.LatentAutoencoder`;
    ``gaussians`` the per-class latent Gaussians of a ceVAE; ``name`` the shipped name it was opened by, if any;
    ``autoencoder`` the decoder of a latent DDPM (``None`` for a pixel one); ``decoder_noise`` the residual model
    of that autoencoder, or of an autoencoder run itself (:mod:`flaresynth.models.decoder_noise`; ``None`` when its
    folder has none).
    """

    path: Path
    folder: Path
    kind: str
    meta: dict
    network: torch.nn.Module
    device: torch.device
    gaussians: ClassGaussians | None = None
    name: str | None = None
    autoencoder: LatentAutoencoder | None = None
    decoder_noise: DecoderNoise | None = None

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.meta["classes"])

    @property
    def scheme(self) -> str:
        return self.meta["scheme"]

    @property
    def conditioning(self) -> str:
        """``discrete``, ``continuous``, ``discrete+embedding`` for a DDPM or student; ``cevae`` for the ceVAE,
        ``autoencoder`` for an autoencoder."""
        return self.kind if self.kind in _NOT_DIFFUSION else self.meta["conditioning"]["kind"]

    @property
    def latent(self) -> dict | None:
        """A latent DDPM's ``latent`` metadata (scaling factor, image size, autoencoder id); ``None`` for pixels."""
        return self.meta.get("latent") if self.kind not in _NOT_DIFFUSION else None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the run makes (a latent run's decoded images)."""
        if self.kind in _NOT_DIFFUSION:
            return (self.network.in_channels, self.network.sample_size, self.network.sample_size)
        if self.latent is not None:
            c, s = int(self.latent["image_channels"]), int(self.latent["image_size"])
            return (c, s, s)
        return self.sample_shape

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of what the diffusion model denoises: the image, or a latent run's latent."""
        return (int(self.meta["in_channels"]), int(self.meta["sample_size"]), int(self.meta["sample_size"]))

    @property
    def channels(self) -> list[str]:
        return list(self.meta.get("channels") or ["171A"])

    @property
    def model_id(self) -> str:
        return self.meta.get("model_id", self.path.name)

    @property
    def sample_defaults(self) -> dict:
        """The config's ``sample`` section: default sampler, steps, guidance, embedding source."""
        return sample_section(self.meta)

    def transforms(self) -> list[IntensityTransform]:
        """One intensity transform per channel (model space <-> DN/s)."""
        return channel_transforms(self.meta["transform"], self.image_shape[0], str(self.folder / META_FILE))

    def encoder(self) -> CevaeEncoder:
        """A ceVAE run's encoder as a frozen image encoder (images -> latent means)."""
        # weights-side import: see the note above the module's imports
        from flaresynth.models.cevae import CevaeEncoder

        if self.kind != "cevae":
            raise FlaresynthError(f"{self.folder / META_FILE}: model_type: {self.kind!r}, but an image encoder "
                                  "needs a ceVAE run")
        return CevaeEncoder(self.network, self.meta, self.device)


# ------------------------------------------------------------------------------------------ the folder


def shipped_runs() -> dict[str, Path]:
    """Shipped runs present in this installation (:mod:`flaresynth.pretrained`): name -> run folder."""
    found = {}
    for name, folder in pretrained.SHIPPED.items():
        path = pretrained.HERE / folder
        if (path / MODEL_DIR / META_FILE).is_file():
            found[name] = path
    return found


def is_shipped_name(run: str | Path) -> bool:
    """True for strings of the form ``demo:...`` (a shipped-run name rather than a path)."""
    prefix, sep, _ = str(run).partition(":")
    return bool(sep) and prefix == pretrained.PREFIX


def resolve_shipped(name: str) -> Path:
    """Folder of the shipped run ``name``; a one-line error listing the shipped runs when it is absent."""
    have = shipped_runs()
    if name in have:
        return have[name]
    listing = ", ".join(sorted(have)) if have else "none are installed yet"
    if name not in pretrained.SHIPPED:
        raise FlaresynthError(f"--run {name}: unknown shipped run (names: {', '.join(pretrained.SHIPPED)}; "
                              f"installed: {listing})")
    raise FlaresynthError(
        f"--run {name}: no shipped weights in {pretrained.HERE / pretrained.SHIPPED[name]} (shipped runs installed: "
        f"{listing}); train a run with `flaresynth train --preset demo` and pass its folder"
    )


def resolve(run: str | Path) -> Path:
    """Run folder of ``run``: a path, or a shipped name like ``demo:discrete``."""
    path = Path(run)
    if not path.exists() and is_shipped_name(run):
        return resolve_shipped(str(run))
    if not path.is_dir():
        raise FlaresynthError(f"{run}: no such run folder (train one with `flaresynth train`)")
    return path


def model_folder(run: str | Path) -> Path:
    """``RUN/model`` (or ``run`` itself when it is a model folder): the folder holding ``flaresynth.json``."""
    run = Path(run)
    for cand in (run / MODEL_DIR, run):
        if (cand / META_FILE).is_file():
            return cand
    raise FlaresynthError(f"{run / MODEL_DIR / META_FILE}: missing (no trained model; did the training finish?)")


def kind_of(meta: dict) -> str:
    """The model kind of a run's metadata: ``model_type``, or for older runs ``student``/``ddpm``."""
    return meta.get("model_type") or ("student" if "student" in meta else "ddpm")


def sample_section(meta: dict) -> dict:
    """The ``sample`` section of a run's config from its metadata (``flaresynth.json``); {} when it has none."""
    return dict((meta.get("config") or {}).get("sample") or {})


def read_meta(folder: Path) -> dict:
    """``flaresynth.json`` of a model folder, checked: readable, a known model kind, the common fields."""
    path = Path(folder) / META_FILE
    try:
        meta = read_json(path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise FlaresynthError(f"{path}: unreadable ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if not isinstance(meta, dict):
        raise FlaresynthError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    kind = kind_of(meta)
    if kind not in MODEL_KINDS:
        raise FlaresynthError(f"{path}: model_type: {kind!r} is not a model kind this flaresynth opens "
                              f"(expected one of {', '.join(MODEL_KINDS)}; a newer flaresynth may)")
    for key in META_FIELDS + (("conditioning", "scheduler") if kind not in _NOT_DIFFUSION else ()):
        if key not in meta:
            raise FlaresynthError(f"{path}: field {key!r}: missing (not a flaresynth run's metadata)")
    return meta


def write_meta(folder: str | Path, meta: dict) -> Path:
    """Write ``flaresynth.json`` into a model folder (the training loop does, after the weights)."""
    path = Path(folder) / META_FILE
    write_json(path, meta)
    return path


def store_half(run: str | Path) -> list[Path]:
    """Rewrite the float32 weights of a run folder in float16 (half the bytes: how a larger network fits the
    package's size budget, :mod:`flaresynth.pretrained`); returns the files rewritten.

    Rewrites ``model/*.safetensors`` and, for a latent run that keeps its own autoencoder, ``autoencoder/``'s.
    Every loader casts them back to the network's float32 on opening, so the run computes as before up to float16
    rounding of its weights (~1e-4 relative). Each rewritten folder's metadata records ``weights_dtype: float16``.
    A run folder only (not a shipped name: the package's files are not rewritten in place); weights beyond
    float16's range are an error, found before any file is rewritten.
    """
    import torch  # weights-side imports: see the note above the module's imports
    from safetensors.torch import load_file, save

    if is_shipped_name(run):
        raise FlaresynthError(f"{run}: a shipped run; copy its folder and store the copy at half precision")
    folder = model_folder(run)
    own_autoencoder = folder.parent / AUTOENCODER_DIR
    folders = [folder, own_autoencoder] if (own_autoencoder / META_FILE).is_file() else [folder]
    halves = {}
    for path in [p for f in folders for p in sorted(f.glob("*.safetensors"))]:
        tensors = load_file(str(path))
        too_large = [k for k, v in tensors.items() if v.is_floating_point() and v.abs().max() > 65504]
        if too_large:
            raise FlaresynthError(f"{path}: {too_large[0]}: values beyond float16's range (65504); kept in float32")
        halves[path] = {k: v.half() if v.dtype == torch.float32 else v for k, v in tensors.items()}
    for path, half in halves.items():
        with atomic_file(path) as fh:
            fh.write(save(half, metadata={"format": "pt"}))
    for f in folders:
        write_meta(f, {**read_meta(f), "weights_dtype": "float16"})
    return list(halves)


def model_kind(run: str | Path) -> str:
    """The model kind (``ddpm``, ``cevae``, ``student``, ``autoencoder``) of a run folder or shipped name, without loading weights."""
    return kind_of(read_meta(model_folder(resolve(run))))


def pick_device(device: str | torch.device | None) -> torch.device:
    """``cpu``, ``cuda[:N]`` or ``None`` (a GPU when one is visible)."""
    import torch  # weights-side import: see the note above the module's imports

    if isinstance(device, torch.device):
        return device
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise FlaresynthError(f"--device {device!r}: expected cpu or cuda")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise FlaresynthError(f"--device {device}: no CUDA GPU is visible")
    return torch.device(device)


def _require(folder: Path, *alternatives: str) -> None:
    """One line naming the weights file when none of ``alternatives`` is in ``folder``."""
    if not any((folder / name).is_file() for name in alternatives):
        raise FlaresynthError(f"{folder / alternatives[0]}: missing (the run's weights; copy the whole model folder "
                              "or train the run again)")


# ------------------------------------------------------------------------------------------ loaders


def _load_ddpm(folder: Path, meta: dict, device: torch.device) -> tuple[torch.nn.Module, None]:
    # weights-side import: see the note above the module's imports
    from flaresynth.models.unet import CONDITIONER_FILE, load_denoiser

    _require(folder, "config.json")
    _require(folder, "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
    if meta["conditioning"].get("kind") != "discrete":
        _require(folder, CONDITIONER_FILE)
    return load_denoiser(folder, meta["conditioning"], device), None


def _load_cevae(folder: Path, meta: dict, device: torch.device) -> tuple[torch.nn.Module, ClassGaussians]:
    from flaresynth.models import cevae  # weights-side import: see the note above the module's imports

    _require(folder, cevae.CONFIG_FILE)
    _require(folder, cevae.WEIGHTS_FILE)
    _require(folder, LATENT_CLASSES_FILE)
    model = cevae.CeVAE.from_pretrained(folder).to(device)
    gauss = cevae.ClassGaussians.load(folder / LATENT_CLASSES_FILE)
    if tuple(gauss.classes) != tuple(meta["classes"]):
        raise FlaresynthError(f"{folder / LATENT_CLASSES_FILE}: classes {gauss.classes} differ from the model's "
                              f"{tuple(meta['classes'])}")
    return model, gauss


def _load_student(folder: Path, meta: dict, device: torch.device) -> tuple[torch.nn.Module, None]:
    from flaresynth.models import student  # weights-side import: see the note above the module's imports

    _require(folder, "config.json")
    _require(folder, "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
    _require(folder, student.STUDENT_FILE)
    return student.load_student(folder, meta, device), None


def _load_autoencoder(folder: Path, meta: dict, device: torch.device) -> tuple[torch.nn.Module, None]:
    from flaresynth.models import autoencoder  # weights-side import: see the note above the module's imports

    _require(folder, "config.json")
    _require(folder, "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
    return autoencoder.load_autoencoder(folder, device), None


#: Model kind -> loader(model folder, metadata, device) -> (network, per-class latent Gaussians or None).
_LOADERS: dict[str, Callable[[Path, dict, torch.device], tuple[torch.nn.Module, ClassGaussians | None]]] = {
    "ddpm": _load_ddpm,
    "cevae": _load_cevae,
    "student": _load_student,
    "autoencoder": _load_autoencoder,
}


def autoencoder_meta(spec: str | Path) -> tuple[Path, dict]:
    """Model folder and checked metadata of the autoencoder run ``spec`` (no weights loaded).

    A missing folder or a run of another kind is a one-line error naming it (``latent.autoencoder``).
    """
    path = Path(spec)
    if not path.exists() and not (is_shipped_name(spec) and str(spec) in shipped_runs()):
        raise FlaresynthError(f"{spec}: latent.autoencoder: no such autoencoder run (train one with "
                              "`flaresynth train --preset autoencoder-demo`, or autoencoder-demo128 at 128 px, and pass it "
                              "with --autoencoder RUN)")
    folder = model_folder(resolve(spec))
    meta = read_meta(folder)
    if kind_of(meta) != "autoencoder":
        raise FlaresynthError(f"{folder / META_FILE}: model_type: {kind_of(meta)!r}, but latent.autoencoder needs an "
                              "autoencoder run")
    return folder, meta


def latent_autoencoder_folder(path: Path, folder: Path, meta: dict) -> Path:
    """The autoencoder folder of the latent run at ``path`` (model folder ``folder``, metadata ``meta``).

    ``RUN/autoencoder/`` (the copy ``flaresynth train`` writes), unless the metadata's ``latent.autoencoder`` is a
    shipped name (``demo:autoencoder``): then that shipped run's model folder, so the package's latent runs share
    one copy. A missing one is a one-line error. Not checked against the run's ``autoencoder_id`` here.
    """
    ref = str((meta.get("latent") or {}).get("autoencoder") or AUTOENCODER_DIR)
    if is_shipped_name(ref):
        if ref not in shipped_runs():
            raise FlaresynthError(f"{folder / META_FILE}: latent.autoencoder: {ref!r} is not installed (the shipped "
                                  f"autoencoder this run decodes with; expected in {pretrained.HERE})")
        return model_folder(resolve_shipped(ref))
    ae_dir = next((p for p in (path / AUTOENCODER_DIR, folder.parent / AUTOENCODER_DIR) if p.is_dir()),
                  path / AUTOENCODER_DIR)
    if not (ae_dir / META_FILE).is_file():
        raise FlaresynthError(f"{ae_dir}: missing (a latent run keeps its autoencoder there; copy the whole run "
                              "folder)")
    return ae_dir


def _latent_autoencoder(path: Path, folder: Path, meta: dict, device: torch.device) -> tuple[LatentAutoencoder, Path]:
    """The autoencoder of a latent run (:func:`latent_autoencoder_folder`), checked against its ``latent`` record, and
    its model folder."""
    from flaresynth.models.autoencoder import load_autoencoder  # weights-side import (see above)

    ae_folder, ae_meta = autoencoder_meta(latent_autoencoder_folder(path, folder, meta))
    want = meta["latent"]
    if ae_meta.get("model_id") != want.get("autoencoder_id"):
        raise FlaresynthError(f"{ae_folder / META_FILE}: model_id {ae_meta.get('model_id')!r}, but the run was "
                              f"trained in the latents of {want.get('autoencoder_id')!r}")
    _require(ae_folder, "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
    return load_autoencoder(ae_folder, device), ae_folder


def _decoder_noise(ae_folder: Path, autoencoder: LatentAutoencoder) -> DecoderNoise | None:
    """The residual model in an autoencoder's model folder, checked against its image shape; ``None`` without one."""
    from flaresynth.models.decoder_noise import DECODER_NOISE_FILE, DecoderNoise

    if not (ae_folder / DECODER_NOISE_FILE).is_file():
        return None
    noise = DecoderNoise.load(ae_folder / DECODER_NOISE_FILE)
    want = (autoencoder.in_channels, autoencoder.sample_size, autoencoder.sample_size)
    if noise.shape != want:
        raise FlaresynthError(f"{ae_folder / DECODER_NOISE_FILE}: fits images of shape {noise.shape}, but the "
                              f"autoencoder makes {want} (refit it with `flaresynth refit --run RUN --data DATA`)")
    return noise


def open_run(run: str | Path, device: str | torch.device | None = None) -> Run:
    """Open a trained run (a run folder, its model folder, or a shipped name like ``demo:discrete``).

    Loads the EMA weights the run saved onto ``device`` (``None``: a GPU when one is visible), in eval mode.
    A folder missing its weights, or whose ``flaresynth.json`` is unreadable or of an unknown model kind,
    raises :class:`~flaresynth.errors.FlaresynthError` naming the file.
    """
    path = resolve(run)
    folder = model_folder(path)
    meta = read_meta(folder)
    kind = kind_of(meta)
    dev = pick_device(device)
    network, gaussians = _LOADERS[kind](folder, meta, dev)
    ae, noise = None, None
    if kind not in _NOT_DIFFUSION and meta.get("latent"):
        ae, ae_folder = _latent_autoencoder(path, folder, meta, dev)
        noise = _decoder_noise(ae_folder, ae)
    elif kind == "autoencoder":
        noise = _decoder_noise(folder, network)
    name = str(run) if is_shipped_name(run) and not Path(run).exists() else None
    return Run(path=path, folder=folder, kind=kind, meta=meta, network=network, device=dev, gaussians=gaussians,
               name=name, autoencoder=ae, decoder_noise=noise)


# ------------------------------------------------------------------------------------------ image encoders


def encoder_id(encoder, spec: str) -> str:
    """The id a ``discrete+embedding`` run records for its frozen encoder (``encoder_id`` in its metadata): a
    ceVAE's model id, which names its weights and not only its path; else the ``conditioning.encoder`` spec."""
    return getattr(encoder, "model_id", None) or str(spec)


def load_encoder(spec: str, device: str | torch.device = "cpu") -> ImageEncoder:
    """The frozen image encoder named by ``conditioning.encoder``.

    ``random:DIM[:SEED]``
        :class:`~flaresynth.models.conditioning.RandomProjectionEncoder` (tests, baselines).
    ``cevae:RUN``
        the encoder of a trained ceVAE run (folder, model folder, or shipped name: ``cevae:demo:cevae``, so a
        shipped generator's config names no local folder).
    ``torchscript:PATH``
        a TorchScript module mapping images to vectors (or to ``(mu, logvar)``).
    ``package.module:name``
        an importable encoder object, class or zero-argument factory (imported by the name the user gives).
    """
    # weights-side imports: see the note above the module's imports
    import torch

    from flaresynth.models.conditioning import RandomProjectionEncoder, as_encoder

    kind, _, rest = str(spec).partition(":")
    if kind == "random":
        parts = rest.split(":") if rest else []
        try:
            dim = int(parts[0]) if parts else 16
            seed = int(parts[1]) if len(parts) > 1 else 0
        except ValueError:
            raise FlaresynthError(f"conditioning.encoder {spec!r}: expected 'random:DIM[:SEED]'") from None
        return RandomProjectionEncoder(dim, seed)
    if kind == "cevae":
        if not Path(rest).exists() and not is_shipped_name(rest):
            raise FlaresynthError(f"{rest}: conditioning.encoder: no such ceVAE run")
        return open_run(rest, device).encoder()
    if kind == "torchscript":
        if not Path(rest).is_file():
            raise FlaresynthError(f"{rest}: conditioning.encoder: no such TorchScript file")
        return as_encoder(torch.jit.load(rest, map_location=device))
    if rest and "/" not in spec:
        try:
            obj = getattr(importlib.import_module(kind), rest)
        except (ImportError, AttributeError):
            raise FlaresynthError(f"conditioning.encoder {spec!r}: cannot import {rest} from {kind}") from None
        if isinstance(obj, type) or (callable(obj) and not isinstance(obj, torch.nn.Module) and not hasattr(obj, "embed")):
            obj = obj()
        if isinstance(obj, torch.nn.Module):
            obj = obj.to(device)
        return as_encoder(obj)
    raise FlaresynthError(
        f"conditioning.encoder {spec!r}: expected 'random:DIM', 'cevae:RUN', 'torchscript:PATH' or 'module:name'"
    )


__all__ = [
    "MODEL_DIR",
    "META_FILE",
    "CONFIG_FILE",
    "PROVENANCE_FILE",
    "SCHEDULER_DIR",
    "EMBEDDING_CLASSES_FILE",
    "LATENT_CLASSES_FILE",
    "AUTOENCODER_DIR",
    "MODEL_KINDS",
    "autoencoder_meta",
    "latent_autoencoder_folder",
    "Run",
    "shipped_runs",
    "is_shipped_name",
    "resolve_shipped",
    "resolve",
    "model_folder",
    "read_meta",
    "write_meta",
    "kind_of",
    "model_kind",
    "pick_device",
    "open_run",
    "load_encoder",
]
