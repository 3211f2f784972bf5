"""The daily digests: when each chat's is due, and the scheduler that posts them (and runs the retention sweep).

One scheduler per adapter (`DigestService.start_schedule`), its state in the database, so a restart picks
up where it left off (a slot missed while down is posted once on start). Daily times are wall-clock times
in the chat's zone, so DST is followed. Processes sharing a PostgreSQL database take turns: one passes, the
others skip (and look again). `clock` is injectable, so tests move time instead of waiting for it.
"""
from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from datetime import time as dtime
from zoneinfo import ZoneInfo

from core.errors import EarshotError
from core.flow.digest_command import zone_of
from core.flow.digest_summary import Digest
from core.store.digest_store import ChatDigest, DigestStore
from core.values import ChatKey
from core.words.i18n import LANGUAGES, best_language

log = logging.getLogger(__name__)

TICK_SECONDS = 60.0               # the scheduler looks at least this often (a clock change is noticed)
PURGE_EVERY = 3600.0              # expired transcripts are deleted this often

Post = Callable[[ChatKey, str], Awaitable[None]]     # the adapter posts a scheduled digest in a chat
Scheduled = Callable[[ChatKey], Awaitable[Digest]]   # the digest since the last one, not marked (posting marks)
Purge = Callable[[], Awaitable[int]]                 # the retention sweep (core.flow.retention)


def _at(day: date, daily: str, zone: ZoneInfo) -> float:
    hour, minute = (int(x) for x in daily.split(":"))
    return datetime.combine(day, dtime(hour, minute), tzinfo=zone).timestamp()


def last_slot(daily: str, tz: str, now: float) -> float:
    """The latest daily HH:MM in the zone at or before `now` (wall-clock time, so DST is followed)."""
    zone = zone_of(tz) or ZoneInfo("UTC")
    today = datetime.fromtimestamp(now, zone).date()
    at = _at(today, daily, zone)
    return at if at <= now else _at(today - timedelta(days=1), daily, zone)


def next_slot(daily: str, tz: str, now: float) -> float:
    """The first daily HH:MM in the zone after `now`."""
    zone = zone_of(tz) or ZoneInfo("UTC")
    today = datetime.fromtimestamp(now, zone).date()
    at = _at(today, daily, zone)
    return at if at > now else _at(today + timedelta(days=1), daily, zone)


def first_day(when: datetime, lang: str | None) -> str:
    """The day the first daily digest comes, as the chat's language writes a short date ("Thu 26 Nov")."""
    code = best_language(lang)
    if code == "en":
        return when.strftime("%a %d %b")
    from babel.dates import format_skeleton  # only when a chat speaks another language
    return format_skeleton("MMMEd", when, locale=LANGUAGES[code].catalog)


class DigestSchedule:
    """Posts each chat's daily digest when it is due, and purges expired rows every PURGE_EVERY."""

    def __init__(self, store: DigestStore, scheduled: Scheduled, purge: Purge, clock: Callable[[], float]) -> None:
        self.store = store
        self.scheduled = scheduled
        self.purge = purge
        self.clock = clock
        self._schedulers: list[asyncio.Task[None]] = []
        self._wakes: list[asyncio.Event] = []
        self._last_purge = -math.inf

    async def aclose(self) -> None:
        """Stop the schedulers."""
        tasks = list(self._schedulers)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._schedulers.clear()

    def start(self, platform: str, post: Post) -> None:
        """Post each chat's daily digest through `post(chat, text)`, and purge expired transcripts,
        until aclose(). State lives in SQLite, so a restart picks up where it left off (a slot missed
        while down is posted once on start)."""
        wake = asyncio.Event()
        self._wakes.append(wake)
        self._schedulers.append(asyncio.create_task(self._run_schedule(platform, post, wake),
                                                    name=f"earshot-digests-{platform}"))

    def wake(self) -> None:
        """Look at the schedule now (a schedule changed, or a test moved the clock)."""
        for event in self._wakes:
            event.set()

    async def _run_schedule(self, platform: str, post: Post, wake: asyncio.Event) -> None:
        while True:
            wake.clear()
            due: float | None = None
            try:
                due = await self.tick(platform, post)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the digest schedule failed; trying again in a minute")
            wait = TICK_SECONDS if due is None else min(TICK_SECONDS, max(0.0, due - self.clock()))
            try:
                await asyncio.wait_for(wake.wait(), wait)
            except TimeoutError:
                pass

    async def tick(self, platform: str, post: Post) -> float | None:
        """One pass: purge if it's time, post the digests that are due. Returns when the next one is due.
        Processes sharing a PostgreSQL database take turns: one passes, the others skip (and look again)."""
        async with self.store.exclusive(f"digests:{platform}") as mine:
            if not mine:
                return None
            return await self._tick(platform, post)

    async def _tick(self, platform: str, post: Post) -> float | None:
        now = self.clock()
        if now - self._last_purge >= PURGE_EVERY:
            await self.purge()
            self._last_purge = now
        due: float | None = None
        for chat in await self.store.scheduled(platform):
            if zone_of(chat.tz) is None:
                continue
            slot = last_slot(chat.daily, chat.tz, now)
            if slot > max(chat.last_scheduled, chat.scheduled_since):
                await self._post(chat, slot, post)
            upcoming = next_slot(chat.daily, chat.tz, now)
            due = upcoming if due is None else min(due, upcoming)
        return due

    async def _post(self, chat: ChatDigest, slot: float, post: Post) -> None:
        key = ChatKey(chat.platform, chat.chat_id)
        try:
            digest = await self.scheduled(key)
            if digest.notes:     # a quiet day posts nothing rather than "nothing to sum up" every day
                await post(chat.key, digest.text)
                await self.store.update(chat.platform, chat.chat_id, self.clock(), last_digest=digest.until,
                                        last_note=digest.last_note)
        except asyncio.CancelledError:
            raise
        except EarshotError as err:
            log.error("scheduled digest for %s %s failed: %s", chat.platform, chat.chat_id, err.operator_message)
        except Exception:
            log.exception("scheduled digest for %s %s failed", chat.platform, chat.chat_id)
        finally:
            # marked even when it failed: the notes stay for the next digest instead of a retry every minute
            await self.store.update(chat.platform, chat.chat_id, self.clock(), last_scheduled=slot)
