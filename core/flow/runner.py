"""Runs durable jobs (core.store.jobs): in order within a chat, concurrently across chats, once each.

Adapters register per platform how to fetch a job's audio again, how to deliver an outcome, and
optionally how to show progress while it runs (core.flow.delivery.Platform); then, for each update, they
`reserve` the chat's place in line before their first await and `submit` the job into it, instead of
calling Assistant.handle. That queue per chat (its lanes and places in line: core.flow.lanes) is
earshot's one ordering mechanism. The runner calls Assistant.handle, stores the outcome, delivers it
(core.flow.delivery: exactly once, and its one corner), and records the delivery. After a crash
`start()` resumes whatever was left: unfinished work and undelivered answers.

A model outage is not a failure: the job waits with backoff behind a circuit breaker shared by all jobs,
until its time is up (core.flow.failures says what the user is told, and when).

Several processes on one database (replicas on PostgreSQL) share the jobs safely under leases, and one
process on SQLite works exactly as before, through the same steps: core.flow.leases has the rules.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterator

from core.errors import EarshotError, ModelError, StorageError
from core.flow.delivery import Attend, AudioId, Deliver, Fetch, JobDelivery, Platform, Unsay
from core.flow.digest import DigestService
from core.flow.failures import expired, internal, is_outage, said, span_words
from core.flow.lanes import Reservation, is_quiet, lane_of
from core.flow.leases import Leases, owner_id
from core.flow.service import Assistant
from core.logs import RedactingFilter
from core.model.breaker import CircuitBreaker, Permit
from core.store.jobs import (
    MAX_DELIVERIES,
    MAX_FAULTS,
    Failure,
    Job,
    JobGone,
    JobLost,
    JobState,
    JobStore,
    NewJob,
)
from core.values import ChatKey, Reply, Request, Task

__all__ = ["JobRunner", "Reservation"]     # adapters take their place in line (core.flow.lanes) from here

log = logging.getLogger(__name__)


class JobRunner:
    """`register` each platform, `await start()`, `slot = reserve(chat)` then `await submit(NewJob(...), slot)`;
    `await stop()` at shutdown. The per-chat queue is earshot's one ordering mechanism."""

    def __init__(self, assistant: Assistant, digests: DigestService | None = None, *, ttl: float | None = None,
                 breaker: CircuitBreaker | None = None,
                 clock: Callable[[], float] = time.time, backoff: float = 2.0, max_backoff: float = 60.0,
                 concurrency: int | None = None, grace: float = 10.0, lease: float | None = None,
                 sweep: float | None = None, owner: str | None = None, hands: int | None = None) -> None:
        settings = assistant.settings
        self.assistant = assistant
        self.digests = digests          # listening jobs are heard through them (core.app builds both)
        self.clock = clock
        self.owner = owner or owner_id()
        self.lease = lease if lease is not None else settings.job_lease
        self.sweep_every = sweep if sweep is not None else min(1.0, self.lease / 3)
        self.store = JobStore(assistant.history, clock, owner=self.owner)
        self.ttl = ttl if ttl is not None else settings.job_ttl
        self.breaker = breaker or CircuitBreaker()
        self.backoff, self.max_backoff = backoff, max_backoff
        self.grace = grace                      # how long stop() lets running jobs finish
        self._redact = RedactingFilter(settings.secrets()).redact
        self.leases = Leases(self.store, self.lease, self._redact)    # the jobs this process holds
        self.delivery = JobDelivery(self.store, backoff, self._redact)
        # decoding is CPU and memory: bound the jobs at work (model calls have their own, lower bound)
        self._slots = asyncio.Semaphore(concurrency or 4 * settings.global_concurrency)
        # jobs this process takes on at once: twice the model calls it may make keeps its decoding ahead of
        # them, and leaves the rest of a burst to replicas with hands free (a job waiting out a model outage
        # lets its hand go: it is waiting, not working)
        self._hands = asyncio.Semaphore(hands or 2 * settings.global_concurrency)
        self._handed: set[int] = set()                   # jobs holding one of those hands
        self._platforms: dict[str, Platform] = {}
        self._queues: dict[ChatKey, deque[int | Reservation]] = {}   # job ids (or places held) per chat, oldest first
        self._workers: dict[ChatKey, asyncio.Task[None]] = {}
        self._scheduled: set[int] = set()
        self._arrived: set[int] = set()                 # scheduled by submit: in arrival order here
        self._busy: set[asyncio.Task[None]] = set()     # workers mid-attempt or mid-delivery
        self._held: set[Reservation] = set()             # places of handlers still at work on an update
        self._faulty: set[int] = set()                    # the runner itself failed on them: left for later
        self._nudge = asyncio.Event()                     # a chat's queue ran empty: sweep now
        self._background: list[asyncio.Task[None]] = []   # the keeper and the sweeper
        self._started = False
        self._stopping = False

    def register(self, platform: str, *, fetch: Fetch, deliver: Deliver, attend: Attend | None = None,
                 stream: bool = False, audio_id: AudioId | None = None, unsay: Unsay | None = None) -> None:
        self._platforms[platform] = Platform(fetch, deliver, attend, stream, audio_id, unsay)

    # --- lifetime -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Resume this process's platforms' unfinished jobs (after the assistant is open): on SQLite all of
        them at once (one process per platform per file: whatever is left is this platform's last process's);
        on PostgreSQL those no live replica holds. Then keep leases and look for work others left."""
        names = list(self._platforms)
        await self.store.prune()
        interrupted = await self.store.recover(names)
        if self.store.history.engine == "sqlite":
            pending = await self.store.pending(names)
        else:
            pending = await self.store.takeable(names, self.clock())    # stored before this start: no one's yet
        self._started, self._stopping = True, False
        for job in pending:
            self._schedule(job)
        if pending:
            log.info("resuming %d job(s); %d were cut off mid-work when the last process died",
                     len(pending), interrupted)
        if not self._background:
            self._background = [asyncio.create_task(self.leases.keeper(), name="earshot-jobs-keeper"),
                                asyncio.create_task(self._sweeper(), name="earshot-jobs-sweeper")]

    async def stop(self, grace: float | None = None) -> None:
        """Stop working: handlers still at work on an update get `grace` seconds to store their job (or
        finish), then jobs waiting stop at once and jobs at work get `grace` seconds to finish.
        Whatever is left stays in the database and resumes on the next start."""
        self._stopping = True
        self._nudge.set()            # the sweeper sees it is stopping
        grace = self.grace if grace is None else grace
        if self._held:
            log.info("waiting for %d update(s) being handled", len(self._held))
            waiting = [asyncio.create_task(s.settled.wait()) for s in self._held]
            await asyncio.wait(waiting, timeout=grace)
            for waiter in waiting:
                waiter.cancel()
        workers = set(self._workers.values())
        for task in workers - self._busy:
            task.cancel()
        busy = workers & self._busy
        if busy:
            log.info("letting %d job(s) at work finish", len(busy))
            _, late = await asyncio.wait(busy, timeout=grace)
            for task in late:
                task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._queues.clear()
        self._workers.clear()
        self._scheduled.clear()
        self._arrived.clear()
        background, self._background = self._background, []
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if background:               # whatever is still held goes back at once: another replica may take it
            await self.leases.release_all()

    async def drained(self, timeout: float = 30.0) -> None:
        """Wait until no job is scheduled (tests and tools); TimeoutError after `timeout`."""
        async with asyncio.timeout(timeout):
            while self._workers:  # noqa: ASYNC110  (polled: for tests and tools, not the serving path)
                await asyncio.sleep(0.02)

    @property
    def scheduled(self) -> int:
        return len(self._scheduled)

    # --- taking work --------------------------------------------------------------------------
    def reserve(self, chat: ChatKey) -> Reservation:
        """Hold `chat`'s next place in line, now (no await): the job submitted with it runs there."""
        if not self._started or self._stopping:
            return Reservation(chat)           # nothing runs yet: submit stores, start() schedules
        ahead = tuple(e for e in self._queues.get(chat, ()) if isinstance(e, Reservation) and not e.settled.is_set())
        slot = Reservation(chat, ahead, self._held)
        self._enqueue(chat, slot, chat.platform)
        return slot

    async def submit(self, new: NewJob, slot: Reservation | None = None) -> Job:
        """Store the job (committed when this returns) and schedule it, in `slot`'s place when given (a
        listening job keeps its own lane). The same key again is a no-op."""
        try:
            if new.chat.platform not in self._platforms:
                raise RuntimeError(f"no job handlers registered for {new.chat.platform}")
            job, created = await self.store.add(new)
            if not created:
                log.info("message %s is already job %d (%s)", new.key, job.id, job.state)
            if self._started and not self._stopping and job.id not in self._scheduled:
                self._schedule(job, slot if new.task is not Task.LISTEN else None)
                if job.id in self._scheduled:
                    self._arrived.add(job.id)
            return job
        finally:
            if slot is not None and new.task is not Task.LISTEN:
                slot.drop()      # filled by _schedule, or nothing to run: free the place either way

    async def set_progress_ref(self, job: Job, ref: str | None) -> None:
        """Adapters note their progress message, so the next process can remove one left behind."""
        await self.store.set_progress_ref(job.id, ref)

    def _schedule(self, job: Job, slot: Reservation | None = None) -> None:
        if job.id in self._scheduled or (job.finished and (job.delivered is not None
                                                           or job.delivery_attempts >= MAX_DELIVERIES)):
            return
        self._scheduled.add(job.id)
        if slot is not None and not slot.settled.is_set() and slot.chat == job.chat:
            slot.fill(job.id)          # already in line, where its update arrived
            return
        self._enqueue(lane_of(job), job.id, job.platform)

    def _enqueue(self, lane: ChatKey, entry: int | Reservation, platform: str) -> None:
        self._queues.setdefault(lane, deque()).append(entry)
        if lane not in self._workers:
            self._workers[lane] = asyncio.create_task(self._work(lane), name=f"earshot-jobs-{platform}")

    async def _work(self, chat: ChatKey) -> None:
        """One chat's jobs, one at a time: later turns build on earlier answers."""
        queue = self._queues[chat]
        try:
            while queue and not self._stopping:
                entry = queue[0]
                if isinstance(entry, Reservation):     # a handler still deciding: wait for its job (or none)
                    await entry.settled.wait()
                    if entry.job_id is None:
                        queue.popleft()
                        continue
                    job_id = entry.job_id
                else:
                    job_id = entry
                # what arrived here is ordered by this queue, whatever the ids (a handler may store late):
                # its later turns of the chat don't hold it back (jobs found by the sweeper go by their ids)
                later = [e if isinstance(e, int) else e.job_id for e in itertools.islice(queue, 1, None)]
                behind = [i for i in later if i in self._arrived] if job_id in self._arrived else []
                lost = False
                try:
                    await self._run(job_id, behind)
                except JobGone:
                    log.info("job %d was deleted (the chat was forgotten); dropping it", job_id)
                except JobLost:
                    lost = True
                except asyncio.CancelledError:
                    if not self.leases.forget_lost(job_id) or self._stopping:
                        raise
                    lost = True
                except Exception:   # the job stays in the database and is retried on the next start
                    log.exception("job %d: the runner failed; it will resume on the next start (or in another "
                                  "process once its lease runs out)", job_id)
                if self.leases.forget_lost(job_id) or lost:
                    log.warning("job %d: another process took it over (this one could not renew its lease in "
                                "time); leaving it to them", job_id)
                queue.popleft()
                self._scheduled.discard(job_id)
                self._arrived.discard(job_id)
        finally:
            if self._workers.get(chat) is asyncio.current_task():
                del self._workers[chat]
            if not queue:
                self._queues.pop(chat, None)
                self._nudge.set()       # the chat's next job may be waiting elsewhere: look now

    # --- holding jobs among several processes (core.flow.leases) --------------------------------------
    async def _sweeper(self) -> None:
        """Schedule the jobs of this process's platforms that nobody works on (core.flow.leases' docstring)."""
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudge.wait(), self.sweep_every)
            self._nudge.clear()
            if self._stopping:
                return
            try:
                found = await self.store.takeable(list(self._platforms), self.clock() - self.sweep_every)
            except Exception as err:
                log.warning("could not look for jobs left by other processes: %s", self._redact(str(err)))
                continue
            if self._stopping:
                return
            for job in found:
                if job.id not in self._scheduled and job.id not in self._faulty:
                    log.debug("job %d: nobody works on it; taking it up", job.id)
                    self._schedule(job)

    # --- one job ------------------------------------------------------------------------------
    async def _run(self, job_id: int, behind: list[int]) -> None:
        await self._hands.acquire()        # a hand free before taking: what this process can't start, others may
        self._handed.add(job_id)
        try:
            job = await self.store.take(job_id, self.lease, behind=behind)
        except BaseException:
            self._free_hand(job_id)
            raise
        if job is None:        # another process has it, or it waits behind an older job held elsewhere
            self._free_hand(job_id)
            log.debug("job %d: not this process's turn; dropped from its queue", job_id)
            return
        worker = asyncio.current_task()
        assert worker is not None
        self.leases.hold(job_id, worker)
        try:
            await self._work_on(job)
        except (JobGone, JobLost):
            raise
        except Exception:
            # earshot itself failed: not again in this process (its next start tries), and not let go at
            # once, so another replica takes it only when its lease runs out, rather than in a tight loop
            self._faulty.add(job_id)
            raise
        finally:
            self.leases.let_go(job_id)
            self._free_hand(job_id)
            if not self.leases.lost(job_id) and job_id not in self._faulty:
                await self.leases.release(job_id)

    def _free_hand(self, job_id: int) -> None:
        if job_id in self._handed:
            self._handed.discard(job_id)
            self._hands.release()

    async def _work_on(self, job: Job) -> None:
        platform = self._platforms[job.platform]
        if not job.finished and job.faults >= MAX_FAULTS:
            log.error("job %d: giving up after %d crashes or errors (last: %s)", job.id, job.faults, job.last_error)
            job = await self.store.finish(job.id, JobState.FAILED, said(job, internal(job)))
        while not job.finished:
            permit = await self._turn(job, platform)
            if permit is None:
                log.warning("job %d: no answer within %s; telling the user", job.id, span_words(self.ttl))
                job = await self.store.finish(job.id, JobState.EXPIRED, said(job, expired(job, self.ttl)))
                break
            job = await self._attempt(job, platform, permit)
        if job.delivered is None:
            with self._busy_now():
                await self.delivery.deliver(job, platform)

    async def _turn(self, job: Job, platform: Platform) -> Permit | None:
        """Wait for the job's backoff and for the breaker's leave; None once its time is up."""
        recoveries = self.breaker.recoveries
        while True:
            now = self.clock()
            left = job.created + self.ttl - now
            if left <= 0:
                return None
            # the service came back while this job was waiting: don't sit out the rest of its backoff
            wait = 0.0 if self.breaker.recoveries != recoveries else job.next_attempt - now
            if wait <= 0:
                if (permit := self.breaker.allow()) is not None:
                    return permit
                job = await self.delivery.tell_waiting(job, platform)
                wait = self.breaker.retry_in()
            self._free_hand(job.id)            # waiting, not working: another job may start meanwhile
            await self.breaker.wait_for_change(min(max(wait, 0.01), left))

    async def _attempt(self, job: Job, platform: Platform, permit: Permit) -> Job:
        async with self._slots:
            with self._busy_now():
                job = await self.store.start(job.id)      # committed before any work
                started = time.monotonic()
                try:
                    reply = await self._answer(job, platform)
                except asyncio.CancelledError:
                    self.breaker.released(permit)
                    if not self.leases.lost(job.id):       # taken over elsewhere: not ours to requeue
                        await self.store.requeue(job.id)  # a shutdown, not a fault: start afresh next time
                    raise
                except StorageError as err:     # the database failed mid-job (core.store.db): a fault, tried again
                    self.breaker.released(permit)
                    return await self._faulted(job, err)
                except EarshotError as err:
                    return await self._failed(job, platform, permit, err)
                except Exception as err:
                    self.breaker.released(permit)
                    return await self._faulted(job, err)
                self.breaker.succeeded(permit)
                log.info("job %d: %s in %s/%s answered in %.1f s (%d tokens)", job.id, job.task.value,
                         job.platform, job.chat.chat_id, time.monotonic() - started, reply.usage.total)
                return await self.store.finish(job.id, JobState.DONE, said(job, reply))

    async def _answer(self, job: Job, platform: Platform) -> Reply:
        if is_quiet(job):
            assert job.file_ref is not None and self.digests is not None
            return await self.digests.hear(job, await platform.fetch(job))
        if job.progress_ref and platform.unsay:     # a status left by a crashed process goes first
            await platform.unsay(job, job.progress_ref)
            await self.store.set_progress_ref(job.id, None)
        attend = platform.attend(job) if platform.attend else contextlib.nullcontext(None)
        async with attend as progress:
            # fetched inside handle: after the access checks, and not at all for a cached answer
            fetch = (lambda: platform.fetch(job)) if job.file_ref else None
            s = job.sender
            request = Request(job.chat, job.task, text=job.text, user_id=s.user_id,
                              user_name=s.user_name, team_id=s.team_id, chat_name=s.chat_name,
                              retry=job.attempts > 1, admitted=True,
                              audio_id=platform.audio_id(job) if platform.audio_id and job.file_ref else None,
                              lang=job.lang)
            return await self.assistant.handle(request, progress=progress, stream=platform.stream, fetch=fetch)

    async def _failed(self, job: Job, platform: Platform, permit: Permit, err: EarshotError) -> Job:
        error = self._redact(err.operator_message)
        if is_outage(err):
            self.breaker.failed(permit)
            delay = self._backoff(job)
            log.warning("job %d: the model is unavailable (%s); next try in %.1f s", job.id, error, delay)
            job = await self.store.wait(job.id, self.clock() + delay, error)
            return await self.delivery.tell_waiting(job, platform)
        if isinstance(err, ModelError):
            self.breaker.succeeded(permit)     # it refused, but it answered: the service is up
        else:
            self.breaker.released(permit)
        if err.operator:
            log.error("job %d: %s", job.id, error)
        elif is_quiet(job):
            log.info("job %d: skipped a voice note: %s", job.id, error)
        else:
            log.info("job %d: told the user: %s", job.id, err.user_message)
        outcome = None if getattr(err, "silent", False) else said(job, Failure(err.user_text(job.lang)))
        return await self.store.finish(job.id, JobState.FAILED, outcome, error)

    async def _faulted(self, job: Job, err: Exception) -> Job:
        log.error("job %d: unexpected %s", job.id, type(err).__name__, exc_info=err)
        error = self._redact(f"{type(err).__name__}: {err}")
        if job.faults + 1 >= MAX_FAULTS:
            return await self.store.finish(job.id, JobState.FAILED, said(job, internal(job)),
                                           error)
        return await self.store.wait(job.id, self.clock() + self._backoff(job), error, fault=True)

    def _backoff(self, job: Job) -> float:
        """Exponential in the job's attempts, with jitter so waiting jobs don't return in step."""
        base = min(self.max_backoff, self.backoff * 2 ** max(0, job.attempts - 1))
        return base * random.uniform(0.8, 1.2)

    @contextlib.contextmanager
    def _busy_now(self) -> Iterator[None]:
        task = asyncio.current_task()
        assert task is not None
        self._busy.add(task)
        try:
            yield
        finally:
            self._busy.discard(task)

