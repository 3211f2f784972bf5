"""Platform events already handled (Slack redelivers; a restart may come between), kept across restarts."""
from __future__ import annotations

import time

from core.store.db import Database


class SeenEvents:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim(self, platform: str, event_id: str) -> bool:
        """True the first time an event id is seen, False after."""
        return await self.db.execute(
            "INSERT INTO seen_events (platform, event_id, created) VALUES (?, ?, ?) "
            "ON CONFLICT (platform, event_id) DO NOTHING", platform, event_id, time.time()) == 1

    async def seen(self, platform: str, event_id: str) -> bool:
        """Whether `claim` has recorded this event, without claiming it."""
        return await self.db.fetchone("SELECT 1 FROM seen_events WHERE platform = ? AND event_id = ?",
                                      platform, event_id) is not None

    async def claim_every(self, platform: str, event_id: str, seconds: float, now: float) -> bool:
        """True when the event wasn't claimed in the last `seconds` (and claims it now), False when it was."""
        return await self.db.execute(
            "INSERT INTO seen_events (platform, event_id, created) VALUES (?, ?, ?) "
            "ON CONFLICT (platform, event_id) DO UPDATE SET created = excluded.created "
            "WHERE seen_events.created <= ?", platform, event_id, now, now - seconds) == 1
