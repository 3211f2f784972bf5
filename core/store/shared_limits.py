"""The rate limit and the budgets' in-flight holds kept in the database, so they hold across replicas.

One process (SQLite) keeps both in memory (core.flow.access). Replicas on one PostgreSQL database each see only their
own memory: a user sending to several replicas (webhooks behind a load balancer, jobs claimed by whichever replica
is free) would get the rate limit once per replica, and a burst of long recordings could pass every replica's
budget check on the same numbers. So on PostgreSQL:

- `RateHits`: each counted request is a row (platform, subject, at); a request is refused while the subject has
  `per_minute` rows in the last 60 s (a sliding window). Checking and counting happen in one transaction under
  an advisory lock on the subject, so two replicas can't both let the last request through. A subject's rows
  older than the window go at its next request; the hourly sweep deletes the rest.
- `SpendHolds`: what each request in flight is expected to cost (or has cost so far, if more), one row per
  request, renewed as the model answers and deleted when it ends. A replica killed mid-request leaves its row;
  it stops counting at `expires` (HOLD_SECONDS after the last renewal), so a crash can't block a user for long.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from core.store.db import Database

WINDOW = 60.0            # the rate limit's sliding window, seconds
HOLD_SECONDS = 900.0     # an in-flight hold not renewed for this long belonged to a dead process


class RateHits:
    """At most `per_minute` requests in any 60 s per (platform, subject), counted in the database."""

    def __init__(self, db: Database, per_minute: int, clock: Callable[[], float] = time.time) -> None:
        self.db, self.per_minute, self._clock = db, per_minute, clock

    async def take(self, key: tuple[str, str], *, count: bool) -> float:
        """Seconds until `key` may make another request (0: it may now, and with `count` this one is counted)."""
        if not self.per_minute:
            return 0.0
        platform, subject = key
        now = self._clock()
        async with self.db.transaction() as tx:
            await self.db.lock(tx, f"rate:{platform}:{subject}")
            await tx.execute("DELETE FROM rate_hits WHERE platform = ? AND subject = ? AND at <= ?",
                             platform, subject, now - WINDOW)
            hits = await tx.fetch("SELECT at FROM rate_hits WHERE platform = ? AND subject = ? ORDER BY at LIMIT ?",
                                  platform, subject, self.per_minute)
            if len(hits) >= self.per_minute:
                return max(float(hits[0][0]) + WINDOW - now, 0.001)
            if count:
                await tx.execute("INSERT INTO rate_hits (platform, subject, at) VALUES (?, ?, ?)",
                                 platform, subject, now)
        return 0.0


class SpendHolds:
    """Tokens held by requests in flight on every replica, by id (one row per request)."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db, self._clock = db, clock

    async def hold(self, hold_id: str, platform: str, chat_id: str, user_id: str | None, tokens: int) -> None:
        """Set (or renew) what a request in flight counts."""
        await self.db.execute(
            "INSERT INTO spend_holds (id, platform, chat_id, user_id, tokens, expires) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET tokens = excluded.tokens, expires = excluded.expires",
            hold_id, platform, chat_id, user_id or "", tokens, self._clock() + HOLD_SECONDS)

    async def release(self, hold_id: str) -> None:
        await self.db.execute("DELETE FROM spend_holds WHERE id = ?", hold_id)

    async def held(self, platform: str, chat_id: str, user_id: str | None, *,
                   exclude: str | None = None) -> tuple[int, int, int]:
        """Tokens held now: (by the user on this platform, in the chat, by everyone), leaving out `exclude`."""
        row = await self.db.fetchone(
            "SELECT COALESCE(SUM(CASE WHEN platform = ? AND user_id = ? AND user_id != '' THEN tokens END), 0), "
            "COALESCE(SUM(CASE WHEN platform = ? AND chat_id = ? THEN tokens END), 0), COALESCE(SUM(tokens), 0) "
            "FROM spend_holds WHERE expires > ? AND id != ?",
            platform, user_id or "", platform, chat_id, self._clock(), exclude or "")
        return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)


async def prune(db: Database, now: float) -> dict[str, int]:
    """Rate hits outside the window and holds of processes that died: counts by table (the hourly sweep)."""
    async with db.transaction() as tx:
        return {"rate_hits": await tx.execute("DELETE FROM rate_hits WHERE at <= ?", now - WINDOW),
                "spend_holds": await tx.execute("DELETE FROM spend_holds WHERE expires <= ?", now)}
