"""Several earshot replicas on one PostgreSQL database (a real server, tests/postgres.py).

Telegram: `earshot telegram` processes against one Telegram stand-in, which answers 409 Conflict to a second
getUpdates consumer as Telegram does. With long polling one replica is elected to poll; kill -9 it and another
polls within seconds, handling once what the dead one had fetched but not confirmed. With webhooks every replica
takes updates with the shared TELEGRAM_WEBHOOK_SECRET; the same update to two replicas is answered once.
Budgets, the rate limit and refusals said once hold across two Earshot instances on the database."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.app import Earshot
from core.errors import AccessRefused
from core.flow.progress import STREAM_TAIL
from core.store import shared_limits
from core.store.db import Database
from core.store.election import Election
from core.store.shared_limits import RateHits
from core.values import ChatKey, Request, Sender, Task, Usage
from core.words import messages
from tests.conftest import free_port, kill, settings_for, spawn, terminate
from tests.fakes.dashscope import FakeDashScope, tone_audio
from tests.fakes.server import Served
from tests.fakes.telegram import FakeTelegram
from tests.postgres import Cluster
from tests.waiting import settled
from tests.waiting import until as _until

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-replicas-key"
CLIP = tone_audio((0, 0.5), (440, 1.0), (0, 0.5), fmt="ogg")
SECRET = "shared-webhook-secret_42"
POLLS = "this process polls Telegram"        # what the elected poller logs


async def until(predicate: Callable[[], Any], within: float = 30.0) -> Any:
    """As tests.waiting.until, with longer to wait: bot processes of their own start slower."""
    return await _until(predicate, within)


class Replica:
    """`earshot telegram` in a child process on the shared database, started and killed at will."""

    def __init__(self, name: str, tg: FakeTelegram, tg_url: str, ds_url: str, db: str, tmp: Path,
                 *args: str, **env: str) -> None:
        self.log, self.args = tmp / f"{name}.log", args
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("TELEGRAM_", "DASHSCOPE_", "EARSHOT_", "HTTP_PROXY", "HTTPS_PROXY",
                                         "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"))}
        self.env |= {"TELEGRAM_BOT_TOKEN": tg.token, "TELEGRAM_API_BASE_URL": tg_url,
                     "DASHSCOPE_API_KEY": KEY, "DASHSCOPE_HTTP_BASE_URL": ds_url + "/api/v1",
                     "EARSHOT_DB": db, "EARSHOT_USER_REQUESTS_PER_MINUTE": "0", "EARSHOT_METRICS_PORT": "0", **env}
        self.proc: subprocess.Popen[bytes] | None = None

    def said(self, text: str) -> bool:
        return self.log.exists() and text in self.log.read_text(errors="replace")

    async def start(self) -> None:
        """Start it and wait until its bot is up (start-up done, its job runner started)."""
        self.proc = await asyncio.to_thread(
            spawn, [sys.executable, "-c", "from bots.cli import main; main()", "telegram", *self.args], self.log,
            self.env, cwd=ROOT)
        await until(lambda: self.said("earshot is listening") or self.proc.poll() is not None)
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        if "--port" in self.args:         # webhook mode: Telegram is told the URL before the server listens
            port = int(self.args[self.args.index("--port") + 1])
            await until(lambda: accepts(port))

    def kill(self) -> None:
        kill(self.proc)                   # its database sessions just drop

    async def stop(self) -> None:
        await terminate(self.proc)


async def accepts(port: int) -> bool:
    """Whether something listens on the loopback port."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


def answers(tg: FakeTelegram, chat: int) -> list[dict]:
    """The bot's answers about audio in the chat (not a streamed preview)."""
    return [p for p in tg.called("sendMessage") if int(p["chat_id"]) == chat
            and "heard" in (text := str(p.get("text"))) and not text.endswith(STREAM_TAIL)]


def sent_to(tg: FakeTelegram, chat: int) -> list[dict]:
    return [p for p in tg.called("sendMessage") if int(p["chat_id"]) == chat]


async def test_one_replica_polls_and_another_takes_over_when_it_is_killed(tmp_path: Path, postgres: Cluster):
    db = postgres.fresh()
    tg, ds = FakeTelegram(), FakeDashScope(api_key=KEY, latency=0.1, inspect=False)
    tg.forget_confirmed = False        # what the poller confirmed, Telegram gives again to the next poller
    async with Served(tg.app) as tgs, Served(ds.app) as dss:
        a = Replica("a", tg, tgs.url, dss.url, db, tmp_path)
        b = Replica("b", tg, tgs.url, dss.url, db, tmp_path)
        try:
            await a.start()
            await until(lambda: a.said(POLLS))
            await b.start()
            tg.push(801, kind="voice", data=CLIP)
            tg.push(802, text="/help")
            await until(lambda: answers(tg, 801) and sent_to(tg, 802))
            await until(lambda: tg.confirmed(tg.last_update_id))     # a took both and handled them
            await until(lambda: settled(db, 1))                      # and recorded the answer as delivered
            assert not b.said(POLLS) and tg.conflicts == 0

            a.kill()                                                # the poller dies
            tg.push(803, kind="voice", data=CLIP)                  # a note sent after it died
            [answer] = await until(lambda: answers(tg, 803), 20)   # b was elected within seconds and answers
            assert answer["text"].startswith("heard") and b.said(POLLS)
            # b fetched the three updates again and handled the two a had handled as already done
            await until(lambda: tg.confirmed(tg.last_update_id) and settled(db, 2))
        finally:
            await b.stop()
            a.kill()
    assert tg.conflicts == 0, "two replicas polled at once"
    assert [len(answers(tg, 801)), len(sent_to(tg, 802)), len(answers(tg, 803))] == [1, 1, 1]
    assert len(ds.calls) == 2


async def test_webhook_replicas_share_the_secret_and_answer_an_update_once(tmp_path: Path, postgres: Cluster):
    db = postgres.fresh()
    tg, ds = FakeTelegram(), FakeDashScope(api_key=KEY, latency=0.1, inspect=False)
    held: list[dict] = []
    tg.deliver = held.append           # updates are POSTed by the test, as a load balancer would pass them on
    ports = [free_port(), free_port()]
    async with Served(tg.app) as tgs, Served(ds.app) as dss, httpx.AsyncClient(timeout=30) as http:
        replicas = [Replica(name, tg, tgs.url, dss.url, db, tmp_path, "--webhook-url",
                            f"http://127.0.0.1:{port}/hook", "--port", str(port), "--listen", "127.0.0.1",
                            TELEGRAM_WEBHOOK_SECRET=SECRET) for name, port in zip("ab", ports, strict=True)]
        urls = [f"http://127.0.0.1:{port}/hook" for port in ports]

        async def post(url: str, update: dict, secret: str = SECRET) -> int:
            r = await http.post(url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": secret})
            return r.status_code

        try:
            await asyncio.gather(*(r.start() for r in replicas))
            assert {w["secret_token"] for w in tg.called("setWebhook")} == {SECRET}

            tg.push(901, kind="voice", data=CLIP)
            assert await post(urls[0], held[-1]) == 200        # handled (its job stored) before the 200
            assert await post(urls[1], held[-1]) == 200        # Telegram retries it against the other replica
            tg.push(902, kind="voice", data=CLIP)
            assert await asyncio.gather(post(urls[0], held[-1]), post(urls[1], held[-1])) == [200, 200]
            tg.push(903, text="/help")                         # no job to tell them apart: one replica handles it
            assert await asyncio.gather(post(urls[1], held[-1]), post(urls[0], held[-1])) == [200, 200]
            tg.push(904, kind="voice", data=CLIP)
            assert await post(urls[1], held[-1], secret="not-" + SECRET) == 403   # a wrong secret: refused
            await until(lambda: answers(tg, 901) and answers(tg, 902) and sent_to(tg, 903))
            await until(lambda: settled(db, 2))
        finally:
            await asyncio.gather(*(r.stop() for r in replicas))
    assert [len(answers(tg, c)) for c in (901, 902)] == [1, 1] and len(sent_to(tg, 903)) == 1
    assert not sent_to(tg, 904) and len(ds.calls) == 2


# --- budgets, rate limits, refusals: two Earshot instances on one database ------------------------------

@pytest.fixture
async def two(postgres: Cluster, tmp_path: Path):
    """Two replicas' Earshot (each its own pool and memory) on one fresh PostgreSQL database."""
    ds = FakeDashScope(api_key=KEY)
    ds.url = "http://127.0.0.1:9"      # never called: these tests only ask the access policy
    url = postgres.fresh()

    def build(**kw: Any) -> Earshot:
        return Earshot.build(settings_for(ds, tmp_path, db_path=url, **kw))
    yield build


async def test_rate_limit_budgets_and_refusals_hold_across_replicas(two):
    limits = dict(user_requests_per_minute=2, user_daily_tokens=1_000, allowed_users="7,8,9")
    async with two(**limits) as a, two(**limits) as b:
        chat, alice = ChatKey("telegram", "7"), Sender("7")
        await a.access.check(chat, alice, count=True)
        await b.access.check(chat, alice, count=True)
        with pytest.raises(AccessRefused) as refused:         # the third in a minute, whichever replica gets it
            await a.access.check(chat, alice, count=True)
        assert refused.value.message == messages.RATE_LIMITED and not refused.value.silent
        with pytest.raises(AccessRefused) as again:           # said once: the other replica stays quiet
            await b.access.check(chat, alice, count=True)
        assert again.value.message == messages.RATE_LIMITED and again.value.silent
        await b.access.check(ChatKey("telegram", "8"), Sender("8"), count=True)    # others aren't slowed down

        # spent usage: recorded by one replica, counted by the other
        await a.access.ledger.record(ChatKey("telegram", "9"), "9", Usage(900, 50, 50), role="spent",
                                  now=time.time())
        with pytest.raises(AccessRefused) as over:
            await b.access.check(ChatKey("telegram", "9"), Sender("9"))
        with pytest.raises(AccessRefused) as over_again:
            await a.access.check(ChatKey("telegram", "9"), Sender("9"))
        assert over.value.message == messages.USER_BUDGET_USED and not over.value.silent and over_again.value.silent

        # a stranger hears the refusal once a day, from whichever replica
        stranger = ChatKey("telegram", "66")
        with pytest.raises(AccessRefused) as first:
            await a.access.check(stranger, Sender("66"))
        with pytest.raises(AccessRefused) as second:
            await b.access.check(stranger, Sender("66"))
        assert not first.value.silent and second.value.silent


async def test_a_request_in_flight_on_one_replica_holds_its_cost_on_the_other(two):
    async with two(user_daily_tokens=3_000) as a, two(user_daily_tokens=3_000) as b:
        def request(chat: str) -> Request:
            return Request(ChatKey("telegram", chat), Task.TRANSCRIBE, None, user_id="6")
        async with a.access.admit(request("6")):
            await a.access.afford(1_800)                    # a long recording on replica a, the model still busy
            async with b.access.admit(request("-60")):
                with pytest.raises(AccessRefused, match="would take about"):
                    await b.access.afford(1_800)            # the same user's second one on replica b
                await b.access.afford(1_000)                # what is left still fits
        async with b.access.admit(request("-61")):          # both done: their holds are gone
            await b.access.afford(2_900)


# --- the election itself ------------------------------------------------------------------------------

async def test_one_process_leads_and_another_takes_over_when_it_steps_down(postgres: Cluster, tmp_path: Path):
    url = postgres.fresh()
    a_db, b_db = Database(url), Database(url)
    await asyncio.gather(a_db.open(), b_db.open())
    a, b = Election(a_db, "work", retry=0.05), Election(b_db, "work", retry=0.05)
    try:
        assert await a.wait(10)
        assert not await b.wait(0.3) and a.leading      # b keeps trying; a still holds it
        await a.stop()                                   # its session closes, as when its process dies
        assert await b.wait(10) and not a.leading
    finally:
        await asyncio.gather(a.stop(), b.stop())
        await asyncio.gather(a_db.close(), b_db.close())
    alone = Database(tmp_path / "alone.db")              # SQLite: one process, always the leader
    await alone.open()
    try:
        assert await Election(alone, "work").wait(0)
    finally:
        await alone.close()


async def test_the_shared_rate_window_slides_and_old_hits_are_pruned(postgres: Cluster):
    db = Database(postgres.fresh())
    await db.open()
    clock = [1000.0]
    a, b = (RateHits(db, 2, lambda: clock[0]) for _ in range(2))
    key = ("telegram", "1")
    try:
        assert await a.take(key, count=True) == 0
        clock[0] += 1
        assert await b.take(key, count=True) == 0
        assert 58 < await a.take(key, count=True) <= 59          # full: the first hit leaves the window in 59 s
        assert await b.take(("telegram", "2"), count=False) == 0   # a look that counts nothing
        clock[0] += 59.5
        assert await b.take(key, count=True) == 0
        assert await shared_limits.prune(db, clock[0] + 61) == {"rate_hits": 2, "spend_holds": 0}
    finally:
        await db.close()


async def test_the_telegram_stand_in_refuses_a_second_consumer_like_telegram():
    tg = FakeTelegram()
    async with Served(tg.app) as tgs, httpx.AsyncClient(base_url=f"{tgs.url}/bot{tg.token}", timeout=10) as http:
        first = asyncio.create_task(http.post("/getUpdates", json={"timeout": 5}))
        await until(lambda: tg.called("getUpdates"))
        second = await http.post("/getUpdates", json={"timeout": 0})
        assert second.status_code == 409 and "Conflict" in second.json()["description"] and tg.conflicts == 1
        tg.push(1, text="hello")                  # the first poll still gets it
        assert (await first).json()["result"][0]["message"]["text"] == "hello"
        assert (await http.post("/getUpdates", json={"timeout": 0})).status_code == 200   # one at a time is fine
