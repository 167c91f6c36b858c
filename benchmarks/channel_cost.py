"""Cost per optimiser step of the latent route on several AIA channels against one (issue 16).

Two datasets of the same image size: ``--data`` (one channel, e.g. ``dataset build --channel 171A``) and
``--data-multi`` (several, e.g. ``dataset build --channels 94A,131A,171A,193A,211A``), made from the same
simulated Sun. For each, in this process and in the order AE(1), AE(C), LDM(1), LDM(C) (so a change of the
machine's load hits both channel counts alike):

* ``autoencoder-demo`` (``--ae-preset``) trained ``warmup + steps`` optimiser steps: diffusers
  ``AutoencoderKL`` with ``in_channels`` = ``out_channels`` = the dataset's channel count;
* ``demo64-latent`` (``--ldm-preset``) trained as long in the latents of the autoencoder just trained (its
  quality does not matter for the cost; the latent has the autoencoder's ``latent_channels`` whatever the image
  channels, so only the one-off encoding of the training split into the cache depends on C).

Each run has ``log_every: 1`` and no periodic checkpoints or grids; seconds per step come from its
``log.jsonl`` (which excludes checkpoint and grid time), the first ``warmup`` steps dropped. Reported per case:
median and mean s/step, parameters, batch, the run's wall time (start-up, latent encoding, the autoencoder's
end-of-training reconstruction benchmark included), the load (:class:`common.LoadMonitor`), and
``full_training_h`` = median s/step × the preset's ``train.steps`` / 3600. ``ratio_multi_over_one`` divides
the C-channel median by the one-channel median.

Usage: ``python benchmarks/channel_cost.py --data DS1 --data-multi DS5 [--steps 20] [--warmup 3]``
(``--quick``: the tiny presets, seconds; numbers mean nothing).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from common import LoadMonitor, base_parser, emit, log, machine_info, main_wrapper, setup


def train_case(preset: str, data: Path, out: Path, steps: int, autoencoder: Path | None = None) -> dict:
    """Train ``preset`` on ``data`` for ``steps`` optimiser steps into ``out``; its per-step seconds and sizes."""
    from flaresynth.config import load_preset
    from flaresynth.dataset import open_dataset
    from flaresynth.train import train

    cfg = load_preset(preset)
    planned = int(cfg.train.steps)
    cfg.train.steps = steps
    cfg.train.log_every = 1
    cfg.train.checkpoint_every = 0
    cfg.train.sample_every = 0
    monitor = LoadMonitor()
    train(data, out, cfg, max_steps=steps, progress=False, autoencoder=autoencoder, command=["channel_cost.py"])
    entries = [json.loads(ln) for ln in (out / "log.jsonl").read_text().splitlines() if ln.strip()]
    prov = json.loads((out / "provenance.json").read_text())
    return {"preset": preset, "channels": list(open_dataset(data).channels), "planned_steps": planned,
            "batch": int(prov["images_per_step"]), "parameters": int(prov["parameters"]),
            "step_seconds": [e["seconds_per_step"] for e in entries if "seconds_per_step" in e],
            "load": monitor.report()}


def summarise(case: dict, warmup: int) -> dict:
    """Median/mean s/step after the warm-up steps and the full-training estimate."""
    steps = np.asarray(case.pop("step_seconds"), dtype=np.float64)
    timed = steps[warmup:] if len(steps) > warmup else steps
    med = float(np.median(timed))
    return {**case, "steps_timed": int(len(timed)), "s_per_step_median": med, "s_per_step_mean": float(np.mean(timed)),
            "s_per_step_min": float(np.min(timed)), "s_per_step_max": float(np.max(timed)),
            "full_training_h": med * case["planned_steps"] / 3600.0}


def main() -> None:
    p = base_parser(__doc__)
    p.add_argument("--data-multi", type=Path, required=True, help="dataset of several channels (same image size as --data)")
    p.add_argument("--ae-preset", default="autoencoder-demo")
    p.add_argument("--ldm-preset", default="demo64-latent")
    p.add_argument("--steps", type=int, default=20, help="timed optimiser steps per case (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed first steps per case (default 3)")
    args = p.parse_args()
    from flaresynth.dataset import open_dataset
    from flaresynth.errors import FlaresynthError

    if args.data is None:
        raise FlaresynthError("--data: a one-channel dataset folder is needed (beside --data-multi)")
    if args.quick:
        args.ae_preset, args.ldm_preset, args.steps, args.warmup = "autoencoder-tiny", "tiny-latent", 2, 1
    out = setup(args)
    one, multi = open_dataset(args.data), open_dataset(args.data_multi)
    if one.images.shape[1] != 1 or multi.images.shape[1] < 2 or one.images.shape[-1] != multi.images.shape[-1]:
        raise FlaresynthError(f"--data {one.path} ({one.images.shape[1]} channel(s), {one.images.shape[-1]} px) and "
                              f"--data-multi {multi.path} ({multi.images.shape[1]}, {multi.images.shape[-1]} px): "
                              "expected one channel and several, at the same size")
    work = Path(args.workdir) / "channel_cost"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    monitor = LoadMonitor()
    total = args.warmup + args.steps
    cases = {}
    try:
        for tag, ds in (("1", one), ("multi", multi)):
            log(f"{args.ae_preset} on {', '.join(ds.channels)}: {total} steps")
            cases[f"ae_{tag}"] = train_case(args.ae_preset, ds.path, work / f"ae_{tag}", total)
        for tag, ds in (("1", one), ("multi", multi)):
            log(f"{args.ldm_preset} on {', '.join(ds.channels)}: {total} steps")
            cases[f"ldm_{tag}"] = train_case(args.ldm_preset, ds.path, work / f"ldm_{tag}", total,
                                             autoencoder=work / f"ae_{tag}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cases = {k: summarise(v, args.warmup) for k, v in cases.items()}
    result = {
        "machine": machine_info(), "data": str(one.path), "data_multi": str(multi.path),
        "channels_multi": list(multi.channels), "image_size": int(multi.images.shape[-1]),
        "steps": args.steps, "warmup": args.warmup, "cases": cases,
        "ratio_multi_over_one": {kind: cases[f"{kind}_multi"]["s_per_step_median"] / cases[f"{kind}_1"]["s_per_step_median"]
                                 for kind in ("ae", "ldm")},
        "load": monitor.report(),
    }
    emit(result, out, "channel_cost")


if __name__ == "__main__":
    main_wrapper(main)
