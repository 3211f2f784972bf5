"""Events a platform may deliver again (Slack retries an event it saw no ack for; a restart may come between):
each is handled once, by its event id (core.seen_events).

An event is claimed once handled, not before: if the process dies first, the retry gets through, and a job
the event already became is known by its key, so it can't be answered twice."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from .seen_events import SeenEvents

log = logging.getLogger(__name__)


class Redeliveries:
    def __init__(self, events: SeenEvents, platform: str) -> None:
        self.events, self.platform = events, platform

    async def first(self, event_id: object) -> bool:
        """False for an event already handled; True for a new one (or one without an id)."""
        if not event_id or not await self.events.seen(self.platform, str(event_id)):
            return True
        log.info("skipping repeated delivery of %s", event_id)
        return False

    @contextlib.asynccontextmanager
    async def handling(self, event_id: object) -> AsyncIterator[None]:
        """Around handling an event: claimed when done, whatever happened."""
        try:
            yield
        finally:
            if event_id:
                await self.events.claim(self.platform, str(event_id))
