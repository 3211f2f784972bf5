"""Two `earshot slack` HTTP processes on one PostgreSQL database, as replicas behind a load balancer: an event
delivered to both is answered once, and when the replica holding work is killed with -9 the other answers every
clip exactly once, in order per conversation, once the dead one's lease (EARSHOT_JOB_LEASE) has run out."""
from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.conftest import SLACK_SECRET, free_port, kill, serving, spawn, terminate
from tests.fakes.dashscope import FakeDashScope, tone_audio
from tests.fakes.slack import FakeSlack, event_body, signed_headers
from tests.postgres import Cluster
from tests.waiting import job_rows, settled, until

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-replicas"
LEASE = 2.0


class Held(FakeDashScope):
    """The model stand-in, holding every answer until `gate` is set: meanwhile the work is visibly held."""

    def __init__(self) -> None:
        super().__init__(api_key=KEY)
        self.gate = asyncio.Event()
        self.waiting = 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.waiting += 1
        try:
            await self.gate.wait()
        finally:
            self.waiting -= 1
        return await super()._handle(request)


class Replica:
    """`earshot slack --port N` in a child process of its own."""

    def __init__(self, name: str, env: dict[str, str], tmp_path: Path) -> None:
        self.port = free_port()
        self.env = env | {"HOME": str(tmp_path / name)}
        self.log = tmp_path / f"{name}.log"
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, http: httpx.AsyncClient) -> None:
        self.proc = await asyncio.to_thread(
            spawn, [sys.executable, "-c", "from bots.cli import main; main()", "slack", "--port", str(self.port)],
            self.log, self.env, cwd=ROOT)

        async def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                return (await http.get(self.url + "/healthz", timeout=1)).status_code == 200
            except httpx.HTTPError:
                return False
        await until(up, 30, f"{self.log.name}: the Slack app to serve")

    async def event(self, http: httpx.AsyncClient, body: bytes) -> None:
        r = await http.post(self.url + "/slack/events", content=body, headers=signed_headers(SLACK_SECRET, body))
        assert r.status_code == 200, r.text

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        kill(self.proc)

    async def stop(self) -> None:
        await terminate(self.proc)


class Cluster2:
    def __init__(self, slack: FakeSlack, model: Held, url: str, replicas: list[Replica],
                 http: httpx.AsyncClient) -> None:
        self.slack, self.model, self.url, self.replicas, self.http = slack, model, url, replicas, http


@pytest.fixture
async def two(postgres: Cluster, tmp_path: Path) -> AsyncIterator[Cluster2]:
    async with serving(FakeSlack()) as slack, serving(Held()) as model, httpx.AsyncClient() as http:
        url = postgres.fresh()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DASHSCOPE_", "EARSHOT_"))}
        env |= {"SLACK_BOT_TOKEN": slack.token, "SLACK_SIGNING_SECRET": SLACK_SECRET,
                "SLACK_API_URL": slack.url + "/api/", "DASHSCOPE_API_KEY": KEY,
                "DASHSCOPE_HTTP_BASE_URL": model.url + "/api/v1", "EARSHOT_DB": url,
                "EARSHOT_JOB_LEASE": str(LEASE), "EARSHOT_USER_REQUESTS_PER_MINUTE": "0",
                "EARSHOT_METRICS_PORT": "0", "EARSHOT_RETRY_BUDGET": "2"}
        replicas = [Replica(name, env, tmp_path) for name in ("one", "two")]
        try:
            await asyncio.gather(*(r.start(http) for r in replicas))
            yield Cluster2(slack, model, url, replicas, http)
        finally:
            model.gate.set()
            for r in replicas:
                await r.stop()
    for r in replicas:
        assert "Traceback" not in r.log.read_text(), r.log.read_text()[-3000:]


def clip_event(slack: FakeSlack, channel: str, hz: int) -> dict[str, Any]:
    """Alice shares a clip of one tone in her DM `channel` with the app."""
    record = slack.add_file(tone_audio((0, 0.5), (hz, 1.0), (0, 0.7), fmt="webm"))
    return {"type": "message", "subtype": "file_share", "channel": channel, "channel_type": "im",
            "user": "U0ALICE", "text": "", "ts": slack.ts(), "files": [FakeSlack.event_file(record)]}


def heard(slack: FakeSlack, channel: str) -> list[int]:
    """The tones of the app's answers in a conversation, in the order they were posted."""
    found = (re.search(r"(\d+)Hz@", (p["text"] or "") + str(p["blocks"])) for p in slack.posts
             if p["channel"] == channel)
    return [int(m.group(1)) for m in found if m]


async def test_one_event_delivered_to_both_replicas_is_answered_once(two: Cluster2) -> None:
    two.model.gate.set()
    body = event_body(clip_event(two.slack, "D0TWICE01", 440))
    await asyncio.gather(*(r.event(two.http, body) for r in two.replicas))     # the same event, to each
    await until(lambda: heard(two.slack, "D0TWICE01"), 30, "the answer")
    await until(lambda: settled(two.url, 1), 30, "its job delivered")
    assert heard(two.slack, "D0TWICE01") == [440]
    assert len(two.model.answered) == 1 and len(job_rows(two.url)) == 1


async def test_killing_the_replica_holding_work_loses_no_clip_and_repeats_none(two: Cluster2) -> None:
    one, other = two.replicas
    busy, quiet, alone = "D0BUSY0001", "D0QUIET001", "D0ALONE001"
    tones = [440, 660, 880]
    # the busy conversation's clips reach either replica, alternately; two more conversations, one on each
    for i, hz in enumerate(tones):
        await two.replicas[i % 2].event(two.http, event_body(clip_event(two.slack, busy, hz)))
    await other.event(two.http, event_body(clip_event(two.slack, quiet, 550)))
    await one.event(two.http, event_body(clip_event(two.slack, alone, 770)))
    await until(lambda: two.model.waiting >= 3, 30, "each conversation's first clip at the model")
    assert two.model.waiting == 3                       # one job per conversation at work, not more
    rows = {r["key"].split(":")[0]: r for r in reversed(job_rows(two.url))}   # each conversation's first job
    holder = next(r for r in two.replicas if rows[busy]["owner"].split(":")[1] == str(r.pid))
    survivor = other if holder is one else one
    holder.kill()                                       # dies mid-answer, holding the busy conversation
    two.model.gate.set()
    await until(lambda: all(heard(two.slack, c) for c in (quiet, alone)) and len(heard(two.slack, busy)) == 3,
                30, "every clip answered")
    await until(lambda: settled(two.url, 5), 30, "every job delivered")
    assert heard(two.slack, busy) == tones                  # each once, in the order they were sent
    assert heard(two.slack, quiet) == [550] and heard(two.slack, alone) == [770]
    done = job_rows(two.url)
    survivor_owner = {r["owner"] for r in done if str(survivor.pid) == r["owner"].split(":")[1]}
    assert len(survivor_owner) == 1
    assert all(r["owner"] in survivor_owner for r in done if r["key"].startswith(busy))
    first = min((r for r in done if r["key"].startswith(busy)), key=lambda r: r["id"])
    assert (first["faults"], first["attempts"]) == (1, 2)  # cut off once, answered by the survivor
