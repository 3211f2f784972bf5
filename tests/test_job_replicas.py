"""Job runners of several processes on one PostgreSQL database: the jobs are shared, each once, one at a time and
in order per chat, and a runner that dies (a separate OS process, killed) loses its jobs to the others after its
lease. Two runners live in this test process, each with its own database pool and Assistant, against one
DashScope stand-in; what each delivers is recorded."""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from core.flow.runner import JobRunner
from core.flow.service import Assistant
from core.store.history import HistoryStore
from core.store.jobs import Job, JobState, JobStore, NewJob, Notice, Outcome
from core.values import Audio, ChatKey, Reply, Sender, Task
from tests.conftest import serving, settings_for
from tests.fakes.dashscope import FakeDashScope, tone_audio
from tests.postgres import Cluster
from tests.waiting import job_rows, settled, until

PLATFORM = "test"
CLIP = tone_audio((0, 0.3), (440, 0.6), (0, 0.3), fmt="ogg")
ROOT = Path(__file__).resolve().parents[1]


class Desk:
    """What every runner's platform does, recorded in one place: deliveries (by whom, in order), and a check
    that no two jobs of one chat are ever at work at the same time, whichever runner works them."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Outcome]] = []       # (runner, job key, outcome)
        self.at_work: dict[ChatKey, int] = {}
        self.overlaps: list[tuple[int, int]] = []
        self.gate: asyncio.Event | None = None               # set: fetches wait for it
        self.fetching = asyncio.Event()

    def platform(self, name: str, runner: JobRunner) -> None:
        async def fetch(job: Job) -> Audio:
            if (other := self.at_work.get(job.chat)) not in (None, job.id):
                self.overlaps.append((other, job.id))
            self.at_work[job.chat] = job.id
            self.fetching.set()
            if self.gate is not None:
                await self.gate.wait()
            return Audio(CLIP, "voice.ogg", "audio/ogg")

        async def deliver(job: Job, outcome: Outcome) -> None:
            if not isinstance(outcome, Notice):
                self.at_work.pop(job.chat, None)
            self.sent.append((name, job.key, outcome))

        runner.register(PLATFORM, fetch=fetch, deliver=deliver)

    def keys(self, kind: type = Reply) -> list[str]:
        return [k for _, k, o in self.sent if isinstance(o, kind)]


class Replicas:
    def __init__(self, ds: FakeDashScope, url: str, tmp_path: Path, desk: Desk) -> None:
        self.ds, self.url, self.tmp_path, self.desk = ds, url, tmp_path, desk
        self.assistants: list[Assistant] = []
        self.runners: list[JobRunner] = []

    async def runner(self, name: str, **kw: Any) -> JobRunner:
        """A runner with a database pool and an Assistant of its own, as another process would have."""
        settings = settings_for(self.ds, self.tmp_path, db_path=self.url, cache_days=0,
                                user_requests_per_minute=0, retry_budget=0.5)
        assistant = await Assistant(settings).__aenter__()
        self.assistants.append(assistant)
        runner = JobRunner(assistant, **{"lease": 1.5, "sweep": 0.1, "backoff": 0.05, **kw})
        self.desk.platform(name, runner)
        await runner.start()
        self.runners.append(runner)
        return runner


@pytest.fixture
async def replicas(postgres: Cluster, tmp_path: Path) -> AsyncIterator[Replicas]:
    async with _replicas(postgres.fresh(), tmp_path) as r:
        yield r


@pytest.fixture
async def on_sqlite(tmp_path: Path) -> AsyncIterator[Replicas]:
    """One process's runner on an SQLite file (SQLite: one process per platform per file)."""
    async with _replicas(str(tmp_path / "earshot.db"), tmp_path) as r:
        yield r


@contextlib.asynccontextmanager
async def _replicas(url: str, tmp_path: Path) -> AsyncIterator[Replicas]:
    async with serving(FakeDashScope(api_key="sk-test", latency=0.05)) as ds:
        r = Replicas(ds, url, tmp_path, Desk())
        try:
            yield r
        finally:
            for runner in r.runners:
                await runner.stop(grace=1)
            for assistant in r.assistants:
                await assistant.aclose()


def turn(chat: str, n: int) -> NewJob:
    return NewJob(key=f"{chat}-{n}", chat=ChatKey(PLATFORM, chat), task=Task.TRANSCRIBE, message_ref=str(n),
                  file_ref=f"file-{chat}-{n}", sender=Sender(user_id=f"user-{chat}"))


async def test_two_runners_share_the_jobs_one_at_a_time_and_in_order_per_chat(replicas: Replicas) -> None:
    one, two = await replicas.runner("one"), await replicas.runner("two")
    chats = [f"c{i}" for i in range(6)]
    submitted: dict[str, list[str]] = {c: [] for c in chats}
    for n in range(4):                          # each chat's turns arrive at either replica, alternately
        for i, chat in enumerate(chats):
            await (one if (n + i) % 2 == 0 else two).submit(turn(chat, n))
            submitted[chat].append(f"{chat}-{n}")
    total = sum(map(len, submitted.values()))
    await until(lambda: settled(replicas.url, total), 30, "every job answered and delivered")
    keys = replicas.desk.keys()
    assert sorted(keys) == sorted(k for ks in submitted.values() for k in ks)      # each once
    for chat in chats:
        assert [k for k in keys if k.startswith(f"{chat}-")] == submitted[chat]   # in order per chat
    assert not replicas.desk.overlaps                       # never two jobs of a chat at work at once
    by = {name for name, _, _ in replicas.desk.sent}
    assert by == {"one", "two"}                             # both did work
    rows = job_rows(replicas.url)
    assert all(r["attempts"] == 1 and r["faults"] == 0 for r in rows)
    assert {r["owner"] for r in rows} == {one.owner, two.owner}


async def test_a_burst_stored_by_one_runner_is_shared_with_a_runner_that_has_hands_free(replicas: Replicas) -> None:
    replicas.desk.gate = asyncio.Event()                    # fetches wait: work piles up
    busy = await replicas.runner("busy", hands=2)           # two jobs at once, at most
    idle = await replicas.runner("idle", hands=4)
    for i in range(6):                                      # a burst reaching one replica (the poller)
        await busy.submit(turn(f"burst{i}", 0))
    def holders() -> list[str]:
        return sorted(r["owner"] for r in job_rows(replicas.url) if r["lease_until"])

    # the busy one takes two and leaves the rest to the one with hands free
    await until(lambda: holders() == sorted([busy.owner] * 2 + [idle.owner] * 4), 10, "the burst shared")
    replicas.desk.gate.set()
    await until(lambda: settled(replicas.url, 6), 20, "every job answered")
    assert sorted(replicas.desk.keys()) == sorted(f"burst{i}-0" for i in range(6))


async def test_the_same_message_stored_by_two_runners_is_answered_once(replicas: Replicas) -> None:
    one, two = await replicas.runner("one"), await replicas.runner("two")
    for n in range(5):                          # a platform delivering one event to both replicas
        same = turn(f"dup{n}", 0)
        await asyncio.gather(one.submit(same), two.submit(same))
    await until(lambda: settled(replicas.url, 5), 20, "the jobs answered")
    await one.drained()
    await two.drained()
    assert sorted(replicas.desk.keys()) == [f"dup{n}-0" for n in range(5)]
    assert len(replicas.ds.answered) == 5 and len(job_rows(replicas.url)) == 5


async def test_a_runner_stopping_lets_go_of_its_job_and_another_takes_it_at_once(replicas: Replicas) -> None:
    replicas.desk.gate = asyncio.Event()
    one = await replicas.runner("one", lease=60)             # its lease alone would keep the job a minute
    two = await replicas.runner("two", lease=60)
    await one.submit(turn("handover", 0))
    await asyncio.wait_for(replicas.desk.fetching.wait(), 10)
    [row] = job_rows(replicas.url)
    assert row["owner"] == one.owner
    await one.stop(grace=0)                                  # a shutdown: requeued and let go
    replicas.desk.gate.set()
    await until(lambda: replicas.desk.keys(), 10, "the other runner to answer")
    assert replicas.desk.sent[-1][:2] == ("two", "handover-0") and len(replicas.desk.keys()) == 1
    [row] = job_rows(replicas.url)
    assert (row["owner"], row["faults"], row["attempts"]) == (two.owner, 0, 2)


class Ahead:
    """A clock some seconds ahead of the wall clock, for a process that sees another's lease as run out."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self) -> float:
        return time.time() + self.seconds


async def test_a_runner_whose_job_was_taken_over_stops_and_leaves_it_alone(replicas: Replicas,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    replicas.desk.gate = asyncio.Event()
    one = await replicas.runner("one", lease=0.6)
    job = await one.submit(turn("cutoff", 0))
    await asyncio.wait_for(replicas.desk.fetching.wait(), 10)
    # another process, for which one's lease has run out (as if one had hung for a whole lease), takes it
    other = HistoryStore(replicas.url)
    await other.open()
    try:
        thief = JobStore(other, Ahead(60), owner="elsewhere:1:x")
        taken = await thief.take(job.id, 600)
        assert taken is not None and taken.faults == 1 and taken.state is JobState.QUEUED
        await until(lambda: "another process took it over" in caplog.text, 10, "the runner to give the job up")
        await one.drained()
        replicas.desk.gate.set()
        [row] = job_rows(replicas.url)
        assert (row["owner"], row["state"], row["attempts"], row["delivered"]) == ("elsewhere:1:x", "queued", 1, None)
        assert replicas.desk.sent == []                     # nothing delivered, nothing requeued over theirs
        await one.submit(turn("after", 0))                  # and the runner goes on with other work
        await until(lambda: replicas.desk.keys() == ["after-0"], 10)
    finally:
        await other.close()


HOLD = """
import asyncio, os, sys
from core.store.history import HistoryStore
from core.store.jobs import JobStore, NewJob
from core.values import ChatKey, Sender, Task

async def main(url):
    store = HistoryStore(url)
    await store.open()
    jobs = JobStore(store, owner=f"dying:{os.getpid()}:0")
    for n in range(2):
        job, _ = await jobs.add(NewJob(key=f"dying-{n}", chat=ChatKey("test", "dying"), task=Task.TRANSCRIBE,
                                       message_ref=str(n), file_ref="f", sender=Sender(user_id="u")))
        if n == 0:
            assert await jobs.take(job.id, float(sys.argv[2]))
            await jobs.start(job.id)
    print("holding", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(sys.argv[1]))
"""


async def test_a_process_killed_holding_a_job_loses_it_and_its_chat_to_another_after_its_lease(
        replicas: Replicas) -> None:
    lease = 1.5
    child = await asyncio.to_thread(
        subprocess.Popen, [sys.executable, "-c", HOLD, replicas.url, str(lease)], cwd=ROOT, stdout=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("EARSHOT_")})
    try:
        assert child.stdout is not None
        assert await asyncio.to_thread(child.stdout.readline) == b"holding\n"
        two = await replicas.runner("two", lease=lease)
        await two.submit(turn("dying", 2))                  # a later turn of the same chat, stored here
        held = await JobStore(replicas.assistants[0].history).holder(job_rows(replicas.url)[0]["id"])
        assert held[0] == f"dying:{child.pid}:0"
        os.kill(child.pid, signal.SIGKILL)                  # dies holding the chat's first job
        killed = time.monotonic()
        await until(lambda: len(replicas.desk.keys()) == 3, 20, "the chat's three turns answered")
        took = time.monotonic() - killed
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    assert replicas.desk.keys() == ["dying-0", "dying-1", "dying-2"]      # in order, each once
    assert took >= lease * 0.5                          # not before its lease ran out (it was renewed at most once)
    rows = job_rows(replicas.url)
    assert [(r["faults"], r["attempts"], r["owner"]) for r in rows] == [(1, 2, two.owner), (0, 1, two.owner),
                                                                         (0, 1, two.owner)]


async def test_on_sqlite_a_restart_resumes_at_once_what_the_killed_process_held(on_sqlite: Replicas) -> None:
    """One process per platform per SQLite file: what is left is its predecessor's, released at start, not
    waited out for a lease."""
    child = await asyncio.to_thread(
        subprocess.Popen, [sys.executable, "-c", HOLD, on_sqlite.url, "3600"], cwd=ROOT, stdout=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("EARSHOT_")})
    try:
        assert child.stdout is not None
        assert await asyncio.to_thread(child.stdout.readline) == b"holding\n"
    finally:
        child.kill()                                        # dies holding the chat's first job for an hour
        child.wait()
    await on_sqlite.runner("restarted", lease=3600)
    await until(lambda: len(on_sqlite.desk.keys()) == 2, 15, "both turns answered")
    assert on_sqlite.desk.keys() == ["dying-0", "dying-1"]
    assert [(r["faults"], r["attempts"]) for r in job_rows(on_sqlite.url)] == [(1, 2), (0, 1)]
