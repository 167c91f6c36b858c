"""``flaresynth report``: one self-contained HTML file that a person reads from top to bottom.

Inputs are folders written by the other stages, in any mix; each is recognised by its own record:

=================  ==========================================================================
folder             recognised by
=================  ==========================================================================
demo               ``demo.json`` (format ``flaresynth-demo/1``): its sub-folders are searched
simulated Sun      ``simulation.json`` (and ``montage.png``)
dataset            ``manifest.json`` with format ``flaresynth-dataset/1``
run                ``config.yaml`` plus ``model/flaresynth.json``, ``provenance.json`` or ``log.jsonl``
samples            ``manifest.json`` with format ``flaresynth-samples/1``
evaluation         ``metrics.json`` with format ``flaresynth-eval/1``
experiment         ``results.json`` with format ``flaresynth-experiment/1`` (augment or forecast)
=================  ==========================================================================

Any other folder is searched (four levels deep) for these. References are followed where the files exist: an
evaluation names its dataset and samples folder, a samples folder its run, an experiment its dataset, a dataset
its simulation, so a report from evaluation folders alone still shows the data and the models (a run's own
training dataset is not followed; the Models section compares its data hash with the datasets shown).

The page: what data (simulated Sun or archive, counts per class and split, the class histogram, the simulator's
montage), what models (configs, parameter counts, training curves from ``log.jsonl``, provenance), samples per
class beside real ones, per-class std maps, t-SNE, the metrics table shaped like Ramunno et al.'s (metrics as
rows, generators as columns in the order ceVAE | discrete | continuous | discrete+embedding, with the
real-vs-real benchmark and the ideal value), the application experiments, and a plain statement of what the
numbers do and do not show. Every figure is a PNG embedded as base64 and the CSS is inline: no script, no web
font, no external reference, so the file renders offline and can be mailed as is. This module gathers the page as
blocks of plain text, tables and figures; the markup lives in the jinja2 templates of ``flaresynth/templates``
(``report.html.j2``, ``blocks.html.j2``, ``report.css``), rendered with autoescape so that no folder name, title or
note can inject markup. New figures (class histogram,
training curves) are drawn with matplotlib's object API (no pyplot state).
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from flaresynth import __version__
from flaresynth.errors import FlaresynthError, input_error
from flaresynth.io import atomic_file, read_json
from flaresynth.runs import CONFIG_FILE, META_FILE, MODEL_DIR, PROVENANCE_FILE

#: Column order of the metrics table (the paper's generators); others follow in discovery order.
GENERATOR_ORDER = ("ceVAE", "discrete", "continuous", "discrete+embedding")
#: Folders never searched (large, or holding nothing the report reads).
_SKIP_DIRS = {"sdomlv2.zarr", "fits", "checkpoints", "figures", "model", "goes", "hek", "__pycache__"}
_MAX_DEPTH = 4
#: The page templates, shipped with the package; every value rendered into them is HTML-escaped.
_TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("flaresynth", "templates"), autoescape=True,
                                keep_trailing_newline=True)
FAMILY_NAMES = {"CE": "cluster error", "CD": "cluster distance", "CS": "cluster std", "FD": "Fréchet distance",
                "FID": "Fréchet inception distance", "KID": "kernel distance (KID)", "F1": "F1 (macro)",
                "precision": "precision (macro)", "recall": "recall (macro)", "accuracy": "accuracy",
                "XC": "cross-channel ratio distance (dex)"}


def planned_steps(preset: str | None) -> int | None:
    """``train.steps`` of a shipped preset (the length its recipe plans), None for an unknown one."""
    from flaresynth.config import PRESETS, load_preset

    if preset not in PRESETS:
        return None
    try:
        return load_preset(preset).train.steps
    except (FlaresynthError, OSError, ValueError):  # a preset name whose YAML is not installed: plan unknown
        return None


TEST_PRESETS = ("tiny", "cevae-tiny", "tiny-latent", "autoencoder-tiny")


def training_caveats(presets) -> str:
    """:func:`training_caveat` (without steps) of several presets, the test presets in one sentence."""
    presets = list(dict.fromkeys(presets))
    tests = [p for p in presets if p in TEST_PRESETS]
    parts = [training_caveat(None, p) for p in presets if p not in TEST_PRESETS]
    if len(tests) == 1:
        parts.append(training_caveat(None, tests[0]))
    elif tests:
        parts.append(f"The {', '.join(repr(t) for t in tests)} test presets (a few thousand parameters each) are "
                     "smoke tests of the pipeline: their images are noise, and every number measures that.")
    return " ".join(parts)


def training_caveat(steps: int | None, preset: str | None, minutes: float | None = None) -> str:
    """Plain words on what ``steps`` training steps of a preset give (the DDPM feasibility study's numbers).

    ``steps`` None leaves out the leading "Trained N steps" sentence.
    """
    head = f"Trained {steps} steps{f' (~{minutes:.1f} min)' if minutes else ''} from scratch. " if steps is not None else ""
    if preset in TEST_PRESETS:
        return head + (f"The '{preset}' test preset (a few thousand parameters) is a smoke test of the "
                       "pipeline: its images are noise, and every number measures that.")
    plan = planned_steps(preset)
    if steps is not None and plan and steps >= plan:
        return head + f"That is the full length the '{preset}' recipe plans."
    if preset == "demo":
        return head + (f"The 'demo' recipe plans {plan} steps (~1.5 CPU-hours on 2 cores) for "
                       "recognisable disks with class-ordered flares; on toy disks the same recipe gave a judge F1 at "
                       "chance level (0.16-0.20 for 5 classes) after ~850 steps and 0.39 after ~2900. Expect mostly "
                       "noise frames: the metrics describe an undertrained model, not what the method can do.")
    return head + (f"The '{preset}' recipe plans {plan} steps; a run stopped far earlier is undertrained, and its "
                   "numbers describe that run, not what the method can do." if plan else
                   "A run stopped before its planned length is undertrained; its numbers describe that run.")


def sampling_line(info: dict) -> str:
    """One plain line on which model made a demo generator's images and how (summary and report)."""
    s = info.get("sampling") or {}
    if not s:
        return ""
    if s.get("kind") == "cevae":
        mixture = f" (mixtures of up to {s['class_components']} per class)" if s.get("class_components") else ""
        return f"ceVAE {s.get('model_id')}: class-Gaussian latents{mixture}, one decoder pass (no U-Net)"
    what = (f"distilled student {s.get('model_id')} of {s.get('teacher_id')}" if s.get("kind") == "student"
            else f"DDPM {s.get('model_id')}")
    eta = f" (eta {s['eta']:g})" if s.get("eta") else ""
    return (f"{what}: {s.get('sampler')} {s.get('steps')} steps{eta}, w={s.get('guidance'):g}, "
            f"{s.get('unet_evaluations_per_image')} U-Net evaluations per image")


# ------------------------------------------------------------------------------------------ discovery
@dataclass
class Parts:
    """The folders a report is made of, by kind: resolved path -> its record (parsed JSON, or a dict for runs)."""

    demos: dict[Path, dict] = field(default_factory=dict)
    sims: dict[Path, dict] = field(default_factory=dict)
    datasets: dict[Path, dict] = field(default_factory=dict)
    runs: dict[Path, dict] = field(default_factory=dict)
    samples: dict[Path, dict] = field(default_factory=dict)
    evals: dict[Path, dict] = field(default_factory=dict)
    experiments: dict[Path, dict] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return not any((self.demos, self.sims, self.datasets, self.runs, self.samples, self.evals, self.experiments))


def _json(path: Path) -> dict | None:
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def classify(path: Path) -> tuple[str, dict] | None:
    """``(kind, record)`` of a folder, or None when it is none of the known folders."""
    if (rec := _json(path / "demo.json")) and rec.get("format", "").startswith("flaresynth-demo/"):
        return "demo", rec
    if (rec := _json(path / "metrics.json")) and rec.get("format", "").startswith("flaresynth-eval/"):
        return "eval", rec
    if (rec := _json(path / "results.json")) and rec.get("format", "").startswith("flaresynth-experiment/"):
        return "experiment", rec
    if (path / "simulation.json").is_file() and (rec := _json(path / "simulation.json")) is not None:
        return "sim", rec
    if (rec := _json(path / "manifest.json")) is not None:
        fmt = str(rec.get("format", ""))
        if fmt.startswith("flaresynth-dataset/"):
            return "dataset", rec
        if fmt.startswith("flaresynth-samples/"):
            return "samples", rec
    if (path / "config.yaml").is_file() and any((path / m).exists() for m in ("model/flaresynth.json", "provenance.json",
                                                                             "log.jsonl")):
        return "run", _run_record(path)
    return None


def _run_record(path: Path) -> dict:
    import yaml

    rec: dict = {"config": None, "provenance": _json(path / PROVENANCE_FILE), "meta": _json(path / MODEL_DIR / META_FILE),
                 "log": [], "grid": None}
    try:
        rec["config"] = yaml.safe_load((path / CONFIG_FILE).read_text())
    except (OSError, yaml.YAMLError):
        pass
    log = path / "log.jsonl"
    if log.is_file():
        for line in log.read_text().splitlines():
            try:
                rec["log"].append(json.loads(line))
            except ValueError:
                continue
    grids = sorted((path / "samples").glob("step-*.png")) if (path / "samples").is_dir() else []
    rec["grid"] = str(grids[-1]) if grids else None
    return rec


def discover(inputs: Sequence[str | Path]) -> Parts:
    """Find the folders of every kind under ``inputs`` and those they reference (see the module docstring)."""
    parts = Parts(inputs=[str(p) for p in inputs])
    if not inputs:
        raise FlaresynthError("report: give at least one folder (a demo folder, or run / eval / experiment / dataset folders)")
    for p in inputs:
        path = Path(p)
        if path.is_file():  # a record file given directly: its folder
            path = path.parent
        if not path.is_dir():
            raise input_error(p, None, "no such folder")
        _walk(path.resolve(), 0, parts)
    _follow_references(parts)
    if parts.empty():
        raise FlaresynthError(f"{', '.join(map(str, inputs))}: no flaresynth folder found (expected a demo, dataset, run, "
                              "samples, evaluation or experiment folder)")
    return parts


def _add(parts: Parts, kind: str, path: Path, rec: dict) -> None:
    getattr(parts, {"demo": "demos", "sim": "sims", "dataset": "datasets", "run": "runs", "samples": "samples",
                    "eval": "evals", "experiment": "experiments"}[kind]).setdefault(path, rec)


def _walk(path: Path, depth: int, parts: Parts) -> None:
    found = classify(path)
    if found is not None:
        _add(parts, found[0], path, found[1])
        if found[0] != "demo":
            return
    if depth >= _MAX_DEPTH:
        return
    for child in sorted(path.iterdir()):
        if child.is_dir() and not child.name.startswith(".") and child.name not in _SKIP_DIRS:
            _walk(child, depth + 1, parts)


def _follow_references(parts: Parts) -> None:
    """Add the datasets, samples folders, runs and simulations that the found folders name (when they exist)."""
    # A run's own training dataset is not followed: a shipped run names a folder on the machine that trained it,
    # and the Models section already says whether its data hash is that of a dataset in the report.
    for _ in range(4):  # eval -> samples -> run; eval/experiment -> dataset -> sim
        refs: list[str] = []
        for rec in parts.evals.values():
            refs += [(rec.get("real") or {}).get("path"), (rec.get("generated") or {}).get("path")]
        for rec in parts.experiments.values():
            refs += [(rec.get("data") or {}).get("path"), (rec.get("generated") or {}).get("path")]
        for rec in parts.samples.values():
            refs.append(rec.get("run"))
        for rec in parts.datasets.values():
            images = str((rec.get("sources") or {}).get("images") or "")
            if images.rstrip("/").endswith(".zarr"):
                refs.append(str(Path(images).parent))
        before = sum(map(len, (parts.sims, parts.datasets, parts.runs, parts.samples)))
        for ref in refs:
            if not ref:
                continue
            p = Path(str(ref))
            if p.is_dir() and (found := classify(p)) is not None and found[0] != "demo":
                _add(parts, found[0], p.resolve(), found[1])
        if sum(map(len, (parts.sims, parts.datasets, parts.runs, parts.samples))) == before:
            break


# ------------------------------------------------------------------------------------------- helpers
def _fmt(value, std=None, digits: int = 3) -> str:
    if value is None:
        return "–"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if v != v:  # NaN
        return "–"
    text = f"{v:.3g}" if (abs(v) < 1e-3 and v != 0) or abs(v) >= 1e4 else f"{v:.{digits}f}"
    if std is not None:
        s = float(std)
        if s == s:
            text += f" ± {s:.2g}" if abs(s) < 1e-3 and s != 0 else f" ± {s:.{digits}f}"
    return text


def _pct(stat) -> str:
    if not stat or stat.get("mean") is None:
        return "undefined"
    std = stat.get("std")
    return f"{100 * stat['mean']:.1f} ± {100 * (std or 0):.1f} %"


def _png_file(path: Path | str | None) -> str | None:
    """data: URI of a PNG file (None when it is missing)."""
    if not path or not Path(path).is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _png_figure(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(uri: str | None, alt: str, caption: str | None = None, width: str | None = None) -> dict | None:
    """A figure block (None when there is no image)."""
    if not uri:
        return None
    return {"kind": "figure", "uri": uri, "alt": alt, "caption": caption, "width": width}


def _grid(*figures: dict | None) -> dict:
    """Figures side by side (two columns on a wide screen)."""
    return {"kind": "grid", "figures": [f for f in figures if f]}


def _table(header: Sequence, rows: Sequence[Sequence], cls: str = "") -> dict:
    """A table block; cells are text or :class:`Cell`, the header row is left out when all its cells are empty."""
    return {"kind": "table", "header": [_cell(h) for h in header], "rows": [[_cell(c) for c in r] for r in rows],
            "cls": cls}


@dataclass(frozen=True)
class Cell:
    """A table cell: its text and a smaller remark after it (on a line of its own when ``below``)."""

    text: str
    small: str | None = None
    below: bool = False


def _cell(c) -> str | Cell:
    return c if isinstance(c, Cell) else str(c)


def _small_events_note(record: dict | None) -> str:
    """The selection's words on thinned small flares (``--small-event-fraction`` < 1); empty when all were kept."""
    if not record or record.get("events_kept") == record.get("events"):
        return ""
    return f", the frames of {record['events_kept']} of {record['events']} {record['classes']}-class flares (at random)"


def _short(h) -> str:
    return str(h)[:12] if h else "–"


def _is_simulated(rec: dict, parts: Parts) -> bool | None:
    """True when the dataset's image store is the simulated Sun (zarr attribute or a simulation.json beside it)."""
    images = (rec.get("sources") or {}).get("images")
    if not images:
        return None
    p = Path(str(images))
    if p.exists():
        if (p.parent / "simulation.json").is_file():
            return True
        try:
            import zarr

            return bool(zarr.open_group(str(p), mode="r").attrs.get("flaresynth_simulated", False))
        except Exception:  # a FITS folder or an unreadable store: not known to be simulated
            return False
    return any(Path(s) == p.parent.resolve() for s in parts.sims) or None


def _sim_of(rec: dict, parts: Parts) -> tuple[Path, dict] | None:
    images = (rec.get("sources") or {}).get("images")
    if not images:
        return None
    parent = Path(str(images)).parent
    for path, sim in parts.sims.items():
        if path == parent or (parent.exists() and path == parent.resolve()):
            return path, sim
    return None


def generator_label(manifest: dict | None, fallback: str) -> str:
    """Column title of a generator: ceVAE, or the DDPM's conditioning kind, else ``fallback``."""
    manifest = manifest or {}
    gen = str(manifest.get("generator") or "")
    if "cevae" in gen.lower():
        return "ceVAE"
    return str(manifest.get("conditioning") or fallback)


def _ordered_labels(labels: dict[Path, str]) -> list[tuple[Path, str]]:
    """(path, label) ordered by the paper's columns, duplicates told apart by their folder name."""
    counts: dict[str, int] = {}
    for lab in labels.values():
        counts[lab] = counts.get(lab, 0) + 1
    named = {p: (f"{lab} ({p.name})" if counts[lab] > 1 else lab) for p, lab in labels.items()}

    def key(item):
        p, _ = item
        lab = labels[p]
        return (GENERATOR_ORDER.index(lab) if lab in GENERATOR_ORDER else len(GENERATOR_ORDER), str(p))

    return [(p, named[p]) for p, _ in sorted(labels.items(), key=key)]


# ---------------------------------------------------------------------------------------------- headline
#: The headline metrics (name, column title, which way is better), in the order of the headline table.
HEADLINE_METRICS = (
    ("F1_judge", "judge F1 (macro)", "↑"),
    ("F1_judge_ensemble", "judges' ensemble F1 (macro)", "↑"),
    ("FD_domain", "FD domain", "↓"),
    ("FD_domain_ensemble", "judges' mean FD domain", "↓"),
    ("CE_domain", "CE domain", "↓"),
    ("CD_domain", "CD domain", "→ 1"),
    ("CS_domain", "CS domain", "→ 1"),
    ("FD_effnet", "FD effnet", "↓"),
    ("F1_referee", "referee F1", "↑"),
)
BENCHMARK_ROW = "real vs real (benchmark)"
#: Short titles of the headline metrics, for a terminal (the report keeps the long ones).
HEADLINE_SHORT = {"F1_judge": "F1 judge", "F1_judge_ensemble": "F1 judges", "FD_domain": "FD dom", "FD_domain_ensemble": "FD judges", "CE_domain": "CE dom", "CD_domain": "CD dom",
                  "CS_domain": "CS dom", "FD_effnet": "FD effnet", "F1_referee": "F1 referee"}


def headline_table(entries: Sequence[tuple[str, dict]], short: bool = False) -> tuple[list[str], list[list[str]]]:
    """The headline table: one row per generator between the real-vs-real benchmark row and the ideal row.

    ``entries``: ``(generator title, metrics)`` with ``metrics`` a ``metrics.json`` "metrics" mapping (name ->
    value, std, benchmark, benchmark_std, ideal). Columns are the :data:`HEADLINE_METRICS` present in any entry.
    The benchmark row holds each metric's benchmark (the judge's ceiling on the real test split for F1, two real
    halves of the same size for the others); when generators were evaluated at different sizes their benchmarks
    differ, and each cell then carries its own in brackets. Returns (header, rows) of plain strings; ``short``
    gives the metrics' :data:`HEADLINE_SHORT` titles and "real vs real" as the benchmark row's title.
    """
    names = [(k, HEADLINE_SHORT[k] if short else title, better) for k, title, better in HEADLINE_METRICS
             if any(k in m for _, m in entries)]
    header = ["", *[f"{title} {better}" for _, title, better in names]]
    bench_row, ideal_row, own_bench = ["real vs real" if short else BENCHMARK_ROW], ["ideal"], set()
    for k, _, _ in names:
        have = [m[k] for _, m in entries if k in m]
        benches = {_fmt(e.get("benchmark"), e.get("benchmark_std")) for e in have}
        if len(benches) == 1:
            bench_row.append(benches.pop())
        else:
            bench_row.append("per row")
            own_bench.add(k)
        ideal_row.append(_fmt(have[0].get("ideal")) if have else "–")
    rows = [bench_row]
    for label, m in entries:
        cells = []
        for k, _, _ in names:
            e = m.get(k)
            if not e:
                cells.append("–")
                continue
            text = _fmt(e.get("value"), e.get("std"))
            if k in own_bench:
                text += f" (bench {_fmt(e.get('benchmark'), e.get('benchmark_std'))})"
            cells.append(text)
        rows.append([label, *cells])
    rows.append(ideal_row)
    return header, rows


# ---------------------------------------------------------------------------------------------- figures
def class_histogram(counts: dict, classes: Sequence[str], title: str) -> str:
    """Grouped bars of images per class and split (log scale so the rare M and X stay visible); a data URI."""
    import numpy as np
    from matplotlib.figure import Figure

    splits = [s for s in ("train", "val", "test") if s in counts] or [k for k in counts if k != "all"]
    fig = Figure(figsize=(6.4, 3.2), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(classes))
    width = 0.8 / max(1, len(splits))
    colours = {"train": "#4c72b0", "val": "#dd8452", "test": "#55a868"}
    for i, split in enumerate(splits):
        values = np.array([int(counts[split].get(c, 0)) for c in classes])
        pos = x + (i - (len(splits) - 1) / 2) * width
        bars = ax.bar(pos, np.where(values > 0, values, np.nan), width, label=split, color=colours.get(split))
        ax.bar_label(bars, labels=[str(v) if v else "" for v in values], fontsize=7)
    ax.set_yscale("log")
    top = max([int(v) for split in splits for v in counts[split].values()] + [1])
    ax.set_ylim(0.7, top * 3)  # room for the count above the tallest bar
    ax.set_xticks(x, list(classes))
    ax.set_xlabel("class (label rule of the dataset)")
    ax.set_ylabel("images (log scale)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper right")  # the rare classes' short bars leave that corner free
    return _png_figure(fig)


def training_curves(runs: list[tuple[str, list[dict]]]) -> str | None:
    """Training loss against step for every run with a log (log scale); a data URI, or None.

    Diffusion runs (ε-MSE, min-SNR weighted in the demo recipe) and ceVAE runs (L1 reconstruction + context
    encoding + β·KL, recognised by their ``loss_rec`` entries) log different losses, so each kind gets its own panel.
    """
    from matplotlib.figure import Figure

    runs = [(name, log) for name, log in runs if any("loss" in e for e in log)]
    if not runs:
        return None
    groups: dict[str, list] = {}
    for name, log in runs:
        kind = "ceVAE (L1 + context encoding + β·KL)" if any("loss_rec" in e for e in log) else "diffusion (ε loss)"
        groups.setdefault(kind, []).append((name, log))
    fig = Figure(figsize=(6.4 if len(groups) == 1 else 11.0, 3.4), layout="constrained")
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, (kind, members) in zip(axes, sorted(groups.items(), key=lambda kv: kv[0].startswith("ceVAE")), strict=True):
        for name, log in members:
            pts = [(e["step"], e["loss"]) for e in log if "loss" in e and "step" in e]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name, linewidth=1.2,
                    marker="." if len(pts) < 30 else None)
        ax.set_yscale("log")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("training loss (as logged)")
        ax.set_title(f"{kind}: log.jsonl", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")  # a falling loss leaves that corner free
    return _png_figure(fig)


# ---------------------------------------------------------------------------------------------- sections


class _Page:
    """The report's body as a list of blocks (plain dicts of text and data URIs that the templates turn into HTML,
    escaping every value) and its table of contents."""

    def __init__(self):
        self.blocks: list[dict] = []
        self.toc: list[tuple[str, str]] = []

    def h2(self, anchor: str, title: str) -> None:
        self.toc.append((anchor, title))
        self.blocks.append({"kind": "h2", "anchor": anchor, "text": title})

    def h3(self, text: str) -> None:
        self.blocks.append({"kind": "h3", "text": text})

    def add(self, *blocks: dict | None) -> None:
        self.blocks.extend(b for b in blocks if b)

    def p(self, text: str, cls: str | None = None) -> None:
        self.blocks.append({"kind": "p", "text": text, "cls": cls})

    def box(self, kind: str, text: str, link: tuple[str, str] | None = None) -> None:
        """A highlighted paragraph: ``kind`` "note" (yellow) or "caveat" (red); ``link`` (anchor, title) to a section."""
        self.blocks.append({"kind": kind, "text": text, "link": link})

    def bullets(self, items: Sequence[str]) -> None:
        if items:
            self.blocks.append({"kind": "list", "entries": list(items)})


def _eval_columns(parts: Parts) -> list[tuple[Path, str, dict]]:
    labels = {}
    for path, rec in parts.evals.items():
        gpath = Path(str((rec.get("generated") or {}).get("path") or ""))
        manifest = parts.samples.get(gpath.resolve()) if str(gpath) else None
        if manifest is None and (gpath / "manifest.json").is_file():
            manifest = _json(gpath / "manifest.json")
        labels[path] = generator_label(manifest or {"generator": (rec.get("generated") or {}).get("generator")}, path.name)
    return [(p, lab, parts.evals[p]) for p, lab in _ordered_labels(labels)]


def _is_cevae_run(rec: dict) -> bool:
    return (rec.get("config") or {}).get("kind") == "cevae" or (rec.get("meta") or {}).get("model_type") == "cevae"


def _run_kind(rec: dict) -> str:
    """Column title of a run: ceVAE, autoencoder (of latent diffusion), or the DDPM's conditioning kind."""
    if _is_cevae_run(rec):
        return "ceVAE"
    cfg = rec.get("config") or {}
    if cfg.get("kind") == "autoencoder" or (rec.get("meta") or {}).get("model_type") == "autoencoder":
        return "autoencoder"  # no conditioning: its config's default would read as a discrete DDPM
    kind = (cfg.get("conditioning") or {}).get("kind") or ((rec.get("meta") or {}).get("conditioning") or {}).get("kind")
    return str(kind or "run")


def _run_labels(parts: Parts) -> list[tuple[Path, str, dict]]:
    """Runs in the paper's column order, titled by their conditioning (plus the folder name when ambiguous)."""
    return [(p, lab, parts.runs[p]) for p, lab in _ordered_labels({p: _run_kind(r) for p, r in parts.runs.items()})]


def _preset(rec: dict) -> str | None:
    """The shipped preset a run was made from, read from its config name (``demo``, ``cevae-demo-cevae``...)."""
    from flaresynth.config import PRESETS

    name = str(_cfg(rec, "name"))
    for p in sorted(PRESETS, key=len, reverse=True):  # longest first: cevae-demo before demo
        if name == p or name.startswith(p + "-"):
            return p
    return None


def _undertrained(rec: dict) -> tuple[int, str | None] | None:
    """(steps, preset) of a run shorter than its preset's recipe (or than its own plan); None otherwise."""
    prov = rec.get("provenance") or {}
    steps, planned = prov.get("steps"), prov.get("planned_steps")
    if not isinstance(steps, int):
        return None
    preset = _preset(rec)
    recipe = planned_steps(preset)
    if preset in TEST_PRESETS or (recipe and steps < recipe) or (isinstance(planned, int) and steps < planned):
        return steps, preset
    return None


def _section_summary(page: _Page, parts: Parts, columns) -> None:
    page.h2("summary", "At a glance")
    items = []
    for path, rec in parts.datasets.items():
        counts = (rec.get("counts") or {}).get("all") or {}
        sim = _is_simulated(rec, parts)
        what = "the simulated Sun (not SDO/AIA)" if sim else "archive data" if sim is False else "an image source"
        items.append(f"Data: {rec.get('n_images', sum(counts.values()))} images of {what} in {path.name} — "
                     + ", ".join(f"{c} {n}" for c, n in counts.items()) + ".")
    for _, label, rec in columns:
        m = rec["metrics"]
        f1 = m.get("F1_judge") or {}
        fd = m.get("FD_domain") or {}
        ens = m.get("F1_judge_ensemble")
        ens_text = (f"; ensemble of {len(rec['details']['judge_ensemble']['judges'])} judges "
                    f"{_fmt(ens.get('value'))} (ceiling {_fmt(ens.get('benchmark'))})") if ens else ""
        fd_judges = rec["details"].get("FD_domain_judges")
        fd_text = (f" (ratio in each judge's features: {' / '.join(_fmt(j.get('ratio')) for j in fd_judges)})"
                   if fd_judges else "")
        items.append(f"{label}: judge F1 {_fmt(f1.get('value'))} (real-test ceiling {_fmt(f1.get('benchmark'))}{ens_text}); "
                     f"FD_domain {_fmt(fd.get('value'))} vs real-vs-real {_fmt(fd.get('benchmark'))}{fd_text}; "
                     f"{rec['generated']['n']} generated images.")
    for rec in parts.experiments.values():
        s = rec.get("summary") or {}
        if rec.get("experiment") == "augment":
            items.append("Augmentation experiment (balanced accuracy on the real test split): "
                         + "; ".join(f"{(rec['regimes'].get(r) or {}).get('title', r)} {_pct(v.get('balanced_accuracy'))}"
                                     for r, v in s.items()) + ".")
        elif rec.get("experiment") == "forecast":
            items.append("24 h forecast (TSS): " + "; ".join(f"{r} {_fmt((v.get('tss') or {}).get('mean'))}"
                                                            for r, v in s.items()) + ".")
    if any(_is_simulated(rec, parts) for rec in parts.datasets.values()):
        page.box("caveat", "Simulated data: every image here comes from flaresynth's simulated Sun, not from SDO/AIA. "
                 "The numbers say how well each generator imitates the simulator; they are not evidence about the real Sun",
                 link=("caveats", "What the numbers do and do not show"))
    page.bullets(items)
    if columns:
        header, rows = headline_table([(label, rec["metrics"]) for _, label, rec in columns])
        page.h3("Headline numbers")
        page.add(_table(header, rows, "headline"))
        n_gen = ", ".join(f"{label} {rec['generated']['n']}" for _, label, rec in columns)
        res = columns[0][2].get("resampling") or {}
        real = columns[0][2].get("real") or {}
        page.p(f"Mean ± std over {res.get('repeats')} resampling(s) of the real {real.get('split')} split "
               f"({real.get('n_split')} images; generated and benchmark halves of {res.get('evaluated_size')} images). "
               f"Generated images per generator: {n_gen}. The benchmark row is what real data score against real data "
               "of the same size (for the judge F1: the judge on the real test split, its ceiling); a generator is as good "
               "as real data when it reaches that row, not the ideal one. ↑ higher is better, ↓ lower is better, → 1 "
               "closer to 1 is better. Every metric is in the full table under Metrics.", "small")
    for rec in parts.demos.values():
        for n in rec.get("notes") or []:
            page.box("note", n)


def _section_data(page: _Page, parts: Parts) -> None:
    page.h2("data", "Data")
    if not parts.datasets and not parts.sims:
        page.p("No dataset folder was found among the inputs.", "note")
    for path, rec in parts.datasets.items():
        page.h3(path.name)
        sim = _is_simulated(rec, parts)
        src = rec.get("sources") or {}
        if sim:
            page.p("Source: flaresynth's simulated Sun, written in the real archive formats (SDOMLv2 zarr, GOES XRS "
                   "netCDF, HEK JSON). It is not the Sun: its statistics were calibrated against one real AIA frame "
                   "and GOES flare statistics, nothing more.", "note")
        elif sim is False:
            page.p(f"Source: archive data ({src.get('image_source_type', 'images')} from {src.get('images')}).")
        build = rec.get("build") or {}
        time_range = "–"
        try:
            from flaresynth.dataset import dataset_summary, open_dataset

            summ = dataset_summary(open_dataset(path))
            time_range = f"{summ['time_range'][0]} .. {summ['time_range'][1]}"
        except FlaresynthError:
            pass
        kv = [
            ("images", rec.get("n_images")),
            ("image size", f"{rec.get('image_size')} px, channels {', '.join(rec.get('channels') or [])}"),
            ("label scheme / rule", f"{rec.get('scheme')} / {rec.get('label_rule')}"),
            ("time range", time_range),
            ("image source", f"{src.get('images')} ({src.get('n_source_frames')} frames)"),
            ("GOES files", f"{len(src.get('goes_files') or [])} ({src.get('goes_scale')} fluxes)"),
            ("HEK events", src.get("n_hek_events")),
            ("selection", f"flare frames within {build.get('window_min')} min of a HEK peak, "
                          f"{build.get('quiet_per_day')} quiet frames a day" + _small_events_note(rec.get("small_events"))),
            ("splits", f"by whole {build.get('split_by', 'day')} blocks, {build.get('buffer_days', 0):g}-day buffers: "
                       f"test {build.get('test_fraction')}, val {build.get('val_fraction')}"),
            ("data hash", _short(rec.get("data_hash"))),
        ]
        page.add(_table(["", ""], kv, "kv"))
        counts = rec.get("counts") or {}
        classes = list(rec.get("classes") or [])
        if counts and classes:
            rows = [[split] + [str(row.get(c, 0)) for c in classes] + [str(sum(row.values()))] for split, row in counts.items()]
            page.add(_table(["split", *classes, "total"], rows))
            page.add(_img(class_histogram(counts, classes, f"Images per class and split: {path.name}"), "class histogram",
                          "Images per class in each split (log scale; the number on each bar is the count)."))
        sim_rec = _sim_of(rec, parts)
        if sim_rec:
            _sim_block(page, *sim_rec)
    # other simulations, each shown once (a copy of a simulation has the same record)
    shown = [_sim_of(rec, parts)[1] for rec in parts.datasets.values() if _sim_of(rec, parts)]
    for path, sim in parts.sims.items():
        if sim not in shown:
            shown.append(sim)
            page.h3(f"Simulation {path.name}")
            _sim_block(page, path, sim)


def _sim_block(page: _Page, path: Path, sim: dict) -> None:
    kv = [("start, days, cadence", f"{sim.get('start')}, {sim.get('days')} days, {sim.get('cadence_min')} min"),
          ("seed", sim.get("seed")), ("AIA frames", sim.get("n_frames")),
          ("frames per GOES class (instant flux)", ", ".join(f"{c} {n}" for c, n in (sim.get("frames_per_class") or {}).items())),
          ("HEK flare events", f"{sim.get('n_hek_events')} ("
                               + ", ".join(f"{c} {n}" for c, n in (sim.get("n_flares") or {}).items()) + ")"),
          ("active regions", sim.get("n_active_regions"))]
    page.p(f"Simulation in {path}", "small")
    page.add(_table(["", ""], kv, "kv"))
    page.add(_img(_png_file(path / "montage.png"), "simulator montage",
                  "The simulated Sun at 512 px: frames by the GOES class of their instantaneous flux (rows A to X).",
                  width="720px"))


def _section_models(page: _Page, parts: Parts) -> None:
    page.h2("models", "Models")
    if not parts.runs:
        page.p("No run folder was found (the samples folders name none that exists here).")
        return
    ds_hashes = {rec.get("data_hash") for rec in parts.datasets.values()}
    labelled = _run_labels(parts)
    runs = [(p, r) for p, _, r in labelled]
    label_of = {p: lab for p, lab, _ in labelled}
    header = ["", *[lab for _, lab, _ in labelled]]
    rows = []

    def row(name, fn):
        rows.append([name, *[_safe(fn, p, r) for p, r in runs]])

    row("conditioning", lambda p, r: "none (per-class latent Gaussians)" if _is_cevae_run(r) else str(_cfg(r, "conditioning", "kind")) + (
        f" (encoder {_cfg(r, 'conditioning', 'encoder')})" if _cfg(r, "conditioning", "encoder") not in ("–", None, "") else ""))
    row("image size", lambda p, r: f"{_cfg(r, 'model', 'sample_size')} px")
    row("network", lambda p, r: (
        f"ceVAE, encoder maps {_cfg(r, 'cevae', 'fmap_sizes')}, latent {_cfg(r, 'cevae', 'z_dim')}" if _is_cevae_run(r) else
        f"U-Net widths {_cfg(r, 'model', 'block_out_channels')}, {_cfg(r, 'model', 'layers_per_block')} layer(s) per "
        f"block, attention at {_cfg(r, 'model', 'attention_resolutions')} px"))
    row("parameters", lambda p, r: f"{_params(r) / 1e6:.2f} M" if _params(r) else "–")
    row("objective", lambda p, r: (
        f"VAE + context encoding (ce_factor {_cfg(r, 'cevae', 'ce_factor')}, KL β {_cfg(r, 'cevae', 'beta')}, "
        f"{_cfg(r, 'cevae', 'rec_loss')}); class latent Gaussians for sampling" if _is_cevae_run(r) else
        f"diffusion T={_cfg(r, 'diffusion', 'num_train_timesteps')}, {_cfg(r, 'diffusion', 'beta_schedule')} β, "
        f"{_cfg(r, 'diffusion', 'prediction_type')}, loss weighting {_cfg(r, 'diffusion', 'loss_weighting')}"))
    row("optimiser", lambda p, r: f"batch {_cfg(r, 'train', 'batch_size')}, lr {_cfg(r, 'train', 'lr')}, "
                                  f"warm-up {_cfg(r, 'train', 'warmup_steps')}, EMA ≤ {_cfg(r, 'train', 'ema_decay')}")
    row("steps done / planned", lambda p, r: f"{(r.get('provenance') or {}).get('steps', '–')} / "
                                             f"{(r.get('provenance') or {}).get('planned_steps', _cfg(r, 'train', 'steps'))}")
    row("training time", lambda p, r: _train_time(r))
    row("sampling default", lambda p, r: "decode a draw of the class's latent Gaussian" if _is_cevae_run(r) else
        f"{_cfg(r, 'sample', 'sampler')}, guidance w={_cfg(r, 'sample', 'guidance')}")
    row("data hash", lambda p, r: _short((r.get("provenance") or {}).get("data_hash"))
        + (" (= dataset)" if (r.get("provenance") or {}).get("data_hash") in ds_hashes else ""))
    row("model id", lambda p, r: (r.get("meta") or {}).get("model_id", "–"))
    row("folder", lambda p, r: str(p))
    page.add(_table(header, rows, "kv"))
    page.add(_img(training_curves([(label_of[p], r.get("log") or []) for p, r in runs]), "training curves",
                  "Loss against optimiser step from each run's log.jsonl (the DDPM demo recipe logs the min-SNR-weighted ε-MSE; "
                  "the ceVAE its L1 reconstruction + context-encoding + β·KL loss, in its own panel)."))
    short = [(label_of[p], u) for p, r in runs if (u := _undertrained(r))]
    if short:
        listing = ", ".join(f"{lab} {steps} steps" for lab, (steps, _) in short)
        text = training_caveats(preset for _, (_, preset) in short)
        page.box("caveat", f"Short training ({listing}). {text}")
    for p, r in runs:
        if r.get("grid"):
            page.add(_img(_png_file(r["grid"]), "training grid", f"{label_of[p]}: the last sample grid written "
                                                                 f"during training ({Path(r['grid']).name})", width="640px"))


def _safe(fn, p, r) -> str:
    try:
        return str(fn(p, r))
    except (KeyError, TypeError, ValueError, AttributeError):
        return "–"


def _cfg(rec: dict, *keys):
    d = rec.get("config") or ((rec.get("meta") or {}).get("config")) or {}
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return "–"
        d = d[k]
    return d


def _params(rec: dict):
    return (rec.get("provenance") or {}).get("parameters") or (rec.get("meta") or {}).get("parameters")


def _train_time(rec: dict) -> str:
    sessions = (rec.get("provenance") or {}).get("sessions") or []
    if not sessions:
        return "–"
    seconds = sum(float(s.get("seconds") or 0) for s in sessions)
    dev = sessions[-1].get("device", "")
    return f"{seconds / 60:.1f} min in {len(sessions)} session(s) on {dev}"


def _section_images(page: _Page, parts: Parts, columns) -> None:
    page.h2("samples", "Samples beside real images")
    if not columns and not parts.samples:
        page.p("No evaluation or samples folder was found.")
        return
    shown = set()
    for path, label, rec in columns:
        gen = rec.get("generated") or {}
        manifest = _json(Path(str(gen.get("path"))) / "manifest.json") if gen.get("path") else None
        how = ""
        if manifest:
            how = f" — {manifest.get('sampler')}"
            if manifest.get("guidance") is not None:
                how += f" {manifest.get('steps')} steps, guidance w={manifest.get('guidance')}"
            how += f", seed {manifest.get('seed')}, {manifest.get('n_images')} images"
        page.h3(label)
        figs = rec.get("figures") or {}
        channels = (rec.get("real") or {}).get("channels") or []
        main = "171A" if "171A" in channels else (channels[0] if channels else None)
        page.add(_img(_png_file(path / figs.get("class_grid", "figures/class_grid.png")),
                      f"{label} class grid", f"{label}: real test images (left) and generated ones (right) per class"
                      + (f", {main}" if len(channels) > 1 else "") + f"{how}.", width="900px"))
        if len(channels) > 1:
            # several channels: the composite first (does a flare look the same in every channel?), then each channel
            if figs.get("rgb_grid"):
                page.add(_img(_png_file(path / figs["rgb_grid"]), f"{label} RGB composite",
                              f"{label}: the same images as RGB composites, red 211 Å, green 193 Å, blue 171 Å (as in the "
                              "SDO press images), each colour its channel's log10 DN/s between its transform's limits.",
                              width="900px"))
            if figs.get("channel_class_grid"):
                page.add(_img(_png_file(path / figs["channel_class_grid"]), f"{label} channels per class",
                              f"{label}: per class one real and one generated image in every channel, each channel on "
                              "its own fixed scale (its transform's DN/s limits) shared by real and generated.",
                              width="900px"))
            page.add(_grid(*(_img(_png_file(path / figs[f"class_grid_{ch}"]), f"{label} {ch} grid", f"{label}: {ch}")
                             for ch in channels if f"class_grid_{ch}" in figs)))
        if gen.get("path"):
            shown.add(Path(str(gen["path"])).resolve())
    for path, manifest in parts.samples.items():
        if path.resolve() in shown:
            continue
        label = generator_label(manifest, path.name)
        page.h3(f"{label} ({path.name}, not evaluated)")
        page.add(_img(_png_file(path / "grid.png"), f"{label} grid", f"{label}: generated images, one row per class."))
    if columns:
        page.h2("std", "Per-class standard deviation maps")
        page.p("Per-pixel standard deviation over the images of each class, real (top) and generated (bottom). A generator "
               "that varies too little (mode collapse) shows dark maps; one that varies in the wrong places shows other "
               "patterns than the real ones.")
        page.add(_grid(*(
            _img(_png_file(path / (rec.get("figures") or {}).get("std_maps", "figures/std_maps.png")), f"{label} std maps", label)
            for path, label, rec in columns)))
        page.h2("tsne", "t-SNE of features")
        page.p("Real (dots) and generated (crosses) feature vectors together, coloured by class; generated points that sit "
               "in their class's real cloud are what a good generator produces. t-SNE distances between clusters mean little.")
        figs = []
        for path, label, rec in columns:
            for key, rel in (rec.get("figures") or {}).items():
                if key.startswith("tsne"):
                    figs.append(_img(_png_file(path / rel), f"{label} t-SNE", f"{label}: {key.replace('tsne_', '')} features"))
        page.add(_grid(*figs))


def _metric_order(columns) -> list[str]:
    from flaresynth.evaluate import metric_order

    encoders: list[str] = []
    names: list[str] = []
    for _, _, rec in columns:
        for e in (rec.get("details") or {}).get("encoders") or {}:
            if e not in encoders:
                encoders.append(e)
        names += [k for k in rec["metrics"] if k not in names]
    return metric_order(encoders, names)


def _metric_title(name: str) -> str:
    fam, _, who = name.partition("_")
    return f"{FAMILY_NAMES.get(fam, fam)} · {who}" if who else FAMILY_NAMES.get(fam, fam)


def _section_metrics(page: _Page, parts: Parts) -> None:
    columns = _eval_columns(parts)
    page.h2("metrics", "Metrics")
    for rec in parts.demos.values():
        for g in (rec.get("generators") or {}).values():
            if not g.get("source"):
                page.box("note", f'{g.get("title")}: not evaluated, {g.get("note", "not available")}.')
    if not columns:
        page.p("No evaluation folder was found.")
        return
    groups: dict[str, list] = {}
    for col in columns:
        groups.setdefault(str((col[2].get("real") or {}).get("data_hash")), []).append(col)
    for cols in groups.values():
        real = cols[0][2].get("real") or {}
        if len(groups) > 1:
            page.h3(f"Against {Path(str(real.get('path'))).name}")
        order = _metric_order(cols)
        rows = []
        varying = False
        for name in order:
            entries = [rec["metrics"].get(name) for _, _, rec in cols]
            benches = {(_fmt(e.get("benchmark"), e.get("benchmark_std"))) for e in entries if e}
            same = len(benches) <= 1
            varying |= not same
            first = next(e for e in entries if e)
            cells = []
            for e in entries:
                if not e:
                    cells.append("–")
                    continue
                bench = None if same else f'bench {_fmt(e.get("benchmark"), e.get("benchmark_std"))}'
                cells.append(Cell(_fmt(e.get("value"), e.get("std")), bench, below=True))
            bench = _fmt(first.get("benchmark"), first.get("benchmark_std")) if same else "per column"
            rows.append([Cell(_metric_title(name), name), bench, *cells, _fmt(first.get("ideal"))])
        header = ["metric", "real vs real (benchmark)", *[label for _, label, _ in cols], "ideal"]
        page.add(_table(header, rows))
        res = cols[0][2].get("resampling") or {}
        counts = "; ".join(f"{label}: {rec['generated']['n']} images ("
                           + ", ".join(f"{c} {n}" for c, n in (rec["generated"].get("counts") or {}).items()) + ")"
                           for _, label, rec in cols)
        page.p(f"Real images: the {real.get('split')} split of {Path(str(real.get('path'))).name} ({real.get('n_split')} "
               f"images), evaluated at {real.get('evaluated_at_size')} px. Distribution metrics: {res.get('repeats')} "
               f"resamplings; reference = a random half of the real split ({res.get('reference_size')} images); generated "
               f"and real-vs-real benchmark both {res.get('evaluated_size')} images; mean ± std over the resamplings. "
               f"Generated: {counts}.", "small")
        page.p("Benchmark: two disjoint halves of the real split compared with each other (CE/CD/CS/FD/KID), or the judge "
               "on the real test split, its ceiling (F1/precision/recall/accuracy). A generator is as good as real data "
               "when it reaches the benchmark, not the ideal. FD values of different encoders are not comparable with "
               "each other, and only Inception features give an FID comparable with published ones."
               + (" Benchmarks differ between columns (different sample counts), so each cell carries its own." if varying else ""),
               "small")
        xc = [(label, (rec.get("details") or {}).get("channels")) for _, label, rec in cols]
        if any(d for _, d in xc):
            page.p("XC_ratios (several channels): in each image's brightest region, the log10 ratios "
                   + ", ".join(next(d for _, d in xc if d)["ratios"]) + "; per class, the 1-Wasserstein distance (dex) of "
                   "their distribution to the real reference half, averaged. A generator whose every channel looks right "
                   "alone but whose channels do not belong together scores like real images with each channel shuffled "
                   "among the images of their class: " + "; ".join(f"{label}: {_fmt(d.get('shuffled'), d.get('shuffled_std'))}"
                                                                  for label, d in xc if d) + ".", "small")
        _per_class_f1(page, cols)
        notes: dict[str, list[str]] = {}
        for _, label, rec in cols:
            for n in rec.get("notes") or []:
                notes.setdefault(n, []).append(label)
        for n, labels in notes.items():
            who = "all generators" if len(labels) == len(cols) and len(cols) > 1 else ", ".join(labels)
            page.p(f"{who}: {n}", "small")


def _per_class_f1(page: _Page, cols) -> None:
    classes = list((cols[0][2].get("real") or {}).get("classes") or [])
    judge = [(label, (rec.get("details") or {}).get("judge") or {}) for _, label, rec in cols]
    ceiling = (judge[0][1].get("real_test") or {}).get("per_class") or {}
    if not classes:
        return
    rows = []
    for c in classes:
        cells = []
        for _, j in judge:
            pc = ((j.get("generated") or {}).get("per_class") or {}).get(c)
            cells.append(f"{_fmt(pc['f1'])} (n={pc['support']})" if pc and pc.get("support") else "not requested")
        real = ceiling.get(c)
        rows.append([c, f"{_fmt(real['f1'])} (n={real['support']})" if real and real.get("support") else "no test image",
                     *cells])
    page.h3("Judge F1 per class")
    page.add(_table(["class", "real test (ceiling)", *[label for label, _ in judge]], rows))


def _section_experiments(page: _Page, parts: Parts) -> None:
    page.h2("experiments", "Application experiments")
    if not parts.experiments:
        page.p("No experiment folder was found.")
        return
    for path, rec in parts.experiments.items():
        if rec.get("experiment") == "augment":
            _augment_block(page, path, rec)
        elif rec.get("experiment") == "forecast":
            _forecast_block(page, path, rec)


def _augment_block(page: _Page, path: Path, rec: dict) -> None:
    classes = rec["data"]["classes"]
    s, regimes = rec["summary"], list(rec["regimes"])
    test = rec["data"]["counts"]["test"]
    st, m = rec.get("settings") or {}, rec.get("model") or {}
    page.h3(f"Filling rare classes: real only, class-weighted, classical augmentation, generated, generated + classical ({path.name})")
    page.p(f"A DeiT ({m.get('num_hidden_layers')} layers, patch {m.get('patch_size')}, {(m.get('parameters') or 0) / 1e6:.2f} M "
           f"parameters) trained from scratch for {st.get('epochs')} epochs, {st.get('seeds')} seed(s); kept: {rec.get('selection')}. "
           f"The regimes that add images fill every class to {rec.get('target_per_class')} training images; tested on the real test "
           f"split ({sum(test.values())} images). Generated images from {Path(str((rec.get('generated') or {}).get('path'))).name}.")
    titles = [rec["regimes"][r]["title"] for r in regimes]
    units = rec["data"].get("independent_units_test") or {}

    def ci(r, key, pct):
        iv = (s[r].get("intervals") or {}).get(key) or {}
        if iv.get("low") is None:
            return ""
        return (f" [{100 * iv['low']:.1f}, {100 * iv['high']:.1f}] %" if pct else f" [{_fmt(iv['low'])}, {_fmt(iv['high'])}]")

    rows = [[f"{c} ({test[c]} test" + (f", {units[c]} independent" if c in units else "") + ")",
             *[_pct(s[r]["per_class_accuracy"].get(c)) for r in regimes]] for c in classes]
    rows.append(["balanced accuracy", *[_pct(s[r].get("balanced_accuracy")) + ci(r, "balanced_accuracy", True) for r in regimes]])
    rows.append(["macro-F1", *[_fmt((s[r].get("macro_f1") or {}).get("mean"), (s[r].get("macro_f1") or {}).get("std"))
                               + ci(r, "macro_f1", False) for r in regimes]])
    page.add(_table(["class (test images)", *titles], rows))
    if units:
        page.p("Independent units: flare events (flare frames) and days (other frames) of the test split; intervals: "
               "95 % bootstrap over them.", "small")
    verdicts = _noise_verdicts(s, rec["regimes"], "balanced_accuracy")
    if verdicts:
        page.p("Balanced accuracy against real data only: " + "; ".join(verdicts) + ".")
    rows = [[rec["regimes"][r]["title"], *[f"{rec['regimes'][r]['real'][c]} + {rec['regimes'][r]['added'][c]}" for c in classes]]
            for r in regimes]
    page.p("Training images per class (real + added):", "small")
    page.add(_table(["regime", *classes], rows))
    figs = rec.get("figures") or {}
    page.add(_grid(
             _img(_png_file(path / figs.get("per_class_accuracy", "per_class_accuracy.png")), "per-class accuracy",
                    "Accuracy per class on the real test split; error bars = std over seeds."),
             _img(_png_file(path / figs.get("confusion", "confusion.png")), "confusion matrices",
                    "Row-normalised mean confusion matrix of each regime.")))
    for n in rec.get("notes") or []:
        page.p(n, "small")


def _noise_verdicts(summary: dict, regimes: dict, key: str) -> list[str]:
    """"<regime>: within noise | above | below" against real data only, by overlap of the bootstrap intervals."""
    base = (summary.get("real", {}).get("intervals") or {}).get(key) or {}
    out = []
    for r in regimes:
        iv = (summary[r].get("intervals") or {}).get(key) or {}
        if r == "real" or base.get("low") is None or iv.get("low") is None:
            continue
        overlap = base["low"] <= iv["high"] and iv["low"] <= base["high"]
        verdict = "within noise" if overlap else ("above" if iv["low"] > base["high"] else "below")
        out.append(f"{regimes[r].get('title', r)}: {verdict}")
    return out


def _forecast_block(page: _Page, path: Path, rec: dict) -> None:
    s, regimes, d = rec["summary"], list(rec["regimes"]), rec["data"]
    ind = d.get("independent") or {}
    page.h3(f"24 h flare forecast ({path.name})")
    conv = (rec.get("flux_convention") or {}).get("description")
    page.p(f"Label: {rec.get('label')}" + (f" (flux convention: {conv})" if conv else "") + ". "
           f"Test split: {d['counts']['test']['positive']} positive issue times"
           + (f" from {ind['flares_behind_test_positives']} independent flares" if ind.get("flares_behind_test_positives") is not None else "")
           + f", {d['counts']['test']['negative']} negative (climatological rate {_fmt(d.get('climatological_rate_test'))}); "
           f"{(rec.get('settings') or {}).get('seeds')} seed(s). Decision threshold: "
           f"{rec.get('threshold_rule', 'argmax (results made before thresholds were chosen on the validation split)')}. "
           "Each score: mean ± std over seeds, then its 95 % grouped-bootstrap interval (whole flares and days).")

    def ci(r, key):
        iv = (s[r].get("intervals") or {}).get(key) or {}
        return f" [{_fmt(iv['low'])}, {_fmt(iv['high'])}]" if iv.get("low") is not None else ""

    rows = []
    for r in regimes:
        info, c = rec["regimes"][r], s[r].get("contingency") or {}
        rows.append([info["title"], f"{info['n_real']} + {info['added_positive']}",
                     _fmt((s[r].get("tss") or {}).get("mean"), (s[r].get("tss") or {}).get("std")) + ci(r, "tss"),
                     _fmt((s[r].get("hss") or {}).get("mean"), (s[r].get("hss") or {}).get("std")) + ci(r, "hss"),
                     _fmt((s[r].get("tss_max") or {}).get("mean")),
                     _fmt((s[r].get("bss") or {}).get("mean"), (s[r].get("bss") or {}).get("std")) + ci(r, "bss"),
                     *[_fmt((c.get(k) or {}).get("mean"), digits=1) for k in ("tp", "fp", "fn", "tn")]])
    page.add(_table(["regime", "training images (real + added positives)", "TSS", "HSS", "TSS-max (test)", "BSS",
                     "TP", "FP", "FN", "TN"], rows))
    verdicts = _noise_verdicts(s, rec["regimes"], "tss")
    if verdicts:
        page.p("TSS against real data only: " + "; ".join(verdicts) + ".")
    figs = rec.get("figures") or {}
    page.add(_grid(
        _img(_png_file(path / figs.get("forecast_skill", "forecast_skill.png")), "forecast skill",
             "TSS and HSS per regime; error bars = std over seeds."),
        _img(_png_file(path / figs["roc_reliability"]) if figs.get("roc_reliability") else None, "ROC and reliability",
             "ROC curves and reliability diagram of the seed-mean probabilities on the test split.")))
    for n in rec.get("notes") or []:
        page.p(n, "small")


def _section_caveats(page: _Page, parts: Parts, columns) -> None:
    page.h2("caveats", "What the numbers do and do not show")
    items = []
    sims = [_is_simulated(rec, parts) for rec in parts.datasets.values()]
    if any(sims):
        items.append("The images come from flaresynth's simulated Sun, not from SDO/AIA. A generator that imitates them "
                     "well has learned the simulator's Sun; that says nothing yet about real AIA images, whose texture, "
                     "flare morphology and class boundaries are messier.")
    if columns:
        items.append("The 'domain' encoder is the judge CNN's penultimate layer, so CE/CD/CS/FD/KID on domain features and "
                     "the judge F1 are not independent evidence: a generator that fools the judge also scores well on its "
                     "features. The EfficientNet-Lite0 (ImageNet) features, when present, are the independent view.")
        training = (((columns[0][2].get("details") or {}).get("judge") or {}).get("training") or {})
        if training.get("cpu"):
            items.append(f"The judge (seed {training.get('seed')}) was trained on {training['cpu']} "
                         f"({training.get('cpu_capability')}, torch {training.get('torch')}). The same seed trains another "
                         "judge on another CPU model, and every judge-based figure moves with it; compare figures only "
                         "under the same judge (the package ships the demo dataset's judges for that).")
        n_gen = sorted({rec["generated"]["n"] for _, _, rec in columns})
        real = columns[0][2].get("real") or {}
        res = columns[0][2].get("resampling") or {}
        items.append(f"Sample counts are small: {', '.join(map(str, n_gen))} generated images per generator against "
                     f"{real.get('n_split')} real {real.get('split')} images, compared in halves of "
                     f"{res.get('evaluated_size')} over {res.get('repeats')} resampling(s). Differences smaller than the "
                     "± std (or than the gap between generator and benchmark) are not differences; FD is biased upwards "
                     "at these sizes, which is why only the same-size benchmark beside it is meaningful.")
        absent = []
        for _, _, rec in columns[:1]:
            ceiling = ((rec.get("details") or {}).get("judge") or {}).get("real_test") or {}
            absent = [c for c, v in (ceiling.get("per_class") or {}).items() if not v.get("support")]
        if absent:
            items.append(f"The real test split holds no image of class {', '.join(absent)}: the judge's ceiling and every "
                         "per-class real-data number for it are undefined, and the macro means leave it out.")
        if any("F1_referee" in rec["metrics"] for _, _, rec in columns):
            items.append("The physical referee F1 uses the simulator's own X-ray flux estimator on the generated images; it "
                         "exists only for simulated data and is independent of the judge.")
    short = [(lab, u) for _, lab, r in _run_labels(parts) if (u := _undertrained(r))]
    if short:
        listing = ", ".join(f"{lab}: {steps} steps" + (f", {preset} preset" if preset else "") for lab, (steps, preset) in short)
        items.append(f"Generators trained briefly ({listing}) are undertrained: their numbers describe those runs, not "
                     "what the method can do (see Models).")
    for rec in parts.experiments.values():
        st = rec.get("settings") or {}
        what = "augmentation" if rec.get("experiment") == "augment" else "forecast"
        items.append(f"The {what} experiment ran {st.get('seeds')} seed(s) of {st.get('epochs')} epoch(s) on a small "
                     "test split: its ± std is over seeds only, and a few test images decide each per-class accuracy.")
        reused = [n for n in rec.get("notes") or [] if "reused" in n]
        if reused:
            items.append("Generated images were reused many times to fill the rare classes (" + reused[0] + "); the "
                         "'generated' regime then sees few distinct examples, which limits what it can show.")
    items.append("None of this is a claim about the paper's numbers: Ramunno et al. (2024) trained a 23 M-parameter DDPM "
                 "on real SDO/AIA data on a GPU; their real-vs-real cluster benchmark was CE 0.002, CD 1.001, CS 0.998.")
    page.bullets(items)


def _section_demo(page: _Page, parts: Parts) -> None:
    if not parts.demos:
        return
    page.h2("demo", "How this was made")
    for path, rec in parts.demos.items():
        cfg = rec.get("config") or {}
        page.p(f"flaresynth demo into {path}: {cfg.get('days')} simulated days (cadence {cfg.get('cadence_min')} min, "
               f"seed {cfg.get('seed')}), {cfg.get('per_class')} generated images per class ({cfg.get('sampler')} "
               f"{cfg.get('sampler_steps')} steps for a DDPM teacher, a distilled student's own steps; the generators "
               f"table below gives each one's sampler and U-Net evaluations per image), {cfg.get('repeats')} resampling(s) of the real test split, features "
               f"{', '.join(cfg.get('features') or [])}, augmentation with {cfg.get('augment_seeds')} seed(s) × "
               f"{cfg.get('augment_epochs')} epoch(s) of a {cfg.get('augment_layers')}-layer DeiT"
               + (f" filling classes to {cfg.get('augment_target')} images" if cfg.get("augment_target") else "")
               + (f", generators retrained for {cfg.get('train_minutes')} min in total" if cfg.get("train_minutes") else "")
               + (" (--quick sizes)" if cfg.get("quick") else "") + ".")
        rows = []
        stages = rec.get("stages") or {}
        for name, st in stages.items():
            rows.append([name, st.get("folder", ""), st.get("status", ""), _fmt(st.get("seconds"), digits=1),
                         _fmt(st.get("cpu_seconds"), digits=1)])
        rows.append(["total", "", "", _fmt(sum(float(st.get("seconds") or 0) for st in stages.values()), digits=1),
                     _fmt(sum(float(st.get("cpu_seconds") or 0) for st in stages.values()), digits=1)])
        page.add(_table(["stage", "folder", "status", "wall time (s)", "CPU time (s)"], rows))
        page.p("Wall and CPU time of each stage when it ran (the CPU time counts the demo process only; on a shared "
               "machine the wall time is longer). A stage skipped in a later session keeps the times of the session "
               "that ran it.", "small")
        gens = rec.get("generators") or {}
        if gens:
            page.add(_table(["generator", "source", "run", "sampling", "note"],
                            [[g.get("title", k), g.get("source") or "not available", g.get("run", "–"),
                              sampling_line(g) or "–", g.get("note", "")] for k, g in gens.items()]))
        sessions = rec.get("sessions") or []
        if len(sessions) > 1:
            page.p(f"{len(sessions)} sessions; the last skipped "
                   f"{sum(1 for s in sessions[-1].get('stages', []) if s.get('status') == 'skipped')} complete stage(s).",
                   "small")


def render(parts: Parts, title: str | None = None) -> str:
    """The report as one HTML string (see the module docstring)."""
    title = title or "flaresynth report"
    page = _Page()
    columns = _eval_columns(parts)
    _section_summary(page, parts, columns)
    _section_data(page, parts)
    _section_models(page, parts)
    _section_images(page, parts, columns)
    _section_metrics(page, parts)
    _section_experiments(page, parts)
    _section_caveats(page, parts, columns)
    _section_demo(page, parts)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return _TEMPLATES.get_template("report.html.j2").render(
        title=title, stamp=stamp, toc=page.toc, blocks=page.blocks, version=__version__, inputs=parts.inputs)


def build_report(inputs: Sequence[str | Path], out: str | Path, title: str | None = None) -> Path:
    """Discover the folders under ``inputs`` and write the self-contained HTML report ``out`` (atomically).

    Parameters
    ----------
    inputs : demo, run, samples, evaluation, experiment, dataset or simulation folders, in any mix.
    out : the HTML file to write.
    title : the page title (default "flaresynth report").
    """
    out = Path(out)
    if out.is_dir():
        raise input_error(out, None, "is a folder; --out names the HTML file to write (e.g. report.html)")
    text = render(discover(inputs), title)
    with atomic_file(out, "w") as fh:
        fh.write(text)
    return out


__all__ = ["Parts", "classify", "discover", "render", "build_report", "generator_label", "training_caveat", "training_caveats",
           "class_histogram", "training_curves", "headline_table", "HEADLINE_METRICS", "HEADLINE_SHORT"]
