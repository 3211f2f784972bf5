"""7. CLI start-up: how long a person at a terminal waits on `earshot` itself.

earshot --help:      `earshot --help` as a child process (the interpreter, imports, the help text).
earshot transcribe:  `earshot transcribe note.ogg` of a 30 s Opus note as a child process, against the
                     DashScope stand-in answering at once (so the figure is earshot's own cost).
                     As earshot is configured by default (the recognizer, EARSHOT_ASR_MODEL=qwen3-asr-flash,
                     which takes the note as it is: no ffmpeg runs), and with the chat model transcribing
                     (EARSHOT_ASR_MODEL empty: the note is decoded and re-encoded to MP3 by ffmpeg).
                     Twice: in this environment, and as installed for users, without the test extras
                     (numpy, which sqlite-utils imports whenever it is installed: ~50 ms). The second
                     hides numpy and pandas from the child; no earshot code is changed.
baseline:            `ffmpeg -i note.ogg -ac 1 -ar 16000 out.mp3` on the same file with the same ffmpeg
                     binary, as a child process.
before:              with --before REV (default: the last revision that imported everything up front),
                     `earshot --help` and `earshot transcribe` of that revision's code, exported from git.
All alternate in one run after a warm-up each; each figure is the median wall time. The children run from
compiled bytecode, as an installed earshot does (pip compiles it at install time): PYTHONDONTWRITEBYTECODE
is dropped for them and their .pyc files go to the cache (PYTHONPYCACHEPREFIX), not into the checkout.

    python -m bench.startup [--full] [--repeats N] [--before REV]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import CACHE, ROOT, bench_env, median, ratio, row, save, voice_note
from core.audio import ffmpeg

NAME = "startup"
HELP_TARGET = 0.25      # seconds
TRANSCRIBE_TARGET = 1.5  # × plain ffmpeg
BEFORE = "9d8b8bf"       # the last revision that imported everything up front


def _earshot() -> list[str]:
    exe = Path(sys.executable).with_name("earshot")
    return [str(exe)] if exe.exists() else [shutil.which("earshot") or "earshot"]


def _without_test_extras() -> dict[str, str]:
    """Environment for a child that can't import numpy or pandas, as on a machine with only earshot installed."""
    shim = CACHE / "no-test-extras"
    for name in ("numpy", "pandas"):
        (shim / name).mkdir(parents=True, exist_ok=True)
        (shim / name / "__init__.py").write_text(f"raise ImportError('{name} is hidden by bench.startup')\n")
    return {"PYTHONPATH": os.pathsep.join([str(shim), *filter(None, [os.environ.get("PYTHONPATH")])])}


def _compiled() -> dict[str, str]:
    """Environment for children that write .pyc files at the warm-up and read them afterwards."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return env | {"PYTHONPYCACHEPREFIX": str(CACHE / "pycache")}


def _wall(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """The child's wall time. Waited for with a blocking wait, not subprocess.run's timeout, which polls
    at up to 50 ms intervals and so rounds every figure up to the next poll (a watchdog kills a hung one)."""
    started = time.perf_counter()
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env=env) as proc:
        watchdog = threading.Timer(120, proc.kill)
        watchdog.start()
        try:
            code = proc.wait()
        finally:
            watchdog.cancel()
    took = time.perf_counter() - started
    if code:
        raise subprocess.CalledProcessError(code, cmd)
    return took


def _checkout(rev: str) -> Path:
    """The project's files at git revision `rev`, exported once into the cache (not a worktree)."""
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout.strip()
    where = CACHE / f"earshot-{sha}"
    if not (where / "bots" / "cli.py").exists():
        where.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha, "core", "bots"], cwd=ROOT, check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(where)], input=archive.stdout, check=True)
    return where


def run(repeats: int, before: str | None = None) -> dict[str, Any]:
    from tests.fakes.dashscope import FakeDashScope
    from tests.fakes.server import Threaded

    src = voice_note(30.0, "opus24")
    with Threaded(FakeDashScope("sk-bench", inspect=False).app) as model, \
            tempfile.TemporaryDirectory(prefix="earshot-bench-") as tmp:
        env = {**_compiled(), **bench_env(), "DASHSCOPE_API_KEY": "sk-bench",
               "DASHSCOPE_HTTP_BASE_URL": model.url + "/api/v1", "EARSHOT_DB": str(Path(tmp) / "e.db")}
        out = Path(tmp) / "out.mp3"
        commands = {
            "help": (_earshot() + ["--help"], env),
            "recognizer": (_earshot() + ["transcribe", str(src)], env | {"EARSHOT_ASR_MODEL": "qwen3-asr-flash"}),
            "recognizer_installed": (_earshot() + ["transcribe", str(src)],
                                     env | {"EARSHOT_ASR_MODEL": "qwen3-asr-flash"} | _without_test_extras()),
            "transcribe": (_earshot() + ["transcribe", str(src)], env),
            "installed": (_earshot() + ["transcribe", str(src)], env | _without_test_extras()),
            "ffmpeg": ([ffmpeg.executable(), "-nostdin", "-loglevel", "error", "-y", "-i", str(src),
                        "-ac", "1", "-ar", "16000", str(out)], None),
        }
        if before:
            # what the console script of that revision ran (bots.launch's main since it exists, bots.cli's
            # before), with its code first on the path: -P keeps this checkout (the current directory) off it
            where = _checkout(before)
            entry = "bots.launch" if (where / "bots" / "launch.py").exists() else "bots.cli"
            old = env | {"PYTHONPATH": str(where)}
            script = [sys.executable, "-P", "-c",
                      f"import sys; from {entry} import main; sys.argv[0] = 'earshot'; main()"]
            commands["before_help"] = (script + ["--help"], old)
            commands["before_transcribe"] = (script + ["transcribe", str(src)], old)
        cases: dict[str, list[float]] = {name: [] for name in commands}
        for cmd, e in commands.values():          # warm-up: page cache, .pyc files, the database
            _wall(cmd, e)
        for _ in range(repeats):                   # interleaved, so drift in the machine's load hits all alike
            for name, (cmd, e) in commands.items():
                cases[name].append(_wall(cmd, e))
    m = {name: median(xs) for name, xs in cases.items()}
    ms = {name: f"{v * 1000:.0f} ms" for name, v in m.items()}
    plain = f"{ms['ffmpeg']} (plain ffmpeg)"
    print(f"  median of {repeats}: " + ", ".join(f"{name} {v}" for name, v in ms.items()))
    rows = [row("CLI start-up: `earshot --help`", ms["help"], "—", None, f"≤ {HELP_TARGET * 1000:.0f} ms",
                m["help"] <= HELP_TARGET)]
    if before:
        rows.append(row(f"CLI start-up: `earshot --help`, before ({before})", ms["before_help"], "—", None,
                        f"≤ {HELP_TARGET * 1000:.0f} ms", m["before_help"] <= HELP_TARGET))
    for name, what in [("recognizer", "CLI: `earshot transcribe` of a 30 s Opus note as configured by default "
                                      "(the recognizer takes the note as it is), instant model"),
                       ("recognizer_installed", "CLI: the same as installed for users (no test extras)"),
                       ("transcribe", "CLI: `earshot transcribe` of a 30 s Opus note by the chat model "
                                      "(decoded and re-encoded to MP3), instant model"),
                       ("installed", "CLI: the same as installed for users (no test extras, so no numpy)"),
                       ("before_transcribe", f"CLI: `earshot transcribe` of the same note, before ({before})")]:
        if name in m:
            r = ratio(m[name], m["ffmpeg"])
            rows.append(row(what, ms[name], plain, r, f"≤ {TRANSCRIBE_TARGET:g}×", r <= TRANSCRIBE_TARGET))
    return {"before": before, "cases": {k: [round(x, 4) for x in v] for k, v in cases.items()}, "medians": m,
            "rows": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--full", action="store_true", help="more repeats (21) for steadier medians")
    p.add_argument("--repeats", type=int, help="runs of each command (default 9, 21 with --full)")
    p.add_argument("--before", metavar="REV", default=BEFORE,
                   help=f"also time the CLI of this git revision, side by side (default {BEFORE}; '' for none)")
    args = p.parse_args(argv)
    print(f"[7] CLI start-up ({ffmpeg.executable()})")
    result = run(args.repeats or (21 if args.full else 9), args.before or None)
    save(NAME, result)
    return result


if __name__ == "__main__":
    main()
