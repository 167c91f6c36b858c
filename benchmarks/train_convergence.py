"""Sample quality against training steps and CPU-hours: the plain (paper) recipe against flaresynth's demo recipe.

Both recipes train the SAME network at the same batch (``--base-preset``, default ``demo``: 32x32, 1.1 M
parameters, batch 32) on the same dataset; only the recipe differs:

* ``plain``: the paper's recipe, as the ``paper`` preset encodes it (Ramunno et al. 2024 and the code it
  derives from, dome272/Diffusion-Models-pytorch): ε-prediction, linear β 1e-4..0.02, uniform loss weights
  (plain MSE), AdamW lr 3e-4 constant without warm-up, gradient clip 1.0, EMA 0.995 without warm-up after a
  2000-step copy phase (``ema_update_after_step: 2000``; so in a run shorter than 2000 steps its EMA weights
  ARE the raw weights, as in fpramunno/Modelling_Solar_Image_with_DDPM);
* ``demo``: ``configs/demo.yaml``: lr 1e-3 with a 200-step warm-up, min-SNR-5 loss weights, EMA up to 0.9999
  with warm-up (power 3/4).

Default size (< 10 min on 2 cores): each recipe trains from scratch for the same number of steps, set from
``--minutes`` (default 3) by timing a throwaway 20-step run of the demo recipe (``calibration``; ``--steps``
sets the count directly; it is rounded to a multiple of ``--evals``), and is evaluated at ``--evals`` evenly
spaced checkpoints (default 4). Every
evaluated checkpoint is sampled with its EMA weights (``--per-class`` 8 per class, fixed seeds, DDIM 20
steps, w = the preset's guidance) and scored with the judge macro-F1, FD_domain and the referee F1
(``common.py``; one cached judge). DDIM 20 because on the shipped demo model at 10 per class it scored judge
F1 0.92 (FD_domain 18) against 0.77 (109) for DPM-Solver++ 20 and 0.78 (84) for UniPC 10 (one run, under
load). A 3-minute budget (~200-450 steps) shows the start of the curves only: how fast each recipe gets
going, not where it ends; the shipped demo model needed 6000 steps (``--log`` below).

The long curve: ``--log RUN/log.jsonl`` (with ``--data`` the dataset RUN was trained on) adds RUN's loss curve
and the quality of every checkpoint RUN still has, plus its final ``model/``. flaresynth's loop keeps only the
newest ``train.keep_checkpoints`` checkpoints (default 2; the demo preset does not raise it), each with its EMA
weights, so a finished run offers two or three points; ``long_run.note`` says which. Run it with
``--skip-short`` to evaluate a long run alone.

Time axes: training seconds up to a step are summed from ``log.jsonl`` (``seconds_per_step`` of each logged
window; checkpoint and grid time excluded). CPU-hours = those seconds × the CPU/wall ratio of this process
while it trained (``os.times``) / 3600; for ``--log`` runs the ratio is unknown and ``--log-cores`` busy
cores are assumed (default: every core; the shipped demo run trained its steps 1500-6000 on one thread beside
another job, so ``--log-cores 1`` is nearer for it). Seconds per step are set beside the arithmetic ceiling (FLOPs of a step over
the measured peak rate, as in ``train_throughput.py``).

Routes: ``--log`` repeats, one curve per run (named by its folder, or by ``--label`` in ``--log`` order), to
compare e.g. pixel diffusion with latent diffusion at 64 px. A latent run (config ``latent.autoencoder``) is
judged on its decoded images: every run is scored by the judge and FD reference of the size of the images it
makes (the latent run's ``model.sample_size`` is its 16 px latent side; a checkpoint is decoded with the run's
copy of its autoencoder), so two 64 px routes share one 64 px judge. Its route also paid for the autoencoder:
that run's training seconds (its ``log.jsonl``, summed as above) are added to every point's time axis
(``offset_s`` per point; ``offset_seconds``, ``offset_source`` per run; the same ``--log-cores``). An
autoencoder without a log (a shipped ``demo:...`` name, a deleted folder, or a folder now holding another
autoencoder than the run's copy) adds 0 and the run's ``note`` says so. ``table_md`` (also on stderr): route,
step, CPU-hours, judge F1, FD_domain, referee F1, for every evaluated point.

Usage: ``python benchmarks/train_convergence.py [--data DS] [--minutes 3] [--log RUN/log.jsonl]``; the route
comparison: ``python benchmarks/train_convergence.py --data DS --skip-short --log PIXEL/log.jsonl
--log LATENT/log.jsonl [--label pixel --label latent] [--log-cores 1]``
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
from common import (
    LoadMonitor,
    Scorer,
    add_judge_seed,
    base_parser,
    ceiling,
    emit,
    figure,
    first_judge,
    log,
    machine_info,
    main_wrapper,
    make_scorer,
    model_from_checkpoint,
    peak_rates,
    real_at_size,
    requested_index,
    resolve_data,
    setup,
    subtitle,
    timed_generate,
    train_step_flops,
)

#: train settings the plain recipe takes from the paper preset (besides the whole diffusion section)
PAPER_TRAIN_KEYS = ("lr", "warmup_steps", "lr_schedule", "grad_clip", "adam_beta1", "adam_beta2", "weight_decay",
                    "ema_decay", "ema_warmup", "ema_power", "ema_update_after_step")
CALIBRATION_STEPS = 20
QUICK_CALIBRATION_STEPS = 4


def recipe_config(name: str, base: str):
    """The run config of recipe ``name`` (plain | demo) on the network and batch of preset ``base``."""
    from flaresynth.config import DiffusionConfig, load_preset
    from flaresynth.errors import FlaresynthError

    cfg = load_preset(base)
    if name == "plain":
        paper = load_preset("paper")
        cfg.diffusion = DiffusionConfig(**paper.diffusion.__dict__)
        for key in PAPER_TRAIN_KEYS:
            setattr(cfg.train, key, getattr(paper.train, key))
    elif name != "demo":
        raise FlaresynthError(f"--recipes {name!r}: expected plain or demo")
    cfg.name = f"{base}-{name}"
    cfg.train.sample_every = 0
    return cfg


def recipe_summary(cfg) -> dict:
    from flaresynth.train import per_process_batch

    d, t = cfg.diffusion, cfg.train
    return {"prediction": d.prediction_type, "loss_weighting": d.loss_weighting + (f" (gamma {d.snr_gamma:g})" if d.loss_weighting == "min_snr" else ""),
            "beta": f"{d.beta_schedule} {d.beta_start:g}..{d.beta_end:g}", "lr": t.lr, "warmup_steps": t.warmup_steps,
            "lr_schedule": t.lr_schedule, "grad_clip": t.grad_clip, "ema_decay": t.ema_decay, "ema_warmup": t.ema_warmup,
            "ema_update_after_step": t.ema_update_after_step, "batch_size": per_process_batch(t, 1)}


def read_log(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]


def train_seconds_by_step(entries: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(steps, cumulative training seconds at each logged step) from log.jsonl entries.

    Only training windows count (lines with ``seconds_per_step``): an autoencoder's log also has a
    ``reconstruction`` line, which is no window; a resumed run's repeated steps count once.
    """
    steps, secs, prev, total = [], [], 0, 0.0
    for e in sorted(entries, key=lambda e: e["step"]):
        if e["step"] <= prev or "seconds_per_step" not in e:
            continue
        total += float(e["seconds_per_step"]) * (e["step"] - prev)
        prev = e["step"]
        steps.append(prev)
        secs.append(total)
    return np.asarray(steps), np.asarray(secs)


def seconds_at(step: int, steps: np.ndarray, secs: np.ndarray) -> float:
    return float(np.interp(step, np.concatenate([[0], steps]), np.concatenate([[0.0], secs])))


def evaluate_model(model, scorer, args, guidance: float) -> dict:
    from flaresynth.sampling import build_requests

    table = build_requests(model, per_class=args.per_class, seed=args.seed)
    images, info = timed_generate(model, table, args.sampler, args.sample_steps, guidance, args.batch_size)
    return {"sampling_s": info["seconds"], **scorer.score(images, requested_index(model, table))}


def plan_steps(minutes: float, s_per_step: float, evals: int) -> int:
    """Steps that fit ``minutes`` at ``s_per_step``, as a multiple of ``evals`` (at least ``evals``)."""
    return max(evals, int(minutes * 60 / max(s_per_step, 1e-9)) // evals * evals)


def calibrate(name: str, args, data: Path, scratch: Path) -> tuple[float, dict]:
    """Seconds per step of recipe ``name``: the last logged window of a throwaway run of a few steps.

    A separate run, so both recipes then train from step 0 with the same checkpoint plan (a calibration that
    continued into the real run would have passed the first evaluation points already).
    """
    from flaresynth.train import train

    cfg = recipe_config(name, args.base_preset)
    steps = QUICK_CALIBRATION_STEPS if args.quick else CALIBRATION_STEPS
    cfg.train.steps = steps
    cfg.train.checkpoint_every = 0
    cfg.train.log_every = max(1, steps // 2)  # the second window is past the first (slow) steps
    out = scratch / f"calibration-{name}"
    t0, c0 = time.perf_counter(), sum(os.times()[:2])
    try:
        train(data, out, cfg, max_steps=steps, progress=False, command=["train_convergence.py", "calibration"])
        sps = float(read_log(out / "log.jsonl")[-1]["seconds_per_step"])
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return sps, {"steps": steps, "s_per_step": sps, "wall_s": time.perf_counter() - t0,
                 "cpu_s": sum(os.times()[:2]) - c0}


def train_recipe(name: str, args, data: Path, scratch: Path, total: int) -> tuple[Path, dict]:
    """Train recipe ``name`` for ``total`` steps into ``scratch/name``, a checkpoint every ``total/evals``."""
    from flaresynth.train import train

    cfg = recipe_config(name, args.base_preset)
    out = scratch / name
    cfg.train.steps = total
    cfg.train.checkpoint_every = max(1, total // args.evals)
    cfg.train.keep_checkpoints = args.evals + 1
    log(f"{name}: training to step {total} (checkpoint every {cfg.train.checkpoint_every})")
    t0, c0 = time.perf_counter(), sum(os.times()[:2])
    train(data, out, cfg, max_steps=total, progress=False, command=["train_convergence.py"])
    wall, cpu = time.perf_counter() - t0, sum(os.times()[:2]) - c0
    return out, {"wall_s": wall, "cpu_s": cpu, "cpu_per_wall": cpu / max(wall, 1e-9),
                 "checkpoint_every": cfg.train.checkpoint_every, "config": recipe_summary(cfg)}


def checkpoints_of(run: Path) -> list[Path]:
    return sorted((p for p in (run / "checkpoints").glob("step-*") if (p / "meta.json").is_file()),
                  key=lambda p: int(p.name.split("-")[1]))


def curve_for(run: Path, ds, scorer, args, guidance: float, cpu_per_wall: float, final_model: bool = False,
              every: int | None = None, offset_s: float = 0.0, image_size: int | None = None) -> tuple[list, list]:
    """Quality at every checkpoint of ``run`` (at multiples of ``every`` when given; + its final model).

    ``offset_s``: seconds spent before the run's step 0 (a latent route's autoencoder training), added to every
    point's CPU-hours. ``image_size``: the side ``scorer`` judges; a model making other images is skipped.
    Returns (curve, notes).
    """
    from flaresynth.errors import FlaresynthError
    from flaresynth.runs import META_FILE, MODEL_DIR, open_run

    entries = read_log(run / "log.jsonl")
    steps, secs = train_seconds_by_step(entries)
    points, notes, seen = [], [], set()
    targets = [("checkpoint", p) for p in checkpoints_of(run) if not every or int(p.name.split("-")[1]) % every == 0]
    if final_model and (run / MODEL_DIR / META_FILE).is_file():
        targets.append(("model", run / "model"))
    for kind, path in targets:
        try:
            model = model_from_checkpoint(run, path, ds) if kind == "checkpoint" else open_run(run, "cpu")
            if model.meta.get("data_hash", ds.manifest.get("data_hash")) != ds.manifest.get("data_hash"):
                raise FlaresynthError(f"data_hash: trained on another dataset, not {ds.path}")
            if image_size is not None and model.image_shape[-1] != image_size:
                raise FlaresynthError(f"makes {model.image_shape[-1]} px images, the judge is {image_size} px")
        except (FlaresynthError, FileNotFoundError, OSError) as exc:
            notes.append(f"{path}: skipped ({str(exc).splitlines()[0]})")
            continue
        step = int(model.meta.get("step", 0))
        if step in seen:
            continue
        seen.add(step)
        q = evaluate_model(model, scorer, args, guidance)
        s = seconds_at(step, steps, secs)
        points.append({"step": step, "source": kind, "train_wall_s": s, "offset_s": offset_s,
                       "cpu_hours": (s + offset_s) * cpu_per_wall / 3600, **q})
        referee = f", referee F1 {q['f1_referee']:.3f}" if q["f1_referee"] is not None else ""
        log(f"  {run.name} step {step}: judge F1 {q['f1_judge']:.3f} ± {q['f1_judge_std']:.3f}, FD_domain "
            f"{q['fd_domain']:.3f}{referee}")
    points.sort(key=lambda p: p["step"])
    return points, notes


def loss_curve(entries: list[dict], max_points: int = 400) -> list[list[float]]:
    pts = [[e["step"], e["loss"]] for e in sorted(entries, key=lambda e: e["step"]) if "loss" in e]
    stride = max(1, len(pts) // max_points)
    return pts[::stride]


def main() -> None:
    p = base_parser(__doc__)
    add_judge_seed(p)
    p.add_argument("--batch-size", type=int, default=32, help="images per sampling batch")
    p.add_argument("--base-preset", default="demo", help="network and batch both recipes train (default demo)")
    p.add_argument("--recipes", default="plain,demo", help="recipes to train (default plain,demo)")
    p.add_argument("--minutes", type=float, default=None, help="training budget per recipe, minutes (default 3)")
    p.add_argument("--steps", type=int, default=None, help="training steps per recipe (overrides --minutes)")
    p.add_argument("--evals", type=int, default=4, help="evaluated checkpoints per recipe (default 4)")
    p.add_argument("--per-class", type=int, default=8, help="images per class per evaluation (default 8)")
    p.add_argument("--sampler", default="ddim", help="sampler of the evaluations (default ddim: see the module docstring)")
    p.add_argument("--sample-steps", type=int, default=20, help="its steps (default 20)")
    p.add_argument("--guidance", type=float, default=None, help="CFG w (default: the base preset's)")
    p.add_argument("--log", type=Path, action="append", default=None,
                   help="RUN/log.jsonl of a long run to add (with its checkpoints); repeat it to compare runs, e.g. "
                        "a pixel and a latent route")
    p.add_argument("--label", action="append", default=None,
                   help="name of each --log run in the table and figure, in --log order (default: its folder's name)")
    p.add_argument("--log-cores", type=float, default=None,
                   help="busy cores assumed for --log's CPU-hours (default: every core of this machine)")
    p.add_argument("--skip-short", action="store_true", help="do not train; only evaluate the --log runs")
    p.add_argument("--keep", action="store_true", help="keep the short runs (in WORKDIR/convergence-*)")
    p.add_argument("--fd-split", default="all", help="real split FD_domain compares with (default all)")
    args = p.parse_args()
    out = setup(args)
    monitor = LoadMonitor()
    if args.quick:
        # --quick --minutes M keeps the calibration path (tests); plain --quick trains 4 steps per recipe
        args.base_preset, args.evals, args.per_class, args.sample_steps = "tiny", 2, 1, 2
        if args.minutes is None:
            args.steps = args.steps or 4
    if args.minutes is None:
        args.minutes = 3.0

    from flaresynth.errors import FlaresynthError

    if args.evals < 1 or args.per_class < 1 or args.minutes <= 0 or (args.steps is not None and args.steps < args.evals):
        raise FlaresynthError("--evals, --per-class: whole numbers >= 1; --minutes > 0; --steps >= --evals")
    if args.steps is not None:
        args.steps = args.steps // args.evals * args.evals

    from flaresynth.config import load_preset
    from flaresynth.dataset import open_dataset

    data = resolve_data(args)
    ds = open_dataset(data)
    base = load_preset(args.base_preset)
    guidance = float(base.sample.guidance if args.guidance is None else args.guidance)
    long_runs = long_run_labels(args.log or [], args.label)
    if args.skip_short and not long_runs:
        raise FlaresynthError("--skip-short: needs --log RUN/log.jsonl (nothing else to evaluate)")
    scorers: dict[int, Scorer] = {}
    judges, referee_info = {}, {}

    def scorer_for(size: int) -> Scorer:
        # one judge per image size (the short runs and a long run may differ), trained once and cached
        if size not in scorers:
            real = real_at_size(ds, size)
            judge, judges[size] = first_judge(ds, real, args)
            scorers[size], referee_info[size] = make_scorer(ds, judge, real, args)
        return scorers[size]

    # a latent run's model.sample_size is its latent side: the judge scores the decoded images
    sizes = {label: image_size_of(run) for label, run in long_runs}
    size = sizes[long_runs[0][0]] if args.skip_short else base.model.sample_size
    if len(set(sizes.values())) > 1:
        log(f"warning: the --log runs make images of different sizes {sizes}: each is scored by a judge of its size")
    scorer = scorer_for(size)
    judge_info = judges[size]

    rates = peak_rates(args.quick)
    gflops = rates["peak_gflops"]
    fl = train_step_flops(base, int(ds.images.shape[1]), len(ds.classes))
    ceil_s = ceiling(fl["flops_per_step"], gflops)
    result = {"benchmark": "train_convergence", "data": str(data), "base_preset": args.base_preset,
              "sampler": args.sampler, "sample_steps": args.sample_steps, "guidance": guidance,
              "per_class": args.per_class, "judge": judge_info, "referee": referee_info[size],
              "referee_real_test_f1": scorer.referee_real_test_f1,
              **rates, **fl, "ceiling_s_per_step": ceil_s, "recipes": {}, "long_run": None, "long_runs": []}

    scratch = args.workdir / f"convergence-{uuid.uuid4().hex[:8]}"
    try:
        if not args.skip_short:
            recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
            for name in recipes:
                recipe_config(name, args.base_preset)  # unknown names fail before any training
            total, calibration = args.steps, None
            if total is None:
                # the demo recipe (else the first) sets the step count both recipes get
                who = "demo" if "demo" in recipes else recipes[0]
                sps, calibration = calibrate(who, args, data, scratch)
                total = plan_steps(args.minutes, sps, args.evals)
                calibration["recipe"] = who
                log(f"{who}: {sps:.3f} s/step over its first {calibration['steps']} steps: {total} steps fit "
                    f"{args.minutes:g} min")
            result["calibration"] = calibration
            for name in recipes:
                run, info = train_recipe(name, args, data, scratch, total)
                entries = read_log(run / "log.jsonl")
                steps, secs = train_seconds_by_step(entries)
                s_per_step = float(secs[-1] / steps[-1]) if len(steps) else None
                log(f"{name}: evaluating {len(checkpoints_of(run))} checkpoints")
                curve, notes = curve_for(run, ds, scorer, args, guidance, info["cpu_per_wall"], every=info["checkpoint_every"])
                result["recipes"][name] = {**info, "steps": total, "s_per_step": s_per_step,
                                           "achieved_over_ceiling": ceil_s / s_per_step if s_per_step else None,
                                           "curve": curve, "loss": loss_curve(entries), "notes": notes}
            result["demo_steps_to_match_plain_final"] = steps_to_match(result["recipes"])
        for label, run in long_runs:
            lr = long_curve(run, ds, scorer_for(sizes[label]), args, guidance, label, sizes[label])
            result["long_runs"].append({**lr, "judge_path": judges[sizes[label]]["path"]})
        result["long_run"] = result["long_runs"][0] if result["long_runs"] else None
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    load = monitor.report()
    result = {"benchmark": "train_convergence", "machine": machine_info(args.threads), "load": load, **result,
              "seconds_total": load["wall_s"]}
    result["table_md"] = table_md(result)
    log("quality against CPU-hours:\n" + result["table_md"])
    result["plot"] = str(plot(result, out / "train_convergence.png"))
    emit(result, out, "train_convergence")


def steps_to_match(recipes: dict) -> dict | None:
    """First demo checkpoint whose judge F1 reaches the plain recipe's final one (the saving in steps)."""
    if "plain" not in recipes or "demo" not in recipes or not recipes["plain"]["curve"]:
        return None
    target = recipes["plain"]["curve"][-1]
    for pt in recipes["demo"]["curve"]:
        if pt["f1_judge"] >= target["f1_judge"]:
            return {"plain_final_step": target["step"], "plain_final_f1_judge": target["f1_judge"],
                    "demo_step": pt["step"], "step_ratio": pt["step"] / max(target["step"], 1)}
    return {"plain_final_step": target["step"], "plain_final_f1_judge": target["f1_judge"], "demo_step": None,
            "step_ratio": None}


def long_run_labels(logs: list[Path], labels: list[str] | None) -> list[tuple[str, Path]]:
    """(label, run folder) of each ``--log RUN/log.jsonl``: ``--label`` in order, else the folder's name."""
    from flaresynth.errors import FlaresynthError

    for path in logs:
        if not path.is_file():
            raise FlaresynthError(f"--log {path}: no such file (expected RUN/log.jsonl)")
    if labels is not None and len(labels) != len(logs):
        raise FlaresynthError(f"--label: {len(labels)} labels for {len(logs)} --log runs (give one per --log, in order)")
    runs = [path.parent for path in logs]
    names = labels if labels is not None else [run.resolve().name for run in runs]
    if len(set(names)) != len(names):
        if labels is not None:
            raise FlaresynthError(f"--label: {names}: each run needs its own label")
        names = [str(run) for run in runs]  # two runs with one folder name: their paths tell them apart
    return list(zip(names, runs, strict=True))


def image_size_of(run: Path) -> int:
    """Side of the images ``run`` makes: ``model.sample_size`` in pixels, or for a latent run its autoencoder's
    image side (its ``model.sample_size`` is the latent's)."""
    from flaresynth.config import load_config
    from flaresynth.runs import autoencoder_meta
    from flaresynth.train import latent_source

    cfg = load_config(run / "config.yaml")
    if cfg.latent.autoencoder is None:
        return int(cfg.model.sample_size)
    _, meta = autoencoder_meta(latent_source(cfg, run))
    return int(meta["autoencoder"]["sample_size"])


def route_offset(run: Path) -> dict:
    """The upfront training seconds of ``run``'s route: for a latent run, its autoencoder's (that run's log.jsonl,
    summed as :func:`train_seconds_by_step` does); 0 for a pixel run.

    Returns ``offset_seconds``, ``offset_steps``, ``offset_source`` (the log read) and ``note``: 0 with a note
    saying why when the autoencoder's log is not there (a shipped ``demo:...`` name, a deleted folder) or the
    folder now holds another autoencoder than the one the run keeps a copy of.
    """
    from flaresynth.config import load_config
    from flaresynth.errors import FlaresynthError
    from flaresynth.runs import AUTOENCODER_DIR, META_FILE, MODEL_DIR, model_folder, read_meta, resolve

    spec = load_config(run / "config.yaml").latent.autoencoder
    none = {"offset_seconds": 0.0, "offset_steps": 0, "offset_source": None, "note": None}
    if spec is None:
        return none
    lost = "; the CPU-hours exclude the autoencoder's training"
    try:
        folder = resolve(spec)
        named_id = read_meta(model_folder(folder)).get("model_id")
    except (FlaresynthError, OSError, ValueError) as exc:
        return {**none, "note": f"latent.autoencoder {spec}: {str(exc).splitlines()[0]}{lost}"}
    if folder.name == MODEL_DIR and not (folder / "log.jsonl").is_file():
        folder = folder.parent  # latent.autoencoder named RUN/model: the log is RUN's
    path = folder / "log.jsonl"
    if not path.is_file():
        return {**none, "note": f"latent.autoencoder {spec}: no log.jsonl in {folder} (shipped autoencoders have "
                                f"none){lost}"}
    copy = run / AUTOENCODER_DIR / META_FILE
    used_id = read_meta(copy.parent).get("model_id") if copy.is_file() else None
    if used_id is not None and used_id != named_id:
        return {**none, "note": f"latent.autoencoder {spec}: holds autoencoder {named_id!r}, the run trained in "
                                f"{used_id!r} ({copy}): its log is not this route's{lost}"}
    try:
        steps, secs = train_seconds_by_step(read_log(path))
    except (ValueError, KeyError, TypeError) as exc:
        return {**none, "note": f"{path}: unreadable ({type(exc).__name__}: {exc}){lost}"}
    return {"offset_seconds": float(secs[-1]) if len(secs) else 0.0, "offset_steps": int(steps[-1]) if len(steps) else 0,
            "offset_source": str(path), "note": None}


def long_curve(run: Path, ds, scorer, args, guidance: float, label: str | None = None,
               image_size: int | None = None) -> dict:
    """Loss curve and quality points of a finished run (``--log``); a latent run's CPU-hours include its
    autoencoder's training (:func:`route_offset`)."""
    from flaresynth.config import load_config
    from flaresynth.runs import META_FILE, MODEL_DIR

    cfg = load_config(run / "config.yaml")
    entries = read_log(run / "log.jsonl")
    steps, secs = train_seconds_by_step(entries)
    cores = args.log_cores or os.cpu_count() or 1
    kept = [p.name for p in checkpoints_of(run)]
    offset = route_offset(run)
    log(f"long run {run}: {len(entries)} log lines to step {int(steps[-1]) if len(steps) else 0}; checkpoints {kept}"
        + (f"; + {offset['offset_seconds']:.0f} s of autoencoder training ({offset['offset_source']})"
           if offset["offset_source"] else "") + (f"; {offset['note']}" if offset["note"] else ""))
    curve, notes = curve_for(run, ds, scorer, args, guidance, cores, final_model=True,
                             offset_s=offset["offset_seconds"], image_size=image_size)
    note = (f"the loop keeps the newest train.keep_checkpoints = {cfg.train.keep_checkpoints} checkpoints; found {kept}"
            f"{' and the final model/' if (run / MODEL_DIR / META_FILE).is_file() else ''}: the quality curve has "
            f"only these points (the loss curve is complete). CPU-hours assume {cores} busy cores"
            f"{' (for the autoencoder too)' if offset['offset_source'] else ''}."
            + (f" {offset['note']}" if offset["note"] else ""))
    return {"run": str(run), "label": label or run.name, "latent": cfg.latent.autoencoder is not None,
            "image_size": image_size, "config": recipe_summary(cfg), "steps_logged": int(steps[-1]) if len(steps) else 0,
            "train_wall_s": float(secs[-1]) if len(secs) else 0.0,
            "s_per_step": float(secs[-1] / steps[-1]) if len(steps) else None, **offset,
            "cpu_hours_assumed_cores": cores, "checkpoints_kept": kept, "curve": curve,
            "loss": loss_curve(entries), "note": note, "skipped": notes}


def table_md(result: dict) -> str:
    """Markdown table of every evaluated point: route, step, CPU-hours (with any autoencoder offset), judge F1,
    FD_domain, referee F1 (± the bootstrap std)."""
    def pm(p, key, fmt):
        return "–" if p.get(key) is None else fmt.format(p[key]) + (
            f" ± {fmt.format(p[key + '_std'])}" if p.get(key + "_std") is not None else "")

    rows = ["| route | step | CPU-h | judge F1 | FD_domain | referee F1 |", "|---|---|---|---|---|---|"]
    series = [(name, r["curve"]) for name, r in result["recipes"].items()]
    series += [(r["label"], r["curve"]) for r in result.get("long_runs") or []]
    for name, curve in series:
        for p in curve:
            rows.append(f"| {name} | {p['step']} | {p['cpu_hours']:.3g} | {pm(p, 'f1_judge', '{:.3f}')} | "
                        f"{pm(p, 'fd_domain', '{:.3g}')} | {pm(p, 'f1_referee', '{:.3f}')} |")
    return "\n".join(rows)


def plot(result: dict, path):
    """Judge F1 and FD_domain against CPU-hours, and the loss against steps, one line per recipe or --log run; a
    latent route's autoencoder training is the dashed line its curve starts after."""
    fig, (ax1, ax2, ax3) = figure(3, width=4.2)
    series = [(name, r["curve"], r["loss"], 0.0) for name, r in result["recipes"].items()]
    for r in result.get("long_runs") or []:
        offset_h = r.get("offset_seconds", 0.0) * r["cpu_hours_assumed_cores"] / 3600
        series.append((r["label"] if not result["recipes"] else "long run " + r["label"], r["curve"], r["loss"], offset_h))
    for name, curve, loss, offset_h in series:
        if curve:
            h = [p["cpu_hours"] for p in curve]
            line = ax1.errorbar(h, [p["f1_judge"] for p in curve], yerr=[p["f1_judge_std"] for p in curve], fmt="o-",
                                capsize=3, label=name)
            ax2.errorbar(h, [p["fd_domain"] for p in curve], yerr=[p["fd_domain_std"] for p in curve], fmt="o-", capsize=3,
                         label=name)
            if offset_h:
                for ax in (ax1, ax2):
                    ax.axvline(offset_h, ls="--", lw=0.8, c=line[0].get_color(), label=f"{name}: its autoencoder")
        if loss:
            a = np.asarray(loss, dtype=np.float64)
            ax3.plot(a[:, 0], a[:, 1], lw=0.8, label=name)
    if result.get("judge", {}).get("real_test_f1") is not None:
        ax1.axhline(result["judge"]["real_test_f1"], ls=":", c="green", lw=0.8, label="judge on real test")
    ax1.set_xlabel("CPU-hours")
    ax1.set_ylabel("judge macro-F1")
    ax2.set_xlabel("CPU-hours")
    ax2.set_ylabel("FD_domain")
    ax3.set_xlabel("training step")
    ax3.set_ylabel("training loss (each run's own weighting)")
    ax3.set_yscale("log")
    for ax in (ax1, ax2, ax3):
        ax.legend(fontsize=7)
    rec = ", ".join(f"{n} {r['s_per_step']:.2f} s/step" for n, r in result["recipes"].items() if r.get("s_per_step"))
    if result["recipes"]:
        title = f"Convergence on the {result['base_preset']} network ({rec}; FLOP ceiling {result['ceiling_s_per_step']:.3f} s/step)"
    else:  # --skip-short: the --log runs alone, e.g. a pixel and a latent route
        title = "Convergence: " + ", ".join(
            f"{r['label']} {r['s_per_step']:.2f} s/step"
            + (f" after {r['offset_seconds'] / 3600:.2f} h of autoencoder training (counted in its CPU-hours)"
               if r.get("offset_seconds") else "")
            for r in result["long_runs"] if r.get("s_per_step"))
    fig.suptitle(f"{title}\n{subtitle(result['machine'], result['load'])}", fontsize=9)
    fig.savefig(path, dpi=110)
    return path


if __name__ == "__main__":
    main_wrapper(main)
