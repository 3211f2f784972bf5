"""The database every store shares: one SQLite file (the default), or PostgreSQL when replicas share work.

Stores speak one small async API, the same on both engines: `await db.fetch(sql, *args)` (rows as tuples),
`await db.fetchone(...)`, `await db.execute(...)` (the row count), `await db.execute_returning(...)` (the rows
an INSERT/UPDATE … RETURNING gives, committed), and `async with db.transaction() as tx` (fetch, fetchone and
execute on `tx`, committed together). SQL is plain and portable: `?` placeholders (translated
for psycopg), `ON CONFLICT`, `RETURNING`, no engine-only helpers.

SQLite: all work runs on one dedicated thread (sqlite3 connections are bound to the thread that made them)
and writes go one at a time (an asyncio lock, then BEGIN IMMEDIATE); WAL and a busy timeout make several
processes (the Telegram bot, the Slack app, the CLI) safe on one file. PostgreSQL: core.store.pg, an async pool.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from core.errors import StorageError
from core.store import pg
from core.store.schema import load_sqlite_utils, sqlite_migrations, sqlite_pending
from core.words import messages

if TYPE_CHECKING:
    import sqlite_utils

T = TypeVar("T")
log = logging.getLogger(__name__)


Row = tuple[Any, ...]


class Queries(Protocol):
    """What a store runs its SQL through: the Database itself, or a transaction of it."""

    async def fetch(self, sql: str, *args: object) -> list[Row]: ...

    async def fetchone(self, sql: str, *args: object) -> Row | None: ...

    async def execute(self, sql: str, *args: object) -> int: ...


class _SqliteTx:
    """Statements inside an SQLite transaction: on the database's thread, the write lock already held.

    BEGIN IMMEDIATE runs in the same hop to the database's thread as the first statement (each hop costs the
    bot more than the SQL), and a transaction that runs nothing costs nothing."""

    def __init__(self, owner: Database) -> None:
        self._owner = owner
        self.started = False        # a BEGIN was sent to the database's thread (it may not have run yet)

    async def _run(self, step: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._owner.connection
        if self.started:
            return await self._owner.run(step, conn)
        self.started = True

        def begun(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            return step(conn)
        return await self._owner.run(begun, conn)

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        return await self._run(lambda conn: conn.execute(sql, args).fetchall())

    async def fetchone(self, sql: str, *args: object) -> Row | None:
        return await self._run(lambda conn: conn.execute(sql, args).fetchone())

    async def execute(self, sql: str, *args: object) -> int:
        return await self._run(lambda conn: conn.execute(sql, args).rowcount)

    async def end(self, how: str) -> None:
        """COMMIT or ROLLBACK, when a BEGIN was sent: looked at on the thread, after everything sent before,
        so a transaction whose first hop was cancelled on the way is still ended."""
        if not self.started:
            return

        def end(conn: sqlite3.Connection) -> None:
            if conn.in_transaction:
                conn.execute(how)
        await asyncio.shield(self._owner.run(end, self._owner.connection))


class Database:
    """The store every other store shares: an SQLite file, or a PostgreSQL database (`postgresql://…`).

    Stores keep their own SQL and reach the database through fetch/fetchone/execute/transaction (module
    docstring). On SQLite, `read(fn)`, `write(fn)` and `run(fn)` still hand fn the sqlite-utils database on its
    thread (for tools and tests that look inside); PostgreSQL has no such thing."""

    def __init__(self, path: Path | str) -> None:
        self.url: str | None = str(path) if pg.is_url(path) else None
        self.path: Path | None = None if self.url else Path(path)     # the SQLite file; None on PostgreSQL
        self._pg = pg.PgEngine(self.url) if self.url else None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="earshot-db")
        self._conn: sqlite3.Connection | None = None
        self._db: sqlite_utils.Database | None = None     # over _conn, made when first asked for (`db`)
        self._writing: asyncio.Lock | None = None
        self.hops = 0       # calls run on the SQLite thread so far: each is a thread hop (see `watch`)

    @property
    def engine(self) -> str:
        return "postgresql" if self._pg else "sqlite"

    @property
    def where(self) -> str:
        """Where the data is, safe to show (a connection string without its password)."""
        return pg.masked(self.url) if self.url else str(self.path)

    async def open(self) -> None:
        """Open (and create or migrate) the file; StorageError with what to fix when it can't be used."""
        if self._pg is not None:
            await self._open_pg()
            return
        try:
            await self.run(self._open)
        except (OSError, sqlite3.Error) as err:
            await self._close_sqlite()
            reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
            if isinstance(err, sqlite3.DatabaseError) and "not a database" in str(err):
                reason = "the file is not an SQLite database (damaged, or another program's)"
            raise StorageError(messages.DB_UNUSABLE.format(path=self.path, reason=reason)) from None

    def _open(self) -> None:
        file = self.path
        assert file is not None
        file.parent.mkdir(parents=True, exist_ok=True)
        # private: it holds what people said (a file made earlier, or by another tool, is tightened too)
        os.close(os.open(file, os.O_CREAT | os.O_RDWR, 0o600))
        for path in (file, Path(f"{file}-wal"), Path(f"{file}-shm")):
            # another process closing the file last deletes -wal and -shm under our feet: fine
            try:
                if path.stat().st_mode & 0o077:
                    os.chmod(path, 0o600)
            except FileNotFoundError:
                pass
            except PermissionError:     # another user's file: usable, but say it is readable by others
                log.warning("could not make %s private (mode 0600): it belongs to another user", path)
        self._conn = conn = sqlite3.connect(file, timeout=30, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA recursive_triggers = on")      # as sqlite-utils sets it
        # set in one statement (a no-op when WAL already): reading the mode first left a window in which
        # processes opening a new file together could find it locked
        conn.execute("PRAGMA journal_mode = wal")
        # the write lock first, waiting for it as long as the busy timeout: two processes opening a fresh
        # or older file at once would otherwise both start migrating and one fail with "database is locked"
        with self._write():
            if sqlite_pending(conn):      # sqlite-utils is loaded only to apply what the file lacks
                sqlite_migrations().apply(self.db)

    async def pending_migrations(self) -> list[str]:
        """Migrations this earshot knows that the database lacks."""
        if self._pg is not None:
            return await self._pg.pending()
        return await self.run(lambda: [m.name for m in sqlite_migrations().pending(self.db)])

    async def _open_pg(self) -> None:
        assert self._pg is not None
        if pg.unescaped_at(self.url or ""):
            raise StorageError(messages.DB_POSTGRES_UNUSABLE.format(
                where=self.where, reason="the user name or password holds a bare '@': write it as %40"))
        try:
            await self._pg.open()
        except Exception as err:
            # psycopg's messages may quote the connection string: say what failed, never the password
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            for text in filter(None, (self.url, *pg.secret_parts(self.url or ""))):
                reason = reason.replace(text, "***")
            raise StorageError(messages.DB_POSTGRES_UNUSABLE.format(where=self.where, reason=reason[:300])) from None

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.close()
        await self._close_sqlite()
        self._executor.shutdown(wait=True)

    async def _close_sqlite(self) -> None:
        if self._conn is not None:
            await self.run(self._conn.close)
            self._conn = self._db = None

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """fn(*args) on the database's thread (for tools and tests that look inside)."""
        self.hops += 1
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def watch(self, statement: Callable[[str], object] | None) -> None:
        """SQLite: call statement(sql) for every statement the connection runs from now on (BEGIN and COMMIT
        included; None stops), on the database's thread. With `hops`, what a note costs the database is
        counted (tests pin it, so a change that adds round trips shows). PostgreSQL: nothing to watch."""
        if self._pg is None:
            await self.run(self.connection.set_trace_callback, statement)

    @contextmanager
    def _write(self) -> Iterator[None]:
        # IMMEDIATE takes the write lock up front: a deferred transaction that reads first can't
        # wait for another process's lock and fails at once with "database is locked"
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")

    @property
    def connection(self) -> sqlite3.Connection:
        """The SQLite connection (on the database's thread), as the stores' calls use it."""
        if self._conn is None:
            raise RuntimeError("the database is not open")
        return self._conn

    @property
    def db(self) -> sqlite_utils.Database:
        """The sqlite-utils database over the same connection, for migrations and for tools and tests that
        look inside; sqlite-utils is imported on first use. Made without running anything on the connection
        (this may be read on any thread; the connection is set up in _open), and earshot has no plugins."""
        if self._db is None:
            sqlite_utils = load_sqlite_utils()
            self._db = sqlite_utils.Database(self.connection, recursive_triggers=False, execute_plugins=False)
        return self._db

    # --- errors ----------------------------------------------------------------------------------
    def storage_error(self, err: BaseException) -> StorageError | None:
        """The database's own error (a damaged table or index, a full disk, a lost server) as one StorageError
        naming the file (or the server, without its password) and what to do; None for any other error."""
        if isinstance(err, sqlite3.DatabaseError):
            reason = str(err) or type(err).__name__
            return StorageError(messages.DB_DAMAGED.format(path=self.path, reason=reason))
        if self._pg is not None and type(err).__module__.split(".")[0] in ("psycopg", "psycopg_pool"):
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            for text in filter(None, (self.url, *pg.secret_parts(self.url or ""))):
                reason = reason.replace(text, "***")
            return StorageError(messages.DB_POSTGRES_FAILED.format(where=self.where, reason=reason[:300]))
        return None

    @contextmanager
    def _said_plainly(self) -> Iterator[None]:
        """Around every call stores make: the engine's errors become StorageError (logged once, with the
        traceback, for the operator), so no caller meets sqlite3 or psycopg exceptions."""
        try:
            yield
        except Exception as err:
            plain = self.storage_error(err)
            if plain is None:
                raise
            log.error("database error: %s", plain.operator_message, exc_info=True)
            raise plain from None

    # --- what stores use ---------------------------------------------------------------------------
    async def fetch(self, sql: str, *args: object) -> list[Row]:
        with self._said_plainly():
            if self._pg is not None:
                async with self._pg.connection() as tx:
                    return await tx.fetch(sql, *args)
            async with self._write_lock():     # not inside another's open transaction: only committed rows
                return await self.run(lambda: self.connection.execute(sql, args).fetchall())

    async def fetchone(self, sql: str, *args: object) -> Row | None:
        with self._said_plainly():
            if self._pg is not None:
                async with self._pg.connection() as tx:
                    return await tx.fetchone(sql, *args)
            async with self._write_lock():
                return await self.run(lambda: self.connection.execute(sql, args).fetchone())

    async def execute(self, sql: str, *args: object) -> int:
        """One statement, committed; the rows it touched."""
        with self._said_plainly():
            if self._pg is not None:
                async with self._pg.connection() as tx:
                    return await tx.execute(sql, *args)
            return await self._written(lambda: self.connection.execute(sql, args).rowcount)

    async def execute_returning(self, sql: str, *args: object) -> list[Row]:
        """One statement that changes rows and returns some (`RETURNING`), committed; its rows. On SQLite one
        hop to the database's thread, BEGIN and COMMIT included."""
        with self._said_plainly():
            if self._pg is not None:
                async with self._pg.connection() as tx:
                    return await tx.fetch(sql, *args)
            return await self._written(lambda: self.connection.execute(sql, args).fetchall())

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Queries]:
        """Statements committed together (or not at all); on SQLite the write lock is taken first."""
        with self._said_plainly():
            async with self._transaction() as tx:
                yield tx

    def _transaction(self) -> AbstractAsyncContextManager[Queries]:
        return self._pg_transaction() if self._pg is not None else self._sqlite_transaction()

    @asynccontextmanager
    async def _pg_transaction(self) -> AsyncIterator[Queries]:
        assert self._pg is not None
        async with self._pg.transaction() as tx:
            yield tx

    @asynccontextmanager
    async def _sqlite_transaction(self) -> AsyncIterator[Queries]:
        async with self._write_lock():
            tx = _SqliteTx(self)
            try:
                yield tx
            except BaseException:
                await tx.end("ROLLBACK")
                raise
            await tx.end("COMMIT")

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        """True when this process, alone among those on the database, may do the work called `name` for the
        block; False when another holds it now (skip the work: that one does it). PostgreSQL: a transaction-
        scoped advisory lock, let go with the block (or when its holder dies). SQLite: always True (one
        process per platform shares a file)."""
        if self._pg is None:
            yield True
            return
        async with self._pg.transaction() as tx:
            row = await tx.fetchone("SELECT pg_try_advisory_xact_lock(?)", pg.lock_key(name))
            yield bool(row and row[0])

    async def lock(self, tx: Queries, name: str) -> None:
        """Inside `transaction()`: wait until no other process holds `name`, then hold it until the transaction
        ends. PostgreSQL: a transaction-scoped advisory lock; SQLite: nothing to do (its write transactions
        already go one at a time)."""
        if self._pg is not None:
            await tx.execute("SELECT pg_advisory_xact_lock(?)", pg.lock_key(name))

    @asynccontextmanager
    async def _write_lock(self) -> AsyncIterator[None]:
        # one writer at a time on the one connection: a transaction spans awaits, and another write must
        # not start (or land) inside it
        if self._writing is None:
            self._writing = asyncio.Lock()
        async with self._writing:
            yield

    def _sqlite_only(self, what: str) -> None:
        if self._pg is not None:
            raise RuntimeError(f"{what} is for SQLite; use fetch/execute/transaction")

    async def read(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        """fn(db) on the store's thread."""
        self._sqlite_only("read(fn)")
        with self._said_plainly():
            return await self.run(lambda: fn(self.db))

    async def write(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        """fn(db) on the store's thread, in one write transaction."""
        self._sqlite_only("write(fn)")
        with self._said_plainly():
            return await self._written(lambda: fn(self.db))

    async def _written(self, fn: Callable[[], T]) -> T:
        def run() -> T:
            with self._write():
                return fn()
        async with self._write_lock():
            return await self.run(run)

    async def forget_chat(self, platform: str, chat_id: str) -> int:
        """Delete every row of every table that belongs to the chat (all its threads); the count deleted.

        Tables are found by their columns, so tables added later are covered without a change here.
        Freed pages are overwritten (secure_delete), so the words don't linger in the file.
        """
        if self._pg is not None:
            deleted = 0
            tables = await self._pg.chat_tables()
            async with self.transaction() as tx:
                for name, has_platform in tables:
                    where, args = "chat_id = ?", [chat_id]
                    if has_platform:
                        where, args = where + " AND platform = ?", args + [platform]
                    deleted += await tx.execute(f"DELETE FROM {pg.safe_name(name)} WHERE {where}", *args)
            return deleted

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
        async with self._write_lock():
            return await self.run(forget)

    async def prune(self, history_before: float, events_before: float) -> dict[str, int]:
        """The retention sweep's entry point (core.flow.retention runs it hourly): delete turns and latest-audio notes
        older than `history_before`, and seen events older than `events_before` (they only recognise
        redeliveries and say a refusal once a day); counts by table."""
        async with self.transaction() as tx:
            return {
                "turns": await tx.execute("DELETE FROM turns WHERE created < ?", history_before),
                "recent_audio": await tx.execute("DELETE FROM recent_audio WHERE created < ?", history_before),
                "seen_events": await tx.execute("DELETE FROM seen_events WHERE created < ?", events_before),
            }

    # --- turns ----------------------------------------------------------------------------
