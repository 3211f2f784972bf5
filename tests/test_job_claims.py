"""Jobs claimed under a lease by one of several processes sharing a database (JobStore.claim), on both engines."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from core.history import HistoryStore
from core.jobs import JobState, JobStore, NewJob
from core.models import ChatKey, Task

pytestmark = pytest.mark.usefixtures("db_target")

A, B = ChatKey("telegram", "1"), ChatKey("telegram", "2")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def stores(db_target: str) -> AsyncIterator[list[HistoryStore]]:
    """Three processes' stores on one database (on SQLite: one file opened three times)."""
    opened = [HistoryStore(db_target) for _ in range(3)]
    for store in opened:
        await store.open()
    yield opened
    for store in opened:
        await store.close()


def job(n: int, chat: ChatKey, task: Task = Task.TRANSCRIBE) -> NewJob:
    return NewJob(key=f"m{n}", chat=chat, task=task, message_ref=f"ref{n}")


async def test_one_chat_runs_one_job_at_a_time_in_order(stores: list[HistoryStore]) -> None:
    clock = Clock()
    one, two = JobStore(stores[0], clock), JobStore(stores[1], clock)
    for n, chat in enumerate([A, A, B]):
        await one.add(job(n, chat))
    first = await one.claim(["telegram"], "r1", 30)
    second = await two.claim(["telegram"], "r2", 30)
    assert first and second and (first.key, second.key) == ("m0", "m2")   # A's second waits behind its first
    assert await two.claim(["telegram"], "r2", 30) is None
    await one.finish(first.id, JobState.DONE, None)
    then = await two.claim(["telegram"], "r2", 30)
    assert then and then.key == "m1" and then.attempts == 1


async def test_voice_notes_heard_for_digests_queue_in_a_lane_of_their_own(stores: list[HistoryStore]) -> None:
    store = JobStore(stores[0], Clock())
    await store.add(job(0, A))
    await store.add(job(1, A, Task.LISTEN))
    claimed = {(await store.claim(["telegram"], "r", 30)).key, (await store.claim(["telegram"], "r", 30)).key}
    assert claimed == {"m0", "m1"}


async def test_a_lease_that_runs_out_passes_the_job_to_another(stores: list[HistoryStore]) -> None:
    clock = Clock()
    dead, alive = JobStore(stores[0], clock), JobStore(stores[1], clock)
    await dead.add(job(0, A))
    held = await dead.claim(["telegram"], "dead", 30)
    assert held and await dead.renew(held.id, "dead", 30)
    clock.now += 20
    assert await alive.claim(["telegram"], "alive", 30) is None       # renewed: still held
    clock.now += 31                                                    # the holder stopped renewing
    taken = await alive.claim(["telegram"], "alive", 30)
    assert taken and taken.id == held.id and taken.attempts == 2 and taken.faults == 1
    assert await alive.holder(held.id) == ("alive", clock.now + 30)
    assert not await dead.renew(held.id, "dead", 30)                   # the old holder learns it lost it


async def test_jobs_the_runner_started_itself_are_never_taken(stores: list[HistoryStore]) -> None:
    clock = Clock()
    store = JobStore(stores[0], clock)
    added, _ = await store.add(job(0, A))
    await store.start(added.id)                                        # no lease: a single-process runner's
    clock.now += 10_000
    assert await store.claim(["telegram"], "r", 30) is None


async def test_processes_claiming_together_take_each_job_once(stores: list[HistoryStore]) -> None:
    clock = Clock()
    await JobStore(stores[0], clock).add(job(0, A))
    for n in range(1, 13):
        await JobStore(stores[0], clock).add(job(n, ChatKey("telegram", f"c{n}")))
    claimers = [JobStore(s, clock) for s in stores]

    async def drain(store: JobStore, owner: str) -> list[str]:
        got = []
        while (claimed := await store.claim(["telegram", "slack"], owner, 30)) is not None:
            got.append(claimed.key)
        return got
    results = await asyncio.gather(*(drain(s, f"r{i}") for i, s in enumerate(claimers * 2)))
    keys = [k for got in results for k in got]
    assert sorted(keys) == sorted(f"m{n}" for n in range(13))          # every job once, none twice
