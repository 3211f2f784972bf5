"""12. CPU per voice note, by path, and where it goes.

A 30 s Opus voice note (24 kbit/s, as Telegram sends them) goes to the real `earshot telegram` bot
(bench/telegram_harness.py: a child process, the stand-ins on loopback, the model answering at once),
one chat after another, each note answered before the next is sent. Per note: the bot process's CPU
(user + system, every thread) plus its finished ffmpeg children, minus what the bot spends idle over
the same time (long polling), divided by the notes. Two paths:

    re-encode     a plain voice note: the chat model hears it, so it is decoded and re-encoded to MP3
                  (core.audio.pipeline.prepare: one ffmpeg per note)
    pass-through  the same note captioned /transcribe with EARSHOT_ASR_MODEL=qwen3-asr-flash: the
                  recognizer takes the user's bytes as they are (core.audio.pipeline.as_is)

Where it goes: ffmpeg's share is split by running the pipeline's own command by hand (a 0.1 s note for
its start, the 30 s note decoded to nothing for the decode, the whole command for decode + encode);
the Python share comes from a second bot run under yappi (bench/profiled.py, every thread, CPU clock),
its functions' own time grouped by what they belong to (JSON, database, HTTP, Telegram's library,
asyncio, logging, the audio pipeline, the rest).

    python -m bench.note_cpu [--notes N] [--no-profile]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import CACHE, PATHS, ROOT, median, row, save, voice_note
from bench.telegram_harness import Bot, running_bot
from core.audio import ffmpeg, pipeline

NAME = "note_cpu"
TARGETS_MS = {"pass-through": 30.0, "re-encode": 60.0}


async def notes(bot: Bot, data: bytes, n: int, caption: str | None) -> None:
    """n notes, one chat after another, each answered before the next."""
    for chat in bot.chats(n):
        bot.tg.expecting({chat})
        bot.tg.push(chat, kind="voice", data=data, duration=30, mime="audio/ogg", caption=caption)
        try:
            await asyncio.wait_for(bot.tg.all_answered.wait(), 60)
        except TimeoutError:
            raise RuntimeError(f"chat {chat} unanswered; bot log: {bot.log}") from None


async def idle_rate(bot: Bot, seconds: float = 3.0) -> float:
    """The bot's CPU seconds per second while nobody writes."""
    before = bot.cpu()
    await asyncio.sleep(seconds)
    after = bot.cpu()
    return (after[0] - before[0] + after[1] - before[1]) / seconds


async def per_note(path: str, data: bytes, n: int, command: list[str] | None = None,
                   profiled: bool = False, code: str | None = None) -> dict[str, Any]:
    """CPU per note on one path; `profiled`: the bot runs under bench/profiled.py (SIGUSR1 restarts its
    profile; to any other bot it would be a kill); `code`: the earshot in that directory runs instead."""
    env, caption = PATHS[path]
    if code:       # -P: the checkout on PYTHONPATH, not the bench's own directory (the bot's cwd)
        env = {**env, "PYTHONPATH": code}
        command = [sys.executable, "-P", "-c", "from bots.launch import main; main()"]
    async with running_bot(latency=0.0, env=env, command=command) as bot:
        await notes(bot, data, 3, caption)                   # warm: imports, pools, the first queries
        if profiled:                                         # start the profile over from here
            bot.proc.send_signal(signal.SIGUSR1)
            await asyncio.sleep(0.5)
        idle = await idle_rate(bot)
        before, started = bot.cpu(), time.monotonic()
        await notes(bot, data, n, caption)
        wall = time.monotonic() - started
        after = bot.cpu()
        answer = next(iter(bot.tg.answers.values()), "")
    bot_s = after[0] - before[0] - idle * wall
    ffmpeg_s = after[1] - before[1]
    result = {"path": path, "code": code or "this checkout", "notes": n, "wall_s": wall, "idle_cpu_per_s": idle,
              "python_ms": bot_s / n * 1000, "ffmpeg_ms": ffmpeg_s / n * 1000,
              "total_ms": (bot_s + ffmpeg_s) / n * 1000, "answer": answer[:80]}
    where = f" ({code})" if code else ""
    print(f"  {path}{where}: {result['total_ms']:.1f} ms CPU per note (Python {result['python_ms']:.1f}, "
          f"ffmpeg {result['ffmpeg_ms']:.1f}); idle {idle * 1000:.1f} ms/s; {n} notes in {wall:.1f} s")
    return result


# --- ffmpeg's share, by hand -------------------------------------------------------------------------
def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _ffmpeg_cpu(args: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        before = _children_cpu()
        ffmpeg.run(args, timeout=60)
        times.append(_children_cpu() - before)
    return median(times)


def ffmpeg_split(runs: int) -> dict[str, float]:
    """ffmpeg's CPU for one 30 s note: its start, the decode, the encode (the pipeline's own command)."""
    with tempfile.TemporaryDirectory(prefix="earshot-bench-") as tmp:
        short, note = Path(tmp) / "short", Path(tmp) / "note"
        short.write_bytes(voice_note(0.1, "opus24").read_bytes())
        note.write_bytes(voice_note(30.0, "opus24").read_bytes())
        limits = ["-protocol_whitelist", "file", "-format_whitelist", ",".join(pipeline.DEMUXERS)]
        graph = (f"[0:a:0]aformat=sample_fmts=s16:sample_rates={pipeline.SAMPLE_RATE}:channel_layouts=mono,"
                 f"asplit=2[pcm][lead];[lead]adelay=delays={pipeline.MP3_PAD_SAMPLES}S:all=1[mp3]")

        def full(src: Path) -> list[str]:
            return [*limits, "-i", str(src), "-filter_complex", graph,
                    "-map", "[pcm]", "-c:a", "pcm_s16le", "-f", "s16le", "-y", str(Path(tmp) / "pcm"),
                    "-map", "[mp3]", "-c:a", "libmp3lame", "-b:a", pipeline.MP3_BITRATE,
                    "-compression_level", pipeline.MP3_QUALITY, "-reservoir", "0", "-write_xing", "0",
                    "-id3v2_version", "0", "-f", "mp3", "-y", str(Path(tmp) / "mp3")]

        start = _ffmpeg_cpu(full(short), runs)
        decode = _ffmpeg_cpu([*limits, "-i", str(note), "-ar", "16000", "-ac", "1", "-f", "null", "-"], runs)
        whole = _ffmpeg_cpu(full(note), runs)
    return {"start_ms": start * 1000, "decode_ms": max(decode - start, 0) * 1000,
            "encode_ms": max(whole - decode, 0) * 1000, "whole_ms": whole * 1000}


# --- Python's share, from a profile --------------------------------------------------------------------
GROUPS = (  # first match wins: (group, substrings of a function's file or name)
    ("JSON", ("json/", "orjson", "_json", "pydantic_core")),
    ("database", ("sqlite3", "core/store/", "aiosqlite")),
    ("ffmpeg start (Popen, prlimit)", ("subprocess.py", "_posixsubprocess", "fork_exec", "prlimit")),
    ("audio pipeline (levels, cuts, PCM)", ("core/audio/", "pydub", "audioop", "base64", "hashlib")),
    ("HTTP (httpx, aiohttp, TLS)", ("httpx", "httpcore", "h11", "aiohttp", "ssl", "anyio", "socket")),
    ("Telegram's library", ("telegram/",)),
    ("logging", ("logging/",)),
    ("asyncio and threads", ("asyncio", "selectors", "threading", "concurrent/", "queue.py", "select.")),
    ("earshot: flow, model, bots", ("core/", "bots/")),
)


def _group(key: tuple[str, int, str], stats: dict[Any, Any], depth: int = 0) -> str:
    """A function's group; a builtin (len, isinstance, a C method) counts for its costliest caller's."""
    text = f"{key[0]}:{key[2]}"
    for name, parts in GROUPS:
        if any(p in text for p in parts):
            return name
    callers = stats.get(key, (0, 0, 0, 0, {}))[4]
    if key[0] in ("~", "builtins", "") or key[0].endswith(":0") or key[1] == 0:
        if callers and depth < 5:
            caller = max(callers.items(), key=lambda kv: kv[1][2] if isinstance(kv[1], tuple) else 0)[0]
            return _group(caller, stats, depth + 1)
    return "other"


def profile(data: bytes, n: int, path: str) -> dict[str, Any]:
    out = CACHE / f"note-cpu-{os.getpid()}-{path}.pstat"
    out.unlink(missing_ok=True)
    command = [sys.executable, "-m", "bench.profiled", str(out)]
    asyncio.run(per_note(path, data, n, command=command, profiled=True))
    stats = pstats.Stats(str(out)).stats  # type: ignore[attr-defined]
    groups: dict[str, float] = {}
    top: list[tuple[float, str]] = []
    for key, (_cc, _nc, tottime, _ct, _callers) in stats.items():
        group = _group(key, stats)
        groups[group] = groups.get(group, 0.0) + tottime
        top.append((tottime, f"{Path(key[0]).name}:{key[1]} {key[2]}"))
    total = sum(groups.values())
    shares = {k: v / total for k, v in sorted(groups.items(), key=lambda kv: -kv[1])}
    print(f"  Python profile ({path}, {n} notes after warm-up, {total:.2f} s CPU in all, under yappi):")
    for k, v in shares.items():
        print(f"    {k:<40} {v * 100:5.1f} %")
    print("    top functions (own time):")
    for t, name in sorted(top, reverse=True)[:12]:
        print(f"      {t * 1000:8.1f} ms  {name}")
    return {"path": path, "total_s": total, "shares": shares,
            "top": [(round(t * 1000, 1), name) for t, name in sorted(top, reverse=True)[:25]]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--full", action="store_true", help="more notes")
    p.add_argument("--notes", type=int, default=20)
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--baseline", help="a checkout of earshot (`git archive`) measured in the same run, before")
    args = p.parse_args(argv)
    n = args.notes * (3 if args.full else 1)
    print("[12] CPU per voice note")
    data = voice_note(30.0, "opus24").read_bytes()
    paths, before = [], []
    for path in PATHS:
        if args.baseline:
            before.append(asyncio.run(per_note(path, data, n, code=args.baseline)))
        # beside a baseline, this checkout starts the same way (python -P -c), not by the console script
        paths.append(asyncio.run(per_note(path, data, n, code=str(ROOT) if args.baseline else None)))
    split = ffmpeg_split(7)
    print(f"  ffmpeg by hand, 30 s note: start {split['start_ms']:.1f} ms, decode {split['decode_ms']:.1f} ms, "
          f"encode {split['encode_ms']:.1f} ms (whole command {split['whole_ms']:.1f} ms)")
    profiles = [] if args.no_profile else [profile(data, n, path) for path in PATHS]
    load = os.getloadavg()[0]
    rows = rows_of(paths, split, load)
    for r, b in zip(paths, before, strict=False):
        rows.append(row(f"CPU per 30 s Opus note, {r['path']}, against the code before (load {load:.1f})",
                        f"{r['total_ms']:.1f} ms (Python {r['python_ms']:.1f})",
                        f"{b['total_ms']:.1f} ms (Python {b['python_ms']:.1f}) before", r["total_ms"] / b["total_ms"],
                        f"≤ {TARGETS_MS[r['path']]:g} ms", r["total_ms"] <= TARGETS_MS[r["path"]]))
    result = {"paths": paths, "before": before, "ffmpeg": split, "profiles": profiles, "rows": rows}
    save(NAME, result)
    return result


def rows_of(paths: list[dict[str, Any]], split: dict[str, float], load: float) -> list[dict[str, Any]]:
    """Each path beside its baseline of the same run: the pass-through beside the re-encode, and the
    re-encode beside the pipeline's ffmpeg command run by hand."""
    def ms(r: dict[str, Any]) -> str:
        return f"{r['total_ms']:.1f} ms (Python {r['python_ms']:.1f}, ffmpeg {r['ffmpeg_ms']:.1f})"

    by = {r["path"]: r for r in paths}
    rows = []
    for r in paths:
        if r["path"] == "pass-through" and "re-encode" in by:
            base, base_ms = ms(by["re-encode"]) + " re-encoding", by["re-encode"]["total_ms"]
        else:
            base, base_ms = f"{split['whole_ms']:.1f} ms (its ffmpeg command alone)", split["whole_ms"]
        rows.append(row(f"CPU per 30 s Opus note, {r['path']} (bot + ffmpeg; load {load:.1f})", ms(r), base,
                        r["total_ms"] / base_ms, f"≤ {TARGETS_MS[r['path']]:g} ms",
                        r["total_ms"] <= TARGETS_MS[r["path"]]))
    return rows


if __name__ == "__main__":
    main()
