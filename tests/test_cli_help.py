"""`earshot --help` and a mistyped command line, as a newcomer meets them: plain metavars, `-h`, one error style.

Each runs the installed `earshot` script; the checks hold for the typer and click range pyproject.toml pins.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bots.cli import app

EARSHOT = str(Path(sys.executable).with_name("earshot"))
COMMANDS = [c.name or c.callback.__name__ for c in app.registered_commands]


def earshot(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EARSHOT, *args], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "COLUMNS": "100", "NO_COLOR": "1"})


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_has_plain_metavars_and_answers_to_dash_h(command):
    args = [command] if command else []
    long, short = earshot(*args, "--help"), earshot(*args, "-h")
    assert long.returncode == 0 and short.returncode == 0, long.stderr + short.stderr
    assert short.stdout == long.stdout
    for typed in ("<bool>", "<str>", "<int>", "<path>", "{file}", "BOOLEAN"):
        assert typed not in long.stdout, f"{typed} in `earshot {command or ''} --help`"
    if command in ("transcribe", "summarize", "sentiment", "events", "ask", "translate"):
        assert f"Usage: earshot {command} [OPTIONS] FILE" in long.stdout
        assert "Audio or video file" in long.stdout          # the argument's own help is shown
        assert "-v" in long.stdout and "--verbose" in long.stdout


def test_earshot_alone_shows_the_help():
    out = earshot()
    assert out.returncode == 0 and "Usage: earshot" in out.stdout and out.stderr == ""


@pytest.mark.parametrize("args, said", [
    (["transcribe", "note.ogg", "--bogus"], "No such option"),
    (["transcrbe", "note.ogg"], "No such command"),
    (["translate", "note.ogg"], "Missing option '--to'"),
    (["telegram", "--port", "many"], "'many' is not a valid integer"),
])
def test_a_usage_mistake_is_one_line_in_earshots_own_style(args, said):
    out = earshot(*args)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("earshot: ") and said in lines[0] and "--help" in lines[0]
    assert "╭" not in out.stderr and "Usage:" not in out.stderr


def test_own_errors_use_the_same_style(tmp_path):
    out = earshot("transcribe", str(tmp_path / "missing.ogg"))
    assert out.returncode == 1 and out.stderr.startswith("earshot: ") and len(out.stderr.splitlines()) == 1


@pytest.mark.parametrize("fmt", ["srt", "vtt", "text"])
def test_json_with_another_format_is_refused_before_anything_runs(tmp_path, fmt):
    out = earshot("transcribe", str(tmp_path / "missing.ogg"), "--json", "--format", fmt)
    assert out.returncode == 2
    assert out.stderr.startswith("earshot: ") and "--json" in out.stderr and f"--format {fmt}" in out.stderr
    assert "missing.ogg" not in out.stderr            # refused before the file is even looked at
