"""A chat's conversation: its turns (oldest dropped to fit the model's window) and its latest audio.

HistoryStore is the Database (core.store.db) with the chat's own tables; the other stores hold the rest of the
file, each with its own SQL: the usage ledger (core.store.usage_ledger), chat settings (core.store.chat_settings), seen
events (core.store.seen_events), jobs (core.store.jobs), digests (core.store.digest_store), the answer cache
(core.store.answer_cache). For the callers that knew this store as the whole database, it still answers for
usage, voices and events by handing the call to those stores.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from core.store.chat_settings import ChatSettings
from core.store.db import Database
from core.store.schema import sqlite_migrations
from core.store.seen_events import SeenEvents
from core.store.usage_ledger import UsageLedger, exchange_in
from core.values import ChatKey, Usage

__all__ = ["HistoryStore", "Turn", "migrations"]  # noqa: F822 (migrations: __getattr__); the schema lives in core.store.schema


def __getattr__(name: str) -> object:
    if name == "migrations":                 # core.store.schema's, built on first use (it loads sqlite-utils)
        return sqlite_migrations()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True, slots=True)
class Turn:
    role: str          # "user" or "assistant"
    text: str


def _key(chat: ChatKey) -> list[str]:
    return [chat.platform, chat.chat_id, chat.thread_id or ""]


class HistoryStore(Database):
    def __init__(self, path: Path | str) -> None:
        super().__init__(path)
        self.ledger = UsageLedger(self)
        self.settings = ChatSettings(self)
        self.events = SeenEvents(self)

    # --- turns ----------------------------------------------------------------------------
    async def add_exchange(self, chat: ChatKey, user_id: str | None, user_text: str, answer: str,
                           usage: Usage, audio_seconds: float | None = None) -> None:
        """Store a user turn and the answer to it (with what it cost) in one transaction."""
        await exchange_in(self, chat, user_id, user_text, answer, usage, time.time(), audio_seconds)

    async def recent_turns(self, chat: ChatKey, limit: int) -> list[Turn]:
        """The chat's last `limit` turns, oldest first."""
        rows = await self.fetch(
            "SELECT role, text FROM turns WHERE platform = ? AND chat_id = ? AND thread_id = ? "
            "AND role IN ('user', 'assistant') ORDER BY id DESC LIMIT ?", *_key(chat), limit)
        return [Turn(role, text) for role, text in reversed(rows)]

    async def reset(self, chat: ChatKey) -> None:
        # usage survives a reset (it is what budgets count), so only the words are cleared
        await self.execute(
            "UPDATE turns SET text = '', role = 'cleared' WHERE platform = ? AND chat_id = ? AND thread_id = ?",
            *_key(chat))

    # --- the chat's latest audio ------------------------------------------------------------
    async def remember_audio(self, chat: ChatKey, ref: str) -> None:
        await self.execute(
            "INSERT INTO recent_audio (platform, chat_id, thread_id, ref, created) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (platform, chat_id, thread_id) DO UPDATE SET ref = excluded.ref, created = excluded.created",
            *_key(chat), ref, time.time())

    async def latest_audio(self, chat: ChatKey) -> str | None:
        row = await self.fetchone("SELECT ref FROM recent_audio WHERE platform = ? AND chat_id = ? AND thread_id = ?",
                                  *_key(chat))
        return row[0] if row else None

    # --- handed to the focused stores ---------------------------------------------------------
    async def usage_today(self, chat: ChatKey) -> Usage:
        return await self.ledger.today(chat, time.time())

    async def set_voice(self, chat: ChatKey, voice: str | None) -> None:
        await self.settings.set_voice(chat, voice)

    async def voice(self, chat: ChatKey) -> str | None:
        return await self.settings.voice(chat)

    async def claim_event(self, platform: str, event_id: str) -> bool:
        return await self.events.claim(platform, event_id)

    async def event_seen(self, platform: str, event_id: str) -> bool:
        return await self.events.seen(platform, event_id)
