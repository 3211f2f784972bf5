"""Retention: what earshot stores is kept only as long as the settings say, then deleted.

One sweep, run by the digest schedule every hour (core.flow.digest_schedule), for every table that
grows: voice-note transcripts (EARSHOT_RETENTION_DAYS), chat history (EARSHOT_HISTORY_DAYS), expired
button references, finished jobs and seen events after a week, rate-limit rows, and cached answers
(EARSHOT_CACHE_DAYS).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from core.store import shared_limits
from core.store.audio_ref_store import SqlAudioRefStore
from core.store.jobs import KEEP_FINISHED, JobStore
from core.words.amounts import DAY

if TYPE_CHECKING:
    from core.config import Settings
    from core.store.answer_cache import AnswerCache
    from core.store.digest_store import DigestStore
    from core.store.history import HistoryStore

log = logging.getLogger(__name__)


class Retention:
    """The retention sweep over one database."""

    def __init__(self, settings: Settings, history: HistoryStore, store: DigestStore, cache: AnswerCache,
                 clock: Callable[[], float]) -> None:
        self.settings = settings
        self.history, self.store, self.cache = history, store, cache
        self.clock = clock

    async def purge(self) -> int:
        """Delete transcripts older than EARSHOT_RETENTION_DAYS, chat history older than
        EARSHOT_HISTORY_DAYS, expired button references,
        finished jobs and seen events after a week. Returns the transcripts deleted."""
        now = self.clock()
        deleted = await self.store.purge(now - self.settings.retention_days * DAY)
        if deleted:
            log.info("deleted %d expired voice-note transcript(s)", deleted)
        pruned = await self.history.prune(now - self.settings.history_days * DAY, now - KEEP_FINISHED)
        pruned["jobs"] = await JobStore(self.history, self.clock).prune()
        pruned["audio_refs"] = await SqlAudioRefStore(self.history).delete_expired(now)
        pruned |= await shared_limits.prune(self.history, now)
        if any(pruned.values()):
            log.info("pruned old rows: %s", ", ".join(f"{n} {table}" for table, n in pruned.items() if n))
        if self.cache.enabled and (cached := await self.cache.prune()):
            log.info("deleted %d expired cached answer(s)", cached)   # EARSHOT_CACHE_DAYS, on the same sweep
        return deleted
