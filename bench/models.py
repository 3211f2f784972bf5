"""9. Backends side by side: a 95 s and a 10-minute voice note transcribed on each model earshot runs on.

qwen-audio-turbo-latest (DashScope native, 30 s per request), qwen3-omni-flash and qwen-omni-turbo
(DashScope compatible mode, 20 min / 3 min per request) and Qwen2-Audio-7B-Instruct behind a vLLM-style
server (30 s), all served by the stand-ins in tests/fakes on loopback, each request answered after L
seconds. Reported per backend and note: requests made, audio tokens the model reported, wall time, and
wall time over L (how many request latencies the user waits). The stand-ins decode every item to check
its length, so wall time includes that too (the same ffmpeg work on every backend).

    python -m bench.models [--latency L]
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import bench_settings, ratio, row, save, voice_note
from core.flow.service import Assistant
from core.values import Audio, ChatKey, Request, Task
from tests.fakes.dashscope import FakeDashScope
from tests.fakes.server import Served

NAME = "models"
KEY = "sk-bench-key"
NOTES = (95.0, 600.0)
BACKENDS = (("qwen-audio-turbo-latest", "native"), ("qwen3-omni-flash", "compat"),
            ("qwen-omni-turbo", "compat"), ("Qwen/Qwen2-Audio-7B-Instruct", "vllm"))


async def run(latency: float) -> dict[str, Any]:
    ds = FakeDashScope(api_key=KEY, latency=latency)
    cases = []
    async with Served(ds.app) as served:
        for seconds in NOTES:
            note = Audio(voice_note(seconds, "opus24").read_bytes(), "note.ogg", "audio/ogg")
            for model, api in BACKENDS:
                with tempfile.TemporaryDirectory(prefix="earshot-bench-") as tmp:
                    where = ({"openai_base_url": served.url + "/v1"} if api == "vllm" else
                             {"dashscope_api_key": KEY, "dashscope_base_url": served.url + "/api/v1"})
                    settings = bench_settings(model=model, db_path=Path(tmp) / "earshot.db", **where)
                    async with Assistant(settings) as assistant:
                        before = len(ds.calls)
                        started = time.perf_counter()
                        reply = await assistant.handle(Request(ChatKey("cli", f"{model}-{seconds:g}"),
                                                               Task.TRANSCRIBE, audio=note))
                        wall = time.perf_counter() - started
                calls = [c for c in ds.calls[before:] if c.items]
                case = {"model": model, "api": api, "seconds": seconds, "requests": len(calls),
                        "longest_item_s": max(i.duration or 0 for c in calls for i in c.items),
                        "audio_tokens": reply.usage.audio_tokens, "total_tokens": reply.usage.total,
                        "wall_s": wall, "latency": latency, "vs_latency": ratio(wall, latency)}
                cases.append(case)
                print(f"  {seconds:>4g} s  {model:<30} {api:<7} {case['requests']:>3} requests "
                      f"(longest {case['longest_item_s']:5.1f} s)  {case['audio_tokens']:>6} audio tokens  "
                      f"{wall:6.2f} s = {case['vs_latency']:.1f}× L")
    rows = [row(f"Backends: {c['seconds']:g} s note on {c['model']} ({c['api']}): {c['requests']} requests, "
                f"{c['audio_tokens']} audio tokens", f"{c['wall_s']:.2f} s", f"L = {c['latency']:g} s",
                c["vs_latency"], "fewest requests the model allows", None) for c in cases]
    return {"cases": cases, "rows": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--full", action="store_true", help="(no longer run: the same cases)")
    p.add_argument("--latency", type=float, default=1.0)
    args = p.parse_args(argv)
    print("[9] backends side by side")
    result = asyncio.run(run(args.latency))
    save(NAME, result)
    return result


if __name__ == "__main__":
    main()
