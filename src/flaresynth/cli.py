"""The ``flaresynth`` command line. Each command is thin: it parses options and calls the library.

Bad input ends with one line on stderr naming the file and field, and a non-zero exit; the
traceback is shown only with ``--debug`` (given anywhere on the command line).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from flaresynth.allocator import keep_freed_memory
from flaresynth.errors import FlaresynthError

app = typer.Typer(
    name="flaresynth",
    help="Synthetic SDO/AIA full-disk images with solar flares of a chosen GOES class.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
dataset_app = typer.Typer(help="Build and inspect dataset folders.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")

# Results (tables, summaries, paths written, --json) go to stdout; progress, logs and errors to stderr, so
# `flaresynth demo > summary.txt` and pipes get the result alone. soft_wrap: a line (a path written, a one-line
# error) stays one line however long its paths are, instead of being cut at the terminal's (or 80) columns.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    """Synthetic SDO/AIA full-disk images with solar flares of a chosen GOES class."""


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _whole_numbers(option: str, text: str) -> list[int]:
    """``"999,699,399"`` -> [999, 699, 399]; one clear error naming ``option`` otherwise."""
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise FlaresynthError(f"{option} {text!r}: expected comma-separated whole numbers (e.g. 999,699,399,99)") from None


# --------------------------------------------------------------------------------------------- goes
@app.command()
def goes(
    files: Annotated[list[Path], typer.Argument(help="GOES XRS files: GOES-R or GOES 13-15 netCDF, SDAC FITS.")],
    scale: Annotated[
        str,
        typer.Option(help="Flux convention: 'true' (NOAA science, default) or 'swpc' (x0.7 for GOES 8-15, as in pre-2020 HEK/SWPC classes)."),
    ] = "true",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print each file's product, satellite, time range, and peak XRS-B (1-8 Å) flux with its time and class."""
    from rich.table import Table

    from flaresynth.sources.goes import summarize_file

    rows = [summarize_file(f, scale=scale) for f in files]
    if as_json:
        _print_json(rows)
        return
    table = Table(title=f"GOES XRS-B peaks (scale={scale}, W/m²)")
    for col in ("file", "product", "satellite", "start", "end", "peak flux", "peak time", "class", "good"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            Path(r["file"]).name, r["product"], r["satellite"], str(r["start"])[:19], str(r["end"])[:19],
            f"{r['peak_flux']:.3e}", str(r["peak_time"])[:19], r["peak_class"], f"{r['n_good']}/{r['n_samples']}",
        )
    out.print(table)


# ----------------------------------------------------------------------------------------- simulate
@app.command()
def simulate(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write sdomlv2.zarr, goes/ and hek/ into.")],
    days: Annotated[int | None, typer.Option(help="Number of days to simulate [default: 730, the demo's period].")] = None,
    cadence_min: Annotated[int | None, typer.Option("--cadence-min", help="AIA frame cadence in minutes, a divisor of a day [default: 60].")] = None,
    start: Annotated[str | None, typer.Option(help="First day, UTC (YYYY-MM-DD), 2010-05-13 to 2040 [default: 2011-01-01].")] = None,
    cycle_phase: Annotated[float | None, typer.Option("--cycle-phase", help="0-1: a fixed phase of a typical solar cycle (0 minimum, ~0.4 maximum) instead of the dates' activity.")] = None,
    without: Annotated[list[str] | None, typer.Option("--without", help="Leave out a confounder of real data (repeatable): limb, euv_timing, euv_scatter, exposure, mesh, cosmic_rays, gaps, degradation.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives identical files.")] = 0,
    channels: Annotated[str, typer.Option(help="AIA channels, comma-separated, from 94A, 131A, 171A, 193A, 211A, 335A: one array per channel in each year group, each from the same plasma through its own temperature response. 171A is the same whatever else is asked.")] = "171A",
    deg_171: Annotated[str, typer.Option("--deg-171", help="DEG_COR of 171 Å: model (the drifting factor the default data were made with) or aiapy (aiapy's degradation table, as the other channels use; changes the 171 Å data).")] = "model",
) -> None:
    """Write a simulated Sun in the real archive formats: SDOMLv2 zarr, GOES XRS netCDF, HEK JSON."""
    # imported here: the simulator pulls in sunpy, xarray and matplotlib, a measurable cost for every other command
    from flaresynth.sources.simulate import CONFOUNDERS, DEFAULT_CADENCE_MIN, DEFAULT_DAYS, DEFAULT_START
    from flaresynth.sources.simulate import simulate as run_simulation

    confounders = [c for c in CONFOUNDERS if c not in (without or [])]
    unknown = [w for w in (without or []) if w not in CONFOUNDERS]
    if unknown:
        raise FlaresynthError(f"--without {unknown[0]!r}: expected one of {', '.join(CONFOUNDERS)}")
    summary = run_simulation(out_dir, days=DEFAULT_DAYS if days is None else days,
                             cadence_min=DEFAULT_CADENCE_MIN if cadence_min is None else cadence_min,
                             start=DEFAULT_START if start is None else start, seed=seed, cycle_phase=cycle_phase,
                             confounders=confounders, channels=channels, deg_171=deg_171)
    out.print(summary)


# ------------------------------------------------------------------------------------------ dataset
@dataset_app.command("build")
def dataset_build(
    images: Annotated[str, typer.Option("--sdoml", "--images", help="SDOMLv2 zarr path or s3:// / gs:// URL, or a folder of AIA FITS files.")],
    goes_files: Annotated[list[str], typer.Option("--goes", help="GOES XRS file or folder (repeat the option for several).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Dataset folder to write (appears only when complete).")],
    hek: Annotated[str | None, typer.Option(help="Saved HEK JSON response (file or folder of pages). Required for --task images; for --task forecast, without it flares are detected in the XRS series (NOAA's event definition).")] = None,
    task: Annotated[str, typer.Option(help="images: flare and quiet frames labelled by GOES class (what generators learn from); forecast: images at fixed issue times labelled by whether an >=M flare starts in the next 24 h.")] = "images",
    issue_every: Annotated[float, typer.Option("--issue-every", help="--task forecast: hours between issue times (on the UTC clock).")] = 6.0,
    horizon: Annotated[float, typer.Option("--horizon", help="--task forecast: forecast window in hours after each issue time.")] = 24.0,
    size: Annotated[int, typer.Option(help="Image size in pixels (64, 128, 256...).")] = 64,
    channel: Annotated[str, typer.Option(help="AIA channel array, e.g. 171A.")] = "171A",
    channels: Annotated[str | None, typer.Option(help="Several AIA channels at once, comma-separated (e.g. 94A,131A,171A,193A,211A): images (N, C, H, W), frames aligned on the first channel's times, one intensity transform per channel.")] = None,
    align_tol: Annotated[float | None, typer.Option("--align-tol", help="With --channels: seconds within which every channel must have a frame for a frame to be kept [default: half the first channel's cadence].")] = None,
    scheme: Annotated[str, typer.Option(help="Label scheme: goes5 (A,B,C,M,X) or activity3 (low, medium, high).")] = "goes5",
    label: Annotated[str, typer.Option(help="Label rule: instant (XRS-B at the image time), peak24 (peak in the next 24 h) or event (HEK class).")] = "instant",
    scale: Annotated[str, typer.Option(help="GOES flux convention: true or swpc.")] = "true",
    window_min: Annotated[float, typer.Option("--window-min", help="Flare frames: within this many minutes of a HEK peak.")] = 30.0,
    quiet_per_day: Annotated[int, typer.Option("--quiet-per-day", help="Quiet (non-flaring) frames per day.")] = 8,
    small_event_fraction: Annotated[float, typer.Option("--small-event-fraction", help="Share of the A, B and C HEK events whose flare frames are kept (whole events, at random, seeded by --split-seed); M and X events are always kept.")] = 1.0,
    start: Annotated[str | None, typer.Option(help="First time to use, UTC.")] = None,
    end: Annotated[str | None, typer.Option(help="Time to stop before, UTC.")] = None,
    test_fraction: Annotated[float, typer.Option("--test-fraction", help="Fraction of each class for the test split (by whole blocks).")] = 0.2,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Fraction for the validation split.")] = 0.1,
    split_by: Annotated[str, typer.Option("--split-by", help="Contiguous time blocks assigned whole to train/val/test: rotation (Carrington, 27.3 d), month, year, week, day, or chronological (train on the earliest, test on the latest). Too few blocks: falls back to a smaller block, with a warning in the manifest.")] = "rotation",
    buffer_days: Annotated[float, typer.Option("--buffer-days", help="Days dropped around every boundary between blocks of different splits (every frame, flare frames included).")] = 2.0,
    split_seed: Annotated[int, typer.Option("--split-seed", help="Seed of the block assignment search.")] = 0,
    mask_limb: Annotated[bool, typer.Option("--mask-limb", help="Set pixels outside the solar disk to -1.")] = False,
    scheduler: Annotated[str | None, typer.Option(help="dask.distributed scheduler address; its workers read the images and write their rows of --out themselves, so they must see both at the same paths (one machine, or a shared filesystem); default: local threads.")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Local dask threads (default: one per core).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset folder built from other inputs.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Select flaring and quiet AIA frames, label them with GOES, preprocess them, and write a dataset folder."""
    from flaresynth.dataset import BuildConfig, build_dataset

    cfg = BuildConfig(
        size=size, channel=channel, channels=None if channels is None else channels.split(","), align_tol_s=align_tol,
        scheme=scheme, label_rule=label, scale=scale, window_min=window_min,
        quiet_per_day=quiet_per_day, small_event_fraction=small_event_fraction, start=start, end=end, test_fraction=test_fraction,
        val_fraction=val_fraction, task=task, issue_every_h=issue_every, forecast_hours=horizon, split_by=split_by, buffer_days=buffer_days, split_seed=split_seed,
        mask_limb=mask_limb, workers=workers,
    )
    manifest = build_dataset(images, goes_files, hek, out_dir, cfg, scheduler=scheduler, overwrite=overwrite,
                             progress=not as_json)
    if as_json:
        _print_json(manifest)
        return
    if manifest.get("up_to_date"):
        out.print(f"{out_dir}: up to date (same inputs and parameters); nothing to do")
    _print_counts(out_dir, manifest)
    if manifest.get("alignment"):
        a = manifest["alignment"]
        out.print(f"channels {', '.join(manifest['channels'])}: {a['n_aligned']} of {a['n_reference_frames']} "
                  f"{a['reference']} frames aligned within {a['tolerance_s']:g} s; dropped {a['n_dropped']} "
                  f"(missing: {a['missing_per_channel']})", highlight=False)
    _print_forecast(manifest.get("forecast"))
    _print_splits(manifest.get("splits"))


@dataset_app.command("info")
def dataset_info(
    path: Annotated[Path, typer.Argument(help="Dataset folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print a dataset folder's size, classes, counts per split and sources."""
    from flaresynth.dataset import dataset_summary, open_dataset

    summary = dataset_summary(open_dataset(path))
    if as_json:
        _print_json(summary)
        return
    out.print(f"{summary['path']}: {summary['n_images']} images {summary['shape']} {summary['channels']}, "
              f"scheme {summary['scheme']}, label rule {summary['label_rule']}, {summary['time_range'][0]} .. {summary['time_range'][1]}")
    _print_counts(path, {"counts": summary["counts"]})
    _print_forecast(summary.get("forecast"))
    _print_splits(summary.get("splits"))


def _print_forecast(info) -> None:
    """A forecast dataset's label and what happened to its issue times."""
    if not info:
        return
    c = info["issue_times"]
    out.print(f"forecast label: {info['label']}; issue times every {info['issue_every_hours']:g} h: {c['issue_times']}, "
              f"kept {c['kept']}; excluded: {c['ongoing_flare']} during an ongoing flare, {c['outcome_unknown']} with "
              f"an unknown outcome, {c['no_recent_image']} without a recent image, {c['no_goes_at_issue']} without "
              f"GOES data. Flare list: {info['flare_list']} ({info['n_flares_at_threshold']} at or above the threshold)",
              highlight=False)


def _print_splits(splits) -> None:
    """The time blocks behind the splits, the buffers and any fallback warning."""
    from rich.table import Table

    if not splits or not splits.get("blocks"):
        return
    table = Table(title=f"split by {splits['rule']} blocks (buffer {splits['buffer_days']:g} days between splits; "
                        f"{splits.get('dropped_in_buffers', 0)} images dropped in buffers)")
    for col in ("block start", "block end", "split", "images"):
        table.add_column(col, justify="right" if col == "images" else "left")
    for b in splits["blocks"]:
        table.add_row(b["start"], b["end"], b["split"], str(b["n_images"]))
    out.print(table)
    for w in splits.get("warnings", []):
        err.print(f"warning: {w}", highlight=False)


def _print_counts(path, manifest) -> None:
    from rich.table import Table

    counts = manifest["counts"]
    classes = list(counts["all"])
    table = Table(title=f"{path}: images per class and split")
    table.add_column("split")
    for c in classes:
        table.add_column(c, justify="right")
    table.add_column("total", justify="right")
    for split, row in counts.items():
        table.add_row(split, *[str(row[c]) for c in classes], str(sum(row.values())))
    out.print(table)


# ----------------------------------------------------------------------------------------- evaluate
@app.command()
def evaluate(
    real: Annotated[Path, typer.Option("--real", help="Dataset folder the generator imitates.")],
    generated: Annotated[Path, typer.Option("--generated", help="Samples folder (written by `flaresynth sample` or the ceVAE).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Evaluation folder to write (metrics.json, metrics.md, figures/); replaced if it is an earlier evaluation.")],
    features: Annotated[str, typer.Option(help="Feature encoders, comma-separated: domain (judge CNN, default), effnet-lite0 (ImageNet; needs the optional 'effnet' extra), clip:PATH, dinov2:PATH (local transformers folders), inception:PATH (needs the optional 'inception' extra). Nothing is downloaded.")] = "domain",
    repeats: Annotated[int, typer.Option(min=1, help="Resamplings (random halves of the real split) behind each mean ± std.")] = 5,
    clusters: Annotated[int, typer.Option(min=1, help="k-means clusters K for CE/CD/CS (reduced to a tenth of the reference half if larger).")] = 10,
    judge: Annotated[Path | None, typer.Option(help="Judge folder: loaded if it exists, else the judge the package ships for this dataset (the demo's: the same judge on every machine), else trained on the real training split; saved there. Default: EVAL/judge.")] = None,
    split: Annotated[str, typer.Option(help="Real split the distribution metrics use: test, val, train or all.")] = "test",
    referee: Annotated[str, typer.Option(help="Physical referee F1 from the simulated Sun's flux estimator: auto (when the dataset is simulated), on, off.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the resamplings, k-means, KID subsets and judge training.")] = 0,
    device: Annotated[str, typer.Option(help="torch device for the encoders and the judge (cpu, cuda).")] = "cpu",
    no_figures: Annotated[bool, typer.Option("--no-figures", help="Skip the figures.")] = False,
    channel_judges: Annotated[bool, typer.Option("--channel-judges/--no-channel-judges", help="Several channels: also train a judge on each channel alone (per-channel F1_judge_<ch> and FD/KID/CE/CD/CS_domain_<ch>; one more judge training per channel).")] = True,
    judges: Annotated[int, typer.Option(min=1, help="Judges trained with seeds SEED, SEED+1, ...: more than one adds F1_judge_ensemble (their mean probabilities) beside its own ceiling, and FD_domain_ensemble (FD_domain in each judge's features, averaged; FD_domain stays the first judge's).")] = 1,
    feature_cache: Annotated[Path | None, typer.Option(help="Folder keeping the real images' features of each pretrained encoder (effnet-lite0, clip, dinov2, inception), so evaluating several generators against one dataset encodes the real split once.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics.json's metrics as JSON.")] = False,
) -> None:
    """Compare generated images with real ones: cluster metrics, Fréchet distance, KID and judge F1, each beside its benchmark."""
    from flaresynth.evaluate import EvaluateConfig
    from flaresynth.evaluate import evaluate as run_evaluation

    cfg = EvaluateConfig(features=features, repeats=repeats, clusters=clusters, split=split, seed=seed, device=device,
                         judge=str(judge) if judge else None, referee=referee, figures=not no_figures,
                         channel_judges=channel_judges, judges=judges,
                         feature_cache=str(feature_cache) if feature_cache else None)
    result = run_evaluation(real, generated, out_dir, cfg, log=lambda line: err.print(line, highlight=False))
    if as_json:
        _print_json(result["metrics"])
        return
    sys.stdout.write((Path(out_dir) / "metrics.md").read_text())


# -------------------------------------------------------------------------------------------- train
@app.command()
def train(
    data: Annotated[Path, typer.Option("--data", help="Dataset folder (from `flaresynth dataset build`).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Run folder: config, log, checkpoints, final model.")],
    config: Annotated[Path | None, typer.Option("--config", help="Run config YAML (missing keys keep their defaults).")] = None,
    preset: Annotated[str | None, typer.Option("--preset", help="Shipped config: demo (CPU, 32 px, 1.1 M params; discrete class), demo-continuous (flux), demo-embedding (class + demo:cevae embedding), paper (64 px, 23 M), paper128, tiny (tests); cevae-demo (the ceVAE baseline, CPU, 32 px, 1.4 M), cevae-demo64 (the same at 64 px), cevae-tiny (tests); autoencoder-demo (64 px <-> 16x16x4 latents), demo64-latent, demo64-latent-continuous, demo64-latent-embedding (latent diffusion at 64 px, with --autoencoder); autoencoder-demo128 (128 px <-> 16x16x4 latents), activity3-latent128 (128 px activity3 levels low/medium/high in its latents, with --autoencoder; a dataset built with --scheme activity3 --size 128); autoencoder-tiny, tiny-latent (tests). Default: demo, or the run's own config with --resume.")] = None,
    autoencoder: Annotated[Path | None, typer.Option("--autoencoder", help="Latent configs: the autoencoder run (flaresynth train --preset autoencoder-demo, same dataset) whose latents the DDPM learns; replaces the config's latent.autoencoder. The run keeps a copy.")] = None,
    init_from: Annotated[str | None, typer.Option("--init-from", help="A trained DDPM run (folder or shipped name, e.g. demo:discrete) whose EMA weights start the network instead of a random init: fine-tuning, or training on under a new LR schedule; the optimiser starts afresh. Same network, noise schedule, conditioning, classes and autoencoder required; replaces the config's train.init_from.")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Stop after this many optimiser steps in total (default: the config's train.steps); continue later with --resume.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's latest complete checkpoint.")] = False,
    device: Annotated[str | None, typer.Option("--device", help="cpu or cuda (default: a GPU when visible). Under `accelerate launch` accelerate places each process.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar with loss and images/s.")] = True,
    deterministic: Annotated[bool, typer.Option("--deterministic", help="GPU: deterministic cuDNN/cuBLAS kernels and no TF32, so a run repeats bit for bit on the same hardware (slower). A CPU run repeats without it.")] = False,
    allow_world_size_change: Annotated[bool, typer.Option("--allow-world-size-change", help="Resume a checkpoint saved by another number of processes (its batch, or with train.global_batch its random streams, then differ from the interrupted run's).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run's provenance.json when done.")] = False,
) -> None:
    """Train the class-conditional DDPM (in pixels, or in an autoencoder's latents), the ceVAE baseline (config kind: cevae) or the autoencoder of latent diffusion (kind: autoencoder), with EMA, checkpoints and resume; works unchanged under `accelerate launch`."""
    import os

    from flaresynth.dataset import check_task
    from flaresynth.io import read_json
    from flaresynth.train import train as run_training

    check_task(data, "images", "flaresynth train")
    run = run_training(data, out_dir, config, preset=preset, max_steps=max_steps, resume=resume, device=device,
                       progress=progress and not as_json, command=["flaresynth", *sys.argv[1:]],
                       deterministic=deterministic, allow_world_size_change=allow_world_size_change,
                       autoencoder=autoencoder, init_from=init_from)
    if os.environ.get("RANK", "0") != "0":  # under accelerate/torchrun only the main process reports
        return
    if as_json:
        _print_json(read_json(run / "provenance.json"))
    else:
        out.print(f"{run}: model in {run / 'model'}", highlight=False)


# ------------------------------------------------------------------------------------------- sample
@app.command()
def sample(
    run: Annotated[str, typer.Option("--run", help="Run folder, or a shipped run: demo:discrete, demo:continuous, demo:embedding (DDPMs), demo:cevae (the ceVAE baseline), demo:discrete-student, demo:continuous-student (distilled few-step students, where installed).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Samples folder to write (samples.npy, samples.csv, fits/, grid.png).")],
    classes: Annotated[str | None, typer.Option("--classes", help="Comma-separated classes of the model's scheme, e.g. A,M,X or low,high. Default: every trained class (unless --flux is given).")] = None,
    flux: Annotated[list[str] | None, typer.Option("--flux", help="XRS-B flux in W/m² (3e-5) or a GOES class (M3); repeat or comma-separate.")] = None,
    per_class: Annotated[int, typer.Option("--per-class", help="Images per requested class or flux.")] = 8,
    sampler: Annotated[str | None, typer.Option("--sampler", help="ddpm (the paper's, 1000 steps), ddim (50; at --steps 20 the fast choice, see benchmarks/README.md), dpm++ (DPM-Solver++ 2M, 20), unipc (20) or lcm (consistency-distilled students only, 4). Default: the run's config.")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Sampling steps (default: the sampler's, above).")] = None,
    guidance: Annotated[float | None, typer.Option("--guidance", help="Classifier-free guidance w in e_c + w (e_c - e_u); 0 = purely conditional. The authors' code (fpramunno/Modelling_Solar_Image_with_DDPM) uses cfg_scale = w + 1. Default: the run's config (2).")] = None,
    guidance_t_max: Annotated[int | None, typer.Option("--guidance-t-max", help="Guidance only at timesteps t <= T (0-999), the conditional output alone above (Kynkäänniemi et al. 2024); 999 = every step. Default: the run's config (500 for demo:discrete, demo:continuous and their students, every step for the others).")] = None,
    timesteps: Annotated[str | None, typer.Option("--timesteps", help="The timesteps the sampler visits, comma-separated and decreasing (ddpm, dpm++ and lcm; for a consistency student points of its grid, e.g. 999,699,399,99). Default: the run's config when its own sampler runs at its own steps (999,739,439,139 for the shipped students), else the sampler's spacing.")] = None,
    eta: Annotated[float | None, typer.Option("--eta", help="DDIM's eta (ddim only): the share of each step's noise drawn afresh, 0 deterministic, 1 DDPM-like. Default: the run's config when its own sampler runs at its own steps (0.3 for demo:discrete-student since session 43), else 0.")] = None,
    decoder_noise: Annotated[bool, typer.Option("--decoder-noise/--no-decoder-noise", help="Latent runs: add to each decoded image a draw of its autoencoder's residual model (the fine structure and photon noise its reconstructions leave out, fitted on its training frames; flaresynth.models.decoder_noise), when the autoencoder has one. --no-decoder-noise: the decoder's smooth images.")] = True,
    seed: Annotated[int, typer.Option("--seed", help="Image i gets seed S + i; the same seed gives the same images.")] = 0,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Images per forward pass (default: sized to free memory).")] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu or cuda (default: a GPU when visible).")] = None,
    fits: Annotated[bool, typer.Option("--fits/--no-fits", help="Write one FITS file per image in DN/s with an AIA-like header.")] = True,
    grid: Annotated[bool, typer.Option("--grid/--no-grid", help="Write grid.png (rows = classes, AIA 171 colours).")] = True,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    embedding_source: Annotated[str | None, typer.Option("--embedding-source", help="discrete+embedding runs: class-mean (the class's mean training embedding), class-gaussian (a per-image draw from the Gaussian of the class's training embeddings) or image (the embedding of a real training image of the class, from --embedding-data). Default: the run's config (sample.embedding_source: class-gaussian for demo:embedding; class-mean for runs made before the option).")] = None,
    embedding_data: Annotated[Path | None, typer.Option("--embedding-data", help="Dataset folder whose train split gives the real images for --embedding-source image.")] = None,
    deterministic: Annotated[bool, typer.Option("--deterministic", help="GPU: deterministic cuDNN/cuBLAS kernels and no TF32, so the same seed gives the same images bit for bit on the same hardware (slower). A CPU repeats without it.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the samples manifest as JSON.")] = False,
) -> None:
    """Generate synthetic AIA images of chosen GOES classes or X-ray fluxes from a trained run.

    A ceVAE run (config kind: cevae) decodes latents drawn from its per-class Gaussians instead and writes the
    same samples folder; --sampler, --steps and --guidance do not apply to it and are ignored.
    """
    from flaresynth.io import read_json
    from flaresynth.sampling import RUN_CONFIG, parse_classes, parse_fluxes
    from flaresynth.sampling import sample as run_sampling

    path = run_sampling(run, out_dir, classes=parse_classes([classes] if classes else []), fluxes=parse_fluxes(flux),
                        per_class=per_class, sampler=sampler, steps=steps, guidance=guidance, seed=seed,
                        batch_size=batch_size, device=device, fits=fits, grid=grid, progress=progress and not as_json,
                        embedding_source=embedding_source, embedding_data=embedding_data, deterministic=deterministic,
                        guidance_t_max=RUN_CONFIG if guidance_t_max is None else guidance_t_max,
                        timesteps=RUN_CONFIG if timesteps is None else _whole_numbers("--timesteps", timesteps),
                        eta=RUN_CONFIG if eta is None else eta, decoder_noise=decoder_noise)
    if as_json:
        _print_json(read_json(path / "manifest.json"))
    else:
        out.print(f"{path}: {read_json(path / 'manifest.json')['n_images']} images written", highlight=False)


# ------------------------------------------------------------------------------------------ distill
@app.command()
def distill(
    run: Annotated[str, typer.Option("--run", help="The teacher: a DDPM run folder or a shipped one (demo:discrete, demo:continuous, demo:embedding). Not a ceVAE, not a student.")],
    out_dir: Annotated[Path, typer.Option("--out", help="The student's run folder (config.yaml, model/, log.jsonl, provenance.json, stages/).")],
    steps: Annotated[int, typer.Option("--steps", help="Sampling steps of the student (DDIM; LCM for consistency), one U-Net forward each (classifier-free guidance folded in).")] = 4,
    method: Annotated[str, typer.Option("--method", help="trajectory (regression on the guided teacher's DPM-Solver++ paths at the student's DDIM steps; the shipped students', chosen by measurement), consistency (one consistency-distillation stage, sampled with LCMScheduler) or progressive (guidance distillation, then progressive halvings).")] = "trajectory",
    teacher_steps: Annotated[int | None, typer.Option("--teacher-steps", help="DDIM steps of the teacher's grid. progressive: halved by each stage down to --steps (so --steps times a power of two; default 64). consistency: the grid the consistency function is learned on (a divisor of 1000; default 50). trajectory: the teacher's DPM-Solver++ steps (a divisor of 1000 and a multiple of --steps; default 20).")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="The teacher's dataset folder (default: the one its provenance.json names; checked by data hash).")] = None,
    stage_steps: Annotated[int | None, typer.Option("--stage-steps", help="Optimiser steps of the trajectory or consistency stage, or of each progressive stage (default 3000 for trajectory, as the shipped students; 1000 otherwise).")] = None,
    guidance_steps: Annotated[int | None, typer.Option("--guidance-steps", help="Optimiser steps of the guidance stage (default: --stage-steps).")] = None,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate of each stage (cosine to 0 over the stage).")] = 1e-4,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Images per step (default: the teacher's).")] = None,
    guidance_range: Annotated[str, typer.Option("--guidance-range", help="MIN,MAX of the CFG weights w the student learns (uniform); sampling asks for one inside it (the shipped students: 0,2).")] = "0,4",
    guidance_t_max: Annotated[int | None, typer.Option("--guidance-t-max", help="The teacher guides only at timesteps t <= T in the student's targets (the guidance interval; the student then samples with w at every step); 999 = every step. Default: the teacher's config (500 for demo:discrete and demo:continuous).")] = None,
    consistency_loss: Annotated[str, typer.Option("--consistency-loss", help="The consistency stage's distance between the student's x0 and its target's: snr (squared error weighted by SNR, the ε-space MSE), snr-plus-one (weighted by SNR + 1, the v-space MSE) or pseudo-huber (unweighted, per image).")] = "snr",
    snr_floor: Annotated[float, typer.Option("--snr-floor", help="With --consistency-loss snr or --method trajectory: weight the squared x0 error by max(SNR, G), a bounded weight at the highest noise, where the plain SNR weight is ~4e-5 (0: the plain SNR weight, the ε MSE).")] = 0.0,
    trajectories: Annotated[int | None, typer.Option("--trajectories", help="--method trajectory: how many of the teacher's paths to generate and train on (default 4000; kept in OUT/trajectories.pt).")] = None,
    sample_timesteps: Annotated[str | None, typer.Option("--sample-timesteps", help="--method consistency: the student's sampling timesteps (its config's sample.timesteps), --steps decreasing points of its grid, comma-separated (e.g. 999,739,439,139). Default: the sampler's own spacing.")] = None,
    sample_guidance_t_max: Annotated[int | None, typer.Option("--sample-guidance-t-max", help="The student is given w only at timesteps t <= T when it samples (its config's sample.guidance_t_max). Default: at every step.")] = None,
    sample_guidance: Annotated[float | None, typer.Option("--sample-guidance", help="The student's default CFG weight w (its config's sample.guidance; 1 for the shipped students), inside --guidance-range. Default: the teacher's.")] = None,
    sample_eta: Annotated[float, typer.Option("--sample-eta", help="A DDIM student's default eta (its config's sample.eta; 0.3 for demo:discrete-student, 0 for demo:continuous-student): the share of each step's noise drawn afresh. Default 0 (deterministic).")] = 0.0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted distillation: completed stages are kept, the interrupted one resumes from its latest checkpoint.")] = False,
    device: Annotated[str | None, typer.Option("--device", help="cpu or cuda (default: a GPU when visible).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar per stage.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the student's provenance.json when done.")] = False,
) -> None:
    """Distil a DDPM into a few-step student with the guidance weight as an input (Meng et al. 2023; Luhman & Luhman 2021)."""
    from flaresynth.distill import TEACHER_CONFIG
    from flaresynth.distill import distill as run_distillation
    from flaresynth.io import read_json

    try:
        w_range = tuple(float(v) for v in guidance_range.split(","))
    except ValueError:
        w_range = ()
    if len(w_range) != 2:
        raise FlaresynthError(f"--guidance-range {guidance_range!r}: expected MIN,MAX (e.g. 0,4)")
    path = run_distillation(run, out_dir, steps, method=method, teacher_steps=teacher_steps, data=data, stage_steps=stage_steps,
                            guidance_steps=guidance_steps, lr=lr, batch_size=batch_size, guidance_range=w_range,
                            guidance_t_max=TEACHER_CONFIG if guidance_t_max is None else guidance_t_max,
                            consistency_loss=consistency_loss, snr_floor=snr_floor,
                            sample_timesteps=None if sample_timesteps is None else _whole_numbers("--sample-timesteps", sample_timesteps),
                            sample_guidance_t_max=sample_guidance_t_max, sample_guidance=sample_guidance, sample_eta=sample_eta, trajectories=trajectories, resume=resume, device=device, progress=progress and not as_json,
                            command=["flaresynth", *sys.argv[1:]])
    if as_json:
        _print_json(read_json(path / "provenance.json"))
    else:
        out.print(f"{path}: {steps}-step student in {path / 'model'}", highlight=False)


# -------------------------------------------------------------------------------------------- refit
@app.command()
def refit(
    run: Annotated[Path, typer.Option("--run", help="A trained ceVAE or autoencoder run folder (a shipped one: refit a copy).")],
    data: Annotated[Path, typer.Option("--data", help="The dataset the run was trained on (checked by data hash).")],
    components: Annotated[int | None, typer.Option("--components", help="ceVAE runs (required there): Gaussians per class (its cevae.class_components): a class of n training images gets min(this, n // 5) of them, 1 = one Gaussian per class.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the new fit's summary.")] = False,
) -> None:
    """Refit what a run draws from after training, without retraining: a ceVAE run's per-class latent Gaussians (model/latent_classes.npz and config.yaml rewritten), or an autoencoder run's decoder noise model (model/decoder_noise.npz: what its reconstructions of the training split leave out, added to every image a latent run decodes with it). model/flaresynth.json is rewritten either way."""
    from flaresynth.runs import META_FILE, MODEL_DIR, kind_of, read_meta
    from flaresynth.train import refit_class_latents, refit_decoder_noise

    if (Path(run) / MODEL_DIR / META_FILE).is_file() and kind_of(read_meta(Path(run) / MODEL_DIR)) == "autoencoder":
        if components is not None:
            raise FlaresynthError(f"--components: {run} is an autoencoder run, which has no class latents")
        noise = refit_decoder_noise(run, data)
        if as_json:
            _print_json(noise.summary())
        else:
            out.print(f"{run}: decoder noise refitted (residual std {noise.std.min():.3g} to {noise.std.max():.3g})",
                      highlight=False)
        return
    if components is None:
        raise FlaresynthError(f"--components: required to refit a ceVAE run's class latents ({run} is not an "
                              "autoencoder run folder)")
    fit = refit_class_latents(run, data, components)
    if as_json:
        _print_json(fit.summary())
    else:
        counts = ", ".join(f"{c} {n}" for c, n in zip(fit.classes, fit.summary().get("components", [1] * len(fit.classes)), strict=True))
        out.print(f"{run}: class latents refitted (components per class: {counts})", highlight=False)


# --------------------------------------------------------------------------------------- experiment
experiment_app = typer.Typer(help="Application experiments: do generated images help a classifier or a forecaster?",
                             no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")

_EXP_OUT_HELP = "Experiment folder to write (results.json, results.md, PNG plots); replaced only if it is an earlier experiment folder."
_SEEDS_HELP = "Training seeds (seed, seed+1, ...); every number is given per seed and as mean ± std."
_EPOCHS_HELP = "Training epochs; the epoch with the best balanced accuracy on the real val split is kept."
_WORKERS_HELP = ("CPU: train the (seed, regime) runs in this many processes of one torch thread each (e.g. one per "
                 "core); 1: one after another in this process. The numbers depend on the torch thread count.")
_LAYERS_HELP = "DeiT transformer layers (DeiT-tiny has 12; 4 keeps the CPU cost down). Widths: hidden 192, 3 heads, MLP 768."
_PATCH_HELP = "DeiT patch size in pixels (must divide the image size; 8 gives 64 tokens at 64 px)."


def _experiment_config(cls, **kw):
    return cls(**{k: v for k, v in kw.items() if v is not None})


@experiment_app.command("augment")
def experiment_augment(
    data: Annotated[Path, typer.Option("--data", help="Dataset folder: train split trains, val selects the epoch, test scores.")],
    generated: Annotated[Path, typer.Option("--generated", help="Samples folder whose requested classes fill the rare classes.")],
    out_dir: Annotated[Path, typer.Option("--out", help=_EXP_OUT_HELP)],
    seeds: Annotated[int, typer.Option(min=1, help=_SEEDS_HELP)] = 3,
    seed: Annotated[int, typer.Option(help="First seed.")] = 0,
    epochs: Annotated[int, typer.Option(min=1, help=_EPOCHS_HELP)] = 20,
    target_per_class: Annotated[int | None, typer.Option("--target-per-class", min=1, help="Images per class after filling (default: the largest real class count of the train split).")] = None,
    allow_resize: Annotated[bool, typer.Option("--allow-resize", help="Upsample generated images smaller than the dataset's to its size (real images then go down to the generator's size and back up). Default: the classifier runs at the generator's size.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Training batch size.")] = 32,
    lr: Annotated[float, typer.Option(help="AdamW peak learning rate (warm-up, then cosine decay).")] = 5e-4,
    layers: Annotated[int, typer.Option(min=1, help=_LAYERS_HELP)] = 4,
    patch_size: Annotated[int, typer.Option("--patch-size", min=1, help=_PATCH_HELP)] = 8,
    selection: Annotated[str, typer.Option(help="Kept epoch: best-val (best balanced accuracy on the val split) or last.")] = "best-val",
    device: Annotated[str, typer.Option(help="torch device: cpu or cuda.")] = "cpu",
    workers: Annotated[int, typer.Option(min=1, help=_WORKERS_HELP)] = 1,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar per regime and seed.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print results.json's summary as JSON.")] = False,
) -> None:
    """Train a DeiT on real only, real + classical augmentation, real + generated images; per-class test accuracy."""
    from flaresynth.experiments.augment import RESULTS_MD, AugmentConfig, run_augment

    cfg = _experiment_config(AugmentConfig, seeds=seeds, seed=seed, epochs=epochs, target_per_class=target_per_class,
                             batch_size=batch_size, lr=lr, layers=layers, patch_size=patch_size, selection=selection,
                             device=device, allow_resize=allow_resize, workers=workers)
    result = run_augment(data, generated, out_dir, cfg, progress=progress and not as_json,
                         log=lambda line: err.print(line, highlight=False, soft_wrap=True))
    if as_json:
        _print_json(result["summary"])
        return
    sys.stdout.write((Path(out_dir) / RESULTS_MD).read_text())


@experiment_app.command("forecast")
def experiment_forecast(
    data: Annotated[Path, typer.Option("--data", help="Forecast dataset folder (`flaresynth dataset build --task forecast`: issue times labelled by whether an >=M flare starts within 24 h).")],
    out_dir: Annotated[Path, typer.Option("--out", help=_EXP_OUT_HELP)],
    generated: Annotated[Path | None, typer.Option("--generated", help="Samples folder; its M, X (or high) images are added as positives. Without it only the real-data forecaster is trained.")] = None,
    seeds: Annotated[int, typer.Option(min=1, help=_SEEDS_HELP)] = 3,
    seed: Annotated[int, typer.Option(help="First seed.")] = 0,
    epochs: Annotated[int, typer.Option(min=1, help=_EPOCHS_HELP)] = 20,
    positive_fraction: Annotated[float, typer.Option("--positive-fraction", help="Add positives until they make this fraction of the training set (0.5: as many as negatives).")] = 0.5,
    classical: Annotated[bool, typer.Option("--classical/--no-classical", help="Also train with classically augmented copies of real positives (same count), and with generated + classical half and half.")] = True,
    allow_resize: Annotated[bool, typer.Option("--allow-resize", help="Upsample generated images smaller than the dataset's to its size (real images then go down to the generator's size and back up). Default: the classifier runs at the generator's size.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Training batch size.")] = 32,
    lr: Annotated[float, typer.Option(help="AdamW peak learning rate (warm-up, then cosine decay).")] = 5e-4,
    layers: Annotated[int, typer.Option(min=1, help=_LAYERS_HELP)] = 4,
    patch_size: Annotated[int, typer.Option("--patch-size", min=1, help=_PATCH_HELP)] = 8,
    selection: Annotated[str, typer.Option(help="Kept epoch: best-val (best balanced accuracy = (TSS+1)/2 on the val split) or last.")] = "best-val",
    device: Annotated[str, typer.Option(help="torch device: cpu or cuda.")] = "cpu",
    workers: Annotated[int, typer.Option(min=1, help=_WORKERS_HELP)] = 1,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar per regime and seed.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print results.json's summary as JSON.")] = False,
) -> None:
    """Train a 24 h ≥M-flare forecaster (real, class-weighted, classical, generated, generated + classical); threshold chosen on the val split; TSS, HSS, TSS-max, ROC, BSS, reliability, grouped-bootstrap intervals."""
    from flaresynth.experiments.forecast import RESULTS_MD, ForecastConfig, run_forecast

    cfg = _experiment_config(ForecastConfig, seeds=seeds, seed=seed, epochs=epochs, positive_fraction=positive_fraction,
                             classical=classical, batch_size=batch_size, lr=lr, layers=layers, patch_size=patch_size,
                             selection=selection, device=device, allow_resize=allow_resize, workers=workers)
    result = run_forecast(data, out_dir, generated=generated, config=cfg, progress=progress and not as_json,
                          log=lambda line: err.print(line, highlight=False, soft_wrap=True))
    if as_json:
        _print_json(result["summary"])
        return
    sys.stdout.write((Path(out_dir) / RESULTS_MD).read_text())


# --------------------------------------------------------------------------------------------- demo
@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Demo folder: sim/, dataset/, samples/, eval/, experiments/, report.html, demo.json. Stages already complete there are skipped, so a rerun resumes.")],
    train_minutes: Annotated[float | None, typer.Option("--train", help="Retrain all generators from scratch on the 64 px latent route within this many minutes in total: the autoencoder first, then the ceVAE and the three DDPMs in its latents (discrete+embedding uses the new ceVAE's encoder); split evenly between these models; steps sized from a measured s/step. Default: use the generators shipped with the package.")] = None,
    per_class: Annotated[int | None, typer.Option("--per-class", min=1, help="Generated images per class and generator (default 40; --quick: 2).")] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", min=1, help="Seeds of the augmentation experiment (default 2; --quick: 1).")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Epochs of the augmentation experiment's DeiT (default 4; --quick: 1).")] = None,
    repeats: Annotated[int | None, typer.Option("--repeats", min=1, help="Resamplings of the real test split behind each metric's mean ± std (default 3).")] = None,
    days: Annotated[int | None, typer.Option("--days", min=1, help="Simulated days from 2011-01-01 (default 730, the data the 64 px shipped generators were trained on; --quick: 3).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Tiny sizes that run in seconds (tests): 3 days at 60-min cadence, 2 images per class, 1 resampling, domain features, 1 DeiT epoch; with --train the 'autoencoder-tiny', 'tiny-latent' and 'cevae-tiny' presets, at most 12 steps.")] = False,
    run: Annotated[list[str] | None, typer.Option("--run", help="Use this run for a generator instead of the shipped one (or its shipped student): NAME=PATH with NAME cevae, discrete, continuous or embedding (repeatable). A distilled student is sampled with its own steps.")] = None,
    generators: Annotated[str | None, typer.Option("--generators", help="Comma-separated subset of cevae,discrete,continuous,embedding (default: all).")] = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="torch CPU threads (default: torch's choice, one per core).")] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu or cuda (default: a GPU when visible).")] = None,
    train_judges: Annotated[bool, typer.Option("--train-judges", help="Train the three judge CNNs here (~4 min on 2 cores) even when the package ships them for this dataset. Default: the shipped ones, so the judge-based figures are the same on every machine.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show the progress display.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON instead of tables.")] = False,
) -> None:
    """The whole chain on the simulated Sun: simulate, dataset, generators, samples, evaluation, augmentation experiment, report."""
    from flaresynth.demo import DemoConfig, parse_run_options, print_summary, run_demo

    overrides = {"per_class": per_class, "augment_seeds": seeds, "augment_epochs": epochs, "repeats": repeats,
                 "days": days, "train_minutes": train_minutes, "runs": parse_run_options(run), "threads": threads,
                 "device": device, "train_judges": train_judges or None}
    if generators:
        overrides["generators"] = [g.strip() for g in generators.split(",") if g.strip()]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    cfg = DemoConfig.quick_config(**overrides) if quick else DemoConfig(**overrides)
    summary = run_demo(out_dir, cfg, progress=progress and not as_json, console=err)
    if as_json:
        _print_json(summary)
    else:
        print_summary(summary, out)


# ------------------------------------------------------------------------------------------- report
@app.command()
def report(
    dirs: Annotated[list[Path], typer.Argument(help="A demo folder, or any mix of run / samples / eval / experiment / dataset / simulation folders (each found by its manifest or results file; sub-folders are searched).")],
    out_file: Annotated[Path, typer.Option("--out", help="HTML file to write: self-contained (figures embedded, no external references), renders offline.")] = Path("report.html"),
    title: Annotated[str | None, typer.Option(help="Page title.")] = None,
) -> None:
    """Write one self-contained HTML report: data, models, samples beside real images, metrics table, experiments, caveats."""
    from flaresynth.report import build_report

    path = build_report(dirs, out_file, title=title)
    out.print(f"{path}: {path.stat().st_size / 1e6:.1f} MB", highlight=False)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script and of ``python -m flaresynth``."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    keep_freed_memory()  # the command owns its process: keep freed tensors' memory (see flaresynth.allocator)
    try:
        # standalone mode: click prints usage errors itself and always ends in SystemExit
        app(args=args, prog_name="flaresynth")
    except FlaresynthError as exc:
        if debug:
            raise
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
