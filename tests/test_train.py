"""The training loop: run folder, resume reproducibility, atomic checkpoints, conditioning kinds, bad input."""

import json

import numpy as np
import pytest
import torch

from flaresynth.config import load_preset, save_config, validate
from flaresynth.dataset import open_dataset
from flaresynth.errors import FlaresynthError
from flaresynth.models.conditioning import embed_all
from flaresynth.runs import load_encoder
from flaresynth.train import (
    DEBUG_RANK_DIR_ENV,
    batch_indices,
    class_balance_weights,
    latest_checkpoint,
    load_training_data,
    read_checkpoint,
    train,
    write_checkpoint,
    write_training_cache,
)
from flaresynth.transforms import IntensityTransform, resample, resize
from toy import cli_here, make_dataset, one_line_error


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "ds")


def tiny(steps=4, **train):
    cfg = load_preset("tiny")
    cfg.train.steps = steps
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


@pytest.fixture(scope="module")
def run(ds, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    train(ds, out, tiny(steps=4, checkpoint_every=1, keep_checkpoints=2), progress=False)
    return out


# ------------------------------------------------------------------------------------------ data


def test_dataset_is_resized_in_dn_space_at_load_time(ds):
    d = open_dataset(ds)
    tr = IntensityTransform.from_dict(d.manifest["transform"])
    x = np.asarray(d.images[:3])
    small = resample(x, [tr], 16)
    assert small.shape == (3, 1, 16, 16)
    expected = tr.forward(resize(tr.inverse(x[:, 0]), 16))
    np.testing.assert_allclose(small[:, 0], expected, atol=1e-6)
    # a mean in log space would be darker than the mean in DN/s: check we did not average the logs
    log_mean = x[:, 0].reshape(3, 16, 2, 16, 2).mean(axis=(2, 4))
    assert (small[:, 0] >= log_mean - 1e-6).all() and (small[:, 0] > log_mean + 1e-4).any()


# ------------------------------------------------------------------------------------------ the run folder


def test_run_folder_holds_config_log_provenance_checkpoints_and_a_plain_diffusers_model(run, ds):
    from diffusers import UNet2DModel

    assert (run / "config.yaml").is_file()
    log = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3, 4]
    assert {"step", "loss", "images_per_s", "lr"} <= set(log[0])
    assert log[0]["lr"] == pytest.approx(5e-4)  # warm-up: first of 2 steps at half the rate
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["data_hash"] == open_dataset(ds).manifest["data_hash"]
    assert prov["steps"] == 4 and prov["world_size"] == 1 and prov["complete"]
    assert prov["sessions"][0]["command"]
    # keep_checkpoints = 2, latest names the newest
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-0000003", "step-0000004"]
    assert latest_checkpoint(run).name == "step-0000004"
    unet = UNet2DModel.from_pretrained(run / "model")
    assert unet.config.sample_size == 16 and unet.config.num_class_embeds == 6
    # the saved model holds the EMA weights, not the live ones
    state = read_checkpoint(latest_checkpoint(run))
    live = state["model"]["unet.conv_in.weight"]
    ema = state["ema"]["shadow_params"][0]
    assert torch.equal(unet.conv_in.weight.detach(), ema) and not torch.equal(ema, live)


def test_class_balance_draws_each_class_equally_at_alpha_1_and_keeps_the_stream_pure():
    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)
    assert class_balance_weights(labels, 0.0) is None
    p = class_balance_weights(labels, 1.0)
    assert np.isclose(p.sum(), 1) and np.allclose([p[labels == k].sum() for k in range(3)], 1 / 3)
    half = class_balance_weights(labels, 0.5)  # shares ∝ sqrt(n): 90:9:1 -> 9.5:3:1
    assert np.allclose([half[labels == k].sum() for k in range(3)], np.sqrt([90, 9, 1]) / np.sqrt([90, 9, 1]).sum())
    rows = np.concatenate([batch_indices(100, 64, m, 3, p) for m in range(200)])
    share = np.bincount(labels[rows], minlength=3) / len(rows)
    assert np.allclose(share, 1 / 3, atol=0.02)  # plain epochs would give 0.90 / 0.09 / 0.01
    assert np.array_equal(batch_indices(100, 64, 7, 3, p), batch_indices(100, 64, 7, 3, p))
    assert not np.array_equal(batch_indices(100, 64, 7, 3, p), batch_indices(100, 64, 8, 3, p))
    with pytest.raises(FlaresynthError, match="train.class_balance"):
        validate(tiny(class_balance=1.5))


def test_training_with_class_balance_sees_the_rare_classes_and_resumes_exactly(tmp_path, monkeypatch):
    ds = make_dataset(tmp_path / "skewed", counts={"train": [4, 20, 4, 2, 1], "test": [1, 1, 1, 1, 1]})
    data = open_dataset(ds)
    labels = data.label_index()[data.split_indices("train")]
    seen = {}
    for alpha in (0.0, 1.0):
        monkeypatch.setenv(DEBUG_RANK_DIR_ENV, str(tmp_path / f"ranks{alpha}"))
        train(ds, tmp_path / f"a{alpha}", tiny(steps=16, class_balance=alpha), progress=False)
        rows = np.concatenate(json.loads((tmp_path / f"ranks{alpha}" / "rank0.json").read_text())["batch_rows"])
        seen[alpha] = np.bincount(labels[rows], minlength=5) / len(rows)
    assert np.isclose(seen[0.0][4], 1 / 31, atol=0.02)  # plain epochs: X is 1 image of 31
    assert seen[1.0][4] > 0.1 and seen[1.0][1] < 0.35  # balanced: ~1/5 each (64 rows)
    monkeypatch.delenv(DEBUG_RANK_DIR_ENV)
    cfg = tiny(steps=4, checkpoint_every=2, class_balance=0.5)
    train(ds, tmp_path / "full", cfg, progress=False)
    train(ds, tmp_path / "cut", cfg, max_steps=2, progress=False)
    train(ds, tmp_path / "cut", None, resume=True, progress=False)
    a, b = (read_checkpoint(latest_checkpoint(tmp_path / r))["model"] for r in ("full", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_flips_add_each_frame_mirrored_as_rows_of_its_own(ds, tmp_path, monkeypatch):
    data = open_dataset(ds)
    plain = load_training_data(data, tiny())
    x, n = plain["images"], len(plain["images"])
    both = load_training_data(data, tiny(flips="ew+ns"))
    assert both["images"].shape == (4 * n, *x.shape[1:]) and both["train_counts"] == plain["train_counts"]
    for v, dims in enumerate([(), (-1,), (-2,), (-2, -1)]):  # observed, east-west, north-south, both
        assert torch.equal(both["images"][v * n : (v + 1) * n], x.flip(dims) if dims else x)
        assert torch.equal(both["cond"].labels[v * n : (v + 1) * n], plain["cond"].labels)
        assert torch.equal(both["cond"].log_flux[v * n : (v + 1) * n], plain["cond"].log_flux)
    # the cache the training loop memory-maps holds the same rows, and a cache of other mirrors is refused
    cfg = tiny(flips="ew")
    cfg.conditioning.kind, cfg.conditioning.encoder = "discrete+embedding", "random:12"
    write_training_cache(data, cfg, tmp_path / "cache")
    cached = load_training_data(data, cfg, cache=tmp_path / "cache")
    assert torch.equal(cached["images"], both["images"][: 2 * n])
    # a mirrored frame is embedded as the encoder sees it mirrored
    frames = torch.from_numpy(np.asarray(data.images[data.split_indices("train")], dtype=np.float32))
    encoder = load_encoder("random:12")
    expected = torch.cat([embed_all(encoder, frames), embed_all(encoder, frames.flip(-1))])
    torch.testing.assert_close(cached["cond"].embedding, expected)
    assert not torch.allclose(expected[:n], expected[n:])
    with pytest.raises(FlaresynthError, match=r"train_images.npy: .* × 4 \(train.flips: ew\+ns\)"):
        load_training_data(data, tiny(flips="ew+ns"), cache=tmp_path / "cache")
    with pytest.raises(FlaresynthError, match="train.flips: .*rot90"):
        validate(tiny(flips="rot90"))
    # training draws the mirrored rows too
    monkeypatch.setenv(DEBUG_RANK_DIR_ENV, str(tmp_path / "ranks"))
    train(ds, tmp_path / "run", tiny(steps=4, flips="ns"), progress=False)
    rows = np.concatenate(json.loads((tmp_path / "ranks" / "rank0.json").read_text())["batch_rows"])
    assert rows.max() >= n and rows.min() < n


def test_resume_after_interruption_reproduces_the_uninterrupted_weights(ds, tmp_path):
    cfg = tiny(steps=6, checkpoint_every=2)
    train(ds, tmp_path / "full", cfg, progress=False)
    train(ds, tmp_path / "cut", cfg, max_steps=3, progress=False)  # checkpoints at 2 and (the end) 3
    assert json.loads((tmp_path / "cut" / "provenance.json").read_text())["complete"] is False
    train(ds, tmp_path / "cut", None, resume=True, progress=False)  # the run's own config.yaml, on to 6
    a = read_checkpoint(latest_checkpoint(tmp_path / "full"))
    b = read_checkpoint(latest_checkpoint(tmp_path / "cut"))
    assert a["step"] == b["step"] == 6
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for x, y in zip(a["ema"]["shadow_params"], b["ema"]["shadow_params"], strict=True):
        assert torch.equal(x, y)
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    assert a["lr_scheduler"]["last_epoch"] == b["lr_scheduler"]["last_epoch"]
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_a_run_stopped_after_a_checkpoint_keeps_that_sessions_command_when_resumed(ds, tmp_path, monkeypatch):
    """provenance.json records each session up to its last checkpoint, so the command of a training stopped
    there (killed, out of time) is not lost when another session resumes it."""
    import flaresynth.train as train_module

    real = train_module._write_provenance

    def killed_after_step_4(out, cfg, data, data_hash, ds, start_step, final_step, *args):
        real(out, cfg, data, data_hash, ds, start_step, final_step, *args)
        if start_step == 0 and final_step == 4:
            raise KeyboardInterrupt  # the session ends right after its step-4 checkpoint

    monkeypatch.setattr(train_module, "_write_provenance", killed_after_step_4)
    with pytest.raises(KeyboardInterrupt):
        train(ds, tmp_path / "run", tiny(steps=6, checkpoint_every=2), progress=False, command=["first"])
    prov = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert [(s["command"], s["from_step"], s["to_step"]) for s in prov["sessions"]] == [(["first"], 0, 4)]
    assert prov["complete"] is False and prov["steps"] == 4
    train(ds, tmp_path / "run", None, resume=True, progress=False, command=["second"])
    prov = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert [(s["command"], s["from_step"], s["to_step"]) for s in prov["sessions"]] == [(["first"], 0, 4),
                                                                                       (["second"], 4, 6)]
    assert prov["complete"] is True


def test_a_checkpoint_that_fails_midway_never_becomes_latest(run, monkeypatch, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = latest_checkpoint(copy)

    def crash(obj, fh):
        fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        write_checkpoint(copy, 99, {"fingerprint": "x", "data_hash": "y"}, keep=2)
    assert latest_checkpoint(copy) == before
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == ["latest", "step-0000003", "step-0000004"]


@pytest.mark.parametrize("kind", ["continuous", "discrete+embedding"])
def test_each_conditioning_trains_and_saves(ds, tmp_path, kind):
    from flaresynth.runs import open_run

    cfg = tiny(steps=2, sample_every=2)
    cfg.conditioning.kind = kind
    cfg.conditioning.encoder = "random:12" if kind == "discrete+embedding" else None
    out = train(ds, tmp_path / kind, cfg, progress=False)
    files = {p.name for p in (out / "model").iterdir()}
    assert {"conditioner.safetensors", "flaresynth.json", "diffusion_pytorch_model.safetensors"} <= files
    assert (out / "samples" / "step-0000002.png").stat().st_size > 1000  # the EMA grid
    m = open_run(out)
    assert m.kind == "ddpm" and m.conditioning == kind
    if kind == "discrete+embedding":
        means = m.network.conditioner.class_mean_embedding
        assert means.shape == (5, 12) and means.abs().sum() > 0
    else:
        assert m.meta["class_log_flux"]["M"] == pytest.approx(-4.5, abs=0.5)


def test_an_encoder_object_can_be_passed_directly(ds, tmp_path):
    cfg = tiny(steps=1)
    cfg.conditioning.kind, cfg.conditioning.encoder = "discrete+embedding", "unused:spec"
    enc = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten())  # a plain nn.Module: 16-D
    out = train(ds, tmp_path / "enc", cfg, encoder=enc, progress=False)
    assert json.loads((out / "model" / "flaresynth.json").read_text())["conditioning"]["embed_dim"] == 16


class _DeviceRecorder(torch.nn.Module):
    """An encoder whose weights sit on the ``meta`` device (standing in for a GPU): records where its inputs
    arrive and how many, and answers with 4-D vectors on the CPU."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(4, device="meta"))
        self.calls = []

    def forward(self, x):
        self.calls.append((x.device.type, len(x)))
        return torch.arange(len(x) * 4, dtype=torch.float32).reshape(len(x), 4) / 100


def test_a_user_encoder_gets_its_inputs_on_its_own_device_batched_once(ds, tmp_path):
    cfg = tiny(steps=1)
    cfg.conditioning.kind, cfg.conditioning.encoder = "discrete+embedding", "unused:spec"
    enc = _DeviceRecorder()
    train(ds, tmp_path / "enc", cfg, encoder=enc, progress=False)
    # one batch with the 30 training images, on the encoder's device (a CUDA encoder got CPU inputs before)
    assert enc.calls == [("meta", 30)]


# ------------------------------------------------------------------------------------------ bad input


def test_run_folder_misuse_is_a_clear_error(ds, run, tmp_path):
    with pytest.raises(FlaresynthError, match="already holds a run"):
        train(ds, run, tiny(), progress=False)
    with pytest.raises(FlaresynthError, match="no run to resume"):
        train(ds, tmp_path / "new", tiny(), resume=True, progress=False)
    with pytest.raises(FlaresynthError, match="max-steps"):
        train(ds, tmp_path / "new", tiny(), max_steps=0, progress=False)
    assert not (tmp_path / "new").exists()
    # a run stopped before its first checkpoint: --resume starts it again from step 0
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    save_config(tiny(steps=1), stopped / "config.yaml")
    train(ds, stopped, None, resume=True, progress=False)
    assert latest_checkpoint(stopped).name == "step-0000001"


def test_cli_dataset_without_labels(ds, tmp_path):
    import shutil

    bad = tmp_path / "nolabels"
    shutil.copytree(ds, bad)
    (bad / "labels.csv").unlink()
    line = one_line_error(cli_here("train", "--data", str(bad), "--out", str(tmp_path / "r"), "--preset", "tiny"))
    assert "labels.csv" in line and "missing" in line


def test_cli_checkpoint_from_another_config(ds, run):
    line = one_line_error(cli_here("train", "--data", str(ds), "--out", str(run), "--resume", "--preset", "demo"))
    assert "another config" in line and str(run) in line


def test_cli_corrupted_checkpoint(ds, run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    state = latest_checkpoint(copy) / "state.pt"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF
    state.write_bytes(bytes(data))
    with pytest.raises(FlaresynthError, match="corrupted"):
        read_checkpoint(state.parent)
    line = one_line_error(cli_here("train", "--data", str(ds), "--out", str(copy), "--resume", "--no-progress"))
    assert "corrupted" in line and "state.pt" in line


def test_gradient_accumulation_steps_the_optimiser_once_per_step(ds, tmp_path):
    cfg = tiny(steps=2, grad_accum=3, batch_size=2)
    out = train(ds, tmp_path / "ga", cfg, progress=False)
    state = read_checkpoint(latest_checkpoint(out))
    assert state["lr_scheduler"]["last_epoch"] == 2
    assert all(int(s["step"]) == 2 for s in state["optimizer"]["state"].values())  # 6 micro-batches, 2 steps
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["images_per_step"] == 6


# ------------------------------------------------------------------------------------------ GPU paths, on a CPU


def _rewrite_checkpoint(run, **changes):
    """Change entries of a run's latest checkpoint (state.pt and its checksum rewritten, as training would)."""
    state = read_checkpoint(latest_checkpoint(run))
    state.update(changes)
    write_checkpoint(run, int(state["step"]), state, keep=2)


def _assert_same_weights(a, b):
    sa, sb = read_checkpoint(latest_checkpoint(a)), read_checkpoint(latest_checkpoint(b))
    assert sa["step"] == sb["step"]
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k


def test_resume_with_more_saved_cuda_rng_states_than_visible_gpus(ds, tmp_path, monkeypatch):
    cfg = tiny(steps=4, checkpoint_every=2)
    train(ds, tmp_path / "full", cfg, progress=False)
    cut = tmp_path / "cut"
    train(ds, cut, cfg, max_steps=2, progress=False)
    # a checkpoint as a 4-GPU run saved it: one CUDA generator state per GPU its main process saw ...
    _rewrite_checkpoint(cut, rng={"torch": torch.get_rng_state(), "cuda": [torch.zeros(16, dtype=torch.uint8)] * 4})

    # ... resumed where one GPU is visible: torch raises IndexError for more states than devices
    def set_rng_state_all(states):
        if len(states) > 1:
            raise IndexError("list index out of range")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", set_rng_state_all)
    train(ds, cut, None, resume=True, device="cpu", progress=False)
    monkeypatch.undo()
    _assert_same_weights(tmp_path / "full", cut)  # and nothing the run needs was lost with those states


def test_optimizer_state_is_loaded_after_prepare(ds, tmp_path, monkeypatch):
    from accelerate import Accelerator

    run = tmp_path / "run"
    train(ds, run, tiny(steps=2), max_steps=1, progress=False)
    calls = []
    prepare, load = Accelerator.prepare, torch.optim.Optimizer.load_state_dict

    def spy_prepare(self, *args, **kwargs):
        calls.append("prepare")
        try:
            return prepare(self, *args, **kwargs)
        finally:
            calls.append("prepared")

    def spy_load(self, state_dict):
        calls.append("load")  # accelerate itself reloads the optimiser's own state inside prepare
        return load(self, state_dict)

    monkeypatch.setattr(Accelerator, "prepare", spy_prepare)
    monkeypatch.setattr(torch.optim.Optimizer, "load_state_dict", spy_load)
    train(ds, run, None, resume=True, progress=False)
    # the checkpoint's state: loaded once, after prepare (before it, on a GPU, Adam's step counters would move
    # to the device and AdamW would read each back every step)
    before, after = calls[: calls.index("prepare")], calls[calls.index("prepared") + 1 :]
    assert before == [] and after == ["load"], calls


def test_resume_on_another_world_size_is_refused_unless_allowed(ds, run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    _rewrite_checkpoint(copy, world_size=4)  # as if saved by `accelerate launch --num_processes 4`
    line = one_line_error(cli_here("train", "--data", str(ds), "--out", str(copy), "--resume", "--max-steps", "5",
                                   "--no-progress"))
    assert "saved by 4 process(es), this launch has 1" in line and "global batch (16 -> 4)" in line
    assert "--allow-world-size-change" in line and "step-0000004" in line
    train(ds, copy, None, resume=True, max_steps=5, allow_world_size_change=True, progress=False)
    assert latest_checkpoint(copy).name == "step-0000005"
    assert read_checkpoint(latest_checkpoint(copy))["world_size"] == 1


def test_global_batch_is_split_over_processes_and_accumulation(ds, tmp_path):
    out = train(ds, tmp_path / "gb", tiny(steps=1, global_batch=6, grad_accum=2, batch_size=32), progress=False)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["images_per_step"] == 6 and prov["sessions"][0]["batch_per_process"] == 3
    with pytest.raises(FlaresynthError, match="train.global_batch: 5 images do not split evenly"):
        train(ds, tmp_path / "bad", tiny(steps=1, global_batch=5, grad_accum=2), progress=False)
    assert not (tmp_path / "bad").exists()


def test_shipped_runs_keep_their_fingerprints():
    """New config keys must not change old configs' fingerprints (a run resumes only with the same one)."""
    from importlib import resources

    from flaresynth.config import load_config

    root = resources.files("flaresynth") / "pretrained"
    for name in ("demo-discrete", "demo-continuous", "demo-embedding", "demo-cevae"):
        saved = json.loads((root / name / "model" / "flaresynth.json").read_text())["fingerprint"]
        assert load_config(root / name / "config.yaml").fingerprint() == saved, name
    cfg = tiny()
    cfg.train.global_batch = 8
    other = tiny()
    other.train.global_batch, other.train.batch_size = 8, 2  # batch_size is unused once global_batch is set
    assert cfg.fingerprint() == other.fingerprint() != tiny().fingerprint()
