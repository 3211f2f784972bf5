"""1. Pipeline overhead per voice note: earshot's audio preparation against one plain ffmpeg conversion.

earshot:   core.audio.pipeline.prepare (decode, loudness, split at pauses, cut MP3 chunks) and
           core.model.dashscope.audio_item for every chunk, then the JSON body those items travel in.
baseline:  `ffmpeg -i in.ogg -ac 1 -ar 16000 out.mp3` on the same file, with the same ffmpeg binary
           (core.audio.ffmpeg.executable()), as a subprocess.
The two alternate (ABAB…) after one warm-up each, so drift in the machine's load hits both alike;
the figure is the median wall time. CPU seconds (this process plus its children) are kept beside it.

    python -m bench.pipeline [--full] [--repeats N]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import median, ratio, row, save, voice_note
from core.audio import ffmpeg, pipeline
from core.model.dashscope import audio_item
from core.values import Audio

NAME = "pipeline"
TARGET = 1.3            # for 30 s notes
LENGTHS = {"5 s": 5.0, "30 s": 30.0, "5 min": 300.0}


def earshot(data: bytes) -> int:
    """What the service does with a note before the first model call; returns the chunk count."""
    prepared = pipeline.prepare(Audio(data, "voice.ogg", "audio/ogg"), max_bytes=20 * 2**20,
                             max_seconds=1800, timeout=120)
    for chunk in prepared.chunks:
        body = {"model": "qwen-audio-turbo-latest", "parameters": {"result_format": "message"},
                "input": {"messages": [{"role": "user", "content": [audio_item(chunk.data)]}]}}
        json.dumps(body, ensure_ascii=False).encode()
    return len(prepared.chunks)


def plain_ffmpeg(src: Path, out: Path) -> None:
    subprocess.run([ffmpeg.executable(), "-nostdin", "-loglevel", "error", "-y", "-i", str(src),
                    "-ac", "1", "-ar", "16000", str(out)], check=True, timeout=120)


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _measure(fn: Callable[[], Any]) -> tuple[float, float]:
    cpu, started = _cpu(), time.perf_counter()
    fn()
    return time.perf_counter() - started, _cpu() - cpu


def run(repeats: int, lengths: dict[str, float]) -> dict[str, Any]:
    cases = []
    with tempfile.TemporaryDirectory(prefix="earshot-bench-") as tmp:
        out = Path(tmp) / "out.mp3"
        for label, seconds in lengths.items():
            src = voice_note(seconds, "opus24")
            data = src.read_bytes()
            chunks = earshot(data)                 # warm-up: page cache, imports, pydub set-up
            plain_ffmpeg(src, out)
            ours: list[tuple[float, float]] = []
            theirs: list[tuple[float, float]] = []
            n = repeats if seconds < 120 else max(3, repeats // 3)
            for _ in range(n):
                ours.append(_measure(lambda data=data: earshot(data)))
                theirs.append(_measure(lambda src=src: plain_ffmpeg(src, out)))
            case = {"label": label, "seconds": seconds, "bytes": len(data), "chunks": chunks, "runs": n,
                    "earshot_s": median([w for w, _ in ours]), "ffmpeg_s": median([w for w, _ in theirs]),
                    "earshot_cpu_s": median([c for _, c in ours]), "ffmpeg_cpu_s": median([c for _, c in theirs]),
                    "earshot_all_s": [round(w, 4) for w, _ in ours],
                    "ffmpeg_all_s": [round(w, 4) for w, _ in theirs]}
            case["ratio"] = ratio(case["earshot_s"], case["ffmpeg_s"])
            cases.append(case)
            print(f"  {label:>6}: earshot {case['earshot_s'] * 1000:7.1f} ms ({chunks} chunk(s)), "
                  f"plain ffmpeg {case['ffmpeg_s'] * 1000:7.1f} ms, ratio {case['ratio']:.2f} "
                  f"(CPU {case['earshot_cpu_s']:.2f} s vs {case['ffmpeg_cpu_s']:.2f} s; median of {n})")
    rows = [row(f"Pipeline, {c['label']} Opus note ({c['chunks']} chunk{'s' if c['chunks'] > 1 else ''})",
                f"{c['earshot_s'] * 1000:.0f} ms", f"{c['ffmpeg_s'] * 1000:.0f} ms (plain ffmpeg)",
                c["ratio"], f"≤ {TARGET}×" if c["label"] == "30 s" else "—",
                (c["ratio"] <= TARGET) if c["label"] == "30 s" else None)
            for c in cases]
    return {"cases": cases, "rows": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--full", action="store_true", help="more repeats (21) for steadier medians")
    p.add_argument("--repeats", type=int, help="runs of each side per length (default 9, 21 with --full)")
    args = p.parse_args(argv)
    repeats = args.repeats or (21 if args.full else 9)
    print(f"[1] pipeline overhead vs plain ffmpeg ({ffmpeg.executable()})")
    result = run(repeats, LENGTHS)
    save(NAME, result)
    return result


if __name__ == "__main__":
    main()
