"""Training throughput and memory: flaresynth's loop against a plain PyTorch/diffusers loop, and the ceiling.

For each preset of ``--presets`` (default ``demo,paper``), on the same dataset, in one run:

* ``flaresynth``: :func:`flaresynth.train.train` for ``warmup + steps`` optimiser steps with ``log_every: 1``,
  no periodic checkpoints or grids; the seconds of each step come from its ``log.jsonl`` (which already
  excludes checkpoint and grid time), the first ``warmup`` steps are dropped.
* ``reference``: a plain loop written here: diffusers ``UNet2DModel`` built from the same model config
  (same parameter count, checked), ``DDPMScheduler.add_noise``, ε-MSE, ``AdamW`` with the preset's lr and betas,
  the same RAM tensor of training images at the model's resolution, the same batch, 10 % label dropout to the
  null class; no EMA, no accelerate, no min-SNR, no gradient clipping, no logging.

Each case runs in its own subprocess, so ``peak_rss_mb`` (``ru_maxrss``) is that case's peak;
``rss_before_mb`` is the process after its imports, before data, model and optimiser. The ratio
``flaresynth_over_reference`` is images/s of flaresynth over images/s of the reference (target >= 1.0). To
explain a ratio below 1, the reference case also times, on the same model, what flaresynth adds per step: the
EMA update (diffusers ``EMAModel.step`` as flaresynth configures it, ``foreach=False``, and with
``foreach=True``) and the gradient-norm clipping; ``unexplained_ms`` is the rest (accelerate's wrappers,
min-SNR weights, the conditioner, batch assembly by ``batch_indices``, the per-step log line).

Settings (first preset only, reference loop): ``torch.compile`` of the U-Net (steady-state s/step and the
compile time, the extra time of the warm-up steps, with a fresh inductor cache so it is a cold compile), 1 thread instead of ``--threads``, and a
``torch.utils.data.DataLoader`` over the RAM tensor with 0 and 1 worker processes instead of indexing it.

Ceiling: FLOPs of one training step (forward + backward at the preset's batch) counted by
``torch.utils.flop_counter.FlopCounterMode`` over this machine's measured float32 rate at ``--threads``:
``matmul_gflops`` (best of 5 products of 2048x2048 matrices) and ``conv_gflops`` (a 3x3 convolution with 256
channels, oneDNN), ``peak_gflops`` the larger — on this AMD EPYC the convolution runs ~2.5x faster than the
matmul, so a matmul-only ceiling would sit below what the U-Net achieves. The ceiling is the minimum
possible seconds per step; ``achieved_over_ceiling`` = ceiling / measured (1.0: the whole step at peak rate).

Usage: ``python benchmarks/train_throughput.py [--data DS] [--presets demo,paper] [--no-compile]``
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from common import (
    LoadMonitor,
    base_parser,
    ceiling,
    current_rss_mb,
    emit,
    figure,
    log,
    machine_info,
    main_wrapper,
    peak_rates,
    peak_rss_mb,
    resolve_data,
    setup,
    subtitle,
    train_step_flops,
)

#: (steps timed, warm-up steps dropped) per preset
STEPS = {"demo": (30, 5), "paper": (6, 2), "paper128": (4, 2), "tiny": (3, 1)}


# ----------------------------------------------------------------------------------------------- the child
def plain_unet(cfg, in_channels: int, n_classes: int):
    """A diffusers UNet2DModel with the config's architecture, written out here (not flaresynth's factory)."""
    from diffusers import UNet2DModel

    m = cfg.model
    levels = [m.sample_size // 2**i for i in range(len(m.block_out_channels))]
    down = tuple("AttnDownBlock2D" if r in m.attention_resolutions else "DownBlock2D" for r in levels)
    up = tuple(d.replace("Down", "Up") for d in reversed(down))
    return UNet2DModel(sample_size=m.sample_size, in_channels=in_channels, out_channels=in_channels,
                       block_out_channels=tuple(m.block_out_channels), layers_per_block=m.layers_per_block,
                       down_block_types=down, up_block_types=up, attention_head_dim=m.attention_head_dim,
                       norm_num_groups=m.norm_num_groups, dropout=m.dropout, add_attention=m.mid_attention,
                       num_class_embeds=n_classes + 1)


def _time_ms(fn, repeats: int = 10) -> float:
    fn()
    t = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return float(np.median(t)) * 1e3


def reference_case(case: dict, cfg, ds) -> dict:
    import torch
    from diffusers import DDPMScheduler

    from flaresynth.train import load_training_data, per_process_batch, resolve_for_dataset

    cfg = resolve_for_dataset(cfg, ds)
    data = load_training_data(ds, cfg)
    images, labels = data["images"], data["cond"].labels
    n, k = len(images), len(ds.classes)
    t = cfg.train
    d = cfg.diffusion
    torch.manual_seed(t.seed)
    unet = plain_unet(cfg, cfg.model.in_channels, k)
    n_params = sum(p.numel() for p in unet.parameters())
    opt = torch.optim.AdamW(unet.parameters(), lr=t.lr, betas=(t.adam_beta1, t.adam_beta2), weight_decay=t.weight_decay)
    sched = DDPMScheduler(num_train_timesteps=d.num_train_timesteps, beta_schedule=d.beta_schedule,
                          beta_start=d.beta_start, beta_end=d.beta_end)
    model = torch.compile(unet) if case.get("compile") else unet
    g = torch.Generator().manual_seed(t.seed)
    b = per_process_batch(t, 1)  # the paper preset gives train.global_batch instead
    loader_iter = None
    if case.get("loader") == "dataloader":
        from torch.utils.data import DataLoader, TensorDataset

        workers = int(case.get("workers", 0))
        loader = DataLoader(TensorDataset(images, labels), batch_size=b, shuffle=True, drop_last=True,
                            num_workers=workers, persistent_workers=workers > 0, generator=g)

        def batches():
            while True:
                yield from loader

        loader_iter = batches()
    times = []
    model.train()
    for _ in range(case["warmup"] + case["steps"]):
        t0 = time.perf_counter()
        if loader_iter is not None:
            x0, y = next(loader_iter)
        else:
            rows = torch.randint(0, n, (b,), generator=g)
            x0, y = images[rows], labels[rows]
        y = torch.where(torch.rand(b, generator=g) < cfg.conditioning.p_uncond, k, y)
        noise = torch.randn(x0.shape, generator=g)
        ts = torch.randint(0, d.num_train_timesteps, (b,), generator=g)
        pred = model(sched.add_noise(x0, noise, ts), ts, class_labels=y).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    result = {"parameters": n_params, "step_seconds": times}
    if case.get("overheads"):
        from diffusers.training_utils import EMAModel

        # what flaresynth adds per step, timed on this model (its gradients are those of the last step)
        pred = unet(sched.add_noise(x0, noise, ts), ts, class_labels=y).sample
        torch.nn.functional.mse_loss(pred, noise).backward()
        ema = EMAModel(unet.parameters(), decay=t.ema_decay, use_ema_warmup=t.ema_warmup, power=t.ema_power,
                       update_after_step=t.ema_update_after_step)
        ema_fe = EMAModel(unet.parameters(), decay=t.ema_decay, use_ema_warmup=t.ema_warmup, power=t.ema_power,
                          update_after_step=t.ema_update_after_step, foreach=True)
        result["overheads_ms"] = {
            "ema_step": _time_ms(lambda: ema.step(unet.parameters())),
            "ema_step_foreach": _time_ms(lambda: ema_fe.step(unet.parameters())),
            "grad_clip": _time_ms(lambda: torch.nn.utils.clip_grad_norm_(unet.parameters(), t.grad_clip or 1.0)),
        }
    return result


def flaresynth_case(case: dict, cfg, data_path: Path, workdir: Path) -> dict:
    from flaresynth.models.unet import count_parameters  # noqa: F401  (imported before the RSS baseline)
    from flaresynth.train import train

    cfg.train.steps = case["warmup"] + case["steps"]
    cfg.train.log_every = 1
    cfg.train.checkpoint_every = 0
    cfg.train.sample_every = 0
    out = workdir / f"throughput-{uuid.uuid4().hex[:8]}"
    try:
        train(data_path, out, cfg, max_steps=cfg.train.steps, progress=False, command=["train_throughput.py"])
        entries = [json.loads(ln) for ln in (out / "log.jsonl").read_text().splitlines() if ln.strip()]
        params = json.loads((out / "provenance.json").read_text())["parameters"]
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"parameters": params, "step_seconds": [e["seconds_per_step"] for e in entries]}


def run_case(case: dict) -> dict:
    """One case, in this (child) process; returns its measurements."""
    import torch

    torch.set_num_threads(int(case["threads"]))
    import diffusers  # noqa: F401
    from accelerate import Accelerator  # noqa: F401

    from flaresynth.config import load_preset
    from flaresynth.dataset import open_dataset
    from flaresynth.train import per_process_batch

    rss_before = current_rss_mb()
    cfg = load_preset(case["preset"])
    ds = open_dataset(case["data"])
    if case["loop"] == "flaresynth":
        r = flaresynth_case(case, cfg, Path(case["data"]), Path(case["workdir"]))
    else:
        r = reference_case(case, cfg, ds)
    steps = np.asarray(r.pop("step_seconds"), dtype=np.float64)
    w = int(case["warmup"])
    timed = steps[w:] if len(steps) > w else steps
    s = float(np.mean(timed))
    batch = per_process_batch(cfg.train, 1)
    return {**r, "batch": batch, "s_per_step": s, "s_per_step_median": float(np.median(timed)),
            "images_per_s": batch / s, "warmup_s": float(steps[:w].sum()), "steps_timed": int(len(timed)),
            "threads": torch.get_num_threads(), "rss_before_mb": rss_before, "peak_rss_mb": peak_rss_mb()}


# ----------------------------------------------------------------------------------------------- the parent
def spawn(case: dict) -> dict:
    """Run one case in a fresh interpreter; its JSON result (or the error)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(case["threads"]), MKL_NUM_THREADS=str(case["threads"]))
    if case.get("compile"):
        # a fresh inductor cache: compile_s is a cold compile, not a cache hit from an earlier run
        env["TORCHINDUCTOR_CACHE_DIR"] = str(Path(case["workdir"]) / f"inductor-{uuid.uuid4().hex[:8]}")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--case", json.dumps(case)],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        tail = "\n".join(r.stderr.strip().splitlines()[-5:])
        log(f"case {case['name']} failed:\n{tail}")
        return {"error": tail, "wall_s": time.perf_counter() - t0}
    result = json.loads(r.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - t0
    return result


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--case":
        print(json.dumps(run_case(json.loads(sys.argv[2]))))
        return
    p = base_parser(__doc__)
    p.add_argument("--presets", default="demo,paper", help="presets to time (default demo,paper)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per case (default per preset: demo 30, paper 6)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps dropped (default demo 5, paper 2)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile case (~2+ min of compiling)")
    args = p.parse_args()
    out = setup(args)
    monitor = LoadMonitor()
    presets = ["tiny"] if args.quick else [s.strip() for s in args.presets.split(",") if s.strip()]
    from flaresynth.errors import FlaresynthError

    if (args.steps is not None and args.steps < 1) or (args.warmup is not None and args.warmup < 0) or not presets:
        raise FlaresynthError("--steps: a whole number >= 1; --warmup: >= 0; --presets: at least one preset")
    data = resolve_data(args)
    args.workdir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="throughput-", dir=args.workdir))

    import torch

    from flaresynth.config import load_preset
    from flaresynth.dataset import open_dataset

    ds = open_dataset(data)
    rates = peak_rates(args.quick)
    gflops = rates["peak_gflops"]
    log(f"float32 matmul {rates['matmul_gflops']:.1f}, 3x3 conv {rates['conv_gflops']:.1f} GFLOP/s at "
        f"{torch.get_num_threads()} threads")
    result = {"benchmark": "train_throughput", "data": str(data), **rates, "presets": {}, "settings": {}}
    try:
        for i, preset in enumerate(presets):
            cfg = load_preset(preset)
            steps, warmup = STEPS.get(preset, (10, 2))
            steps, warmup = args.steps or steps, args.warmup if args.warmup is not None else warmup
            base = {"preset": preset, "data": str(data), "steps": steps, "warmup": warmup, "threads": args.threads,
                    "workdir": str(scratch)}
            fl = train_step_flops(cfg, int(ds.images.shape[1]), len(ds.classes))
            ceil_s = ceiling(fl["flops_per_step"], gflops)
            entry = {**fl, "ceiling_s_per_step": ceil_s, "steps": steps, "warmup": warmup}
            for loop in ("flaresynth", "reference"):
                log(f"{preset}: {loop} loop, {warmup}+{steps} steps")
                r = spawn({**base, "name": f"{preset}/{loop}", "loop": loop, "overheads": loop == "reference"})
                if "s_per_step" in r:
                    r["achieved_over_ceiling"] = ceil_s / r["s_per_step"]
                    r["achieved_gflops"] = fl["flops_per_step"] / r["s_per_step"] / 1e9
                    log(f"  {r['s_per_step']:.3f} s/step, {r['images_per_s']:.1f} images/s, peak {r['peak_rss_mb']:.0f} MB")
                entry[loop] = r
            fs, ref = entry["flaresynth"], entry["reference"]
            if "s_per_step" in fs and "s_per_step" in ref:
                entry["flaresynth_over_reference"] = fs["images_per_s"] / ref["images_per_s"]
                extra_ms = (fs["s_per_step"] - ref["s_per_step"]) * 1e3
                oh = ref.get("overheads_ms", {})
                entry["extra_ms_per_step"] = extra_ms
                entry["unexplained_ms"] = extra_ms - oh.get("ema_step", 0.0) - oh.get("grad_clip", 0.0)
                entry["same_parameters"] = fs["parameters"] == ref["parameters"]
            result["presets"][preset] = entry
            if i == 0:
                result["settings"] = settings_cases(base, args, ceil_s)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    load = monitor.report()
    result = {"benchmark": "train_throughput", "machine": machine_info(args.threads), "load": load, **result,
              "seconds_total": load["wall_s"]}
    result["plot"] = str(plot(result, out / "train_throughput.png"))
    emit(result, out, "train_throughput")


def settings_cases(base: dict, args, ceil_s: float) -> dict:
    """torch.compile, thread count and DataLoader variants of the reference loop (first preset)."""
    cases = {}
    if not args.quick:  # the smoke test calls the DataLoader path in-process instead (no extra interpreter)
        cases["reference_dataloader_workers0"] = {"loader": "dataloader", "workers": 0}
        cases["reference_dataloader_workers1"] = {"loader": "dataloader", "workers": 1}
        if args.threads != 1:
            cases["reference_threads1"] = {"threads": 1}
        if not args.no_compile:
            cases["reference_compiled"] = {"compile": True, "warmup": max(base["warmup"], 3)}
    out = {}
    for name, extra in cases.items():
        log(f"{base['preset']}: {name}")
        r = spawn({**base, "name": name, "loop": "reference", **extra})
        if "s_per_step" in r:
            r["achieved_over_ceiling"] = ceil_s / r["s_per_step"]
            log(f"  {r['s_per_step']:.3f} s/step")
        if extra.get("compile") and "warmup_s" in r:
            # the warm-up steps' time beyond what they would take compiled: the compilation
            r["compile_s"] = r["warmup_s"] - r["s_per_step"] * extra["warmup"]
        out[name] = {**extra, **r}
    return out


def plot(result: dict, path):
    fig, (ax1, ax2) = figure(2)
    names, vals, ceil = [], [], []
    for preset, e in result["presets"].items():
        for loop in ("flaresynth", "reference"):
            if "s_per_step" in e.get(loop, {}):
                names.append(f"{preset}\n{loop}")
                vals.append(e[loop]["s_per_step"])
                ceil.append(e["ceiling_s_per_step"])
    x = np.arange(len(names))
    ax1.bar(x, vals, label="measured")
    ax1.scatter(x, ceil, marker="_", s=400, c="red", label="FLOP ceiling", zorder=3)
    ax1.set_xticks(x, names, fontsize=7)
    ax1.set_yscale("log")
    ax1.set_ylabel("seconds per training step")
    ax1.legend(fontsize=7)
    first = next(iter(result["presets"]), None)
    labels, v = [], []
    if first and "s_per_step" in result["presets"][first].get("reference", {}):
        labels.append("reference")
        v.append(result["presets"][first]["reference"]["s_per_step"])
    for name, r in result["settings"].items():
        if "s_per_step" in r:
            labels.append(name.replace("reference_", ""))
            v.append(r["s_per_step"])
    ax2.barh(np.arange(len(v)), v)
    ax2.set_yticks(np.arange(len(v)), labels, fontsize=7)
    ax2.set_xlabel(f"seconds per step ({first} preset, reference loop)")
    fig.suptitle(f"Training throughput\n{subtitle(result['machine'], result['load'])}", fontsize=9)
    fig.savefig(path, dpi=110)
    return path


if __name__ == "__main__":
    main_wrapper(main)
