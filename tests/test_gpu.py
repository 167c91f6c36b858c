"""The check a GPU user runs first: ``python -m pytest -m gpu`` (README, "GPUs").

Every test here needs CUDA and is skipped without it; the two-GPU launch also needs two visible GPUs. They run
the paths a CPU machine cannot: a DDP run over NCCL and its resume on fewer GPUs, sampling and evaluation on
``cuda``. The same code paths on a CPU (gloo processes, a simulated longer CUDA RNG list, the optimiser state
loaded after ``prepare``, the world-size check) are tested in test_train.py and test_accelerate.py.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from flaresynth.config import load_preset, save_config
from flaresynth.dataset import open_dataset
from flaresynth.samples import write_samples
from flaresynth.train import DEBUG_RANK_DIR_ENV, latest_checkpoint, read_checkpoint
from toy import cli, make_dataset, one_line_error

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_two_gpu_nccl_launch_trains_one_model_and_resumes_on_one_gpu(tmp_path):
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("accelerate launcher not installed")
    ds = make_dataset(tmp_path / "ds")
    run, ranks = tmp_path / "run", tmp_path / "ranks"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="0,1",
               **{DEBUG_RANK_DIR_ENV: str(ranks)})
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           "-m", "flaresynth", "train", "--data", str(ds), "--out", str(run), "--preset", "tiny",
           "--max-steps", "2", "--device", "cuda", "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    info = [json.loads((ranks / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert [i["world_size"] for i in info] == [2, 2]
    assert info[0]["param_digest"] == info[1]["param_digest"]  # NCCL all-reduce kept one model
    assert info[0]["checkpoints_written"] == ["step-0000002"] and info[1]["checkpoints_written"] == []
    assert json.loads((run / "provenance.json").read_text())["sessions"][0]["device"].startswith("cuda")

    # the same run on one GPU: refused without the flag, then resumed (this crashed with IndexError when the
    # CUDA generator states of both GPUs were restored on one)
    one_gpu = dict(CUDA_VISIBLE_DEVICES="0")
    line = one_line_error(_cli_env(one_gpu, "train", "--data", str(ds), "--out", str(run), "--resume", "--device",
                                   "cuda", "--no-progress"))
    assert "saved by 2 process(es), this launch has 1" in line
    r = _cli_env({**one_gpu, DEBUG_RANK_DIR_ENV: str(tmp_path / "resumed")}, "train", "--data", str(ds), "--out",
                 str(run), "--resume", "--device", "cuda", "--allow-world-size-change", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    state = read_checkpoint(latest_checkpoint(run))
    assert state["step"] == 4 and state["world_size"] == 1
    # Adam's step counters stayed on the CPU through the resume (the state was loaded after prepare), so
    # AdamW reads no GPU scalar back per parameter per step; its moments are on the GPU with the weights
    resumed = json.loads((tmp_path / "resumed" / "rank0.json").read_text())
    assert resumed["optimizer_state_devices"] == {"exp_avg": ["cuda"], "exp_avg_sq": ["cuda"], "step": ["cpu"]}


def test_evaluate_on_cuda(tmp_path):
    ds = open_dataset(make_dataset(tmp_path / "ds", n=60))
    test = ds.split_indices("test")
    rng = np.random.default_rng(1)
    noisy = np.clip(ds.images[test] + rng.normal(0, 0.05, ds.images[test].shape), -1, 1)
    table = pd.DataFrame({"label": ds.labels["label"].to_numpy()[test], "requested_flux": np.nan,
                          "seed": np.arange(len(test))})
    write_samples(tmp_path / "gen", noisy, table, {"scheme": ds.scheme, "classes": list(ds.classes),
                                                   "transform": ds.manifest["transform"], "generator": "test"})
    results = {}
    for device in ("cpu", "cuda"):
        r = cli("evaluate", "--real", str(tmp_path / "ds"), "--generated", str(tmp_path / "gen"), "--out",
                str(tmp_path / f"eval-{device}"), "--repeats", "2", "--referee", "off", "--no-figures",
                "--device", device, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        results[device] = json.loads((tmp_path / f"eval-{device}" / "metrics.json").read_text())["metrics"]
    assert set(results["cuda"]) == set(results["cpu"])
    assert all(np.isfinite(e["value"]) for e in results["cuda"].values())


def test_sample_on_cuda_with_deterministic_kernels_repeats(tmp_path):
    common = ["sample", "--run", "demo:discrete", "--classes", "A,X", "--per-class", "2", "--sampler", "ddim",
              "--steps", "10", "--seed", "3", "--device", "cuda", "--deterministic", "--no-fits", "--no-grid",
              "--no-progress"]
    images = {}
    for name, batch in (("a", "4"), ("b", "4"), ("c", "1")):
        r = cli(*common, "--out", str(tmp_path / name), "--batch-size", batch, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        images[name] = np.load(tmp_path / name / "samples.npy")
    assert np.array_equal(images["a"], images["b"])  # the same seed and batch size: bit for bit
    # another batch size: the same images up to float32 rounding (kernels are chosen by shape; devices.py)
    np.testing.assert_allclose(images["a"], images["c"], atol=1e-3)


def test_embedding_conditioning_with_the_cevae_encoder_on_cuda(tmp_path):
    """The frozen ceVAE encoder runs on the GPU (training: once, batched; sampling: --embedding-source image)."""
    ds = make_dataset(tmp_path / "ds")  # 32 px, the shipped ceVAE's size
    cfg = load_preset("tiny")
    cfg.train.steps = 2
    cfg.conditioning.kind, cfg.conditioning.encoder = "discrete+embedding", "cevae:demo:cevae"
    save_config(cfg, tmp_path / "config.yaml")
    r = cli("train", "--data", str(ds), "--out", str(tmp_path / "run"), "--config", str(tmp_path / "config.yaml"),
            "--device", "cuda", "--no-progress", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    r = cli("sample", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "samples"), "--per-class", "1",
            "--sampler", "ddim", "--steps", "4", "--embedding-source", "image", "--embedding-data", str(ds),
            "--device", "cuda", "--no-fits", "--no-grid", "--no-progress", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert np.isfinite(np.load(tmp_path / "samples" / "samples.npy")).all()


def _cli_env(extra_env: dict, *args, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", MPLBACKEND="Agg", **extra_env)
    return subprocess.run([sys.executable, "-m", "flaresynth", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)
