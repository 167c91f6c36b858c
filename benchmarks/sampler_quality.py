"""Sample quality against network evaluations for every sampler, and the fast default it implies.

One trained model (default the shipped ``demo:discrete``) on the simulated Sun samples the SAME requests
(``--per-class`` images of every class the model was trained on, seeds ``seed .. seed+N-1`` in class order,
CFG weight ``--guidance``, default the run's) with each setting of ``--settings``: by default DDPM 1000 steps
(the paper's sampler, the reference), DDPM 50/100 (the same ancestral sampler on a strided grid), DDIM
10/20/50/100, DPM-Solver++ (2M) 10/20 and UniPC 10, plus two
candidates flaresynth does not offer yet: ``dpm++-clip`` 20 and ``unipc-clip`` 10, the same solvers with the
predicted x0 clipped to [-1, 1] at every step as diffusers' DDPM and DDIM schedulers do under the training
config's ``clip_sample: true`` (DPM-Solver++ and UniPC ignore ``clip_sample``; ``common.clipped_sampler``). The
deterministic samplers start every image from the same x_T (its seed); DDPM also draws per-step noise.

For each setting: network evaluations per image (NFE, counted; the batched conditional + unconditional
forward counts 2 per step), wall time, FD_domain (class-matched, see ``common.py``), judge macro-F1 and the
physical referee's macro-F1 (``estimate_flux`` on the images in DN/s), each with its bootstrap std. ONE judge
is trained (or taken from the cache) and reused for every setting.

Fast default: the cheapest setting (fewest NFE) whose FD_domain is at most ``1 + --fd-tol`` (5 %) times the
reference's and whose judge F1 is at least the reference's minus ``--f1-tol`` (0.02). ``fast_default`` picks
among flaresynth's samplers (a default that can be set today), ``fast_default_with_candidates`` among all
settings (a ``-clip`` winner needs the library change it names); ``*_also_referee`` also asks it of the
referee F1. When only the reference qualifies, ``cheaper_than_reference`` is false and ``best_cheaper`` names
the cheaper library setting with the best judge F1 (what ``run_all.py`` then gives ``guidance_cost.py``).
Noise: every figure has its bootstrap std, and every setting the std of its DIFFERENCE to the reference under
the same resamples (``*_minus_reference_std``, ``fd_rel_to_reference_std``: the requests are shared, so this
is the std that matters). With 10 images per class it is larger than the tolerances (F1 ~0.05, FD ~20 %):
the rule then chooses among settings the measurement cannot separate, which ``within_noise`` says.

Cost: DDPM-1000 dominates (1000 of the 1400 steps of the default settings). At the default 10 per class (50
images in batches of 32 = 64 rows with guidance: 140,000 rows through the demo U-Net) it is sized to stay
under 10 minutes on 2 quiet cores if a row costs under ~4 ms (one thread, under load, it cost ~5 ms; not yet
timed on a quiet machine); the JSON has the projected sampling time beside the measured one.

Usage: ``python benchmarks/sampler_quality.py [--run RUN] [--data DS] [--per-class 10] [--settings ddpm:1000,...]``
"""

from __future__ import annotations

import numpy as np
from common import (
    CANDIDATE_SAMPLERS,
    LIBRARY_SAMPLERS,
    LoadMonitor,
    add_judge_seed,
    base_parser,
    check_sampling_args,
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

DEFAULT_SETTINGS = "ddpm:1000,ddpm:50,ddpm:100,ddim:10,ddim:20,ddim:50,ddim:100,dpm++:10,dpm++:20,unipc:10,dpm++-clip:20,unipc-clip:10"
QUICK_SETTINGS = "ddpm:20,ddim:2,ddim:5,dpm++:2,unipc:2,dpm++-clip:2"
SAMPLERS = LIBRARY_SAMPLERS + CANDIDATE_SAMPLERS


def parse_settings(text: str) -> list[tuple[str, int]]:
    """``"ddpm:1000,ddim:10"`` -> [("ddpm", 1000), ("ddim", 10)]."""
    from flaresynth.errors import FlaresynthError

    out = []
    for item in text.split(","):
        name, _, steps = item.strip().partition(":")
        if name not in SAMPLERS or not steps.isdigit() or int(steps) < 1:
            raise FlaresynthError(f"--settings {item!r}: expected SAMPLER:STEPS with SAMPLER one of {', '.join(SAMPLERS)}")
        out.append((name, int(steps)))
    return out


def within_tolerance(r: dict, ref: dict, fd_tol: float, f1_tol: float, referee: bool = False) -> bool:
    """FD_domain <= (1 + fd_tol) x the reference's and judge F1 >= the reference's - f1_tol (and the referee's)."""
    good = r["fd_domain"] <= ref["fd_domain"] * (1 + fd_tol) and r["f1_judge"] >= ref["f1_judge"] - f1_tol
    if referee and ref.get("f1_referee") is not None:
        good = good and r["f1_referee"] >= ref["f1_referee"] - f1_tol
    return bool(good)


def pick_fast_default(rows: list[dict], fd_tol: float, f1_tol: float, referee: bool = False,
                      library_only: bool = True) -> dict | None:
    """Cheapest row within the tolerances of rows[0] (the reference); None if no row is.

    ``library_only``: only flaresynth's own samplers (not the ``-clip`` candidates).
    """
    ref = rows[0]
    ok = [r for r in rows if within_tolerance(r, ref, fd_tol, f1_tol, referee)
          and (not library_only or r["sampler"] in LIBRARY_SAMPLERS)]
    if not ok:
        return None
    best = min(ok, key=lambda r: (r["nfe_per_image"], r["seconds"]))
    # noise of the comparison: the paired std of the difference when measured, else the larger own std
    f1_noise = best.get("f1_judge_minus_reference_std")
    if f1_noise is None:
        f1_noise = max(best["f1_judge_std"], ref["f1_judge_std"])
    fd_noise = best.get("fd_rel_to_reference_std")
    if fd_noise is None:
        fd_noise = max(best["fd_domain_std"], ref["fd_domain_std"]) / max(ref["fd_domain"], 1e-12)
    noise = best is not ref and (f1_noise > f1_tol or fd_noise > fd_tol)
    return {"name": best["name"], "sampler": best["sampler"], "steps": best["steps"],
            "library_sampler": best["sampler"] in LIBRARY_SAMPLERS, "nfe_per_image": best["nfe_per_image"],
            "nfe_speedup_vs_reference": ref["nfe_per_image"] / max(best["nfe_per_image"], 1e-9),
            "speedup_vs_reference": ref["seconds"] / max(best["seconds"], 1e-9),
            "within_noise": bool(noise), "cheaper_than_reference": best is not ref}


def best_cheaper(rows: list[dict], library_only: bool = True) -> dict | None:
    """The setting cheaper than the reference with the highest judge F1 (then lowest FD, then fewest NFE)."""
    cheaper = [r for r in rows[1:] if r["nfe_per_image"] < rows[0]["nfe_per_image"]
               and (not library_only or r["sampler"] in LIBRARY_SAMPLERS)]
    if not cheaper:
        return None
    best = max(cheaper, key=lambda r: (round(r["f1_judge"], 6), -r["fd_domain"], -r["nfe_per_image"]))
    return {"name": best["name"], "sampler": best["sampler"], "steps": best["steps"], "nfe_per_image": best["nfe_per_image"],
            "f1_judge": best["f1_judge"], "fd_domain": best["fd_domain"],
            "nfe_speedup_vs_reference": rows[0]["nfe_per_image"] / max(best["nfe_per_image"], 1e-9),
            "speedup_vs_reference": rows[0]["seconds"] / max(best["seconds"], 1e-9)}


def main() -> None:

    p = base_parser(__doc__, run=True)
    add_judge_seed(p)
    p.add_argument("--per-class", type=int, default=10, help="images per class (default 10: < 10 min on 2 cores)")
    p.add_argument("--settings", default=None, help=f"SAMPLER:STEPS list, reference first (default {DEFAULT_SETTINGS})")
    p.add_argument("--guidance", type=float, default=None, help="CFG weight w (default: the run's sample.guidance)")
    p.add_argument("--fd-tol", type=float, default=0.05, help="relative FD_domain tolerance (default 0.05)")
    p.add_argument("--f1-tol", type=float, default=0.02, help="absolute judge F1 tolerance (default 0.02)")
    p.add_argument("--fd-split", default="all", help="real split FD_domain compares with (default all)")
    args = p.parse_args()
    out = setup(args)
    monitor = LoadMonitor()
    check_sampling_args(args)
    settings = parse_settings(args.settings or (QUICK_SETTINGS if args.quick else DEFAULT_SETTINGS))

    from flaresynth.dataset import open_dataset
    from flaresynth.errors import input_error
    from flaresynth.runs import open_run
    from flaresynth.sampling import build_requests

    model = open_run(args.run, "cpu")
    ds = open_dataset(resolve_data(args))
    if list(ds.classes) != list(model.classes):
        raise input_error(ds.path / "manifest.json", "classes", f"{list(ds.classes)}, but the model has {list(model.classes)}")
    if model.latent is not None and any(name in CANDIDATE_SAMPLERS for name, _ in settings):
        # the x0 clip of the candidates is a pixel-space idea (common.generate_any)
        settings = [(name, steps) for name, steps in settings if name not in CANDIDATE_SAMPLERS]
        log(f"{model.path} is a latent run: the x0-clipped candidates {', '.join(CANDIDATE_SAMPLERS)} are left out")
    guidance = float(model.meta["config"]["sample"]["guidance"] if args.guidance is None else args.guidance)
    size = model.image_shape[-1]
    real = real_at_size(ds, size)
    judge, judge_info = first_judge(ds, real, args)
    scorer, referee_info = make_scorer(ds, judge, real, args)
    table = build_requests(model, per_class=args.per_class, seed=args.seed)
    y = requested_index(model, table)
    floor, floor_std = scorer.real_floor(y)

    # projected cost: one batched forward at the sampling batch, times the forwards every setting needs
    n_batches = -(-len(table) // args.batch_size)
    _, probe = timed_generate(model, table.iloc[: args.batch_size], "ddim", 2, guidance, args.batch_size)
    per_forward = probe["seconds"] / 2
    projected = per_forward * n_batches * sum(s for _, s in settings)
    log(f"{len(table)} images, {len(settings)} settings; one forward of {min(args.batch_size, len(table))} images "
        f"takes {per_forward:.3f} s: sampling projected at {projected / 60:.1f} min")

    rows, raws = [], []
    for name, steps in settings:
        images, info = timed_generate(model, table, name, steps, guidance, args.batch_size)
        q, raw = scorer.score(images, y, return_raw=True)
        row = {"name": f"{name}-{steps}", "sampler": name, "steps": steps, "library_sampler": name in LIBRARY_SAMPLERS,
               **info, **q}
        rows.append(row)
        raws.append(raw)
        referee = f", referee F1 {q['f1_referee']:.3f}" if q["f1_referee"] is not None else ""
        log(f"{row['name']}: NFE {info['nfe_per_image']:.0f}, {info['seconds']:.1f} s, FD_domain {q['fd_domain']:.3f} "
            f"± {q['fd_domain_std']:.3f}, judge F1 {q['f1_judge']:.3f} ± {q['f1_judge_std']:.3f}{referee}")
    ref = rows[0]
    for r, raw in zip(rows, raws, strict=True):
        r["fd_rel_to_reference"] = r["fd_domain"] / ref["fd_domain"] if ref["fd_domain"] > 0 else None
        r["f1_judge_minus_reference"] = r["f1_judge"] - ref["f1_judge"]
        r["f1_referee_minus_reference"] = None if ref["f1_referee"] is None else r["f1_referee"] - ref["f1_referee"]
        r.update(scorer.paired(raws[0], raw) if r is not ref else
                 {"fd_rel_to_reference_std": 0.0, "f1_judge_minus_reference_std": 0.0,
                  "f1_referee_minus_reference_std": None if ref["f1_referee"] is None else 0.0})
        r["within_tolerance"] = within_tolerance(r, ref, args.fd_tol, args.f1_tol)
    fast = pick_fast_default(rows, args.fd_tol, args.f1_tol)
    load = monitor.report()
    machine = machine_info(args.threads)
    result = {
        "benchmark": "sampler_quality",
        "machine": machine,
        "load": load,
        "run": str(model.path),
        "model_id": model.meta.get("model_id"),
        "model_step": model.meta.get("step"),
        "data": str(ds.path),
        "image_size": size,
        "per_class": args.per_class,
        "n_images": len(table),
        "classes": list(dict.fromkeys(table["label"])),
        "seeds": [int(table["seed"].min()), int(table["seed"].max())],
        "guidance": guidance,
        "guidance_t_max": model.sample_defaults.get("guidance_t_max"),  # the run's interval, every setting
        "batch_size": args.batch_size,
        "nfe_convention": "rows through the network per image; the batched cond+uncond CFG forward counts 2 per step",
        "candidate_samplers": {c: "not in flaresynth: " + c.removesuffix("-clip") + " with x0 clipped to [-1, 1] "
                               "(diffusers thresholding, sample_max_value=1), as DDPM/DDIM do with clip_sample"
                               for c in CANDIDATE_SAMPLERS},
        "scheduler_clip_sample": model.meta.get("scheduler", {}).get("clip_sample"),
        "judge": judge_info,
        "referee": referee_info,
        "referee_real_test_f1": scorer.referee_real_test_f1,
        "fd_split": args.fd_split,
        "fd_domain_real_floor": floor,
        "fd_domain_real_floor_std": floor_std,
        "projected_sampling_s": projected,
        "settings": rows,
        "reference": ref["name"],
        "criteria": {"fd_domain_max_rel": 1 + args.fd_tol, "f1_judge_max_drop": args.f1_tol},
        "fast_default": fast,
        "fast_default_also_referee": pick_fast_default(rows, args.fd_tol, args.f1_tol, referee=True),
        "fast_default_with_candidates": pick_fast_default(rows, args.fd_tol, args.f1_tol, library_only=False),
        "best_cheaper": best_cheaper(rows),
        "best_cheaper_with_candidates": best_cheaper(rows, library_only=False),
        "seconds_total": load["wall_s"],
    }
    result["plot"] = str(plot(rows, result, out / "sampler_quality.png"))
    cheap = result["best_cheaper"]
    if fast and fast["cheaper_than_reference"]:
        log(f"fast default: {fast['name']} ({fast['nfe_per_image']:.0f} NFE/image, {fast['speedup_vs_reference']:.0f}x "
            f"faster than {ref['name']}){' - within noise' if fast['within_noise'] else ''}")
    else:
        log(f"fast default: none - no cheaper setting is within the tolerances of {ref['name']}; the best cheaper one "
            f"is {cheap['name'] if cheap else 'none'}")
    emit(result, out, "sampler_quality")


def plot(rows: list[dict], result: dict, path):
    fig, (ax1, ax2) = figure(2)
    nfe = np.array([r["nfe_per_image"] for r in rows])
    has_referee = rows[0]["f1_referee"] is not None
    panels = ((ax1, [("fd_domain", "FD_domain")]),
              (ax2, [("f1_judge", "judge macro-F1")] + ([("f1_referee", "referee macro-F1")] if has_referee else [])))
    for ax, keys in panels:
        for key, label in keys:
            v = np.array([r[key] for r in rows])
            e = np.array([r[f"{key}_std"] for r in rows])
            ax.errorbar(nfe, v, yerr=e, fmt="o", capsize=3, label=label)
        for r in rows:
            ax.annotate(r["name"], (r["nfe_per_image"], r[keys[0][0]]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("network evaluations per image (NFE)")
    ref = rows[0]
    crit = result["criteria"]
    ax1.axhline(ref["fd_domain"] * crit["fd_domain_max_rel"], ls="--", c="gray", lw=0.8,
                label=f"reference +{(crit['fd_domain_max_rel'] - 1) * 100:.0f} %")
    ax1.axhline(result["fd_domain_real_floor"], ls=":", c="green", lw=0.8, label="real vs real, same size")
    ax1.set_ylabel("FD_domain (lower is better)")
    ax2.axhline(ref["f1_judge"] - crit["f1_judge_max_drop"], ls="--", c="gray", lw=0.8,
                label=f"reference judge F1 - {crit['f1_judge_max_drop']:g}")
    if result.get("judge", {}).get("real_test_f1") is not None:
        ax2.axhline(result["judge"]["real_test_f1"], ls=":", c="C0", lw=0.8, label="judge on real test")
    if result.get("referee_real_test_f1") is not None:
        ax2.axhline(result["referee_real_test_f1"], ls=":", c="C1", lw=0.8, label="referee on real test")
    ax2.set_ylabel("macro-F1 (higher is better)")
    for ax in (ax1, ax2):
        ax.legend(fontsize=7)
    fast, cheap = result.get("fast_default"), result.get("best_cheaper")
    verdict = fast["name"] if fast and fast["cheaper_than_reference"] else \
        f"none cheaper than {ref['name']} (best cheaper: {cheap['name'] if cheap else '-'})"
    fig.suptitle(f"Sampler quality vs cost: {result['model_id']}, {result['n_images']} images, w={result['guidance']:g}\n"
                 f"fast default: {verdict}\n{subtitle(result['machine'], result['load'])}", fontsize=9)
    fig.savefig(path, dpi=110)
    return path


if __name__ == "__main__":
    main_wrapper(main)
