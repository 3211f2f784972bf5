"""Durable jobs: stored before work starts, resumed after a crash, answered once, patient through model
outages behind a shared circuit breaker, and ended with a clear failure when the wait runs out.

The runner drives the real Assistant against the DashScope stand-in; the "platform" here records what
would have been sent. test_telegram_durability.py does the same through the real bot, killed with -9."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from core.config import Settings
from core.flow.failures import span_words
from core.flow.runner import JobRunner
from core.flow.service import Assistant
from core.model.breaker import BreakerState, CircuitBreaker
from core.store.jobs import MAX_FAULTS, Failure, Job, JobState, NewJob, Notice, Outcome, Undeliverable
from core.values import Audio, ChatKey, Reply, Sender, Task
from core.words import messages
from tests.conftest import serving, settings_for
from tests.fakes.dashscope import UNAVAILABLE, FakeDashScope, tone_audio
from tests.waiting import job_rows, until

# every test here runs on SQLite and on PostgreSQL (tests/conftest.py: db_target)
pytestmark = pytest.mark.usefixtures("db_target")

PLATFORM = "test"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the circuit breaker ----------------------------------------------------------------------------

def test_breaker_opens_after_outages_in_a_row_and_a_success_resets_the_count():
    clock = FakeClock()
    b = CircuitBreaker(threshold=3, cooldown=10, max_cooldown=40, clock=clock)
    b.failed(b.allow())
    b.failed(b.allow())
    b.succeeded(b.allow())          # not in a row: starts over
    b.failed(b.allow())
    b.failed(b.allow())
    assert b.state is BreakerState.CLOSED and b.allow() is not None
    b.failed(b.allow())
    assert b.state is BreakerState.OPEN and b.allow() is None
    assert b.retry_in() == pytest.approx(10)


def test_breaker_half_opens_for_one_probe_and_backs_off_while_the_service_stays_down():
    clock = FakeClock()
    b = CircuitBreaker(threshold=1, cooldown=10, max_cooldown=25, clock=clock)
    b.failed(b.allow())
    clock.now += 9.9
    assert b.allow() is None
    clock.now += 0.1
    probe = b.allow()
    assert probe is not None and probe.probe and b.state is BreakerState.HALF_OPEN
    assert b.allow() is None                       # one probe at a time
    b.failed(probe)                                # still down: twice the cooldown
    assert b.state is BreakerState.OPEN and b.retry_in() == pytest.approx(20)
    clock.now += 20
    b.failed(b.allow())
    assert b.retry_in() == pytest.approx(25)       # capped
    clock.now += 25
    probe = b.allow()
    b.succeeded(probe)
    assert b.state is BreakerState.CLOSED and b.recoveries == 1 and b.allow() == b.allow()
    b.failed(b.allow())                            # back to the first cooldown after a recovery
    assert b.retry_in() == pytest.approx(10)


def test_a_probe_that_says_nothing_lets_the_next_caller_probe_at_once():
    clock = FakeClock()
    b = CircuitBreaker(threshold=1, cooldown=10, clock=clock)
    b.failed(b.allow())
    clock.now += 10
    probe = b.allow()
    b.released(probe)                              # the audio was bad: nothing learnt about the service
    assert b.state is BreakerState.OPEN and b.retry_in() == 0
    again = b.allow()
    assert again is not None and again.probe
    b.failed(None)                                 # a late failure from before doesn't reopen it twice
    assert b.state is BreakerState.HALF_OPEN


async def test_breaker_wakes_waiters_when_it_changes():
    b = CircuitBreaker(threshold=1, cooldown=30)
    waiter = asyncio.create_task(b.wait_for_change(30))
    await asyncio.sleep(0)                         # one turn of the loop: the waiter is waiting
    b.failed(b.allow())
    await asyncio.wait_for(waiter, 1)


# --- a platform that records -----------------------------------------------------------------------

class Recorder:
    """What an adapter would do: fetch the audio, deliver outcomes (kept here, in order)."""

    def __init__(self, audio: Audio) -> None:
        self.audio = audio
        self.fetched: list[int] = []
        self.sent: list[tuple[str, Outcome]] = []
        self.gate: asyncio.Event | None = None       # set: fetch waits for it
        self.fetching = asyncio.Event()
        self.cancelled = asyncio.Event()             # a fetch was cancelled (its process "died")
        self.refuse: Exception | None = None         # raised by the next deliver of a final outcome

    def register(self, runner: JobRunner) -> None:
        runner.register(PLATFORM, fetch=self.fetch, deliver=self.deliver)

    async def fetch(self, job: Job) -> Audio:
        self.fetched.append(job.id)
        self.fetching.set()
        if self.gate is not None:
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        return self.audio

    async def deliver(self, job: Job, outcome: Outcome) -> None:
        if self.refuse is not None and not isinstance(outcome, Notice):
            err, self.refuse = self.refuse, None
            raise err
        self.sent.append((job.key, outcome))

    def of(self, key: str, kind: type) -> list[Any]:
        return [o for k, o in self.sent if k == key and isinstance(o, kind)]



class Outage(FakeDashScope):
    """The stand-in, with a switch: while `down`, every request gets 503 ModelUnavailable."""

    down = False

    async def _serve(self, request):  # type: ignore[no-untyped-def]
        if self.down:
            self.failures.appendleft(UNAVAILABLE)
        return await super()._serve(request)


CLIP = tone_audio((0, 0.5), (440, 1.0), (0, 0.5), fmt="ogg")


def job(n: int, task: Task = Task.TRANSCRIBE) -> NewJob:
    return NewJob(key=f"m{n}", chat=ChatKey(PLATFORM, f"chat{n}"), task=task, message_ref=str(n),
                  file_ref=f"file{n}", sender=Sender(user_id=f"user{n}"))


class World:
    def __init__(self, ds: Outage, settings: Settings, assistant: Assistant, platform: Recorder) -> None:
        self.ds, self.settings, self.assistant, self.platform = ds, settings, assistant, platform
        self.runners: list[JobRunner] = []

    async def runner(self, **kw: Any) -> JobRunner:
        kw = {"backoff": 0.05, "max_backoff": 0.3,
              "breaker": CircuitBreaker(threshold=1, cooldown=0.2, max_cooldown=0.4), **kw}
        runner = JobRunner(self.assistant, **kw)
        self.platform.register(runner)
        await runner.start()
        self.runners.append(runner)
        return runner


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with serving(Outage()) as ds:
        # one quick client attempt per job attempt: the runner's patience is what these tests are about
        settings = settings_for(ds, tmp_path, retry_budget=0.2)
        async with Assistant(settings) as assistant:
            w = World(ds, settings, assistant, Recorder(Audio(CLIP, "voice.ogg", "audio/ogg")))
            try:
                yield w
            finally:
                for r in w.runners:
                    await r.stop(grace=1)


# --- stored before work, answered once ---------------------------------------------------------------

async def test_job_is_committed_before_submit_returns_and_running_before_work(world: World):
    world.platform.gate = asyncio.Event()
    runner = await world.runner()
    submitted = await runner.submit(job(1))
    [row] = job_rows(world.settings.db_path)
    assert row["id"] == submitted.id and row["key"] == "m1" and row["state"] in ("queued", "running")
    assert (row["platform"], row["chat_id"], row["message_ref"], row["file_ref"], row["task"]) == (
        PLATFORM, "chat1", "1", "file1", "transcribe")
    await asyncio.wait_for(world.platform.fetching.wait(), 5)
    [row] = job_rows(world.settings.db_path)
    assert row["state"] == "running" and row["attempts"] == 1    # committed before the audio was fetched
    world.platform.gate.set()
    await until(lambda: world.platform.of("m1", Reply))
    await runner.drained()
    [row] = job_rows(world.settings.db_path)
    assert row["state"] == "done" and row["delivered"] is not None and row["outcome"] is None
    [answer] = world.platform.of("m1", Reply)
    assert "440Hz" in answer.text and len(world.ds.calls) == 1


async def test_the_same_message_twice_is_one_job(world: World):
    runner = await world.runner()
    first = await runner.submit(job(2))
    await until(lambda: world.platform.of("m2", Reply))
    again = await runner.submit(job(2))          # Telegram or Slack redelivered it
    await runner.drained()
    assert again.id == first.id and len(world.platform.sent) == 1 and len(world.ds.calls) == 1


async def test_one_chat_in_order_many_chats_at_once(world: World):
    world.ds.latency = 0.3
    runner = await world.runner()
    chat = ChatKey(PLATFORM, "busy")
    for n in range(3):
        await runner.submit(NewJob(key=f"o{n}", chat=chat, task=Task.TRANSCRIBE, message_ref=str(n),
                                   file_ref="f", sender=Sender(user_id="u-order")))
    for n in range(3, 7):
        await runner.submit(job(n))
    await until(lambda: len(world.platform.sent) == 7)
    assert [k for k, _ in world.platform.sent if k.startswith("o")] == ["o0", "o1", "o2"]
    assert world.ds.max_in_flight >= 4


async def test_a_reserved_place_keeps_a_slow_handlers_turn_and_a_dropped_one_lets_the_rest_go(world: World):
    """A handler takes its chat's place before its first await: a later update submitted first waits
    behind it; a place given up (nothing to submit) holds nobody back."""
    world.ds.latency = 0.2
    runner = await world.runner()
    chat = ChatKey(PLATFORM, "reserved")

    def turn(n: int) -> NewJob:
        return NewJob(key=f"r{n}", chat=chat, task=Task.TRANSCRIBE, message_ref=str(n), file_ref="f",
                      sender=Sender(user_id="u-reserved"))
    slow, dropped, fast = runner.reserve(chat), runner.reserve(chat), runner.reserve(chat)
    await runner.submit(turn(2), fast)         # the later update is ready first...
    dropped.drop()
    second = runner.reserve(chat)
    waiting = asyncio.create_task(second.earlier_settled())
    await runner.submit(turn(1), slow)          # ...but answered after the one that arrived before it
    await asyncio.wait_for(waiting, 5)
    second.drop()
    await until(lambda: len(world.platform.sent) == 2)
    assert [k for k, _ in world.platform.sent] == ["r1", "r2"]
    await runner.drained()


async def test_stop_lets_a_handler_holding_a_place_store_its_job_first(world: World):
    runner = await world.runner()
    chat = ChatKey(PLATFORM, "closing")

    placed = asyncio.Event()

    async def slow_handler() -> None:
        with runner.reserve(chat) as slot:
            placed.set()
            await asyncio.sleep(0.3)           # a handler still awaiting the database when shutdown begins
            await runner.submit(NewJob(key="late", chat=chat, task=Task.TRANSCRIBE, message_ref="1",
                                       file_ref="f", sender=Sender(user_id="u-late")), slot)
    handler = asyncio.create_task(slow_handler())
    await placed.wait()
    await runner.stop(grace=5)
    assert handler.done(), "stop returned while a handler still held its chat's place"
    [row] = job_rows(world.settings.db_path)
    assert row["key"] == "late" and row["state"] == "queued"    # stored; the next start answers it


async def test_a_job_left_running_by_a_dead_process_resumes_and_is_answered_once(world: World):
    world.platform.gate = asyncio.Event()
    first = await world.runner()
    await first.submit(job(8))
    await asyncio.wait_for(world.platform.fetching.wait(), 5)
    # the process "dies": its tasks vanish without a word to the database
    first.store.requeue = _never                       # type: ignore[method-assign]
    await first.stop(grace=0)                          # cut off mid-work, and the requeue never happens
    await asyncio.wait_for(world.platform.cancelled.wait(), 5)
    assert job_rows(world.settings.db_path)[0]["state"] == "running"
    world.platform.gate = None
    second = await world.runner()
    await until(lambda: world.platform.of("m8", Reply))
    await second.drained()
    [row] = job_rows(world.settings.db_path)
    assert (row["state"], row["faults"], row["attempts"]) == ("done", 1, 2)
    assert len(world.platform.sent) == 1


async def _never(job_id: int) -> Job:
    raise asyncio.CancelledError


async def test_an_answer_stored_but_not_delivered_is_delivered_after_a_restart_without_asking_again(world: World):
    runner = await world.runner()
    world.platform.refuse = ConnectionError("network down")
    await runner.submit(job(9))
    await until(lambda: world.platform.of("m9", Reply))        # the second try got through
    assert job_rows(world.settings.db_path)[0]["delivery_attempts"] == 1
    # an answer finished just before a crash: done, not delivered
    store = runner.store
    pending = await store.add(job(10))
    await store.finish(pending[0].id, JobState.DONE, Reply("stored answer", Task.TRANSCRIBE))
    again = await world.runner()
    await until(lambda: world.platform.of("m10", Reply))
    await again.drained()
    assert [r.text for r in world.platform.of("m10", Reply)] == ["stored answer"]
    assert len(world.ds.calls) == 1                            # only job 9 asked the model
    third = await world.runner()                              # and nothing is sent twice
    await third.drained()
    assert len(world.platform.sent) == 2


async def test_undeliverable_outcome_is_given_up_at_once(world: World):
    runner = await world.runner()
    world.platform.refuse = Undeliverable("bot was blocked by the user")
    await runner.submit(job(11))
    await until(lambda: (job_rows(world.settings.db_path)[0]["last_error"] or "").startswith("delivery failed"))
    await runner.drained()
    [row] = job_rows(world.settings.db_path)
    assert row["delivered"] is None and row["state"] == "done" and not world.platform.sent
    restarted = await world.runner()
    assert restarted.scheduled == 0


async def test_a_job_that_keeps_crashing_the_process_is_given_up(world: World):
    runner = await world.runner()
    store = runner.store
    added, _ = await store.add(job(12))
    for _ in range(MAX_FAULTS):                 # started, then the process died, MAX_FAULTS times
        await store.start(added.id)
        await store.recover([PLATFORM])
    again = await world.runner()
    await until(lambda: world.platform.of("m12", Failure))
    await again.drained()
    assert world.platform.of("m12", Failure)[0].text == messages.INTERNAL and not world.ds.calls


async def test_a_user_error_is_the_answer_and_not_retried(world: World):
    world.platform.audio = Audio(b"not audio at all", "voice.ogg", "audio/ogg")
    runner = await world.runner()
    await runner.submit(job(13))
    [failure] = await until(lambda: world.platform.of("m13", Failure))
    await runner.drained()
    assert failure.text and not world.ds.calls
    assert job_rows(world.settings.db_path)[0]["state"] == "failed"


async def test_a_job_deleted_while_it_works_is_dropped(world: World):
    world.platform.gate = asyncio.Event()
    runner = await world.runner()
    await runner.submit(job(14))
    await asyncio.wait_for(world.platform.fetching.wait(), 5)
    await world.assistant.history.execute("DELETE FROM jobs")   # the chat was forgotten
    world.platform.gate.set()
    await runner.drained()
    assert not world.platform.sent and not job_rows(world.settings.db_path)


# --- outages -------------------------------------------------------------------------------------------

async def test_outage_the_user_is_told_once_then_answered_when_the_model_is_back(world: World):
    world.ds.down = True
    runner = await world.runner()
    await runner.submit(job(20))
    await until(lambda: world.platform.of("m20", Notice))
    for n in range(21, 25):                          # more arrive while it is down
        await runner.submit(job(n))
    await until(lambda: all(world.platform.of(f"m{n}", Notice) for n in range(21, 25)))
    assert runner.breaker.state is not BreakerState.CLOSED
    world.ds.max_in_flight, calls, since = 0, len(world.ds.calls), time.monotonic()
    await until(lambda: len(world.ds.calls) - calls >= 3)
    # the breaker lets one probe through at a time, at least a cooldown (0.2 s) apart: three probes take two
    # cooldowns or more, where five jobs each retrying on their own backoff (0.05 s) would take a fraction
    assert world.ds.max_in_flight <= 1 and time.monotonic() - since >= 0.35
    world.ds.down = False
    await until(lambda: all(world.platform.of(f"m{n}", Reply) for n in range(20, 25)))
    await runner.drained()
    for n in range(20, 25):
        assert [o.text for o in world.platform.of(f"m{n}", Notice)] == [messages.MODEL_WAITING]
        [answer] = world.platform.of(f"m{n}", Reply)
        assert "440Hz" in answer.text
    rows = job_rows(world.settings.db_path)
    assert all(r["state"] == "done" and r["notified"] == 1 and r["delivered"] for r in rows)
    assert "sk-test-key" not in str(rows)
    assert "ModelUnavailable" in rows[0]["last_error"]      # why it waited, for the operator


async def test_outage_longer_than_the_ttl_ends_in_a_clear_failure(world: World):
    world.ds.down = True
    runner = await world.runner(ttl=1.0)
    await runner.submit(job(30))
    [failure] = await until(lambda: world.platform.of("m30", Failure), 10)
    await runner.drained()
    assert failure.text == messages.JOB_EXPIRED.format(waited=span_words(1.0))
    assert [type(o) for _, o in world.platform.sent] == [Notice, Failure]
    [row] = job_rows(world.settings.db_path)
    assert row["state"] == "expired" and row["delivered"]


async def test_ttl_counts_from_arrival_even_across_a_restart(world: World):
    clock = FakeClock()
    runner = await world.runner(clock=clock, ttl=3600)
    world.ds.down = True
    await runner.submit(job(31))
    await until(lambda: world.platform.of("m31", Notice))
    await runner.stop(grace=0)
    clock.now += 3601                               # the bot was away for longer than the TTL
    again = await world.runner(clock=clock, ttl=3600)
    [failure] = await until(lambda: world.platform.of("m31", Failure))
    await again.drained()
    assert failure.text == messages.JOB_EXPIRED.format(waited="60 minutes")
    assert len(world.platform.of("m31", Notice)) == 1     # told once, even across the restart


async def test_shutdown_leaves_unfinished_jobs_for_the_next_start(world: World):
    world.ds.latency = 5.0
    runner = await world.runner()
    await runner.submit(job(40))
    await until(lambda: world.ds.in_flight)
    await runner.stop(grace=0.1)
    [row] = job_rows(world.settings.db_path)
    assert row["state"] == "queued" and row["faults"] == 0      # a stop is not a crash
    world.ds.latency = 0
    again = await world.runner()
    await until(lambda: world.platform.of("m40", Reply))
    await again.drained()
    assert len(world.platform.sent) == 1


# --- Slack: the ack goes out only once the job is stored ---------------------------------------------

async def test_slack_acks_an_event_only_after_its_job_is_stored(tmp_path: Path):
    from tests.conftest import dm_clip, slack_running
    from tests.fakes.slack import event_body

    async with slack_running(tmp_path, ds=FakeDashScope(latency=0.5)) as world:
        db = world.settings.db_path
        slack, model = world.slack, world.model
        record = slack.add_file(CLIP, name="voice.ogg", mimetype="audio/ogg")
        event = dm_clip(slack, record)
        r = await world.post(event_body(event, event_id="Ev0DURABLE1"))
        assert r.status_code == 200
        [row] = job_rows(db)                       # committed before Slack heard "got it"
        assert row["platform"] == "slack" and row["key"] == f"{event['channel']}:{event['ts']}"
        assert not model.calls or model.in_flight  # the model work comes after the ack
        await until(lambda: [p for p in slack.posts if "440Hz" in (p["text"] or "")])
    [row] = job_rows(db)
    assert row["state"] == "done" and row["delivered"]


async def test_connection_refused_waits_until_the_service_listens(tmp_path: Path):
    import socket

    from aiohttp import web
    with socket.socket() as sock:               # a port nobody listens on, for now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(dashscope_api_key="sk-test-key", dashscope_base_url=f"http://127.0.0.1:{port}/api/v1",
                        db_path=tmp_path / "earshot.db", retry_budget=0.2)
    platform = Recorder(Audio(CLIP, "voice.ogg", "audio/ogg"))
    ds = FakeDashScope(api_key="sk-test-key")
    async with Assistant(settings) as assistant:
        runner = JobRunner(assistant, backoff=0.05, max_backoff=0.3,
                           breaker=CircuitBreaker(threshold=1, cooldown=0.2, max_cooldown=0.4))
        platform.register(runner)
        await runner.start()
        site_runner = web.AppRunner(ds.app)
        try:
            await runner.submit(job(50))
            await until(lambda: platform.of("m50", Notice))
            assert "ConnectError" in job_rows(settings.db_path)[0]["last_error"]
            await site_runner.setup()
            await web.TCPSite(site_runner, "127.0.0.1", port).start()     # the service is back
            [answer] = await until(lambda: platform.of("m50", Reply))
            assert "440Hz" in answer.text and len(platform.of("m50", Notice)) == 1
        finally:
            await runner.stop(grace=1)
            await site_runner.cleanup()
