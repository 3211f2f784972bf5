"""Group digests: listen quietly to a chat's voice notes, and sum them up on request or every day.

    digests = app.digests                  # built by the composition root (core.app)
    if await digests.listening(chat):     # and the sender passed the access checks, quietly
        await runner.submit(digests.listen_job(chat, key=..., file_ref=..., sent=..., sender=..., name=...))
    text = await digests.respond(chat, parse_digest("2h"), prefix="/", sender=sender)
    digests.start_schedule("telegram", post)          # one scheduler per adapter, state in SQLite

Voice notes are heard as durable, bounded jobs (core.flow.runner calls `hear`): through the Assistant's own
pipeline (decode, split, ask per chunk), without touching the chat's history. This module is the service:
listening and hearing, carrying out the digest command, and a digest's charging and headings. Its parts:
core.flow.digest_command (the command's words), core.flow.digest_summary (the body, summarised in rounds
within the model's input limit), core.flow.digest_schedule (the daily digests) and core.flow.retention
(the hourly sweep). `clock` is injectable, so tests move time instead of waiting for it.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from core.errors import AccessRefused, EarshotError
from core.flow.access import DIGEST_TOO_COSTLY
from core.flow.digest_command import FORGET, AdminCheck, DigestCommand, parse_digest, zone_of
from core.flow.digest_schedule import DigestSchedule, Post, first_day, next_slot
from core.flow.digest_summary import Digest, Pipeline, Summariser
from core.flow.retention import Retention
from core.store.digest_store import DigestStore, VoiceNote
from core.store.jobs import Job, NewJob
from core.values import Audio, ChatKey, Reply, Request, Sender, Task
from core.words import amounts, messages
from core.words.i18n import Plural, translator

if TYPE_CHECKING:
    from core.flow.access import AccessPolicy
    from core.store.answer_cache import AnswerCache
    from core.store.history import HistoryStore

# the adapters' door to digests: they import these from here
__all__ = ["FORGET", "AdminCheck", "Digest", "DigestCommand", "DigestService", "Post", "parse_digest"]

log = logging.getLogger(__name__)

SETTLE_SECONDS = 300.0            # a digest waits this long at most for voice notes still being transcribed
SETTLE_POLL = 0.1                 # how often a digest looks whether those notes are stored yet
NOBODY = Sender()


# "1 week", "2 days", "90 minutes" (core.words.amounts); (seconds, lang) in a language
describe_period = amounts.period


def _count(forms: Plural, n: float, lang: str | None = None) -> str:
    """"3 voice notes", "12 minutes" in the chat's language, for the digest's heading."""
    return messages.count(forms, n, lang)


def _days(settings_days: float, lang: str | None = None) -> str:
    return amounts.days(settings_days, lang)


class DigestService:
    """Everything digests need, over the Assistant's pipeline, model client and database.

    Built by the composition root (core.app) from the same database, access policy and answer cache as
    the Assistant it hears and summarises through."""

    def __init__(self, assistant: Pipeline, *, history: HistoryStore, access: AccessPolicy, cache: AnswerCache,
                 clock: Callable[[], float] = time.time) -> None:
        self.assistant = assistant
        self.settings = assistant.settings
        self.history, self.access, self.cache = history, access, cache
        self.store = DigestStore(history)
        self.clock = clock
        self.summariser = Summariser(assistant)
        # the parts go by this service's clock, whatever it is when they look (tests move it)
        self.retention = Retention(self.settings, history, self.store, cache, self._now)
        self.schedule = DigestSchedule(self.store, self._scheduled, self.retention.purge, self._now)

    def _now(self) -> float:
        return self.clock()

    async def aclose(self) -> None:
        """Stop the schedulers (transcriptions are jobs: the adapters' runners stop those)."""
        await self.schedule.aclose()

    # --- listening ----------------------------------------------------------------------------
    async def listening(self, chat: ChatKey) -> bool:
        """True if the chat has digests on, so its voice notes should be heard."""
        return (await self.store.chat(chat.platform, chat.chat_id)).enabled

    async def may_hear(self, chat: ChatKey, sender: Sender) -> bool:
        """Whether a voice note from `sender` should be heard: digests are on and the sender passes the
        allowed lists and budgets, checked quietly (strangers are skipped, told nothing, nothing downloaded)."""
        if not await self.listening(chat):
            return False
        try:
            await self.access.check(chat, sender, quietly=True)
        except AccessRefused:
            log.debug("not listening to a voice note in %s %s: refused", chat.platform, chat.chat_id)
            return False
        return True

    def listen_job(self, chat: ChatKey, *, key: str, file_ref: str, sent: float, sender: Sender = NOBODY,
                   name: str | None = None, source_id: str | None = None) -> NewJob:
        """A voice note to transcribe in the background and store, as a durable job (core.flow.runner) the
        adapter submits once access and budgets allow it: nothing is downloaded before, nothing said after.

        key: unique per note on the platform; file_ref: the adapter's own, as for any job's audio.
        sender: who sent it, as access rules and budgets see them; name: how the digest calls them.
        """
        # real time, not self.clock: only the order of arrival matters, for notes sent in the same second
        note = {"sent": sent, "name": name, "source_id": source_id, "arrived": time.time()}
        return NewJob(key=f"listen:{key}", chat=ChatKey(chat.platform, chat.chat_id), task=Task.LISTEN,
                      message_ref=json.dumps(note), file_ref=file_ref, sender=sender)

    async def hear(self, job: Job, audio: Audio) -> Reply:
        """The runner's work for a listening job: transcribe quietly (the chat's history is left alone;
        the same allowed lists and budgets as any request apply), store the note and what it cost."""
        note = json.loads(job.message_ref)
        s = job.sender
        reply = await self.assistant.transcribe_quietly(Request(
            job.chat, Task.TRANSCRIBE, audio=audio, user_id=s.user_id, user_name=s.user_name,
            team_id=s.team_id, chat_name=s.chat_name))
        now = self.clock()
        heard = VoiceNote(job.chat.platform, job.chat.chat_id, note["sent"], reply.duration or 0.0,
                          reply.text.strip(), user_id=s.user_id or "",
                          user_name=note.get("name") or s.user_id or "someone",
                          source_id=note.get("source_id") or "", arrived=note.get("arrived") or now)
        if await self.store.add_note(heard, now, job_id=job.id):
            await self.store.record_usage(job.chat, s.user_id, reply.usage, now, role="listen",
                                          audio_seconds=reply.duration)
        return reply

    async def _settle(self, chat: ChatKey) -> None:
        """Wait for the chat's voice notes still being transcribed, so a digest includes them."""
        deadline = time.monotonic() + SETTLE_SECONDS
        # polled: the transcriptions are jobs that may run in another process, and their rows say when they end
        while await self.store.listening_jobs(chat.platform, chat.chat_id) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(SETTLE_POLL)

    # --- the commands -------------------------------------------------------------------------
    async def refusal(self, chat: ChatKey, command: DigestCommand, sender: Sender, *, group: bool,
                      is_admin: AdminCheck, prefix: str = "/", lang: str | None = None) -> str | None:
        """Why `command` can't be done here or by `sender`: groups only, allowed lists (and budgets for a
        digest), admins for settings. "" for a stranger already told no; None when it may go ahead.

        is_admin: the platform's answer (chat admins); earshot's own admins (EARSHOT_ADMINS) pass first.
        lang: the chat's language (core.flow.chat_state.language_for), for what is said.
        """
        t = translator(lang)
        if not group:
            return t.text(messages.DIGEST_GROUPS_ONLY, prefix=prefix)
        if command.action == "invalid":
            return None                  # how to write it is no secret
        try:
            await self.access.check(chat, sender, spending=command.action == "summary")
        except AccessRefused as err:
            return "" if err.silent else err.user_text(lang)
        if command.needs_admin and not self.access.is_admin(chat, sender):
            admin = await is_admin()
            if not admin:
                return t.text(messages.DIGEST_ADMIN_UNKNOWN if admin is None else messages.DIGEST_ADMINS_ONLY)
        return None

    async def answer(self, chat: ChatKey, command: DigestCommand, sender: Sender, *, prefix: str = "/",
                     lang: str | None = None) -> str | None:
        """`respond`, with errors turned into what to say (None: a silent refusal); operator errors are logged."""
        try:
            return await self.respond(chat, command, prefix=prefix, sender=sender, lang=lang)
        except EarshotError as err:
            if err.operator:
                log.error("digest in %s %s: %s", chat.platform, chat.chat_id, err.operator_message)
            return None if err.silent else err.user_text(lang)

    async def run(self, chat: ChatKey, command: DigestCommand, sender: Sender, *, group: bool,
                  is_admin: AdminCheck, prefix: str = "/", lang: str | None = None) -> str | None:
        """The whole digest command: `refusal`, then `answer`. What to say, in `lang`, or None to say nothing."""
        refused = await self.refusal(chat, command, sender, group=group, is_admin=is_admin, prefix=prefix, lang=lang)
        if refused is not None:
            return refused or None
        return await self.answer(chat, command, sender, prefix=prefix, lang=lang)

    async def respond(self, chat: ChatKey, command: DigestCommand, *, prefix: str = "/",
                      sender: Sender | None = None, lang: str | None = None) -> str:
        """Carry out a parsed `digest …` or `forget` and say how it went. Admin checks are the adapter's.

        prefix: how the platform spells commands in the answer ("/" or "/earshot ").
        sender: who asked; a digest is charged to them (see `summary`). lang: the chat's language.
        """
        t = translator(lang)
        now = self.clock()
        days = _days(self.settings.retention_days, lang)
        p, c = chat.platform, chat.chat_id
        if command.action == "invalid":
            zone = command.tz if len(command.tz) <= 40 else command.tz[:40] + "…"
            return t.text(command.problem or messages.DIGEST_USAGE, prefix=prefix, zone=zone)
        if command.action == "on":
            await self.store.update(p, c, now, enabled=1)
            return t.text(messages.DIGEST_ON, prefix=prefix, days=days)
        if command.action == "off":
            await self.store.update(p, c, now, enabled=0, daily="")
            return t.text(messages.DIGEST_OFF, prefix=prefix)
        if command.action == "daily":
            await self.store.update(p, c, now, enabled=1, daily=command.daily, tz=command.tz,
                                    post_thread=chat.thread_id or "", scheduled_since=now)
            self.wake()
            first = datetime.fromtimestamp(next_slot(command.daily, command.tz, now), zone_of(command.tz))
            return t.text(messages.DIGEST_DAILY, time=command.daily, zone=command.tz, first=first_day(first, lang))
        if command.action == "daily_off":
            await self.store.update(p, c, now, daily="")
            return t.text(messages.DIGEST_DAILY_OFF, prefix=prefix)
        if command.action == "forget":
            await self.forget(chat)
            return t.text(messages.FORGOTTEN)
        return (await self.summary(chat, command.period, prefix=prefix, sender=sender or Sender(), lang=lang)).text

    async def forget(self, chat: ChatKey) -> int:
        """Delete everything stored for the chat, in every table; transcriptions under way are dropped
        (their jobs are deleted with the rest, so what they hear is not stored)."""
        return await self.history.forget_chat(chat.platform, chat.chat_id)

    # --- the digest ---------------------------------------------------------------------------
    async def summary(self, chat: ChatKey, period: float | None = None, *, prefix: str = "/",
                      mark: bool = True, sender: Sender | None = None, lang: str | None = None) -> Digest:
        """The digest of the chat's voice notes in the last `period` seconds, or since the last digest.

        mark: a digest "since the last one" moves that mark to now (scheduled digests mark after posting).
        sender: who asked. A digest is charged like any request: it counts in their rate limit, its cost
        is estimated before the first model call and refused (AccessRefused) when today's budgets can't
        cover it, and what it spent counts against them. None: a scheduled digest, charged to the chat,
        refused silently. lang: the chat's language, for the headings and the summary itself (None: the
        language most of the voice notes are in, headings in English).
        """
        t = translator(lang)
        await self._settle(chat)
        now = self.clock()
        state = await self.store.chat(chat.platform, chat.chat_id)
        # "since the last digest" goes by what was stored since (message times are whole seconds, and a
        # note may be transcribed after a later one); a period goes by when the notes were sent
        notes = await self.store.notes(chat.platform, chat.chat_id, now - period if period else 0.0,
                                       now if period else math.inf, after_id=0 if period else state.last_note)
        if not notes:
            if not state.enabled:
                text = t.text(messages.DIGEST_IS_OFF, prefix=prefix)
            elif period:
                text = t.text(messages.DIGEST_NOTHING_IN, period=describe_period(period, lang))
            else:
                text = t.text(messages.DIGEST_NOTHING_NEW if state.last_note else messages.DIGEST_NOTHING_YET)
            return Digest(text, until=now)
        whole = ChatKey(chat.platform, chat.chat_id)
        who = sender or Sender()
        batches = self.summariser.batches(notes, state.tz)
        asked = Request(whole, Task.SUMMARIZE, user_id=who.user_id, user_name=who.user_name, team_id=who.team_id,
                        chat_name=who.chat_name)
        # a scheduled digest was set up by an admin: only the budgets apply, and refusing it tells nobody
        async with self.access.admit(asked, quietly=sender is None, lists=sender is not None):
            await self.access.afford(self.summariser.estimate(batches), refusals=DIGEST_TOO_COSTLY, prefix=prefix)
            body, usage = await self.summariser.summarise(batches, lang)
            await self.store.record_usage(whole, who.user_id, usage, self.clock(), role="digest")
        last_note = max(n.id for n in notes)
        if mark and not period:
            await self.store.update(chat.platform, chat.chat_id, now, last_digest=now, last_note=last_note)
        seconds = sum(n.seconds for n in notes)
        title = (t.text(messages.DIGEST_TITLE_PERIOD, period=describe_period(period, lang)) if period
                 else t.text(messages.DIGEST_TITLE_SINCE if state.last_note else messages.DIGEST_TITLE))
        header = t.text(messages.DIGEST_HEADER, title=title, notes=_count(messages.VOICE_NOTES, len(notes), lang),
                        minutes=_count(messages.MINUTES, math.ceil(seconds / 60), lang))
        return Digest(f"{header}\n\n{body}", len(notes), seconds, usage, now, last_note)

    # --- the daily schedule and retention (core.flow.digest_schedule, core.flow.retention) ----------
    def start_schedule(self, platform: str, post: Post) -> None:
        """Post each chat's daily digest through `post(chat, text)`, and purge expired transcripts,
        until aclose(). State lives in SQLite, so a restart picks up where it left off (a slot missed
        while down is posted once on start)."""
        self.schedule.start(platform, post)

    def wake(self) -> None:
        """Look at the schedule now (a schedule changed, or a test moved the clock)."""
        self.schedule.wake()

    async def tick(self, platform: str, post: Post) -> float | None:
        """One pass of the schedule (DigestSchedule.tick). Returns when the next digest is due."""
        return await self.schedule.tick(platform, post)

    async def purge(self) -> int:
        """The retention sweep (Retention.purge). Returns the transcripts deleted."""
        return await self.retention.purge()

    async def _scheduled(self, chat: ChatKey) -> Digest:
        """A daily digest: since the last one, marked once it is posted."""
        # nobody asked, so no one's app language: the chat's /lang, else the notes' own language
        return await self.summary(chat, None, mark=False, lang=await self.history.settings.lang(chat))
