"""5. Memory: peak RSS of the bot while it handles a 20 MB file, and while 50 chats are in flight.

Each case starts a fresh `earshot telegram` child (see bench/telegram_harness.py), so its high-water
mark (VmHWM from /proc, exact) belongs to that case alone. Baseline: the same process idle after
start-up and one warm-up voice note. Also sampled every 20 ms with psutil: the proportional set size
(PSS: shared pages split among the processes that map them) of the whole process tree, ffmpeg
children included; short-lived children can slip between samples, so that figure is a floor.

    the 20 MB file:  a 28.7-minute MP3 of 20.6 MB (96 kbit/s stereo), near both earshot limits at once
                     (max_file_mb 20 MiB, max_audio_seconds 30 min): the most audio a file can carry in.
    50 chats:        50 chats each send a 30 s Opus voice note at once; the model stand-in answers after 1 s.

    python -m bench.memory [--full]
"""
from __future__ import annotations

import argparse
import asyncio
from typing import Any

from bench.common import row, save, voice_note
from bench.telegram_harness import Sampler, high_water_mark, running_bot

NAME = "memory"
TARGET_MB = 250
MB = 1024 * 1024


async def case(label: str, data: bytes, kind: str, chats: int, latency: float) -> dict[str, Any]:
    warm = voice_note(5.0, "opus24").read_bytes()
    async with running_bot(latency=0.0) as bot:
        await bot.send_all(bot.chats(1), warm, timeout=60)
        idle = high_water_mark(bot.proc.pid)
        bot.ds.latency = latency
        sampler = Sampler(bot.proc.pid)
        sampler.start()
        got = await bot.send_all(bot.chats(chats), data, kind=kind, timeout=300)
        await sampler.stop()
        peak = high_water_mark(bot.proc.pid)
    result = {"label": label, "chats": chats, "bytes": len(data), "latency": latency,
              "idle_mb": idle / MB, "peak_mb": peak / MB, "sampled_peak_mb": sampler.peak_rss / MB,
              "tree_peak_mb": sampler.peak_tree / MB, "ffmpeg_peak_mb": sampler.peak_child / MB,
              "wall_s": got["wall_s"], "failed": got["failed"], "first_failure": got["first_failure"],
              "model_calls": got["model_calls"]}
    print(f"  {label}: peak RSS {result['peak_mb']:.0f} MB (idle {result['idle_mb']:.0f} MB); "
          f"whole tree (PSS) ≥ {result['tree_peak_mb']:.0f} MB, largest ffmpeg ≥ {result['ffmpeg_peak_mb']:.0f} MB; "
          f"{got['model_calls']} model calls in {got['wall_s']:.1f} s, failed {got['failed']}")
    if got["failed"]:
        print(f"    e.g. {got['first_failure']!r}")
    return result


async def run(full: bool) -> dict[str, Any]:
    big = voice_note(1720.0, "mp3_96k").read_bytes()
    note = voice_note(30.0, "opus24").read_bytes()
    cases = [await case(f"one {len(big) / 1e6:.1f} MB file (28.7 min MP3)", big, "audio", 1, 0.2),
             await case("50 chats in flight (30 s notes)", note, "voice", 50, 1.0)]
    if full:
        cases.append(await case("200 chats in flight (30 s notes)", note, "voice", 200, 1.0))
    rows = []
    for c in cases:
        rows.append(row(f"Memory: {c['label']}, bot process", f"{c['peak_mb']:.0f} MB peak RSS",
                        f"{c['idle_mb']:.0f} MB (idle bot)", c["peak_mb"] / c["idle_mb"], f"≤ {TARGET_MB} MB",
                        c["peak_mb"] <= TARGET_MB and not c["failed"]))
        rows.append(row(f"Memory: {c['label']}, bot + ffmpeg children", f"≥ {c['tree_peak_mb']:.0f} MB peak PSS",
                        f"{c['idle_mb']:.0f} MB (idle bot)", c["tree_peak_mb"] / c["idle_mb"], f"≤ {TARGET_MB} MB",
                        c["tree_peak_mb"] <= TARGET_MB and not c["failed"]))
    return {"cases": cases, "rows": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--full", action="store_true", help="also 200 chats in flight")
    args = p.parse_args(argv)
    print("[5] memory of the bot process")
    result = asyncio.run(run(args.full))
    save(NAME, result)
    return result


if __name__ == "__main__":
    main()
