"""Soak: many voice notes through the Telegram bot while the model misbehaves and the bot is killed.

By default 500 voice notes from 50 chats arrive over 2.5 minutes through the Telegram stand-in; the
DashScope stand-in fails 10 % of calls with 429, 5 % with 500 and 2 % by hanging; the bot (the real
`earshot telegram`, a child process) is killed with SIGKILL and started again twice while notes keep
coming. It checks that every voice note is answered exactly once, that no update was confirmed to
Telegram before its job was stored, and samples the bot's RSS to show whether memory stays flat.

    python -m bench.soak [--notes 500] [--chats 50] [--minutes 2.5] [--kills 2] [--seed 7]

Not part of the unit suite: it takes about four minutes. Figures go to bench/results/soak.json; the
exit status is 1 when a note was lost or answered twice.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:           # `python bench/soak.py` as well as `python -m bench.soak`
    sys.path.insert(0, str(ROOT))

from bots.telegram.progress import STREAM_TAIL  # noqa: E402
from core import messages  # noqa: E402
from tests.fakes.dashscope import SERVER_ERROR, THROTTLED, Failure, FakeDashScope, tone_audio  # noqa: E402
from tests.fakes.server import Served  # noqa: E402
from tests.fakes.telegram import FakeTelegram  # noqa: E402

API_KEY = "sk-soak-key"
RESULTS = ROOT / "bench" / "results" / "soak.json"
REQUEST_TIMEOUT = 4.0        # what the bot waits for one model call: a hung call costs this much, then a retry
HANG = Failure(None, hang=60.0)
WINDOW_BOUND = 1.0          # a repeat counts as the send-to-mark corner if a kill came this soon after the answer
WARM_UP = 10.0               # seconds of each bot life left out of the memory trend (imports, first ffmpeg runs)


class FlakyModel(FakeDashScope):
    """The DashScope stand-in, failing a seeded random share of calls: 429, 500, or hanging."""

    def __init__(self, rng: random.Random, *, throttled: float, server_error: float, hang: float,
                 latency: float) -> None:
        super().__init__(api_key=API_KEY, inspect=False, latency=latency)
        self.rng = rng
        self.odds = ((throttled, THROTTLED, "429"), (server_error, SERVER_ERROR, "500"), (hang, HANG, "hang"))
        self.injected: Counter[str] = Counter()

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        draw = self.rng.random()
        for share, failure, name in self.odds:
            if draw < share:
                self.failures.appendleft(failure)
                self.injected[name] += 1
                break
            draw -= share
        return await super()._serve(request)


class SoakTelegram(FakeTelegram):
    """Sorts what the bot says by the voice note it replies to, and checks every confirmation of updates."""

    def __init__(self, db: Path) -> None:
        super().__init__()
        self.db = db
        self.sent_at: dict[int, float] = {}              # message id -> when the user sent it
        self.chat_of: dict[int, int] = {}
        self.answers: dict[int, list[float]] = {}        # message id -> times answered
        self.notices: Counter[int] = Counter()           # "the model is unavailable" said about it
        self.failures: dict[int, list[str]] = {}         # anything else said in reply to it
        self.unconfirmed: dict[int, tuple[int, int]] = {}   # update id -> (chat, message), not yet confirmed
        self.confirmed_unstored: list[int] = []

    def push_voice(self, chat: int, data: bytes, seconds: int) -> int:
        mid = self.push(chat, kind="voice", data=data, duration=seconds)
        self.sent_at[mid] = time.monotonic()
        self.chat_of[mid] = chat
        self.unconfirmed[self._updates[-1]["update_id"]] = (chat, mid)
        return mid

    async def _m_sendmessage(self, params: dict) -> web.Response:
        response = await super()._m_sendmessage(params)
        reply = int((params.get("reply_parameters") or {}).get("message_id") or 0)
        text = str(params.get("text", ""))
        if response.status != 200 or reply not in self.sent_at or text.endswith(STREAM_TAIL):
            return response                              # not about a voice note, or a streamed preview
        if text.startswith("heard"):
            self.answers.setdefault(reply, []).append(time.monotonic())
        elif text == messages.MODEL_WAITING:
            self.notices[reply] += 1
        else:
            self.failures.setdefault(reply, []).append(text)
        return response

    async def _m_getupdates(self, params: dict) -> web.Response:
        offset = int(params.get("offset") or 0)
        confirmed = [u for u in self.unconfirmed if u < offset]
        if confirmed:
            stored = self._stored_keys()
            for u in confirmed:
                chat, mid = self.unconfirmed.pop(u)
                if f"{chat}:{mid}" not in stored:
                    self.confirmed_unstored.append(u)
        return await super()._m_getupdates(params)

    def _stored_keys(self) -> set[str]:
        try:
            with contextlib.closing(sqlite3.connect(self.db)) as conn:
                return {k for (k,) in conn.execute("SELECT key FROM jobs WHERE platform = 'telegram'")}
        except sqlite3.Error:
            return set()


class BotProcess:
    """`earshot telegram` as a child process; each start is a new life."""

    def __init__(self, tg: SoakTelegram, env: dict[str, str], log: Path) -> None:
        self.tg, self.env, self.log = tg, env, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.lives: list[dict[str, Any]] = []

    async def start(self) -> None:
        polls = len(self.tg.called("getUpdates"))
        began = time.monotonic()
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-c", "from bots.cli import main; main()", "telegram"],
                                         cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)
        while len(self.tg.called("getUpdates")) == polls:
            if self.proc.poll() is not None or time.monotonic() - began > 60:
                raise RuntimeError(f"the bot did not start:\n{self.log.read_text()[-3000:]}")
            await asyncio.sleep(0.05)
        self.lives.append({"pid": self.proc.pid, "started": began, "ready_s": round(time.monotonic() - began, 2),
                           "rss": []})

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.lives[-1]["killed"] = time.monotonic()

    async def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None
        self.proc.terminate()
        try:   # off the event loop: the stand-ins must keep answering its last calls
            return await asyncio.to_thread(self.proc.wait, 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    async def sample(self, every: float) -> None:
        """RSS of the bot (its own, not ffmpeg's) every `every` seconds, per life."""
        while True:
            life = self.lives[-1] if self.lives else None
            if life is not None and self.proc is not None and self.proc.poll() is None:
                with contextlib.suppress(psutil.Error):
                    rss = await asyncio.to_thread(lambda pid=life["pid"]: psutil.Process(pid).memory_info().rss)
                    life["rss"].append((time.monotonic() - life["started"], rss))
            await asyncio.sleep(every)


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def memory_trend(samples: list[tuple[float, int]]) -> dict[str, Any]:
    """RSS over one life, after warm-up: first and last quarter medians, slope, peak (MB)."""
    steady = [(t, r / 2**20) for t, r in samples if t >= WARM_UP]
    if len(steady) < 8:
        return {"samples": len(steady)}
    quarter = len(steady) // 4
    first = statistics.median(r for _, r in steady[:quarter])
    last = statistics.median(r for _, r in steady[-quarter:])
    slope = statistics.linear_regression([t for t, _ in steady], [r for _, r in steady]).slope * 60
    buckets: dict[int, list[float]] = {}
    for t, r in steady:
        buckets.setdefault(int(t // 30), []).append(r)
    return {"samples": len(steady), "seconds": round(steady[-1][0] - steady[0][0], 1),
            "median_mb_per_30s": [round(statistics.median(v), 1) for _, v in sorted(buckets.items())],
            "first_quarter_mb": round(first, 1), "last_quarter_mb": round(last, 1),
            "growth_mb": round(last - first, 1), "slope_mb_per_min": round(slope, 2),
            "peak_mb": round(max(r for _, r in steady), 1)}


def jobs_summary(db: Path) -> tuple[dict[str, Any], dict[str, tuple[int, str | None]]]:
    """Totals from the jobs table, and per message key its failed sends and last error."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT state, attempts, faults, notified, delivered IS NOT NULL, delivery_attempts, "
                            "key, last_error FROM jobs").fetchall()
    summary = {"jobs": len(rows), "states": dict(Counter(r[0] for r in rows)),
               "delivered": sum(r[4] for r in rows), "attempts": sum(r[1] for r in rows),
               "tried_more_than_once": sum(r[1] > 1 for r in rows), "interrupted_by_a_kill": sum(r[2] for r in rows),
               "told_model_unavailable": sum(r[3] for r in rows), "sends_retried": sum(r[5] for r in rows)}
    return summary, {r[6]: (r[5], r[7]) for r in rows}


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    # a few lengths of voice note, so the bot decodes different amounts
    clips = [(tone_audio((0, 0.3), (hz, seconds), (0, 0.3), fmt="ogg"), int(seconds + 1))
             for hz, seconds in ((440, 1.0), (550, 2.5), (660, 4.0), (880, 6.0))]
    chats = [10_000 + n for n in range(args.chats)]
    plan = [chats[n % len(chats)] for n in range(args.notes)]
    rng.shuffle(plan)
    window = args.minutes * 60
    kills = [window * (k + 1) / (args.kills + 2) for k in range(args.kills)]   # the last life is the longest

    with tempfile.TemporaryDirectory(prefix="earshot-soak-") as tmp:
        db, log = Path(tmp) / "earshot.db", Path(tmp) / "bot.log"
        tg = SoakTelegram(db)
        model = FlakyModel(random.Random(args.seed + 1), throttled=args.throttled, server_error=args.server_error,
                           hang=args.hang, latency=args.latency)
        async with Served(tg.app) as tgs, Served(model.app) as ms:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DASHSCOPE_", "EARSHOT_"))
                   and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
            env |= {"TELEGRAM_BOT_TOKEN": tg.token, "TELEGRAM_API_BASE_URL": tgs.url,
                    "DASHSCOPE_API_KEY": API_KEY, "DASHSCOPE_HTTP_BASE_URL": ms.url + "/api/v1",
                    "EARSHOT_DB": str(db), "EARSHOT_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT),
                    # budgets and the rate limit would refuse a soak's volume; they are not what is tested here
                    "EARSHOT_USER_DAILY_TOKENS": "0", "EARSHOT_CHAT_DAILY_TOKENS": "0",
                    "EARSHOT_GLOBAL_DAILY_TOKENS": "0", "EARSHOT_USER_REQUESTS_PER_MINUTE": "0",
                    "EARSHOT_METRICS_PORT": "0"}
            bot = BotProcess(tg, env, log)
            await bot.start()
            sampler = asyncio.create_task(bot.sample(0.5))
            started = time.monotonic()

            async def killer() -> None:
                for at in kills:
                    await asyncio.sleep(max(0.0, started + at - time.monotonic()))
                    in_flight = model.in_flight
                    bot.kill()
                    bot.lives[-1]["model_calls_in_flight_when_killed"] = in_flight
                    await bot.start()
                    print(f"  {time.monotonic() - started:5.1f} s: killed the bot (SIGKILL) with {in_flight} "
                          f"model call(s) in flight; up again in {bot.lives[-1]['ready_s']:.1f} s", flush=True)

            killing = asyncio.create_task(killer())
            for n, chat in enumerate(plan):
                await asyncio.sleep(max(0.0, started + window * n / len(plan) - time.monotonic()))
                data, seconds = clips[rng.randrange(len(clips))]
                tg.push_voice(chat, data, seconds)
                if (n + 1) % 100 == 0:
                    print(f"  {time.monotonic() - started:5.1f} s: {n + 1} sent, {len(tg.answers)} answered",
                          flush=True)
            await killing
            sent_all = time.monotonic()
            deadline = sent_all + args.drain
            # the stand-in's counts, polled
            while len(tg.answers) < len(plan) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
            drained = time.monotonic()
            await asyncio.sleep(5.0)                 # a repeated answer would arrive by now
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            exit_code = await bot.stop()
        jobs, by_key = jobs_summary(db)
        log_text = log.read_text(errors="replace")

    counts = [len(tg.answers.get(mid, [])) for mid in tg.sent_at]
    killed_at = [life["killed"] for life in bot.lives if "killed" in life]
    latencies = [tg.answers[mid][0] - sent for mid, sent in tg.sent_at.items() if tg.answers.get(mid)]
    in_order = sum(1 for chat in chats if _answered_in_order(tg, chat))
    result = {
        "config": {"notes": args.notes, "chats": args.chats, "minutes": args.minutes, "kills": args.kills,
                   "seed": args.seed, "model_latency_s": args.latency, "request_timeout_s": REQUEST_TIMEOUT,
                   "fail_429": args.throttled, "fail_500": args.server_error, "fail_hang": args.hang},
        "sent": len(counts),
        "answered_exactly_once": counts.count(1),
        "unanswered": counts.count(0),
        "answered_twice_or_more": sum(c > 1 for c in counts),
        # each repeat with when it went out and the nearest kill (seconds from the start): the window between
        # a send and its delivery mark is the one place a kill can make an answer go out twice
        # or a send that failed ambiguously (a timeout after Telegram had the message) and was tried again
        "repeats": [{"message": mid, "answers_at_s": [round(t - started, 2) for t in times],
                     "killed_after_first_s": _kill_after(times[0], killed_at),
                     "failed_sends": by_key.get(f"{tg.chat_of[mid]}:{mid}", (0, None))[0],
                     "last_error": by_key.get(f"{tg.chat_of[mid]}:{mid}", (0, None))[1]}
                    for mid, times in tg.answers.items() if len(times) > 1],
        "failure_messages": sum(len(v) for v in tg.failures.values()),
        "failure_examples": sorted({t for v in tg.failures.values() for t in v})[:5],
        "model_unavailable_notices": sum(tg.notices.values()),
        "notes_told_twice": sum(c > 1 for c in tg.notices.values()),
        "confirmed_before_stored": len(tg.confirmed_unstored),
        "chats_answered_in_order": in_order,
        "latency_s": {"p50": round(_percentile(latencies, 0.5), 2), "p95": round(_percentile(latencies, 0.95), 2),
                      "max": round(max(latencies), 2) if latencies else None},
        "drain_s_after_last_note": round(drained - sent_all, 1),
        "model": {"calls": len(model.calls), "injected": dict(model.injected),
                  "answered": len(model.answered)},
        "bot_lives": [{"ready_s": life["ready_s"], "killed": "killed" in life,
                       "model_calls_in_flight_when_killed": life.get("model_calls_in_flight_when_killed"),
                       "memory": memory_trend(life["rss"])} for life in bot.lives],
        "final_exit_code": exit_code,
        "jobs": jobs,
    }
    # a repeat is the documented corner only if a kill came right after the first answer went out, or the
    # first send failed ambiguously and was retried
    corner = [r for r in result["repeats"] if r["failed_sends"]
              or (r["killed_after_first_s"] is not None and r["killed_after_first_s"] <= WINDOW_BOUND)]
    result["repeats_explained"] = len(corner)
    result["exactly_once"] = result["answered_exactly_once"] == result["sent"]
    ok = (not result["unanswered"] and len(corner) == result["answered_twice_or_more"]
          and not result["confirmed_before_stored"] and not result["failure_messages"])
    result["ok"] = ok
    if not ok or result["repeats"]:
        result["bot_log_tail"] = log_text[-4000:]
        result["bot_log"] = log_text
    return result


def _kill_after(answered: float, kills: list[float]) -> float | None:
    """Seconds from an answer to the first kill after it, if any."""
    later = [k - answered for k in kills if k >= answered]
    return round(min(later), 3) if later else None


def _answered_in_order(tg: SoakTelegram, chat: int) -> bool:
    mids = sorted(m for m, c in tg.chat_of.items() if c == chat)
    firsts = [tg.answers[m][0] for m in mids if tg.answers.get(m)]
    return firsts == sorted(firsts) and len(firsts) == len(mids)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--notes", type=int, default=500)
    p.add_argument("--chats", type=int, default=50)
    p.add_argument("--minutes", type=float, default=2.5, help="over how long the notes arrive")
    p.add_argument("--kills", type=int, default=2, help="SIGKILLs (each followed by a restart)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--latency", type=float, default=0.5, help="seconds the model stand-in takes per call")
    p.add_argument("--throttled", type=float, default=0.10, help="share of model calls answered 429")
    p.add_argument("--server-error", type=float, default=0.05, help="share answered 500")
    p.add_argument("--hang", type=float, default=0.02, help="share that hang")
    p.add_argument("--drain", type=float, default=180.0, help="seconds allowed after the last note")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)   # a killed bot drops its connections
    print(f"soak: {args.notes} voice notes from {args.chats} chats over {args.minutes:g} min, "
          f"{args.kills} kills; model fails {args.throttled:.0%} 429, {args.server_error:.0%} 500, "
          f"{args.hang:.0%} hang", flush=True)
    result = asyncio.run(soak(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if "bot_log" in result:     # something to explain: keep the whole log beside the figures
        kept = args.out.with_suffix(".bot.log")
        kept.write_text(result.pop("bot_log"))
        print(f"the bot's log: {kept}")
    args.out.write_text(json.dumps({"benchmark": "soak", "when": time.strftime("%Y-%m-%d %H:%M:%S"), **result},
                                   indent=2) + "\n")
    shown = {k: v for k, v in result.items() if k != "bot_log_tail"}
    print(json.dumps(shown, indent=2))
    if not result["ok"]:
        verdict = "FAILED"
    elif result["exactly_once"]:
        verdict = "OK: every voice note answered exactly once"
    else:
        verdict = (f"OK: every voice note answered; {result['answered_twice_or_more']} answered twice, each after "
                   f"a kill within {WINDOW_BOUND:g} s of its first answer (the send-to-mark window) or a failed "
                   f"send tried again")
    print(verdict + f"; figures in {args.out}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
