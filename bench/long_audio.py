"""4. Long audio: a 10-minute voice note through Assistant.handle, against one chunk's model latency.

The note splits into ~21 chunks of ≤ 29.5 s; they are asked concurrently, at most chunk_concurrency at
a time (Settings.chunk_concurrency, default 4). The model stand-in answers each call after L seconds.
Reported per chunk_concurrency c: wall time, its ratio to L (one chunk's latency, the best case with
every chunk in parallel), and the ideal for c: decode time + L × ⌈chunks / c⌉ (+ L for the combining
call of tasks that need one).

    python -m bench.long_audio [--full] [--latency L] [--concurrency 4,8,16]
"""
from __future__ import annotations

import argparse
import asyncio
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import bench_settings, median, ratio, row, save, timed, voice_note
from core.audio import pipeline
from core.flow.service import Assistant
from core.model import prompts
from core.values import Audio, ChatKey, Request, Task
from tests.fakes.dashscope import FakeDashScope
from tests.fakes.server import Served

NAME = "long_audio"
SECONDS = 600.0
KEY = "sk-bench-key"


async def run(latency: float, concurrencies: list[int], tasks: list[Task]) -> dict[str, Any]:
    data = voice_note(SECONDS, "opus24").read_bytes()
    note = Audio(data, "note.ogg", "audio/ogg")
    prepared = pipeline.prepare(note, max_bytes=20 * 2**20, max_seconds=1800, timeout=120)
    decode_s = median([timed(lambda: pipeline.prepare(note, max_bytes=20 * 2**20, max_seconds=1800, timeout=120))
                       for _ in range(3)])
    chunks = len(prepared.chunks)
    print(f"  {SECONDS / 60:g}-minute note: {chunks} chunks, prepare() {decode_s:.2f} s, L = {latency:g} s")
    ds = FakeDashScope(api_key=KEY, inspect=False, latency=latency)
    cases = []
    async with Served(ds.app) as served:
        for task in tasks:
            for c in concurrencies:
                with tempfile.TemporaryDirectory(prefix="earshot-bench-") as tmp:
                    settings = bench_settings(dashscope_api_key=KEY, dashscope_base_url=served.url + "/api/v1",
                                              db_path=Path(tmp) / "earshot.db", chunk_concurrency=c)
                    async with Assistant(settings) as assistant:
                        ds.max_in_flight = 0
                        calls = len(ds.calls)
                        started = time.perf_counter()
                        await assistant.handle(Request(ChatKey("cli", f"long-{task}-{c}"), task, audio=note,
                                                       text="English" if task is Task.TRANSLATE else None))
                        wall = time.perf_counter() - started
                combine = prompts.needs_combining(task)
                waves = math.ceil(chunks / min(c, settings.global_concurrency)) + (1 if combine else 0)
                ideal = decode_s + latency * waves
                case = {"task": task.value, "chunk_concurrency": c, "global_concurrency": settings.global_concurrency,
                        "chunks": chunks, "latency": latency, "decode_s": decode_s, "wall_s": wall,
                        "vs_one_chunk": ratio(wall, latency), "ideal_s": ideal, "vs_ideal": ratio(wall, ideal),
                        "model_calls": len(ds.calls) - calls, "max_in_flight": ds.max_in_flight}
                cases.append(case)
                print(f"  {task.value:>10} c={c:>2}: {wall:6.2f} s = {case['vs_one_chunk']:.1f}× one chunk's L; "
                      f"ideal {ideal:.2f} s (decode + {waves}×L) → {case['vs_ideal']:.2f}×; "
                      f"{case['model_calls']} calls, max {ds.max_in_flight} in flight")
    rows = [row(f"Long audio: 10-min note, {c['task']}, chunk_concurrency={c['chunk_concurrency']} "
                f"({c['chunks']} chunks, L={c['latency']:g} s)",
                f"{c['wall_s']:.2f} s", f"{c['latency']:g} s (one chunk)", c["vs_one_chunk"],
                f"ideal {c['ideal_s']:.1f} s ({c['vs_ideal']:.2f}× of it)", None) for c in cases]
    return {"seconds": SECONDS, "cases": cases, "rows": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--full", action="store_true", help="also c=1 and 2, and a task with a combining call")
    p.add_argument("--latency", type=float, default=2.0)
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",") if x])
    args = p.parse_args(argv)
    concurrencies = args.concurrency or ([1, 2, 4, 8, 16, 32] if args.full else [4, 8, 32])
    tasks = [Task.TRANSCRIBE, Task.SUMMARIZE] if args.full else [Task.TRANSCRIBE]
    print("[4] long audio")
    result = asyncio.run(run(args.latency, concurrencies, tasks))
    save(NAME, result)
    return result


if __name__ == "__main__":
    main()
