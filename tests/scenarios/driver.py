"""The scenario driver: what the scenario suite (tests/scenarios/test_scenarios.py) needs of a platform.

The scenarios are written once, in platform-neutral words (a user sends a voice note, the platform delivers an
event again, someone taps a button under an answer, the bot process dies and starts again), and run against
every adapter through its stand-in. A `Driver` turns those words into one platform's events, pushed through that
platform's stand-in exactly as the platform would deliver them, and reads back what the adapter sent through it.

The adapter under test runs as deployed: `earshot <platform>` in a child process of its own, against the
platform's stand-in and the model stand-in (both served on loopback by the test), on an SQLite database of its
own. That is what makes `restart()` honest: the process is killed with SIGKILL, as a crash would, and started
again on the same database.

A driver provides (see `Driver` for the signatures):

- `name`, `platform_limit` (the longest message the platform takes, as `Said.size` measures it) and
  `audio_format` (what a voice note is on the platform: "ogg", "webm"…);
- `stand_in` (the platform's stand-in from tests/fakes/, which `serving()` serves on loopback), `platform_env()`
  and `ready()`;
- `user_id(name)`: the platform's id for one of the scenario's people (`ALICE`, `BOB`), as the access settings
  (EARSHOT_ALLOWED_USERS) name them;
- `start(**env)`, `restart()`, `stop()`: the adapter's process, with extra environment variables;
- what users do: `send_voice_note(audio, user=, text=)`, `send_command(name, args, user=, language=)`,
  `tap(said, task)` (the button for `task` under an answer), and what the platform does: `redeliver(sent)`
  (the same event once more, as the platform does when it believes it was not delivered);
- what came back: `sent()` (every message the adapter sent, oldest first, as `Said`), `wait_for_sent(n, where)`,
  `idle()` (every event pushed so far handled and every job it became finished and delivered: from then on
  nothing more will be sent), and `download_count` (files the adapter fetched from the platform).

A new adapter joins the suite by writing one module in tests/scenarios/drivers/ with a `Driver` subclass and
adding it to `tests.scenarios.drivers.DRIVERS`; the scenarios themselves don't change. A scenario a platform
truly can't express is skipped by the driver raising `pytest.skip` with the reason, never silently passed.
"""
from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.values import Task
from tests.conftest import MODEL_KEY, kill, spawn, terminate
from tests.fakes.dashscope import FakeDashScope, tone_audio
from tests.fakes.server import Served
from tests.waiting import settled, until

ROOT = Path(__file__).resolve().parents[2]
ALICE, BOB = "alice", "bob"            # the scenario's people: names a driver maps to platform ids
WAIT = 30.0                             # seconds: a bot process of its own starts and answers slower than in-process


@dataclass(frozen=True)
class Sent:
    """Something a user sent (a voice note, a command): where, its platform id ("" when the platform gives it
    none, as Slack a slash command), and what the driver needs to deliver it again (`raw`, the driver's own)."""

    chat: str
    id: str
    user: str
    raw: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Said:
    """One message the adapter sent, as the user sees it.

    text: what the user reads, with the platform's markup and escaping undone (split parts keep their words);
    size: its length as the platform measures it against `Driver.platform_limit`;
    reply_to: the id of the message it answers (a Telegram reply, a Slack thread), or None;
    buttons: the tasks offered by buttons under it."""

    chat: str
    id: str
    text: str
    size: int
    reply_to: str | None
    buttons: tuple[Task, ...] = ()
    raw: Any = field(default=None, repr=False, compare=False)


def strip_proxies(env: dict[str, str], *prefixes: str) -> dict[str, str]:
    """The test's environment without earshot's settings (`prefixes`) or proxies: the child talks to loopback."""
    drop = ("DASHSCOPE_", "EARSHOT_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
            "all_proxy", *prefixes)
    return {k: v for k, v in env.items() if not k.startswith(drop)}


class Driver(abc.ABC):
    """One platform's way through the scenarios (see the module's docstring). Subclasses set the class
    attributes and implement the abstract methods; the process handling and the waiting are shared here."""

    name: str
    platform_limit: int
    audio_format: str
    command_args: Sequence[str] = ()      # after `earshot <name>`

    def __init__(self, model: FakeDashScope, tmp_path: Path) -> None:
        self.model = model
        self.tmp_path = tmp_path
        self.db = tmp_path / f"{self.name}-scenarios.db"
        self.log = tmp_path / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._extra: dict[str, str] = {}

    # ---- the stand-in and the process ----------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def stand_in(self) -> Any:
        """The platform's stand-in (tests/fakes/): its aiohttp application at `.app`, its address set at `.url`."""

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[Any]:
        """The platform's stand-in, served on loopback for the driver's lifetime."""
        async with Served(self.stand_in.app) as served:
            self.stand_in.url = served.url
            yield self.stand_in

    @abc.abstractmethod
    def platform_env(self) -> dict[str, str]:
        """The environment variables that point the adapter at the stand-in (tokens, API base URL…)."""

    @abc.abstractmethod
    async def ready(self) -> bool:
        """Whether the started process is listening for the platform's events."""

    def env(self) -> dict[str, str]:
        base = strip_proxies(dict(os.environ), "TELEGRAM_", "SLACK_", "WHATSAPP_", "DISCORD_")
        return base | {"DASHSCOPE_API_KEY": self.model.api_key,
                       "DASHSCOPE_HTTP_BASE_URL": self.model.url + "/api/v1",
                       "EARSHOT_DB": str(self.db), "EARSHOT_METRICS_PORT": "0",
                       "EARSHOT_USER_REQUESTS_PER_MINUTE": "0", "HOME": str(self.tmp_path),
                       **self.platform_env(), **self._extra}

    async def start(self, **env: str) -> None:
        """Start `earshot <platform>` with these extra environment variables (kept for restarts), and wait
        until it listens."""
        self._extra |= env
        self.proc = await asyncio.to_thread(
            spawn, [sys.executable, "-c", "from bots.cli import main; main()", self.name, *self.command_args],
            self.log, self.env(), append=True, cwd=ROOT)

        async def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            return await self.ready()
        await until(up, WAIT, f"`earshot {self.name}` to listen")

    async def restart(self) -> None:
        """SIGKILL, as a crash would (no clean-up of any kind), then start again on the same database."""
        kill(self.proc)
        await self.start()

    async def stop(self) -> None:
        await terminate(self.proc)

    # ---- what users and the platform do ------------------------------------------------------------------
    @abc.abstractmethod
    def user_id(self, user: str) -> str:
        """The platform's id for one of the scenario's people (ALICE, BOB)."""

    @abc.abstractmethod
    async def send_voice_note(self, audio: bytes, *, user: str = ALICE, text: str = "") -> Sent:
        """`user` sends a voice note (with `text` beside it, if any) in their private chat with the bot."""

    @abc.abstractmethod
    async def send_command(self, name: str, args: str = "", *, user: str = ALICE,
                           language: str | None = None) -> Sent:
        """`user` gives the bot the command `name` (a core command: summarize, help…) in their private chat, the
        way the platform's users give commands; `language`: the user's own language, as the platform tells it."""

    @abc.abstractmethod
    async def redeliver(self, sent: Sent) -> None:
        """The platform delivers the event of `sent` once more (same event id), as it does when it didn't see
        the first delivery acknowledged."""

    @abc.abstractmethod
    async def tap(self, said: Said, task: Task, *, user: str = ALICE) -> None:
        """`user` taps the button for `task` under the adapter's message `said`."""

    # ---- what came back -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def sent(self) -> list[Said]:
        """Every message the adapter sent, in every chat, oldest first, as it reads now (edits applied, deleted
        ones gone)."""

    @property
    @abc.abstractmethod
    def download_count(self) -> int:
        """How many files the adapter fetched from the platform."""

    @abc.abstractmethod
    async def events_handled(self) -> bool:
        """Whether every event pushed so far was handled by the adapter (its jobs stored, its direct answers
        sent)."""

    async def idle(self, within: float = WAIT) -> None:
        """Wait until every event pushed so far was handled and every job it became is finished and delivered:
        from then on, the adapter has nothing more to say."""
        await until(self.events_handled, within, f"the {self.name} adapter to handle every event")
        await until(lambda: settled(self.db), within, f"the {self.name} adapter's jobs to be done")

    async def wait_for_sent(self, n: int = 1, where: Callable[[Said], bool] = lambda s: True,
                            within: float = WAIT) -> list[Said]:
        """The adapter's messages matching `where`, once there are at least `n`."""
        def got() -> list[Said]:
            matching = [s for s in self.sent() if where(s)]
            return matching if len(matching) >= n else []
        return await until(got, within, f"{n} message(s) from the {self.name} adapter; it sent "
                                        f"{[s.text[:80] for s in self.sent()]}")

    def voice(self, hz: int) -> bytes:
        """A voice note as the platform's users record it: half a second of silence, one second of `hz`, half
        a second of silence (the model stand-in hears '<hz>Hz@0.5s')."""
        return tone_audio((0, 0.5), (hz, 1.0), (0, 0.5), fmt=self.audio_format)


@contextlib.asynccontextmanager
async def running(kind: type[Driver], tmp_path: Path, model: FakeDashScope | None = None
                  ) -> AsyncIterator[Driver]:
    """A driver with its stand-ins served (the model's too, unless given); the adapter is not started yet, so a
    scenario can choose its settings. Its process is stopped on the way out."""
    async with contextlib.AsyncExitStack() as stack:
        if model is None:
            model = FakeDashScope(api_key=MODEL_KEY)
            served = await stack.enter_async_context(Served(model.app))
            model.url = served.url
        driver = kind(model, tmp_path)
        await stack.enter_async_context(driver.serving())
        try:
            yield driver
        finally:
            await driver.stop()
