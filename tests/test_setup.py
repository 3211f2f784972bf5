"""A newcomer's first command: `bin/earshot` in a fresh clone installs earshot and nothing it doesn't run.

The slow test clones the committed tree into a temporary directory and runs the README's first command there,
with pip's own cache shared with the machine (so a second run downloads nothing). It needs git and the package
index, as CI's fresh machine has them.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# a Python 3.9 as far as bin/setup can tell: the version check fails, the version it prints is 3.9.18
OLD_PYTHON = """#!/bin/sh
case "$2" in
  *platform*) echo 3.9.18 ;;
  *) exit 1 ;;
esac
"""


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHON")}
    return env | extra


def _fake_python(where: Path) -> Path:
    where.parent.mkdir(parents=True, exist_ok=True)
    where.write_text(OLD_PYTHON)
    where.chmod(where.stat().st_mode | stat.S_IXUSR)
    return where


def _copy_scripts(tmp_path: Path) -> Path:
    """bin/ and pyproject.toml alone: enough for bin/setup to reach its interpreter check."""
    shutil.copytree(ROOT / "bin", tmp_path / "bin")
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def test_a_python_older_than_3_11_is_named_in_one_line_with_the_override(tmp_path):
    tree = _copy_scripts(tmp_path / "earshot")
    old = _fake_python(tmp_path / "old" / "python3.9")
    out = subprocess.run([str(tree / "bin" / "earshot"), "--version"], capture_output=True, text=True, timeout=60,
                         env=_clean_env(PYTHON=str(old)))
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert str(old) in lines[0] and "3.9.18" in lines[0] and "PYTHON=" in lines[0] and "3.11" in lines[0]
    assert not (tree / ".venv").exists(), "nothing is created with the wrong interpreter"


def test_setup_refuses_an_unknown_argument(tmp_path):
    tree = _copy_scripts(tmp_path / "earshot")
    out = subprocess.run([str(tree / "bin" / "setup"), "everything"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "bin/setup [runtime|test]" in out.stderr


def test_running_earshot_never_installs_system_packages_or_test_tools():
    earshot = (ROOT / "bin" / "earshot").read_text()
    assert "bin/setup\" runtime" in earshot and "apt-get" not in earshot
    code = "\n".join(line for line in (ROOT / "bin" / "setup").read_text().splitlines()
                     if not line.lstrip().startswith("#"))
    # apt-get appears only inside the `test` branch
    guarded = code.split('if [ "$what" = test ] && ! ls /usr/lib/postgresql', 1)
    assert len(guarded) == 2 and "apt-get" not in guarded[0]
    assert "bin/setup\" test" in (ROOT / "bin" / "test").read_text()


@pytest.mark.slow
def test_fresh_clone_bin_earshot_version_installs_the_runtime_only(tmp_path):
    clone = tmp_path / "earshot"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    # a .venv left by an old interpreter is made again rather than used
    _fake_python(clone / ".venv" / "bin" / "python")
    out = subprocess.run([str(clone / "bin" / "earshot"), "--version"], capture_output=True, text=True,
                         timeout=900, env=_clean_env(PIP_DISABLE_PIP_VERSION_CHECK="1"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "earshot 0.1.0"
    said = [line for line in out.stderr.splitlines() if not line.startswith("WARNING: Location")]
    assert said[:2] == ["rebuilding .venv: it was made by a Python older than 3.11 or one that no longer runs",
                        "installing earshot into .venv…"], out.stderr
    assert len(said) == 2, "the install is one line of progress (no licence warnings, no pip chatter)"
    site = next((clone / ".venv" / "lib").glob("python3*/site-packages"))
    installed = {p.name.split("-")[0].lower() for p in site.iterdir()}
    assert "typer" in installed and "imageio_ffmpeg" in installed
    assert installed & {"pytest", "mypy", "ruff", "hypothesis", "numpy"} == set()
    # the second run installs nothing and says nothing
    again = subprocess.run([str(clone / "bin" / "earshot"), "--version"], capture_output=True, text=True,
                           timeout=120, env=_clean_env())
    assert again.returncode == 0 and again.stderr == "" and again.stdout.strip() == "earshot 0.1.0"
