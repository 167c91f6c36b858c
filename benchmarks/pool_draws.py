"""Pool several draws of ``generator_quality.py`` (the same generators, requests and judges, other ``--seed``s).

One draw of 40 images per class is a noisy instrument for FD: on the default dataset the shipped ceVAE's
FD / real-vs-real under judge 0 read 8.2, 8.5, 15.4 and 26.5 over seeds 0, 1000, 2000 and 3000, since both the
generated FD and its real-vs-real benchmark (two halves of the test split, cut by the seed) move with the seed. So
this script reads the JSON of each draw and gives, per generator and judge:

* ``f1_ratio``: the mean over draws of judge F1 / its real-test ceiling (and the spread over draws);
* ``fd_ratio``: the mean over draws of evaluate's FD_domain over the mean of its real-vs-real benchmarks (a ratio of
  means: one unlucky small benchmark does not blow it up), beside each draw's own ratio;
* ``fd_ratio_class_matched``: the same for the other convention (``fd_domain`` over ``fd_domain_real_floor``: real
  frames of the draws' ``fd_split``, e.g. the validation split with ``generator_quality.py --fd-split val``, weighted
  to the requests' class mix);
* the same pooled FD in the fixed encoder's features, the referee's F1, and the copy shares of ``memorisation``;

and the verdicts on these pooled figures. With ``--baseline NAME`` it also gives each other generator's **paired**
difference to that one, draw by draw (the same seed: the same requests, real frames and judges), as the mean and the
std of that mean: the class-matched FD ratio, judge F1 / ceiling and evaluate's FD ratio, each the mean over judges
and per judge (``paired_to_baseline``). That is how a retrained generator is compared with the one it would replace.
Usage::

    python benchmarks/generator_quality.py --seed 0 --out OUT/s0   # ... and --seed 1000, 2000, 3000
    python benchmarks/pool_draws.py OUT/s*/generator_quality.json --out OUT [--baseline demo:discrete]

or both in one command: ``python benchmarks/generator_quality.py --seeds 0,1000,2000,3000 --out OUT``.

The draws must share the dataset, the images per class and the judges, and differ in seed; a generator scored in
several draws must be the same weights sampled the same way (:data:`SETTINGS`: e.g. one ``--guidance``). On a simulated Sun
every figure is an upper bound and claims nothing about the real Sun.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CLASS_TARGET, FD_TARGET, emit, log, main_wrapper, read_results  # noqa: E402

#: What makes two draws of a generator draws of one experiment: the same weights, sampled the same way.
SETTINGS = ("model_id", "kind", "sampler", "steps", "guidance", "guidance_t_max", "timesteps", "eta", "class_components")
#: The per-draw figures of a judge a generator is compared on against the baseline (``--baseline``).
PAIRED = ("fd_ratio_class_matched", "f1_ratio", "fd_ratio")


def sampling_settings(row: dict) -> dict:
    """The :data:`SETTINGS` of a generator's row in a draw (None where the row has no such key)."""
    return {key: row.get(key) for key in SETTINGS}


def read_draws(paths: list[Path]) -> list[dict]:
    """The draws' JSON, checked to be draws of one experiment (dataset, size, judges) under distinct seeds."""
    from flaresynth.errors import FlaresynthError

    draws = read_results(paths, "generator_quality", ("data_hash", "per_class", "fd_split"))
    if len(draws) < 2:
        raise FlaresynthError(f"{len(draws)} draw(s): give at least two generator_quality results to pool")
    first = draws[0]
    seen: dict[str, tuple[Path, dict]] = {}  # a generator's sampling settings, from the first draw that scores it
    for path, d in zip(paths, draws, strict=True):
        seeds = [j["seed"] for j in d["judges"]]
        if seeds != [j["seed"] for j in first["judges"]]:
            raise FlaresynthError(f"{path}: judges of seeds {seeds}, the first draw's are {[j['seed'] for j in first['judges']]}")
        for g in d["generators"]:
            settings = sampling_settings(g)
            where, before = seen.setdefault(g["name"], (path, settings))
            for key, value in settings.items():
                if value != before[key]:
                    raise FlaresynthError(f"{path}: {g['name']}: {key} {value!r}, the draw {where} has {before[key]!r}; "
                                          "pool draws of one setting at a time")
    seeds = [d["seed"] for d in draws]
    if len(set(seeds)) != len(seeds):
        raise FlaresynthError(f"draws of seeds {seeds}: the same seed twice is the same draw")
    return draws


def pool_generator(rows: list[dict]) -> dict:
    """Pooled figures of one generator from its row in each draw (``generator_quality``'s ``generators`` entries)."""
    n_judges = len(rows[0]["by_judge"])
    judges = []
    for i in range(n_judges):
        per = [r["by_judge"][i] for r in rows]
        f1 = np.array([j["f1_ratio"] for j in per])
        fd = np.array([j["fd_domain_evaluate"] for j in per])
        rvr = np.array([j["fd_domain_evaluate_real_vs_real"] for j in per])
        matched = np.array([j["fd_domain"] for j in per])
        floor = np.array([j["fd_domain_real_floor"] for j in per])
        judges.append({"judge_seed": per[0]["judge_seed"], "f1_ratio": float(f1.mean()), "f1_ratio_std_over_draws": float(f1.std()),
                       "f1_ratio_per_draw": f1.tolist(), "fd_domain": float(fd.mean()), "real_vs_real": float(rvr.mean()),
                       "fd_ratio": float(fd.mean() / rvr.mean()), "fd_ratio_per_draw": (fd / rvr).tolist(),
                       "fd_ratio_class_matched": float(matched.mean() / floor.mean()),
                       "fd_ratio_class_matched_per_draw": (matched / floor).tolist()})
    out = {"name": rows[0]["name"], "draws": len(rows), **sampling_settings(rows[0]), "by_judge": judges,
           "mean_f1_ratio": float(np.mean([j["f1_ratio"] for j in judges])),
           "mean_fd_ratio": float(np.mean([j["fd_ratio"] for j in judges])),
           "ensemble_f1_ratio": float(np.mean([r["ensemble"]["f1_ratio"] for r in rows]))}
    fixed = [r.get("fd_fixed_encoder") for r in rows]
    if all(fixed):
        fd = np.array([f["fd"] for f in fixed])
        rvr = np.array([f["real_vs_real"] for f in fixed])
        out["fd_fixed_encoder"] = {"encoder": fixed[0]["encoder"], "fd_ratio": float(fd.mean() / rvr.mean()),
                                   "fd_ratio_per_draw": (fd / rvr).tolist()}
    referee = [r.get("f1_referee") for r in rows]
    if all(v is not None for v in referee):
        out["f1_referee"] = float(np.mean(referee))
    mem = [r["memorisation"] for r in rows]
    for key in ("copy_ratio_below_half", "copy_ratio_below_test_p05", "below_test_p05"):
        out[key] = float(np.mean([m[key] for m in mem]))
    out["copy_ratio_below_half_per_class"] = {c: float(np.mean([m["copy_ratio_below_half_per_class"][c] for m in mem]))
                                              for c in mem[0]["copy_ratio_below_half_per_class"]}
    mirrored = [r.get("memorisation_mirrored") for r in rows]
    if all(mirrored):  # generator_quality.py --mirrors: the copy shares against the training frames and their mirrors
        out["mirrored"] = {"flips": mirrored[0]["flips"],
                           **{key: float(np.mean([m[key] for m in mirrored]))
                              for key in ("copy_ratio_below_half", "copy_ratio_below_test_p05", "below_test_p05")},
                           "below_test_p05_per_class": {c: float(np.mean([m["below_test_p05_per_class"][c]
                                                                          for m in mirrored]))
                                                        for c in mirrored[0]["below_test_p05_per_class"]}}
    out["verdict"] = {"class_target_on_mean": out["mean_f1_ratio"] >= CLASS_TARGET,
                      "judges_meeting_class_target": sum(j["f1_ratio"] >= CLASS_TARGET for j in judges),
                      "fd_target_on_mean": out["mean_fd_ratio"] <= FD_TARGET,
                      "judges_meeting_fd_target": sum(j["fd_ratio"] <= FD_TARGET for j in judges),
                      "fd_target_fixed_encoder": out["fd_fixed_encoder"]["fd_ratio"] <= FD_TARGET if "fd_fixed_encoder" in out else None}
    return out


def paired_difference(values, baseline) -> dict:
    """``values`` − ``baseline``, draw by draw (the same seeds): the mean, the std of that mean and each draw's."""
    diff = np.subtract(values, baseline)
    return {"mean": float(diff.mean()), "std_of_mean": float(diff.std(ddof=1) / np.sqrt(len(diff))),
            "per_draw": diff.tolist()}


def against_baseline(generators: list[dict], baseline: str) -> list[dict]:
    """Each generator's paired differences (:data:`PAIRED`) to the generator named ``baseline``, per judge and for
    the mean over judges."""
    from flaresynth.errors import FlaresynthError

    base = next((g for g in generators if g["name"] == baseline), None)
    if base is None:
        raise FlaresynthError(f"--baseline {baseline}: not among the generators scored in every draw "
                              f"({', '.join(g['name'] for g in generators)})")

    def per_draw(g: dict, key: str) -> np.ndarray:
        return np.array([j[f"{key}_per_draw"] for j in g["by_judge"]])  # (judges, draws)

    rows = []
    for g in generators:
        if g is base:
            continue
        row = {"name": g["name"], "baseline": baseline}
        for key in PAIRED:
            ours, theirs = per_draw(g, key), per_draw(base, key)
            row[key] = {"mean_over_judges": paired_difference(ours.mean(0), theirs.mean(0)),
                        "by_judge": [paired_difference(a, b) for a, b in zip(ours, theirs, strict=True)]}
        rows.append(row)
    return rows


def pool(draws: list[dict], baseline: str | None = None) -> dict:
    """Every generator scored in all draws, pooled (one scored in only some draws is named and left out); with
    ``baseline``, each other generator's paired differences to it (:func:`against_baseline`)."""
    names = [[g["name"] for g in d["generators"]] for d in draws]
    common = [n for n in names[0] if all(n in other for other in names[1:])]
    missing = sorted({n for ns in names for n in ns} - set(common))
    generators = [pool_generator([next(g for g in d["generators"] if g["name"] == name) for d in draws])
                  for name in common]
    return {"benchmark": "pool_draws", "seeds": [d["seed"] for d in draws], "data_hash": draws[0]["data_hash"],
            "per_class": draws[0]["per_class"], "fd_split": draws[0].get("fd_split"),
            "judge_seeds": [j["seed"] for j in draws[0]["judges"]],
            "targets": {"f1_ratio_min": CLASS_TARGET, "fd_ratio_max": FD_TARGET}, "generators": generators,
            "not_in_every_draw": missing,
            **({"paired_to_baseline": against_baseline(generators, baseline)} if baseline is not None else {}),
            "simulated_sun_note": "on a simulated Sun these figures are upper bounds and claim nothing about the real Sun"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, nargs="+", help="generator_quality.json of each draw")
    p.add_argument("--out", type=Path, default=Path("."), help="folder for pool_draws.json (default: here)")
    p.add_argument("--baseline", help="a generator's name (e.g. demo:discrete): every other one's paired differences to it")
    args = p.parse_args()
    result = pool(read_draws(args.results), args.baseline)
    report(result)
    args.out.mkdir(parents=True, exist_ok=True)
    emit(result, args.out, "pool_draws")


def report(result: dict) -> None:
    """One line per pooled generator, and per generator compared with the baseline, on stderr."""
    for g in result["generators"]:
        log(f"{g['name']}: {g['draws']} draws, judge F1 / ceiling "
            + " / ".join(f"{j['f1_ratio']:.2f}" for j in g["by_judge"])
            + ", FD / real-vs-real " + " / ".join(f"{j['fd_ratio']:.1f}" for j in g["by_judge"])
            + (f", {g['fd_fixed_encoder']['fd_ratio']:.1f} ({g['fd_fixed_encoder']['encoder']})" if "fd_fixed_encoder" in g else ""))
    for row in result.get("paired_to_baseline", []):
        log(f"{row['name']} - {row['baseline']}, paired over draws (mean over judges ± std of the mean): "
            + ", ".join(f"{key} {row[key]['mean_over_judges']['mean']:+.3f} ± {row[key]['mean_over_judges']['std_of_mean']:.3f}"
                        for key in PAIRED))


if __name__ == "__main__":
    main_wrapper(main)
