"""The composition root: every long-lived part of earshot, built once, in one place, and handed to an adapter.

    async with Earshot.build(settings) as app:      # opens the database; closes everything on exit
        adapter = TelegramHandlers(app)             # or bots.slack's Handlers(client, app, http)

What it holds, and who uses what (docs/architecture.md draws the flow):
- history: the database (core.store.db) with the chats' turns and latest audio (core.store.history); the other stores
  (usage ledger, chat settings, seen events, jobs, digests, answer cache) keep their own SQL over it.
- access: who may ask, how fast, how much (core.flow.access) — checked by adapters at the door and again
  by the Assistant before anything is spent.
- cache: answers kept by audio content (core.store.answer_cache).
- assistant: the audio pipeline (core.flow.service) — `handle`, `complete`, `transcribe_quietly`.
- digests: group digests (core.flow.digest) — listening, the digest command, the daily schedule, retention.
- chat_state: reset, usage, voice on/off (core.flow.chat_state).
- events: platform events already handled (core.store.seen_events): a redelivery is not answered twice.
- locks: session locks (core.store.election), so an event two replicas get at the same moment is handled by one.
- jobs: the durable job runner (core.flow.runner) the adapter registers its callbacks with and submits to.
- audio_refs: short tokens for audio kept by reference (core.flow.audio_refs), for buttons under answers.
"""
from __future__ import annotations

from dataclasses import dataclass

from core.config import Settings
from core.flow.access import AccessPolicy
from core.flow.audio_refs import AudioRefs
from core.flow.chat_state import ChatState
from core.flow.digest import DigestService, Post
from core.flow.runner import JobRunner
from core.flow.service import Assistant
from core.model.model_client import ModelClient
from core.store.answer_cache import AnswerCache
from core.store.audio_ref_store import SqlAudioRefStore
from core.store.election import SessionLocks
from core.store.history import HistoryStore
from core.store.seen_events import SeenEvents


@dataclass(frozen=True, slots=True)
class Earshot:
    settings: Settings
    history: HistoryStore
    access: AccessPolicy
    cache: AnswerCache
    assistant: Assistant
    digests: DigestService
    chat_state: ChatState
    events: SeenEvents
    jobs: JobRunner
    audio_refs: AudioRefs
    locks: SessionLocks

    @classmethod
    def build(cls, settings: Settings, *, client: ModelClient | None = None) -> Earshot:
        """Everything, wired; nothing opened yet (`async with`, or `await open()`)."""
        history = HistoryStore(settings.db_path)
        access = AccessPolicy(settings, history)
        cache = AnswerCache(history, settings.cache_days)
        assistant = Assistant(settings, client=client, history=history, access=access, cache=cache)
        # digests hear and summarise through the assistant's pipeline, over the same database, policy and cache
        digests = DigestService(assistant, history=history, access=access, cache=cache)
        return cls(settings, history, access, cache, assistant, digests, ChatState(assistant, access, history),
                   SeenEvents(history), JobRunner(assistant, digests),
                   AudioRefs(SqlAudioRefStore(history), keep_seconds=settings.history_days * 86400),
                   SessionLocks(history))

    async def open(self) -> Earshot:
        """Open the database (StorageError with what to fix when it can't be used)."""
        await self.assistant.__aenter__()
        return self

    async def start(self, platform: str, post: Post) -> None:
        """Serving `platform` (after its runner callbacks are registered): resume the jobs a previous process
        left, and post scheduled digests through `post` (which also keeps retention)."""
        await self.jobs.start()
        self.digests.start_schedule(platform, post)

    async def aclose(self) -> None:
        """Stop the job runner, then the digests' schedules, the HTTP pool and the database."""
        await self.jobs.stop()
        await self.digests.aclose()         # its schedulers stop before the pool goes
        await self.locks.close()
        await self.assistant.aclose()

    async def __aenter__(self) -> Earshot:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
