"""Sampling and the demo with glibc's default allocator settings against flaresynth's (``flaresynth.allocator``).

The ``flaresynth`` command raises glibc's trim and mmap thresholds at start-up so that the tensors inference
frees stay in the process instead of being returned to the OS and faulted back in at the next step. This
script runs the same commands as whole processes with and without it (``FLARESYNTH_KEEP_FREED_MEMORY=0`` gives
glibc's defaults) and reads each finished process's own accounting (``os.wait4``: user and system CPU seconds,
peak resident memory, minor page faults) beside its wall time:

* ``sample``: ``flaresynth sample --run RUN --sampler ddim --steps 20`` of ``--images`` images (batch
  ``--batch-size``, guidance the run's, no FITS, no grid); ``images_per_s`` is images / whole-process wall time
  (start-up and model loading included).
* ``demo``: ``flaresynth demo --quick --per-class P`` with the shipped generators into a fresh folder (every
  stage runs: simulation, dataset, sampling, evaluation, augmentation, report); the stage times come from its
  ``demo.json``.

Runs are paired, before then after, back to back (``--pairs`` times), so both see the same machine load; the
figures to quote are the medians of the per-pair ratios (after / before). ``--threads`` sets torch's threads in
the children (default 1: on a shared machine more threads mostly spin). Prints one JSON object on stdout,
progress on stderr.

Usage: ``python benchmarks/allocator.py [--images 200] [--demo-per-class 20] [--pairs 2] [--out DIR]``
(~15 min on 2 cores with the defaults); ``--quick`` for a seconds-long smoke run (numbers meaningless).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import LoadMonitor, emit, log, machine_info  # noqa: E402

OPT_OUT_ENV = "FLARESYNTH_KEEP_FREED_MEMORY"  # flaresynth.allocator's switch; "0" = glibc's defaults
SETTINGS = {"before": "0", "after": "1"}


def run_measured(cmd: list[str], env: dict) -> dict:
    """Run ``cmd`` to completion; its wall time and the kernel's accounting of the finished process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr_tail = ""
    # read stderr while it runs (a full pipe would block it), then reap it ourselves to get its rusage
    for line in proc.stderr:
        stderr_tail = (stderr_tail + line)[-2000:]
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} exited with {proc.returncode}: {stderr_tail.strip()[-500:]}")
    return {"wall_s": wall, "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
            "sys_share": usage.ru_stime / max(usage.ru_utime + usage.ru_stime, 1e-9),
            "peak_rss_mb": usage.ru_maxrss / 1024.0, "minor_faults": usage.ru_minflt}


def commands(args, scratch: Path, tag: str) -> dict[str, list[str]]:
    flaresynth = [sys.executable, "-m", "flaresynth"]
    per_class = max(1, args.images // 5)
    return {
        "sample": [*flaresynth, "sample", "--run", args.run, "--sampler", "ddim", "--steps", str(args.steps),
                   "--per-class", str(per_class), "--batch-size", str(args.batch_size), "--no-fits", "--no-grid",
                   "--no-progress", "--out", str(scratch / f"samples-{tag}")],
        "demo": [*flaresynth, "demo", "--quick", "--per-class", str(args.demo_per_class), "--threads", str(args.threads),
                 "--no-progress", "--json", "--out", str(scratch / f"demo-{tag}")],
    }


def median_ratio(pairs: list[dict], key: str) -> float | None:
    ratios = [p["after"][key] / p["before"][key] for p in pairs if p["before"][key]]
    return statistics.median(ratios) if ratios else None


def main() -> None:
    doc = __doc__
    p = argparse.ArgumentParser(description=doc.splitlines()[0], epilog="\n".join(doc.splitlines()[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="demo:discrete", help="run folder or shipped name to sample (default demo:discrete)")
    p.add_argument("--images", type=int, default=200, help="images sampled by the 'sample' command (default 200)")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps (default 20, the demo's)")
    p.add_argument("--batch-size", type=int, default=64, help="images per sampling batch (default 64)")
    p.add_argument("--demo-per-class", type=int, default=20, help="the demo's generated images per class (default 20)")
    p.add_argument("--pairs", type=int, default=2, help="before/after pairs per command (default 2)")
    p.add_argument("--commands", default="sample,demo", help="comma-separated subset of sample,demo")
    p.add_argument("--threads", type=int, default=1, help="torch threads in the children (default 1)")
    p.add_argument("--out", type=Path, default=None, help="folder for allocator.json (default: a temporary folder)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, seconds: a smoke run, numbers meaningless")
    args = p.parse_args()
    if args.quick:
        args.images, args.steps, args.demo_per_class, args.pairs = 5, 2, 1, 1
    wanted = [c.strip() for c in args.commands.split(",") if c.strip()]
    if not wanted or set(wanted) - {"sample", "demo"}:
        print(f"error: --commands {args.commands!r}: expected a comma-separated subset of sample,demo", file=sys.stderr)
        sys.exit(2)

    out = Path(args.out or tempfile.mkdtemp(prefix="flaresynth-allocator-"))
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="scratch-", dir=out))
    load = LoadMonitor()
    results: dict = {}
    try:
        for name in wanted:
            pairs = []
            for i in range(args.pairs):
                pair = {}
                for setting, value in SETTINGS.items():
                    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1", MPLBACKEND="Agg",
                               **{OPT_OUT_ENV: value})
                    tag = f"{setting}-{i}"
                    cmd = commands(args, scratch, tag)[name]
                    log(f"{name} pair {i + 1}/{args.pairs}: {setting}")
                    pair[setting] = run_measured(cmd, env)
                    if name == "sample":
                        pair[setting]["images_per_s"] = args.images // 5 * 5 / pair[setting]["wall_s"]
                    else:
                        record = json.loads((scratch / f"demo-{tag}" / "demo.json").read_text())
                        pair[setting]["stage_seconds"] = {k: v.get("seconds") for k, v in record["stages"].items()}
                    shutil.rmtree(scratch / (f"samples-{tag}" if name == "sample" else f"demo-{tag}"), ignore_errors=True)
                    log(f"  {json.dumps(pair[setting])}")  # each run's figures as soon as it ends
                pairs.append(pair)
            keys = ["wall_s", "user_s", "sys_s", "peak_rss_mb", "minor_faults"] + (["images_per_s"] if name == "sample" else [])
            results[name] = {
                "command": " ".join(commands(args, Path("SCRATCH"), "TAG")[name][1:]),
                "pairs": pairs,
                "median": {s: {k: statistics.median(p[s][k] for p in pairs) for k in keys} for s in SETTINGS},
                "median_ratio_after_over_before": {k: median_ratio(pairs, k) for k in keys},
            }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    emit({"benchmark": "allocator", "machine": machine_info(args.threads), "load": load.report(),
          "settings": {"before": f"{OPT_OUT_ENV}=0 (glibc defaults)",
                       "after": "flaresynth.allocator.keep_freed_memory() (the CLI's default)"},
          "threads": args.threads, "images": args.images // 5 * 5, "quick": args.quick, "results": results},
         out, "allocator")


if __name__ == "__main__":
    main()
