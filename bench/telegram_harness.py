"""The Telegram bot as users meet it, for load and memory runs.

The bot is the real `earshot telegram` console command in a child process (long polling), so its
CPU, memory and event loop are its own. The Bot API stand-in (tests/fakes/telegram.py) and the model
stand-in (tests/fakes/dashscope.py, answering after `latency` seconds without decoding the audio)
run on loopback in this process. Every answer's arrival is stamped by the Telegram stand-in.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
from aiohttp import web

from bench.common import CACHE, ROOT, bench_env
from tests.fakes.dashscope import FakeDashScope
from tests.fakes.server import Served
from tests.fakes.telegram import FakeTelegram

API_KEY = "sk-bench-key"


class StampingTelegram(FakeTelegram):
    """Notes when each chat gets its answer: its first HTML message (status lines and previews are plain)."""

    def __init__(self) -> None:
        super().__init__()
        self.answered: dict[int, float] = {}
        self.answers: dict[int, str] = {}
        self.expect: set[int] = set()
        self.all_answered = asyncio.Event()

    async def _m_sendmessage(self, params: dict) -> web.Response:
        response = await super()._m_sendmessage(params)
        text = str(params.get("text", ""))
        chat = int(params["chat_id"])
        # answers and error sentences go out as HTML; status lines and previews as plain text
        final = str(params.get("parse_mode", "")).upper() == "HTML" and not text.endswith("…")
        if response.status == 200 and final and chat not in self.answered:
            self.answered[chat] = time.monotonic()
            self.answers[chat] = text
            if self.expect and self.expect <= self.answered.keys():
                self.all_answered.set()
        return response

    def expecting(self, chats: set[int]) -> None:
        self.expect = set(chats)
        self.all_answered = asyncio.Event()


class StampingDashScope(FakeDashScope):
    """Notes when each model call arrives and when its answer has been written."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.spans: list[tuple[float, float]] = []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        try:
            return await super()._handle(request)
        finally:
            self.spans.append((started, time.monotonic()))


class Sampler:
    """Samples a process's RSS, and the PSS of its whole tree (ffmpeg children included), every `every` s."""

    def __init__(self, pid: int, every: float = 0.02) -> None:
        self.proc = psutil.Process(pid)
        self.every = every
        self.peak_rss = 0
        self.peak_tree = 0
        self.peak_child = 0
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def _pss(p: psutil.Process) -> int:
        """Proportional set size: shared library pages split among the processes mapping them, so a
        sum over ffmpeg children isn't counting libavcodec once per child."""
        try:
            return p.memory_full_info().pss
        except (psutil.AccessDenied, AttributeError):
            return p.memory_info().rss

    def sample(self) -> None:
        try:
            rss = self.proc.memory_info().rss
            tree = self._pss(self.proc)
            children = []
            for c in self.proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    children.append(self._pss(c))
        except psutil.Error:
            return
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_child = max([self.peak_child, *children])
        self.peak_tree = max(self.peak_tree, tree + sum(children))

    async def _loop(self) -> None:
        while True:
            await asyncio.to_thread(self.sample)
            await asyncio.sleep(self.every)

    def start(self) -> None:
        self.peak_rss = self.peak_tree = self.peak_child = 0
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sample()


def high_water_mark(pid: int) -> int:
    """The process's peak RSS so far (VmHWM), in bytes; 0 where /proc has no such line."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Bot:
    def __init__(self, tg: StampingTelegram, ds: StampingDashScope, proc: subprocess.Popen, log: Path) -> None:
        self.tg, self.ds, self.proc, self.log = tg, ds, proc, log
        self._next_chat = 1000

    def chats(self, n: int) -> list[int]:
        """n chat ids never used before in this bot's life, so runs don't share locks or history."""
        ids = list(range(self._next_chat, self._next_chat + n))
        self._next_chat += n + 1000
        return ids

    async def send_all(self, chats: list[int], data: bytes, *, kind: str = "voice", timeout: float,
                       caption: str | None = None) -> dict[str, Any]:
        """Every chat sends `data` at once; waits until all are answered. Returns the times."""
        self.tg.expecting(set(chats))
        self.ds.max_in_flight = 0
        calls_before = len(self.ds.calls)
        spans_before = len(self.ds.spans)
        cpu_before = self.cpu()
        started = time.monotonic()
        for chat in chats:
            self.tg.push(chat, kind=kind, data=data, duration=5,
                         mime="audio/ogg" if kind == "voice" else "audio/mpeg",
                         file_name=None if kind == "voice" else "recording.mp3", caption=caption)
        try:
            await asyncio.wait_for(self.tg.all_answered.wait(), timeout)
        except TimeoutError:
            missing = sorted(set(chats) - self.tg.answered.keys())
            raise RuntimeError(f"{len(missing)} of {len(chats)} chats unanswered after {timeout:.0f} s; "
                               f"bot log: {self.log}") from None
        done = [self.tg.answered[c] - started for c in chats]
        spans = [(a - started, b - started) for a, b in self.ds.spans[spans_before:]]
        busy = sum(b - a for a, b in spans)
        bot_cpu, ffmpeg_cpu, own_cpu = (after - before for after, before in zip(self.cpu(), cpu_before, strict=True))
        # the stand-in's answers: "heard …" for audio, "[text-only] …" for a combining call, "[fake-asr] …" for
        # the recognizer (a /transcribe with EARSHOT_ASR_MODEL); else an error
        failed = [c for c in chats if not any(mark in self.tg.answers[c] for mark in ("heard", "[text-only]",
                                                                                         "[fake-asr]"))]
        return {"wall_s": max(done), "latencies_s": sorted(round(x, 4) for x in done),
                "failed": len(failed), "first_failure": self.tg.answers[failed[0]] if failed else None,
                "model_calls": len(self.ds.calls) - calls_before,
                "first_model_call_s": round(min(a for a, _ in spans), 4) if spans else None,
                "last_model_answer_s": round(max(b for _, b in spans), 4) if spans else None,
                "mean_in_flight": round(busy / max(done), 2),
                "model_spans": [(round(a, 4), round(b, 4)) for a, b in sorted(spans)],
                "max_in_flight": self.ds.max_in_flight,
                "bot_cpu_s": round(bot_cpu, 3), "ffmpeg_cpu_s": round(ffmpeg_cpu, 3),
                "standins_cpu_s": round(own_cpu, 3)}

    def cpu(self) -> tuple[float, float, float]:
        """CPU seconds so far: the bot's Python process, its finished ffmpeg children, and this process
        (the stand-ins)."""
        t = psutil.Process(self.proc.pid).cpu_times()
        me = resource.getrusage(resource.RUSAGE_SELF)
        return t.user + t.system, t.children_user + t.children_system, me.ru_utime + me.ru_stime


@contextlib.asynccontextmanager
async def running_bot(*, latency: float = 0.0, env: dict[str, str] | None = None,
                      command: list[str] | None = None) -> AsyncIterator[Bot]:
    """Stand-ins on loopback and `earshot telegram` in a child process, until the block ends."""
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)   # the bot hanging up at exit is no news
    tg, ds = StampingTelegram(), StampingDashScope(api_key=API_KEY, inspect=False, latency=latency)
    with tempfile.TemporaryDirectory(prefix="earshot-bench-") as tmp:
        async with Served(tg.app) as tgs, Served(ds.app) as dss:
            child_env = {**os.environ, "TELEGRAM_BOT_TOKEN": tg.token, "TELEGRAM_API_BASE_URL": tgs.url,
                         "DASHSCOPE_API_KEY": API_KEY, "DASHSCOPE_HTTP_BASE_URL": dss.url + "/api/v1",
                         "EARSHOT_DB": str(Path(tmp) / "earshot.db"),
                         # the earshot beside this bench/ (a scratch copy, when prototyping a change)
                         "PYTHONPATH": str(ROOT), **bench_env(), **(env or {})}
            for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):   # loopback only, never via a proxy
                child_env.pop(name, None)
                child_env.pop(name.lower(), None)
            CACHE.mkdir(parents=True, exist_ok=True)
            log = CACHE / f"bot-{os.getpid()}-{int(time.time())}.log"     # kept, to read after a failure
            earshot = Path(sys.executable).with_name("earshot")
            cmd = command or ([str(earshot)] if earshot.exists() else
                              [sys.executable, "-c", "from bots.cli import main; main()"])
            with open(log, "wb") as log_file:
                proc = subprocess.Popen([*cmd, "telegram"], cwd=ROOT, env=child_env, stdin=subprocess.DEVNULL,
                                        stdout=log_file, stderr=subprocess.STDOUT)
            bot = Bot(tg, ds, proc, log)
            try:
                deadline = time.monotonic() + 30
                while not tg.called("getUpdates"):      # polling: ready for messages
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"the bot did not start:\n{log.read_text()[-2000:]}")
                    await asyncio.sleep(0.05)
                yield bot
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        await asyncio.wait_for(asyncio.to_thread(proc.wait), 15)
                    except TimeoutError:
                        proc.kill()
                        proc.wait()
