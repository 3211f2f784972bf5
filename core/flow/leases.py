"""Holding jobs among several processes: who holds a job, and keeping hold of it while it runs.

Several processes on one database (replicas on PostgreSQL) share the jobs safely; one process on SQLite
works exactly as before, through the same steps:
- Each runner has an owner id (host:pid:random). `_run` starts by *taking* the job (JobStore.take): it
  succeeds only if the job is still to do or to deliver, nobody else holds an unexpired lease on it
  (`EARSHOT_JOB_LEASE`, 30 s), no other job of its chat lane is held elsewhere, and no older job of its
  lane is still open (the chat's lane: its answers; voice notes heard for digests have a lane of their
  own). So at most one job of a chat runs anywhere, in the order the jobs were stored, whichever replica
  stored them. This process's own queue still orders its own turns (a handler that stored its job late
  keeps its place). A take that fails drops the job from this process's queue: another replica has it,
  or it waits behind an older job held elsewhere and is found again by the sweeper.
- While it holds a job — waiting out an outage, attempts, delivery — a keeper renews its leases every
  third of the lease. A lease it can't renew means another process took the job over (this one was cut
  off for a whole lease): its work is cancelled, and nothing is written or delivered for it; every write
  is fenced by the owner anyway (JobLost). When `_run` ends, and at stop(), the leases are released, so
  another process may take what is left at once.
- A sweeper (every second, and whenever a chat's queue runs empty) schedules jobs of this process's
  platforms that nobody works on: let go by a replica that stopped, held by one whose lease ran out (one
  fault more if it was mid-work), or never taken and untouched for a while (their replica died first, or
  they waited behind an older job held elsewhere).
- A process takes on at most twice as many jobs as it may make model calls (`hands`): the rest of a burst
  it stored (the Telegram poller stores every update) is left to replicas with hands free, whose sweepers
  find it untouched.
- The same message stored by two replicas (Slack delivering one event to both, a retry) is one job
  (unique per platform and key); only the replica that takes it runs and delivers it.
- start(): SQLite serves each platform from one process, so a restart releases what its previous process
  held and resumes at once; on PostgreSQL a dead replica's leases run out by themselves (a live one's jobs
  are never stolen). Failover takes what is left of the dead replica's lease (two thirds of it to all of
  it, as it renewed every third), then a sweep.
- A job on which earshot itself failed (a bug, not the model or the user) is left held by its process:
  tried again on that process's next start, or by another replica once its lease runs out, never in a loop.
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Callable

from core.store.jobs import JobStore

log = logging.getLogger(__name__)


def owner_id() -> str:
    """Who holds a job: this host and process, and a random part for this runner (a restart is someone else)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Leases:
    """The jobs this process holds (taken, leased) and the workers running them; `keeper` renews the leases."""

    def __init__(self, store: JobStore, lease: float, redact: Callable[[str], str]) -> None:
        self.store = store
        self.lease = lease
        self._redact = redact
        self._holding: dict[int, asyncio.Task[None]] = {}  # jobs taken (leased) -> the worker running them
        self._lost: set[int] = set()                      # taken over by another process: being cancelled

    def hold(self, job_id: int, worker: asyncio.Task[None]) -> None:
        self._holding[job_id] = worker

    def let_go(self, job_id: int) -> None:
        del self._holding[job_id]

    def lost(self, job_id: int) -> bool:
        """True while the job, taken over by another process, is being cancelled here."""
        return job_id in self._lost

    def forget_lost(self, job_id: int) -> bool:
        """True if the keeper cancelled this worker's job (taken over elsewhere): that cancel is spent."""
        if job_id not in self._lost:
            return False
        self._lost.discard(job_id)
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            task.uncancel()
        return True

    async def release(self, job_id: int) -> None:
        """Let the job go at once, so another process may take what is left of it."""
        try:
            await self.store.release(job_id)
        except Exception as err:
            log.warning("job %d: could not let it go (its lease will run out): %s", job_id,
                        self._redact(str(err)))

    async def release_all(self) -> None:
        """Whatever is still held goes back at once: another replica may take it."""
        try:
            await self.store.release_all()
        except Exception as err:
            log.warning("could not let go of this process's jobs (their leases will run out): %s",
                        self._redact(str(err)))

    async def keeper(self) -> None:
        """Renew the leases of the jobs this process holds; cancel the work on any another process took over."""
        while True:
            await asyncio.sleep(self.lease / 3)
            held = dict(self._holding)
            if not held:
                continue
            try:
                kept = await self.store.keep(held, self.lease)
            except Exception as err:     # the database is unreachable: try again; the fences still hold
                log.warning("could not renew this process's hold on %d job(s): %s", len(held),
                            self._redact(str(err)))
                continue
            for job_id, worker in held.items():
                if job_id not in kept and self._holding.get(job_id) is worker:
                    self._lost.add(job_id)
                    worker.cancel()
