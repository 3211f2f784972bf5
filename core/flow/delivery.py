"""What an adapter lends the runner (core.flow.runner) for its jobs, and how the runner delivers through it.

Exactly once, and its one corner: the outcome is stored before it is sent, and the delivery is marked
right after the send succeeds. A crash between those two writes (one SQLite commit) sends the answer
again on restart; everywhere else a restart neither loses nor repeats an answer. A send that fails is
tried again with backoff, up to MAX_DELIVERIES; one the platform can never take (Undeliverable) is given
up at once. While the model is down the user is told so once per job (a Notice), never for quiet work.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from core.flow.lanes import is_quiet
from core.store.jobs import MAX_DELIVERIES, Job, JobStore, Notice, Outcome, Undeliverable
from core.values import Audio, ProgressCallback
from core.words import messages

log = logging.getLogger(__name__)

Fetch = Callable[[Job], Awaitable[Audio]]
Deliver = Callable[[Job, Outcome], Awaitable[None]]
Attend = Callable[[Job], AbstractAsyncContextManager[ProgressCallback | None]]
AudioId = Callable[[Job], str | None]
Unsay = Callable[[Job, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Platform:
    """What an adapter lends the runner for its jobs."""

    fetch: Fetch                     # the job's audio, downloaded again from its file_ref
    deliver: Deliver                 # send a Reply, Failure or Notice; raise Undeliverable when hopeless
    attend: Attend | None = None     # around each attempt: typing, status message; yields a progress callback
    stream: bool = False             # ask for streamed partial answers (through the progress callback)
    audio_id: AudioId | None = None  # the platform's stable id of the job's audio, so a cached answer skips the fetch
    unsay: Unsay | None = None       # remove a status message (its noted progress_ref) a crashed process left


class JobDelivery:
    """Sends a job's outcome (retrying, recording each try) and the once-per-job word that the model is down."""

    def __init__(self, store: JobStore, backoff: float, redact: Callable[[str], str]) -> None:
        self.store = store
        self.backoff = backoff
        self._redact = redact

    async def tell_waiting(self, job: Job, platform: Platform) -> Job:
        """Once per job: the model is down, the answer will come when it is back."""
        if job.notified or is_quiet(job):
            return job
        try:
            await platform.deliver(job, Notice(messages.text(messages.MODEL_WAITING, job.lang)))
        except Exception as err:     # a courtesy: the next wait tries again
            log.warning("job %d: could not say the model is down: %s", job.id, self._redact(str(err)))
            return job
        return await self.store.mark_notified(job.id)

    async def deliver(self, job: Job, platform: Platform) -> None:
        while job.delivered is None and job.delivery_attempts < MAX_DELIVERIES:
            outcome = job.final_outcome()
            if outcome is not None:
                try:
                    await platform.deliver(job, outcome)
                except Undeliverable as err:
                    log.warning("job %d: can't be delivered: %s", job.id, self._redact(str(err)))
                    await self.store.delivery_failed(job.id, self._redact(str(err)), final=True)
                    return
                except Exception as err:
                    error = self._redact(f"{type(err).__name__}: {err}")
                    job = await self.store.delivery_failed(job.id, error)
                    log.warning("job %d: delivery failed (%s), try %d of %d", job.id, error,
                                job.delivery_attempts, MAX_DELIVERIES)
                    if job.delivery_attempts < MAX_DELIVERIES:
                        await asyncio.sleep(min(30.0, self.backoff * 2 ** (job.delivery_attempts - 1)))
                    continue
            # right after the send: a crash before this commit is the one way an answer goes out twice
            job = await self.store.mark_delivered(job.id)
