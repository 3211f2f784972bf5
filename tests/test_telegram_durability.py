"""The Telegram bot survives kill -9: `earshot telegram` runs as a child process against the stand-ins, is
killed mid-answer or right after fetching updates, and is started again. Every voice note gets exactly
one answer, and Telegram is never told an update was received before its job was stored."""
from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from core.flow.progress import STREAM_TAIL
from tests.conftest import free_port, kill, spawn, terminate
from tests.fakes.dashscope import FakeDashScope, tone_audio
from tests.fakes.server import Served
from tests.fakes.telegram import FakeTelegram
from tests.waiting import job_rows, settled
from tests.waiting import until as _until


async def until(predicate: Callable[[], Any], within: float = 30.0) -> Any:
    """As tests.waiting.until, with longer to wait: a bot process of its own starts and recovers slower."""
    return await _until(predicate, within)


ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-durable-key"
CLIP = tone_audio((0, 0.5), (440, 1.0), (0, 0.5), fmt="ogg")


class Watching(FakeTelegram):
    """Checks at every getUpdates that each voice note it is about to confirm has a stored job."""

    def __init__(self, db: Path) -> None:
        super().__init__()
        self.db = db
        self.voice: dict[int, tuple[int, int]] = {}      # update_id -> (chat, message)
        self.confirmed_unstored: list[int] = []
        self.on_batch: Callable[[], None] | None = None  # called once, as a batch of updates goes out

    def push(self, chat_id: int, **kw: Any) -> int:
        mid = super().push(chat_id, **kw)
        if kw.get("kind") == "voice" and not self.webhook:    # polled: confirmed by a later getUpdates
            self.voice[self._updates[-1]["update_id"]] = (chat_id, mid)
        return mid

    def _stored(self, chat: int, mid: int) -> bool:
        try:
            conn = sqlite3.connect(self.db)
            try:
                return conn.execute("SELECT 1 FROM jobs WHERE platform = 'telegram' AND key = ?",
                                    [f"{chat}:{mid}"]).fetchone() is not None
            finally:
                conn.close()
        except sqlite3.OperationalError:
            return False

    async def _m_getupdates(self, params: dict) -> web.Response:
        offset = int(params.get("offset") or 0)
        for uid in [u for u in self.voice if u < offset]:
            if not self._stored(*self.voice.pop(uid)):
                self.confirmed_unstored.append(uid)
        response = await super()._m_getupdates(params)
        if self.on_batch is not None and b'"update_id"' in (response.body or b""):
            hook, self.on_batch = self.on_batch, None
            asyncio.get_running_loop().call_later(0.01, hook)
        return response


class Bot:
    """`earshot telegram` in a child process, started and killed at will."""

    def __init__(self, tg: Watching, tg_url: str, ds_url: str, db: Path, log: Path, *args: str) -> None:
        self.tg, self.log, self.args = tg, log, args
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("TELEGRAM_", "DASHSCOPE_", "EARSHOT_", "HTTP_PROXY", "HTTPS_PROXY",
                                         "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"))}
        self.env |= {"TELEGRAM_BOT_TOKEN": tg.token, "TELEGRAM_API_BASE_URL": tg_url,
                     "DASHSCOPE_API_KEY": KEY, "DASHSCOPE_HTTP_BASE_URL": ds_url + "/api/v1",
                     "EARSHOT_DB": str(db), "EARSHOT_USER_REQUESTS_PER_MINUTE": "0",
                     "EARSHOT_METRICS_PORT": "0"}
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        """Start it and wait until it listens: polling, or its webhook registered."""
        ready = len(self.tg.called("getUpdates")) + len(self.tg.called("setWebhook"))
        self.proc = await asyncio.to_thread(
            spawn, [sys.executable, "-c", "from bots.cli import main; main()", "telegram", *self.args], self.log,
            self.env, append=True, cwd=ROOT)
        await until(lambda: len(self.tg.called("getUpdates")) + len(self.tg.called("setWebhook")) > ready
                    or self.proc.poll() is not None, 30)
        assert self.proc.poll() is None, self.log.read_text()[-3000:]

    def kill(self) -> None:
        kill(self.proc)

    async def stop(self) -> None:
        await terminate(self.proc)





def answers(tg: FakeTelegram, chat: int) -> list[dict]:
    """Every answer the bot sent in the chat (deleted or not): what the model heard, not a streamed preview."""
    return [p for p in tg.called("sendMessage") if int(p["chat_id"]) == chat
            and "heard" in (text := str(p.get("text"))) and not text.endswith(STREAM_TAIL)]





async def test_killed_while_the_model_answers_then_restarted_answers_exactly_once(tmp_path: Path):
    db = tmp_path / "earshot.db"
    tg, ds = Watching(db), FakeDashScope(api_key=KEY, latency=60.0)     # the model takes its time
    async with Served(tg.app) as tgs, Served(ds.app) as dss:
        bot = Bot(tg, tgs.url, dss.url, db, tmp_path / "bot.log")
        try:
            await bot.start()
            mid = tg.push(501, kind="voice", data=CLIP)
            await until(lambda: ds.in_flight)                      # the model is answering...
            bot.kill()                                              # ...and the bot dies
            assert not answers(tg, 501)
            ds.latency = 0.2
            await bot.start()
            [answer] = await until(lambda: answers(tg, 501))
            await until(lambda: settled(db, 1))     # its job is done and delivered: nothing more will be sent
        finally:
            await bot.stop()
    assert len(answers(tg, 501)) == 1 and "440Hz" in answer["text"]
    assert answer["reply_parameters"]["message_id"] == mid
    assert len(ds.calls) == 2 and not tg.confirmed_unstored
    [row] = job_rows(db)
    assert (row["state"], row["attempts"], row["faults"]) == ("done", 2, 1) and row["delivered"]


async def test_killed_right_after_fetching_updates_loses_none_and_repeats_none(tmp_path: Path):
    db = tmp_path / "earshot.db"
    tg, ds = Watching(db), FakeDashScope(api_key=KEY, latency=0.2, inspect=False)
    chats = list(range(600, 620))
    async with Served(tg.app) as tgs, Served(ds.app) as dss:
        bot = Bot(tg, tgs.url, dss.url, db, tmp_path / "bot.log")
        try:
            await bot.start()
            tg.on_batch = bot.kill            # dies while handling the batch it just fetched
            for chat in chats:
                tg.push(chat, kind="voice", data=CLIP)
            await until(lambda: bot.proc is not None and bot.proc.poll() is not None)
            await bot.start()
            await until(lambda: all(answers(tg, c) for c in chats))
            await until(lambda: settled(db, len(chats)))      # every job done and delivered: no more answers
        finally:
            await bot.stop()
    assert [len(answers(tg, c)) for c in chats] == [1] * len(chats)
    assert not tg.confirmed_unstored
    rows = job_rows(db)
    assert len(rows) == len(chats) and all(r["state"] == "done" and r["delivered"] for r in rows)


class WebhookWatching(Watching):
    """Checks, each time the bot's webhook answers 200 (Telegram's "delivered"), that the job is stored."""

    def __init__(self, db: Path) -> None:
        super().__init__(db)
        self.acknowledged: list[tuple[int, int]] = []
        self.acknowledged_unstored: list[tuple[int, int]] = []

    async def _post_webhook(self, update: dict) -> None:
        await super()._post_webhook(update)          # returns once the webhook said 200
        message = update["message"]
        key = (message["chat"]["id"], message["message_id"])
        self.acknowledged.append(key)
        if not self._stored(*key):
            self.acknowledged_unstored.append(key)


async def test_webhook_answers_telegram_only_once_the_job_is_stored(tmp_path: Path):
    port = free_port()
    db = tmp_path / "earshot.db"
    tg, ds = WebhookWatching(db), FakeDashScope(api_key=KEY, latency=0.2, inspect=False)
    chats = list(range(700, 708))
    async with Served(tg.app) as tgs, Served(ds.app) as dss:
        bot = Bot(tg, tgs.url, dss.url, db, tmp_path / "bot.log", "--webhook-url",
                  f"http://127.0.0.1:{port}/hook", "--port", str(port), "--listen", "127.0.0.1")
        try:
            await bot.start()
            for chat in chats:
                tg.push(chat, kind="voice", data=CLIP)
            await until(lambda: all(answers(tg, c) for c in chats))
        finally:
            await bot.stop()
    assert len(tg.acknowledged) == len(chats) and not tg.acknowledged_unstored
    assert [len(answers(tg, c)) for c in chats] == [1] * len(chats)
