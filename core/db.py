"""The database: one SQLite file shared by every store, through sqlite-utils.

All database work runs on one dedicated thread: sqlite3 connections are bound to the thread that
made them, and one writer per process keeps ordering simple. WAL and a busy timeout make several
processes (the Telegram bot, the Slack app, the CLI) safe on one file.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import sqlite_utils

from . import messages
from .errors import StorageError
from .schema import migrations

T = TypeVar("T")
log = logging.getLogger(__name__)


class Database:
    """The SQLite file: its connection, its migrations, and the one thread all work on it runs on.

    Stores keep their own SQL and reach the file only through `read(fn)` and `write(fn)`: fn(conn) runs off
    the event loop, `write` inside one transaction that takes the write lock first (BEGIN IMMEDIATE).
    Keep that SQL plain (`?` parameters, no engine-only helpers where plain SQL works), so another engine
    can stand behind the same two calls."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="earshot-db")
        self._db: sqlite_utils.Database | None = None

    async def open(self) -> None:
        """Open (and create or migrate) the file; StorageError with what to fix when it can't be used."""
        try:
            await self.run(self._open)
        except (OSError, sqlite3.Error) as err:
            if self._db is not None:
                await self.run(self._db.close)
                self._db = None
            reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
            if isinstance(err, sqlite3.DatabaseError) and "not a database" in str(err):
                reason = "the file is not an SQLite database (damaged, or another program's)"
            raise StorageError(messages.DB_UNUSABLE.format(path=self.path, reason=reason)) from None

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # private: it holds what people said (a file made earlier, or by another tool, is tightened too)
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        for path in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
            # another process closing the file last deletes -wal and -shm under our feet: fine
            try:
                if path.stat().st_mode & 0o077:
                    os.chmod(path, 0o600)
            except FileNotFoundError:
                pass
            except PermissionError:     # another user's file: usable, but say it is readable by others
                log.warning("could not make %s private (mode 0600): it belongs to another user", path)
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db = sqlite_utils.Database(conn)
        self._db.execute("PRAGMA busy_timeout = 30000")
        self._db.enable_wal()
        # the write lock first, waiting for it as long as the busy timeout: two processes opening a fresh
        # or older file at once would otherwise both start migrating and one fail with "database is locked"
        with self._write():
            migrations.apply(self._db)

    async def close(self) -> None:
        if self._db is not None:
            await self.run(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """fn(*args) on the database's thread (for tools and tests that look inside)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @contextmanager
    def _write(self) -> Iterator[None]:
        # IMMEDIATE takes the write lock up front: a deferred transaction that reads first can't
        # wait for another process's lock and fails at once with "database is locked"
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @property
    def db(self) -> sqlite_utils.Database:
        if self._db is None:
            raise RuntimeError("the database is not open")
        return self._db

    # --- what stores use ---------------------------------------------------------------------------
    async def read(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        """fn(db) on the store's thread."""
        return await self.run(lambda: fn(self.db))

    async def write(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        """fn(db) on the store's thread, in one write transaction."""
        def run() -> T:
            with self._write():
                return fn(self.db)
        return await self.run(run)

    async def forget_chat(self, platform: str, chat_id: str) -> int:
        """Delete every row of every table that belongs to the chat (all its threads); the count deleted.

        Tables are found by their columns, so tables added later are covered without a change here.
        Freed pages are overwritten (secure_delete), so the words don't linger in the file.
        """
        def forget() -> int:
            self.db.execute("PRAGMA secure_delete = ON")
            deleted = 0
            with self._write():
                for table in self.db.tables:
                    columns = set(table.columns_dict)
                    if "chat_id" not in columns:
                        continue
                    where, args = "chat_id = ?", [chat_id]
                    if "platform" in columns:
                        where, args = where + " AND platform = ?", args + [platform]
                    deleted += self.db.execute(f"DELETE FROM [{table.name}] WHERE {where}", args).rowcount
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")   # the WAL held the deleted rows too
            return deleted
        return await self.run(forget)

    async def prune(self, history_before: float, events_before: float) -> dict[str, int]:
        """The retention sweep's entry point (core.digest runs it hourly): delete turns and latest-audio notes
        older than `history_before`, and seen events older than `events_before` (they only recognise
        redeliveries and say a refusal once a day); counts by table."""
        def prune() -> dict[str, int]:
            with self._write():
                return {
                    "turns": self.db.execute("DELETE FROM turns WHERE created < ?", [history_before]).rowcount,
                    "recent_audio": self.db.execute("DELETE FROM recent_audio WHERE created < ?",
                                                    [history_before]).rowcount,
                    "seen_events": self.db.execute("DELETE FROM seen_events WHERE created < ?",
                                                   [events_before]).rowcount,
                }
        return await self.run(prune)

    # --- turns ----------------------------------------------------------------------------
