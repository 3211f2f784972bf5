"""Choices a chat made with its commands: the voice its answers are spoken in ('' = text), and the language
earshot speaks there ('' = each person's own, from their app)."""
from __future__ import annotations

import time

from .db import Database
from .models import ChatKey


class ChatSettings:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def set_voice(self, chat: ChatKey, voice: str | None) -> None:
        """Speak this chat's answers in `voice`, or (None) answer in text."""
        await self.db.execute(
            "INSERT INTO chat_settings (platform, chat_id, voice, updated) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (platform, chat_id) DO UPDATE SET voice = excluded.voice, updated = excluded.updated",
            chat.platform, chat.chat_id, voice or "", time.time())

    async def voice(self, chat: ChatKey) -> str | None:
        """The voice this chat's answers are spoken in, or None for text."""
        row = await self.db.fetchone("SELECT voice FROM chat_settings WHERE platform = ? AND chat_id = ?",
                                     chat.platform, chat.chat_id)
        return (row[0] or None) if row else None

    async def set_lang(self, chat: ChatKey, code: str | None) -> None:
        """Speak `code` (a core.i18n.LANGUAGES code) in this chat, or (None) each person's app language."""
        await self.db.execute(
            "INSERT INTO chat_settings (platform, chat_id, lang, updated) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (platform, chat_id) DO UPDATE SET lang = excluded.lang, updated = excluded.updated",
            chat.platform, chat.chat_id, code or "", time.time())

    async def lang(self, chat: ChatKey) -> str | None:
        """The language this chat chose with /lang, or None."""
        row = await self.db.fetchone("SELECT lang FROM chat_settings WHERE platform = ? AND chat_id = ?",
                                     chat.platform, chat.chat_id)
        return (row[0] or None) if row else None

    async def set_model(self, chat: ChatKey, model: str | None) -> None:
        """Answer in this chat with `model` (one of EARSHOT_MODELS), or (None) the operator's default."""
        await self.db.execute(
            "INSERT INTO chat_settings (platform, chat_id, model, updated) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (platform, chat_id) DO UPDATE SET model = excluded.model, updated = excluded.updated",
            chat.platform, chat.chat_id, model or "", time.time())

    async def model(self, chat: ChatKey) -> str | None:
        """The model this chat chose with /model, or None."""
        row = await self.db.fetchone("SELECT model FROM chat_settings WHERE platform = ? AND chat_id = ?",
                                     chat.platform, chat.chat_id)
        return (row[0] or None) if row else None
