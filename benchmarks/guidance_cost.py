"""What classifier-free guidance costs and what it buys.

1. **Batched vs separate passes.** flaresynth runs the conditional and the unconditional pass of each sampling
   step as ONE forward of the concatenated batch (:func:`flaresynth.diffusion.guided_output`). Here the same
   inputs (x_t, t, classes) go through that batched forward and through two separate forwards (conditional,
   then unconditional, combined with the same ``guided_combine``), at several batch sizes; reported: median wall
   time of each over ``--repeats`` after a warm-up, the ratio separate / batched (> 1: batching pays; on a
   CPU a bigger batch is not always cheaper per image: the working set outgrows the caches), and the
   largest absolute difference between the two guided outputs (they must agree to float rounding: the
   network treats every image independently, GroupNorm included).
2. **Guidance weight sweep.** The same requests (``--per-class`` per class, fixed seeds) sampled with a fast
   sampler (``--sampler``/``--steps``; default DDIM 20, which on ``demo:discrete`` at 10 per class scored judge
   F1 0.92 against 0.77 for DPM-Solver++ 20 and UniPC 10; ``run_all.py`` passes the fast default
   ``sampler_quality.py`` finds in the same run) at each w of ``--weights`` (default 0, 1, 2, 3, 5; w = 0 is
   the purely conditional model and needs one pass per step instead of two): FD_domain, judge macro-F1 and
   referee macro-F1 (see ``common.py``), with bootstrap std, and the wall time.

Usage: ``python benchmarks/guidance_cost.py [--run RUN] [--data DS] [--weights 0,1,2,3,5] [--sampler ddim --steps 20]``
"""

from __future__ import annotations

import time

import numpy as np
from common import (
    CANDIDATE_SAMPLERS,
    LIBRARY_SAMPLERS,
    LoadMonitor,
    add_judge_seed,
    base_parser,
    emit,
    figure,
    first_judge,
    log,
    machine_info,
    main_wrapper,
    make_scorer,
    real_at_size,
    requested_index,
    resolve_data,
    setup,
    subtitle,
    timed_generate,
)


def batched_vs_separate(model, batch: int, guidance: float, repeats: int, seed: int = 0) -> dict:
    """Wall time of one guided network evaluation done as one batched forward vs two separate ones."""
    import torch

    from flaresynth.diffusion import guided_combine, guided_output
    from flaresynth.models.conditioning import Condition

    g = torch.Generator().manual_seed(seed)
    c, s, _ = model.sample_shape  # what the network denoises: the image, or a latent run's latent
    x = torch.randn(batch, c, s, s, generator=g)
    t = torch.full((batch,), 500, dtype=torch.long)
    n_classes = len(model.classes)
    labels = torch.arange(batch) % n_classes
    flux = torch.tensor([model.meta.get("class_log_flux", {}).get(model.classes[int(i)], -6.0) for i in labels],
                        dtype=torch.float32)
    cond = Condition(labels, flux, None)
    net = model.network
    keep, drop = torch.zeros(batch, dtype=torch.bool), torch.ones(batch, dtype=torch.bool)

    def batched():
        return guided_output(net, x, t, cond, guidance)

    def separate():
        return guided_combine(net(x, t, cond, keep), net(x, t, cond, drop), guidance)

    times = {"batched": [], "separate": []}
    with torch.no_grad():
        out_b, out_s = batched(), separate()  # warm-up, and the outputs compared
        for _ in range(repeats):
            for name, fn in (("batched", batched), ("separate", separate)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    tb, ts = float(np.median(times["batched"])), float(np.median(times["separate"]))
    diff = float((out_b - out_s).abs().max())
    return {"batch": batch, "rows_per_forward_batched": 2 * batch, "batched_s": tb, "separate_s": ts,
            "ratio_separate_over_batched": ts / max(tb, 1e-12), "max_abs_diff": diff,
            "outputs_agree": bool(diff <= 1e-4 * max(1.0, float(out_s.abs().max())))}


def main() -> None:
    p = base_parser(__doc__, run=True)
    add_judge_seed(p)
    p.add_argument("--per-class", type=int, default=20, help="images per class in the sweep (default 20)")
    p.add_argument("--weights", default="0,1,2,3,5", help="CFG weights w to sweep (default 0,1,2,3,5)")
    p.add_argument("--sampler", default="ddim",
                   help=f"sampler of the sweep: {', '.join(LIBRARY_SAMPLERS + CANDIDATE_SAMPLERS)} (default ddim)")
    p.add_argument("--steps", type=int, default=20, help="its steps (default 20)")
    p.add_argument("--batches", default="1,4,16,32,64",
                   help="batch sizes of the batched-vs-separate timing (default 1,4,16,32,64)")
    p.add_argument("--repeats", type=int, default=10, help="timed repeats per batch size (default 10)")
    p.add_argument("--fd-split", default="all", help="real split FD_domain compares with (default all)")
    args = p.parse_args()
    out = setup(args)
    monitor = LoadMonitor()
    if args.quick:
        args.per_class, args.repeats, args.batches, args.steps = min(args.per_class, 2), 2, "2", min(args.steps, 2)
        args.weights = "0,2"
    from flaresynth.errors import FlaresynthError

    try:
        weights = [float(w) for w in args.weights.split(",")]
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError as exc:
        raise FlaresynthError(f"--weights {args.weights!r} / --batches {args.batches!r}: {exc}") from None
    if any(not np.isfinite(w) or w < 0 for w in weights) or any(b < 1 for b in batches) or args.repeats < 1:
        raise FlaresynthError("--weights: numbers >= 0; --batches, --repeats: whole numbers >= 1")
    if args.sampler not in LIBRARY_SAMPLERS + CANDIDATE_SAMPLERS:
        raise FlaresynthError(f"--sampler {args.sampler!r}: expected one of {', '.join(LIBRARY_SAMPLERS + CANDIDATE_SAMPLERS)}")

    from flaresynth.dataset import open_dataset
    from flaresynth.runs import open_run
    from flaresynth.sampling import build_requests

    model = open_run(args.run, "cpu")
    run_guidance = float(model.meta["config"]["sample"]["guidance"])
    timing = []
    for b in batches:
        r = batched_vs_separate(model, b, run_guidance or 2.0, args.repeats, args.seed)
        timing.append(r)
        log(f"batch {b}: batched {r['batched_s'] * 1e3:.1f} ms, separate {r['separate_s'] * 1e3:.1f} ms "
            f"(x{r['ratio_separate_over_batched']:.2f}), max |diff| {r['max_abs_diff']:.2e}")

    ds = open_dataset(resolve_data(args))
    size = model.image_shape[-1]
    real = real_at_size(ds, size)
    judge, judge_info = first_judge(ds, real, args)
    scorer, referee_info = make_scorer(ds, judge, real, args)
    table = build_requests(model, per_class=args.per_class, seed=args.seed)
    y = requested_index(model, table)
    sweep = []
    for w in weights:
        images, info = timed_generate(model, table, args.sampler, args.steps, w, args.batch_size)
        q = scorer.score(images, y)
        sweep.append({"guidance": w, **info, **q})
        referee = f", referee F1 {q['f1_referee']:.3f}" if q["f1_referee"] is not None else ""
        log(f"w={w:g}: {info['seconds']:.1f} s, FD_domain {q['fd_domain']:.3f} ± {q['fd_domain_std']:.3f}, "
            f"judge F1 {q['f1_judge']:.3f} ± {q['f1_judge_std']:.3f}{referee}")
    floor, floor_std = scorer.real_floor(y)
    load = monitor.report()
    result = {
        "benchmark": "guidance_cost",
        "machine": machine_info(args.threads),
        "load": load,
        "run": str(model.path),
        "model_id": model.meta.get("model_id"),
        "data": str(ds.path),
        "run_default_guidance": run_guidance,
        "batched_vs_separate": timing,
        "sampler": args.sampler,
        "steps": args.steps,
        "per_class": args.per_class,
        "n_images": len(table),
        "judge": judge_info,
        "referee": referee_info,
        "referee_real_test_f1": scorer.referee_real_test_f1,
        "fd_domain_real_floor": floor,
        "fd_domain_real_floor_std": floor_std,
        "sweep": sweep,
        "best_guidance_f1_judge": max(sweep, key=lambda r: r["f1_judge"])["guidance"],
        "best_guidance_f1_referee": max(sweep, key=lambda r: r["f1_referee"])["guidance"] if scorer.referee else None,
        "best_guidance_fd_domain": min(sweep, key=lambda r: r["fd_domain"])["guidance"],
        "seconds_total": load["wall_s"],
    }
    result["plot"] = str(plot(result, out / "guidance_cost.png"))
    emit(result, out, "guidance_cost")


def plot(result: dict, path):
    fig, (ax0, ax1, ax2) = figure(3, width=4.2)
    t = result["batched_vs_separate"]
    b = [r["batch"] for r in t]
    ax0.plot(b, [r["batched_s"] * 1e3 for r in t], "o-", label="one batched forward (2B rows)")
    ax0.plot(b, [r["separate_s"] * 1e3 for r in t], "s-", label="two forwards (B rows each)")
    ax0.set_xscale("log")
    ax0.set_yscale("log")
    ax0.set_xlabel("images per step (B)")
    ax0.set_ylabel("ms per guided evaluation")
    ax0.legend(fontsize=7)
    s = result["sweep"]
    w = [r["guidance"] for r in s]
    ax1.errorbar(w, [r["fd_domain"] for r in s], yerr=[r["fd_domain_std"] for r in s], fmt="o-", capsize=3)
    ax1.axhline(result["fd_domain_real_floor"], ls=":", c="green", lw=0.8, label="real vs real, same size")
    ax1.set_xlabel("guidance w")
    ax1.set_ylabel("FD_domain (lower is better)")
    ax1.legend(fontsize=7)
    for key, label in (("f1_judge", "judge"), ("f1_referee", "referee"))[: 2 if s[0]["f1_referee"] is not None else 1]:
        ax2.errorbar(w, [r[key] for r in s], yerr=[r[f"{key}_std"] for r in s], fmt="o-", capsize=3, label=label)
    ax2.set_xlabel("guidance w")
    ax2.set_ylabel("macro-F1 (higher is better)")
    ax2.legend(fontsize=7)
    fig.suptitle(f"Classifier-free guidance: {result['model_id']}, {result['sampler']} {result['steps']} steps, "
                 f"{result['n_images']} images\n{subtitle(result['machine'], result['load'])}", fontsize=9)
    fig.savefig(path, dpi=110)
    return path


if __name__ == "__main__":
    main_wrapper(main)
