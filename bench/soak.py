"""Soak: many voice notes through the Telegram bot while the model misbehaves and the bot is killed.

By default 500 voice notes from 50 chats arrive over 2.5 minutes through the Telegram stand-in; the
DashScope stand-in fails 10 % of calls with 429, 5 % with 500 and 2 % by hanging; the bot (the real
`earshot telegram`, a child process) is killed with SIGKILL and started again twice while notes keep
coming. It checks that every voice note is answered exactly once and in order per chat, that no update
was confirmed to Telegram before its job was stored, and samples the bot's RSS to show whether memory
stays flat.

With `--replicas N --db postgres` a throwaway PostgreSQL cluster (tests/postgres.py) is the shared store
of N `earshot telegram` replicas, and every `--kill-every` seconds (30 by default) one replica picked at
random is killed with SIGKILL and started again while the notes arrive. The Telegram stand-in answers a
second consumer of getUpdates 409 Conflict, as the Bot API does, and counts them: with one elected poller
there are none. With `--webhook` the replicas take Telegram's POSTs in turn through a round-robin balancer
(the next replica when one is down), so every replica stores and works jobs.

    python -m bench.soak [--notes 500] [--chats 50] [--minutes 2.5] [--kills 2] [--seed 7]
    python -m bench.soak --replicas 3 --db postgres [--kill-every 30] [--webhook]

Not part of the unit suite: it takes about four minutes. Figures go to bench/results/soak.json (one
replica on SQLite) or soak-<db>-<N>replicas.json; the exit status is 1 when a note was lost, answered
twice, or answered out of order.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:           # `python bench/soak.py` as well as `python -m bench.soak`
    sys.path.insert(0, str(ROOT))

from core.flow.progress import STREAM_TAIL  # noqa: E402
from core.words import messages  # noqa: E402
from tests.fakes.dashscope import SERVER_ERROR, THROTTLED, Failure, FakeDashScope, tone_audio  # noqa: E402
from tests.fakes.server import Served  # noqa: E402
from tests.fakes.telegram import FakeTelegram  # noqa: E402
from tests.postgres import Cluster  # noqa: E402

API_KEY = "sk-soak-key"
RESULTS = ROOT / "bench" / "results"
REQUEST_TIMEOUT = 4.0        # what the bot waits for one model call: a hung call costs this much, then a retry
HANG = Failure(None, hang=60.0)
WINDOW_BOUND = 1.0          # a repeat counts as the send-to-mark corner if a kill came this soon after the answer
WARM_UP = 10.0               # seconds of each bot life left out of the memory trend (imports, first ffmpeg runs)
READY = b"earshot is listening"   # what a replica logs once it has started (core.app opened, bot set up)
ELECTED = b"elected: this process does telegram-polling"    # core.store.election: this replica polls now
ANSWERED = b": answered message "       # bots/telegram/jobs.py logs it for each answer a replica delivers
WEBHOOK_SECRET = "soak-webhook-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Balancer:
    """A load balancer in front of webhook replicas: each POST goes to the next replica in turn (the one
    after, if that one doesn't answer)."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self._turn = itertools.cycle(range(len(ports)))
        self.app = web.Application()
        self.app.router.add_post("/hook", self._pass)
        self._session: aiohttp.ClientSession | None = None

    async def _pass(self, request: web.Request) -> web.Response:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        body, headers = await request.read(), {k: v for k, v in request.headers.items()
                                                if k.lower() in ("content-type", "x-telegram-bot-api-secret-token")}
        for _ in self.ports:
            port = self.ports[next(self._turn)]
            with contextlib.suppress(aiohttp.ClientError):
                async with self._session.post(f"http://127.0.0.1:{port}/hook", data=body, headers=headers) as r:
                    return web.Response(status=r.status)
        return web.Response(status=502)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def webhook_args(url: str, port: int) -> tuple[str, ...]:
    """`earshot telegram` in webhook mode: Telegram is told `url` (the balancer), the replica serves `port`."""
    return "--webhook-url", url, "--port", str(port), "--listen", "127.0.0.1"


class JobsView:
    """The bots' jobs table as the soak reads it from outside: an SQLite file or a PostgreSQL database."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.postgres = target.startswith("postgresql://")
        self._conn: Any = None

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        if not self.postgres:
            with contextlib.closing(sqlite3.connect(self.target)) as conn:
                return conn.execute(sql).fetchall()
        import psycopg
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.target, autocommit=True)
            return self._conn.execute(sql).fetchall()
        except psycopg.errors.UndefinedTable:
            return []

    def keys(self) -> set[str]:
        """The message keys of the Telegram jobs stored (committed) so far."""
        try:
            return {k for (k,) in self.query("SELECT key FROM jobs WHERE platform = 'telegram'")}
        except (sqlite3.Error, OSError):
            return set()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


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

    def __init__(self, jobs: JobsView) -> None:
        super().__init__()
        self.jobs = jobs
        self.sent_at: dict[int, float] = {}              # message id -> when the user sent it
        self.chat_of: dict[int, int] = {}
        self.answers: dict[int, list[float]] = {}        # message id -> times answered
        self.answer_order: dict[int, list[int]] = {}     # chat -> the notes answered, in the order answers came
        self.notices: Counter[int] = Counter()           # "the model is unavailable" said about it
        self.failures: dict[int, list[str]] = {}         # anything else said in reply to it
        self.unconfirmed: dict[int, tuple[int, int]] = {}   # update id -> (chat, message), not yet confirmed
        self.confirmed_unstored: list[int] = []

    def push_voice(self, chat: int, data: bytes, seconds: int) -> int:
        mid = self.push(chat, kind="voice", data=data, duration=seconds)
        self.sent_at[mid] = time.monotonic()
        self.chat_of[mid] = chat
        return mid

    def deliver(self, update: dict) -> None:
        message = update.get("message") or {}
        if "voice" in message:
            self.unconfirmed[update["update_id"]] = (message["chat"]["id"], message["message_id"])
        super().deliver(update)

    async def _post_webhook(self, update: dict) -> None:
        """Webhook mode: once a replica has answered the POST 200 (Telegram stops retrying), the job is stored."""
        await super()._post_webhook(update)
        if (where := self.unconfirmed.pop(update["update_id"], None)) is not None:
            chat, mid = where
            if f"{chat}:{mid}" not in await asyncio.to_thread(self.jobs.keys):
                self.confirmed_unstored.append(update["update_id"])

    async def _m_sendmessage(self, params: dict) -> web.Response:
        response = await super()._m_sendmessage(params)
        reply = int((params.get("reply_parameters") or {}).get("message_id") or 0)
        text = str(params.get("text", ""))
        if response.status != 200 or reply not in self.sent_at or text.endswith(STREAM_TAIL):
            return response                              # not about a voice note, or a streamed preview
        if text.startswith("heard"):
            self.answers.setdefault(reply, []).append(time.monotonic())
            self.answer_order.setdefault(self.chat_of[reply], []).append(reply)
        elif text == messages.MODEL_WAITING:
            self.notices[reply] += 1
        else:
            self.failures.setdefault(reply, []).append(text)
        return response

    async def _m_getupdates(self, params: dict) -> web.Response:
        offset = int(params.get("offset") or 0)
        confirmed = [u for u in self.unconfirmed if u < offset]
        if confirmed:
            stored = await asyncio.to_thread(self.jobs.keys)
            for u in confirmed:
                chat, mid = self.unconfirmed.pop(u)
                if f"{chat}:{mid}" not in stored:
                    self.confirmed_unstored.append(u)
        return await super()._m_getupdates(params)


class Replica:
    """One `earshot telegram` child process; each start is a new life, logged to the same file."""

    def __init__(self, env: dict[str, str], log: Path, index: int = 0, args: tuple[str, ...] = ()) -> None:
        self.env, self.log, self.index, self.args = env, log, index, args
        self.proc: subprocess.Popen[bytes] | None = None
        self.lives: list[dict[str, Any]] = []

    def _said_ready(self) -> int:
        try:
            return self.log.read_bytes().count(READY)
        except FileNotFoundError:
            return 0

    def answered(self) -> list[int]:
        """Answers each life delivered (its log lines since it started)."""
        text = self.log.read_bytes() if self.log.exists() else b""
        starts = [life["log_from"] for life in self.lives] + [len(text)]
        return [text[a:b].count(ANSWERED) for a, b in itertools.pairwise(starts)]

    def polling(self) -> bool:
        """Whether this life was elected the poller (its log says so since it started)."""
        with open(self.log, "rb") as f:
            f.seek(self.lives[-1]["log_from"] if self.lives else 0)
            return ELECTED in f.read()

    async def start(self) -> None:
        """Start a life and wait until it says it is listening (polling, or working jobs beside the poller)."""
        before = self._said_ready()
        log_from = self.log.stat().st_size if self.log.exists() else 0
        began = time.monotonic()
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-c", "from bots.cli import main; main()", "telegram",
                                          *self.args], cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)
        while self._said_ready() == before:
            if self.proc.poll() is not None or time.monotonic() - began > 60:
                raise RuntimeError(f"replica {self.index} did not start:\n{self.log.read_text()[-3000:]}")
            await asyncio.sleep(0.05)
        self.lives.append({"pid": self.proc.pid, "started": began, "ready_s": round(time.monotonic() - began, 2),
                           "rss": [], "log_from": log_from})

    def cpu_s(self) -> float:
        """CPU seconds of the current life: the bot's process and its finished ffmpeg children."""
        if self.proc is None:
            return 0.0
        try:
            t = psutil.Process(self.proc.pid).cpu_times()
        except psutil.Error:
            return 0.0
        return t.user + t.system + t.children_user + t.children_system

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


def jobs_summary(jobs: JobsView) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Totals from the jobs table, and per message key what became of its job."""
    rows = jobs.query("SELECT state, attempts, faults, notified, CASE WHEN delivered IS NULL THEN 0 ELSE 1 END, "
                      "delivery_attempts, key, last_error, owner FROM jobs")
    summary = {"jobs": len(rows), "states": dict(Counter(r[0] for r in rows)),
               "delivered": sum(r[4] for r in rows), "attempts": sum(r[1] for r in rows),
               "tried_more_than_once": sum(r[1] > 1 for r in rows), "interrupted_by_a_kill": sum(r[2] for r in rows),
               "told_model_unavailable": sum(bool(r[3]) for r in rows), "sends_retried": sum(r[5] for r in rows)}
    return summary, {r[6]: {"state": r[0], "attempts": r[1], "faults": r[2], "delivered": bool(r[4]),
                            "failed_sends": r[5], "last_error": r[7], "owner": r[8]} for r in rows}


@contextlib.contextmanager
def shared_store(db: str, directory: Path) -> Iterator[str]:
    """EARSHOT_DB for the replicas: an SQLite file in `directory`, or a throwaway PostgreSQL cluster's database."""
    if db == "sqlite":
        yield str(directory / "earshot.db")
        return
    cluster = Cluster()
    try:
        cluster.start()
        yield cluster.url()
    finally:
        cluster.stop()


def stand_in_env(tg: FakeTelegram, telegram_url: str, model_url: str, db: str) -> dict[str, str]:
    """The replicas' environment: this one without earshot's settings or a proxy, pointed at the stand-ins."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DASHSCOPE_", "EARSHOT_"))
           and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    return env | {"TELEGRAM_BOT_TOKEN": tg.token, "TELEGRAM_API_BASE_URL": telegram_url,
                  "DASHSCOPE_API_KEY": API_KEY, "DASHSCOPE_HTTP_BASE_URL": model_url + "/api/v1",
                  "EARSHOT_DB": db, "EARSHOT_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT),
                  # budgets and the rate limit would refuse a soak's volume; they are not what is tested here
                  "EARSHOT_USER_DAILY_TOKENS": "0", "EARSHOT_CHAT_DAILY_TOKENS": "0",
                  "EARSHOT_GLOBAL_DAILY_TOKENS": "0", "EARSHOT_USER_REQUESTS_PER_MINUTE": "0",
                  "EARSHOT_METRICS_PORT": "0"}


def kill_times(args: argparse.Namespace, window: float) -> list[float]:
    """Seconds from the first note at which a replica is killed: every `kill_every` while notes arrive, or
    `kills` spread so that the last life is the longest."""
    if args.kill_every:
        return [args.kill_every * k for k in range(1, int(window // args.kill_every) + 1)
                if args.kill_every * k < window]
    return [window * (k + 1) / (args.kills + 2) for k in range(args.kills)]


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    victims = random.Random(args.seed + 2)
    # a few lengths of voice note, so the bot decodes different amounts
    clips = [(tone_audio((0, 0.3), (hz, seconds), (0, 0.3), fmt="ogg"), int(seconds + 1))
             for hz, seconds in ((440, 1.0), (550, 2.5), (660, 4.0), (880, 6.0))]
    chats = [10_000 + n for n in range(args.chats)]
    plan = [chats[n % len(chats)] for n in range(args.notes)]
    rng.shuffle(plan)
    window = args.minutes * 60
    kills = kill_times(args, window)

    with tempfile.TemporaryDirectory(prefix="earshot-soak-") as tmp:
        with shared_store(args.db, Path(tmp)) as target:
            jobs = JobsView(target)
            tg = SoakTelegram(jobs)
            model = FlakyModel(random.Random(args.seed + 1), throttled=args.throttled,
                               server_error=args.server_error, hang=args.hang, latency=args.latency)
            ports = [free_port() for _ in range(args.replicas)]
            balancer = Balancer(ports)
            async with Served(tg.app) as tgs, Served(model.app) as ms, Served(balancer.app) as lb:
                env = stand_in_env(tg, tgs.url, ms.url, target)
                extra: list[tuple[str, ...]] = [() for _ in ports]
                if args.webhook:     # Telegram POSTs each update to the balancer, which passes it to a replica
                    env |= {"TELEGRAM_WEBHOOK_SECRET": WEBHOOK_SECRET}
                    extra = [webhook_args(f"{lb.url}/hook", port) for port in ports]
                replicas = [Replica(env, Path(tmp) / f"replica-{i}.log", i, extra[i]) for i in range(args.replicas)]
                await asyncio.gather(*(r.start() for r in replicas))    # together: migrations run once
                samplers = [asyncio.create_task(r.sample(0.5)) for r in replicas]
                started = time.monotonic()
                killed: list[dict[str, Any]] = []

                async def killer() -> None:
                    for at in kills:
                        await asyncio.sleep(max(0.0, started + at - time.monotonic()))
                        victim = replicas[victims.randrange(len(replicas))]
                        in_flight = model.in_flight
                        victim.kill()
                        victim.lives[-1]["model_calls_in_flight_when_killed"] = in_flight
                        kill = {"at": time.monotonic(), "replica": victim.index, "model_calls_in_flight": in_flight,
                                "was_polling": victim.polling() if len(replicas) > 1 else True}
                        await victim.start()
                        killed.append(kill | {"up_again_s": victim.lives[-1]["ready_s"]})
                        print(f"  {kill['at'] - started:5.1f} s: killed replica {victim.index}"
                              f"{' (the poller)' if kill['was_polling'] else ''} with SIGKILL, {in_flight} model "
                              f"call(s) in flight; up again in {victim.lives[-1]['ready_s']:.1f} s", flush=True)

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
                for sampler in samplers:
                    sampler.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sampler
                exit_codes = await asyncio.gather(*(r.stop() for r in replicas))
                await balancer.close()
            totals, by_key = await asyncio.to_thread(jobs_summary, jobs)
            jobs.close()
        logs = {r.index: r.log.read_text(errors="replace") for r in replicas}
        answers_by_life = {r.index: r.answered() for r in replicas}

    counts = [len(tg.answers.get(mid, [])) for mid in tg.sent_at]
    killed_at = [k["at"] for k in killed]
    latencies = [tg.answers[mid][0] - sent for mid, sent in tg.sent_at.items() if tg.answers.get(mid)]
    out_of_order = [o for chat in chats if (o := _out_of_order(tg, chat))]

    def job_of(mid: int) -> dict[str, Any]:
        return by_key.get(f"{tg.chat_of[mid]}:{mid}", {})

    result: dict[str, Any] = {
        "config": {"notes": args.notes, "chats": args.chats, "minutes": args.minutes, "replicas": args.replicas,
                   "db": args.db, "telegram": "webhook" if args.webhook else "long polling", "kills": len(kills),
                   "kill_every_s": args.kill_every,
                   "seed": args.seed, "model_latency_s": args.latency, "request_timeout_s": REQUEST_TIMEOUT,
                   "fail_429": args.throttled, "fail_500": args.server_error, "fail_hang": args.hang},
        "sent": len(counts),
        "answered_exactly_once": counts.count(1),
        "unanswered": counts.count(0),
        "answered_twice_or_more": sum(c > 1 for c in counts),
        "unanswered_notes": [{"chat": tg.chat_of[mid], "message": mid, "sent_at_s": round(sent - started, 2),
                              "job": job_of(mid) or None}
                             for mid, sent in tg.sent_at.items() if not tg.answers.get(mid)][:50],
        # each repeat with when it went out and the nearest kill (seconds from the start): the window between
        # a send and its delivery mark is the one place a kill can make an answer go out twice
        # or a send that failed ambiguously (a timeout after Telegram had the message) and was tried again
        "repeats": [{"message": mid, "chat": tg.chat_of[mid], "answers_at_s": [round(t - started, 2) for t in times],
                     "killed_after_first_s": _kill_after(times[0], killed_at),
                     "failed_sends": job_of(mid).get("failed_sends", 0),
                     "last_error": job_of(mid).get("last_error")}
                    for mid, times in tg.answers.items() if len(times) > 1],
        "failure_messages": sum(len(v) for v in tg.failures.values()),
        "failure_examples": sorted({t for v in tg.failures.values() for t in v})[:5],
        "model_unavailable_notices": sum(tg.notices.values()),
        "notes_told_twice": sum(c > 1 for c in tg.notices.values()),
        "confirmed_before_stored": len(tg.confirmed_unstored),
        "chats_answered_in_order": len(chats) - len(out_of_order),
        "chats_out_of_order": out_of_order[:10],
        "overlapping_long_polls": tg.conflicts,   # answered 409 Conflict: more than one poller
        "latency_s": {"p50": round(_percentile(latencies, 0.5), 2), "p95": round(_percentile(latencies, 0.95), 2),
                      "p99": round(_percentile(latencies, 0.99), 2),
                      "max": round(max(latencies), 2) if latencies else None},
        "drain_s_after_last_note": round(drained - sent_all, 1),
        "model": {"calls": len(model.calls), "injected": dict(model.injected),
                  "answered": len(model.answered)},
        # polls_again_after_s: from the kill to the next getUpdates anyone made (a new poller taking over)
        "kills": [{"at_s": round(k["at"] - started, 1), "replica": k["replica"], "was_polling": k["was_polling"],
                   "model_calls_in_flight": k["model_calls_in_flight"], "up_again_s": k["up_again_s"],
                   "polls_again_after_s": _next_poll(tg, k["at"])} for k in killed],
        "replicas": [{"replica": r.index,
                      "lives": [{"ready_s": life["ready_s"], "killed": "killed" in life, "answers_delivered": n,
                                 "memory": memory_trend(life["rss"])}
                                for life, n in zip(r.lives, answers_by_life[r.index], strict=True)]}
                     for r in replicas],
        "final_exit_codes": exit_codes,
        "jobs": totals,
    }
    # a repeat is the documented corner only if a kill came right after the first answer went out, or the
    # first send failed ambiguously and was retried
    corner = [r for r in result["repeats"] if r["failed_sends"]
              or (r["killed_after_first_s"] is not None and r["killed_after_first_s"] <= WINDOW_BOUND)]
    result["repeats_explained"] = len(corner)
    result["exactly_once"] = result["answered_exactly_once"] == result["sent"]
    ok = (not result["unanswered"] and len(corner) == result["answered_twice_or_more"] and not out_of_order
          and not result["confirmed_before_stored"] and not result["failure_messages"])
    result["ok"] = ok
    if not ok or result["repeats"]:
        result["logs"] = logs
    return result


def _next_poll(tg: SoakTelegram, after: float) -> float | None:
    later = [c["t"] - after for c in tg.calls if c["method"].lower() == "getupdates" and c["t"] > after]
    return round(min(later), 2) if later else None


def _kill_after(answered: float, kills: list[float]) -> float | None:
    """Seconds from an answer to the first kill after it, if any."""
    later = [k - answered for k in kills if k >= answered]
    return round(min(later), 3) if later else None


def _out_of_order(tg: SoakTelegram, chat: int) -> dict[str, Any] | None:
    """The chat's notes in the order they were sent against the order their answers reached the chat (a note
    answered twice counts where it was first answered); None when they agree and every note was answered."""
    sent = sorted((m for m, c in tg.chat_of.items() if c == chat), key=lambda m: tg.sent_at[m])
    answered = list(dict.fromkeys(tg.answer_order.get(chat, [])))
    if answered == sent:
        return None
    return {"chat": chat, "sent": sent, "answered": answered}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--notes", type=int, default=500)
    p.add_argument("--chats", type=int, default=50)
    p.add_argument("--minutes", type=float, default=2.5, help="over how long the notes arrive")
    p.add_argument("--replicas", type=int, default=1, help="`earshot telegram` processes on the one database")
    p.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite",
                   help="their store: an SQLite file, or a throwaway PostgreSQL cluster")
    p.add_argument("--webhook", action="store_true",
                   help="webhook replicas behind a round-robin balancer instead of long polling")
    p.add_argument("--kills", type=int, default=2, help="SIGKILLs (each followed by a restart), spread out")
    p.add_argument("--kill-every", type=float, default=None,
                   help="instead: kill a replica picked at random every this many seconds while notes arrive "
                        "(default 30 with more than one replica)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--latency", type=float, default=0.5, help="seconds the model stand-in takes per call")
    p.add_argument("--throttled", type=float, default=0.10, help="share of model calls answered 429")
    p.add_argument("--server-error", type=float, default=0.05, help="share answered 500")
    p.add_argument("--hang", type=float, default=0.02, help="share that hang")
    p.add_argument("--drain", type=float, default=180.0, help="seconds allowed after the last note")
    p.add_argument("--out", type=Path, default=None,
                   help="default bench/results/soak.json, or soak-<db>-<N>replicas.json")
    args = p.parse_args(argv)
    if args.kill_every is None and args.replicas > 1:
        args.kill_every = 30.0
    if args.out is None:
        single = args.replicas == 1 and args.db == "sqlite"
        mode = "-webhook" if args.webhook else ""
        args.out = RESULTS / ("soak.json" if single and not mode else
                              f"soak-{args.db}-{args.replicas}replicas{mode}.json")
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)   # a killed bot drops its connections
    kills = (f"a replica killed every {args.kill_every:g} s" if args.kill_every else f"{args.kills} kills")
    print(f"soak: {args.notes} voice notes from {args.chats} chats over {args.minutes:g} min, "
          f"{args.replicas} replica(s) on {args.db}{' (webhook)' if args.webhook else ''}, {kills}; "
          f"model fails {args.throttled:.0%} 429, {args.server_error:.0%} 500, {args.hang:.0%} hang", flush=True)
    result = asyncio.run(soak(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    logs: dict[int, str] = result.pop("logs", {})
    for index, text in logs.items():   # something to explain: keep the logs beside the figures
        kept = args.out.with_suffix(f".replica{index}.log")
        kept.write_text(text)
        print(f"replica {index}'s log: {kept}")
    args.out.write_text(json.dumps({"benchmark": "soak", "when": time.strftime("%Y-%m-%d %H:%M:%S"), **result},
                                   indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if not result["ok"]:
        verdict = "FAILED"
    elif result["exactly_once"]:
        verdict = "OK: every voice note answered exactly once, in order per chat"
    else:
        verdict = (f"OK: every voice note answered, in order per chat; {result['answered_twice_or_more']} answered "
                   f"twice, each after a kill within {WINDOW_BOUND:g} s of its first answer (the send-to-mark "
                   f"window) or a failed send tried again")
    print(verdict + f"; figures in {args.out}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
