"""Jobs held under a lease by one of several processes sharing a database (JobStore.take), on both engines."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from core.store.history import HistoryStore
from core.store.jobs import JobLost, JobState, JobStore, NewJob
from core.values import ChatKey, Task

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


async def test_processes_taking_together_take_each_job_once(stores: list[HistoryStore]) -> None:
    clock = Clock()
    added = [(await JobStore(stores[0], clock).add(job(n, ChatKey("telegram", f"c{n % 4}"))))[0] for n in range(12)]
    takers = [JobStore(s, clock, owner=f"r{i}") for i, s in enumerate(stores * 2)]
    for new in added:                                   # all at once for each job, as replicas' sweepers would
        got = await asyncio.gather(*(t.take(new.id, 30) for t in takers))
        assert sum(g is not None for g in got) <= 1      # never two holders
    held = {j.id for j in added if (await takers[0].holder(j.id))[0] is not None}
    assert held == {j.id for j in added[:4]}            # each chat's first job, and only it


# --- JobStore.take: how a JobRunner holds the job it works on ------------------------------------------------

def holders(stores: list[HistoryStore], clock: Clock, *owners: str) -> list[JobStore]:
    return [JobStore(s, clock, owner=o) for s, o in zip(stores, owners, strict=False)]


async def test_take_gives_a_job_to_one_process_and_a_chat_one_job_at_a_time(stores: list[HistoryStore]) -> None:
    clock = Clock()
    one, two = holders(stores, clock, "r1", "r2")
    a0, a1, b0 = [(await one.add(job(n, chat)))[0] for n, chat in enumerate([A, A, B])]
    assert (held := await one.take(a0.id, 30)) and held.id == a0.id
    assert await two.take(a0.id, 30) is None                 # held by another
    assert await two.take(a1.id, 30) is None                 # its chat's older job is still open
    assert await two.take(b0.id, 30)                         # another chat: free
    await one.finish(a0.id, JobState.DONE, None)
    assert await two.take(a1.id, 30) is None                 # answered, but not yet delivered: still waits
    await one.mark_delivered(a0.id)
    assert await one.take(a0.id, 30) is None                 # delivered: nothing left to take
    taken = await two.take(a1.id, 30)
    assert taken and taken.attempts == 0 and taken.state is JobState.QUEUED


async def test_a_lease_that_runs_out_hands_the_job_over_and_fences_the_old_holder(stores: list[HistoryStore]) -> None:
    clock = Clock()
    dead, alive = holders(stores, clock, "dead", "alive")
    added, _ = await dead.add(job(0, A))
    assert await dead.take(added.id, 30)
    await dead.start(added.id)                               # running when its process stops answering
    clock.now += 20
    assert await dead.keep([added.id], 30) == {added.id}     # renewed while alive
    clock.now += 29
    assert await alive.take(added.id, 30) is None
    clock.now += 2                                           # no renewal for a whole lease
    taken = await alive.take(added.id, 30)
    assert taken and taken.state is JobState.QUEUED and taken.faults == 1 and taken.attempts == 1
    assert await alive.holder(added.id) == ("alive", clock.now + 30)
    assert await dead.keep([added.id], 30) == set()          # the old holder learns it lost it...
    with pytest.raises(JobLost):                             # ...and can't change it any more
        await dead.finish(added.id, JobState.DONE, None)
    await alive.release(added.id)                            # let go: anyone may take it at once
    assert await dead.take(added.id, 30)


async def test_a_processes_own_later_turns_do_not_hold_back_the_one_it_queued_first(
        stores: list[HistoryStore]) -> None:
    clock = Clock()
    one, two = holders(stores, clock, "r1", "r2")
    later, _ = await one.add(job(0, A))          # a later update of the chat whose handler stored first
    first, _ = await one.add(job(1, A))
    assert await one.take(first.id, 30) is None               # stored after an open job of its chat...
    assert await one.take(first.id, 30, behind=[later.id])    # ...but that one is queued behind it here
    assert await two.take(later.id, 30) is None               # and nobody else runs the chat meanwhile


async def test_takeable_lists_what_nobody_works_on(stores: list[HistoryStore]) -> None:
    clock = Clock()
    one, two = holders(stores, clock, "r1", "r2")
    a0, _ = await one.add(job(0, A))
    await one.add(job(1, A))
    b0, _ = await one.add(job(2, B))
    heard, _ = await one.add(job(3, A, Task.LISTEN))
    assert await two.takeable(["telegram"], clock.now - 1) == []             # just stored: their process's
    assert [j.key for j in await two.takeable(["telegram"], clock.now)] == ["m0", "m2", "m3"]   # chats' heads
    assert await one.take(a0.id, 30) and await one.take(b0.id, 30)
    assert [j.key for j in await two.takeable(["telegram"], clock.now)] == ["m3"]
    await one.release(b0.id)                                                 # let go: at once
    clock.now += 31                                                          # and a0's lease ran out
    assert [j.key for j in await two.takeable(["telegram"], clock.now - 100)] == ["m0", "m2"]
    assert [j.key for j in await two.takeable(["slack"], clock.now)] == []
