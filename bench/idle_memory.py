"""14. An idle bot's memory: resident set of `earshot telegram` after start-up, after one voice note, and
after 30 chats' notes at once, on a new database file (migrations run, as on a first start or an upgrade).

Baseline, in the same run: the same bot with numpy loaded before it starts, as sqlite-utils loaded it
(whenever numpy was installed) before earshot hid it from sqlite-utils (core.store.schema.load_sqlite_utils).
Two configurations: the benchmarks' own (the chat model does every job: EARSHOT_ASR_MODEL and
EARSHOT_TTS_MODEL empty), and earshot's defaults (the recognizer and the voice configured too, so their
clients are loaded at start).

    python -m bench.idle_memory
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

import psutil

from bench.common import row, save, voice_note
from bench.telegram_harness import running_bot

NAME = "idle_memory"
MB = 1024 * 1024
TARGET_MB = 80
BOT = "from bots.launch import main; main()"


DEFAULTS = {"EARSHOT_ASR_MODEL": "qwen3-asr-flash", "EARSHOT_TTS_MODEL": "qwen3-tts-flash"}


async def one(label: str, command: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    note = voice_note(30.0, "opus24").read_bytes()
    async with running_bot(latency=0.0, command=command, env=env) as bot:
        proc = psutil.Process(bot.proc.pid)
        await asyncio.sleep(1.0)
        started = proc.memory_info().rss / MB
        await bot.send_all(bot.chats(1), note, timeout=60)
        await asyncio.sleep(0.5)
        one_note = proc.memory_info().rss / MB
        await bot.send_all(bot.chats(30), note, timeout=120)
        await asyncio.sleep(0.5)
        busy = proc.memory_info().rss / MB
    print(f"  {label}: {started:.1f} MB after start, {one_note:.1f} MB after a note, {busy:.1f} MB after 30 at once")
    return {"label": label, "start_mb": started, "one_note_mb": one_note, "after_30_mb": busy}


async def run() -> list[dict[str, Any]]:
    return [await one("numpy loaded (before)", [sys.executable, "-c", f"import numpy; {BOT}"]),
            await one("this earshot", [sys.executable, "-c", BOT]),
            await one("this earshot, default models", [sys.executable, "-c", BOT], DEFAULTS)]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--full", action="store_true")
    p.parse_args(argv)
    print("[14] an idle bot's memory")
    before, after, defaults = asyncio.run(run())
    load = os.getloadavg()[0]
    rows = [row(f"Idle bot RSS {when}{label} (new database; load {load:.1f})", f"{case[key]:.1f} MB",
                f"{before[key]:.1f} MB (numpy loaded, before)", case[key] / before[key], f"≤ {TARGET_MB} MB",
                case[key] <= TARGET_MB)
            for label, case in (("", after), (", earshot's default models", defaults))
            for when, key in (("after start", "start_mb"), ("after one note", "one_note_mb"),
                              ("after 30 notes at once", "after_30_mb"))]
    result = {"cases": [before, after, defaults], "rows": rows}
    save(NAME, result)
    return result


if __name__ == "__main__":
    main()
