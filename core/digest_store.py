"""Digest state in the one SQLite file: which chats opted in, their schedule, and the voice notes heard.

The tables come from core.schema; every call runs on the database's thread (core.db).
Digests belong to a whole chat (all its topics or threads), so chats are keyed by platform and chat id.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import sqlite_utils

from .db import Database
from .models import ChatKey, Usage
from .usage_ledger import UsageLedger


@dataclass(frozen=True, slots=True)
class ChatDigest:
    """One chat's digest settings."""

    platform: str
    chat_id: str
    enabled: bool = False
    daily: str = ""                  # "HH:MM", or "" for no scheduled digest
    tz: str = "UTC"
    post_thread: str = ""            # the topic or thread scheduled digests go to ("" = the chat itself)
    scheduled_since: float = 0.0     # when the schedule was set: earlier slots never fire
    last_scheduled: float = 0.0      # the last slot a scheduled digest was posted for
    last_digest: float = 0.0         # when the last digest "since the last one" was made
    last_note: int = 0               # the newest note it covered: the next one starts after it

    @property
    def key(self) -> ChatKey:
        return ChatKey(self.platform, self.chat_id, self.post_thread or None)


@dataclass(frozen=True, slots=True)
class VoiceNote:
    """A voice note heard in a chat, as stored: who sent it, when, how long, what was said."""

    platform: str
    chat_id: str
    sent: float                      # Unix time the message was sent
    seconds: float
    text: str
    user_id: str = ""
    user_name: str = ""
    thread_id: str = ""
    source_id: str = ""              # the platform's message id, so a redelivery is stored once
    id: int = 0                      # order of storing
    arrived: float = 0.0             # when earshot got the message: orders notes sent in the same second


_CHAT_FIELDS = ("platform", "chat_id", "enabled", "daily", "tz", "post_thread", "scheduled_since",
                "last_scheduled", "last_digest", "last_note")


def _chat(row: sqlite3.Row | tuple) -> ChatDigest:
    values = dict(zip(_CHAT_FIELDS, row, strict=True))
    return ChatDigest(**{**values, "enabled": bool(values["enabled"]), "daily": values["daily"] or "",
                         "tz": values["tz"] or "UTC", "post_thread": values["post_thread"] or "",
                         "scheduled_since": values["scheduled_since"] or 0.0,
                         "last_scheduled": values["last_scheduled"] or 0.0,
                         "last_digest": values["last_digest"] or 0.0, "last_note": values["last_note"] or 0})


class DigestStore:
    def __init__(self, history: Database) -> None:
        self._h = history

    # --- settings per chat --------------------------------------------------------------------
    async def chat(self, platform: str, chat_id: str) -> ChatDigest:
        def find(db: sqlite_utils.Database) -> ChatDigest:
            row = db.execute(f"SELECT {', '.join(_CHAT_FIELDS)} FROM digest_chats WHERE platform = ? "
                             "AND chat_id = ?", [platform, chat_id]).fetchone()
            return _chat(row) if row else ChatDigest(platform, chat_id)
        return await self._h.read(find)

    async def update(self, platform: str, chat_id: str, now: float, **values: object) -> None:
        """Create the chat's row if needed and set the given columns."""
        def upsert(db: sqlite_utils.Database) -> None:
            db.table("digest_chats").upsert({"platform": platform, "chat_id": chat_id, "updated": now, **values},
                                      pk=("platform", "chat_id"))
        await self._h.write(upsert)

    async def scheduled(self, platform: str) -> list[ChatDigest]:
        """Chats of this platform with digests on and a daily time set."""
        def find(db: sqlite_utils.Database) -> list[ChatDigest]:
            rows = db.execute(f"SELECT {', '.join(_CHAT_FIELDS)} FROM digest_chats WHERE platform = ? "
                              "AND enabled = 1 AND daily != ''", [platform]).fetchall()
            return [_chat(r) for r in rows]
        return await self._h.read(find)

    # --- voice notes --------------------------------------------------------------------------
    async def add_note(self, note: VoiceNote, created: float, *, job_id: int | None = None) -> bool:
        """Store a note; False if this message was stored already, or if `job_id` (the listening job it
        came from) is gone: the chat was forgotten while it was being transcribed."""
        def insert(db: sqlite_utils.Database) -> bool:
            if job_id is not None and db.execute("SELECT 1 FROM jobs WHERE id = ?", [job_id]).fetchone() is None:
                return False
            cur = db.execute(
                "INSERT OR IGNORE INTO voice_notes (platform, chat_id, thread_id, source_id, user_id, user_name, "
                "sent, arrived, seconds, text, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [note.platform, note.chat_id, note.thread_id, note.source_id or None, note.user_id,
                 note.user_name, note.sent, note.arrived, note.seconds, note.text, created])
            return cur.rowcount == 1
        return await self._h.write(insert)

    async def listening_jobs(self, platform: str, chat_id: str) -> int:
        """Voice notes of the chat still waiting to be transcribed (core.runner jobs)."""
        return await self._h.read(lambda db: db.execute(
            "SELECT COUNT(*) FROM jobs WHERE platform = ? AND chat_id = ? AND task = 'listen' "
            "AND state IN ('queued', 'running')", [platform, chat_id]).fetchone()[0])

    async def notes(self, platform: str, chat_id: str, since: float, until: float, *,
                    after_id: int = 0) -> list[VoiceNote]:
        """Notes sent in (since, until] and stored after note `after_id`, oldest first."""
        def find(db: sqlite_utils.Database) -> list[VoiceNote]:
            rows = db.execute(
                "SELECT platform, chat_id, sent, seconds, text, user_id, user_name, thread_id, source_id, id "
                "FROM voice_notes WHERE platform = ? AND chat_id = ? AND sent > ? AND sent <= ? AND id > ? "
                "ORDER BY sent, arrived, id", [platform, chat_id, since, until, after_id]).fetchall()
            return [VoiceNote(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], source_id=r[8] or "", id=r[9])
                    for r in rows]
        return await self._h.read(find)

    async def purge(self, before: float) -> int:
        """Delete notes stored before `before`; the count deleted."""
        def delete(db: sqlite_utils.Database) -> int:
            db.execute("PRAGMA secure_delete = ON")
            return db.execute("DELETE FROM voice_notes WHERE created < ?", [before]).rowcount
        return await self._h.write(delete)

    async def record_usage(self, chat: ChatKey, user_id: str | None, usage: Usage, now: float, *,
                           role: str, audio_seconds: float | None = None) -> None:
        """Tokens spent on listening or digests, as a turn with no words: usage counts see it, history
        (which reads only user and assistant turns) doesn't."""
        await UsageLedger(self._h).record(chat, user_id, usage, role=role, now=now, audio_seconds=audio_seconds)
