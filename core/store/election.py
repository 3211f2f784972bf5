"""One process among those sharing the database does a piece of work alone, and another takes over when it dies.

Telegram lets one consumer call getUpdates per bot, so replicas on one PostgreSQL database elect one poller;
every replica still works jobs. PostgreSQL: a session-level `pg_try_advisory_lock` held on a connection of its
own (not the pool's): the lock lives as long as that session, so when the leader dies its connection closes,
the server lets the lock go, and another process's next try (every `retry` seconds) wins it. The leader checks
its session as often; if the session is gone (the database restarted, the network broke) it stops leading at
once and campaigns again. SQLite: one process per platform shares a file, so it always leads.

`SessionLocks` are the same kind of lock for short work any replica may do but only one at a time (handling one
Telegram update delivered to two replicas at once): held while a process does it, let go by a process that dies.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from core.store import pg
from core.store.db import Database

log = logging.getLogger(__name__)

RETRY = 2.0        # seconds between tries for the lock, and between checks that the leader still holds it


async def _connect(url: str) -> Any:
    """A connection of its own, outside the pool: its session holds the locks."""
    import psycopg
    return await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=10)


class Election:
    """`leading` while this process holds the work called `name`; `start()` campaigns, `stop()` steps down."""

    def __init__(self, db: Database, name: str, *, retry: float = RETRY) -> None:
        self.db, self.name, self.retry = db, name, retry
        self._elected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._conn: Any = None
        self._failing = False

    @property
    def leading(self) -> bool:
        return self._elected.is_set()

    def start(self) -> None:
        """Campaign in the background (idempotent); on SQLite, lead at once."""
        if self.db.url is None:
            self._elected.set()
            return
        if self._task is None:
            self._task = asyncio.create_task(self._campaign(), name=f"earshot-election-{self.name}")

    async def wait(self, timeout: float) -> bool:
        """Whether this process leads, waiting up to `timeout` seconds to be elected."""
        self.start()
        if not self.leading and timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._elected.wait(), timeout)
        return self.leading

    async def stop(self) -> None:
        """Step down: the lock goes with the session."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._hang_up()

    async def _campaign(self) -> None:
        key = pg.lock_key(f"leader:{self.name}")
        while True:
            try:
                async with asyncio.timeout(max(self.retry * 5, 10.0)):
                    if self._conn is None:
                        self._conn = await _connect(self.db.url or "")
                    if self.leading:
                        await self._conn.execute("SELECT 1")      # the session, and so the lock, still there
                    else:
                        cur = await self._conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                        row = await cur.fetchone()
                        if row and row[0]:
                            log.info("elected: this process does %s now", self.name)
                            self._elected.set()
            except asyncio.CancelledError:
                raise
            except Exception as err:           # psycopg's errors, OSError, a timeout: not leading until won again
                if self.leading:
                    log.warning("stopped doing %s: lost the database session (%s)", self.name, type(err).__name__)
                elif not self._failing:
                    log.warning("can't campaign to do %s: the database does not answer (%s); trying again every "
                                "%.0f s", self.name, type(err).__name__, self.retry)
                self._failing = True
                self._elected.clear()
                await self._hang_up()
                await asyncio.sleep(self.retry)
                continue
            self._failing = False
            await asyncio.sleep(self.retry)

    async def _hang_up(self) -> None:
        if self.db.url is not None:
            self._elected.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


class SessionLocks:
    """Named locks held by this process until `unlock` or its death (PostgreSQL: session-level advisory locks on
    a connection of their own; SQLite: one process, so a set in memory). Without the database they are granted,
    with a warning: work done twice is caught later (a job's key), work not done at all would not be."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._held: set[str] = set()
        self._conn: Any = None
        self._guard = asyncio.Lock()

    async def try_lock(self, name: str) -> bool:
        """True (and held) unless another holds `name` now."""
        if name in self._held:
            return False
        if self.db.url is not None:
            row = await self._query("SELECT pg_try_advisory_lock(%s)", name)
            if row is not None and not row[0]:
                return False
        self._held.add(name)
        return True

    async def unlock(self, name: str) -> None:
        if name in self._held:
            self._held.discard(name)
            if self.db.url is not None:
                await self._query("SELECT pg_advisory_unlock(%s)", name)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _query(self, sql: str, name: str) -> tuple[Any, ...] | None:
        try:
            async with asyncio.timeout(10.0):
                async with self._guard:
                    if self._conn is None or self._conn.closed:
                        self._conn = await _connect(self.db.url or "")
                    cur = await self._conn.execute(sql, (pg.lock_key(f"once:{name}"),))
                    return await cur.fetchone()
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.warning("could not lock %s (%s): going on without the lock", name, type(err).__name__)
            await self.close()
            return None
