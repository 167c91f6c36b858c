import subprocess
import sys


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
