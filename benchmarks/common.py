"""Shared pieces of the benchmarks: arguments, the default dataset, the judge, scoring, timing, the ceiling.

Scoring (:class:`Scorer`), used by ``sampler_quality``, ``guidance_cost`` and ``train_convergence``:

* **judge macro-F1**: the judge CNN of :mod:`flaresynth.metrics.judge`: the one the package ships for the dataset
  when there is one (the demo's dataset at 64 px), else trained ONCE on the real training split at the model's
  resolution and cached in ``WORKDIR/judges/<data hash>-<size>px`` (every benchmark and every setting reuses it);
  macro over the requested classes, against the requested class.
* **referee macro-F1**: the referee of :mod:`flaresynth.metrics.referee` (fitted on the training split) on the images mapped back to DN/s with the
  dataset's inverse intensity transform; its GOES class against the requested one. Only on a simulated Sun
  (``--referee auto``, :func:`referee_applies`); otherwise every ``f1_referee`` is None.
* **FD_domain**: Fréchet distance between the judge's penultimate features (128-d) of the generated images and
  of the real images of the ``--fd-split`` (default ``all``: every split, so X, rare in any one split, has all
  its real images). The real statistics are **class-matched**: each real image is weighted
  so that every class carries the share it has among the generated images (weighted mean and unbiased
  weighted covariance). Without this a class-balanced request (e.g. 10 per class) would be compared with a
  real set that is mostly B and C, and that mismatch, the same for every sampler, would dwarf the differences
  between samplers. ``fd_domain_real_floor``: the same FD for a real sample of the same size and class mix
  (drawn without replacement, the reference recomputed without it), the value a perfect generator would get
  at this sample size (FD is biased upwards at small sizes).
* ``*_std``: bootstrap standard deviation over the generated images (200 resamplings): the noise of a figure
  at this sample size. The resamplings depend only on the seed and the number of images, so two settings
  answering the same requests are resampled alike: :meth:`Scorer.paired` gives the std of their DIFFERENCE,
  which is what says whether two samplers are distinguishable (smaller than either figure's own std, since
  the same requests and, for the deterministic samplers, the same x_T move both figures together).

Network evaluations (NFE) are counted by wrapping the denoiser (:class:`CountingDenoiser`): rows through the
network per generated image, so the batched conditional + unconditional forward of classifier-free guidance
counts 2 per step (w = 0 runs the conditional pass alone: 1 per step).

Samplers: flaresynth's four (:func:`flaresynth.sampling.generate`), and two candidates built here,
``dpm++-clip`` and ``unipc-clip`` (:func:`clipped_sampler`: the same solvers with the predicted x0 clipped to
[-1, 1], as diffusers' DDPM and DDIM do with the training config's ``clip_sample: true``), run through the
same ``sample_loop`` with the same batches and seeds (:func:`generate_any`).

Contention (:class:`LoadMonitor`): every benchmark reports how much CPU *other* processes used while it ran
(``/proc/stat`` busy time minus this process's and its children's CPU time), in cores. A figure taken with
``other_cores_busy`` well above 0 was taken under load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_WORKDIR = Path(os.environ.get("FLARESYNTH_BENCH_DIR", Path(tempfile.gettempdir()) / "flaresynth-bench"))
BOOTSTRAP = 200
#: Issue 14's targets: judge F1 >= CLASS_TARGET x its real-test F1; FD_domain <= FD_TARGET x the real floor.
CLASS_TARGET = 0.9
FD_TARGET = 5.0


# ----------------------------------------------------------------------------------------------- arguments
def base_parser(doc: str, run: bool = False) -> argparse.ArgumentParser:
    """Arguments every benchmark takes (``--data``, ``--workdir``, ``--out``, ``--threads``, ``--quick``...)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(doc.splitlines()[1:]))
    p.add_argument("--data", type=Path, default=None,
                   help="dataset folder (default: the project's default dataset, as flaresynth demo builds it: "
                        "flaresynth simulate's default days and cadence, seed 0, built at 64x64 into "
                        "WORKDIR/ds<days> once, ~1.5 min)")
    if run:
        p.add_argument("--run", default="demo:discrete", help="trained run folder or shipped name (default demo:discrete)")
        p.add_argument("--batch-size", type=int, default=32, help="images per sampling batch (x2 rows with guidance)")
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                   help=f"cache for the default dataset and the judge, scratch runs (default {DEFAULT_WORKDIR})")
    p.add_argument("--out", type=Path, default=None, help="folder for the JSON and the plot (default WORKDIR/results)")
    p.add_argument("--judge", type=Path, default=None, help="judge folder to use instead of the cached one")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--referee", choices=("auto", "on", "off"), default="auto",
                   help="physical referee F1: auto = only on a simulated Sun (see common.referee_applies)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, seconds: for the smoke test only (numbers mean nothing)")
    return p


def add_judge_seed(p: argparse.ArgumentParser) -> None:
    """``--judge-seed``: which judge scores a benchmark of one judge, apart from ``--seed``, which draws its requests."""
    p.add_argument("--judge-seed", type=int, default=0,
                   help="training seed of the judge when --judge is not given (default 0: the judge the package "
                        "ships for the default dataset; --seed draws the requests and leaves the judge alone)")


def first_judge(ds, images: np.ndarray, args):
    """The judge a benchmark of one judge scores with (``--judge``, else the ``--judge-seed`` one; see
    :func:`get_judge`). Until 2026-12-07 it was trained with ``--seed``, so a draw of other requests was also
    scored by another judge."""
    return get_judge(ds, images, args.workdir, args.judge, args.judge_seed, max_epochs=2 if args.quick else 40)


def setup(args) -> Path:
    """Threads, output folder; returns the output folder."""
    import torch

    torch.set_num_threads(max(1, int(args.threads)))
    out = Path(args.out or args.workdir / "results")
    out.mkdir(parents=True, exist_ok=True)
    return out


def check_sampling_args(args) -> None:
    """``--per-class`` and ``--batch-size`` must be whole numbers >= 1; ``--quick`` caps ``--per-class`` at 2."""
    from flaresynth.errors import FlaresynthError

    if args.per_class < 1 or args.batch_size < 1:
        raise FlaresynthError(f"--per-class {args.per_class}, --batch-size {args.batch_size}: expected whole numbers >= 1")
    if args.quick:
        args.per_class = min(args.per_class, 2)


def parse_seeds(text: str, option: str = "--judge-seeds") -> list[int]:
    """``"1,2"`` -> [1, 2]; empty -> []; one clear error naming ``option`` otherwise."""
    from flaresynth.errors import FlaresynthError

    parts = [t.strip() for t in text.split(",") if t.strip()]
    if not all(t.isdigit() for t in parts):
        raise FlaresynthError(f"{option} {text!r}: expected whole numbers separated by commas (e.g. 1,2)")
    return [int(t) for t in parts]


def parse_timesteps(text: str | None) -> list[int] | None:
    """``"999,739,439,139"`` -> [999, 739, 439, 139]; None -> None (the run's own); one clear error otherwise."""
    from flaresynth.errors import FlaresynthError

    if text is None:
        return None
    try:
        return [int(t) for t in text.split(",")]
    except ValueError:
        raise FlaresynthError(f"--timesteps {text!r}: expected comma-separated whole numbers") from None


def main_wrapper(fn) -> None:
    """Run ``fn()``; a FlaresynthError becomes one line on stderr and exit code 2."""
    from flaresynth.errors import FlaresynthError

    try:
        fn()
    except FlaresynthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def read_results(paths: list[Path], benchmark: str, shared: tuple[str, ...] = ()) -> list[dict]:
    """The JSON results at ``paths``, each checked to be a ``benchmark`` result whose ``shared`` keys equal the
    first's; one clear error naming the file and the key otherwise."""
    from flaresynth.errors import FlaresynthError

    results = []
    for path in paths:
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise FlaresynthError(f"{path}: unreadable ({type(exc).__name__})") from None
        if d.get("benchmark") != benchmark:
            raise FlaresynthError(f"{path}: benchmark {d.get('benchmark')!r}, expected a {benchmark} result")
        for key in shared:
            if results and d.get(key) != results[0].get(key):
                raise FlaresynthError(f"{path}: {key} {d.get(key)!r}, the first ({paths[0]}) has {results[0].get(key)!r}")
        results.append(d)
    return results


def emit(result: dict, out: Path, name: str, echo: bool = True) -> None:
    """Write the result as JSON to ``out/name.json`` and (``echo``) print it on stdout."""
    text = json.dumps(_jsonable(result), indent=2)
    (out / f"{name}.json").write_text(text + "\n")
    if echo:
        print(text)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating | float):
        v = float(x)
        return float(f"{v:.6g}") if np.isfinite(v) else None  # 6 significant digits
    if isinstance(x, Path):
        return str(x)
    return x


def log(msg: str) -> None:
    """Progress on stderr (stdout carries only the JSON)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------- machine
def _proc_busy_seconds() -> float | None:
    try:
        with open("/proc/stat") as fh:
            parts = fh.readline().split()
    except OSError:
        return None
    v = [int(x) for x in parts[1:9]]  # user nice system idle iowait irq softirq steal
    hz = os.sysconf("SC_CLK_TCK")
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / hz


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class LoadMonitor:
    """CPU used by other processes while a benchmark ran (see the module docstring)."""

    def __init__(self, helper_cpu=None):
        """``helper_cpu``: a callable giving the CPU seconds of this benchmark's helper processes that are not
        (yet) reaped children, e.g. dask.distributed workers, so that their work is not counted as load."""
        self.helper_cpu = helper_cpu or (lambda: 0.0)
        self.t0, self.busy0 = time.perf_counter(), _proc_busy_seconds()
        self.own0 = _own_cpu_seconds() + self.helper_cpu()
        self.load0 = os.getloadavg()[0]

    def report(self) -> dict:
        wall = time.perf_counter() - self.t0
        busy, own = _proc_busy_seconds(), _own_cpu_seconds() + self.helper_cpu() - self.own0
        other = None if busy is None or self.busy0 is None else max(0.0, busy - self.busy0 - own)
        cores = None if other is None else other / max(wall, 1e-9)
        return {"wall_s": wall, "own_cpu_s": own, "other_cpu_s": other, "other_cores_busy": cores,
                "loadavg_1min_start": self.load0, "loadavg_1min_end": os.getloadavg()[0],
                "under_load": bool(cores is not None and cores > 0.25)}


def machine_info(threads: int | None = None) -> dict:
    """Date, CPU (model and torch's SIMD level), core count, torch threads, library versions."""
    import diffusers
    import torch

    from flaresynth.devices import cpu_description

    return {"date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), **cpu_description(), "cores": os.cpu_count(),
            "torch_threads": threads or torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "diffusers": diffusers.__version__}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB (``ru_maxrss`` is in KB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    """Resident memory now, MB (``/proc/self/status`` VmRSS; the peak where that is unavailable)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return peak_rss_mb()


# ----------------------------------------------------------------------------------------------- data
def default_dataset(workdir: Path) -> Path:
    """The project's default dataset, made once into ``WORKDIR/ds<days>`` and cached: ``flaresynth simulate``'s
    default Sun (its default days, start and cadence, seed 0) built as ``flaresynth demo`` builds it
    (:class:`BuildConfig` with the demo's quiet frames a day and share of small flares: 64x64, goes5, rotation
    blocks), i.e. what the shipped generators were trained on."""
    from flaresynth.dataset import BuildConfig, build_dataset
    from flaresynth.demo import DemoConfig
    from flaresynth.sources.simulate import DEFAULT_CADENCE_MIN, DEFAULT_DAYS, DEFAULT_START, simulate

    workdir = Path(workdir)
    ds, sim = workdir / f"ds{DEFAULT_DAYS}", workdir / f"sim{DEFAULT_DAYS}"
    if (ds / "manifest.json").is_file():
        return ds
    if not (sim / "simulation.json").is_file():
        log(f"simulating {DEFAULT_DAYS} days from {DEFAULT_START} ({DEFAULT_CADENCE_MIN}-min cadence, seed 0) "
            f"into {sim} (~4 min quiet, 7.2 GB)")
        simulate(sim, seed=0, overwrite=True, progress=False)  # the package's defaults: one source of truth
    log(f"building the 64x64 dataset into {ds}")
    demo = DemoConfig()
    build_dataset(str(sim / "sdomlv2.zarr"), [str(sim / "goes")], str(sim / "hek" / "flares.json"), ds,
                  BuildConfig(quiet_per_day=demo.quiet_per_day, small_event_fraction=demo.small_event_fraction),
                  overwrite=True, progress=False)
    return ds


def resolve_data(args) -> Path:
    return Path(args.data) if args.data is not None else default_dataset(args.workdir)


def real_at_size(ds, size: int) -> np.ndarray:
    """All dataset images at ``size`` px through DN/s (as ``flaresynth evaluate`` does)."""
    from flaresynth.transforms import resample

    return resample(ds.images, ds.transforms(), size)


# ----------------------------------------------------------------------------------------------- judge
def get_judge(ds, images: np.ndarray, workdir: Path, path: Path | None = None, seed: int = 0, max_epochs: int = 40):
    """The judge for ``ds`` at the images' size: ``path`` if given, else the one the package ships for this dataset
    (:func:`flaresynth.metrics.judge.shipped_judge`), else the cached one, else trained and cached.

    Returns (judge, info) with info = source, path, seconds spent here, its real-test macro-F1.
    """
    from flaresynth.errors import FlaresynthError
    from flaresynth.metrics.judge import (
        META_FILE,
        check_judge,
        check_training_record,
        load_judge,
        save_judge,
        shipped_judge,
        train_judge,
    )

    size = int(images.shape[-1])
    t0 = time.perf_counter()
    if path is not None:
        judge = load_judge(path)
        check_judge(judge, ds, size)
        source = "given"
    else:
        tag = (f"{str(ds.manifest.get('data_hash', 'nohash'))[:12]}-{size}px" + ("" if max_epochs == 40 else f"-{max_epochs}ep")
               + ("" if seed == 0 else f"-seed{seed}"))
        path = Path(workdir) / "judges" / tag
        judge = None
        if (shipped := shipped_judge(ds, size, seed, max_epochs)) is not None:
            # first the package's judge of this dataset: the same instrument on every machine (flaresynth.metrics.judge)
            judge, path, source = load_judge(shipped), shipped, "shipped"
        elif path.is_dir():
            try:
                judge = load_judge(path)
                check_judge(judge, ds, size)
                # a judge is one instrument only for one seed, epoch cap, epoch rule and thread count
                check_training_record(judge.meta, seed, max_epochs, path / META_FILE)
                source = "cached"
            except FlaresynthError as exc:
                log(f"not reusing {path}: {exc}")
                judge = None
        if judge is None:
            log(f"training the judge at {size} px (once; cached in {path})")
            judge = train_judge(ds, images, seed=seed, max_epochs=max_epochs, log=log)
            save_judge(judge, path)
            source = "trained"
    real_test = (judge.meta.get("real_test") or {}).get("f1")
    return judge, {"source": source, "path": str(path), "seconds": time.perf_counter() - t0,
                   "real_test_f1": real_test, "max_epochs": judge.meta.get("training", {}).get("max_epochs")}


# ----------------------------------------------------------------------------------------------- scoring
def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> float:
    """Macro F1 over the classes present in ``y_true`` (zero where undefined): classification_report's value."""
    cm = np.zeros((k, k), dtype=np.int64)
    valid = (y_pred >= 0) & (y_pred < k)
    np.add.at(cm, (y_true[valid], y_pred[valid]), 1)
    support = np.bincount(y_true, minlength=k)
    tp = np.diag(cm).astype(np.float64)
    pred_n = cm.sum(0).astype(np.float64)
    p = np.divide(tp, pred_n, out=np.zeros(k), where=pred_n > 0)
    r = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f = np.divide(2 * p * r, p + r, out=np.zeros(k), where=(p + r) > 0)
    return float(f[support > 0].mean()) if (support > 0).any() else float("nan")


def weighted_stats(features: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean and unbiased weighted covariance (reliability weights) of features (N, D)."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mu = w @ features
    xc = features - mu
    cov = (xc * w[:, None]).T @ xc / max(1.0 - float((w**2).sum()), 1e-12)
    return mu, cov


class RefStats:
    """Real-feature statistics prepared for many Fréchet distances against them.

    ``Tr (S_r S_g)^{1/2} = Tr (A S_g A)^{1/2}`` with ``A = S_r^{1/2}`` (as in :mod:`flaresynth.metrics.frechet`),
    and with centred generated features ``X`` (n, D), ``A S_g A = (X A)ᵀ (X A) / (n - 1)``, so the trace is the
    sum of the singular values of ``X A / sqrt(n - 1)``: one small SVD per distance once ``A`` is known (the
    bootstrap computes hundreds). Same value as ``frechet_distance_from_stats`` to rounding.
    """

    def __init__(self, mu: np.ndarray, cov: np.ndarray):
        self.mu, self.cov = mu, cov
        w, v = np.linalg.eigh((cov + cov.T) / 2)
        self.sqrt = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
        self.trace = float(np.trace(cov))

    def fd(self, features: np.ndarray) -> float:
        """Fréchet distance of features (n, D), n >= 2, to these statistics."""
        x = np.asarray(features, dtype=np.float64)
        mu = x.mean(0)
        xc = x - mu
        n = len(x)
        nuclear = np.linalg.svd(xc @ self.sqrt, compute_uv=False).sum() / np.sqrt(n - 1)
        diff = mu - self.mu
        return float(max(diff @ diff + (xc**2).sum() / (n - 1) + self.trace - 2.0 * nuclear, 0.0))


def referee_applies(ds, mode: str = "auto") -> tuple[bool, str]:
    """Whether the physical referee scores this dataset, and why.

    ``on``/``off`` force it. ``auto``: only when the dataset's image store was written by the simulated Sun:
    its zarr root carries ``flaresynth_simulated`` (what ``flaresynth evaluate`` checks), or, for stores
    simulated before that marker existed, a ``simulation.json`` beside it (the
    simulator writes it in the simulation's root folder). On a real archive ``estimate_flux`` means nothing.
    """
    if mode in ("on", "off"):
        return mode == "on", f"--referee {mode}"
    src = (ds.manifest.get("sources") or {}).get("images")
    if src and Path(str(src)).exists():
        try:
            import zarr

            if zarr.open_group(str(src), mode="r").attrs.get("flaresynth_simulated", False):
                return True, "image store marked flaresynth_simulated"
        except Exception:  # not a zarr store (FITS folder) or unreadable: not known to be simulated
            pass
    if src and (Path(str(src)).parent / "simulation.json").is_file():
        return True, f"simulation.json beside the image store {src} (simulated before the marker existed)"
    return False, "the dataset's image store is not a simulated Sun: referee skipped"


class Scorer:
    """Judge F1, referee F1 and class-matched FD_domain of generated images (see the module docstring).

    ``referee``: score with the physical referee (see :func:`referee_applies`); without it every
    ``f1_referee*`` value is None.
    """

    def __init__(self, ds, judge, real_images: np.ndarray, fd_split: str = "all", seed: int = 0, referee: bool = True):
        self.ds, self.judge, self.k = ds, judge, len(ds.classes)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.referee = bool(referee)
        idx = ds.split_indices(None if fd_split == "all" else fd_split)
        if not len(idx):
            from flaresynth.errors import FlaresynthError

            raise FlaresynthError(f"--fd-split {fd_split!r}: no image of {ds.path} is in that split")
        self.fd_split = fd_split
        self.ref_f = judge.embed(real_images[idx])
        self.ref_y = ds.label_index()[idx]
        test = ds.split_indices("test")
        self.referee_real_test_f1 = None
        if self.referee:
            from flaresynth.evaluate import fit_split_referee

            self.referee_model = fit_split_referee(ds, real_images)  # fitted on the training split
        if len(test) and self.referee:
            y, pred = ds.label_index()[test], self.referee_classes(real_images[test])
            self.referee_real_test_f1 = macro_f1(y, pred, self.k)

    def referee_classes(self, images: np.ndarray) -> np.ndarray:
        """GOES class index the referee gives each image (:func:`flaresynth.evaluate.referee_classify`)."""
        from flaresynth.evaluate import referee_classify

        return referee_classify(images, self.ds, self.referee_model)[0]

    def _ref_stats(self, y_gen: np.ndarray, exclude: np.ndarray | None = None) -> RefStats:
        share = np.bincount(y_gen, minlength=self.k) / len(y_gen)
        keep = np.ones(len(self.ref_y), bool)
        if exclude is not None:
            keep[exclude] = False
        counts = np.bincount(self.ref_y[keep], minlength=self.k)
        w = np.where(counts[self.ref_y] > 0, share[self.ref_y] / np.maximum(counts[self.ref_y], 1), 0.0) * keep
        if w.sum() <= 0:
            raise ValueError("no real image of any requested class")
        return RefStats(*weighted_stats(self.ref_f, w))

    def real_floor(self, y_gen: np.ndarray, repeats: int = 10) -> tuple[float, float]:
        """FD_domain of real samples with the generated set's size and class mix (mean, std over repeats)."""
        want = np.bincount(y_gen, minlength=self.k)
        values = []
        for _ in range(repeats):
            pick = []
            for c in range(self.k):
                pool = np.flatnonzero(self.ref_y == c)
                # leave at least one real image of the class in the reference
                n = min(int(want[c]), max(len(pool) - 1, 0))
                if n:
                    pick.append(self.rng.choice(pool, n, replace=False))
            pick = np.concatenate(pick)
            values.append(self._ref_stats(self.ref_y[pick], exclude=pick).fd(self.ref_f[pick]))
        return float(np.mean(values)), float(np.std(values))

    def _resamples(self, n: int) -> np.ndarray:
        """The bootstrap index sets (BOOTSTRAP, n): the same for every set of ``n`` images, so they pair."""
        return np.random.default_rng([self.seed, n]).integers(0, n, (BOOTSTRAP, n))

    def score(self, images: np.ndarray, y_gen: np.ndarray, return_raw: bool = False):
        """fd_domain, f1_judge, f1_referee (+ bootstrap std and per-class judge F1) of generated images.

        With ``return_raw`` also the per-image judge features and predictions (for :meth:`paired`).
        """
        from flaresynth.metrics.classification import classification_report

        y_gen = np.asarray(y_gen, dtype=np.int64)
        feats = self.judge.embed(images)
        pred = np.asarray(self.judge.predict(images), dtype=np.int64)
        ref = self._ref_stats(y_gen)
        report = classification_report(y_gen, pred, self.ds.classes)
        ref_pred = self.referee_classes(images) if self.referee else None
        out = {"fd_domain": ref.fd(feats), "f1_judge": report["f1"],
               "f1_judge_per_class": {c: v["f1"] for c, v in report["per_class"].items() if v["support"]},
               "judge_predicted_counts": np.bincount(pred[(pred >= 0) & (pred < self.k)], minlength=self.k).tolist(),
               "f1_referee": macro_f1(y_gen, ref_pred, self.k) if self.referee else None}
        # bootstrap over the generated images: the noise of each figure at this sample size
        fds, f1s, f1r = [], [], []
        for b in self._resamples(len(y_gen)):
            fds.append(ref.fd(feats[b]))
            f1s.append(macro_f1(y_gen[b], pred[b], self.k))
            if self.referee:
                f1r.append(macro_f1(y_gen[b], ref_pred[b], self.k))
        out["fd_domain_std"] = float(np.std(fds))
        out["f1_judge_std"] = float(np.std(f1s))
        out["f1_referee_std"] = float(np.std(f1r)) if self.referee else None
        if return_raw:
            return out, {"y": y_gen, "feats": feats, "pred": pred, "ref_pred": ref_pred, "stats": ref}
        return out

    def paired(self, raw_ref: dict, raw: dict) -> dict:
        """Bootstrap std of the DIFFERENCES to a reference scored on the same requests (same resamples).

        The images of two settings share their requests (and, for the deterministic samplers, their x_T),
        so their figures move together under resampling: the std of the difference is what says whether
        a setting is distinguishable from the reference, and it is smaller than either figure's own std.
        Returns ``fd_rel_to_reference_std`` (of FD/FD_ref), ``f1_judge_minus_reference_std`` and
        ``f1_referee_minus_reference_std`` (None without the referee).
        """
        y = raw_ref["y"]
        if not np.array_equal(y, raw["y"]):
            raise ValueError("paired: the two sets answer different requests")
        rel, dj, dr = [], [], []
        for b in self._resamples(len(y)):
            fr = raw_ref["stats"].fd(raw_ref["feats"][b])
            rel.append(raw["stats"].fd(raw["feats"][b]) / fr if fr > 0 else np.nan)
            dj.append(macro_f1(y[b], raw["pred"][b], self.k) - macro_f1(y[b], raw_ref["pred"][b], self.k))
            if self.referee:
                dr.append(macro_f1(y[b], raw["ref_pred"][b], self.k) - macro_f1(y[b], raw_ref["ref_pred"][b], self.k))
        return {"fd_rel_to_reference_std": float(np.nanstd(rel)), "f1_judge_minus_reference_std": float(np.std(dj)),
                "f1_referee_minus_reference_std": float(np.std(dr)) if self.referee else None}


def make_scorer(ds, judge, real_images: np.ndarray, args) -> tuple[Scorer, dict]:
    """A :class:`Scorer` with the referee as ``args.referee`` decides; (scorer, referee info for the JSON)."""
    on, why = referee_applies(ds, getattr(args, "referee", "auto"))
    scorer = Scorer(ds, judge, real_images, getattr(args, "fd_split", "all"), args.seed, referee=on)
    if not on:
        log(f"referee off: {why}")
    return scorer, {"used": on, "why": why, "real_test_f1": scorer.referee_real_test_f1}


# ----------------------------------------------------------------------------------------------- sampling
#: samplers of flaresynth.sampling, and candidates the benchmark builds itself (see timed_generate)
LIBRARY_SAMPLERS = ("ddpm", "ddim", "dpm++", "unipc")
CANDIDATE_SAMPLERS = ("dpm++-clip", "unipc-clip")


def _counting_class():
    import torch

    class CountingDenoiser(torch.nn.Module):
        """Pass-through wrapper counting forward calls and rows (images) through the network."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.calls = 0
            self.rows = 0

        @property
        def conditioner(self):
            return self.inner.conditioner

        @property
        def takes_guidance(self):  # a distilled student: one forward with w (flaresynth.diffusion.guided_output)
            return getattr(self.inner, "takes_guidance", False)

        def forward(self, x, t, cond, drop):
            self.calls += 1
            self.rows += int(x.shape[0])
            return self.inner(x, t, cond, drop)

    return CountingDenoiser


def CountingDenoiser(inner):  # noqa: N802 - a factory that reads like the class it returns
    """Wrap a denoiser so calls and rows are counted (torch imported lazily)."""
    return _counting_class()(inner)


def clipped_sampler(base: str, scheduler_config: dict, steps: int):
    """``base`` (dpm++ or unipc) built by flaresynth, rebuilt with its predicted x0 clipped to [-1, 1].

    diffusers' DDPM and DDIM schedulers clip the predicted x0 when the training config says
    ``clip_sample: true`` (flaresynth's default); DPM-Solver++ and UniPC have no ``clip_sample`` and ignore
    it. Their ``thresholding`` with ``sample_max_value = 1`` is exactly that clip (the dynamic threshold s
    is clamped to [1, sample_max_value] = 1), applied to the data prediction of every step.
    """
    from flaresynth.diffusion import make_sampler

    sched = make_sampler(base, scheduler_config, steps)
    sched = type(sched).from_config(sched.config, thresholding=True, sample_max_value=1.0)
    sched.set_timesteps(int(steps))
    return sched


def generate_any(model, table, sampler: str, steps: int | None, guidance: float, batch_size: int):
    """:func:`flaresynth.sampling.generate` for the library samplers; the same loop, batches and seeds for a
    candidate sampler (``dpm++-clip``, ``unipc-clip``: :func:`clipped_sampler`)."""
    from flaresynth.sampling import generate

    if sampler not in CANDIDATE_SAMPLERS:
        return generate(model, table, sampler, steps, guidance, batch_size=batch_size)
    import torch

    from flaresynth.diffusion import SAMPLER_DEFAULT_STEPS, sample_loop
    from flaresynth.sampling import conditions

    if model.latent is not None:
        from flaresynth.errors import FlaresynthError

        # latents have unit variance: clipping their predicted x0 to [-1, 1] would cut most of them
        raise FlaresynthError(f"sampler {sampler}: the x0-clipped candidates apply to pixel runs only "
                              f"({model.path} is a latent run)")
    base = sampler.removesuffix("-clip")
    steps = int(steps or SAMPLER_DEFAULT_STEPS[base])
    cond = conditions(model, table)
    seeds = table["seed"].to_numpy()
    out = []
    for lo in range(0, len(table), batch_size):
        hi = min(len(table), lo + batch_size)
        sched = clipped_sampler(base, model.meta["scheduler"], steps)  # fresh: multistep solvers keep state
        out.append(sample_loop(model.network, sched, cond.index(slice(lo, hi)), seeds[lo:hi], model.image_shape,
                               guidance=guidance, device=model.device))
    return torch.cat(out).numpy() if out else np.zeros((0, *model.image_shape), np.float32)


def timed_generate(model, table, sampler: str, steps: int | None, guidance: float, batch_size: int):
    """Generate the request table; returns (images, info: seconds, forward_calls, nfe_per_image, images_per_s)."""
    counter = CountingDenoiser(model.network)
    counted = replace(model, network=counter)
    t0 = time.perf_counter()
    images = generate_any(counted, table, sampler, steps, guidance, batch_size)
    seconds = time.perf_counter() - t0
    return images, {"seconds": seconds, "forward_calls": counter.calls, "nfe_per_image": counter.rows / max(len(table), 1),
                    "images_per_s": len(table) / max(seconds, 1e-9)}


def requested_index(model, table) -> np.ndarray:
    """Index of each request's class in the model's class list."""
    return table["condition_label"].to_numpy(dtype=np.int64)


# ----------------------------------------------------------------------------------------------- model from a checkpoint
def model_from_checkpoint(run: Path, ckpt: Path, ds, device: str = "cpu"):
    """A :class:`flaresynth.runs.Run` with the EMA weights of checkpoint folder ``ckpt`` of ``run``.

    Rebuilds the network from ``RUN/config.yaml`` and the dataset it was trained on (``ds``: needed for the
    class counts and median fluxes a continuous model is asked with), then copies the EMA shadow parameters
    (diffusers ``EMAModel.state_dict()["shadow_params"]``, in ``parameters()`` order) into it. A latent run
    (``latent.autoencoder``) also gets its autoencoder (the run's copy, ``RUN/autoencoder``) and the scaling
    factor its checkpoint recorded, so it samples decoded images as its final ``model/`` does.
    """
    import torch

    from flaresynth.config import load_config
    from flaresynth.diffusion import make_scheduler
    from flaresynth.errors import FlaresynthError
    from flaresynth.models.autoencoder import load_autoencoder
    from flaresynth.models.unet import build_denoiser
    from flaresynth.runs import MODEL_DIR, Run, autoencoder_meta
    from flaresynth.train import (
        CACHE,
        CACHE_IMAGES,
        latent_record,
        latent_source,
        load_training_data,
        read_checkpoint,
        resolve_for_dataset,
    )

    run = Path(run)
    cfg = resolve_for_dataset(load_config(run / "config.yaml"), ds, run)
    if getattr(cfg, "kind", "ddpm") != "ddpm" or cfg.conditioning.kind not in ("discrete", "continuous"):
        raise FlaresynthError(f"{run}/config.yaml: conditioning.kind: {cfg.conditioning.kind!r} "
                              f"({getattr(cfg, 'kind', 'ddpm')}); the benchmarks sample discrete and continuous DDPM runs only")
    state = read_checkpoint(Path(ckpt))
    if state.get("data_hash") != ds.manifest.get("data_hash"):
        raise FlaresynthError(f"{ckpt}: data_hash: the checkpoint was trained on another dataset, not {ds.path}")
    # the run's own training cache when it is still there: a latent run's would otherwise be re-encoded
    cache = run / CACHE if (run / CACHE / CACHE_IMAGES).is_file() else None
    data = load_training_data(ds, cfg, cache=cache)
    model = build_denoiser(cfg.model, cfg.model.in_channels, cfg.conditioning.kind, len(ds.classes),
                           flux_frequencies=cfg.conditioning.flux_frequencies)
    shadow = state["ema"]["shadow_params"]
    params = list(model.parameters())
    if len(shadow) != len(params):
        raise FlaresynthError(f"{ckpt}: ema: {len(shadow)} tensors for a network of {len(params)} parameters")
    with torch.no_grad():
        for p, s in zip(params, shadow, strict=True):
            p.copy_(s)
    model.to(device).eval()
    scheduler = make_scheduler(cfg.diffusion)
    latent = autoencoder = None
    if cfg.latent.autoencoder is not None:
        ae_folder, ae_meta = autoencoder_meta(latent_source(cfg, run))
        scaling = cfg.latent.scaling_factor if cfg.latent.scaling_factor is not None else state.get("latent_scaling_factor")
        if scaling is None:
            raise FlaresynthError(f"{ckpt}: latent_scaling_factor: missing (and no latent.scaling_factor in "
                                  f"{run / 'config.yaml'}); cannot decode its latents")
        latent = latent_record(ae_meta, float(scaling))
        autoencoder = load_autoencoder(ae_folder, device)
    meta = {"classes": list(ds.classes), "scheme": ds.scheme, "transform": ds.manifest["transform"],
            "channels": ds.channels, "in_channels": cfg.model.in_channels, "sample_size": cfg.model.sample_size,
            "data_hash": ds.manifest.get("data_hash"),
            "scheduler": {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")},
            "train_counts": data["train_counts"], "class_log_flux": data["class_log_flux"],
            "config": cfg.to_dict(), "conditioning": model.conditioner.describe(), "step": int(state["step"]),
            "model_id": f"{run.name}@{int(state['step'])}", **({"latent": latent} if latent is not None else {})}
    return Run(path=run, folder=run / MODEL_DIR, kind="ddpm", meta=meta, network=model,
               device=torch.device(device), autoencoder=autoencoder)


# ----------------------------------------------------------------------------------------------- the ceiling
def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """This machine's float32 matrix-multiply rate with the current torch threads: best of ``repeats``, GFLOP/s."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    c = torch.empty(n, n)
    torch.mm(a, b, out=c)  # warm-up (thread pool, caches)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


def conv_gflops(channels: int = 256, size: int = 16, batch: int = 64, repeats: int = 5) -> float:
    """This machine's float32 rate on a large 3x3 convolution (oneDNN), best of ``repeats``, GFLOP/s.

    On this project's CPU (AMD EPYC, AVX-512) torch's matrix product reaches ~70 GFLOP/s per thread while
    oneDNN's 3x3 convolutions with 256 channels reach ~180: a matmul-only rate would put the U-Net (made of
    convolutions) above its "ceiling". The ceiling therefore uses the larger of the two rates.
    """
    import torch

    x = torch.randn(batch, channels, size, size)
    w = torch.randn(channels, channels, 3, 3)
    flops = 2.0 * channels * channels * 9 * size * size * batch
    with torch.no_grad():
        torch.nn.functional.conv2d(x, w, padding=1)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.nn.functional.conv2d(x, w, padding=1)
            best = min(best, time.perf_counter() - t0)
    return flops / best / 1e9


def peak_rates(quick: bool = False) -> dict:
    """``matmul_gflops`` (2048² float32 product), ``conv_gflops`` (3x3, 256 channels) and ``peak_gflops`` = the max."""
    mm = matmul_gflops(1024 if quick else 2048)
    conv = conv_gflops(batch=8 if quick else 64)
    return {"matmul_gflops": mm, "conv_gflops": conv, "peak_gflops": max(mm, conv)}


def train_step_flops(cfg, in_channels: int, n_classes: int, batch: int | None = None) -> dict:
    """FLOPs of one training step (forward + backward) of ``cfg``'s network at its batch size.

    Counted by ``torch.utils.flop_counter.FlopCounterMode``: convolutions, matrix products and attention
    (the ops that carry the arithmetic); normalisation and element-wise ops are not counted, so the
    ceiling derived from this is a lower bound on the time.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from flaresynth.models.conditioning import Condition
    from flaresynth.models.unet import build_denoiser, count_parameters
    from flaresynth.train import per_process_batch

    batch = int(batch or per_process_batch(cfg.train, 1))
    model = build_denoiser(cfg.model, in_channels, cfg.conditioning.kind, n_classes,
                           flux_frequencies=cfg.conditioning.flux_frequencies)
    s = cfg.model.sample_size
    x = torch.randn(batch, in_channels, s, s)
    t = torch.randint(0, cfg.diffusion.num_train_timesteps, (batch,))
    cond = Condition(torch.randint(0, n_classes, (batch,)), torch.full((batch,), -6.0), None)
    drop = torch.zeros(batch, dtype=torch.bool)
    with FlopCounterMode(display=False) as counter:
        out = model(x, t, cond, drop)
        fwd = counter.get_total_flops()
        out.float().pow(2).mean().backward()
    total = counter.get_total_flops()
    return {"flops_per_step": int(total), "forward_flops": int(fwd), "batch": batch, "parameters": count_parameters(model)}


def ceiling(flops: float, gflops: float) -> float:
    """Minimum seconds for ``flops`` at ``gflops`` GFLOP/s (use :func:`peak_rates`' ``peak_gflops``)."""
    return float(flops) / (gflops * 1e9)


# ----------------------------------------------------------------------------------------------- plotting
def figure(ncols: int = 1, width: float = 5.0, height: float = 3.6):
    """A matplotlib Figure (no pyplot, no display) with ``ncols`` axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def subtitle(machine: dict, load: dict) -> str:
    busy = load.get("other_cores_busy")
    tag = f", other processes used {busy:.1f} cores (UNDER LOAD)" if load.get("under_load") else ""
    threads = machine["torch_threads"]
    return f"{machine['date'][:10]}, {machine['cores']} cores, {threads} thread{'' if threads == 1 else 's'}{tag}"
