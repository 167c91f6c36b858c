"""Opening runs (flaresynth.runs): shipped names and paths, the model kind, damaged folders, default sampler."""

import hashlib
import json
import shutil
from collections import defaultdict

import pytest
import torch

from flaresynth import pretrained
from flaresynth.config import SampleConfig
from flaresynth.errors import FlaresynthError
from flaresynth.models.autoencoder import LatentAutoencoder
from flaresynth.models.cevae import CeVAE
from flaresynth.models.student import GuidanceStudent
from flaresynth.models.unet import Denoiser
from flaresynth.runs import (
    AUTOENCODER_DIR,
    EMBEDDING_CLASSES_FILE,
    LATENT_CLASSES_FILE,
    META_FILE,
    MODEL_DIR,
    latent_autoencoder_folder,
    load_encoder,
    model_folder,
    model_kind,
    open_run,
    read_meta,
    shipped_runs,
    store_half,
)
from flaresynth.samples import open_samples
from flaresynth.sampling import build_requests, generate, sample_settings
from toy import cli, cli_here, one_line_error

SHIPPED = ("demo:discrete", "demo:continuous", "demo:embedding", "demo:cevae", "demo:autoencoder")
#: The shipped latent runs -> the shipped autoencoder whose latents each was trained in (the package holds each once).
LATENT = {name: "demo:autoencoder" for name in ("demo:discrete", "demo:embedding", "demo:discrete-student",
                                                "demo:continuous", "demo:continuous-student")}
#: The package's size limit for flaresynth/pretrained/ (sum of file sizes).
PRETRAINED_MAX_BYTES = 60 * 1024 * 1024


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def run_copy(tmp_path):
    """A copy of a shipped run's folder (its model/ and config), to damage."""

    def copy(name):
        dst = tmp_path / name.replace(":", "-")
        shutil.copytree(shipped_runs()[name], dst)
        return dst

    return copy


def test_every_shipped_run_is_installed():
    # the students (demo:*-student) are listed once their folders are added; nothing outside the package's table
    assert set(SHIPPED) <= set(shipped_runs()) <= set(pretrained.SHIPPED)


@pytest.mark.parametrize("name, kind, conditioning, network, latent",
                         [("demo:discrete", "ddpm", "discrete", Denoiser, True),
                          ("demo:continuous", "ddpm", "continuous", Denoiser, True),
                          ("demo:embedding", "ddpm", "discrete+embedding", Denoiser, True),
                          ("demo:cevae", "cevae", "cevae", CeVAE, False),
                          ("demo:discrete-student", "student", "discrete", GuidanceStudent, True),
                          ("demo:continuous-student", "student", "continuous", GuidanceStudent, True),
                          ("demo:autoencoder", "autoencoder", "autoencoder", LatentAutoencoder, False)])
def test_open_run_by_shipped_name(name, kind, conditioning, network, latent):
    if name not in SHIPPED and name not in shipped_runs():
        # a student ships once distilled from the teacher shipped now (flaresynth.pretrained's docstring)
        pytest.skip(f"{name} is not installed")
    run = open_run(name, "cpu")
    assert (run.kind, run.conditioning, run.name) == (kind, conditioning, name)
    assert isinstance(run.network, network) and not run.network.training
    assert run.device == torch.device("cpu")
    assert run.path == shipped_runs()[name] and run.folder == run.path / MODEL_DIR
    # every shipped generator works at the paper's 64 px; the diffusion models in the latents of the shipped
    # autoencoder they name, the ceVAE in pixels
    assert run.classes == ("A", "B", "C", "M", "X") and run.image_shape == (1, 64, 64)
    assert (run.autoencoder is not None) == latent
    assert [t.channel for t in run.transforms()] == ["171A"]
    assert (run.gaussians is not None) == (kind == "cevae")
    assert model_kind(name) == kind


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_open_run_by_path_run_folder_or_model_folder(run_copy):
    folder = run_copy("demo:discrete")
    for path in (folder, folder / MODEL_DIR, str(folder)):
        run = open_run(path, "cpu")
        assert run.kind == "ddpm" and run.folder == folder / MODEL_DIR and run.name is None
    # the same weights as the shipped run, and (by the name its metadata records) the same shipped autoencoder
    a, b = open_run(folder, "cpu"), open_run("demo:discrete", "cpu")
    assert _same_weights(a.network, b.network) and _same_weights(a.autoencoder, b.autoencoder)
    assert _same_weights(a.autoencoder, open_run("demo:autoencoder", "cpu").network)


def test_shipped_latent_runs_share_the_shipped_autoencoder():
    """Each shipped latent run names its shipped autoencoder instead of carrying a copy, and it is the one the run
    was trained in (the id it recorded); any other shipped latent run resolves to an autoencoder with its id too."""
    installed = shipped_runs()
    latent = set()
    for name, path in installed.items():
        folder = model_folder(path)
        meta = read_meta(folder)
        if model_kind(name) not in ("ddpm", "student") or not meta.get("latent"):
            continue
        latent.add(name)
        ae = latent_autoencoder_folder(path, folder, meta)
        assert model_kind(ae) == "autoencoder", name
        assert read_meta(ae)["model_id"] == meta["latent"]["autoencoder_id"], name
        if name in LATENT:
            assert meta["latent"]["autoencoder"] == LATENT[name], name
            assert ae == model_folder(installed[LATENT[name]]) and not (path / AUTOENCODER_DIR).exists(), name
    assert latent >= set(LATENT) & set(installed) >= set(LATENT) & set(SHIPPED)


def test_no_two_shipped_files_hold_the_same_weights_and_the_package_fits():
    """The duplication the shared autoencoder removed cannot come back unnoticed; pretrained/ stays <= 60 MB."""
    by_hash = defaultdict(list)
    files = [p for p in pretrained.HERE.rglob("*") if p.is_file()]
    for p in files:
        if p.suffix in (".safetensors", ".bin"):
            by_hash[hashlib.sha256(p.read_bytes()).hexdigest()].append(str(p.relative_to(pretrained.HERE)))
    assert len(by_hash) >= 10  # every shipped network's weights were seen
    twins = [paths for paths in by_hash.values() if len(paths) > 1]
    assert not twins, f"identical weights shipped twice (share them, see flaresynth.pretrained): {twins}"
    total = sum(p.stat().st_size for p in files)
    assert total <= PRETRAINED_MAX_BYTES, f"pretrained/ holds {total / 2**20:.1f} MB"


def _store_full(run, jitter):
    """Rewrite a run copy's weights in float32 (the package stores them in float16), each floating tensor times
    1 + ``jitter``·N(0, 1) so that its values lie off the float16 grid: a run as `flaresynth train` writes it."""
    from safetensors.torch import load_file, save_file

    gen = torch.Generator().manual_seed(0)
    for path in [*(run / MODEL_DIR).glob("*.safetensors"), *(run / AUTOENCODER_DIR).glob("*.safetensors")]:
        tensors = {k: (v.float() * (1 + jitter * torch.randn(v.shape, generator=gen)) if v.is_floating_point() else v)
                   for k, v in load_file(str(path)).items()}
        save_file(tensors, str(path), metadata={"format": "pt"})


def _weights(run):
    """Every tensor a run opens with: its network's and, when it keeps its own autoencoder, the autoencoder's."""
    opened = open_run(run)
    ae = opened.autoencoder.state_dict() if (run / AUTOENCODER_DIR).is_dir() else {}
    return {**opened.network.state_dict(), **{f"autoencoder.{k}": v for k, v in ae.items()}}


@pytest.mark.parametrize("name", ["demo:discrete-student", "demo:continuous", "demo:cevae", "demo:autoencoder",
                                  "demo:activity3"])
def test_a_run_stored_at_half_precision_opens_as_float32_with_its_weights_rounded(run_copy, name):
    run = run_copy(name)
    _store_full(run, jitter=1e-3)
    full = _weights(run)
    files = [*(run / MODEL_DIR).glob("*.safetensors"), *(run / AUTOENCODER_DIR).glob("*.safetensors")]
    before = {p: p.stat().st_size for p in files}
    written = store_half(run)
    assert sorted(written) == sorted(before)
    for p in written:  # float32 -> float16 halves each file, up to its header
        assert p.stat().st_size < 0.51 * before[p] + 4096
    assert read_meta(run / MODEL_DIR)["weights_dtype"] == "float16"
    if (run / AUTOENCODER_DIR).is_dir():  # demo:activity3 keeps its own 128 px autoencoder: halved too
        assert read_meta(run / AUTOENCODER_DIR)["weights_dtype"] == "float16"
    half = _weights(run)
    assert half.keys() == full.keys()
    for key, value in full.items():
        assert half[key].dtype == value.dtype, key  # cast back on opening: the network computes in float32
        if value.is_floating_point():
            torch.testing.assert_close(half[key], value.half().float(), rtol=0, atol=0, msg=key)


def test_a_student_at_half_precision_samples_what_it_did(run_copy):
    run = run_copy("demo:discrete-student")
    _store_full(run, jitter=1e-3)
    model = open_run(run)
    table = build_requests(model, per_class=1, seed=7)
    sampler = model.sample_defaults["sampler"]  # its own (DDIM for a trajectory student, LCM for a consistency one)
    before = generate(model, table, sampler, 4, 2.0)
    store_half(run)
    after = generate(open_run(run), table, sampler, 4, 2.0)
    assert 0 < abs(after - before).max() < 0.05 * (before.max() - before.min())
    with pytest.raises(FlaresynthError, match="a shipped run; copy its folder"):
        store_half("demo:discrete")


def test_each_shipped_student_was_distilled_from_the_teacher_shipped_beside_it():
    """demo:X-student is a student of demo:X as shipped now (a retrained teacher withdraws or replaces its student)."""
    installed = shipped_runs()
    students = [name for name in installed if name.endswith("-student")]
    for name in students:
        teacher = read_meta(model_folder(installed[name.removesuffix("-student")]))
        assert read_meta(model_folder(installed[name]))["student"]["teacher_id"] == teacher["model_id"], name
    assert len(students) == 2


def test_the_package_stores_every_generator_in_float16():
    """How the package fits its budget (flaresynth.pretrained): every shipped network's weights in float16, and
    each opens as float32."""
    from safetensors import safe_open

    for path in shipped_runs().values():
        for folder in [path / MODEL_DIR, path / AUTOENCODER_DIR]:
            if not folder.is_dir():  # only demo:multichannel and demo:activity3 keep their own autoencoder
                continue
            assert read_meta(folder).get("weights_dtype") == "float16", folder
            for weights in folder.glob("*.safetensors"):
                with safe_open(str(weights), "pt") as fh:
                    dtypes = {fh.get_slice(k).get_dtype() for k in fh.keys()}
                assert dtypes <= {"F16", "I64"}, (weights, dtypes)
    assert all(v.dtype == torch.float32 for v in open_run("demo:discrete").network.state_dict().values())


def test_a_latent_runs_autoencoder_is_checked_by_id_and_named_in_one_line(run_copy, tmp_path, monkeypatch):
    """The shipped name resolves only to an autoencoder with the id the run recorded; an unknown or uninstalled
    name, or a run-local copy that is missing, is one line naming the file."""
    folder = run_copy("demo:continuous")
    meta_path = folder / MODEL_DIR / META_FILE
    meta = json.loads(meta_path.read_text())
    other = {**meta, "latent": {**meta["latent"], "autoencoder_id": "ae64-autoencoder-0000000000000000@900"}}
    meta_path.write_text(json.dumps(other))
    with pytest.raises(FlaresynthError, match="but the run was trained in the latents of 'ae64-autoencoder-0000") as err:
        open_run(folder, "cpu")
    assert "\n" not in str(err.value)
    meta_path.write_text(json.dumps({**meta, "latent": {**meta["latent"], "autoencoder": "demo:nonsense"}}))
    with pytest.raises(FlaresynthError, match=r"latent.autoencoder: 'demo:nonsense' is not installed"):
        open_run(folder, "cpu")
    # a run written by `flaresynth train` names its own copy, RUN/autoencoder/, which the shipped one does not replace
    meta_path.write_text(json.dumps({**meta, "latent": {**meta["latent"], "autoencoder": AUTOENCODER_DIR}}))
    line = one_line_error(cli_here("sample", "--run", str(folder), "--out", str(tmp_path / "s"), "--no-progress"))
    assert f"{folder / AUTOENCODER_DIR}: missing" in line and not (tmp_path / "s").exists()
    shipped_ae = meta["latent"]["autoencoder"]  # the shipped autoencoder the run names
    shutil.copytree(model_folder(shipped_runs()[shipped_ae]), folder / AUTOENCODER_DIR)
    assert open_run(folder, "cpu").autoencoder is not None
    # an installation without the shipped autoencoder
    meta_path.write_text(json.dumps(meta))
    monkeypatch.setattr(pretrained, "HERE", tmp_path / "empty")
    with pytest.raises(FlaresynthError, match=rf"'{shipped_ae}' is not installed") as err:
        open_run(folder, "cpu")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name, weights", [("demo:discrete", "diffusion_pytorch_model.safetensors"),
                                           ("demo:continuous", "conditioner.safetensors"),
                                           ("demo:cevae", "model.safetensors"),
                                           ("demo:cevae", LATENT_CLASSES_FILE)])
def test_missing_weights_is_a_one_line_error_naming_the_file(run_copy, name, weights):
    folder = run_copy(name)
    (folder / MODEL_DIR / weights).unlink()
    with pytest.raises(FlaresynthError) as err:
        open_run(folder, "cpu")
    msg = str(err.value)
    assert "\n" not in msg and str(folder / MODEL_DIR / weights) in msg and "missing" in msg


def test_cli_missing_weights_is_one_line(run_copy, tmp_path):
    folder = run_copy("demo:discrete")
    (folder / MODEL_DIR / "diffusion_pytorch_model.safetensors").unlink()
    line = one_line_error(cli_here("sample", "--run", str(folder), "--out", str(tmp_path / "o"), "--per-class", "1"))
    assert "diffusion_pytorch_model.safetensors: missing" in line
    assert not (tmp_path / "o").exists()


def test_unknown_model_kind_and_damaged_metadata(run_copy):
    folder = run_copy("demo:discrete")
    meta_path = folder / MODEL_DIR / META_FILE
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "model_type": "latent-ddpm"}))
    with pytest.raises(FlaresynthError, match=r"flaresynth.json: model_type: 'latent-ddpm' is not a model kind") as err:
        open_run(folder, "cpu")
    assert "\n" not in str(err.value)
    meta_path.write_text(json.dumps({k: v for k, v in meta.items() if k != "conditioning"}))
    with pytest.raises(FlaresynthError, match="field 'conditioning': missing"):
        read_meta(folder / MODEL_DIR)
    meta_path.write_text('{"classes": [')
    with pytest.raises(FlaresynthError, match="flaresynth.json: unreadable"):
        open_run(folder, "cpu")
    meta_path.unlink()
    with pytest.raises(FlaresynthError, match="flaresynth.json: missing"):
        open_run(folder, "cpu")


def test_names_and_paths_that_are_not_runs(tmp_path):
    with pytest.raises(FlaresynthError, match="unknown shipped run"):
        open_run("demo:nonsense")
    with pytest.raises(FlaresynthError, match="no such run folder"):
        open_run(tmp_path / "absent")
    with pytest.raises(FlaresynthError, match="missing"):
        open_run(tmp_path)  # a folder without model/flaresynth.json
    with pytest.raises(FlaresynthError, match="--device 'tpu'"):
        open_run("demo:discrete", "tpu")


def test_image_encoders_by_name():
    enc = load_encoder("cevae:demo:cevae")
    assert enc.dim == open_run("demo:cevae", "cpu").network.z_dim
    assert enc.embed(torch.zeros(2, 1, 64, 64)).shape == (2, enc.dim)
    with pytest.raises(FlaresynthError, match="needs a ceVAE run"):
        load_encoder("cevae:demo:discrete")
    with pytest.raises(FlaresynthError, match="no such ceVAE run"):
        load_encoder("cevae:/nowhere/run")


def test_shipped_ddpm_defaults_to_a_fast_sampler_named_in_its_config():
    for name in ("demo:discrete", "demo:continuous", "demo:embedding"):
        run = open_run(name, "cpu")
        # DPM-Solver++ 20 since 2026-12-05 (DDIM 20 before): the same 40 forwards, half the FD_domain
        assert run.sample_defaults["sampler"] == "dpm++" and run.sample_defaults["steps"] == 20
        w = float(run.sample_defaults["guidance"])
        assert sample_settings(run.meta) == ("dpm++", 20, w), name
        # the paper's DDPM is one flag away, with its own 1000 steps (None = the sampler's default)
        assert sample_settings(run.meta, "ddpm") == ("ddpm", None, w)
        assert sample_settings(run.meta, None, 5, 0.5) == ("dpm++", 5, 0.5)
    # a run whose config has no sample section: the config defaults, w = 2
    assert sample_settings({"config": {}}) == (SampleConfig.sampler, SampleConfig.steps, 2.0)
    assert (shipped_runs()["demo:embedding"] / MODEL_DIR / EMBEDDING_CLASSES_FILE).is_file()


def test_cli_sample_of_a_shipped_run_without_sampler_runs_its_configured_dpmpp_20(tmp_path):
    r = cli("sample", "--run", "demo:discrete", "--out", str(tmp_path / "s"), "--classes", "M", "--per-class", "1",
            "--no-fits", "--no-grid", "--no-progress")
    assert r.returncode == 0, r.stderr
    s = open_samples(tmp_path / "s")
    assert (s.manifest["sampler"], s.manifest["steps"]) == ("dpm++", 20)
