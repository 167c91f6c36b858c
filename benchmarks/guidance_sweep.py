"""The guidance weight w of each generator, chosen on the validation split from pooled draws.

Reads ``pool_draws.json`` files (``pool_draws.py``, or ``generator_quality.py --seeds ...``), one per w, each from
``generator_quality.py --guidance W --fd-split val`` draws, and gives per generator and w:

* ``fd_ratio_class_matched``: FD against the real frames of the draws' ``--fd-split`` weighted to the requests'
  class mix, over the same FD between real frames, per judge and its mean over judges: the figure w is chosen on
  (``chosen_guidance``: the w of the smallest mean), since the test split must not choose anything. Draws of
  the same seeds at two w share their requests and real frames, so ``difference_to_chosen`` is paired, draw by
  draw (mean and the std of that mean); ``tied_with_chosen`` lists the w within ``TIE_STDS`` (2) stds of it,
  between which the validation split cannot choose;
* ``f1_ratio``: judge F1 / its real-test ceiling, per judge and mean (the class target: >= 0.9);
* ``fd_ratio``: evaluate's FD on the test split over its real-vs-real benchmark, per judge (reported, not chosen on);
* the referee's F1, the fixed encoder's FD ratio and the share of copies (``copy_ratio_below_half``).

It writes ``guidance_sweep.json`` and ``guidance_sweep.png`` (the three FD/F1 panels against w, a line per
generator). The pools must share the dataset, the images per class, the judges and the ``--fd-split``; two pools
of one generator at one w are refused. On a simulated Sun every figure is an upper bound and claims nothing about
the real Sun. Usage::

    python benchmarks/guidance_sweep.py OUT-w0.5/pool_draws.json OUT-w1/pool_draws.json ... --out OUT
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from matplotlib.ticker import ScalarFormatter

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pool_draws  # noqa: E402
from common import CLASS_TARGET, FD_TARGET, emit, figure, log, main_wrapper, read_results  # noqa: E402

#: A w whose paired validation difference to the chosen one is within this many stds of its mean ties with it.
TIE_STDS = 2.0


def read_pools(paths: list[Path]) -> list[dict]:
    """The pools' JSON, checked to be pools of one experiment (dataset, size, judges, FD split)."""
    from flaresynth.errors import FlaresynthError

    if not paths:
        raise FlaresynthError("no pool given")
    return read_results(paths, "pool_draws", ("data_hash", "per_class", "judge_seeds", "fd_split"))


def paired_difference(row: dict, best: dict) -> dict | None:
    """The validation FD ratio (mean over judges) of ``row`` minus that of ``best``, draw by draw (the same seeds:
    the same requests and real frames, so the difference is paired): its mean and the std of that mean. None when
    the two were drawn under other seeds or from a single draw."""
    if row["seeds"] != best["seeds"] or len(row["seeds"]) < 2:
        return None
    key = "fd_ratio_class_matched_mean_per_draw"
    diff = pool_draws.paired_difference(row[key], best[key])
    return {"mean": diff["mean"], "std_of_mean": diff["std_of_mean"]}


def sweep(pools: list[dict], paths: list[Path]) -> dict:
    """Per generator, its pooled figures at each w (ascending) and the w the validation FD chooses."""
    from flaresynth.errors import FlaresynthError

    rows: dict[str, dict[float, dict]] = {}
    for path, pool in zip(paths, pools, strict=True):
        for g in pool["generators"]:
            if g.get("guidance") is None:
                raise FlaresynthError(f"{path}: {g['name']}: no guidance weight (a ceVAE, or a pool older than session 47)")
            at = rows.setdefault(g["name"], {})
            if g["guidance"] in at:
                raise FlaresynthError(f"{path}: {g['name']} at w = {g['guidance']:g} is in another pool too")
            at[g["guidance"]] = {**g, "seeds": pool["seeds"]}
    generators = []
    for name, at in rows.items():
        ws = sorted(at)
        table = []
        for w in ws:
            g = at[w]
            cm = [j["fd_ratio_class_matched"] for j in g["by_judge"]]
            per_draw = np.mean([j["fd_ratio_class_matched_per_draw"] for j in g["by_judge"]], axis=0)
            table.append({"guidance": w, "draws": g["draws"], "seeds": g["seeds"],
                          "fd_ratio_class_matched_mean_per_draw": per_draw.tolist(),
                          "fd_ratio_class_matched": cm, "fd_ratio_class_matched_mean": float(np.mean(cm)),
                          "f1_ratio": [j["f1_ratio"] for j in g["by_judge"]], "f1_ratio_mean": g["mean_f1_ratio"],
                          "fd_ratio": [j["fd_ratio"] for j in g["by_judge"]], "fd_ratio_mean": g["mean_fd_ratio"],
                          "fd_fixed_encoder_ratio": (g.get("fd_fixed_encoder") or {}).get("fd_ratio"),
                          "f1_referee": g.get("f1_referee"), "copy_ratio_below_half": g.get("copy_ratio_below_half")})
        best = min(table, key=lambda r: r["fd_ratio_class_matched_mean"])
        for r in table:
            r["difference_to_chosen"] = paired_difference(r, best)
        tied = [r["guidance"] for r in table if r is not best and r["difference_to_chosen"] is not None
                and r["difference_to_chosen"]["mean"] <= TIE_STDS * r["difference_to_chosen"]["std_of_mean"]]
        generators.append({"name": name, "by_guidance": table, "chosen_guidance": best["guidance"],
                           "tied_with_chosen": tied, "chosen_meets_class_target": best["f1_ratio_mean"] >= CLASS_TARGET})
    first = pools[0]
    return {"benchmark": "guidance_sweep", "pools": [str(p) for p in paths], "data_hash": first["data_hash"],
            "per_class": first["per_class"], "judge_seeds": first["judge_seeds"], "fd_split": first.get("fd_split"),
            "targets": {"f1_ratio_min": CLASS_TARGET, "fd_ratio_max": FD_TARGET}, "generators": generators,
            "simulated_sun_note": "on a simulated Sun these figures are upper bounds and claim nothing about the real Sun"}


def plot(result: dict, path: Path) -> None:
    """Three panels against w, a line per generator: the validation FD w is chosen on (mean over judges), judge F1
    / ceiling (mean) and evaluate's test FD (mean; judge 0's dotted), each with its target."""
    fig, axes = figure(3, width=4.2, height=3.6)
    for i, g in enumerate(result["generators"]):
        ws = [r["guidance"] for r in g["by_guidance"]]
        label = g["name"].removeprefix("demo:")
        axes[0].plot(ws, [r["fd_ratio_class_matched_mean"] for r in g["by_guidance"]], "o-", c=f"C{i}", label=label)
        chosen = next(r for r in g["by_guidance"] if r["guidance"] == g["chosen_guidance"])
        axes[0].plot(chosen["guidance"], chosen["fd_ratio_class_matched_mean"], "k*", ms=9)
        axes[1].plot(ws, [r["f1_ratio_mean"] for r in g["by_guidance"]], "o-", c=f"C{i}", label=label)
        axes[2].plot(ws, [r["fd_ratio_mean"] for r in g["by_guidance"]], "o-", c=f"C{i}", label=label)
        axes[2].plot(ws, [r["fd_ratio"][0] for r in g["by_guidance"]], "o:", c=f"C{i}", ms=3)
    axes[0].set_title(f"FD on {result['fd_split']} (class-matched): w is chosen here", fontsize=8)
    axes[1].set_title("judge F1 / its real-test ceiling", fontsize=8)
    axes[2].set_title(f"FD on test (evaluate's); judge {result['judge_seeds'][0]} dotted", fontsize=8)
    axes[1].axhline(CLASS_TARGET, ls="--", c="gray", lw=0.8)
    axes[2].axhline(FD_TARGET, ls="--", c="gray", lw=0.8)
    for ax, what in zip(axes, ("FD / real-vs-real, mean of judges", "mean of judges", "FD / real-vs-real"), strict=True):
        ax.set_xlabel("guidance weight w")
        ax.set_ylabel(what, fontsize=8)
    for ax in (axes[0], axes[2]):
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(ScalarFormatter())
        ax.tick_params(axis="y", which="minor", labelsize=6)
    axes[0].legend(fontsize=7, title="* chosen on validation", title_fontsize=7)
    fig.suptitle(f"Guidance weight, {result['per_class']} per class per draw (simulated Sun: upper bounds)", fontsize=9)
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pools", type=Path, nargs="+", help="pool_draws.json of each guidance weight")
    p.add_argument("--out", type=Path, default=Path("."), help="folder for guidance_sweep.json and .png (default: here)")
    args = p.parse_args()
    result = sweep(read_pools(args.pools), args.pools)
    for g in result["generators"]:
        log(f"{g['name']}: validation FD (mean of judges) "
            + ", ".join(f"w {r['guidance']:g}: {r['fd_ratio_class_matched_mean']:.2f}" for r in g["by_guidance"])
            + f"; chosen w = {g['chosen_guidance']:g}"
            + (f" (tied within {TIE_STDS:g} stds of the paired difference: w = "
               + ", ".join(f"{w:g}" for w in g["tied_with_chosen"]) + ")" if g["tied_with_chosen"] else ""))
    args.out.mkdir(parents=True, exist_ok=True)
    emit(result, args.out, "guidance_sweep")
    plot(result, args.out / "guidance_sweep.png")


if __name__ == "__main__":
    main_wrapper(main)
