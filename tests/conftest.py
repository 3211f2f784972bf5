"""Shared fixtures: the stand-ins served on loopback, settings that point earshot at them, and the running bots
the tests talk to. No test may reach a real service: credentials and endpoints are cleared first."""
from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from telegram import Update
from telegram.ext import TypeHandler

from bots.slack import SlackServer
from bots.telegram import build_application
from bots.telegram.app import ALLOWED_UPDATES
from core.app import Earshot
from core.config import Settings
from tests.fakes.dashscope import FakeDashScope, tone_audio
from tests.fakes.server import Served, Threaded
from tests.fakes.slack import FakeSlack, event_body, signed_headers, slash_body
from tests.fakes.telegram import FakeTelegram
from tests.postgres import Cluster
from tests.waiting import settled, until

MODEL_KEY = "sk-test"                      # what the DashScope stand-in answers to
SLACK_SECRET = "test-signing-secret-8c1f"  # the Slack app's signing secret


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith(("TELEGRAM_", "SLACK_", "DASHSCOPE_", "EARSHOT_", "DISCORD_", "WHATSAPP_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("EARSHOT_DB", str(tmp_path / "earshot.db"))
    # no fixed port for /healthz and /metrics: tests (and other checkouts on the machine) run side by side
    monkeypatch.setenv("EARSHOT_METRICS_PORT", "0")
    # the chat model transcribes and speaks for itself unless a test asks for the recognizer or the voice
    monkeypatch.setenv("EARSHOT_ASR_MODEL", "")
    monkeypatch.setenv("EARSHOT_TTS_MODEL", "")


def free_port() -> int:
    """A loopback port nobody listens on right now (for a child process to bind)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(args: list[str], log: Path, env: dict[str, str], *, append: bool = False,
          **popen: Any) -> subprocess.Popen[bytes]:
    """Start a process with its output (both streams) going to `log`. Blocking: from a coroutine, run it
    with asyncio.to_thread."""
    with open(log, "ab" if append else "wb") as out:
        return subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                **popen)


def kill(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL, as a crash would: no clean-up of any kind."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


async def terminate(proc: subprocess.Popen[bytes] | None, grace: float = 15) -> None:
    """SIGTERM, waiting off the event loop (the stand-ins must keep serving its last calls); SIGKILL after
    `grace` seconds."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, grace)
        except subprocess.TimeoutExpired:
            kill(proc)


# --- the stand-ins ---------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def serving(fake: Any) -> AsyncIterator[Any]:
    """A stand-in served on loopback for the test's duration; its `.url` is its root."""
    async with Served(fake.app) as served:
        fake.url = served.url
        yield fake


@pytest.fixture
async def model() -> AsyncIterator[FakeDashScope]:
    """The DashScope stand-in (native API, and the OpenAI-compatible one a vLLM server also speaks),
    answering to MODEL_KEY."""
    async with serving(FakeDashScope(api_key=MODEL_KEY)) as fake:
        yield fake


def settings_for(model: FakeDashScope, tmp_path: Path, /, *, telegram: FakeTelegram | None = None,
                 slack: FakeSlack | None = None, **kw: Any) -> Settings:
    """earshot's settings pointing at the served stand-ins: the model (with the key it answers to), and
    Telegram or Slack if given. Keyword arguments override any setting."""
    values: dict[str, Any] = {"dashscope_api_key": model.api_key, "dashscope_base_url": model.url + "/api/v1",
                              "db_path": tmp_path / "earshot.db"}
    if os.environ.get("EARSHOT_DB", "").startswith("postgresql://"):   # the db_target fixture chose PostgreSQL
        values["db_path"] = os.environ["EARSHOT_DB"]
    if telegram is not None:
        values |= {"telegram_bot_token": telegram.token, "telegram_api_base_url": telegram.url}
    if slack is not None:
        values |= {"slack_bot_token": slack.token, "slack_signing_secret": SLACK_SECRET,
                   "slack_api_url": slack.url + "/api/"}
    return Settings(**(values | kw))


# --- the command line: `earshot` in a child process, against a stand-in served from a thread -----------

EARSHOT = str(Path(sys.executable).with_name("earshot"))


@pytest.fixture
def threaded_model() -> Iterator[FakeDashScope]:
    """The DashScope stand-in served from a thread, so it keeps answering while a test waits on a process."""
    fake = FakeDashScope(api_key="sk-cli-test")
    with Threaded(fake.app) as served:
        fake.url = served.url
        yield fake


@pytest.fixture
def earshot_env(threaded_model: FakeDashScope, tmp_path: Path) -> dict[str, str]:
    return cli_env(threaded_model, tmp_path)


def cli_env(model: FakeDashScope, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment `earshot` runs in: pointed at the model stand-in, a database of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DASHSCOPE", "EARSHOT"))}
    return env | {"DASHSCOPE_API_KEY": model.api_key, "DASHSCOPE_HTTP_BASE_URL": model.url + "/api/v1",
                  "EARSHOT_DB": str(tmp_path / "cli.db"), "EARSHOT_RETRY_BUDGET": "2",
                  "EARSHOT_ASR_MODEL": "", "EARSHOT_TTS_MODEL": "", **extra}


def earshot(env: dict[str, str], *args: Any) -> subprocess.CompletedProcess[str]:
    """Run the `earshot` command and wait for it."""
    return subprocess.run([EARSHOT, *map(str, args)], env=env, capture_output=True, text=True, timeout=120)


def one_clean_line(stderr: str) -> str:
    """The one line a failing command printed, checking it is one, with no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# --- Telegram: the real python-telegram-bot application, polling the stand-in ------------------------

BOT = "@earshot_test_bot"                  # the stand-in's bot, as users mention it

class Harness:
    """A running Telegram bot and its stand-ins, with ways to wait on what it does."""

    def __init__(self, tg: FakeTelegram, ds: FakeDashScope, app: Any, earshot: Earshot,
                 settings: Settings) -> None:
        self.tg, self.ds, self.app, self.earshot, self.settings = tg, ds, app, earshot, settings
        self.db = settings.db_path
        self.handled = 0        # updates the bot's handlers have finished with
        app.add_handler(TypeHandler(Update, self._count), group=99)   # after earshot's own handlers

    async def _count(self, update: Update, context: Any) -> None:
        self.handled += 1

    async def said(self, chat_id: int, n: int = 1, within: float = 20.0,
                   where: Callable[[dict], bool] = lambda m: True) -> list[dict]:
        """Wait until the bot has at least n matching messages in the chat."""
        def got() -> list[dict]:
            matching = [m for m in self.tg.said(chat_id) if where(m)]
            return matching if len(matching) >= n else []
        return await until(got, within, f"{n} message(s) in chat {chat_id}; the bot said {self.tg.texts(chat_id)}")

    async def idle(self, within: float = 30.0) -> None:
        """Wait until every update pushed so far was fetched and handled, and every job it became (answers,
        listening) is finished and delivered: from then on, the bot has nothing more to say."""
        pushed = self.tg.pushed
        await until(lambda: self.handled >= pushed, within, f"the bot to handle {pushed} update(s)")
        await until(lambda: settled(self.db), within, "its jobs to be done")


@contextlib.asynccontextmanager
async def bot_running(tmp_path: Path, *, ds: FakeDashScope | None = None,
                      tg: FakeTelegram | None = None, **kw: Any) -> AsyncIterator[Harness]:
    """earshot's Telegram bot, polling the Telegram stand-in and asking the model stand-in."""
    ds = ds or FakeDashScope(api_key=MODEL_KEY)
    async with serving(tg or FakeTelegram()) as tg, serving(ds):
        settings = settings_for(ds, tmp_path, telegram=tg, **kw)
        async with Earshot.build(settings) as earshot:
            app = build_application(settings, earshot)
            harness = Harness(tg, ds, app, earshot, settings)
            async with app:
                await app.post_init(app)
                await app.start()
                await app.updater.start_polling(poll_interval=0, timeout=1, allowed_updates=ALLOWED_UPDATES)
                try:
                    yield harness
                finally:
                    await app.updater.stop()
                    await app.stop()
                    await app.post_stop(app)   # the job runner; run_polling calls it, a bare start/stop doesn't


@pytest.fixture
async def bot(tmp_path: Path) -> AsyncIterator[Harness]:
    async with bot_running(tmp_path) as h:
        yield h


def reply_to(msg: dict) -> int | None:
    return (msg.get("reply_to_message") or {}).get("message_id")


# --- Slack: the real slack-bolt app behind its HTTP server, driven by signed requests -------------------

DM = "D0ALICE01"
CHANNEL = "C0GENERAL"


@dataclass
class World:
    """A running Slack app (HTTP mode) and its stand-ins."""

    slack: FakeSlack
    model: FakeDashScope
    server: SlackServer
    http: httpx.AsyncClient
    settings: Settings

    async def post(self, body: bytes, **kw: Any) -> httpx.Response:
        return await self.http.post("/slack/events", content=body, headers=signed_headers(SLACK_SECRET, body, **kw))

    async def event(self, event: dict[str, Any], **kw: Any) -> httpx.Response:
        r = await self.post(event_body(event, event_id=kw.pop("event_id", None)), **kw)
        assert r.status_code == 200, r.text
        return r

    async def slash(self, text: str, *, user: str = "U0ALICE", channel: str = CHANNEL,
                    team: str | None = None) -> httpx.Response:
        """`/earshot <text>`; the response is the command's ack."""
        body = slash_body(text, channel=channel, user=user, response_url=self.slack.response_url())
        if team:
            body = body.replace(b"team_id=T0EARSHOT", b"team_id=" + team.encode())
        r = await self.post(body)
        assert r.status_code == 200, r.text
        return r

    async def idle(self, within: float = 30.0) -> None:
        """Wait until the jobs earlier events became are finished and delivered. The app answers Slack only
        once its listener is done (process_before_response), so what an event does outside jobs is done by
        the time its request returned."""
        await until(lambda: settled(self.settings.db_path), within, "the Slack app's jobs to be done")


@contextlib.asynccontextmanager
async def slack_running(tmp_path: Path, *, sl: FakeSlack | None = None, ds: FakeDashScope | None = None,
                        **kw: Any) -> AsyncIterator[World]:
    """earshot's Slack app on a loopback port, talking to the Slack and model stand-ins (new ones unless
    given); keyword arguments are settings."""
    async with serving(sl or FakeSlack()) as slack, serving(ds or FakeDashScope(api_key=MODEL_KEY)) as model:
        settings = settings_for(model, tmp_path, slack=slack, **kw)
        server = SlackServer(settings, host="127.0.0.1", port=0)
        port = await server.start()
        world = World(slack, model, server, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10),
                      settings)
        try:
            yield world
        finally:
            await world.http.aclose()
            await world.server.stop()      # a test may have replaced it


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with slack_running(tmp_path) as w:
        yield w


@pytest.fixture(scope="module")
def clip() -> bytes:
    """A Slack-style webm voice clip: a 440 Hz tone at 0.5 s."""
    return tone_audio((0, 0.5), (440, 1.0), (0, 0.7), fmt="webm")


def answers(slack: FakeSlack, pattern: str) -> list[dict[str, Any]]:
    """The app's posts whose text or blocks match `pattern`."""
    return [p for p in slack.posts if re.search(pattern, (p["text"] or "") + str(p["blocks"]))]


def dm_clip(slack: FakeSlack, record: dict[str, Any], text: str = "") -> dict[str, Any]:
    """Alice shares the file in her DM with the app."""
    return {"type": "message", "subtype": "file_share", "channel": DM, "channel_type": "im",
            "user": "U0ALICE", "text": text, "ts": slack.ts(), "files": [FakeSlack.event_file(record)]}


# --- PostgreSQL: a throwaway cluster once per test run; stores' tests run on both engines ------------------

@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    cluster = Cluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_target(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The database a test's earshot uses: an SQLite file, or a fresh schema of the test cluster (EARSHOT_DB,
    which settings_for follows too). Modules whose tests exercise the stores use it for every test."""
    if request.param == "sqlite":
        return str(tmp_path / "earshot.db")
    url = request.getfixturevalue("postgres").fresh()
    monkeypatch.setenv("EARSHOT_DB", url)
    return url
