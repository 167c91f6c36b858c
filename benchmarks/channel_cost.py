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
end-of-training reconstruction benchmark included), the load of each repeat (:class:`common.LoadMonitor`),
``flops_per_step`` (forward + backward, counted as :func:`common.train_step_flops` does: a load-independent
measure) and ``full_training_h`` = median s/step × the preset's ``train.steps`` / 3600. With ``--repeats R``
the four cases run R times in turn and the timed steps are pooled. ``ratio_multi_over_one`` divides the
C-channel median by the one-channel median, ``flops_ratio_multi_over_one`` the FLOPs.

Usage: ``python benchmarks/channel_cost.py --data DS1 --data-multi DS5 [--steps 20] [--warmup 3]``
(``--quick``: the tiny presets, seconds; numbers mean nothing).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from common import LoadMonitor, base_parser, emit, log, machine_info, main_wrapper, setup, train_step_flops


def autoencoder_step_flops(cfg, in_channels: int, batch: int) -> int:
    """FLOPs of one autoencoder training step (forward + backward) on ``in_channels`` channels, counted as
    :func:`common.train_step_flops` counts the U-Net's (convolutions, products, attention)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from flaresynth.models.autoencoder import LatentAutoencoder, build_autoencoder

    model = LatentAutoencoder(build_autoencoder(cfg.autoencoder, in_channels, cfg.model.sample_size))
    x = torch.randn(batch, in_channels, cfg.model.sample_size, cfg.model.sample_size)
    eps = torch.randn(batch, *model.latent_shape)
    with FlopCounterMode(display=False) as counter:
        rec, _, _ = model(x, eps)
        (rec - x).abs().mean().backward()
    return int(counter.get_total_flops())


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
    batch = int(prov["images_per_step"])
    ds = open_dataset(data)
    if cfg.kind == "autoencoder":
        flops = autoencoder_step_flops(cfg, int(ds.images.shape[1]), batch)
    else:  # the U-Net on the latents: its input is the autoencoder's latent channels, whatever the image's
        meta = json.loads((out / "model" / "flaresynth.json").read_text())
        flops = train_step_flops(cfg, int(meta["in_channels"]), len(ds.classes), batch)["flops_per_step"]
    return {"preset": preset, "channels": list(ds.channels), "planned_steps": planned, "batch": batch,
            "parameters": int(prov["parameters"]), "flops_per_step": flops,
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
    p.add_argument("--repeats", type=int, default=1, help="times the four cases run, alternating (default 1)")
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
    cases: dict = {}
    try:
        for rep in range(args.repeats):
            runs = {}
            for tag, ds in (("1", one), ("multi", multi)):
                log(f"[{rep + 1}/{args.repeats}] {args.ae_preset} on {', '.join(ds.channels)}: {total} steps")
                runs[f"ae_{tag}"] = train_case(args.ae_preset, ds.path, work / f"{rep}_ae_{tag}", total)
            for tag, ds in (("1", one), ("multi", multi)):
                log(f"[{rep + 1}/{args.repeats}] {args.ldm_preset} on {', '.join(ds.channels)}: {total} steps")
                runs[f"ldm_{tag}"] = train_case(args.ldm_preset, ds.path, work / f"{rep}_ldm_{tag}", total,
                                                autoencoder=work / f"{rep}_ae_{tag}")
            for name, r in runs.items():
                # pool the timed steps of every repeat; keep each repeat's load
                steps = r.pop("step_seconds")[args.warmup:]
                load = r.pop("load")
                c = cases.setdefault(name, {**r, "step_seconds": [], "loads": []})
                c["step_seconds"] += steps
                c["loads"].append(load)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cases = {k: summarise(v, 0) for k, v in cases.items()}
    result = {
        "machine": machine_info(), "data": str(one.path), "data_multi": str(multi.path),
        "channels_multi": list(multi.channels), "image_size": int(multi.images.shape[-1]),
        "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats, "cases": cases,
        "ratio_multi_over_one": {kind: cases[f"{kind}_multi"]["s_per_step_median"] / cases[f"{kind}_1"]["s_per_step_median"]
                                 for kind in ("ae", "ldm")},
        "flops_ratio_multi_over_one": {kind: cases[f"{kind}_multi"]["flops_per_step"] / cases[f"{kind}_1"]["flops_per_step"]
                                       for kind in ("ae", "ldm")},
        "load": monitor.report(),
    }
    emit(result, out, "channel_cost")


if __name__ == "__main__":
    main_wrapper(main)
