"""Audio kept by reference: short opaque tokens for buttons under answers (Telegram callback_data holds 64 bytes,
Slack button values are shown to clients), resolved server-side to the chat and the platform's file reference.

A token is bound to the chat it was minted in, so a button can only reach audio of its own chat. It lives as long
as the chat's history (EARSHOT_HISTORY_DAYS) and goes with /forget, so a button on expired audio resolves to
`AudioExpired` (its user message says so) instead of failing. Persistence sits behind `AudioRefStore`; tests and
single-process runs use `MemoryAudioRefStore`.
"""
from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Protocol

from core.errors import AudioExpired
from core.store.audio_ref_store import AudioRef
from core.values import ChatKey

TOKEN_BYTES = 9                 # 72 random bits: 12 URL-safe characters, unguessable, short enough for any button
TOKEN_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
TOKEN_MAX = 16                  # what a token may be at most when parsed back (callback_data, button values)


class AudioRefStore(Protocol):
    """Where references are kept; a SQL table in production, a dict in tests."""

    async def put(self, ref: AudioRef) -> None: ...

    async def get(self, token: str) -> AudioRef | None: ...

    async def find(self, platform: str, chat_id: str, ref: str) -> AudioRef | None:
        """The newest unexpired reference minted for this file in this chat, if any."""
        ...

    async def delete_chat(self, platform: str, chat_id: str) -> int: ...

    async def delete_expired(self, now: float) -> int: ...


class MemoryAudioRefStore:
    """AudioRefStore in a dict: for tests and a single process that may lose its buttons on restart."""

    def __init__(self) -> None:
        self._refs: dict[str, AudioRef] = {}

    async def put(self, ref: AudioRef) -> None:
        self._refs[ref.token] = ref

    async def get(self, token: str) -> AudioRef | None:
        return self._refs.get(token)

    async def find(self, platform: str, chat_id: str, ref: str) -> AudioRef | None:
        found = [r for r in self._refs.values() if (r.platform, r.chat_id, r.ref) == (platform, chat_id, ref)]
        return max(found, key=lambda r: r.created, default=None)

    async def delete_chat(self, platform: str, chat_id: str) -> int:
        gone = [t for t, r in self._refs.items() if (r.platform, r.chat_id) == (platform, chat_id)]
        for token in gone:
            del self._refs[token]
        return len(gone)

    async def delete_expired(self, now: float) -> int:
        gone = [t for t, r in self._refs.items() if r.expires <= now]
        for token in gone:
            del self._refs[token]
        return len(gone)

    def __len__(self) -> int:
        return len(self._refs)


def looks_like_token(text: str) -> bool:
    """Whether `text` could be a token we minted (cheap check before any lookup)."""
    return 0 < len(text) <= TOKEN_MAX and set(text) <= TOKEN_ALPHABET


class AudioRefs:
    """Mint and resolve tokens; `keep_seconds` is the chat history's retention (EARSHOT_HISTORY_DAYS in seconds)."""

    def __init__(self, store: AudioRefStore, *, keep_seconds: float,
                 clock: Callable[[], float] = time.time) -> None:
        if keep_seconds <= 0:
            raise ValueError("keep_seconds must be positive")
        self.store = store
        self.keep_seconds = keep_seconds
        self._clock = clock

    async def mint(self, chat: ChatKey, ref: str, *, audio_id: str | None = None) -> str:
        """A token for this audio in this chat. The same file in the same chat keeps its token while it lives,
        so every answer about one voice note carries the same buttons."""
        now = self._clock()
        existing = await self.store.find(chat.platform, chat.chat_id, ref)
        if existing is not None and existing.expires > now:
            return existing.token
        token = secrets.token_urlsafe(TOKEN_BYTES)
        await self.store.put(AudioRef(token, chat.platform, chat.chat_id, ref, now, now + self.keep_seconds,
                                      chat.thread_id, audio_id))
        return token

    async def resolve(self, token: str, chat: ChatKey) -> AudioRef:
        """The audio behind `token`, pressed in `chat`. Raises AudioExpired when it is unknown, expired, forgotten,
        or belongs to another chat (indistinguishable to the user: the audio is not here any more)."""
        found = await self.store.get(token) if looks_like_token(token) else None
        if (found is None or found.expires <= self._clock()
                or (found.platform, found.chat_id) != (chat.platform, chat.chat_id)):
            raise AudioExpired()
        return found

    async def forget_chat(self, platform: str, chat_id: str) -> int:
        """/forget: every token of the chat stops resolving; the count removed."""
        return await self.store.delete_chat(platform, chat_id)

    async def prune(self) -> int:
        """Drop expired references (run with the history pruning); the count removed."""
        return await self.store.delete_expired(self._clock())
