"""The judge: a small CNN flare-class classifier trained on real images, used to score generated ones.

Ramunno et al. 2024 evaluate generated images with a classifier trained on the real
data: if a "class X" sample is classified as X, the generator carries the requested class. Their classifier is
not published, so this one is small enough to train in a few CPU minutes, and documented here.

Architecture (``JudgeNet``, 0.11 M parameters for 1 channel and 5 classes)::

    input (C, S, S) in [-1, 1] (the dataset's model space, no further scaling)
    4 blocks: Conv 3×3 (16, 32, 64, 128 channels, no bias) → BatchNorm → ReLU, each of the first 3 followed
              by MaxPool 2×2 (64 px → 8×8 before pooling)
    global average pooling → 128
    Linear 128→128 → ReLU            ← the "domain" feature encoder (penultimate layer, 128-d)
    Dropout 0.2 → Linear 128→K       class logits

Training (:func:`train_judge`) on the real **training** split only: AdamW (lr 2e-3 cosine-annealed to 0 over
at most 40 epochs, weight decay 1e-4), batch 32, random horizontal and vertical flips (the flare class does
not depend on the disk's orientation), cross-entropy weighted by inverse class frequency
(n / (K_present · n_c); GOES classes are strongly imbalanced), early stopping on the validation split's
weighted cross-entropy (patience 10, ties broken by the higher validation macro F1; the best epoch's weights are
kept; ``epoch_rule="f1"`` decides by the validation macro F1 instead, the rule until 2026-12-04): the
dataset's validation split, which the builder keeps apart from train by time blocks and buffers. When the
dataset has no validation rows, whole days making about 15 % of the training split are held out instead
(random rows, stratified, only when it spans fewer than 3 days).
Its macro F1 on the real **test** split is the ceiling a generator can reach on the F1 metric, and is stored
with the weights. A judge trains on one torch thread whatever the caller's setting (:data:`JUDGE_THREADS`):
with its seed that makes it the same judge on every run on one CPU model (at two threads the CPU reductions run in
another order and the same seed gives another judge: on the default dataset, real-test macro F1 0.413 against
0.417). Another CPU model runs other float kernels and trains another judge from the same seed (an Intel Xeon and
an AMD EPYC, both AVX-512, torch 2.13.0: real-test F1 0.660 / 0.704 / 0.665 against 0.682 / 0.705 / 0.694 for seeds
0 / 1 / 2 on the demo's dataset), so ``judge.json`` records the CPU model and torch's SIMD level with the seed.
Measured: ~2 min on one thread for the demo's dataset (1619 training and 257 validation 64×64 images; 29-34
epochs before early stopping, 121-141 s on this project's 2-core CPU beside another job).

A judge folder holds ``model.safetensors`` and ``judge.json`` (format, classes, scheme, image size, channels,
architecture, dataset hash, training record, real-test metrics). :func:`check_judge` refuses a judge trained
on another dataset, class list or image size. The package ships the judges of the demo's dataset
(:data:`SHIPPED_JUDGES`, :func:`shipped_judge`): trained here on one CPU, they make the judge-based figures of that
dataset the same on every machine.

Caveat: the ``domain`` encoder *is* this network, so FD_domain and the judge F1 are not independent.
"""

from __future__ import annotations

import copy
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flaresynth import pretrained
from flaresynth.errors import FlaresynthError, input_error
from flaresynth.experiments.stats import day_groups
from flaresynth.io import atomic_dir, read_json, write_json
from flaresynth.metrics.classification import classification_report

JUDGE_FORMAT = "flaresynth-judge/1"
#: Torch threads a judge trains with, whatever the caller's setting: training is deterministic for a seed only at
#: a fixed thread count (the order of the CPU reductions changes with it), so pinning it makes a judge -- the
#: instrument every generator is scored with -- the same whatever thread count the caller runs with (verified on
#: one machine and torch build; another CPU model's kernels order the sums otherwise: module docstring).
JUDGE_THREADS = 1
#: Which validation figure picks the epoch a judge keeps (and stops its training): "f1" (macro F1, ties by the
#: lower loss) or "loss" (weighted cross-entropy, ties by the higher F1).
EPOCH_RULES = ("f1", "loss")
#: The loss since the default period became two years (2026-12-04): over five seeds on it the judges' real-test
#: macro F1 spread over 0.660-0.704 by the loss and over 0.425-0.750 by the F1, whose validation figure rests on a
#: few M/X frames and one seed kept an epoch chosen by 3 A frames (docs/latent_diffusion.md, session 29).
JUDGE_EPOCH_RULE = "loss"
WEIGHTS_FILE = "model.safetensors"
META_FILE = "judge.json"
#: Where the package keeps its judges: ``<data hash[:12]>-<size>px`` for seed 0, its ensemble members beside it
#: (:func:`ensemble_member_path`).
SHIPPED_JUDGES = pretrained.HERE / pretrained.JUDGES


def _torch():
    import torch

    return torch


def build_judge_net(in_channels: int, n_classes: int, widths=(16, 32, 64, 128), hidden: int = 128, dropout: float = 0.2):
    """A :class:`JudgeNet` (defined lazily so importing this module does not import torch)."""
    torch = _torch()
    nn = torch.nn

    class JudgeNet(nn.Module):
        """Conv-BN-ReLU blocks, global average pooling, a one-hidden-layer MLP head."""

        def __init__(self):
            super().__init__()
            layers, c = [], in_channels
            for i, w in enumerate(widths):
                layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                if i < len(widths) - 1:
                    layers.append(nn.MaxPool2d(2))
                c = w
            self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.embed = nn.Sequential(nn.Linear(c, hidden), nn.ReLU(inplace=True))
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, n_classes))

        def features(self, x):
            """Penultimate activations (N, hidden): the ``domain`` feature encoder."""
            return self.embed(self.body(x))

        def forward(self, x):
            return self.head(self.features(x))

    return JudgeNet()


@dataclass
class Judge:
    """A trained judge: the network and its record (``meta``, the content of judge.json)."""

    model: object
    meta: dict
    path: Path | None = None
    device: str = "cpu"

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.meta["classes"])

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    @property
    def hidden(self) -> int:
        return int(self.meta["architecture"]["hidden"])

    def _batches(self, images, batch_size: int, fn):
        torch = _torch()
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise FlaresynthError(
                f"judge: images of shape {images.shape[1:]}: expected ({self.meta['in_channels']}, {self.image_size}, {self.image_size})"
            )
        self.model.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                x = torch.from_numpy(np.array(images[i : i + batch_size], dtype=np.float32)).to(self.device)
                out.append(fn(x).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0))

    def logits(self, images, batch_size: int = 256) -> np.ndarray:
        """Class logits (N, K) of images (N, C, S, S) in [-1, 1]."""
        return self._batches(images, batch_size, self.model)

    def predict(self, images, batch_size: int = 256) -> np.ndarray:
        """Predicted class index of each image."""
        return np.argmax(self.logits(images, batch_size), axis=1).astype(np.int64)

    def embed(self, images, batch_size: int = 256) -> np.ndarray:
        """Penultimate-layer features (N, hidden), float64."""
        return self._batches(images, batch_size, self.model.features)


def judge_probabilities(judges, images, batch_size: int = 256) -> np.ndarray:
    """Softmax probabilities (J, N, K) of each of ``judges`` on the same images."""
    from scipy.special import softmax

    return np.stack([softmax(j.logits(images, batch_size), axis=1) for j in judges])


def ensemble_probabilities(judges, images, batch_size: int = 256) -> np.ndarray:
    """Mean softmax probabilities (N, K) of several judges (trained with different seeds) on the same images:
    one judge's F1 moves with nothing but its training seed, their average much less."""
    return judge_probabilities(judges, images, batch_size).mean(axis=0)


def ensemble_predict(judges, images, batch_size: int = 256) -> np.ndarray:
    """Class index per image from the judges' mean softmax probabilities (:func:`ensemble_probabilities`)."""
    return ensemble_probabilities(judges, images, batch_size).argmax(axis=1).astype(np.int64)


def ensemble_member_path(first: str | Path, seed: int) -> Path:
    """The folder of the ensemble's judge trained with ``seed``, beside the first judge's folder ``first``:
    ``<first>_seed<seed>`` (``flaresynth evaluate --judges`` and the demo's judge stage both keep them there)."""
    return Path(f"{first}_seed{seed}")


def check_training_record(meta: dict, seed: int, max_epochs: int, where) -> None:
    """Raise a one-line error unless ``meta`` (a judge.json) records the training :func:`train_judge` does for
    ``seed`` and ``max_epochs`` with this module's epoch rule and thread count: only then is it the same
    instrument (on the CPU it names)."""
    training = meta.get("training") or {}
    # judges trained before the epoch rule was recorded kept the best validation F1
    made = {"seed": training.get("seed"), "max_epochs": training.get("max_epochs"),
            "epoch_rule": training.get("epoch_rule", "f1"), "torch_threads": training.get("torch_threads")}
    wanted = {"seed": int(seed), "max_epochs": int(max_epochs), "epoch_rule": JUDGE_EPOCH_RULE,
              "torch_threads": JUDGE_THREADS}
    for key, value in wanted.items():
        if made[key] != value:
            raise input_error(where, f"training.{key}", f"{made[key]!r}, expected {value!r}")


def shipped_judge(ds, image_size: int, seed: int = 0, max_epochs: int = 40) -> Path | None:
    """The folder of the judge the package ships for the dataset ``ds`` at ``image_size`` and ``seed``, or None.

    A shipped judge is the one ``train_judge(ds, seed=seed, max_epochs=max_epochs)`` trains at that size on the CPU
    its judge.json names. None when the package holds none for this dataset (matched by data hash) or the one it
    holds was made otherwise (classes, channels, epoch cap, epoch rule, threads): the caller trains its own.
    """
    first = SHIPPED_JUDGES / f"{str(ds.manifest.get('data_hash', ''))[:12]}-{int(image_size)}px"
    path = first if int(seed) == 0 else ensemble_member_path(first, seed)
    if not ((path / META_FILE).is_file() and (path / WEIGHTS_FILE).is_file()):
        return None
    meta = read_json(path / META_FILE)
    try:
        check_judge(Judge(model=None, meta=meta, path=path), ds, image_size)
        check_training_record(meta, seed, max_epochs, path / META_FILE)
    except (FlaresynthError, KeyError):
        return None
    return path


def copy_judge(src: str | Path, dest: str | Path) -> Path:
    """Copy the judge folder ``src`` to ``dest`` (atomically, replacing it)."""
    dest = Path(dest)
    with atomic_dir(dest, overwrite=True) as tmp:
        for name in (WEIGHTS_FILE, META_FILE):
            shutil.copy2(Path(src) / name, tmp / name)
    return dest


def _holdout(train: np.ndarray, y: np.ndarray, seed: int, groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Split about 15 % of the training rows off as validation: whole days (``groups``) when the training split
    spans several, so early stopping never looks at near-copies of training frames; else stratified rows."""
    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    if groups is not None and len(np.unique(groups[train])) >= 3:
        tr, va = next(GroupShuffleSplit(n_splits=1, test_size=0.15, random_state=seed).split(train, groups=groups[train]))
        return np.sort(train[tr]), np.sort(train[va])
    counts = np.bincount(y[train])
    stratify = y[train] if counts[counts > 0].min() >= 2 else None
    try:
        tr, va = train_test_split(train, test_size=0.15, random_state=seed, stratify=stratify)
    except ValueError:  # too few rows per class for a stratified split
        tr, va = train_test_split(train, test_size=0.15, random_state=seed)
    return np.sort(tr), np.sort(va)


def train_judge(
    ds,
    images=None,
    *,
    seed: int = 0,
    max_epochs: int = 40,
    patience: int = 10,
    batch_size: int = 32,
    lr: float = 2e-3,
    device: str = "cpu",
    log=None,
    channels: list[str] | None = None,
    threads: int | None = JUDGE_THREADS,
    epoch_rule: str = JUDGE_EPOCH_RULE,
) -> Judge:
    """Train a judge on a dataset folder's training split (see the module docstring).

    Parameters
    ----------
    ds : an open :class:`flaresynth.dataset.DatasetFolder`.
    images : optional array aligned with ``ds``'s rows (N, C, S, S) in [-1, 1], e.g. the dataset brought to
        another size; default ``ds.images``.
    log : optional callable receiving one progress line per epoch.
    channels : names of the channels of ``images`` (default the dataset's), e.g. ``["94A"]`` for a judge of
        one channel of a multi-channel dataset (``images`` then holds that channel alone).
    threads : torch threads to train with (the caller's setting is restored afterwards); default
        :data:`JUDGE_THREADS`, so a seed gives the same judge whatever the caller's threads; ``None`` keeps them.
    epoch_rule : the validation figure that picks the epoch kept and stops training (:data:`EPOCH_RULES`).
    """
    if threads is not None and int(threads) < 1:
        raise FlaresynthError(f"judge: threads={threads}: expected a positive thread count, or None")
    if epoch_rule not in EPOCH_RULES:
        raise FlaresynthError(f"judge: epoch_rule={epoch_rule!r}: expected one of {', '.join(EPOCH_RULES)}")
    torch = _torch()
    caller_threads = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(int(threads))
        return _train_judge(torch, ds, images, seed=seed, max_epochs=max_epochs, patience=patience,
                            batch_size=batch_size, lr=lr, device=device, log=log, channels=channels,
                            epoch_rule=epoch_rule)
    finally:
        torch.set_num_threads(caller_threads)


def _better(epoch_rule: str, f1: float, loss: float, best: tuple[float, float]) -> bool:
    """Whether an epoch's validation (F1, loss) beats the best so far under ``epoch_rule``."""
    best_f1, best_loss = best
    if epoch_rule == "loss":
        return loss < best_loss - 1e-9 or (abs(loss - best_loss) <= 1e-9 and f1 > best_f1 + 1e-6)
    return f1 > best_f1 + 1e-6 or (abs(f1 - best_f1) <= 1e-6 and loss < best_loss)


def _train_judge(torch, ds, images, *, seed, max_epochs, patience, batch_size, lr, device, log, channels,
                 epoch_rule) -> Judge:
    """:func:`train_judge` at the thread count already set."""
    from flaresynth.devices import cpu_description  # imports torch, as this function's caller already has

    x_all = np.asarray(ds.images if images is None else images, dtype=np.float32)
    y_all = ds.label_index()
    classes = ds.classes
    k = len(classes)
    train, val, test = (ds.split_indices(s) for s in ("train", "val", "test"))
    if len(train) < 4:
        raise input_error(ds.path, "split", f"{len(train)} training images: the judge needs at least 4")
    holdout = False
    if len(val) < 2:  # a dataset without a validation split: hold out whole days of the training split
        train, val = _holdout(train, y_all, seed, day_groups(ds.labels["time"].to_numpy(), ds.labels["event_id"].to_numpy()))
        holdout = True

    torch.manual_seed(seed)
    model = build_judge_net(x_all.shape[1], k).to(device)
    counts = np.bincount(y_all[train], minlength=k).astype(np.float64)
    present = counts > 0
    weights = np.where(present, counts.sum() / (present.sum() * np.maximum(counts, 1)), 0.0)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32, device=device))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max_epochs)
    gen = torch.Generator().manual_seed(seed)
    x_train = torch.from_numpy(x_all[train])
    y_train = torch.from_numpy(y_all[train])

    judge = Judge(model=model, meta={"classes": list(classes), "image_size": int(x_all.shape[-1]),
                                     "in_channels": int(x_all.shape[1]),
                                     "architecture": {"widths": [16, 32, 64, 128], "hidden": 128, "dropout": 0.2}},
                  device=device)
    best = (-1.0, np.inf)
    best_state, best_epoch, stale, epoch = None, 0, 0, 0
    history = []  # each epoch's validation (macro F1, loss)
    t0 = time.perf_counter()
    for epoch in range(1, max_epochs + 1):
        model.train()
        perm = torch.randperm(len(train), generator=gen)
        if len(perm) % batch_size == 1:  # BatchNorm cannot train on a batch of one
            perm = perm[:-1]
        total = 0.0
        for i in range(0, len(perm), batch_size):
            idx = perm[i : i + batch_size]
            xb, yb = x_train[idx].to(device), y_train[idx].to(device)
            flips = torch.rand(2, generator=gen)
            if flips[0] < 0.5:
                xb = xb.flip(-1)
            if flips[1] < 0.5:
                xb = xb.flip(-2)
            loss = loss_fn(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        logits = judge.logits(x_all[val])
        val_loss = float(loss_fn(torch.from_numpy(logits).float().to(device), torch.from_numpy(y_all[val]).to(device)))
        val_f1 = classification_report(y_all[val], logits.argmax(1), classes)["f1"]
        if log and epoch % 5 == 0:
            log(f"judge epoch {epoch}: train loss {total / max(len(perm), 1):.4f}, val loss {val_loss:.4f}, val macro F1 {val_f1:.3f}")
        history.append((round(float(val_f1), 6), round(val_loss, 6)))
        if _better(epoch_rule, val_f1, val_loss, best):
            best, best_state, best_epoch, stale = (val_f1, val_loss), copy.deepcopy(model.state_dict()), epoch, 0
        else:
            stale += 1
            if stale >= patience:
                break
    model.load_state_dict(best_state)
    seconds = time.perf_counter() - t0
    test_report = classification_report(y_all[test], judge.predict(x_all[test]), classes) if len(test) else None
    if log:
        log(f"judge: {epoch} epochs in {seconds:.0f} s, kept epoch {best_epoch} by val {epoch_rule} (val macro F1 "
            f"{best[0]:.3f}, loss {best[1]:.4f}); "
            f"real test macro F1 {test_report['f1'] if test_report else float('nan'):.3f}")
    judge.meta.update(
        {
            "format": JUDGE_FORMAT,
            "scheme": ds.scheme,
            "channels": list(channels) if channels is not None else ds.channels,
            "dataset": str(ds.path),
            "dataset_hash": ds.manifest.get("data_hash"),
            "dataset_image_size": int(ds.image_size),
            "n_parameters": int(sum(p.numel() for p in model.parameters())),
            "training": {
                "seed": seed, "epochs_run": epoch, "best_epoch": best_epoch, "epoch_rule": epoch_rule,
                "max_epochs": max_epochs,
                "patience": patience, "batch_size": batch_size, "lr": lr, "class_weights": weights.tolist(),
                "n_train": int(len(train)), "n_val": int(len(val)), "val_from_train_holdout": holdout,
                "val_macro_f1": float(best[0]), "val_loss": float(best[1]), "seconds": round(seconds, 2),
                # a judge's training is deterministic for a seed, a thread count (see JUDGE_THREADS) AND a CPU
                # model: another CPU's float kernels train another judge from the same seed
                "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                **cpu_description(),
                "val_history": [{"f1": f, "loss": v} for f, v in history],
            },
            "real_test": test_report,
        }
    )
    return judge


def train_judge_members(ds, images, seeds, first: str | Path, *, workers: int = 1, max_epochs: int = 40,
                        log=None, first_seed: int | None = None) -> dict[int, dict]:
    """Train and save the ensemble members of ``seeds`` beside the first judge's folder ``first``
    (:func:`ensemble_member_path`), ``workers`` at a time, each in its own process on :data:`JUDGE_THREADS`
    threads: the same judges as trained one after another, in a fraction of the wall time. CPU only.

    ``images``: as :func:`train_judge`'s (None: the dataset's own). ``first_seed``: also train the first judge
    (that seed) alongside, and write it to ``first`` only once every member is saved, so its ``judge.json`` still
    marks the whole ensemble done. Returns, by seed, the judge's real-test F1, epochs and seconds."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    seeds = [int(seed) for seed in seeds]
    first = Path(first)
    targets = {seed: ensemble_member_path(first, seed) for seed in seeds}
    if first_seed is not None:
        if int(first_seed) in targets:
            raise FlaresynthError(f"judge: first_seed {first_seed} is also one of the members' seeds {seeds}")
        # a hidden staging folder: the first judge's own folder appears only when the whole ensemble is saved
        targets = {int(first_seed): first.parent / f".{first.name}.staging", **targets}
    jobs = [(str(ds.path), images, seed, str(path), max_epochs) for seed, path in targets.items()]
    if workers <= 1 or len(jobs) <= 1:
        results = [_train_member(*job) for job in jobs]
    else:
        # spawn: a fork of a process that already ran torch threads can deadlock
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_train_member, *zip(*jobs, strict=True)))
    if first_seed is not None:
        if first.exists():
            shutil.rmtree(first)
        os.replace(targets[int(first_seed)], first)
    done = {}
    for seed, record in results:
        done[seed] = record
        if log:
            log(f"judge seed {seed}: {record['epochs']} epochs in {record['seconds']:.0f} s; real test macro F1 "
                f"{record['real_test_f1']:.3f}")
    return done


def _train_member(ds_path: str, images, seed: int, path: str, max_epochs: int) -> tuple[int, dict]:
    """One ensemble member, trained and saved (a process pool's task: everything it needs comes as arguments)."""
    from flaresynth.dataset import open_dataset

    judge = train_judge(open_dataset(ds_path), images, seed=seed, max_epochs=max_epochs)
    save_judge(judge, path)
    training = judge.meta["training"]
    return seed, {"real_test_f1": (judge.meta.get("real_test") or {}).get("f1"), "epochs": training["epochs_run"],
                  "seconds": training["seconds"]}


def save_judge(judge: Judge, path: str | Path) -> Path:
    """Write ``model.safetensors`` and ``judge.json`` into the folder ``path`` (atomically, replacing it)."""
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_dir(path, overwrite=True) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in judge.model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE))
        write_json(tmp / META_FILE, judge.meta)
    judge.path = path
    return path


def load_judge(path: str | Path, device: str = "cpu") -> Judge:
    """Load a judge folder written by :func:`save_judge`."""
    from safetensors.torch import load_file

    path = Path(path)
    meta_path, weights_path = path / META_FILE, path / WEIGHTS_FILE
    for p in (meta_path, weights_path):
        if not p.is_file():
            raise input_error(p, None, "missing: not a judge folder (evaluate trains one when --judge names a new folder)")
    meta = read_json(meta_path)
    if meta.get("format") != JUDGE_FORMAT:
        raise input_error(meta_path, "format", f"{meta.get('format')!r}, expected {JUDGE_FORMAT!r}")
    for key in ("classes", "image_size", "in_channels", "architecture"):
        if key not in meta:
            raise input_error(meta_path, key, "missing")
    arch = meta["architecture"]
    model = build_judge_net(int(meta["in_channels"]), len(meta["classes"]), tuple(arch["widths"]), int(arch["hidden"]),
                            float(arch.get("dropout", 0.2)))
    try:
        model.load_state_dict(load_file(str(weights_path)))
    except (RuntimeError, KeyError) as exc:
        raise input_error(weights_path, "weights", f"do not fit the architecture in {META_FILE} ({str(exc).splitlines()[0]})") from None
    model.to(device).eval()
    return Judge(model=model, meta=meta, path=path, device=device)


def check_judge(judge: Judge, ds, image_size: int, channels: list[str] | None = None) -> None:
    """Raise a one-line error unless the judge was trained on ``ds`` at ``image_size`` with its classes and
    ``channels`` (default all the dataset's)."""
    where = (judge.path / META_FILE) if judge.path else "judge"
    if judge.meta.get("dataset_hash") != ds.manifest.get("data_hash"):
        raise input_error(where, "dataset_hash", f"the judge was trained on another dataset ({judge.meta.get('dataset')}), not {ds.path}")
    if list(judge.classes) != list(ds.classes):
        raise input_error(where, "classes", f"{list(judge.classes)}, but the dataset has {list(ds.classes)}")
    if judge.image_size != image_size:
        raise input_error(where, "image_size", f"{judge.image_size} px, but the evaluation runs at {image_size} px")
    channels = list(ds.channels) if channels is None else list(channels)
    if int(judge.meta["in_channels"]) != len(channels):
        raise input_error(where, "in_channels", f"{judge.meta['in_channels']}, but the evaluation needs {len(channels)} channel(s) ({', '.join(channels)})")
    if judge.meta.get("channels") is not None and list(judge.meta["channels"]) != channels:
        raise input_error(where, "channels", f"{', '.join(judge.meta['channels'])}, but the evaluation needs {', '.join(channels)}")
