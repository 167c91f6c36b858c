"""Dataset-build throughput: images/s turning 512×512 SDOMLv2 frames into 64×64 model images.

Three figures, on the same SDOMLv2-layout store written by the simulated Sun:

* ``raw_read``: reading and decompressing the frames (zarr, Blosc zstd), nothing else: the ceiling;
* ``build_1_thread``: flaresynth's preprocessing (read, block-mean resize, log transform, write) on one thread;
* ``build_dask_2_threads`` and ``build_dask_distributed_2_workers``: the same on dask with two workers.

``outputs_identical``: the three builds wrote the same array. The simulated Sun (``--days`` at
``--cadence-min``; default 1 day at 6 min = 240 frames) is made once per size in
``WORKDIR/sim-<days>d-<cadence>m`` and reused by later runs; the build outputs are deleted after timing.

Usage: ``python benchmarks/dataset_build.py [--days 1] [--cadence-min 6] [--workdir DIR] [--out DIR] [--quick]``;
prints JSON (``--quick``: 1 day at 60 min, 24 frames).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
from common import DEFAULT_WORKDIR, LoadMonitor, emit, log, machine_info, main_wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[1:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=1, help="simulated days (default 1)")
    parser.add_argument("--cadence-min", type=int, default=6, help="minutes between frames (default 6)")
    parser.add_argument("--size", type=int, default=64, help="model image size, px (default 64)")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR / "dataset_build",
                        help=f"keeps the simulated Sun between runs (default {DEFAULT_WORKDIR / 'dataset_build'})")
    parser.add_argument("--out", type=Path, default=None, help="folder for the JSON (default WORKDIR/results)")
    parser.add_argument("--quick", action="store_true", help="1 day at 60 min (24 frames): the smoke test")
    args = parser.parse_args()
    if args.quick:
        args.days, args.cadence_min = 1, 60

    from flaresynth.errors import FlaresynthError

    if args.days < 1 or args.cadence_min < 1 or args.size < 8:
        raise FlaresynthError("--days, --cadence-min: whole numbers >= 1; --size: >= 8")
    out = Path(args.out or args.workdir / "results")
    out.mkdir(parents=True, exist_ok=True)
    monitor = LoadMonitor()

    from distributed import LocalCluster

    from flaresynth.dataset import BuildConfig, preprocess_frames
    from flaresynth.sources.sdoml import SDOMLStore
    from flaresynth.sources.simulate import simulate
    from flaresynth.transforms import IntensityTransform

    work = Path(args.workdir)
    sim = work / f"sim-{args.days}d-{args.cadence_min}m"
    if not (sim / "simulation.json").is_file():
        log(f"simulating {args.days} day(s) at {args.cadence_min} min into {sim}")
        simulate(sim, days=args.days, cadence_min=args.cadence_min, start="2024-05-01", seed=0, overwrite=True)
    store = SDOMLStore(sim / "sdomlv2.zarr", channel="171A")
    indices = np.arange(len(store))
    transform = IntensityTransform.for_channel("171A")
    results = {"n_frames": int(len(indices)), "frame_shape": list(store.frame_shape), "out_size": args.size,
               "days": args.days, "cadence_min": args.cadence_min}

    t0 = time.perf_counter()
    for start in range(0, len(indices), 32):
        store.read_many(indices[start : start + 32])
    results["raw_read_frames_per_s"] = len(indices) / (time.perf_counter() - t0)
    scratch = work / "outputs"
    scratch.mkdir(parents=True, exist_ok=True)

    def timed(name, workers, scheduler=None):
        cfg = BuildConfig(size=args.size, workers=workers)
        path = scratch / f"{name}.npy"
        t = time.perf_counter()
        preprocess_frames(store, indices, path, cfg, transform, scheduler, progress=False)
        results[f"{name}_images_per_s"] = len(indices) / (time.perf_counter() - t)
        log(f"{name}: {results[f'{name}_images_per_s']:.1f} images/s")
        return np.load(path)

    try:
        single = timed("build_1_thread", 1)
        threads = timed("build_dask_2_threads", 2)
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            dist = timed("build_dask_distributed_2_workers", None, cluster.scheduler_address)
        results["outputs_identical"] = bool(np.array_equal(single, threads) and np.array_equal(single, dist))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    load = monitor.report()
    emit({"benchmark": "dataset_build", "machine": machine_info(), "load": load, **results,
          "seconds_total": load["wall_s"]}, out, "dataset_build")


if __name__ == "__main__":
    main_wrapper(main)
