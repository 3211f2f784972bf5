"""core.flow.audio_refs' references in the database (table audio_refs), so buttons outlive a restart and work on
every replica. /forget deletes a chat's rows with the rest of the chat (Database.forget_chat finds the table by
its chat_id column); the hourly retention sweep drops expired ones (core.flow.retention)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.store.db import Database


@dataclass(frozen=True, slots=True)
class AudioRef:
    """One audio a button refers to: whose chat it is in, and how the platform fetches it again."""

    token: str
    platform: str               # "telegram", "slack"
    chat_id: str
    ref: str                    # the platform's reference: Telegram MediaRef JSON, Slack file id
    created: float              # Unix time minted
    expires: float              # Unix time after which it no longer resolves
    thread_id: str | None = None
    audio_id: str | None = None  # the platform's stable content id (Telegram file_unique_id), for the answer cache


_COLUMNS = "token, platform, chat_id, ref, created, expires, thread_id, audio_id"


def _ref(row: Any) -> AudioRef | None:
    return AudioRef(*row) if row else None


class SqlAudioRefStore:
    """AudioRefStore over the database's engine-neutral calls (SQLite or PostgreSQL)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def put(self, ref: AudioRef) -> None:
        await self.db.execute(
            f"INSERT INTO audio_refs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (token) DO NOTHING",
            ref.token, ref.platform, ref.chat_id, ref.ref, ref.created, ref.expires, ref.thread_id, ref.audio_id)

    async def get(self, token: str) -> AudioRef | None:
        return _ref(await self.db.fetchone(f"SELECT {_COLUMNS} FROM audio_refs WHERE token = ?", token))

    async def find(self, platform: str, chat_id: str, ref: str) -> AudioRef | None:
        return _ref(await self.db.fetchone(
            f"SELECT {_COLUMNS} FROM audio_refs WHERE platform = ? AND chat_id = ? AND ref = ? "
            "ORDER BY created DESC LIMIT 1", platform, chat_id, ref))

    async def delete_chat(self, platform: str, chat_id: str) -> int:
        return await self.db.execute("DELETE FROM audio_refs WHERE platform = ? AND chat_id = ?", platform, chat_id)

    async def delete_expired(self, now: float) -> int:
        return await self.db.execute("DELETE FROM audio_refs WHERE expires <= ?", now)
