"""Distilled students against their teacher: quality, network evaluations and images/s on the same requests.

The teacher (``--run``, default the shipped ``demo:discrete``) samples ``--per-class`` images of every class it
was trained on (seeds ``seed .. seed+N-1`` in class order, CFG weight ``--guidance``, default the teacher's)
with each of ``--teacher-settings`` (default DDPM 1000, the paper's sampler and the reference; DDIM 20, the
demo's fast sampler; DDIM 4, the teacher itself at a student's budget); each student (``--student``, a run made
by ``flaresynth distill``, repeatable) samples the SAME requests with its own sampler and steps at the same w.

For each: network evaluations per image (NFE, counted; a teacher's batched conditional + unconditional forward
counts 2 per step, a student's one forward 1), wall time and images/s, FD_domain (class-matched) and judge
macro-F1 (and the physical referee's on a simulated Sun), each with its bootstrap std (``common.py``), and
against the reference the DIFFERENCE with its paired bootstrap std (the same requests and resamples move both
figures together, so that std, not either figure's own, says whether the two are distinguishable).

Targets (issue 14): a student at <= 4 NFE per image with judge F1 >= the reference's - ``--f1-tol`` (0.02) and
FD_domain <= ``--fd-ratio`` (1.2) x the reference's. ``meets_targets`` says whether it does;
``within_noise`` says whether the paired std of either difference is larger than its tolerance, i.e. whether
the measurement at this size can tell. On the simulated Sun every figure is an upper bound of what the same
generator would reach on the real Sun, and claims nothing about it.

One judge's training noise can move these figures by more than the tolerance: two judges (one trained by
``flaresynth evaluate``, one by this benchmark) put the same student's images at −0.14 and −0.01 from the
same reference. ``--judge-seeds 1,2``
scores the same images with more judges (trained with those seeds, cached like the first): each row gains
``by_judge`` (every judge's figures and differences, the first judge's first) and each student's verdict
``meets_targets_every_judge``.

Cost: the reference DDPM 1000 dominates (at 40 per class, 200 images, 1000 steps x 2 rows). A run at the issue's
size is for a quiet machine; ``--quick`` (2 per class, DDPM 10) is the smoke test.

Usage: ``python benchmarks/distill_quality.py --run demo:discrete --student RUN2 [--per-class 40] [--data DS]``
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from common import (
    LoadMonitor,
    add_judge_seed,
    base_parser,
    check_sampling_args,
    emit,
    first_judge,
    get_judge,
    log,
    machine_info,
    main_wrapper,
    make_scorer,
    parse_seeds,
    real_at_size,
    requested_index,
    resolve_data,
    setup,
    timed_generate,
)

DEFAULT_TEACHER_SETTINGS = "ddpm:1000,ddim:20,ddim:4"
QUICK_TEACHER_SETTINGS = "ddpm:10,ddim:2"


def parse_settings(text: str) -> list[tuple[str, int]]:
    """``"ddpm:1000,ddim:20"`` -> [("ddpm", 1000), ("ddim", 20)]."""
    from flaresynth.diffusion import SAMPLER_DEFAULT_STEPS
    from flaresynth.errors import FlaresynthError

    out = []
    for item in text.split(","):
        name, _, steps = item.strip().partition(":")
        if name not in SAMPLER_DEFAULT_STEPS or not steps.isdigit() or int(steps) < 1:
            raise FlaresynthError(f"--teacher-settings {item!r}: expected SAMPLER:STEPS with SAMPLER one of "
                                  f"{', '.join(SAMPLER_DEFAULT_STEPS)}")
        out.append((name, int(steps)))
    return out


def score_against_reference(scorer, generated: list, y, rows: list[dict], judge_info: dict) -> list[dict]:
    """One judge's figures for every setting's images, and each one's difference to the first (the reference)
    with its paired bootstrap std."""
    scored = [scorer.score(images, y, return_raw=True) for images in generated]
    ref, ref_raw = scored[0]
    out = []
    for (q, raw), row in zip(scored, rows, strict=True):
        r = {"judge_seed": judge_info.get("seed"), "judge_real_test_f1": judge_info.get("real_test_f1"), **q,
             "nfe_per_image": row["nfe_per_image"],
             "fd_rel_to_reference": q["fd_domain"] / ref["fd_domain"] if ref["fd_domain"] > 0 else None,
             "f1_judge_minus_reference": q["f1_judge"] - ref["f1_judge"],
             "f1_referee_minus_reference": None if ref["f1_referee"] is None else q["f1_referee"] - ref["f1_referee"]}
        r.update(scorer.paired(ref_raw, raw) if raw is not ref_raw else
                 {"fd_rel_to_reference_std": 0.0, "f1_judge_minus_reference_std": 0.0,
                  "f1_referee_minus_reference_std": None if ref["f1_referee"] is None else 0.0})
        out.append(r)
    return out


def verdict(row: dict, ref: dict, f1_tol: float, fd_ratio: float, max_nfe: float = 4) -> dict:
    """Whether ``row`` meets the issue's targets against the reference, and whether the noise can tell."""
    f1_ok = row["f1_judge"] >= ref["f1_judge"] - f1_tol
    fd_ok = row["fd_domain"] <= fd_ratio * ref["fd_domain"]
    noise = row["f1_judge_minus_reference_std"] > f1_tol or row["fd_rel_to_reference_std"] > fd_ratio - 1
    return {"nfe_ok": row["nfe_per_image"] <= max_nfe, "f1_judge_ok": bool(f1_ok), "fd_domain_ok": bool(fd_ok),
            "meets_targets": bool(f1_ok and fd_ok and row["nfe_per_image"] <= max_nfe), "within_noise": bool(noise)}


def cached_generate(cache: Path | None, model, table, sampler: str, steps: int, guidance: float, batch_size: int):
    """:func:`common.timed_generate`, kept in ``cache`` (``None``: not kept) under a key of everything the images
    depend on: the weights' digest, the sampler and its settings, w and the requests. Sampling is seeded per
    image, so a kept row is the row sampled again; its info keeps its first run's timing (``"cached": true``)."""
    import numpy as np

    from flaresynth.io import atomic_file, sha256_file
    from flaresynth.runs import model_folder

    if cache is None:
        return timed_generate(model, table, sampler, steps, guidance, batch_size)
    weights = sorted(p for p in model_folder(model.path).rglob("*") if p.is_file())
    key = hashlib.sha256(json.dumps({
        "weights": [sha256_file(p) for p in weights], "latent": model.meta.get("latent"), "sampler": sampler, "steps": steps, "guidance": guidance,
        "sample": model.sample_defaults, "requests": table.to_json(orient="records", double_precision=15),
    }, sort_keys=True, default=str).encode()).hexdigest()[:24]
    path = Path(cache) / f"{key}.npz"
    if path.is_file():
        with np.load(path) as saved:
            return saved["images"], {**json.loads(str(saved["info"])), "cached": True}
    images, info = timed_generate(model, table, sampler, steps, guidance, batch_size)
    with atomic_file(path, "wb") as fh:
        np.savez(fh, images=images, info=json.dumps(info))
    return images, info


def main() -> None:
    from flaresynth.errors import FlaresynthError

    p = base_parser(__doc__, run=True)
    add_judge_seed(p)
    p.add_argument("--student", action="append", default=[], help="student run folder (repeatable; at least one)")
    p.add_argument("--per-class", type=int, default=40, help="images per class (default 40, the issue's size)")
    p.add_argument("--teacher-settings", default=None,
                   help=f"teacher SAMPLER:STEPS list, reference first (default {DEFAULT_TEACHER_SETTINGS})")
    p.add_argument("--guidance", type=float, default=None, help="CFG weight w (default: the teacher's sample.guidance)")
    p.add_argument("--f1-tol", type=float, default=0.02, help="judge F1 may drop this much (default 0.02)")
    p.add_argument("--fd-ratio", type=float, default=1.2, help="FD_domain may grow this factor (default 1.2)")
    p.add_argument("--fd-split", default="all", help="real split FD_domain compares with (default all)")
    p.add_argument("--samples-cache", type=Path, default=None,
                   help="folder keeping each row's images (keyed by model, weights, sampler, w and requests): a row "
                        "asked again is read back with its first run's timing (a DDPM 1000 reference costs ~30 min)")
    p.add_argument("--judge-seeds", default="",
                   help="more judges, trained with these seeds (e.g. 1,2), score the same images (default: none)")
    args = p.parse_args()
    out = setup(args)
    monitor = LoadMonitor()
    if not args.student:
        raise FlaresynthError("--student: give at least one student run (made by `flaresynth distill`)")
    check_sampling_args(args)
    settings = parse_settings(args.teacher_settings or (QUICK_TEACHER_SETTINGS if args.quick else DEFAULT_TEACHER_SETTINGS))
    extra_seeds = parse_seeds(args.judge_seeds)

    from flaresynth.dataset import open_dataset
    from flaresynth.errors import input_error
    from flaresynth.runs import open_run
    from flaresynth.sampling import build_requests, check_student_settings, resolve_timesteps

    teacher = open_run(args.run, "cpu")
    if "student" in teacher.meta:
        raise FlaresynthError(f"--run {args.run}: a distilled student; --run is the teacher")
    students = [open_run(s, "cpu") for s in args.student]
    for s, name in zip(students, args.student, strict=True):
        if "student" not in s.meta:
            raise FlaresynthError(f"--student {name}: not a distilled student (made by `flaresynth distill`)")
        if s.meta.get("data_hash") != teacher.meta.get("data_hash") or list(s.classes) != list(teacher.classes):
            raise FlaresynthError(f"--student {name}: trained on another dataset than the teacher {args.run}")
    ds = open_dataset(resolve_data(args))
    if list(ds.classes) != list(teacher.classes):
        raise input_error(ds.path / "manifest.json", "classes", f"{list(ds.classes)}, but the teacher has {list(teacher.classes)}")
    guidance = float(teacher.meta["config"]["sample"]["guidance"] if args.guidance is None else args.guidance)
    for s in students:
        check_student_settings(s, s.meta["config"]["sample"]["sampler"], None, guidance)
    size = teacher.image_shape[-1]
    real = real_at_size(ds, size)
    judge, judge_info = first_judge(ds, real, args)
    scorer, referee_info = make_scorer(ds, judge, real, args)
    table = build_requests(teacher, per_class=args.per_class, seed=args.seed)
    y = requested_index(teacher, table)
    floor, floor_std = scorer.real_floor(y)

    jobs = [("teacher", f"teacher-{n}-{k}", teacher, n, k) for n, k in settings]
    for s, path in zip(students, args.student, strict=True):
        sampler, steps = s.meta["config"]["sample"]["sampler"], int(s.meta["student"]["steps"])
        jobs.append(("student", f"student-{sampler}-{steps} ({path})", s, sampler, steps))
    rows, generated = [], []
    for role, name, model, sampler, steps in jobs:
        images, info = cached_generate(args.samples_cache, model, table, sampler, steps, guidance, args.batch_size)
        rows.append({"name": name, "role": role, "run": str(model.path), "model_id": model.meta.get("model_id"),
                     "sampler": sampler, "steps": steps,
                     "timesteps": resolve_timesteps(model.sample_defaults, sampler, steps), **info})
        generated.append(images)
        log(f"{name}: NFE {info['nfe_per_image']:.0f}, {info['images_per_s']:.2f} images/s")
    judged = [score_against_reference(scorer, generated, y, rows,
                                      {**judge_info, "seed": None if args.judge else args.judge_seed})]
    for seed in extra_seeds:
        extra, extra_info = get_judge(ds, real, args.workdir, None, seed, max_epochs=2 if args.quick else 40)
        judged.append(score_against_reference(make_scorer(ds, extra, real, args)[0], generated, y, rows,
                                              {**extra_info, "seed": seed}))
    ref = rows[0]
    for i, r in enumerate(rows):
        r.update(judged[0][i])
        if len(judged) > 1:
            r["by_judge"] = [scores[i] for scores in judged]
        r["speedup_vs_reference"] = r["images_per_s"] / max(ref["images_per_s"], 1e-12)
        if r["role"] == "student":
            each = [verdict(scores[i], scores[0], args.f1_tol, args.fd_ratio) for scores in judged]
            r["verdict"] = each[0]
            if len(judged) > 1:
                r["verdict"].update(meets_targets_every_judge=all(v["meets_targets"] for v in each),
                                    judges_meeting_targets=sum(v["meets_targets"] for v in each))
        log(f"{r['name']}: FD_domain {r['fd_domain']:.3f} ± {r['fd_domain_std']:.3f}, judge F1 "
            f"{r['f1_judge']:.3f} ± {r['f1_judge_std']:.3f} ({r['f1_judge_minus_reference']:+.3f} ± "
            f"{r['f1_judge_minus_reference_std']:.3f} against the reference)")
    load = monitor.report()
    result = {
        "benchmark": "distill_quality",
        "machine": machine_info(args.threads),
        "load": load,
        "teacher": str(teacher.path),
        "teacher_id": teacher.meta.get("model_id"),
        "students": [str(s.path) for s in students],
        "data": str(ds.path),
        "image_size": size,
        "per_class": args.per_class,
        "n_images": len(table),
        "seeds": [int(table["seed"].min()), int(table["seed"].max())],
        "guidance": guidance,
        # each run samples under its own configured guidance interval (None: guidance at every step)
        "guidance_t_max": {str(r.path): r.sample_defaults.get("guidance_t_max") for r in (teacher, *students)},
        "batch_size": args.batch_size,
        "nfe_convention": "rows through the network per image; a teacher's batched cond+uncond CFG forward counts 2 "
                          "per step, a student's single forward with w as input 1",
        "judge": judge_info,
        "extra_judge_seeds": extra_seeds,
        "referee": referee_info,
        "fd_split": args.fd_split,
        "fd_domain_real_floor": floor,
        "fd_domain_real_floor_std": floor_std,
        "reference": ref["name"],
        "criteria": {"f1_judge_max_drop": args.f1_tol, "fd_domain_max_ratio": args.fd_ratio, "max_nfe_per_image": 4},
        "settings": rows,
        "simulated_sun_note": "on a simulated Sun these figures are upper bounds and claim nothing about the real Sun",
        "seconds_total": load["wall_s"],
    }
    emit(result, out, "distill_quality")


if __name__ == "__main__":
    main_wrapper(main)
