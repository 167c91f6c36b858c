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

out = Console()
err = Console(stderr=True)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    """Synthetic SDO/AIA full-disk images with solar flares of a chosen GOES class."""


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


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
    days: Annotated[int, typer.Option(min=1, help="Number of days to simulate.")] = 30,
    cadence_min: Annotated[int, typer.Option("--cadence-min", min=1, help="AIA frame cadence in minutes.")] = 12,
    start: Annotated[str, typer.Option(help="First day, UTC (YYYY-MM-DD).")] = "2024-05-01",
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives identical files.")] = 0,
) -> None:
    """Write a simulated Sun in the real archive formats: SDOMLv2 zarr, GOES XRS netCDF, HEK JSON."""
    from flaresynth.sources.simulate import simulate as run_simulation

    summary = run_simulation(out_dir, days=days, cadence_min=cadence_min, start=start, seed=seed)
    out.print(summary)


# ------------------------------------------------------------------------------------------ dataset
@dataset_app.command("build")
def dataset_build(
    images: Annotated[str, typer.Option("--sdoml", "--images", help="SDOMLv2 zarr path or s3:// / gs:// URL, or a folder of AIA FITS files.")],
    goes_files: Annotated[list[str], typer.Option("--goes", help="GOES XRS file or folder (repeat the option for several).")],
    hek: Annotated[str, typer.Option(help="Saved HEK JSON response (file or folder of pages).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Dataset folder to write (appears only when complete).")],
    size: Annotated[int, typer.Option(help="Image size in pixels (64, 128, 256...).")] = 64,
    channel: Annotated[str, typer.Option(help="AIA channel array, e.g. 171A.")] = "171A",
    scheme: Annotated[str, typer.Option(help="Label scheme: goes5 (A,B,C,M,X) or activity3 (low, medium, high).")] = "goes5",
    label: Annotated[str, typer.Option(help="Label rule: instant (XRS-B at the image time), peak24 (peak in the next 24 h) or event (HEK class).")] = "instant",
    scale: Annotated[str, typer.Option(help="GOES flux convention: true or swpc.")] = "true",
    window_min: Annotated[float, typer.Option("--window-min", help="Flare frames: within this many minutes of a HEK peak.")] = 30.0,
    quiet_per_day: Annotated[int, typer.Option("--quiet-per-day", help="Quiet (non-flaring) frames per day.")] = 8,
    start: Annotated[str | None, typer.Option(help="First time to use, UTC.")] = None,
    end: Annotated[str | None, typer.Option(help="Time to stop before, UTC.")] = None,
    test_fraction: Annotated[float, typer.Option("--test-fraction", help="Fraction of each class for the test split (by whole days).")] = 0.2,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Fraction for the validation split.")] = 0.1,
    split_seed: Annotated[int, typer.Option("--split-seed", help="Seed that breaks ties in the split assignment.")] = 0,
    mask_limb: Annotated[bool, typer.Option("--mask-limb", help="Set pixels outside the solar disk to -1.")] = False,
    scheduler: Annotated[str | None, typer.Option(help="dask.distributed scheduler address; default: local threads.")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Local dask threads (default: one per core).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset folder built from other inputs.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Select flaring and quiet AIA frames, label them with GOES, preprocess them, and write a dataset folder."""
    from flaresynth.dataset import BuildConfig, build_dataset

    cfg = BuildConfig(
        size=size, channel=channel, scheme=scheme, label_rule=label, scale=scale, window_min=window_min,
        quiet_per_day=quiet_per_day, start=start, end=end, test_fraction=test_fraction,
        val_fraction=val_fraction, split_seed=split_seed, mask_limb=mask_limb, workers=workers,
    )
    manifest = build_dataset(images, goes_files, hek, out_dir, cfg, scheduler=scheduler, overwrite=overwrite,
                             progress=not as_json)
    if as_json:
        _print_json(manifest)
        return
    if manifest.get("up_to_date"):
        out.print(f"{out_dir}: up to date (same inputs and parameters); nothing to do")
    _print_counts(out_dir, manifest)


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
def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script and of ``python -m flaresynth``."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
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
