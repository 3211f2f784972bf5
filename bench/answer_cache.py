"""7. Answer cache: tokens saved on a forward-heavy day of voice notes, with the cache on and off.

The workload (seeded, so both runs see the same requests), modelled on how voice notes travel in
messenger communities — a few go far, most stay where they were sent:
- ORIGINALS voice notes of 5-60 s (uniform), each first posted in one chat;
- each is forwarded to F other chats, F drawn from a Zipf-like law (P(F=k) ∝ 1/(k+1)^1.6, 0 ≤ k ≤ 25):
  most notes stay put, a few "viral" ones reach 10-25 chats (the seeded draw of 120 notes: 3.0 forwards
  per note on average, 48 % never forwarded, the farthest to 22 more chats);
- in every chat that has the note, someone asks: transcribe 45 %, summarize 25 %, translate to English 10 %,
  a voice-chat reply 20 % (voice chat depends on the chat: never cached, so it is paid every time);
- forwards keep Telegram's file_unique_id, so a hit also skips the download.
Requests run one after another through the real Assistant against the DashScope stand-in, which
counts tokens the way the service does (25 audio tokens per second heard, text by length).

    python -m bench.answer_cache [--full]
"""
from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import bench_settings, row, save
from core.flow.service import Assistant
from core.values import Audio, ChatKey, Request, Task
from tests.fakes.dashscope import FakeDashScope, tone_audio
from tests.fakes.server import Served

NAME = "answer_cache"
KEY = "sk-bench-key"
ASKS = [(Task.TRANSCRIBE, None, 0.45), (Task.SUMMARIZE, None, 0.25), (Task.TRANSLATE, "English", 0.10),
        (Task.CHAT, None, 0.20)]


def forwards(rng: random.Random) -> int:
    weights = [1 / (k + 1) ** 1.6 for k in range(26)]
    return rng.choices(range(26), weights)[0]


def workload(originals: int, seed: int = 15) -> list[tuple[int, str, Task, str | None]]:
    """(note, chat, task, text) in arrival order: each note's first chat, then its forwards."""
    rng = random.Random(seed)
    out = []
    for note in range(originals):
        chats = rng.sample(range(400), 1 + forwards(rng))
        for chat in chats:
            task, text, _ = rng.choices(ASKS, [w for *_, w in ASKS])[0]
            out.append((note, f"chat-{chat}", task, text))
    rng.shuffle(out)    # forwards arrive interleaved with other notes; a note's first ask may come late
    return out


def notes(originals: int, seed: int = 15) -> list[bytes]:
    rng = random.Random(seed + 1)
    made = []
    for n in range(originals):
        seconds = rng.uniform(5, 60)
        made.append(tone_audio((0, 0.5), (300 + 10 * (n % 60), 1.0), (0, seconds - 1.5), fmt="ogg"))
    return made


async def one_run(cache_days: float, requests: list, audio: list[bytes], url: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="earshot-bench-") as tmp:
        settings = bench_settings(dashscope_api_key=KEY, dashscope_base_url=url + "/api/v1",
                                  db_path=Path(tmp) / "earshot.db", cache_days=cache_days)
        tokens = calls = hits = 0
        started = time.perf_counter()
        async with Assistant(settings) as assistant:
            for note, chat, task, text in requests:
                reply = await assistant.handle(Request(ChatKey("telegram", chat), task,
                                                       audio=Audio(audio[note], "v.ogg"),
                                                       text=text, audio_id=f"u{note}"))
                tokens += reply.usage.total
                calls += len(reply.request_ids)
                hits += reply.cached
        return {"tokens": tokens, "model_calls": calls, "cache_hits": hits, "wall_s": time.perf_counter() - started}


async def run(originals: int) -> dict[str, Any]:
    requests = workload(originals)
    audio = notes(originals)
    ds = FakeDashScope(api_key=KEY)
    async with Served(ds.app) as served:
        off = await one_run(0, requests, audio, served.url)
        on = await one_run(7, requests, audio, served.url)
    standalone = sum(1 for _, _, task, _ in requests if task is not Task.CHAT)
    per_note = [sum(1 for r in requests if r[0] == n) - 1 for n in range(originals)]
    print(f"  forwards per note: mean {sum(per_note) / originals:.2f}, never forwarded "
          f"{sum(1 for f in per_note if f == 0) / originals:.0%}, most {max(per_note)}")
    saved = 1 - on["tokens"] / off["tokens"]
    print(f"  {originals} notes, {len(requests)} requests ({standalone} cacheable): "
          f"{off['tokens']:,} tokens without the cache, {on['tokens']:,} with it ({saved:.0%} saved); "
          f"model calls {off['model_calls']} -> {on['model_calls']}, {on['cache_hits']} hits")
    return {"originals": originals, "requests": len(requests), "forwards_mean": sum(per_note) / originals,
            "cacheable": standalone, "off": off, "on": on,
            "saved": saved,
            "rows": [row("Answer cache: tokens on a forward-heavy workload", f"{on['tokens']:,}",
                         f"{off['tokens']:,} without", on["tokens"] / off["tokens"], "fewer than without", saved > 0)]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--full", action="store_true", help="400 original notes instead of 120")
    args = p.parse_args(argv)
    print("7. answer cache")
    result = asyncio.run(run(400 if args.full else 120))
    print(f"  saved to {save(NAME, result)}")


if __name__ == "__main__":
    main()
