import subprocess
import sys

import pytest
import typer

from flaresynth.cli import app, main


def run(*args):
    return subprocess.run([sys.executable, "-m", "flaresynth", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_the_commands():
    r = run("--help")
    assert r.returncode == 0
    for command in ("goes", "simulate", "dataset"):
        assert command in r.stdout


def test_unknown_command_fails_cleanly():
    r = run("no-such-command")
    assert r.returncode != 0
    assert "Traceback" not in r.stderr


def test_missing_dataset_is_one_line_error():
    r = run("dataset", "info", "/nonexistent/ds")
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "/nonexistent/ds" in lines[0]
    assert "Traceback" not in r.stderr


def _commands(group, path=()):
    """Every command of the CLI as its words, e.g. ("dataset", "build")."""
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group (typer may build it on its own copy of click)
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name)


COMMANDS = sorted(_commands(typer.main.get_command(app)))


def test_the_command_list_is_complete():
    assert {"goes", "simulate", "train", "sample", "evaluate", "demo", "report"} <= {c[0] for c in COMMANDS}
    assert ("dataset", "build") in COMMANDS and ("experiment", "augment") in COMMANDS


@pytest.mark.parametrize("words", COMMANDS, ids=" ".join)
def test_help_of_every_command(words, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*words, "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    assert "Usage:" in out and " ".join(words) in out and "--help" in out
