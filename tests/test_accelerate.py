"""`accelerate launch` with two CPU processes (gloo) trains ONE model, only the main process writes, and
``train.global_batch`` gives both processes together the batch one process takes alone.

accelerate 1.15 starts several CPU processes only through torchrun or mpirun: ``accelerate launch --cpu
--num_processes 2`` without an MPI hostfile runs a single process. ``--multi_gpu`` is the torchrun path; with
``flaresynth train --device cpu`` (and the GPUs hidden, so the test runs the same on a GPU machine)
:func:`flaresynth.train.train` asks accelerate for the CPU, which then sets up ``MULTI_CPU`` with the gloo backend.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flaresynth.config import load_preset, save_config
from flaresynth.train import DEBUG_RANK_DIR_ENV, read_checkpoint, train
from toy import make_dataset


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """A 2-process gloo run of the tiny preset with ``train.global_batch: 8`` (4 images per process)."""
    tmp = tmp_path_factory.mktemp("launch")
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("accelerate launcher not installed")
    ds = make_dataset(tmp / "ds")
    cfg = load_preset("tiny")
    cfg.train.global_batch = 8
    save_config(cfg, tmp / "config.yaml")
    run, ranks = tmp / "run", tmp / "ranks"
    # on a GPU machine too: the GPUs hidden and --device cpu, so the same two gloo processes run everywhere
    # (the NCCL launch is tests/test_gpu.py's)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="",
               **{DEBUG_RANK_DIR_ENV: str(ranks)})
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           "-m", "flaresynth", "train", "--data", str(ds), "--out", str(run), "--config", str(tmp / "config.yaml"),
           "--device", "cpu", "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    info = [json.loads((ranks / f"rank{i}.json").read_text()) for i in (0, 1)]
    return {"ds": ds, "run": run, "info": info, "stdout": r.stdout, "stderr": r.stderr,
            "config": tmp / "config.yaml"}


def test_two_process_launch_trains_one_model(launched):
    run, info = launched["run"], launched["info"]
    assert [i["world_size"] for i in info] == [2, 2]
    assert info[0]["pid"] != info[1]["pid"]
    # DDP kept one model: identical weights on both ranks after the last step
    assert info[0]["param_digest"] == info[1]["param_digest"]
    # only the main process wrote checkpoints
    assert info[0]["checkpoints_written"] == ["step-0000002", "step-0000004"]
    assert info[1]["checkpoints_written"] == []
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step-0000002", "step-0000004"]
    assert not (run / "cache").exists()  # the memory-mapped training split lives as long as the session
    log = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3, 4]  # one writer: no duplicated lines
    assert all(e["world_size"] == 2 for e in log)
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["world_size"] == 2 and prov["images_per_step"] == 2 * 4
    state = read_checkpoint(run / "checkpoints" / "step-0000004")
    assert state["world_size"] == 2
    assert launched["stdout"].count("model in") == 1  # the closing message comes from the main process only
    assert launched["stderr"].count("global batch 8 images per optimiser step = 4 per process x 2 process(es)") == 1


def test_global_batch_is_the_same_for_one_and_two_processes(launched, tmp_path, monkeypatch):
    ranks = tmp_path / "ranks"
    monkeypatch.setenv(DEBUG_RANK_DIR_ENV, str(ranks))
    train(launched["ds"], tmp_path / "one", launched["config"], device="cpu", progress=False)
    one = json.loads((ranks / "rank0.json").read_text())
    two = launched["info"]
    assert one["world_size"] == 1 and len(one["batch_rows"]) == 4
    # every step trains on the same 8 dataset rows: all of them in one process, or 4 + 4 in two
    assert all(len(rows) == 8 for rows in one["batch_rows"])
    assert all(len(rows) == 4 for rank in two for rows in rank["batch_rows"])
    assert one["batch_rows"] == [a + b for a, b in zip(two[0]["batch_rows"], two[1]["batch_rows"], strict=True)]
    prov = [json.loads((r / "provenance.json").read_text()) for r in (tmp_path / "one", launched["run"])]
    assert [p["images_per_step"] for p in prov] == [8, 8]
    assert [p["sessions"][-1]["batch_per_process"] for p in prov] == [8, 4]
