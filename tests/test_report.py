"""`flaresynth report` from a mix of small folders: discovery, references, the metrics table, self-containment."""

import base64
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from flaresynth.cli import main
from flaresynth.errors import FlaresynthError
from flaresynth.evaluate import EvaluateConfig, evaluate
from flaresynth.experiments.augment import AugmentConfig, run_augment
from flaresynth.labels import GOES_CLASSES
from flaresynth.report import build_report, classify, discover, generator_label
from flaresynth.samples import write_samples
from toy import disk_image, make_dataset

TRANSFORM = {"channel": "171A", "lo": 5.0, "hi": 3500.0}
COUNTS = {"train": [12, 12, 12, 8, 6], "val": [3, 3, 3, 3, 2], "test": [6, 6, 6, 4, 0]}  # no X in test, as in the demo
STRENGTH = 0.35  # flares bright enough for a judge trained in seconds to tell the classes apart


def make_samples(path, generator, conditioning=None, seed=1, per_class=6):
    rng = np.random.default_rng(seed)
    images = np.stack([disk_image(rng, 16, c, STRENGTH)[None] for c in range(5) for _ in range(per_class)])
    table = pd.DataFrame({"label": np.repeat(GOES_CLASSES, per_class), "requested_flux": np.nan,
                          "seed": np.arange(5 * per_class)})
    manifest = {"classes": list(GOES_CLASSES), "scheme": "goes5", "transform": TRANSFORM, "generator": generator}
    if conditioning:
        manifest["conditioning"] = conditioning
    return write_samples(path, images, table, manifest)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A dataset, a tiny trained run and its samples, two synthetic samples folders, three evaluations sharing one
    judge, and an augmentation experiment."""
    from flaresynth.sampling import sample
    from flaresynth.train import train

    root = tmp_path_factory.mktemp("report")
    ds = make_dataset(root / "ds", counts=COUNTS, size=16, strength=STRENGTH)
    run = train(ds, root / "run-discrete", preset="tiny", max_steps=3, progress=False)
    sample(run, root / "samples-discrete", per_class=3, sampler="dpm++", steps=4, fits=False)
    make_samples(root / "samples-cevae", "cevae-baseline")
    make_samples(root / "samples-continuous", "flaresynth-ddpm", "continuous", seed=2)
    cfg = dict(features=["domain"], repeats=2, clusters=3, judge=str(root / "judge"), judge_max_epochs=40)
    evals = {}
    for name in ("discrete", "cevae", "continuous"):
        evals[name] = evaluate(ds, root / f"samples-{name}", root / "evals" / name, EvaluateConfig(**cfg))
    run_augment(ds, root / "samples-cevae", root / "augment", AugmentConfig(seeds=1, epochs=1, layers=1), progress=False)
    return {"root": root, "ds": ds, "run": run, "evals": evals}


def _metrics_table(text: str) -> str:
    start = text.index('id="metrics"')
    return text[start:text.index("</table>", start)]


def test_folders_are_recognised_by_their_records(world):
    root = world["root"]
    assert classify(root / "ds")[0] == "dataset"
    assert classify(root / "run-discrete")[0] == "run"
    assert classify(root / "samples-cevae")[0] == "samples"
    assert classify(root / "evals" / "cevae")[0] == "eval"
    assert classify(root / "augment")[0] == "experiment"
    assert classify(root / "evals") is None  # a plain folder: searched, not a part itself
    assert generator_label({"generator": "cevae-baseline"}, "x") == "ceVAE"
    assert generator_label({"generator": "flaresynth-ddpm", "conditioning": "discrete+embedding"}, "x") == "discrete+embedding"


def test_references_bring_in_the_dataset_samples_and_run(world):
    """Only evaluation and experiment folders are given: the rest is found through what they name."""
    root = world["root"]
    parts = discover([root / "evals", root / "augment"])
    assert set(parts.evals) == {(root / "evals" / n).resolve() for n in ("discrete", "cevae", "continuous")}
    assert set(parts.datasets) == {(root / "ds").resolve()}
    assert {p.name for p in parts.samples} == {"samples-discrete", "samples-cevae", "samples-continuous"}
    assert {p.name for p in parts.runs} == {"run-discrete"}  # named by samples-discrete's manifest


def test_report_is_self_contained_and_shows_every_part(world, tmp_path):
    root = world["root"]
    out = build_report([root / "evals", root / "augment"], tmp_path / "r.html", title="test report")
    text = out.read_text()
    # offline: no script, no stylesheet link, no external URL in any attribute or CSS
    assert "<script" not in text.lower() and "<link" not in text.lower() and "@import" not in text
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert not re.search(r"url\(\s*['\"]?https?:", text, re.I)
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    # histogram, training curve, 3 class grids, 3 std maps, 3 t-SNE, 2 augmentation plots
    assert len(images) >= 13
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in images)
    for section in ("Data", "Models", "Samples beside real images", "Per-class standard deviation maps", "t-SNE of features",
                    "Metrics", "Application experiments", "What the numbers do and do not show"):
        assert f">{section}</h2>" in text, section
    assert "ds" in text and "0.03 M" not in text  # the dataset is named; parameter counts come from the run
    params = json.loads((world["run"] / "provenance.json").read_text())["parameters"]
    assert f"{params / 1e6:.2f} M" in text
    assert "Short training (discrete 3 steps)" in text and "smoke test" in text  # the tiny run is flagged
    assert "The real test split holds no image of class X" in text
    assert "not independent" in text


def test_metrics_table_has_the_papers_columns_and_the_right_numbers(world, tmp_path):
    root = world["root"]
    text = build_report([root], tmp_path / "r.html").read_text()
    table = _metrics_table(text)
    header = table[:table.index("</thead>")]
    cols = re.findall(r"<th>(.*?)</th>", header)
    assert cols == ["metric", "real vs real (benchmark)", "ceVAE", "discrete", "continuous", "ideal"]
    # each column carries its own evaluation's value (formatted as in the report), in the paper's order
    row = re.search(r"<tr><td>F1 \(macro\) · judge.*?</tr>", table).group(0)
    cells = re.findall(r"<td>(.*?)</td>", row)
    ev = world["evals"]
    expected = [f"{ev[n]['metrics']['F1_judge']['value']:.3f}" for n in ("cevae", "discrete", "continuous")]
    assert cells[2:5] == expected
    assert cells[1] == f"{ev['cevae']['metrics']['F1_judge']['benchmark']:.3f}"  # the judge's ceiling, shared
    # the synthetic "ceVAE" samples imitate the real classes; the 3-step DDPM produces noise
    assert ev["cevae"]["metrics"]["F1_judge"]["value"] > ev["discrete"]["metrics"]["F1_judge"]["value"]
    fd = re.search(r"<tr><td>Fréchet distance · domain.*?</tr>", table).group(0)
    assert f"{ev['continuous']['metrics']['FD_domain']['value']:.3f}" in fd
    # the headline table at the top: the real-vs-real benchmark row, one row per generator, the ideal row
    glance = text[text.index('id="summary"'):text.index('id="data"')]
    head = re.search(r'<table class="headline">.*?</table>', glance).group(0)
    assert re.findall(r"<th>(.*?)</th>", head)[:3] == ["", "judge F1 (macro) ↑", "FD domain ↓"]
    rows = {r[0]: r[1:] for r in (re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", head))
            if r}
    assert list(rows) == ["real vs real (benchmark)", "ceVAE", "discrete", "continuous", "ideal"]
    assert rows["real vs real (benchmark)"][0] == f"{ev['cevae']['metrics']['F1_judge']['benchmark']:.3f}"
    assert rows["discrete"][0] == f"{ev['discrete']['metrics']['F1_judge']['value']:.3f}"
    assert rows["continuous"][1].startswith(f"{ev['continuous']['metrics']['FD_domain']['value']:.3f} ± ")


def test_report_cli_and_one_line_errors(world, tmp_path, capsys):
    out = tmp_path / "cli.html"
    with pytest.raises(SystemExit) as exc:
        main(["report", "--out", str(out), str(world["root"] / "augment")])
    first = capsys.readouterr()
    assert exc.value.code == 0, first.err
    assert first.out.startswith(f"{out}: ") and "Filling rare classes" in out.read_text()  # the result on stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FlaresynthError, match="no flaresynth folder found"):
        build_report([empty], tmp_path / "x.html")
    with pytest.raises(SystemExit) as exc:
        main(["report", "--out", str(tmp_path / "y.html"), str(tmp_path / "missing")])
    assert exc.value.code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "missing" in err[0] and "no such folder" in err[0]
    with pytest.raises(FlaresynthError, match="is a folder"):
        build_report([world["root"] / "augment"], tmp_path)


def test_hostile_names_and_notes_come_out_escaped(world, tmp_path):
    """Folder names, titles and notes are text: the templates escape them, so none can add markup to the page."""
    hostile = "<script>alert(1)</script>"
    folder = tmp_path / "<script>alert(1)"  # a folder name cannot hold the closing tag's "/"
    shutil.copytree(world["root"] / "augment", folder)
    record = json.loads((folder / "results.json").read_text())
    record["notes"] = [*(record.get("notes") or []), f'a note with {hostile} and "quotes"']
    (folder / "results.json").write_text(json.dumps(record))
    text = build_report([folder], tmp_path / "r.html", title=f"<b>{hostile}</b>").read_text()
    assert "<script" not in text.lower() and "<b>" not in text
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert f"<title>&lt;b&gt;{escaped}&lt;/b&gt;</title>" in text
    assert "Filling rare classes: real only, class-weighted, classical augmentation, generated, generated + classical (&lt;script&gt;alert(1))" in text
    assert f"a note with {escaped} and &#34;quotes&#34;" in text
