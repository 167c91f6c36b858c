"""The DeiT classifier both application experiments train from scratch, and its training/evaluation loop.

Architecture (Ramunno's AGU-2023 talk names "DeiT"; the paper gives no details):
``transformers.DeiTForImageClassification`` (no torchvision, whose PyPI wheels replace a CPU torch, no timm) with DeiT-tiny
widths — hidden 192, 3 heads, MLP 768 — on single-channel images at the dataset's size:

* ``patch_size=8``: a 64×64 image becomes 64 tokens (8×8 px each, ~38″ at 64 px), fine enough to resolve an
  active region; patch 16 would leave 16 tokens. 128 px images give 256 tokens (4× the cost);
* ``num_hidden_layers=4`` (DeiT-tiny has 12): the experiments train 3 regimes × several seeds from scratch on
  the CPU, and a few thousand 64×64 images do not need 12 layers; 4 layers cost about a third of 12;
* no distillation token/teacher (the "with teacher" head needs a trained CNN teacher we do not have), no
  pretrained weights (none exist for 1-channel solar images, and downloading is not allowed).

Training (identical for every regime and seed, so only the training images differ):

* cross-entropy without class weights — fighting the imbalance is the job of the added images;
* AdamW (lr 5e-4, weight decay 0.05), linear warm-up over the first 5 % of steps then cosine decay to 0,
  gradient-norm clip 1.0, batch 32, a fixed number of epochs;
* **model selection**: after every epoch the model is scored on the real validation split by balanced
  accuracy (mean per-class recall; for two classes this is (TSS + 1)/2); the weights of the best epoch are kept
  (ties: the earliest). Without a validation split the last epoch is kept (``selection="last"`` forces that);
* reproducible: ``torch.manual_seed(seed)`` before building the model (on the CPU, then moved to the device, so
  the initial weights do not depend on the device), and each epoch's order from a CPU ``torch.Generator``
  seeded by ``seed`` — same seed, same numbers on the same machine and thread count.

Images stay in model space ([-1, 1], the dataset's intensity transform) as numpy arrays; batches are copied
to the device as they are used, so ``device="cuda"`` only moves the model and the current batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from flaresynth.errors import FlaresynthError

SELECTION_RULES = ("best-val", "last")


@dataclass
class ClassifierSpec:
    """Shape of the DeiT (see the module docstring for why these defaults)."""

    image_size: int
    num_channels: int
    num_labels: int
    patch_size: int = 8
    hidden_size: int = 192
    num_hidden_layers: int = 4
    num_attention_heads: int = 3
    intermediate_size: int = 768

    def validate(self) -> None:
        if self.patch_size < 1 or self.image_size % self.patch_size:
            raise FlaresynthError(
                f"--patch-size {self.patch_size}: must divide the image size {self.image_size} px"
            )
        if self.hidden_size % self.num_attention_heads:
            raise FlaresynthError(
                f"hidden size {self.hidden_size}: must be a multiple of the {self.num_attention_heads} attention heads"
            )
        if self.num_hidden_layers < 1 or self.num_labels < 2 or self.num_channels < 1:
            raise FlaresynthError(
                f"classifier: {self.num_hidden_layers} layers, {self.num_labels} classes, {self.num_channels} channels:"
                " expected at least 1 layer, 2 classes and 1 channel"
            )

    def to_config(self):
        """The ``transformers.DeiTConfig`` of this spec."""
        from transformers import DeiTConfig

        return DeiTConfig(**asdict(self))


def build_classifier(spec: ClassifierSpec, seed: int = 0):
    """A freshly initialised ``DeiTForImageClassification`` (on the CPU; same seed, same weights)."""
    import torch
    from transformers import DeiTForImageClassification

    spec.validate()
    torch.manual_seed(seed)
    return DeiTForImageClassification(spec.to_config())


def n_parameters(model) -> int:
    """Number of trainable parameters."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def resolve_device(name: str):
    """``torch.device`` for ``cpu`` / ``cuda`` / ``cuda:N``; a one-line error if that device is not there."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise FlaresynthError(f"--device {name!r}: expected cpu or cuda ({exc})") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FlaresynthError(f"--device {name}: no CUDA GPU is visible to torch {torch.__version__} here; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise FlaresynthError(f"--device {name!r}: expected cpu or cuda")
    return device


@dataclass
class TrainSettings:
    """Optimisation settings shared by every regime and seed."""

    epochs: int = 20
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    grad_clip: float = 1.0
    selection: str = "best-val"
    eval_batch_size: int = 256
    device: str = "cpu"

    def validate(self) -> None:
        if self.epochs < 1:
            raise FlaresynthError(f"--epochs {self.epochs}: expected at least 1")
        if self.batch_size < 1:
            raise FlaresynthError(f"--batch-size {self.batch_size}: expected at least 1")
        if not self.lr > 0:
            raise FlaresynthError(f"--lr {self.lr}: expected a positive learning rate")
        if self.selection not in SELECTION_RULES:
            raise FlaresynthError(f"--selection {self.selection!r}: expected one of {', '.join(SELECTION_RULES)}")


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class TrainResult:
    """What :func:`train_classifier` did: the kept epoch, the validation history and the time spent."""

    best_epoch: int
    selection: str
    history: list[dict]
    steps: int
    seconds: float
    seconds_per_epoch: float
    n_train: int

    def to_dict(self) -> dict:
        return asdict(self)


def train_classifier(
    model,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray | None,
    y_val: np.ndarray | None,
    settings: TrainSettings,
    seed: int = 0,
    on_epoch: Callable[[int, dict], None] | None = None,
    class_weights: np.ndarray | None = None,
) -> TrainResult:
    """Train ``model`` in place on (x_train, y_train); keep the epoch chosen by ``settings.selection``.

    Parameters
    ----------
    x_train, x_val : float32 (N, C, H, W) images in model space [-1, 1].
    y_train, y_val : int class indices. An empty or missing validation set means "keep the last epoch".
    seed : seeds the epoch order (the model's initial weights are seeded by :func:`build_classifier`).
    on_epoch : called after each epoch with (epoch starting at 1, {"loss", "val_score"}), e.g. for a progress bar.
    class_weights : per-class weights of the cross-entropy (the ``weighted`` regime: N / (K · N_c)); None = 1.
    """
    import torch
    import torch.nn.functional as F

    settings.validate()
    device = resolve_device(settings.device)
    n = len(x_train)
    if n == 0:
        raise FlaresynthError("training set: no image to train on")
    n_classes = int(model.config.num_labels)
    y_all = torch.as_tensor(np.asarray(y_train, dtype=np.int64))
    weight = None if class_weights is None else torch.as_tensor(np.asarray(class_weights, dtype=np.float32)).to(device)
    has_val = x_val is not None and y_val is not None and len(y_val) > 0
    selection = settings.selection if has_val else "last"

    model.to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(n / settings.batch_size)
    total = steps_per_epoch * settings.epochs
    warmup = max(1, round(settings.warmup_fraction * total))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: _lr_factor(s, total, warmup))
    order_rng = torch.Generator().manual_seed(int(seed))

    from flaresynth.experiments.stats import balanced_accuracy

    best_score, best_epoch, best_state = -math.inf, settings.epochs, None
    history = []
    t0 = time.perf_counter()
    train_time = 0.0
    for epoch in range(1, settings.epochs + 1):
        model.train()
        te = time.perf_counter()
        order = torch.randperm(n, generator=order_rng).numpy()
        total_loss = 0.0
        for start in range(0, n, settings.batch_size):
            # sorted indices read a memory-mapped array sequentially; the batch content is what matters
            idx = np.sort(order[start : start + settings.batch_size])
            xb = torch.from_numpy(np.ascontiguousarray(x_train[idx], dtype=np.float32)).to(device)
            yb = y_all[idx].to(device)
            loss = F.cross_entropy(model(pixel_values=xb).logits, yb, weight=weight)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if settings.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimiser.step()
            scheduler.step()
            total_loss += float(loss.detach()) * len(idx)
        train_time += time.perf_counter() - te
        entry = {"epoch": epoch, "loss": total_loss / n}
        if has_val:
            pred = predict(model, x_val, settings.eval_batch_size, settings.device)
            entry["val_score"] = balanced_accuracy(y_val, pred, n_classes)
            if selection == "best-val" and entry["val_score"] > best_score:
                best_score, best_epoch = entry["val_score"], epoch
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        history.append(entry)
        if on_epoch is not None:
            on_epoch(epoch, entry)
    if selection == "best-val" and best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_epoch = settings.epochs
    return TrainResult(
        best_epoch=best_epoch,
        selection=selection,
        history=history,
        steps=total,
        seconds=round(time.perf_counter() - t0, 3),
        seconds_per_epoch=round(train_time / settings.epochs, 4),
        n_train=n,
    )


def predict(model, x: np.ndarray, batch_size: int = 256, device: str = "cpu") -> np.ndarray:
    """Class index (argmax of the logits) of each image of ``x`` (float32 (N, C, H, W), model space)."""
    return predict_proba(model, x, batch_size, device).argmax(axis=1)


def predict_proba(model, x: np.ndarray, batch_size: int = 256, device: str = "cpu") -> np.ndarray:
    """Softmax class probabilities (N, K) of each image of ``x`` (float32 (N, C, H, W), model space)."""
    import torch

    dev = resolve_device(device)
    model.eval()
    out = np.empty((len(x), int(model.config.num_labels)), dtype=np.float64)
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size], dtype=np.float32)).to(dev)
            out[start : start + len(xb)] = torch.softmax(model(pixel_values=xb).logits.double(), dim=1).cpu().numpy()
    return out


# --------------------------------------------------------------------------- the experiments' shared loop
@dataclass
class ExperimentConfig:
    """Settings both experiments share: seeds, optimisation and the DeiT's shape (all recorded in results.json)."""

    seeds: int = 3
    seed: int = 0  # first seed; the runs use seed, seed + 1, ...
    epochs: int = 20
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.05
    selection: str = "best-val"
    device: str = "cpu"
    layers: int = 4
    patch_size: int = 8
    hidden_size: int = 192
    heads: int = 3
    intermediate_size: int = 768
    allow_resize: bool = False  # upsample smaller generated images to the dataset's size (else: real brought down)
    # CPU: train the (seed, regime) runs in this many processes of one torch thread each (1: one after another in
    # this process, at its thread count). The numbers depend on the thread count, not on the number of workers.
    workers: int = 1

    def validate(self) -> None:
        if self.seeds < 1:
            raise FlaresynthError(f"--seeds {self.seeds}: expected at least 1")
        self.train_settings().validate()
        if self.layers < 1:
            raise FlaresynthError(f"--layers {self.layers}: expected at least 1")
        if int(self.workers) != self.workers or self.workers < 1:
            raise FlaresynthError(f"--workers {self.workers!r}: expected a whole number >= 1")
        resolve_device(self.device)

    def seed_list(self) -> list[int]:
        return [self.seed + i for i in range(self.seeds)]

    def train_settings(self) -> TrainSettings:
        return TrainSettings(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                             selection=self.selection, device=self.device)

    def spec(self, image_size: int, num_channels: int, num_labels: int) -> ClassifierSpec:
        return ClassifierSpec(image_size=image_size, num_channels=num_channels, num_labels=num_labels,
                              patch_size=self.patch_size, hidden_size=self.hidden_size, num_hidden_layers=self.layers,
                              num_attention_heads=self.heads, intermediate_size=self.intermediate_size)


def run_regimes(
    make_sets: Callable[[int], dict],
    regimes: list[str],
    spec: ClassifierSpec,
    cfg: ExperimentConfig,
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    score: Callable[[np.ndarray, np.ndarray], dict],
    progress: bool = True,
) -> list[dict]:
    """Train and test one classifier per (seed, regime); returns one dict per run, in (seed, regime) order.

    ``make_sets(seed)`` returns ``{regime: TrainingSet-like}`` (attributes ``images``, ``labels`` and
    ``class_weights``, None for an unweighted loss); every run of a seed starts from the same initial weights and
    draws its epoch order from the same seed, so regimes differ only in their training images (and weights).
    ``score(y_test, proba_test, y_val, proba_val)`` turns the class probabilities into numbers (a threshold may
    be chosen on the validation split only). Each run dict also holds ``proba_test`` (not for JSON).
    With ``cfg.workers`` > 1 on the CPU the runs train in that many processes of one thread each (the same
    numbers as one after another in a process of one thread). The progress bar (rich, on stderr) shows one line
    per regime and seed (per epoch in this process, per finished run with workers).
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    settings = cfg.train_settings()
    resolve_device(settings.device)  # fail before any work
    x_val, y_val = val
    x_test, y_test = test
    parallel = int(cfg.workers) > 1 and settings.device == "cpu"
    jobs = [(seed, regime) for seed in cfg.seed_list() for regime in regimes]
    outputs: dict[tuple[int, str], tuple] = {}
    n_train: dict[tuple[int, str], int] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("epochs"),
               TimeElapsedColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=Console(stderr=True), disable=not progress) as bar:
        tasks = {job: bar.add_task(f"{job[1]:>9} seed {job[0]}", total=settings.epochs, info="") for job in jobs}
        if parallel:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            # spawn: a fork of a process that already ran torch threads can deadlock; the validation and test
            # images go to each worker once, each run's training set with its job
            with ProcessPoolExecutor(min(int(cfg.workers), len(jobs)), mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_init_worker, initargs=(x_val, y_val, x_test)) as pool:
                futures = {}
                for seed in cfg.seed_list():
                    sets = make_sets(seed)
                    for regime in regimes:
                        ts = sets[regime]
                        n_train[seed, regime] = int(len(ts.labels))
                        futures[pool.submit(_worker_run, spec, settings, seed, ts.images, ts.labels,
                                            getattr(ts, "class_weights", None))] = (seed, regime)
                for future in as_completed(futures):
                    job = futures[future]
                    outputs[job] = future.result()
                    bar.update(tasks[job], completed=settings.epochs, info="done")
        else:
            for seed in cfg.seed_list():
                sets = make_sets(seed)
                for regime in regimes:
                    ts = sets[regime]
                    n_train[seed, regime] = int(len(ts.labels))

                    def advance(epoch, entry, task=tasks[seed, regime]):
                        info = f"loss {entry['loss']:.3f}"
                        if "val_score" in entry:
                            info += f"  val bal.acc {entry['val_score']:.3f}"
                        bar.update(task, completed=epoch, info=info)

                    outputs[seed, regime] = _run_one(spec, settings, seed, ts.images, ts.labels,
                                                     getattr(ts, "class_weights", None), x_val, y_val, x_test, advance)
    runs = []
    for seed, regime in jobs:
        proba_test, proba_val, training = outputs[seed, regime]
        runs.append({"seed": seed, "regime": regime, "n_train": n_train[seed, regime],
                     "scores": score(y_test, proba_test, y_val, proba_val), "training": training,
                     "proba_test": proba_test})
    return runs


def _run_one(spec, settings, seed, images, labels, class_weights, x_val, y_val, x_test, on_epoch=None) -> tuple:
    """Train one classifier and return (test probabilities, validation probabilities, training record)."""
    model = build_classifier(spec, seed)
    result = train_classifier(model, images, labels, x_val, y_val, settings, seed=seed, on_epoch=on_epoch,
                              class_weights=class_weights)
    proba_test = predict_proba(model, x_test, settings.eval_batch_size, settings.device)
    proba_val = (predict_proba(model, x_val, settings.eval_batch_size, settings.device)
                 if len(y_val) else np.zeros((0, spec.num_labels)))
    return proba_test, proba_val, result.to_dict()


_WORKER_DATA: tuple | None = None  # (x_val, y_val, x_test) a worker process received once


def _init_worker(x_val, y_val, x_test) -> None:
    """A run_regimes worker: one torch thread (the cores are shared by the workers) and the evaluation images."""
    import torch

    global _WORKER_DATA
    torch.set_num_threads(1)
    _WORKER_DATA = (x_val, y_val, x_test)


def _worker_run(spec, settings, seed, images, labels, class_weights) -> tuple:
    """One (seed, regime) run in a worker process (see :func:`_run_one`)."""
    x_val, y_val, x_test = _WORKER_DATA
    return _run_one(spec, settings, seed, images, labels, class_weights, x_val, y_val, x_test)


def prepare_out(out, marker: str) -> None:
    """Refuse to replace an existing ``out`` unless it is an earlier experiment folder (holds ``marker``)."""
    from pathlib import Path

    from flaresynth.errors import input_error

    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise input_error(out, None, "exists and is not a folder; choose another --out")
        if any(out.iterdir()) and not (out / marker).is_file():
            raise input_error(out, None, f"exists and is not an experiment folder (no {marker}); choose another --out")
