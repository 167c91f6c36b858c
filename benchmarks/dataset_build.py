"""Dataset-build throughput: images/s turning 512×512 SDOMLv2 frames into 64×64 model images.

Three figures, on the same SDOMLv2-layout store written by the simulated Sun:

* ``raw_read``: reading and decompressing the frames (zarr, Blosc zstd), nothing else: the ceiling;
* ``build_1_thread``: flaresynth's preprocessing (read, block-mean resize, log transform, write) on one thread;
* ``build_dask_2_threads`` and ``build_dask_distributed_2_workers``: the same on dask with two workers.

Usage: ``python benchmarks/dataset_build.py [--days 1] [--cadence-min 6] [--workdir DIR]``; prints JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--cadence-min", type=int, default=6)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    from distributed import LocalCluster

    from flaresynth.dataset import BuildConfig, preprocess_frames
    from flaresynth.sources.sdoml import SDOMLStore
    from flaresynth.sources.simulate import simulate
    from flaresynth.transforms import IntensityTransform

    work = Path(args.workdir or tempfile.mkdtemp(prefix="fs-bench-"))
    sim = work / "sim"
    if not sim.exists():
        simulate(sim, days=args.days, cadence_min=args.cadence_min, start="2024-05-01", seed=0)
    store = SDOMLStore(sim / "sdomlv2.zarr", channel="171A")
    indices = np.arange(len(store))
    transform = IntensityTransform.for_channel("171A")
    results = {"n_frames": int(len(indices)), "frame_shape": list(store.frame_shape), "out_size": args.size}

    t0 = time.perf_counter()
    for start in range(0, len(indices), 32):
        store.read_many(indices[start : start + 32])
    results["raw_read_frames_per_s"] = len(indices) / (time.perf_counter() - t0)

    def timed(name, workers, scheduler=None):
        cfg = BuildConfig(size=args.size, workers=workers)
        out = work / f"{name}.npy"
        t = time.perf_counter()
        preprocess_frames(store, indices, out, cfg, transform, scheduler, progress=False)
        results[f"{name}_images_per_s"] = len(indices) / (time.perf_counter() - t)
        return np.load(out, mmap_mode="r")

    single = timed("build_1_thread", 1)
    threads = timed("build_dask_2_threads", 2)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        dist = timed("build_dask_distributed_2_workers", None, cluster.scheduler_address)
    results["outputs_identical"] = bool(np.array_equal(single, threads) and np.array_equal(single, dist))
    results = {k: round(v, 2) if isinstance(v, float) else v for k, v in results.items()}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
