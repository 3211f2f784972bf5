"""Answers kept by what was heard, so the same audio asked the same thing is never paid for twice.

The key is a hash of the audio bytes, the task, its text (question, language) and the model. A platform's
own stable id for a file (Telegram's file_unique_id) maps to that hash, so a forwarded voice note is
answered without even downloading it. Only answers that stand alone are kept: never voice chat or
anything that read the chat's history. Rows live `EARSHOT_CACHE_DAYS` and carry the chat whose audio
put them there, so forgetting a chat deletes them (Database.forget_chat).
"""
from __future__ import annotations

import hashlib
import json
import time

from core.store.db import Database, Queries
from core.values import ChatKey, Part, Reply, Task, Usage

DAY = 86400.0
# tasks whose answer depends on nothing but the audio and the request's own words
STANDALONE = {Task.TRANSCRIBE, Task.SUMMARIZE, Task.SENTIMENT, Task.EVENTS, Task.TRANSLATE}
# prunes at most this often per process: a DELETE per answer would be wasted work
PRUNE_EVERY = 600.0


def audio_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def answer_key(digest: str, task: Task, text: str | None, model: str) -> str:
    """The same audio, task, words (spacing and case aside) and model give the same key."""
    words = " ".join((text or "").split()).casefold()
    return hashlib.sha256(json.dumps([digest, task.value, words, model]).encode()).hexdigest()


def _encode(reply: Reply) -> str:
    return json.dumps({"text": reply.text, "duration": reply.duration,
                       "parts": [[p.start, p.end, p.text] for p in reply.parts]}, ensure_ascii=False)


def _decode(raw: str, task: Task) -> Reply:
    data = json.loads(raw)
    return Reply(text=data["text"], task=task, parts=tuple(Part(*p) for p in data.get("parts", ())),
                 usage=Usage(), duration=data.get("duration"), cached=True)


class AnswerCache:
    """Lookups and stores on the history database's own thread; `days` 0 turns it off."""

    def __init__(self, history: Database, days: float) -> None:
        self.history = history
        self.ttl = days * DAY
        self._pruned = 0.0

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def _cutoff(self) -> float:
        return time.time() - self.ttl

    async def digest_of(self, platform: str, source_id: str) -> str | None:
        """The content hash of a platform file seen before (and not expired), else None."""
        row = await self.history.fetchone(
            "SELECT digest FROM audio_sources WHERE platform = ? AND source_id = ? AND created >= ?",
            platform, source_id, self._cutoff())
        return row[0] if row else None

    async def remember_source(self, chat: ChatKey, source_id: str, digest: str) -> None:
        await self.history.execute(
            "INSERT INTO audio_sources (platform, source_id, chat_id, digest, created) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (platform, source_id) DO UPDATE SET chat_id = excluded.chat_id, digest = excluded.digest, "
            "created = excluded.created", chat.platform, source_id, chat.chat_id, digest, time.time())

    async def get(self, key: str, task: Task) -> Reply | None:
        row = await self.history.fetchone("SELECT reply FROM answer_cache WHERE key = ? AND created >= ?",
                                          key, self._cutoff())
        return _decode(row[0], task) if row is not None else None

    async def put(self, key: str, chat: ChatKey, reply: Reply) -> None:
        now = time.time()
        prune = now - self._pruned > PRUNE_EVERY
        if prune:
            self._pruned = now

        insert = ("INSERT INTO answer_cache (key, platform, chat_id, reply, created) VALUES (?, ?, ?, ?, ?) "
                  "ON CONFLICT (key) DO UPDATE SET platform = excluded.platform, chat_id = excluded.chat_id, "
                  "reply = excluded.reply, created = excluded.created")
        args = (key, chat.platform, chat.chat_id, _encode(reply), now)
        if not prune:       # one statement: one round trip
            await self.history.execute(insert, *args)
            return
        async with self.history.transaction() as tx:
            await tx.execute(insert, *args)
            await self._prune(tx)

    async def prune(self) -> int:
        """Delete what has outlived EARSHOT_CACHE_DAYS; the count deleted."""
        async with self.history.transaction() as tx:
            return await self._prune(tx)

    async def _prune(self, q: Queries) -> int:
        cutoff = self._cutoff()
        return (await q.execute("DELETE FROM answer_cache WHERE created < ?", cutoff)
                + await q.execute("DELETE FROM audio_sources WHERE created < ?", cutoff))
