"""Markdown tables for docs/ from evaluation folders (``flaresynth evaluate``), one column block per generator.

    python docs/tables.py NAME=EVAL_DIR [NAME=EVAL_DIR ...] > docs/evaluation_demo.md

Every number is read from the folders' ``metrics.json``; nothing is typed in by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from flaresynth.evaluate import metric_order


def _fmt(value, std=None) -> str:
    if value is None:
        return "–"
    text = f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return f"{text} ± {std:.2g}" if std is not None else text


def evaluation_tables(evals: dict[str, Path]) -> str:
    """The paper-shaped metrics table (generators as rows, real-vs-real benchmark row) and per-class judge F1."""
    loaded = {name: json.loads((path / "metrics.json").read_text()) for name, path in evals.items()}
    first = next(iter(loaded.values()))
    shared = [k for k in first["metrics"] if all(k in m["metrics"] for m in loaded.values())]
    names = [k for k in metric_order(first["details"]["encoders"], shared) if not k.startswith("accuracy")]
    real = first["real"]
    lines = [
        f"Real data: `{Path(real['path']).name}` (hash `{real['data_hash'][:12]}…`), `{real['split']}` split, "
        f"{real['n_split']} images, evaluated at {real['evaluated_at_size']} px. "
        f"Resamplings: {first['settings']['repeats']}; encoders: {', '.join(first['settings']['features'])}.",
        "",
        "| Generator | n | " + " | ".join(names) + " |",
        "|---" * (len(names) + 2) + "|",
    ]
    for name, m in loaded.items():
        cells = [_fmt(m["metrics"][k]["value"], m["metrics"][k].get("std")) for k in names]
        lines.append(f"| {name} | {m['generated']['n']} | " + " | ".join(cells) + " |")
    cells = [_fmt(first["metrics"][k]["benchmark"], first["metrics"][k].get("benchmark_std")) for k in names]
    lines.append("| *benchmark (real vs real; judge/referee on real test)* | – | " + " | ".join(cells) + " |")
    ideal = [_fmt(first["metrics"][k]["ideal"]) for k in names]
    lines.append("| *ideal* | – | " + " | ".join(ideal) + " |")

    classes = first["real"]["classes"]
    lines += ["", "Judge F1 per class (generated images of the requested class; the last row is the judge on real "
              "test images, where a class with no test image has no entry):", "",
              "| Generator | " + " | ".join(classes) + " | macro |", "|---" * (len(classes) + 2) + "|"]
    for name, m in list(loaded.items()) + [("*real test (ceiling)*", None)]:
        judge = (first if m is None else m)["details"]["judge"]["real_test" if m is None else "generated"]
        per = judge["per_class"]
        cells = [_fmt(per[c]["f1"]) if c in per and per[c].get("support") else "–" for c in classes]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_fmt(judge['f1'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    evals = {}
    for arg in argv:
        name, sep, path = arg.partition("=")
        if not sep:
            raise SystemExit(f"{arg!r}: expected NAME=EVAL_DIR")
        evals[name] = Path(path)
    sys.stdout.write(evaluation_tables(evals))


if __name__ == "__main__":
    main(sys.argv[1:])
