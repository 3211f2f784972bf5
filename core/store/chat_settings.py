"""Choices a chat made with its commands: the voice its answers are spoken in ('' = text), the language
earshot speaks there ('' = each person's own, from their app), and the model answering there ('' = the
operator's EARSHOT_MODEL), the language spoken in its audio ('' = the recognizer detects it), and whether its
voice messages are transcribed unasked ('' = only when asked)."""
from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator

from core.store.db import Database
from core.values import ChatKey

_COLUMNS = ("voice", "lang", "model", "auto", "spoken")      # each a chat's choice; '' means "not chosen"
# inside `ChatSettings.read_once`: the chats' rows read so far (None: no row), by (platform, chat_id)
_READ: contextvars.ContextVar[dict[tuple[str, str], tuple[str, ...] | None] | None] = contextvars.ContextVar(
    "chat_settings_read", default=None)


class ChatSettings:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def _set(self, chat: ChatKey, column: str, value: str | None) -> None:
        assert column in _COLUMNS       # a column name, never a user's words, goes into the SQL
        await self.db.execute(
            f"INSERT INTO chat_settings (platform, chat_id, {column}, updated) VALUES (?, ?, ?, ?) "
            f"ON CONFLICT (platform, chat_id) DO UPDATE SET {column} = excluded.{column}, updated = excluded.updated",
            chat.platform, chat.chat_id, value or "", time.time())
        read = _READ.get()
        if read is not None:
            read.pop((chat.platform, chat.chat_id), None)

    async def _get(self, chat: ChatKey, column: str) -> str | None:
        assert column in _COLUMNS
        read = _READ.get()
        if read is None:
            row = await self.db.fetchone(f"SELECT {column} FROM chat_settings WHERE platform = ? AND chat_id = ?",
                                         chat.platform, chat.chat_id)
            return (row[0] or None) if row else None
        key = (chat.platform, chat.chat_id)
        if key not in read:
            read[key] = await self.db.fetchone(
                f"SELECT {', '.join(_COLUMNS)} FROM chat_settings WHERE platform = ? AND chat_id = ?", *key)
        whole = read[key]
        return (whole[_COLUMNS.index(column)] or None) if whole else None

    @staticmethod
    @contextlib.contextmanager
    def read_once() -> Iterator[None]:
        """Within the block (one request: its model, voice, spoken language…), a chat's settings are read from
        the database once, as one row, and a chat's own change (`set_…`) is seen at once: each read is a round
        trip, and a request reads several. Not for longer than a request: another process may change them."""
        token = _READ.set({})
        try:
            yield
        finally:
            _READ.reset(token)

    async def set_voice(self, chat: ChatKey, voice: str | None) -> None:
        """Speak this chat's answers in `voice`, or (None) answer in text."""
        await self._set(chat, "voice", voice)

    async def voice(self, chat: ChatKey) -> str | None:
        """The voice this chat's answers are spoken in, or None for text."""
        return await self._get(chat, "voice")

    async def set_lang(self, chat: ChatKey, code: str | None) -> None:
        """Speak `code` (a core.words.i18n.LANGUAGES code) in this chat, or (None) each person's app language."""
        await self._set(chat, "lang", code)

    async def lang(self, chat: ChatKey) -> str | None:
        """The language this chat chose with /lang, or None."""
        return await self._get(chat, "lang")

    async def set_model(self, chat: ChatKey, model: str | None) -> None:
        """Answer in this chat with `model` (one of EARSHOT_MODELS), or (None) the operator's default."""
        await self._set(chat, "model", model)

    async def model(self, chat: ChatKey) -> str | None:
        """The model this chat chose with /model, or None."""
        return await self._get(chat, "model")

    async def set_auto(self, chat: ChatKey, on: bool) -> None:
        """Transcribe every voice message in this chat unasked (on), or only when asked (off)."""
        await self._set(chat, "auto", "on" if on else None)

    async def auto(self, chat: ChatKey) -> bool:
        """Whether this chat's voice messages are transcribed unasked."""
        return await self._get(chat, "auto") == "on"

    async def set_spoken(self, chat: ChatKey, code: str | None) -> None:
        """Tell the recognizer that `code` (core.speech_languages) is spoken in this chat's audio, or (None)
        let it detect the language."""
        await self._set(chat, "spoken", code)

    async def spoken(self, chat: ChatKey) -> str | None:
        """The language this chat pinned with /spoken, or None."""
        return await self._get(chat, "spoken")
