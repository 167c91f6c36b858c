"""Flux fidelity of a continuous generator: ask for XRS-B fluxes, read each image's flux back; prints JSON.

The request is the one a user types (``flaresynth sample --run RUN --flux 3e-8,3e-7,3e-6,3e-5,3e-4
--per-class 12 --seed 0 --sampler ddim --steps 20``); each generated image is mapped back to DN/s with the
run's inverse intensity transform and its flux read by the independent physical referee
(:mod:`flaresynth.metrics.referee`) fitted on the dataset's training split. Per requested flux:

* ``median_error_dex``: median |log10(referee flux) − log10(requested flux)| over the generated images, and
  ``median_bias_dex`` the median of the signed difference (> 0: the images look brighter than asked);
* ``referee_real_error_dex``: the referee's own median error on **real test frames** whose true flux lies
  within ``--band`` dex of the request (``n_real`` of them): what a perfect generator would score, since the
  referee is not perfect either. Where the test split has fewer than 3 such frames (the rare M and X fluxes),
  the frames of every split in the band stand in (``real_frames_from``: ``"all splits"``; the referee has seen
  the training ones, so its error there is a lower bound and the target stricter); None below 3 in all;
* ``excess_dex`` = the first minus the second, and ``in_training_range`` (the request lies between the
  training split's lowest and highest flux); ``passes``: excess ≤ ``--target`` dex (issue target 0.1), or,
  with no reference at all, a median error ≤ ``--fallback-error`` (0.3 dex: the issue's bound with this
  referee); ``meets_target``: every request inside the training range passes (none is waved through);
* for a latent run, ``referee_autoencoder_error_dex``: the referee's median error on the SAME real frames after
  the run's autoencoder has encoded (posterior mean) and decoded them. A latent generator can be no sharper
  than its autoencoder, so this is what a perfect latent generator would score: when it is already far above
  ``referee_real_error_dex``, the flux is lost in the autoencoder, not in the diffusion model;
* ``readback_flux_p10`` / ``_p50`` / ``_p90``: the referee's readings of the generated images, and at the top
  level ``referee_unresolved``: neighbouring requests whose median readings lie within ``--resolution`` dex of
  each other. The referee is a tree ensemble fitted on a split with few M and X frames, so above some flux it
  reads many images alike (a plateau): there a pass says that the images look like *some* large flare, not that
  they follow the requested flux, and the log says which requests it could not tell apart.

The referee applies only where the dataset's images come from the simulated Sun (``--referee auto``): then
every number here is a statement about that testbed, not about the real Sun.

``--checkpoint RUN/checkpoints/step-N`` scores that checkpoint's EMA weights instead of the run's final
``model/`` (how flux fidelity moves with training). ``--timesteps 999,759,499,259`` samples at those timesteps
of the sampler (a student's grid points, say; default the run's ``sample.timesteps``); the JSON records the
timesteps and the guidance interval the images were drawn at.

One draw of 12 images per request is noisy (a request can pass on one seed and fail on the next):
``--seeds 0,1000,2000,3000`` scores one draw per seed against the same referee, writes each into ``OUT/seed-S/`` and
the per-request means over draws, the draws passing and the verdict on the mean into ``OUT/flux_fidelity_pooled.json``.

Usage: ``python benchmarks/flux_fidelity.py --data DS [--run demo:continuous] [--fluxes 3e-8,...] [--seeds 0,1000]``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from common import (
    LoadMonitor,
    base_parser,
    check_sampling_args,
    emit,
    log,
    machine_info,
    main_wrapper,
    model_from_checkpoint,
    parse_seeds,
    parse_timesteps,
    real_at_size,
    referee_applies,
    resolve_data,
    setup,
)

DEFAULT_FLUXES = "3e-8,3e-7,3e-6,3e-5,3e-4"


def parse_fluxes(text: str) -> list[float]:
    """``3e-8,3e-7`` -> [3e-8, 3e-7]; a value that is not a positive number is a one-line error."""
    from flaresynth.errors import FlaresynthError

    out = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise FlaresynthError(f"--fluxes: {part!r} is not a number (expected e.g. {DEFAULT_FLUXES})") from None
        if not np.isfinite(value) or value <= 0:
            raise FlaresynthError(f"--fluxes: {part!r}: expected a positive flux in W/m²")
        out.append(value)
    return out


def dex(estimated: np.ndarray, true: np.ndarray) -> np.ndarray:
    """log10 estimate − log10 truth (signed, dex)."""
    return np.log10(estimated) - np.log10(true)


def per_flux_errors(requested: np.ndarray, estimated: np.ndarray, fluxes: list[float]) -> list[np.ndarray]:
    """log10 estimate − log10 request (signed) of the images of each requested flux."""
    err = dex(estimated, requested)
    return [err[np.isclose(requested, f, rtol=1e-6)] for f in fluxes]


def unresolved_requests(fluxes: list[float], median_readback: list[float], resolution: float) -> list[list[float]]:
    """Pairs of neighbouring requests (in flux order) whose median read-back fluxes lie within ``resolution`` dex:
    the referee does not tell them apart, whatever the generator drew."""
    order = np.argsort(fluxes)
    read = np.log10(np.asarray(median_readback, dtype=np.float64)[order])
    return [[float(fluxes[a]), float(fluxes[b])] for a, b, gap in zip(order[:-1], order[1:], np.diff(read), strict=True)
            if abs(gap) < resolution]


def reference_frames(true_flux: np.ndarray, in_test: np.ndarray, flux: float, band: float,
                     minimum: int = 3) -> tuple[np.ndarray, str | None]:
    """Indices of the real frames the referee's own error at ``flux`` is measured on, and where they come from.

    The test frames within ``band`` dex of the request (``"test"``); where fewer than ``minimum`` are (the rare
    M and X fluxes), the frames of every split within the band (``"all splits"``: the referee has seen the
    training ones, so its error there is a lower bound, which makes the generator's target stricter, not
    looser); ``(empty, None)`` when even those are too few.
    """
    near = np.abs(np.log10(true_flux) - np.log10(flux)) <= band
    if (near & in_test).sum() >= minimum:
        return np.flatnonzero(near & in_test), "test"
    if near.sum() >= minimum:
        return np.flatnonzero(near), "all splits"
    return np.flatnonzero(near & in_test), None


def main() -> None:
    p = base_parser(__doc__, run=True)
    p.set_defaults(run="demo:continuous")
    p.add_argument("--fluxes", default=DEFAULT_FLUXES, help=f"requested XRS-B fluxes, W/m² (default {DEFAULT_FLUXES})")
    p.add_argument("--per-class", type=int, default=12, help="images per requested flux (default 12)")
    p.add_argument("--sampler", default="ddim", help="sampler (default ddim)")
    p.add_argument("--steps", type=int, default=20, help="sampler steps (default 20)")
    p.add_argument("--guidance", type=float, default=None, help="CFG weight w (default: the run's)")
    p.add_argument("--timesteps", default=None,
                   help="comma-separated timesteps the sampler steps at (e.g. 999,759,499,259 for a student; default: "
                        "the run's sample.timesteps when its own sampler runs at its own steps, else the sampler's own)")
    p.add_argument("--band", type=float, default=0.25, help="real frames within this many dex of a request (default 0.25)")
    p.add_argument("--target", type=float, default=0.1, help="allowed excess over the referee's own error, dex")
    p.add_argument("--fallback-error", type=float, default=0.3,
                   help="allowed median error where no real frames lie near a request, dex (default 0.3)")
    p.add_argument("--resolution", type=float, default=0.02,
                   help="neighbouring requests read within this many dex are reported as unresolved (default 0.02)")
    p.add_argument("--checkpoint", default=None,
                   help="a checkpoint folder of --run (RUN/checkpoints/step-N): score its EMA weights")
    p.add_argument("--seeds", default=None,
                   help="comma-separated seeds of several draws (e.g. 0,1000,2000,3000): each draw's result goes to "
                        "OUT/seed-S/, the per-request means over draws to OUT/flux_fidelity_pooled.json and stdout "
                        "(default: one draw, of --seed)")
    p.add_argument("--no-decoder-noise", action="store_true",
                   help="a latent run's images without its autoencoder's decoder noise model (flaresynth sample "
                        "--no-decoder-noise; the shipped generators' images until session 50)")
    args = p.parse_args()
    out = setup(args)
    monitor = LoadMonitor()  # a draw's seconds_total counts from here: the referee's fit and every draw before it
    check_sampling_args(args)
    fluxes = parse_fluxes(args.fluxes)
    draw_seeds = parse_seeds(args.seeds, "--seeds") if args.seeds is not None else [args.seed]

    from flaresynth.dataset import open_dataset
    from flaresynth.errors import FlaresynthError
    from flaresynth.evaluate import REFEREE_CHANNEL, fit_split_referee
    from flaresynth.runs import open_run

    if not args.resolution >= 0:
        raise FlaresynthError(f"--resolution {args.resolution}: expected a distance in dex >= 0")
    if not draw_seeds or len(set(draw_seeds)) != len(draw_seeds):
        raise FlaresynthError(f"--seeds {args.seeds}: expected distinct seeds (the same seed twice is the same draw)")
    timesteps = parse_timesteps(args.timesteps)
    ds = open_dataset(resolve_data(args))
    model = (model_from_checkpoint(Path(args.run), Path(args.checkpoint), ds) if args.checkpoint
             else open_run(args.run, "cpu"))
    if model.conditioning != "continuous":
        raise FlaresynthError(f"--run {args.run}: conditioning {model.conditioning!r}; flux requests need a "
                              "continuous (log-flux) generator")
    applies, why = referee_applies(ds, args.referee)
    if not applies:
        raise FlaresynthError(f"referee does not apply to {ds.path}: {why}")
    size = int(model.image_shape[-1])
    real = real_at_size(ds, size)
    referee = fit_split_referee(ds, real)
    # the referee reads 171 Å (found by name, as flaresynth evaluate does), whatever the other channels are
    if REFEREE_CHANNEL not in ds.channels or list(ds.channels) != model.channels:
        raise FlaresynthError(f"{ds.path}: channels {', '.join(ds.channels)}; the referee needs {REFEREE_CHANNEL} "
                              f"and the run's channels ({', '.join(model.channels)})")
    ref = prepare_reference(ds, model, real, referee, ds.channels.index(REFEREE_CHANNEL))
    if len(draw_seeds) == 1:
        emit(draw(model, ref, fluxes, draw_seeds[0], timesteps, args, monitor), out, "flux_fidelity")
        return
    draws = []
    for i, seed in enumerate(draw_seeds):
        log(f"draw {i + 1} of {len(draw_seeds)}: seed {seed}")
        draws.append(draw(model, ref, fluxes, seed, timesteps, args, monitor))
        folder = out / f"seed-{seed}"
        folder.mkdir(exist_ok=True)
        emit(draws[-1], folder, "flux_fidelity", echo=False)
    emit(pool_flux_draws(draws, args.target), out, "flux_fidelity_pooled")


@dataclass
class Reference:
    """What every draw is scored against, prepared once: the dataset (path, hash), the referee and the channel it
    reads, the labelled real frames' true flux, whether each is a test frame, the referee's readings of them
    (``real_est``) and of their autoencoder reconstructions (``rec_est``, None for a pixel run), and the training
    split's fluxes."""

    data: str
    data_hash: str | None
    referee: object
    channel: int
    true_flux: np.ndarray
    in_test: np.ndarray
    real_est: np.ndarray
    rec_est: np.ndarray | None
    train_flux: np.ndarray


def prepare_reference(ds, model, real: np.ndarray, referee, channel: int) -> Reference:
    """The :class:`Reference` of ``ds``'s labelled frames (``real``: every frame at the model's size)."""
    transform = ds.transforms()[channel]
    all_flux = ds.labels["label_flux"].to_numpy(dtype=np.float64)
    labelled = np.flatnonzero(np.isfinite(all_flux) & (all_flux > 0))
    real_labelled = np.asarray(real[labelled], dtype=np.float32)
    rec_est = None
    if model.autoencoder is not None:
        import torch

        from flaresynth.models.autoencoder import decode, encode_means

        rec = decode(model.autoencoder, encode_means(model.autoencoder, torch.from_numpy(real_labelled))).numpy()
        rec_est = referee.estimate_flux(transform.inverse(rec[:, channel]))
    train_flux = all_flux[ds.split_indices("train")]
    return Reference(data=str(ds.path), data_hash=ds.manifest.get("data_hash"), referee=referee, channel=channel,
                     true_flux=all_flux[labelled], in_test=np.isin(labelled, ds.split_indices("test")),
                     real_est=referee.estimate_flux(transform.inverse(real_labelled[:, channel])), rec_est=rec_est,
                     train_flux=train_flux[np.isfinite(train_flux) & (train_flux > 0)])


def score_requests(ref: Reference, fluxes: list[float], requested: np.ndarray, gen_est: np.ndarray, args) -> list[dict]:
    """One row per requested flux: the generated images' median error beside the referee's own on real frames near
    that flux (and on their autoencoder reconstructions), and whether the request passes."""
    rows = []
    lo, hi = ref.train_flux.min(), ref.train_flux.max()
    for f, gen_err in zip(fluxes, per_flux_errors(requested, gen_est, fluxes), strict=True):
        frames, source = reference_frames(ref.true_flux, ref.in_test, f, args.band)
        real_err = np.abs(dex(ref.real_est[frames], ref.true_flux[frames]))
        real_med = float(np.median(real_err)) if source else None
        ae = (float(np.median(np.abs(dex(ref.rec_est[frames], ref.true_flux[frames]))))
              if source and ref.rec_est is not None else None)
        med = float(np.median(np.abs(gen_err)))
        readback = f * 10.0 ** np.percentile(gen_err, [10, 50, 90])
        inside = bool(lo <= f <= hi)
        rows.append({"requested_flux": f, "n_images": int(len(gen_err)), "median_error_dex": med,
                     "median_bias_dex": float(np.median(gen_err)),
                     "referee_real_error_dex": real_med, "n_real": int(len(real_err)), "real_frames_from": source,
                     "excess_dex": None if real_med is None else med - real_med, "in_training_range": inside,
                     "referee_autoencoder_error_dex": ae,
                     "readback_flux_p10": float(readback[0]), "readback_flux_p50": float(readback[1]),
                     "readback_flux_p90": float(readback[2]),
                     "passes": None if not inside else (med <= args.fallback_error if real_med is None
                                                        else med - real_med <= args.target)})
        log(f"{f:.0e} W/m²: median error {med:.2f} dex over {len(gen_err)} images; referee on {len(real_err)} real "
            f"frames {'-' if real_med is None else f'{real_med:.2f}'} dex"
            f"{'' if ae is None else f', on their autoencoder reconstructions {ae:.2f} dex'}"
            f"{'' if inside else ' (outside the training range)'}")
    return rows


def draw(model, ref: Reference, fluxes: list[float], seed: int, timesteps, args, monitor: LoadMonitor) -> dict:
    """One draw: the requests sampled with ``seed``, each image's flux read back by the referee, scored."""
    from flaresynth.samples import open_samples
    from flaresynth.sampling import RUN_CONFIG, sample, sample_settings

    log(f"sampling {len(fluxes)} fluxes x {args.per_class} images from {model.model_id} "
        f"({args.sampler} {args.steps} steps)")
    with tempfile.TemporaryDirectory(dir=args.workdir if Path(args.workdir).is_dir() else None) as tmp:
        folder = sample(model, Path(tmp) / "samples", fluxes=fluxes, per_class=args.per_class, sampler=args.sampler,
                        steps=args.steps, guidance=args.guidance, seed=seed, batch_size=args.batch_size,
                        fits=False, grid=False, timesteps=RUN_CONFIG if timesteps is None else timesteps,
                        decoder_noise=not args.no_decoder_noise)
        gs = open_samples(folder)
        images = np.asarray(gs.images[:, ref.channel], dtype=np.float32)
        requested = gs.table["requested_flux"].to_numpy(dtype=np.float64)
        how = {k: gs.manifest.get(k) for k in ("timesteps", "guidance_t_max")}  # the run's own when not given
        how["decoder_noise"] = bool(gs.manifest.get("latent", {}).get("decoder_noise", False))
    gen_est = ref.referee.estimate_flux(model.transforms()[ref.channel].inverse(images))
    rows = score_requests(ref, fluxes, requested, gen_est, args)
    unresolved = unresolved_requests(fluxes, [r["readback_flux_p50"] for r in rows], args.resolution)
    for a, b in unresolved:
        log(f"the referee reads the images asked at {a:.0e} and {b:.0e} W/m² alike (medians within "
            f"{args.resolution} dex): there it does not resolve the requested flux")
    judged = [r for r in rows if r["in_training_range"]]
    load = monitor.report()
    return {
        "benchmark": "flux_fidelity",
        "machine": machine_info(args.threads),
        "load": load,
        "run": str(model.path),
        "checkpoint": args.checkpoint,
        "model_id": model.model_id,
        "data": ref.data,
        "data_hash": ref.data_hash,
        "sampler": args.sampler,
        "steps": args.steps,
        **how,
        "guidance": sample_settings(model.meta, args.sampler, args.steps, args.guidance)[2],
        "seed": seed,
        "per_flux": args.per_class,
        "band_dex": args.band,
        "target_excess_dex": args.target,
        "training_flux_range": [float(ref.train_flux.min()), float(ref.train_flux.max())],
        "rows": rows,
        "resolution_dex": args.resolution,
        "referee_unresolved": unresolved,
        "median_error_dex_all": float(np.median(np.abs(dex(gen_est, requested)))),
        "fallback_error_dex": args.fallback_error,
        "meets_target": bool(judged) and all(r["passes"] for r in judged),
        "note": "simulated Sun: the referee and every number here describe the testbed, not the real Sun",
        "seconds_total": load["wall_s"],
    }


def pool_flux_draws(draws: list[dict], target: float) -> dict:
    """Per request, the draws' median errors and excesses, their means, how many draws pass, and whether the
    mean passes (excess <= ``target``; with no real reference, the mean median error <= the fallback bound)."""
    rows = []
    for i, first in enumerate(draws[0]["rows"]):
        per = [d["rows"][i] for d in draws]
        errors = [r["median_error_dex"] for r in per]
        excess = None if first["excess_dex"] is None else [r["excess_dex"] for r in per]
        mean_error = float(np.mean(errors))
        mean_excess = None if excess is None else float(np.mean(excess))
        passes = None if not first["in_training_range"] else (
            mean_error <= draws[0]["fallback_error_dex"] if excess is None else mean_excess <= target)
        rows.append({"requested_flux": first["requested_flux"], "in_training_range": first["in_training_range"],
                     "referee_real_error_dex": first["referee_real_error_dex"], "n_real": first["n_real"],
                     "referee_autoencoder_error_dex": first["referee_autoencoder_error_dex"],
                     "median_error_dex_per_draw": errors, "median_error_dex_mean": mean_error,
                     "excess_dex_per_draw": excess, "excess_dex_mean": mean_excess,
                     "draws_passing": sum(bool(r["passes"]) for r in per), "passes_on_mean": passes})
        log(f"{first['requested_flux']:.0e} W/m²: median error {mean_error:.2f} dex on the mean of {len(draws)} draws"
            + ("" if excess is None else f", excess {mean_excess:+.2f} dex") + f"; {rows[-1]['draws_passing']} of "
            f"{len(draws)} draws pass")
    judged = [r for r in rows if r["in_training_range"]]
    keep = ("run", "model_id", "data", "data_hash", "sampler", "steps", "timesteps", "guidance_t_max", "guidance",
            "per_flux", "band_dex", "target_excess_dex", "fallback_error_dex")
    return {"benchmark": "flux_fidelity_pooled", **{k: draws[0].get(k) for k in keep},
            "seeds": [d["seed"] for d in draws], "rows": rows,
            "meets_target_on_mean": bool(judged) and all(r["passes_on_mean"] for r in judged),
            "note": draws[0]["note"]}


if __name__ == "__main__":
    main_wrapper(main)
