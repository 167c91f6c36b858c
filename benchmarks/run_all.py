"""Run every benchmark (``dataset_build.py`` included) and write one summary JSON (+ Markdown tables).

Each script runs in its own interpreter, one after the other (they would only slow each other down on a
2-core machine), with the shared options passed on (``--data``, ``--run``, ``--workdir``, ``--out``,
``--threads``, ``--referee``, ``--judge``, ``--quick``; ``--log``/``--log-cores`` to ``train_convergence.py``).
``guidance_cost.py`` samples with the fast default that ``sampler_quality.py`` found in the same run (or,
when no setting cheaper than the reference qualified, its ``best_cheaper``). ``dataset_build.py`` simulates
its own Sun (kept in ``WORKDIR/dataset_build``) and takes ``--quick`` only.

Writes ``OUT/summary.json`` (every script's full JSON, return code, wall time, and the cores other processes
kept busy while it ran: ``under_load`` when more than a quarter of a core), ``OUT/summary.md`` (the headline
figures as the tables ``benchmarks/README.md`` carries: sampler × steps × quality × time, the fast default
and its speed-ups, training throughput against the reference loop, guidance, convergence, dataset build),
and prints the JSON. Exit code 1 when a script failed.

Not run here, by hand only: ``distill_quality.py`` (needs a student of ``flaresynth distill``),
``flux_fidelity.py`` (needs a continuous generator; ``--run`` here is the discrete one), ``generator_quality.py``
(scores every shipped generator), ``mirror_invariance.py`` (a check of a dataset before ``train.flips``) and
``decoder_noise.py`` (an autoencoder's lost fine structure and its decoder noise model).

Usage: ``python benchmarks/run_all.py [--data DS] [--run RUN] [--scripts sampler_quality,...] [--quick]``
(a full run is ~30-40 minutes on 2 quiet cores: dataset build ~1-2, throughput ~8-10, sampler quality < 10,
guidance ~2-3, convergence < 10).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ("dataset_build", "train_throughput", "sampler_quality", "guidance_cost", "train_convergence")
USES_RUN = ("sampler_quality", "guidance_cost")
SCORED = ("sampler_quality", "guidance_cost", "train_convergence")
DEFAULT_WORKDIR = Path(os.environ.get("FLARESYNTH_BENCH_DIR", Path(tempfile.gettempdir()) / "flaresynth-bench"))


def script_args(name: str, args, results: dict) -> list[str]:
    """Command-line options of one script."""
    if name == "dataset_build":
        out = ["--workdir", str(args.workdir / "dataset_build"), "--out", str(args.out)]
        return out + (["--quick"] if args.quick else [])
    out = ["--workdir", str(args.workdir), "--out", str(args.out), "--threads", str(args.threads)]
    if args.data is not None:
        out += ["--data", str(args.data)]
    if name in USES_RUN and args.run is not None:
        out += ["--run", str(args.run)]
    if name in SCORED and args.referee != "auto":
        out += ["--referee", args.referee]
    if name in SCORED and args.judge is not None:
        out += ["--judge", str(args.judge)]
    if name == "train_convergence" and args.log is not None:
        out += ["--log", str(args.log)] + (["--log-cores", str(args.log_cores)] if args.log_cores else [])
    if args.quick:
        out.append("--quick")
    sq = results.get("sampler_quality", {}).get("result") or {}
    fast = sq.get("fast_default")
    if fast and not fast.get("cheaper_than_reference", True):
        fast = sq.get("best_cheaper")  # no cheaper setting passed: sweep w with the best cheaper one, not DDPM-1000
    if name == "guidance_cost" and fast and not args.quick:
        out += ["--sampler", fast["sampler"], "--steps", str(fast["steps"])]
    return out


def _busy_seconds() -> float | None:
    """CPU seconds all processes have used (/proc/stat: user nice system irq softirq steal)."""
    try:
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:9]]
    except OSError:
        return None
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_script(name: str, argv: list[str], timeout: float | None) -> dict:
    """Run one script; its JSON, wall time, and the cores other processes kept busy meanwhile."""
    cmd = [sys.executable, str(HERE / f"{name}.py"), *argv]
    print(f"[run_all] {' '.join(shlex.quote(c) for c in cmd)}", file=sys.stderr, flush=True)
    t0, busy0, own0 = time.perf_counter(), _busy_seconds(), _children_cpu()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"returncode": None, "seconds": time.perf_counter() - t0, "error": f"timed out after {timeout} s"}
    wall, busy1 = time.perf_counter() - t0, _busy_seconds()
    other = None if busy0 is None or busy1 is None else max(0.0, busy1 - busy0 - (_children_cpu() - own0)) / max(wall, 1e-9)
    entry = {"returncode": r.returncode, "seconds": round(wall, 2), "command": cmd,
             "other_cores_busy": None if other is None else round(other, 3),
             "under_load": bool(other is not None and other > 0.25)}
    sys.stderr.write(r.stderr)
    if r.returncode != 0:
        entry["error"] = "\n".join(r.stderr.strip().splitlines()[-5:])
        return entry
    try:
        entry["result"] = json.loads(r.stdout)
    except json.JSONDecodeError:
        entry["error"] = "stdout is not JSON: " + r.stdout[-300:]
    return entry


def headline(results: dict) -> dict:
    """The few figures the README carries, from each script's JSON."""
    h: dict = {}

    def res(name):
        return (results.get(name) or {}).get("result") or {}

    d = res("dataset_build")
    if d:
        h["dataset_build"] = {k: d.get(k) for k in ("n_frames", "raw_read_frames_per_s", "build_1_thread_images_per_s",
                                                     "build_dask_2_threads_images_per_s",
                                                     "build_dask_distributed_1_worker_images_per_s",
                                                     "build_dask_distributed_2_workers_images_per_s",
                                                     "distributed_2_workers_vs_1_thread",
                                                     "build_dask_distributed_2_workers_preload_images_per_s",
                                                     "distributed_2_workers_preload_vs_1_thread", "outputs_identical")}
    t = res("train_throughput")
    if t:
        h["train_throughput"] = {k: t.get(k) for k in ("matmul_gflops", "conv_gflops", "peak_gflops")}
        h["train_throughput"]["presets"] = {}
        for preset, e in t.get("presets", {}).items():
            h["train_throughput"]["presets"][preset] = {
                "batch": e.get("batch"),
                "parameters": e.get("parameters"),
                "flaresynth_images_per_s": e.get("flaresynth", {}).get("images_per_s"),
                "reference_images_per_s": e.get("reference", {}).get("images_per_s"),
                "flaresynth_over_reference": e.get("flaresynth_over_reference"),
                "flaresynth_s_per_step": e.get("flaresynth", {}).get("s_per_step"),
                "reference_s_per_step": e.get("reference", {}).get("s_per_step"),
                "ceiling_s_per_step": e.get("ceiling_s_per_step"),
                "achieved_over_ceiling": e.get("flaresynth", {}).get("achieved_over_ceiling"),
                "flaresynth_peak_rss_mb": e.get("flaresynth", {}).get("peak_rss_mb"),
                "reference_peak_rss_mb": e.get("reference", {}).get("peak_rss_mb"),
                "extra_ms_per_step": e.get("extra_ms_per_step"),
                "unexplained_ms": e.get("unexplained_ms"),
                "overheads_ms": e.get("reference", {}).get("overheads_ms"),
            }
        h["train_throughput"]["settings_s_per_step"] = {k: v.get("s_per_step") for k, v in t.get("settings", {}).items()}
        comp = t.get("settings", {}).get("reference_compiled", {})
        if comp.get("compile_s") is not None:
            h["train_throughput"]["compile_s"] = comp["compile_s"]
    s = res("sampler_quality")
    if s:
        fd = s.get("fast_default") or {}
        h["sampler_quality"] = {
            "model_id": s.get("model_id"), "per_class": s.get("per_class"), "guidance": s.get("guidance"),
            "reference": s.get("reference"),
            "fast_default": fd if fd.get("cheaper_than_reference") else None,
            "fast_default_with_candidates": (s.get("fast_default_with_candidates") or {})
            if (s.get("fast_default_with_candidates") or {}).get("cheaper_than_reference") else None,
            "best_cheaper": s.get("best_cheaper"),
            "fd_domain_real_floor": s.get("fd_domain_real_floor"),
            "settings": {r["name"]: {k: r.get(k) for k in ("nfe_per_image", "seconds", "fd_domain", "fd_domain_std",
                                                           "f1_judge", "f1_judge_std", "f1_referee",
                                                           "fd_rel_to_reference_std", "f1_judge_minus_reference_std",
                                                           "within_tolerance")}
                         for r in s.get("settings", [])}}
    g = res("guidance_cost")
    if g:
        h["guidance_cost"] = {"ratio_separate_over_batched": {str(r["batch"]): r["ratio_separate_over_batched"]
                                                              for r in g.get("batched_vs_separate", [])},
                              "outputs_agree": all(r["outputs_agree"] for r in g.get("batched_vs_separate", [])),
                              "sampler": f"{g.get('sampler')}-{g.get('steps')}",
                              "sweep": {str(r["guidance"]): {k: r.get(k) for k in ("fd_domain", "f1_judge", "f1_referee",
                                                                                    "seconds")}
                                        for r in g.get("sweep", [])},
                              "best_guidance_f1_judge": g.get("best_guidance_f1_judge"),
                              "best_guidance_fd_domain": g.get("best_guidance_fd_domain")}
    c = res("train_convergence")
    if c:
        h["train_convergence"] = {"ceiling_s_per_step": c.get("ceiling_s_per_step"), "recipes": {}}
        for name, r in (c.get("recipes") or {}).items():
            last = r["curve"][-1] if r.get("curve") else {}
            h["train_convergence"]["recipes"][name] = {
                "steps": r.get("steps"), "s_per_step": r.get("s_per_step"),
                "cpu_hours": last.get("cpu_hours"), "final_f1_judge": last.get("f1_judge"),
                "final_fd_domain": last.get("fd_domain")}
        # every --log run (a JSON from before --log was repeatable has only long_run)
        h["train_convergence"]["long_runs"] = [
            {"run": lr.get("run"), "label": lr.get("label") or Path(lr["run"]).name, "step": lr["curve"][-1].get("step"),
             "cpu_hours": lr["curve"][-1].get("cpu_hours"), "f1_judge": lr["curve"][-1].get("f1_judge"),
             "fd_domain": lr["curve"][-1].get("fd_domain")}
            for lr in (c.get("long_runs") or [c.get("long_run") or {}]) if lr.get("curve")]
    return h


def _f(x, fmt="{:.3g}"):
    return "–" if x is None else fmt.format(x)


def markdown(summary: dict) -> str:
    """The headline figures as Markdown tables, one per script."""
    h = summary["headline"]
    load = {n: e.get("under_load") for n, e in summary["scripts"].items()}
    f = _f
    m = summary["machine"]
    lines = [f"Measured {summary['date']} on {m['cores']} cores ({m['cpu']})"
             + (" — QUICK MODE: tiny sizes, the numbers mean nothing" if summary.get("quick") else "") + "."]
    loaded = [n for n, v in load.items() if v]
    if loaded:
        lines.append(f"Taken while other processes kept the CPU busy (not a measurement of the code): {', '.join(loaded)}.")
    if "sampler_quality" in h:
        s = h["sampler_quality"]
        lines += ["", f"### Sampler × steps × quality × time ({s['model_id']}, {s['per_class']} per class, w = {f(s['guidance'], '{:g}')})",
                  "", "| setting | NFE/image | wall s | FD_domain ± std | judge F1 ± std | referee F1 | within tolerance |",
                  "|---|---|---|---|---|---|---|"]
        for name, r in s["settings"].items():
            lines.append(f"| {name} | {f(r['nfe_per_image'], '{:.0f}')} | {f(r['seconds'], '{:.1f}')} | "
                         f"{f(r['fd_domain'])} ± {f(r['fd_domain_std'], '{:.2g}')} | {f(r['f1_judge'], '{:.3f}')} ± "
                         f"{f(r['f1_judge_std'], '{:.2f}')} | {f(r['f1_referee'], '{:.3f}')} | {r['within_tolerance']} |")
        lines.append(f"| real vs real, same size | | | {f(s['fd_domain_real_floor'])} | | | |")
        fd, fc, cheap = s["fast_default"], s["fast_default_with_candidates"], s["best_cheaper"]
        if fd:
            lines += ["", f"Fast default (cheapest within 5 % FD_domain and 0.02 judge F1 of {s['reference']}): "
                      f"**{fd['name']}**, {f(fd['nfe_speedup_vs_reference'], '{:.0f}')}× fewer network evaluations and "
                      f"{f(fd['speedup_vs_reference'], '{:.0f}')}× less wall time"
                      + (" (within the noise of the measurement)" if fd.get("within_noise") else "") + "."]
        else:
            lines += ["", f"Fast default: no library setting cheaper than {s['reference']} is within the tolerances; the best "
                      f"cheaper one is {cheap['name'] if cheap else '–'}"
                      + (f" ({f(cheap['nfe_speedup_vs_reference'], '{:.0f}')}× fewer evaluations)" if cheap else "") + "."]
        if fc and (not fd or fc["name"] != fd["name"]):
            lines.append(f"With the candidates that need a library change: **{fc['name']}** "
                         f"({f(fc['nfe_speedup_vs_reference'], '{:.0f}')}× fewer evaluations).")
    if "train_throughput" in h:
        t = h["train_throughput"]
        lines += ["", "### Training throughput" + (" (under load)" if load.get("train_throughput") else ""), "",
                  f"Peak float32 rate: matmul {f(t['matmul_gflops'])}, 3×3 conv {f(t['conv_gflops'])} GFLOP/s.", "",
                  "| preset | images/s flaresynth / reference | ratio | s/step vs FLOP ceiling | peak RSS MB flaresynth / reference | extra ms/step (unexplained) |",
                  "|---|---|---|---|---|---|"]
        for preset, e in t["presets"].items():
            lines.append(f"| {preset} (batch {e['batch']}, {f(e['parameters'], '{:,}')} params) | "
                         f"{f(e['flaresynth_images_per_s'])} / {f(e['reference_images_per_s'])} | "
                         f"{f(e['flaresynth_over_reference'], '{:.2f}')} | {f(e['flaresynth_s_per_step'])} vs "
                         f"{f(e['ceiling_s_per_step'])} ({f(e['achieved_over_ceiling'], '{:.0%}')} of peak) | "
                         f"{f(e['flaresynth_peak_rss_mb'], '{:.0f}')} / {f(e['reference_peak_rss_mb'], '{:.0f}')} | "
                         f"{f(e['extra_ms_per_step'], '{:.0f}')} ({f(e['unexplained_ms'], '{:.0f}')}) |")
        if t.get("settings_s_per_step"):
            lines += ["", "Reference loop variants (first preset), s/step: "
                      + ", ".join(f"{k.replace('reference_', '')} {f(v)}" for k, v in t["settings_s_per_step"].items())
                      + (f"; torch.compile took {f(t.get('compile_s'), '{:.0f}')} s" if t.get("compile_s") is not None else "")
                      + "."]
    if "guidance_cost" in h:
        g = h["guidance_cost"]
        lines += ["", f"### Classifier-free guidance ({g['sampler']})" + (" (under load)" if load.get("guidance_cost") else ""), "",
                  "Two forwards / one batched forward, time ratio: "
                  + ", ".join(f"B={b}: {f(v, '{:.2f}')}" for b, v in g["ratio_separate_over_batched"].items())
                  + f" (outputs agree: {g['outputs_agree']}).", "",
                  "| w | FD_domain | judge F1 | referee F1 | wall s |", "|---|---|---|---|---|"]
        for w, r in g["sweep"].items():
            lines.append(f"| {w} | {f(r['fd_domain'])} | {f(r['f1_judge'], '{:.3f}')} | {f(r['f1_referee'], '{:.3f}')} | "
                         f"{f(r['seconds'], '{:.1f}')} |")
    if "train_convergence" in h:
        c = h["train_convergence"]
        lines += ["", "### Convergence" + (" (under load)" if load.get("train_convergence") else ""), "",
                  "| recipe | steps | s/step (FLOP ceiling) | CPU-hours | judge F1 | FD_domain |", "|---|---|---|---|---|---|"]
        for name, r in c["recipes"].items():
            lines.append(f"| {name} | {r['steps']} | {f(r['s_per_step'])} ({f(c['ceiling_s_per_step'])}) | "
                         f"{f(r['cpu_hours'], '{:.3f}')} | {f(r['final_f1_judge'], '{:.3f}')} | {f(r['final_fd_domain'])} |")
        for r in c.get("long_runs") or []:
            lines.append(f"| long run {r['label']} | {r['step']} | | {f(r['cpu_hours'], '{:.2f}')} | "
                         f"{f(r['f1_judge'], '{:.3f}')} | {f(r['fd_domain'])} |")
    if "dataset_build" in h:
        d = h["dataset_build"]
        lines += ["", "### Dataset build (512 → 64 px)" + (" (under load)" if load.get("dataset_build") else ""), "",
                  f"{d['n_frames']} frames: raw read {f(d['raw_read_frames_per_s'])} frames/s; build "
                  f"{f(d['build_1_thread_images_per_s'])} images/s on 1 thread, "
                  f"{f(d['build_dask_2_threads_images_per_s'])} on dask with 2 threads, "
                  f"{f(d.get('build_dask_distributed_1_worker_images_per_s'))} on dask.distributed with 1 worker, "
                  f"{f(d['build_dask_distributed_2_workers_images_per_s'])} with 2 workers "
                  f"({f(d.get('distributed_2_workers_vs_1_thread'), '{:.2f}')}× one thread), "
                  f"{f(d.get('build_dask_distributed_2_workers_preload_images_per_s'))} with 2 workers preloading "
                  f"flaresynth.allocator ({f(d.get('distributed_2_workers_preload_vs_1_thread'), '{:.2f}')}×); "
                  f"outputs identical: {d['outputs_identical']}."]
    failed = summary.get("failed") or []
    if failed:
        lines += ["", f"Failed: {', '.join(failed)}."]
    return "\n".join(lines) + "\n"


def machine() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": cpu, "python": sys.version.split()[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=None, help="dataset folder (default: each script's default dataset)")
    p.add_argument("--run", default=None, help="trained run for sampler_quality and guidance_cost (default demo:discrete)")
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    p.add_argument("--out", type=Path, default=None, help="folder for every JSON, plot and the summary (default WORKDIR/results)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--scripts", default=",".join(SCRIPTS), help=f"which to run, in this order (default {','.join(SCRIPTS)})")
    p.add_argument("--timeout", type=float, default=None, help="seconds per script")
    p.add_argument("--referee", choices=("auto", "on", "off"), default="auto", help="passed to the scoring scripts")
    p.add_argument("--judge", type=Path, default=None,
                   help="judge folder for the scoring scripts (default: each trains or reuses WORKDIR/judges/...)")
    p.add_argument("--log", type=Path, default=None, help="train_convergence --log: RUN/log.jsonl of a long run to add")
    p.add_argument("--log-cores", type=float, default=None, help="train_convergence --log-cores")
    p.add_argument("--quick", action="store_true", help="tiny sizes (the smoke test)")
    args = p.parse_args()
    args.out = Path(args.out or args.workdir / "results")
    args.out.mkdir(parents=True, exist_ok=True)
    names = [s.strip() for s in args.scripts.split(",") if s.strip()]
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        print(f"error: --scripts {unknown[0]!r}: expected some of {', '.join(SCRIPTS)}", file=sys.stderr)
        sys.exit(2)
    t0 = time.perf_counter()
    results: dict = {}
    for name in names:
        results[name] = run_script(name, script_args(name, args, results), args.timeout)
    summary = {
        "benchmark": "run_all",
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "quick": args.quick,
        "seconds_total": round(time.perf_counter() - t0, 2),
        "failed": [n for n, e in results.items() if e.get("returncode") != 0 or "result" not in e],
        "under_load": [n for n, e in results.items() if e.get("under_load")],
        "scripts": results,
    }
    summary["headline"] = headline(results)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "summary.md").write_text(markdown(summary))
    print(json.dumps(summary, indent=2))
    if summary["failed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
