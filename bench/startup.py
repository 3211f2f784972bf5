"""7. CLI start-up: how long a person at a terminal waits on `earshot` itself.

earshot --help:      `earshot --help` as a child process (the interpreter, imports, the help text).
earshot transcribe:  `earshot transcribe note.ogg` of a 30 s Opus note as a child process, against the
                     DashScope stand-in answering at once (so the figure is earshot's own cost).
                     Twice: in this environment, and as installed for users, without the test extras
                     (numpy, which sqlite-utils imports whenever it is installed: ~50 ms). The second
                     hides numpy and pandas from the child; no earshot code is changed.
baseline:            `ffmpeg -i note.ogg -ac 1 -ar 16000 out.mp3` on the same file with the same ffmpeg
                     binary, as a child process.
All three alternate in one run after a warm-up each; each figure is the median wall time.

    python -m bench.startup [--full] [--repeats N]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import CACHE, ROOT, bench_env, median, ratio, row, save, voice_note
from core import ffmpeg

NAME = "startup"
HELP_TARGET = 0.25      # seconds
TRANSCRIBE_TARGET = 2.0  # × plain ffmpeg


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


def _wall(cmd: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env, timeout=120)
    return time.perf_counter() - started


def run(repeats: int) -> dict[str, Any]:
    from tests.fakes.dashscope import FakeDashScope
    from tests.fakes.server import Threaded

    src = voice_note(30.0, "opus24")
    with Threaded(FakeDashScope("sk-bench", inspect=False).app) as model, \
            tempfile.TemporaryDirectory(prefix="earshot-bench-") as tmp:
        env = {**os.environ, **bench_env(), "DASHSCOPE_API_KEY": "sk-bench",
               "DASHSCOPE_HTTP_BASE_URL": model.url + "/api/v1", "EARSHOT_DB": str(Path(tmp) / "e.db")}
        out = Path(tmp) / "out.mp3"
        cases: dict[str, list[float]] = {"help": [], "transcribe": [], "installed": [], "ffmpeg": []}
        commands = {
            "help": (_earshot() + ["--help"], env),
            "transcribe": (_earshot() + ["transcribe", str(src)], env),
            "installed": (_earshot() + ["transcribe", str(src)], env | _without_test_extras()),
            "ffmpeg": ([ffmpeg.executable(), "-nostdin", "-loglevel", "error", "-y", "-i", str(src),
                        "-ac", "1", "-ar", "16000", str(out)], None),
        }
        for cmd, e in commands.values():          # warm-up: page cache, .pyc files, the database
            _wall(cmd, e)
        for _ in range(repeats):
            for name, (cmd, e) in commands.items():
                cases[name].append(_wall(cmd, e))
    result = {name: median(xs) for name, xs in cases.items()}
    result["transcribe_ratio"] = ratio(result["transcribe"], result["ffmpeg"])
    result["installed_ratio"] = ratio(result["installed"], result["ffmpeg"])
    print(f"  earshot --help {result['help'] * 1000:.0f} ms; earshot transcribe (30 s note) "
          f"{result['transcribe'] * 1000:.0f} ms, as installed {result['installed'] * 1000:.0f} ms; "
          f"plain ffmpeg {result['ffmpeg'] * 1000:.0f} ms; ratios {result['transcribe_ratio']:.2f}, "
          f"{result['installed_ratio']:.2f} (median of {repeats})")
    rows = [
        row("CLI start-up: `earshot --help`", f"{result['help'] * 1000:.0f} ms", "—", None,
            f"≤ {HELP_TARGET * 1000:.0f} ms", result["help"] <= HELP_TARGET),
        row("CLI: `earshot transcribe` of a 30 s Opus note, instant model", f"{result['transcribe'] * 1000:.0f} ms",
            f"{result['ffmpeg'] * 1000:.0f} ms (plain ffmpeg)", result["transcribe_ratio"],
            f"≤ {TRANSCRIBE_TARGET:g}×", result["transcribe_ratio"] <= TRANSCRIBE_TARGET),
        row("CLI: the same, as installed (no test extras: numpy absent)", f"{result['installed'] * 1000:.0f} ms",
            f"{result['ffmpeg'] * 1000:.0f} ms (plain ffmpeg)", result["installed_ratio"],
            f"≤ {TRANSCRIBE_TARGET:g}×", result["installed_ratio"] <= TRANSCRIBE_TARGET),
    ]
    return {"cases": {k: [round(x, 4) for x in v] for k, v in cases.items()}, "medians": result, "rows": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--full", action="store_true", help="more repeats (21) for steadier medians")
    p.add_argument("--repeats", type=int, help="runs of each command (default 9, 21 with --full)")
    p.add_argument("--label", help="save as startup-LABEL (a prototype row) instead of startup")
    args = p.parse_args(argv)
    print(f"[7] CLI start-up ({ffmpeg.executable()}, {ROOT})")
    result = run(args.repeats or (21 if args.full else 9))
    if args.label:
        for r in result["rows"]:
            r["what"] += f" — {args.label}"
    save(f"{NAME}-{args.label}" if args.label else NAME, result)
    return result


if __name__ == "__main__":
    main()
