"""Events a platform may deliver again (Slack retries an event it saw no ack for; a restart may come between):
each is handled once, by its event id (core.store.seen_events).

An event is claimed once handled, not before: if the process dies first, the retry gets through, and a job
the event already became is known by its key, so it can't be answered twice.

Replicas may get the same event at the same moment (a webhook retried against another replica while the first
still works on it; a new Telegram poller fetching what the dead one was handling). `only` lets one handle it:
the others wait for its lock (core.store.election.SessionLocks, let go if its process dies) and then find it handled,
or take it over from a process that died."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from core.store.election import SessionLocks
from core.store.seen_events import SeenEvents

log = logging.getLogger(__name__)

WAIT_STEP = 0.2          # seconds between looks while another process handles the same event
WAIT_LONGEST = 120.0     # then handle it anyway: twice (caught by a job's key) rather than never


class Redeliveries:
    def __init__(self, events: SeenEvents, platform: str, locks: SessionLocks | None = None) -> None:
        self.events, self.platform, self.locks = events, platform, locks

    async def first(self, event_id: object) -> bool:
        """False for an event already handled; True for a new one (or one without an id)."""
        if not event_id or not await self.events.seen(self.platform, str(event_id)):
            return True
        log.info("skipping repeated delivery of %s", event_id)
        return False

    @contextlib.asynccontextmanager
    async def only(self, event_id: object) -> AsyncIterator[bool]:
        """Whether to handle the event (False: handled already, here or by another replica); claimed when the
        block ends without an exception. With `locks`, one process at a time handles it. An event without an
        id is always handled."""
        if not event_id:
            yield True
            return
        event = str(event_id)
        if self.locks is None:
            first = await self.first(event)
            yield first
            if first:
                await self.events.claim(self.platform, event)
            return
        name = f"{self.platform}:{event}"
        give_up = time.monotonic() + WAIT_LONGEST
        locked = False
        try:
            while True:
                # the lock first, then the look: a holder claims the event before it lets go, so what is seen
                # once locked is final (one look per event when nobody else has it)
                locked = await self.locks.try_lock(name)
                if not await self.first(event):
                    yield False
                    return
                if locked:
                    break
                if time.monotonic() > give_up:
                    log.warning("%s stayed in another process's hands for %.0f s: handling it here", name,
                                WAIT_LONGEST)
                    break
                await asyncio.sleep(WAIT_STEP)
            # locked (or given up on waiting), and not handled yet
            yield True
            await self.events.claim(self.platform, event)
        finally:
            if locked:
                await self.locks.unlock(name)
