"""`flaresynth demo` end to end at the --quick sizes: the --train path (the autoencoder, then every generator retrained,
tiny presets of the latent route), then
resumed; the shipped-generator path with stand-in weights; a generator that is not installed."""

import base64
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from rich.console import Console

from flaresynth.demo import GENERATORS, DemoConfig, parse_run_options, print_summary, run_demo
from flaresynth.errors import FlaresynthError

GENERATED = tuple(g.key for g in GENERATORS)  # --train retrains all four: cevae, discrete, continuous, embedding
TRAIN_MINUTES = 0.3


def flaresynth(*args, check=True):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MPLBACKEND="Agg")
    r = subprocess.run([sys.executable, "-m", "flaresynth", *args], capture_output=True, text=True, timeout=600, env=env)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    args = ["demo", "--out", str(out), "--quick", "--train", str(TRAIN_MINUTES), "--threads", "1", "--no-progress"]
    first = flaresynth(*args, "--json")
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    second = flaresynth(*args, "--json")
    record = json.loads((out / "demo.json").read_text())
    third = flaresynth(*args)  # the plain summary, every stage skipped
    return {"out": out, "first": json.loads(first.stdout), "second": json.loads(second.stdout), "mtimes": mtimes,
            "args": args, "demo": record, "third": third}


def test_results_go_to_stdout_and_fit_80_columns(demo):
    """`flaresynth demo > summary.txt` keeps the summary; --json prints JSON alone (parsed above); a pipe is 80 wide."""
    r = demo["third"]
    assert "Headline" in r.stdout and f"report: {demo['out'] / 'report.html'}" in r.stdout
    assert "Headline" not in r.stderr and "report:" not in r.stderr
    table = [line for line in r.stdout.splitlines() if set(line) & set("│┃┏┡└├")]  # notes are prose the terminal wraps
    assert table and max(map(len, table)) <= 80
    assert "…" not in r.stdout  # nothing cut
    for title in ("ceVAE", "discrete", "continuous", "discrete+embedding"):
        assert title in r.stdout


def test_headline_table_is_laid_out_to_fit_the_terminal():
    def metric(value, std, bench, bench_std, ideal):
        return {"value": value, "std": std, "benchmark": bench, "benchmark_std": bench_std, "ideal": ideal}

    wide = {"F1_judge": metric(0.512, 0.031, 0.93, None, 1.0), "FD_domain": metric(1234.5, 123.4, 12.3, 1.2, 0.0),
            "CE_domain": metric(0.0123, 0.002, 0.002, 0.0004, 0.0), "CD_domain": metric(1.234, 0.05, 1.001, 0.01, 1.0),
            "CS_domain": metric(0.876, 0.05, 0.998, 0.01, 1.0), "FD_effnet": metric(45.6, 3.2, 2.1, 0.3, 0.0),
            "F1_referee": metric(0.44, 0.05, 0.9, None, 1.0)}
    summary = {"headline": {"generators": {g: wide for g in GENERATED}, "generated_images": {g: 200 for g in GENERATED},
                            "augment": None},
               "session": {"stages": []}, "stages": [], "total_seconds": 1.0, "shipped": {}, "notes": [],
               "report": "demo/report.html"}
    for width in (80, 130, 200):
        console = Console(file=io.StringIO(), width=width)
        print_summary(summary, console)
        text = console.file.getvalue()
        lines = text.splitlines()
        assert max(map(len, lines)) <= width and "…" not in text
        for title in ("ceVAE", "continuous", "discrete+embedding"):
            assert title in text
        # every figure whole on one line, and one line per generator or per metric (never a number over 3 lines)
        assert sum(line.count("1234.500 ± 123.400") for line in lines) == 4
        assert any("0.002 ± 0.0004" in line for line in lines)


def test_every_stage_wrote_its_folder(demo):
    out, d = demo["out"], demo["demo"]
    assert (out / "sim" / "simulation.json").is_file() and (out / "sim" / "montage.png").is_file()
    ds = json.loads((out / "dataset" / "manifest.json").read_text())
    trained = [c for c, n in ds["counts"]["train"].items() if n > 0]
    assert d["config"]["days"] == 3 and d["config"]["quick"]
    # the latent route: the autoencoder first, in its own equal share of the budget (five models share the minutes)
    ae = out / "runs" / "autoencoder"
    ae_id = json.loads((ae / "model" / "flaresynth.json").read_text())["model_id"]
    for gen in ("autoencoder", *GENERATED):
        prov = json.loads((out / "runs" / gen / "provenance.json").read_text())
        stage = d["stages"][f"train:{gen}"]
        # steps sized from the measured speed within the budget, capped at --quick's 12, and trained exactly
        assert prov["complete"] and prov["steps"] == stage["planned_steps"] and 2 <= prov["steps"] <= 12
        assert prov["data_hash"] == ds["data_hash"] and stage["seconds_per_step"] > 0
        assert stage["budget_seconds"] == round(TRAIN_MINUTES * 60 / 5, 1)
        preset = {"autoencoder": "autoencoder-tiny", "cevae": "cevae-tiny"}.get(gen, "tiny-latent")
        assert prov["config"]["name"] == f"{preset}-{gen}"
        if gen == "autoencoder":
            continue
        if gen != "cevae":  # a DDPM in the latents of the autoencoder just trained, holding its copy
            meta = json.loads((out / "runs" / gen / "model" / "flaresynth.json").read_text())
            assert prov["config"]["latent"]["autoencoder"] == str(ae.resolve())
            assert meta["latent"]["autoencoder_id"] == ae_id and (out / "runs" / gen / "autoencoder").is_dir()
        samples = json.loads((out / "samples" / gen / "manifest.json").read_text())
        if gen != "cevae":  # the ceVAE decodes latent draws: no sampler steps
            assert samples["sampler"] == DemoConfig().sampler and samples["steps"] == DemoConfig().sampler_steps
        assert samples["n_images"] == 2 * len(trained)  # every trained class, --quick's 2 per class
        assert len(list((out / "samples" / gen / "fits").glob("*.fits"))) == samples["n_images"]
        metrics = json.loads((out / "eval" / gen / "metrics.json").read_text())
        assert {"F1_judge", "FD_domain", "CE_domain"} <= set(metrics["metrics"])
        assert metrics["real"]["data_hash"] == ds["data_hash"]
        # one judge per image size (the latent DDPMs decode to the dataset's 64 px, the tiny ceVAE makes 16 px),
        # trained once in its own stage and loaded by every evaluation
        assert samples["image_size"] == (16 if gen == "cevae" else ds["image_size"])
        assert metrics["details"]["judge"]["source"] == "loaded"
        assert metrics["details"]["judge"]["path"] == str(out / "eval" / f"judge-{samples['image_size']}px")
        # and the ensemble's second judge (--quick: 2), trained in the same stage with seed 1
        ensemble = metrics["details"]["judge_ensemble"]["judges"]
        assert [(m["seed"], m["source"]) for m in ensemble] == [(0, "loaded"), (1, "loaded")]
        assert ensemble[1]["path"] == str(out / "eval" / f"judge-{samples['image_size']}px_seed1")
        assert "F1_judge_ensemble" in metrics["metrics"]
    # the embedding generator is conditioned on the ceVAE trained just before it, as in the paper
    embedding = json.loads((out / "runs" / "embedding" / "provenance.json").read_text())["config"]["conditioning"]
    assert embedding["kind"] == "discrete+embedding" and embedding["encoder"] == f"cevae:{out / 'runs' / 'cevae'}"
    assert json.loads((out / "runs" / "cevae" / "provenance.json").read_text())["config"]["kind"] == "cevae"
    augment = json.loads((out / "experiments" / "augment" / "results.json").read_text())
    assert augment["generated"]["path"] == str(out / "samples" / "discrete")
    assert augment["settings"]["seeds"] == 1 and augment["settings"]["epochs"] == 1
    assert (out / "report.html").is_file()


def test_stage_times_and_the_summary(demo):
    first, d = demo["first"], demo["demo"]
    expected = {"sim", "dataset", "train:autoencoder", "judge:16px", "judge:64px", "augment", "report",
                *(f"{s}:{g}" for s in ("train", "samples", "eval") for g in GENERATED)}
    assert set(d["stages"]) == expected
    assert all(d["stages"][s]["status"] == "done" and d["stages"][s]["seconds"] >= 0 for s in expected)
    ran = {s["stage"]: s for s in d["sessions"][0]["stages"]}
    assert all(ran[s]["status"] == "ran" for s in expected)
    assert first["report"] == str(demo["out"] / "report.html")
    assert set(first["headline"]["generators"]) == set(GENERATED)
    f1 = json.loads((demo["out"] / "eval" / "discrete" / "metrics.json").read_text())["metrics"]["F1_judge"]["value"]
    assert first["headline"]["generators"]["discrete"]["F1_judge"]["value"] == f1
    assert "F1_judge_ensemble" in first["headline"]["generators"]["discrete"]
    assert {"real", "classical", "generated"} <= set(first["headline"]["augment"])  # and the regimes added since
    notes = " ".join(first["notes"])
    assert "smoke test" in notes and f"--train {TRAIN_MINUTES} min" in notes  # what so short a training yields, said plainly
    assert all(d["generators"][g]["source"].startswith("trained") for g in GENERATED)


def test_second_run_skips_every_finished_stage(demo):
    d = demo["demo"]
    assert len(d["sessions"]) == 2
    last = {s["stage"]: s for s in d["sessions"][1]["stages"]}
    assert set(last) == set(d["stages"]) and all(s["status"] == "skipped" for s in last.values())
    now = {p: p.stat().st_mtime_ns for p in demo["out"].rglob("*") if p.is_file() and p.name != "demo.json"}
    assert now == {p: t for p, t in demo["mtimes"].items() if p.name != "demo.json"}  # nothing rewritten
    assert demo["second"]["headline"] == demo["first"]["headline"]


def test_report_is_self_contained(demo):
    text = (demo["out"] / "report.html").read_text()
    assert "<script" not in text.lower() and "<link" not in text.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) >= 12 and all(base64.b64decode(b)[:4] == b"\x89PNG" for b in images)
    table = text[text.index('id="metrics"'):]
    header = re.findall(r"<th>(.*?)</th>", table[:table.index("</thead>")])
    assert header == ["metric", "real vs real (benchmark)", "ceVAE", "discrete", "continuous", "discrete+embedding",
                      "ideal"]
    assert "F1_judge" in table
    assert "How this was made" in text and "judge:16px" in text
    # the Models table: the autoencoder of the latent route in its own column, not read as a discrete DDPM
    models = text[text.index('id="models"'):]
    assert re.findall(r"<th>(.*?)</th>", models[:models.index("</thead>")]) == [
        "", "ceVAE", "discrete", "continuous", "discrete+embedding", "autoencoder"]


def test_changed_parameters_stop_with_one_line(demo):
    r = flaresynth(*demo["args"], "--per-class", "3", check=False)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.lstrip().startswith(("-", "!"))]
    assert len(lines) == 1 and "samples/cevae" in lines[0] and "per_class=2" in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    # the refused run rewrote nothing, and demo.json still describes the finished demo
    d = json.loads((demo["out"] / "demo.json").read_text())
    assert d["config"]["per_class"] == 2 and d["sessions"][-1]["config"]["per_class"] == 3
    assert "finished" not in d["sessions"][-1]
    samples = np.load(demo["out"] / "samples" / "discrete" / "samples.npy")
    assert len(samples) == json.loads((demo["out"] / "samples" / "discrete" / "manifest.json").read_text())["n_images"]


def test_config_checks():
    assert parse_run_options(["discrete=/a/b", "cevae = c"]) == {"discrete": "/a/b", "cevae": "c"}
    with pytest.raises(FlaresynthError, match="NAME=PATH"):
        parse_run_options(["discrete"])
    with pytest.raises(FlaresynthError, match="unknown"):
        DemoConfig(generators=["gan"]).validate()
    with pytest.raises(FlaresynthError, match="--train"):
        DemoConfig(train_minutes=0).validate()
    with pytest.raises(FlaresynthError, match="no such run folder"):
        DemoConfig(runs={"discrete": "/nonexistent/run"}).validate()
    quick = DemoConfig.quick_config(per_class=5)
    assert quick.per_class == 5 and quick.days == 3 and quick.preset == "tiny"


def _fresh_demo_folder(demo, out):
    """sim/ and dataset/ copied from the first demo: found complete, not redone."""
    import shutil

    for part in ("sim", "dataset"):
        shutil.copytree(demo["out"] / part, out / part)
    return out


def test_a_guidance_interval_counts_only_the_guided_steps():
    from flaresynth.demo import sampling_settings_for, unet_evaluations
    from flaresynth.runs import resolve

    how = sampling_settings_for(resolve("demo:discrete"), DemoConfig())
    assert (how["sampler"], how["steps"], how["guidance_t_max"]) == ("dpm++", 20, 500)
    # DPM-Solver++ 20 on the leading grid visits t = 940, 893, ..., 47: the 10 steps at t <= 500 are guided
    assert how["guided_steps"] == 10
    assert unet_evaluations("ddpm", 20, 2.0, 10) == 30 and unet_evaluations("ddpm", 20, 2.0) == 40
    assert unet_evaluations("ddpm", 20, 0.0, 11) == 20 and unet_evaluations("student", 4, 2.0, 2) == 4


def test_a_shipped_student_samples_at_its_configured_timesteps():
    from flaresynth.demo import sampling_settings_for, unet_evaluations
    from flaresynth.runs import model_folder, read_meta, resolve

    for name in ("demo:discrete-student", "demo:continuous-student"):
        how = sampling_settings_for(resolve(name), DemoConfig())
        own = read_meta(model_folder(resolve(name)))["config"]["sample"]
        assert (how["sampler"], how["steps"], how.get("timesteps")) == (own["sampler"], 4, own["timesteps"]), name
        assert unet_evaluations(how["kind"], how["steps"], how["guidance"], how["guided_steps"]) == 4
    assert "timesteps" not in sampling_settings_for(resolve("demo:discrete"), DemoConfig())


def test_the_shipped_cevae_says_it_samples_from_class_mixtures():
    from flaresynth.demo import sampling_settings_for
    from flaresynth.report import sampling_line
    from flaresynth.runs import resolve

    # the mixtures change the images under the same weights and id: the sample stage's params and the line name them
    how = sampling_settings_for(resolve("demo:cevae"), DemoConfig())
    assert how == {"kind": "cevae", "sampler": None, "steps": None, "guidance": None, "class_components": 16}
    line = sampling_line({"sampling": {**how, "model_id": "m"}})
    assert line == "ceVAE m: class-Gaussian latents (mixtures of up to 16 per class), one decoder pass (no U-Net)"
    assert "mixtures" not in sampling_line({"sampling": {"kind": "cevae", "model_id": "m"}})


def test_every_installed_shipped_generator_is_used(demo, tmp_path, monkeypatch):
    """Without --train: every generator flaresynth.runs.shipped_runs() lists, the ceVAE through the same
    sample() call as the DDPMs and in its own column; the shipped generator that is not installed is named."""
    from flaresynth import demo as demo_module

    runs = demo["out"] / "runs"
    # stand-ins for the shipped weights: the tiny runs the --train demo made (demo:continuous "not installed")
    installed = {"demo:cevae": runs / "cevae", "demo:discrete": runs / "discrete", "demo:embedding": runs / "embedding"}
    monkeypatch.setattr(demo_module, "shipped_runs", lambda: dict(installed))
    out = _fresh_demo_folder(demo, tmp_path / "shipped")
    summary = run_demo(out, DemoConfig.quick_config(), progress=False)
    d = json.loads((out / "demo.json").read_text())
    used = ("cevae", "discrete", "embedding")
    assert {k for k, g in d["generators"].items() if g["source"]} == set(used)
    for gen in used:
        assert d["generators"][gen]["source"] == f"shipped (demo:{gen})"
        assert d["stages"][f"samples:{gen}"]["status"] == "done" and (out / "eval" / gen / "metrics.json").is_file()
    # no student installed: the teacher with the demo's DPM-Solver++ 20, two U-Net forwards a step under guidance
    assert d["generators"]["discrete"]["sampling"]["unet_evaluations_per_image"] == 2 * DemoConfig().sampler_steps
    cevae = json.loads((out / "samples" / "cevae" / "manifest.json").read_text())
    assert cevae["generator"] == "flaresynth-cevae" and cevae["run"] == str(runs / "cevae")
    assert d["generators"]["continuous"]["source"] is None and not (out / "samples" / "continuous").exists()
    assert summary["shipped"] == {"installed": ["demo:cevae", "demo:discrete", "demo:embedding"],
                                  "not_installed": ["demo:discrete-student", "demo:continuous",
                                                    "demo:continuous-student"]}
    assert any(n.startswith("continuous: skipped, not shipped") for n in summary["notes"])
    assert set(summary["headline"]["generators"]) == set(used)
    assert summary["headline"]["generated_images"]["cevae"] == cevae["n_images"]
    text = (out / "report.html").read_text()
    header = re.findall(r"<th>(.*?)</th>", text[text.index('id="metrics"'):].split("</thead>")[0])
    assert header == ["metric", "real vs real (benchmark)", "ceVAE", "discrete", "discrete+embedding", "ideal"]
    assert "continuous: not evaluated, not shipped" in text
    # the headline table: the benchmark row first, then one row per generator, the ceVAE's included
    glance = text[text.index('id="summary"'):text.index('id="data"')]
    rows = re.findall(r"<tr><td>(.*?)</td>", glance)
    assert rows == ["real vs real (benchmark)", "ceVAE", "discrete", "discrete+embedding", "ideal"]
    assert "simulated Sun, not from SDO/AIA" in glance


def test_a_generator_that_is_not_shipped_is_skipped_with_a_note(demo, tmp_path, monkeypatch):
    from flaresynth import demo as demo_module

    out = _fresh_demo_folder(demo, tmp_path / "noweights")
    monkeypatch.setattr(demo_module, "shipped_runs", lambda: {})
    summary = run_demo(out, DemoConfig.quick_config(generators=["embedding"]), progress=False)
    d = json.loads((out / "demo.json").read_text())
    assert d["stages"]["sim"]["status"] == "found complete" and d["stages"]["dataset"]["status"] == "found complete"
    assert d["generators"]["embedding"]["source"] is None
    assert [n for n in summary["shipped"]["not_installed"] if not n.endswith("-student")] == [g.shipped for g in GENERATORS]
    assert any(n.startswith("discrete+embedding: skipped, not shipped") for n in summary["notes"])
    assert any("augmentation experiment skipped" in n for n in summary["notes"])
    assert not (out / "samples").exists() and not (out / "eval").exists()
    text = (out / "report.html").read_text()
    assert "discrete+embedding: not evaluated, not shipped" in text and "No evaluation folder was found" in text


def test_an_embedding_run_sampling_from_real_images_gets_the_demo_dataset(tmp_path):
    import yaml

    from flaresynth.demo import embedding_data_for

    run, ds = tmp_path / "run", tmp_path / "ds"
    run.mkdir()
    cfg = {"conditioning": {"kind": "discrete+embedding"}, "sample": {"embedding_source": "image"}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert embedding_data_for(run, ds) == ds
    cfg["sample"]["embedding_source"] = "class-mean"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert embedding_data_for(run, ds) is None
    (run / "config.yaml").write_text(yaml.safe_dump({"kind": "cevae"}))
    assert embedding_data_for(run, ds) is None


def test_a_generator_trained_on_an_earlier_data_version_is_flagged_stale(demo, tmp_path, monkeypatch):
    """A shipped generator whose provenance data hash differs from the demo dataset's: one plain line in the
    summary and the report (its scores are not leak-free; retraining is pending)."""
    import shutil

    from flaresynth import demo as demo_module

    stale = tmp_path / "stale-discrete"
    shutil.copytree(demo["out"] / "runs" / "discrete", stale)
    prov = json.loads((stale / "provenance.json").read_text())
    prov["data_hash"] = "0" * 64  # an earlier data version
    (stale / "provenance.json").write_text(json.dumps(prov))
    monkeypatch.setattr(demo_module, "shipped_runs", lambda: {"demo:discrete": stale})
    out = _fresh_demo_folder(demo, tmp_path / "stale")
    summary = run_demo(out, DemoConfig.quick_config(generators=["discrete"]), progress=False)
    line = [n for n in summary["notes"] if "trained on an earlier data version" in n]
    assert len(line) == 1 and line[0].startswith("discrete:")
    assert "not leak-free" in line[0] and "retraining is pending" in line[0]
    assert json.loads((out / "demo.json").read_text())["generators"]["discrete"]["stale"] is True
    assert "trained on an earlier data version" in (out / "report.html").read_text()


def test_a_shipped_student_is_sampled_in_its_own_steps_and_said_so(demo, tmp_path, monkeypatch):
    """An installed student replaces its teacher (its own sampler, steps and w); --run still wins over it; demo.json,
    the summary and the report name the model and its U-Net evaluations per image."""
    from flaresynth import demo as demo_module
    from flaresynth.distill import distill

    runs = demo["out"] / "runs"
    student = distill(runs / "discrete", tmp_path / "student", steps=2, teacher_steps=4, stage_steps=2,
                      trajectories=10, progress=False)
    # demo:continuous-student is "installed" too, but --run continuous=... must win over it
    installed = {"demo:discrete": runs / "discrete", "demo:discrete-student": student,
                 "demo:continuous-student": student}
    monkeypatch.setattr(demo_module, "shipped_runs", lambda: dict(installed))
    out = _fresh_demo_folder(demo, tmp_path / "students")
    cfg = DemoConfig.quick_config(generators=["discrete", "continuous"], runs={"continuous": str(runs / "continuous")})
    summary = run_demo(out, cfg, progress=False)
    gens = json.loads((out / "demo.json").read_text())["generators"]
    assert gens["discrete"]["source"] == "shipped (demo:discrete-student)"
    assert gens["continuous"]["source"] == "given (--run)"
    manifest = json.loads((out / "samples" / "discrete" / "manifest.json").read_text())
    w = json.loads((student / "model" / "flaresynth.json").read_text())["config"]["sample"]["guidance"]
    assert manifest["steps"] == 2 and manifest["distilled"]["steps"] == 2 and manifest["guidance"] == w
    assert gens["discrete"]["sampling"]["unet_evaluations_per_image"] == 2  # one forward a step: w is an input
    teacher = json.loads((out / "samples" / "continuous" / "manifest.json").read_text())
    assert teacher["steps"] == DemoConfig().sampler_steps and "distilled" not in teacher
    assert gens["continuous"]["sampling"]["unet_evaluations_per_image"] == 2 * DemoConfig().sampler_steps
    console = Console(file=io.StringIO(), width=200)
    print_summary(summary, console)
    text = console.file.getvalue()
    assert "distilled student" in text and "2 U-Net evaluations per image" in text
    assert f"{2 * DemoConfig().sampler_steps} U-Net evaluations per image" in text
    report = (out / "report.html").read_text()
    assert "2 U-Net evaluations per image" in report and "distilled student" in report


def test_the_shipped_judges_of_the_dataset_are_copied_not_trained(demo, tmp_path, monkeypatch):
    """Judges the package ships for the demo's dataset (its data hash, the demo's seeds and epoch cap) are copied into
    eval/ instead of trained, and demo.json says so; --train-judges trains them anyway. The fixture's demo had none
    shipped for its dataset, so it trained its own."""
    import shutil

    from flaresynth import demo as demo_module
    from flaresynth.dataset import open_dataset
    from flaresynth.metrics import judge as judge_module

    stages = {k: v for k, v in demo["demo"]["stages"].items() if k.startswith("judge:")}
    assert stages and all(v["source"] == "trained" for v in stages.values())
    data_hash = open_dataset(demo["out"] / "dataset").manifest["data_hash"]
    shipped, names = tmp_path / "judges", []
    for record in stages.values():  # stand-ins for shipped judges: the fixture's, marked
        size = record["params"]["size"]
        for seed in range(DemoConfig.quick_config().judges):
            name = f"judge-{size}px" + ("" if seed == 0 else f"_seed{seed}")
            copy = shipped / name.replace("judge", data_hash[:12])
            shutil.copytree(demo["out"] / "eval" / name, copy)
            meta = json.loads((copy / "judge.json").read_text())
            meta["real_test"]["f1"] = 0.5 + seed
            (copy / "judge.json").write_text(json.dumps(meta))
            names.append(name)
    monkeypatch.setattr(judge_module, "SHIPPED_JUDGES", shipped)
    runs = demo["out"] / "runs"
    monkeypatch.setattr(demo_module, "shipped_runs", lambda: {"demo:discrete": runs / "discrete"})

    out = _fresh_demo_folder(demo, tmp_path / "shipped")
    summary = run_demo(out, DemoConfig.quick_config(generators=["discrete"]), progress=False)
    console = Console(file=io.StringIO(), width=200)
    print_summary(summary, console)
    used = {k: v for k, v in json.loads((out / "demo.json").read_text())["stages"].items() if k.startswith("judge:")}
    assert used and all(v["source"] == "shipped" and v["real_test_f1_by_seed"] == [0.5, 1.5] for v in used.values())
    assert all(re.search(rf"{k}\s*│ ran \(shipped\)", console.file.getvalue()) for k in used)  # the stage table
    copied = [name for name in names if (out / "eval" / name).is_dir()]
    assert copied
    for name in copied:
        for file in ("model.safetensors", "judge.json"):
            assert (out / "eval" / name / file).read_bytes() == (shipped / name.replace("judge", data_hash[:12]) / file).read_bytes()
    assert (out / "eval" / "discrete" / "metrics.json").is_file()
    cpu = json.loads((out / "eval" / copied[0] / "judge.json").read_text())["training"]["cpu"]
    assert f"The judge (seed 0) was trained on {cpu}" in (out / "report.html").read_text()

    again = _fresh_demo_folder(demo, tmp_path / "trained")
    run_demo(again, DemoConfig.quick_config(generators=["discrete"], train_judges=True), progress=False)
    trained = {k: v for k, v in json.loads((again / "demo.json").read_text())["stages"].items() if k.startswith("judge:")}
    assert trained.keys() == used.keys()
    assert all(v["source"] == "trained" and 0.5 not in v["real_test_f1_by_seed"] for v in trained.values())
