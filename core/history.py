"""Per-chat history, usage, recent audio and seen events, in SQLite through sqlite-utils.

All database work runs on one dedicated thread: sqlite3 connections are bound to the thread that
made them, and one writer per process keeps ordering simple. WAL and a busy timeout make several
processes (the Telegram bot, the Slack app, the CLI) safe on one file.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import sqlite_utils
from sqlite_utils.migrations import Migrations

from . import messages
from .errors import StorageError
from .models import ChatKey, Usage

T = TypeVar("T")
log = logging.getLogger(__name__)
migrations = Migrations("earshot")


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db.table("turns").create({
        "id": int, "platform": str, "chat_id": str, "thread_id": str, "user_id": str,
        "role": str, "text": str, "audio_seconds": float,
        "audio_tokens": int, "input_tokens": int, "output_tokens": int, "created": float,
    }, pk="id", not_null={"platform", "chat_id", "thread_id", "role", "text", "created"})
    db.table("turns").create_index(["platform", "chat_id", "thread_id", "id"])
    db.table("turns").create_index(["created"])
    db.table("recent_audio").create({"platform": str, "chat_id": str, "thread_id": str, "ref": str, "created": float},
                              pk=("platform", "chat_id", "thread_id"))
    db.table("seen_events").create({"platform": str, "event_id": str, "created": float}, pk=("platform", "event_id"))


@migrations()
def m002_digests(db: sqlite_utils.Database) -> None:
    """Group digests: which chats opted in and when to post, and the voice notes heard there."""
    db.table("digest_chats").create({
        "platform": str, "chat_id": str, "enabled": int, "daily": str, "tz": str, "post_thread": str,
        "scheduled_since": float, "last_scheduled": float, "last_digest": float, "last_note": int,
        "updated": float,
    }, pk=("platform", "chat_id"), not_null={"enabled"}, defaults={"enabled": 0, "daily": "", "tz": "UTC",
                                                               "post_thread": "", "last_note": 0})
    db.table("voice_notes").create({
        "id": int, "platform": str, "chat_id": str, "thread_id": str, "source_id": str, "user_id": str,
        "user_name": str, "sent": float, "arrived": float, "seconds": float, "text": str, "created": float,
    }, pk="id", not_null={"platform", "chat_id", "sent", "text", "created"})
    db.table("voice_notes").create_index(["platform", "chat_id", "sent"])
    db.table("voice_notes").create_index(["platform", "chat_id", "source_id"], unique=True)
    db.table("voice_notes").create_index(["created"])


@migrations()
def m003_usage_by_user(db: sqlite_utils.Database) -> None:
    """Daily budgets sum a user's tokens across chats (core.access)."""
    db.table("turns").create_index(["platform", "user_id", "created"])
    db.table("turns").create_index(["platform", "chat_id", "created"])


@migrations()
def m004_jobs(db: sqlite_utils.Database) -> None:
    """Durable work (core.jobs): each accepted request, stored before work starts, until its answer is sent."""
    db.table("jobs").create({
        "id": int, "key": str, "platform": str, "chat_id": str, "thread_id": str, "user_id": str, "sender": str,
        "message_ref": str, "file_ref": str, "task": str, "text": str, "state": str, "attempts": int,
        "faults": int, "last_error": str, "notified": int, "created": float, "updated": float,
        "next_attempt": float, "outcome": str, "delivered": float, "delivery_attempts": int, "progress_ref": str,
    }, pk="id", not_null={"key", "platform", "chat_id", "thread_id", "message_ref", "task", "state", "attempts",
                          "faults", "notified", "created", "updated", "delivery_attempts"},
       defaults={"thread_id": "", "attempts": 0, "faults": 0, "notified": 0, "delivery_attempts": 0})
    db.table("jobs").create_index(["platform", "key"], unique=True)
    db.table("jobs").create_index(["platform", "state"])


@migrations()
def m005_chat_settings(db: sqlite_utils.Database) -> None:
    """Per-chat choices made with chat commands: the voice answers are spoken in ('' = text)."""
    db.table("chat_settings").create({"platform": str, "chat_id": str, "voice": str, "updated": float},
                               pk=("platform", "chat_id"), not_null={"voice"}, defaults={"voice": ""})


@migrations()
def m006_answer_cache(db: sqlite_utils.Database) -> None:
    """Answers kept by audio content (core.answer_cache). Each row names the chat whose audio put it there,
    so forgetting that chat (forget_chat finds tables by their chat_id column) deletes it too."""
    db.table("answer_cache").create({
        "key": str, "platform": str, "chat_id": str, "reply": str, "created": float,
    }, pk="key", not_null={"platform", "chat_id", "reply", "created"})
    db.table("answer_cache").create_index(["created"])
    db.table("audio_sources").create({
        "platform": str, "source_id": str, "chat_id": str, "digest": str, "created": float,
    }, pk=("platform", "source_id"), not_null={"chat_id", "digest", "created"})
    db.table("audio_sources").create_index(["created"])


@dataclass(frozen=True, slots=True)
class Turn:
    role: str          # "user" or "assistant"
    text: str


def _key(chat: ChatKey) -> tuple[str, str, str]:
    return chat.platform, chat.chat_id, chat.thread_id or ""


def _day_start(now: float) -> float:
    return now - now % 86400  # UTC midnight


class HistoryStore:
    """Async facade over the SQLite file; every call hops to the store's own thread."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="earshot-db")
        self._db: sqlite_utils.Database | None = None

    async def open(self) -> None:
        """Open (and create or migrate) the file; StorageError with what to fix when it can't be used."""
        try:
            await self._run(self._open)
        except (OSError, sqlite3.Error) as err:
            if self._db is not None:
                await self._run(self._db.close)
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
            await self._run(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
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
            raise RuntimeError("HistoryStore is not open")
        return self._db

    # --- shared access for stores that keep their tables in this file (core.digest_store) ---------
    async def read(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        """fn(db) on the store's thread."""
        return await self._run(lambda: fn(self.db))

    async def write(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        """fn(db) on the store's thread, in one write transaction."""
        def run() -> T:
            with self._write():
                return fn(self.db)
        return await self._run(run)

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
        return await self._run(forget)

    async def prune(self, history_before: float, events_before: float) -> dict[str, int]:
        """Delete turns and latest-audio notes older than `history_before`, and seen events older than
        `events_before` (they only recognise redeliveries and say a refusal once a day); counts by table."""
        def prune() -> dict[str, int]:
            with self._write():
                return {
                    "turns": self.db.execute("DELETE FROM turns WHERE created < ?", [history_before]).rowcount,
                    "recent_audio": self.db.execute("DELETE FROM recent_audio WHERE created < ?",
                                                    [history_before]).rowcount,
                    "seen_events": self.db.execute("DELETE FROM seen_events WHERE created < ?",
                                                   [events_before]).rowcount,
                }
        return await self._run(prune)

    # --- turns ----------------------------------------------------------------------------
    async def add_exchange(self, chat: ChatKey, user_id: str | None, user_text: str, answer: str,
                           usage: Usage, audio_seconds: float | None = None) -> None:
        """Store a user turn and the answer to it in one transaction."""
        await self._run(self._add_exchange, chat, user_id, user_text, answer, usage, audio_seconds)

    def _add_exchange(self, chat: ChatKey, user_id: str | None, user_text: str, answer: str,
                      usage: Usage, audio_seconds: float | None) -> None:
        platform, chat_id, thread_id = _key(chat)
        now = time.time()
        base = {"platform": platform, "chat_id": chat_id, "thread_id": thread_id, "user_id": user_id or ""}
        with self._write():
            self.db.table("turns").insert_all([
                {**base, "role": "user", "text": user_text, "audio_seconds": audio_seconds,
                 "audio_tokens": 0, "input_tokens": 0, "output_tokens": 0, "created": now},
                {**base, "role": "assistant", "text": answer, "audio_seconds": None,
                 "audio_tokens": usage.audio_tokens, "input_tokens": usage.input_tokens,
                 "output_tokens": usage.output_tokens, "created": now},
            ])

    async def recent_turns(self, chat: ChatKey, limit: int) -> list[Turn]:
        """The chat's last `limit` turns, oldest first."""
        return await self._run(self._recent_turns, chat, limit)

    def _recent_turns(self, chat: ChatKey, limit: int) -> list[Turn]:
        rows = self.db.execute(
            "SELECT role, text FROM turns WHERE platform = ? AND chat_id = ? AND thread_id = ? "
            "AND role IN ('user', 'assistant') ORDER BY id DESC LIMIT ?", [*_key(chat), limit]).fetchall()
        return [Turn(role, text) for role, text in reversed(rows)]

    async def reset(self, chat: ChatKey) -> None:
        await self._run(self._reset, chat)

    def _reset(self, chat: ChatKey) -> None:
        # usage survives a reset (it is what budgets count), so only the words are cleared
        self.db.execute("UPDATE turns SET text = '', role = 'cleared' WHERE platform = ? AND chat_id = ? "
                        "AND thread_id = ?", _key(chat))

    async def usage_today(self, chat: ChatKey) -> Usage:
        return await self._run(self._usage_today, chat)

    def _usage_today(self, chat: ChatKey) -> Usage:
        platform, chat_id, _ = _key(chat)
        row = self.db.execute(
            "SELECT COALESCE(SUM(audio_tokens),0), COALESCE(SUM(input_tokens),0), COALESCE(SUM(output_tokens),0) "
            "FROM turns WHERE platform = ? AND chat_id = ? AND created >= ?",
            [platform, chat_id, _day_start(time.time())]).fetchone()
        return Usage(*row)

    # --- recent audio and seen events -----------------------------------------------------
    async def remember_audio(self, chat: ChatKey, ref: str) -> None:
        platform, chat_id, thread_id = _key(chat)
        row = {"platform": platform, "chat_id": chat_id, "thread_id": thread_id, "ref": ref, "created": time.time()}
        await self._run(lambda: self.db.table("recent_audio").upsert(row, pk=("platform", "chat_id", "thread_id")))

    async def latest_audio(self, chat: ChatKey) -> str | None:
        def find() -> str | None:
            row = self.db.execute("SELECT ref FROM recent_audio WHERE platform = ? AND chat_id = ? AND thread_id = ?",
                                  _key(chat)).fetchone()
            return row[0] if row else None
        return await self._run(find)

    async def set_voice(self, chat: ChatKey, voice: str | None) -> None:
        """Speak this chat's answers in `voice`, or (None) answer in text."""
        row = {"platform": chat.platform, "chat_id": chat.chat_id, "voice": voice or "", "updated": time.time()}
        await self._run(lambda: self.db.table("chat_settings").upsert(row, pk=("platform", "chat_id")))

    async def voice(self, chat: ChatKey) -> str | None:
        """The voice this chat's answers are spoken in, or None for text."""
        def find() -> str | None:
            rows = self.db.execute("SELECT voice FROM chat_settings WHERE platform = ? AND chat_id = ?",
                                   [chat.platform, chat.chat_id]).fetchall()
            return (rows[0][0] or None) if rows else None
        return await self._run(find)

    async def claim_event(self, platform: str, event_id: str) -> bool:
        def claim() -> bool:
            cur = self.db.execute("INSERT OR IGNORE INTO seen_events (platform, event_id, created) VALUES (?, ?, ?)",
                                  [platform, event_id, time.time()])
            return cur.rowcount == 1
        return await self._run(claim)

    async def event_seen(self, platform: str, event_id: str) -> bool:
        """Whether claim_event has recorded this event, without claiming it."""
        return await self._run(lambda: self.db.execute(
            "SELECT 1 FROM seen_events WHERE platform = ? AND event_id = ?",
            [platform, event_id]).fetchone() is not None)
