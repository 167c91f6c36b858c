"""Distillation: the student starts as the teacher, learns its guided output, samples as a run; bad input."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from flaresynth import distill as distill_module
from flaresynth.config import load_config, load_preset
from flaresynth.dataset import open_dataset
from flaresynth.diffusion import (
    consistency_function,
    consistency_scheduler_config,
    ddim_step,
    make_sampler,
    make_scheduler,
    previous_timestep,
    snr,
    student_scheduler_config,
)
from flaresynth.distill import (
    TRAJECTORY_FILE,
    TRAJECTORY_RECORD,
    TRAJECTORY_SEED,
    distill,
    is_student,
    stage_plan,
)
from flaresynth.errors import FlaresynthError
from flaresynth.models.conditioning import Condition
from flaresynth.models.student import GuidanceStudent, student_from_teacher
from flaresynth.models.unet import build_denoiser
from flaresynth.runs import open_run, read_meta, write_meta
from flaresynth.samples import open_samples
from flaresynth.sampling import build_requests, generate, sample
from flaresynth.train import DistillObjective, load_training_data, step_generator, train
from toy import cli, cli_here, make_dataset, one_line_error

STAGE_STEPS = 40


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A toy dataset, a tiny discrete teacher (30 steps) and its 2-step student (guidance at 4 DDIM steps, then 2)."""
    root = tmp_path_factory.mktemp("distill")
    ds = make_dataset(root / "ds")
    cfg = load_preset("tiny")
    cfg.train.steps = 30
    cfg.train.checkpoint_every = 1000  # one checkpoint, at the end
    teacher = train(ds, root / "teacher", cfg, progress=False)
    student = distill(teacher, root / "student", steps=2, method="progressive", teacher_steps=4, stage_steps=STAGE_STEPS, lr=1e-3,
                      progress=False)
    return {"root": root, "ds": ds, "teacher": teacher, "student": student}


def _condition(n, kind):
    labels = torch.arange(n) % 5
    emb = torch.randn(n, 16) if kind == "discrete+embedding" else None
    return Condition(labels, -8.0 + labels.float(), emb)


@pytest.mark.parametrize("kind", ["discrete", "continuous", "discrete+embedding"])
def test_student_starts_as_the_teachers_conditional_model_for_every_w(kind):
    cfg = load_preset("tiny")
    torch.manual_seed(0)
    teacher = build_denoiser(cfg.model, 1, kind, 5, flux_frequencies=4, embed_dim=16 if kind != "discrete" else None)
    with torch.no_grad():  # a non-trivial conditioning (the null rows start at zero)
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    student = student_from_teacher(teacher.eval()).eval()
    x, t, cond = torch.randn(4, 1, 16, 16), torch.tensor([999, 700, 300, 5]), _condition(4, kind)
    with torch.no_grad():
        want = teacher(x, t, cond, torch.zeros(4, dtype=torch.bool))
        for w in (0.0, 1.5, 4.0):
            torch.testing.assert_close(student(x, t, cond, torch.full((4,), w)), want)
    # the conditioning still matters, and w will (its embedding is trainable and feeds the U-Net)
    other = Condition((cond.labels + 1) % 5, cond.log_flux + 1.5, None if cond.embedding is None else -cond.embedding)
    with torch.no_grad():
        assert not torch.allclose(student(x, t, other, torch.zeros(4)), want)
    assert student.guidance_embedding.linear_1.weight.requires_grad


def test_stage_plan_halves_down_to_the_requested_steps():
    assert stage_plan(64, 4, method="progressive") == [("guidance", 64, 64), ("progressive", 64, 32),
                                                       ("progressive", 32, 16), ("progressive", 16, 8),
                                                       ("progressive", 8, 4)]
    assert stage_plan(8, 8, method="progressive") == [("guidance", 8, 8)]
    for steps, teacher_steps in ((0, 64), (-2, 64), (128, 64), (3, 64), (4, 24), (4, 2000)):
        with pytest.raises(FlaresynthError):
            stage_plan(teacher_steps, steps, method="progressive")


def test_consistency_plan_is_one_stage_on_a_grid_that_divides_the_schedule():
    assert stage_plan(20, 4) == [("trajectory", 20, 4)]  # the default method, as distill()'s
    assert stage_plan(50, 4, method="consistency") == [("consistency", 50, 4)]
    assert stage_plan(4, 4, method="consistency") == [("consistency", 4, 4)]
    for steps, teacher_steps, what in ((4, 64, "divisor"), (8, 4, "more than"), (0, 50, "--steps 0")):
        with pytest.raises(FlaresynthError, match=what):
            stage_plan(teacher_steps, steps, method="consistency")
    with pytest.raises(FlaresynthError, match="--method"):
        stage_plan(64, 4, method="consistent")


def test_consistency_function_is_what_the_lcm_sampler_denoises_to():
    """Training's f(x_t, t) and LCMScheduler.step's ``denoised`` are one formula, boundary included."""
    sched_cfg = consistency_scheduler_config(make_scheduler(load_preset("tiny").diffusion).config, 50)
    sched = make_sampler("lcm", sched_cfg, 4)
    assert sched.timesteps.tolist() == [999, 759, 499, 259]  # points of the 50-step grid [19, 39, ..., 999]
    torch.manual_seed(0)
    x, eps = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8)
    for t in sched.timesteps.tolist():
        want = sched.step(eps, t, x, generator=torch.Generator().manual_seed(0)).denoised
        got = consistency_function(sched, eps, torch.full((3,), t), x)
        torch.testing.assert_close(got, want)
    # at t = 0, f is the identity whatever the network says
    torch.testing.assert_close(consistency_function(sched, eps, torch.zeros(3, dtype=torch.long), x), x)


@pytest.fixture(scope="module")
def consistency_student(runs):
    """The tiny teacher's 2-step consistency student on a 4-step grid."""
    return distill(runs["teacher"], runs["root"] / "consistency", steps=2, method="consistency", teacher_steps=4,
                   stage_steps=STAGE_STEPS, lr=1e-3, progress=False)


def test_consistency_student_learns_its_target_and_samples_with_lcm(runs, consistency_student, tmp_path):
    st, ds = consistency_student, open_dataset(runs["ds"])
    folder = st / "stages" / "0-consistency-2"
    assert [p.name for p in (st / "stages").iterdir()] == [folder.name]
    cfg = load_config(folder / "config.yaml")
    assert cfg.distill.stage == "consistency" and cfg.sample.sampler == "lcm"
    data = load_training_data(ds, cfg)
    objective = DistillObjective(cfg, data, ds.classes)
    assert objective.grid.tolist() == [999, 749, 499, 249]  # trained on every point of the teacher's grid
    torch.manual_seed(cfg.train.seed)
    start = objective.build_model().eval()
    end = open_run(st).network
    x0, cond = data["images"][:24], data["cond"].index(slice(0, 24))
    with torch.no_grad():
        err = [np.mean([objective.loss(m, x0, cond, step_generator(99, k, 0)).item() for k in range(4)])
               for m in (start, end)]
    assert err[1] < 0.9 * err[0], err
    prov = json.loads((st / "provenance.json").read_text())
    assert prov["method"] == "consistency" and [s["stage"] for s in prov["stages"]] == ["consistency"]

    r = cli("sample", "--run", str(st), "--out", str(tmp_path / "s"), "--per-class", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    s = open_samples(tmp_path / "s")
    assert s.manifest["sampler"] == "lcm" and s.manifest["steps"] == 2 and s.manifest["distilled"]["stage"] == "consistency"
    assert np.isfinite(s.images).all() and s.images.std() > 0
    # seeded per image: the same seeds give the same images (the sampler's fresh noise included)
    model = open_run(st)
    table = build_requests(model, per_class=1, seed=3)
    np.testing.assert_array_equal(generate(model, table, "lcm", 2, 1.0), generate(model, table, "lcm", 2, 1.0))
    # its own sampler only; and a DDPM is not sampled with the consistency sampler
    with pytest.raises(FlaresynthError, match="trained for lcm 2"):
        sample(st, tmp_path / "bad", sampler="ddim")
    line = one_line_error(cli_here("sample", "--run", str(runs["teacher"]), "--out", str(tmp_path / "bad"),
                                   "--sampler", "lcm", "--no-progress"))
    assert "not a consistency-distilled student" in line, line
    assert not (tmp_path / "bad").exists()


def test_the_teachers_guidance_interval_goes_into_the_targets(runs, consistency_student):
    ds = open_dataset(runs["ds"])
    cfg = load_config(consistency_student / "stages" / "0-consistency-2" / "config.yaml")
    assert cfg.distill.guidance_t_max is None  # the tiny teacher's config guides at every step
    data = load_training_data(ds, cfg)
    z, cond = data["images"][:4], data["cond"].index(slice(0, 4))
    for t_max in (None, 500):
        objective = DistillObjective(replace(cfg, distill=replace(cfg.distill, guidance_t_max=t_max)), data, ds.classes)
        for t in objective.grid.tolist():  # 999, 749, 499, 249
            tt = torch.full((4,), t)
            guided = objective.guided_teacher(z, tt, cond, torch.full((4,), 3.0))
            conditional = objective.guided_teacher(z, tt, cond, torch.zeros(4))
            assert torch.equal(guided, conditional) == (t_max is not None and t > t_max), (t_max, t)
    # only a set interval enters the fingerprint (students distilled before the field keep their ids)
    with_interval = replace(cfg, distill=replace(cfg.distill, guidance_t_max=500))
    assert with_interval.fingerprint() != cfg.fingerprint()


def test_each_consistency_loss_is_the_distance_it_names(runs, consistency_student):
    ds = open_dataset(runs["ds"])
    cfg = load_config(consistency_student / "stages" / "0-consistency-2" / "config.yaml")
    assert cfg.distill.consistency_loss == "snr"
    data = load_training_data(ds, cfg)
    x0, cond = data["images"][:6], data["cond"].index(slice(0, 6))
    model = open_run(consistency_student).network.eval()
    losses, fingerprints = {}, set()
    for kind in ("snr", "snr-plus-one", "pseudo-huber"):
        kind_cfg = replace(cfg, distill=replace(cfg.distill, consistency_loss=kind))
        objective = DistillObjective(kind_cfg, data, ds.classes)
        with torch.no_grad():
            losses[kind] = objective.loss(model, x0, cond, step_generator(7, 0, 0)).item()
        fingerprints.add(kind_cfg.fingerprint())
    # the same draw, so the same x0 pair: recompute it and check each distance against its formula
    z, t, w = objective.draw(x0, step_generator(7, 0, 0))
    sched = objective.student_sched
    with torch.no_grad():
        z_prev = ddim_step(objective.teacher_sched, objective.guided_teacher(z, t, cond, w), t, z)
        t_prev = previous_timestep(objective.teacher_sched, t).clamp(min=0)
        target = consistency_function(sched, model(z_prev, t_prev, cond, w), t_prev, z_prev)
        diff = (consistency_function(sched, model(z, t, cond, w), t, z) - target).flatten(1)
    weight = snr(sched, t)
    assert losses["snr"] == pytest.approx((weight[:, None] * diff**2).mean().item(), rel=1e-5)
    assert losses["snr-plus-one"] == pytest.approx(((weight[:, None] + 1) * diff**2).mean().item(), rel=1e-5)
    c = 0.00054 * diff.shape[1] ** 0.5
    assert losses["pseudo-huber"] == pytest.approx(((diff.pow(2).sum(1) + c * c).sqrt() - c).mean().item(), rel=1e-5)
    # the SNR weight floored: max(SNR_t, γ)
    floored = replace(cfg, distill=replace(cfg.distill, snr_floor=0.05))
    with torch.no_grad():
        value = DistillObjective(floored, data, ds.classes).loss(model, x0, cond, step_generator(7, 0, 0)).item()
    assert value == pytest.approx((weight.clamp(min=0.05)[:, None] * diff**2).mean().item(), rel=1e-5)
    assert (weight < 0.05).any() and value > losses["snr"]
    fingerprints.add(floored.fingerprint())
    # only a chosen loss enters the fingerprint (the students distilled before the fields keep their ids)
    assert len(fingerprints) == 4 and cfg.fingerprint() in fingerprints


def test_a_students_consistency_loss_is_recorded(runs, tmp_path):
    student = distill(runs["teacher"], tmp_path / "student", steps=2, method="consistency", teacher_steps=4,
                      stage_steps=2, consistency_loss="pseudo-huber", progress=False)
    assert load_config(student / "config.yaml").distill.consistency_loss == "pseudo-huber"
    assert json.loads((student / "provenance.json").read_text())["consistency_loss"] == "pseudo-huber"
    assert open_run(student).meta["student"]["consistency_loss"] == "pseudo-huber"


def test_a_student_learns_the_interval_of_its_teachers_config_and_samples_without_one(runs, tmp_path):
    teacher = tmp_path / "teacher"
    shutil.copytree(runs["teacher"], teacher)
    meta = read_meta(teacher / "model")
    meta["config"]["sample"]["guidance_t_max"] = 500
    write_meta(teacher / "model", meta)
    student = distill(teacher, tmp_path / "student", steps=2, method="consistency", teacher_steps=4, stage_steps=2,
                      progress=False)
    cfg = load_config(student / "config.yaml")
    assert cfg.distill.guidance_t_max == 500 and cfg.sample.guidance_t_max is None
    assert json.loads((student / "provenance.json").read_text())["guidance_t_max"] == 500
    assert open_run(student).meta["student"]["guidance_t_max"] == 500
    # asked for explicitly, every step (None) overrides the teacher's interval
    other = distill(teacher, tmp_path / "every", steps=2, method="consistency", teacher_steps=4, stage_steps=2,
                    guidance_t_max=None, progress=False)
    assert load_config(other / "config.yaml").distill.guidance_t_max is None


def test_a_students_sampling_defaults_can_be_set_when_it_is_distilled(runs, tmp_path):
    # a consistency student's sampling defaults set when it is distilled: timesteps on its grid, w only at t <= 500
    r = cli("distill", "--run", str(runs["teacher"]), "--out", str(tmp_path / "student"), "--steps", "2",
            "--method", "consistency", "--teacher-steps", "4", "--stage-steps", "2", "--sample-timesteps", "999,249",
            "--sample-guidance-t-max", "500", "--sample-guidance", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    cfg = load_config(tmp_path / "student" / "config.yaml").sample
    assert cfg.timesteps == [999, 249] and cfg.guidance_t_max == 500 and cfg.guidance == 2.0
    assert load_config(runs["teacher"] / "config.yaml").sample.guidance != 2.0  # not the teacher's w
    defaults = open_run(tmp_path / "student").sample_defaults  # what `flaresynth sample` uses
    assert defaults["timesteps"] == [999, 249] and defaults["guidance_t_max"] == 500 and defaults["guidance"] == 2.0
    for args, what in ((["--sample-timesteps", "999"], "expected 2 timesteps"),
                       (["--sample-timesteps", "249,999"], "expected decreasing"),
                       (["--sample-timesteps", "999,500"], "500 not on the student's 4-step grid"),
                       (["--sample-timesteps", "999,x"], "comma-separated whole numbers"),
                       (["--sample-guidance-t-max", "-1"], "--sample-guidance-t-max -1"),
                       (["--sample-guidance", "5"], "inside --guidance-range 0,4"),
                       (["--sample-guidance", "nan"], "--sample-guidance nan"),
                       (["--sample-timesteps", "999,249", "--method", "progressive"], "--method consistency only"),
                       (["--sample-timesteps", "999,249", "--method", "trajectory"], "--method consistency only")):
        line = one_line_error(cli_here("distill", "--run", str(runs["teacher"]), "--out", str(tmp_path / "bad"), "--steps",
                                       "2", "--method", "consistency", "--teacher-steps", "4", "--stage-steps", "2",
                                       "--no-progress", *args))
        assert what in line, (args, line)
        assert not (tmp_path / "bad").exists()


def test_a_students_configured_timesteps_are_its_default_sampling(runs, consistency_student, tmp_path):
    st = tmp_path / "student"
    shutil.copytree(consistency_student, st)
    plain = open_run(st)
    table = build_requests(plain, per_class=1, seed=3)
    default = generate(plain, table, "lcm", 2, 1.0)  # LCM's own spacing on the 4-point grid: 999, 499
    explicit = generate(plain, table, "lcm", 2, 1.0, timesteps=[999, 249])
    assert not np.allclose(default, explicit)
    meta = read_meta(st / "model")
    meta["config"]["sample"]["timesteps"] = [999, 249]
    write_meta(st / "model", meta)
    model = open_run(st)
    np.testing.assert_array_equal(generate(model, table, "lcm", 2, 1.0), explicit)
    np.testing.assert_array_equal(generate(model, table, "lcm", 2, 1.0, timesteps=None), default)
    r = cli("sample", "--run", str(st), "--out", str(tmp_path / "s"), "--per-class", "1", "--seed", "3",
            "--no-progress", "--no-fits")
    assert r.returncode == 0, r.stderr
    s = open_samples(tmp_path / "s")
    assert s.manifest["timesteps"] == [999, 249] and s.manifest["steps"] == 2
    np.testing.assert_array_equal(s.images, explicit)
    for timesteps, what in (("999,500", "500 not on the student's 4-step grid"), ("249,999", "expected decreasing"),
                            ("999,749,249", "trained for lcm 2 steps"), ("999,x", "comma-separated whole numbers")):
        line = one_line_error(cli_here("sample", "--run", str(st), "--out", str(tmp_path / "bad"), "--timesteps",
                                       timesteps, "--no-progress"))
        assert what in line, (timesteps, line)
        assert not (tmp_path / "bad").exists()


@pytest.fixture(scope="module")
def trajectory_student(runs):
    """The tiny teacher's 2-step student regressed on 40 of its 4-step DPM-Solver++ paths (200 steps: at 40 it
    had not yet left its start end to end)."""
    return distill(runs["teacher"], runs["root"] / "trajectory", steps=2, method="trajectory", teacher_steps=4,
                   trajectories=40, stage_steps=200, lr=1e-3, progress=False)


def test_trajectory_student_learns_the_teachers_paths_and_samples_with_ddim(runs, trajectory_student, tmp_path):
    st, ds, teacher = trajectory_student, open_dataset(runs["ds"]), open_run(runs["teacher"])
    paths = torch.load(st / TRAJECTORY_FILE, weights_only=True)
    assert paths["states"].shape == (40, 3, *teacher.sample_shape) and paths["timesteps"] == [999, 499]
    assert torch.bincount(paths["labels"]).tolist() == [8] * 5  # the classes take turns
    assert paths["seeds"].min() >= TRAJECTORY_SEED  # never an evaluation's noise
    # the paths end where the teacher's own DPM-Solver++ on the trailing grid ends, from the same seeds and w
    table = build_requests(teacher, per_class=8, seed=TRAJECTORY_SEED)
    table = table.iloc[np.argsort(np.arange(40) % 8, kind="stable")]
    assert table["seed"].tolist() == paths["seeds"].tolist()
    w = float(paths["guidance"][0])
    ends = generate(teacher, table.iloc[:10], "dpm++", guidance=w, timesteps=[999, 749, 499, 249])
    np.testing.assert_allclose(ends, paths["states"][:10, -1].clamp(-1, 1).numpy(), atol=1e-5)

    cfg = load_config(st / "stages" / "0-trajectory-2" / "config.yaml")
    assert cfg.distill.stage == "trajectory" and cfg.sample.sampler == "ddim" and cfg.sample.steps == 2
    data = load_training_data(ds, cfg)
    objective = DistillObjective(cfg, data, ds.classes)
    torch.manual_seed(cfg.train.seed)
    start, end = objective.build_model().eval(), open_run(st).network
    x0, cond = data["images"][:24], data["cond"].index(slice(0, 24))
    with torch.no_grad():
        err = [np.mean([objective.loss(m, x0, cond, step_generator(99, k, 0)).item() for k in range(4)])
               for m in (start, end)]
    assert err[1] < 0.9 * err[0], err
    # end to end, on its training paths: its 2 DDIM steps land nearer the teacher's path ends than at the start
    student = open_run(st)
    first = replace(student, network=student_from_teacher(teacher.network).eval())
    gap = {name: float(np.mean((generate(m, table.iloc[:10], "ddim", 2, w) - ends) ** 2))
           for name, m in (("start", first), ("student", student))}
    assert gap["student"] < 0.8 * gap["start"], gap  # (measured: 0.214 at the start, 0.134 after 200 steps)
    prov = json.loads((st / "provenance.json").read_text())
    assert prov["method"] == "trajectory" and prov["trajectories"]["paths"] == 40

    r = cli("sample", "--run", str(st), "--out", str(tmp_path / "s"), "--per-class", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert open_samples(tmp_path / "s").manifest["sampler"] == "ddim"


def test_a_ddim_students_eta_goes_into_its_sampling_defaults(runs):
    from flaresynth.distill import stage_config

    teacher_cfg = load_config(runs["teacher"] / "config.yaml")
    for stage, eta, want in (("trajectory", 0.3, 0.3), ("progressive", 0.3, 0.3), ("trajectory", 0.0, 0.0)):
        cfg = stage_config(teacher_cfg, stage, runs["teacher"], 4, 2, 10, 1e-3, None, (0.0, 2.0), sample_eta=eta,
                           trajectories="paths.pt" if stage == "trajectory" else None)
        assert (cfg.sample.sampler, cfg.sample.eta) == ("ddim", want)
    assert stage_config(teacher_cfg, "consistency", runs["teacher"], 4, 2, 10, 1e-3, None, (0.0, 2.0)).sample.eta == 0.0


def test_trajectory_paths_are_recorded_and_reused_only_for_their_own_request(runs, trajectory_student, tmp_path,
                                                                            monkeypatch):
    record = json.loads((trajectory_student / TRAJECTORY_RECORD).read_text())
    assert {k: record[k] for k in ("n", "teacher_steps", "guidance_range")} == {
        "n": 40, "teacher_steps": 4, "guidance_range": [0.0, 4.0]} and record["seconds"] > 0
    st = tmp_path / "st"
    st.mkdir()
    for name in (TRAJECTORY_FILE, TRAJECTORY_RECORD):
        shutil.copy(trajectory_student / name, st / name)
    again = {"steps": 2, "teacher_steps": 4, "trajectories": 40, "resume": True, "progress": False}
    with pytest.raises(FlaresynthError, match="another request"):
        distill(runs["teacher"], st, guidance_range=(0.0, 2.0), **again)
    # paths from before the record existed: their request is read from the file once, into a new record
    (st / TRAJECTORY_RECORD).unlink()
    with pytest.raises(FlaresynthError, match="another request"):
        distill(runs["teacher"], st, guidance_range=(0.0, 2.0), **again)
    assert json.loads((st / TRAJECTORY_RECORD).read_text()) == record
    assert sorted(p.name for p in st.iterdir()) == sorted((TRAJECTORY_FILE, TRAJECTORY_RECORD))
    # another process of a launch waits for the main one's record, but not for ever
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(distill_module, "PATHS_WAIT_SECONDS", -1)
    with pytest.raises(FlaresynthError, match="not written after"):
        distill(runs["teacher"], tmp_path / "rank1", steps=2, teacher_steps=4, trajectories=40, progress=False)
    assert not (tmp_path / "rank1").exists()


def test_distilled_student_reproduces_the_teachers_guided_output_better_than_at_initialisation(runs):
    ds = open_dataset(runs["ds"])
    stages = sorted((runs["student"] / "stages").iterdir())
    assert [p.name for p in stages] == ["0-guidance-4", "1-progressive-2"]
    # each stage on its own training pairs (x_t, t, c, w) -> target: fixed pairs, its start vs its end
    for folder in stages:
        cfg = load_config(folder / "config.yaml")
        data = load_training_data(ds, cfg)
        objective = DistillObjective(cfg, data, ds.classes)
        torch.manual_seed(cfg.train.seed)
        start = objective.build_model().eval()
        opened = open_run(folder / "model", "cpu")
        end, meta = opened.network, opened.meta
        assert opened.kind == "student" and isinstance(end, GuidanceStudent)
        assert meta["student"]["stage"] == cfg.distill.stage and meta["ema_weights"]
        x0, cond = data["images"][:24], data["cond"].index(slice(0, 24))
        with torch.no_grad():
            err = [np.mean([objective.loss(m, x0, cond, step_generator(99, k, 0)).item() for k in range(4)])
                   for m in (start, end)]
        assert err[1] < 0.9 * err[0], (folder.name, err)
        assert not (folder / "checkpoints").exists()  # a completed stage keeps only its model
    # end to end: the 2-step student against the teacher's guided 4-step DDIM from the same x_T, at w = 1
    teacher = open_run(runs["teacher"])
    teacher_ddim = replace(teacher, meta={**teacher.meta, "scheduler": student_scheduler_config(teacher.meta["scheduler"])})
    student = open_run(runs["student"])
    start = replace(student, network=student_from_teacher(teacher.network).eval())
    table = build_requests(teacher, per_class=3, seed=0)
    reference = generate(teacher_ddim, table, "ddim", 4, 1.0)
    gap = {name: float(np.mean((generate(m, table, "ddim", 2, 1.0) - reference) ** 2))
           for name, m in (("start", start), ("student", student), ("teacher 2 steps", teacher_ddim))}
    # (measured: start 0.202, student 0.183, teacher at 2 steps 0.192; 0.171 after 80 steps per stage)
    assert gap["student"] < 0.95 * gap["start"], gap
    assert gap["student"] < gap["teacher 2 steps"], gap


def test_student_run_folder_is_a_run_that_samples_in_its_own_steps(runs, tmp_path):
    st = runs["student"]
    assert is_student(st) and not is_student(runs["teacher"])
    assert load_config(st / "config.yaml").kind == "student"
    prov = json.loads((st / "provenance.json").read_text())
    assert prov["complete"] and [s["student_steps"] for s in prov["stages"]] == [4, 2]
    assert all(s["train_steps"] == STAGE_STEPS for s in prov["stages"])
    log = [json.loads(ln) for ln in (st / "log.jsonl").read_text().splitlines()]
    assert len(log) == 2 * STAGE_STEPS and {e["stage"] for e in log} == {"0-guidance-4", "1-progressive-2"}
    assert open_run(st).kind == "student"  # opened as a student, not misread as a DDPM

    # one forward of B rows per step: guidance is an input, not a second pass
    model = open_run(st)
    calls = []
    inner = model.network
    model.network.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    generate(model, build_requests(model, classes=["A", "X"], per_class=2), "ddim", 2, 2.0, batch_size=4)
    assert calls == [4, 4] and inner is model.network

    r = cli("sample", "--run", str(st), "--out", str(tmp_path / "s"), "--per-class", "1", "--no-progress")
    assert r.returncode == 0, r.stderr
    s = open_samples(tmp_path / "s")
    assert s.manifest["sampler"] == "ddim" and s.manifest["steps"] == 2 and s.manifest["n_images"] == 5
    assert s.manifest["distilled"]["steps"] == 2 and s.manifest["guidance"] == 1.0  # the teacher's default w
    assert np.isfinite(s.images).all()
    # its own sampler and steps only, and a w inside what it learned
    line = one_line_error(cli_here("sample", "--run", str(st), "--out", str(tmp_path / "bad"), "--steps", "4"))
    assert "trained for ddim 2 steps" in line, line
    for kwargs, what in (({"sampler": "ddpm"}, "trained for ddim 2"), ({"guidance": 7.0}, "learned w from 0 to 4")):
        with pytest.raises(FlaresynthError, match=what):
            sample(st, tmp_path / "bad", **kwargs)
    assert not (tmp_path / "bad").exists()


def test_a_shipped_student_is_a_run_by_name_once_its_folder_exists(runs, tmp_path, monkeypatch):
    """``demo:discrete-student`` is listed only when its folder is installed, then samples like any run."""
    from flaresynth import pretrained
    from flaresynth.cli import main
    from flaresynth.runs import shipped_runs

    monkeypatch.setattr(pretrained, "HERE", tmp_path / "pretrained")
    assert "demo:discrete-student" not in shipped_runs()
    shutil.copytree(runs["student"], tmp_path / "pretrained" / pretrained.SHIPPED["demo:discrete-student"])
    assert set(shipped_runs()) == {"demo:discrete-student"}
    with pytest.raises(SystemExit) as done:  # the CLI in this process, so it sees the patched package folder
        main(["sample", "--run", "demo:discrete-student", "--out", str(tmp_path / "s"), "--per-class", "1",
              "--no-fits", "--no-progress"])
    assert done.value.code in (0, None)
    s = open_samples(tmp_path / "s")
    assert s.manifest["steps"] == 2 and s.manifest["distilled"]["steps"] == 2 and s.manifest["n_images"] == 5


def test_resume_skips_completed_stages(runs):
    st = runs["student"]
    before = (st / "model" / "diffusion_pytorch_model.safetensors").read_bytes()
    stamp = {p: p.stat().st_mtime_ns for p in (st / "stages").glob("*/model/*.safetensors")}
    distill(runs["teacher"], st, steps=2, method="progressive", teacher_steps=4, stage_steps=STAGE_STEPS, lr=1e-3,
            resume=True, progress=False)
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp
    assert (st / "model" / "diffusion_pytorch_model.safetensors").read_bytes() == before


def test_an_interrupted_distillation_resumes_to_the_same_student(runs, tmp_path):
    from safetensors.torch import load_file

    from flaresynth.config import RunConfig
    from flaresynth.distill import stage_config
    from flaresynth.io import read_json

    # the state a crash in stage 1 leaves: stage 0 complete, stage 1 checkpointed at step 25 of 40
    out, full = tmp_path / "cut", runs["student"]
    shutil.copytree(full / "stages" / "0-guidance-4", out / "stages" / "0-guidance-4")
    teacher_cfg = RunConfig.from_dict(read_json(runs["teacher"] / "model" / "flaresynth.json")["config"])
    cfg = stage_config(teacher_cfg, "progressive", out / "stages" / "0-guidance-4" / "model", 4, 2, STAGE_STEPS,
                       1e-3, None, (0.0, 4.0))
    train(runs["ds"], out / "stages" / "1-progressive-2", cfg, max_steps=25, progress=False)
    assert not (out / "model").exists()
    distill(runs["teacher"], out, steps=2, method="progressive", teacher_steps=4, stage_steps=STAGE_STEPS, lr=1e-3, resume=True,
            progress=False)
    a = load_file(str(full / "model" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(out / "model" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    a, b = (load_file(str(p / "model" / "student.safetensors")) for p in (full, out))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_continuous_teacher_distils_and_samples(runs, tmp_path):
    cfg = load_preset("tiny")
    cfg.train.steps = 4
    cfg.train.checkpoint_every = 1000
    cfg.conditioning.kind = "continuous"
    teacher = train(runs["ds"], tmp_path / "teacher", cfg, progress=False)
    student = distill(teacher, tmp_path / "student", steps=4, teacher_steps=4, stage_steps=2, trajectories=10,
                      progress=False)
    out = sample(student, tmp_path / "s", fluxes=[3e-6], per_class=2, fits=False, grid=False)
    s = open_samples(out)
    assert s.manifest["steps"] == 4 and s.manifest["conditioning"] == "continuous" and len(s.images) == 2


def test_bad_input_is_one_line_and_writes_nothing(runs, tmp_path):
    out = tmp_path / "out"
    teacher, student = str(runs["teacher"]), str(runs["student"])
    cases = [
        (["--run", student], "already a distilled student"),
        (["--run", teacher, "--steps", "0"], "--steps 0"),
        (["--run", teacher, "--steps", "128"], "more than the teacher's 20"),  # the default, trajectory
        (["--run", teacher, "--steps", "128", "--method", "consistency"], "more than the teacher's 50"),
        (["--run", teacher, "--steps", "128", "--method", "progressive"], "more than the teacher's 64"),
    ]
    for args, what in cases:
        line = one_line_error(cli_here("distill", "--out", str(out), "--no-progress", *args))
        assert what in line, (args, line)
        assert not out.exists()
    for kwargs, what in (({"steps": 4, "teacher_steps": 24, "method": "progressive"}, "power of two"),
                         ({"steps": 2, "teacher_steps": 8, "guidance_range": (3, 1)}, "--guidance-range"),
                         ({"steps": 2, "teacher_steps": 8, "lr": 0.0}, "--lr"),
                         ({"steps": 4, "teacher_steps": 64, "method": "consistency"}, "divisor"),
                         ({"steps": 2, "teacher_steps": 4, "guidance_t_max": -1}, "--guidance-t-max"),
                         ({"steps": 2, "teacher_steps": 4, "consistency_loss": "l1"}, "--consistency-loss 'l1'"),
                         ({"steps": 2, "teacher_steps": 4, "method": "progressive", "consistency_loss": "pseudo-huber"},
                          "--method consistency only"),
                         ({"steps": 2, "teacher_steps": 4, "snr_floor": -1.0}, "--snr-floor -1"),
                         ({"steps": 2, "teacher_steps": 4, "snr_floor": 0.1, "consistency_loss": "pseudo-huber",
                           "method": "consistency"},
                          "--consistency-loss snr only"),
                         ({"steps": 4, "teacher_steps": 30, "method": "trajectory"}, "multiple of --steps 4"),
                         ({"steps": 2, "teacher_steps": 4, "method": "consistency", "trajectories": 10},
                          "--method trajectory only"),
                         ({"steps": 2, "teacher_steps": 4, "method": "consistency", "sample_eta": 0.3},
                          "--sample-eta 0.3: applies to a DDIM student"),
                         ({"steps": 2, "teacher_steps": 4, "sample_eta": 2.0}, "--sample-eta 2.0"),
                         ({"steps": 2, "teacher_steps": 4, "method": "trajectory", "trajectories": 0},
                          "--trajectories 0")):
        with pytest.raises(FlaresynthError, match=what):
            distill(teacher, out, progress=False, **kwargs)
        assert not out.exists()
    # the teacher's dataset is checked by its hash
    other = make_dataset(tmp_path / "other", seed=5)
    with pytest.raises(FlaresynthError, match="data_hash"):
        distill(teacher, out, steps=2, teacher_steps=8, data=other, progress=False)
    assert not out.exists()
    # an existing --out without --resume
    with pytest.raises(FlaresynthError, match="exists"):
        distill(teacher, runs["student"], steps=2, teacher_steps=8, progress=False)


def test_a_cevae_run_is_refused(runs, tmp_path):
    cfg = load_preset("cevae-tiny")
    cfg.train.steps = 1
    cevae = train(runs["ds"], tmp_path / "cevae", cfg, progress=False)
    line = one_line_error(cli_here("distill", "--run", str(cevae), "--out", str(tmp_path / "out"), "--no-progress"))
    assert "a ceVAE run" in line and not (tmp_path / "out").exists()
