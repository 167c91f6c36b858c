"""Dataset-build throughput: images/s turning 512×512 SDOMLv2 frames into 64×64 model images.

The figures, all on the same frames of an SDOMLv2-layout store written by the simulated Sun:

* ``raw_read``: reading and decompressing the frames (zarr, Blosc zstd), nothing else: the ceiling;
* ``build_1_thread``: flaresynth's preprocessing (read, block-mean resize, log transform, write) on one dask thread;
* ``build_dask_2_threads``: the same on dask's local threads, two of them;
* ``build_dask_distributed_1_worker`` and ``build_dask_distributed_2_workers``: on a local dask.distributed
  cluster of one and two single-threaded worker processes, where each worker reads its own frames and writes its
  own rows of the output (``--scheduler``). The workers are started, and flaresynth imported on them, before the
  timing, as on a running cluster; each timed build includes connecting to the scheduler and probing the workers.
* ``..._preload``: the same with workers started with ``preload=["flaresynth.allocator"]`` (``dask worker
  --preload flaresynth.allocator``), which undoes the nanny's ``MALLOC_TRIM_THRESHOLD_`` (every frame-sized array
  a fresh mmap otherwise; see :mod:`flaresynth.allocator`).

``outputs_identical``: every build wrote the same array. Each build runs ``--repeats`` times, the four
interleaved so a change in the machine's load hits them alike; ``*_images_per_s`` is the median, ``builds``
holds every run and the CPU other processes used during each build (``other_cores_busy``; the workers' own CPU
is not counted as load). ``distributed_2_workers_vs_1_thread`` (and ``_preload_``): the ratio of the medians.
``*_cpu_ms_per_image``: CPU time of the build (this process and the workers) per image, median: what a build
costs whatever the load, so a distributed build whose figure equals one thread's has no overhead to lose when
the cores are free, which wall-time speed-ups on a loaded machine cannot show.

The simulated Sun (``--days`` at ``--cadence-min``; default 1 day at 6 min = 240 frames; ``--days 10``: 2400
frames, ~3 min to simulate) is made once per size in ``WORKDIR/sim-<days>d-<cadence>m`` and reused by later
runs; the build outputs are deleted after timing.

Usage: ``python benchmarks/dataset_build.py [--days 1] [--cadence-min 6] [--repeats 3] [--workdir DIR] [--out DIR]
[--quick]``; prints JSON (``--quick``: 1 day at 60 min, 24 frames, one repeat).
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
from common import DEFAULT_WORKDIR, LoadMonitor, emit, log, machine_info, main_wrapper

#: Timed builds: name -> (local dask threads, distributed workers, workers preload flaresynth.allocator).
BUILDS = {"build_1_thread": (1, None, False), "build_dask_2_threads": (2, None, False),
          "build_dask_distributed_1_worker": (None, 1, False), "build_dask_distributed_2_workers": (None, 2, False),
          "build_dask_distributed_1_worker_preload": (None, 1, True),
          "build_dask_distributed_2_workers_preload": (None, 2, True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[1:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=1, help="simulated days (default 1; 10 for 2400 frames)")
    parser.add_argument("--cadence-min", type=int, default=6, help="minutes between frames (default 6)")
    parser.add_argument("--size", type=int, default=64, help="model image size, px (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each build, interleaved (default 3)")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR / "dataset_build",
                        help=f"keeps the simulated Sun between runs (default {DEFAULT_WORKDIR / 'dataset_build'})")
    parser.add_argument("--out", type=Path, default=None, help="folder for the JSON (default WORKDIR/results)")
    parser.add_argument("--quick", action="store_true", help="1 day at 60 min (24 frames), one repeat: the smoke test")
    args = parser.parse_args()
    if args.quick:
        args.days, args.cadence_min, args.repeats = 1, 60, 1

    from flaresynth.errors import FlaresynthError

    if args.days < 1 or args.cadence_min < 1 or args.size < 8 or args.repeats < 1:
        raise FlaresynthError("--days, --cadence-min, --repeats: whole numbers >= 1; --size: >= 8")
    out = Path(args.out or args.workdir / "results")
    out.mkdir(parents=True, exist_ok=True)
    monitor = LoadMonitor()

    from distributed import Client, LocalCluster

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
               "days": args.days, "cadence_min": args.cadence_min, "repeats": args.repeats}

    t0 = time.perf_counter()
    for start in range(0, len(indices), 32):
        store.read_many(indices[start : start + 32])
    results["raw_read_frames_per_s"] = len(indices) / (time.perf_counter() - t0)
    scratch = work / "outputs"
    scratch.mkdir(parents=True, exist_ok=True)

    clusters, clients = {}, {}
    try:
        for key in sorted({(w, pre) for _, w, pre in BUILDS.values() if w}):
            clusters[key] = LocalCluster(n_workers=key[0], threads_per_worker=1, processes=True, dashboard_address=":0",
                                         preload=["flaresynth.allocator"] if key[1] else [])
            clients[key] = Client(clusters[key])
            clients[key].run(importlib.import_module, "flaresynth.dataset")  # as on a cluster already running

        def timed(name: str, repeat: int) -> np.ndarray:
            threads, workers, preload = BUILDS[name]
            cfg = BuildConfig(size=args.size, workers=threads)
            key = (workers, preload)
            scheduler = clusters[key].scheduler_address if workers else None
            # the workers' CPU is this benchmark's own work, not load
            helper = (lambda: sum(clients[key].run(time.process_time).values())) if workers else None
            path = scratch / f"{name}-{repeat}.npy"
            load = LoadMonitor(helper_cpu=helper)
            t = time.perf_counter()
            preprocess_frames(store, indices, path, cfg, transform, scheduler, progress=False)
            seconds = time.perf_counter() - t
            report = load.report()
            busy = report["other_cores_busy"]
            runs.setdefault(name, []).append({"images_per_s": len(indices) / seconds, "seconds": seconds,
                                              "cpu_ms_per_image": 1000 * report["own_cpu_s"] / len(indices),
                                              "other_cores_busy": busy})
            log(f"{name} (run {repeat + 1}): {len(indices) / seconds:.1f} images/s, other cores busy "
                f"{busy if busy is None else round(busy, 2)}")
            image = np.load(path)
            path.unlink()
            return image

        runs: dict[str, list] = {}
        outputs = {}
        for repeat in range(args.repeats):
            for name in BUILDS:
                outputs[name] = timed(name, repeat)
        reference = outputs["build_1_thread"]
        results["outputs_identical"] = bool(all(np.array_equal(reference, o) for o in outputs.values()))
    finally:
        for n in clients:
            clients[n].close()
            clusters[n].close()
        shutil.rmtree(scratch, ignore_errors=True)
    for name, entries in runs.items():
        results[f"{name}_images_per_s"] = statistics.median(e["images_per_s"] for e in entries)
        results[f"{name}_cpu_ms_per_image"] = statistics.median(e["cpu_ms_per_image"] for e in entries)
    for variant in ("", "_preload"):
        results[f"distributed_2_workers{variant}_vs_1_thread"] = (
            results[f"build_dask_distributed_2_workers{variant}_images_per_s"] / results["build_1_thread_images_per_s"])
    results["threads_2_vs_1_thread"] = (results["build_dask_2_threads_images_per_s"]
                                        / results["build_1_thread_images_per_s"])
    results["builds"] = runs
    load = monitor.report()
    emit({"benchmark": "dataset_build", "machine": machine_info(), "load": load, **results,
          "seconds_total": load["wall_s"]}, out, "dataset_build")


if __name__ == "__main__":
    main_wrapper(main)
