"""Digest state in the one SQLite file: which chats opted in, their schedule, and the voice notes heard.

The tables come from core.store.schema; every call runs on the database's thread (core.store.db).
Digests belong to a whole chat (all its topics or threads), so chats are keyed by platform and chat id.
"""
from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from core.store.db import Database
from core.store.usage_ledger import UsageLedger
from core.values import ChatKey, Usage


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


def _chat(row: tuple[Any, ...]) -> ChatDigest:
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
        row = await self._h.fetchone(f"SELECT {', '.join(_CHAT_FIELDS)} FROM digest_chats WHERE platform = ? "
                                     "AND chat_id = ?", platform, chat_id)
        return _chat(row) if row else ChatDigest(platform, chat_id)

    async def update(self, platform: str, chat_id: str, now: float, **values: object) -> None:
        """Create the chat's row if needed and set the given columns."""
        columns = ["updated", *values]
        unknown = set(columns) - set(_CHAT_FIELDS) - {"updated"}
        if unknown:
            raise ValueError(f"no such digest setting: {', '.join(sorted(unknown))}")
        await self._h.execute(
            f"INSERT INTO digest_chats (platform, chat_id, {', '.join(columns)}) "
            f"VALUES (?, ?{', ?' * len(columns)}) ON CONFLICT (platform, chat_id) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in columns), platform, chat_id, now, *values.values())

    async def scheduled(self, platform: str) -> list[ChatDigest]:
        """Chats of this platform with digests on and a daily time set."""
        rows = await self._h.fetch(f"SELECT {', '.join(_CHAT_FIELDS)} FROM digest_chats WHERE platform = ? "
                                   "AND enabled = 1 AND daily != ''", platform)
        return [_chat(r) for r in rows]

    def exclusive(self, name: str) -> AbstractAsyncContextManager[bool]:
        """Database.exclusive: one process at a time on the database does the work called `name`."""
        return self._h.exclusive(name)

    # --- voice notes --------------------------------------------------------------------------
    async def add_note(self, note: VoiceNote, created: float, *, job_id: int | None = None) -> bool:
        """Store a note; False if this message was stored already, or if `job_id` (the listening job it
        came from) is gone: the chat was forgotten while it was being transcribed."""
        async with self._h.transaction() as tx:
            if job_id is not None and await tx.fetchone("SELECT 1 FROM jobs WHERE id = ?", job_id) is None:
                return False
            return await tx.execute(
                "INSERT INTO voice_notes (platform, chat_id, thread_id, source_id, user_id, user_name, "
                "sent, arrived, seconds, text, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                note.platform, note.chat_id, note.thread_id, note.source_id or None, note.user_id,
                note.user_name, note.sent, note.arrived, note.seconds, note.text, created) == 1

    async def listening_jobs(self, platform: str, chat_id: str) -> int:
        """Voice notes of the chat still waiting to be transcribed (core.flow.runner jobs)."""
        row = await self._h.fetchone(
            "SELECT COUNT(*) FROM jobs WHERE platform = ? AND chat_id = ? AND task = 'listen' "
            "AND state IN ('queued', 'running')", platform, chat_id)
        return int(row[0]) if row else 0

    async def notes(self, platform: str, chat_id: str, since: float, until: float, *,
                    after_id: int = 0) -> list[VoiceNote]:
        """Notes sent in (since, until] and stored after note `after_id`, oldest first."""
        rows = await self._h.fetch(
            "SELECT platform, chat_id, sent, seconds, text, user_id, user_name, thread_id, source_id, id "
            "FROM voice_notes WHERE platform = ? AND chat_id = ? AND sent > ? AND sent <= ? AND id > ? "
            "ORDER BY sent, arrived, id", platform, chat_id, since, until, after_id)
        return [VoiceNote(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], source_id=r[8] or "", id=r[9])
                for r in rows]

    async def purge(self, before: float) -> int:
        """Delete notes stored before `before`; the count deleted."""
        if self._h.engine == "sqlite":
            await self._h.run(self._h.db.execute, "PRAGMA secure_delete = ON")   # freed pages overwritten
        return await self._h.execute("DELETE FROM voice_notes WHERE created < ?", before)

    async def record_usage(self, chat: ChatKey, user_id: str | None, usage: Usage, now: float, *,
                           role: str, audio_seconds: float | None = None) -> None:
        """Tokens spent on listening or digests, as a turn with no words: usage counts see it, history
        (which reads only user and assistant turns) doesn't."""
        await UsageLedger(self._h).record(chat, user_id, usage, role=role, now=now, audio_seconds=audio_seconds)
