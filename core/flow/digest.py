"""Group digests: listen quietly to a chat's voice notes, and sum them up on request or every day.

    digests = app.digests                  # built by the composition root (core.app)
    if await digests.listening(chat):     # and the sender passed the access checks, quietly
        await runner.submit(digests.listen_job(chat, key=..., file_ref=..., sent=..., sender=..., name=...))
    text = await digests.respond(chat, parse_digest("2h"), prefix="/", sender=sender)
    digests.start_schedule("telegram", post)          # one scheduler per adapter, state in SQLite

Voice notes are heard as durable, bounded jobs (core.flow.runner calls `hear`): through the Assistant's own
pipeline (decode, split, ask per chunk), without touching the chat's history. A digest packs the transcripts
into as few model requests as fit the model's input
limit, summarises each batch, and combines the summaries (in rounds, if they don't fit one request).
`clock` is injectable, so tests move time instead of waiting for it.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dtime
from typing import TYPE_CHECKING, Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.errors import AccessRefused, EarshotError
from core.flow.access import DIGEST_TOO_COSTLY
from core.flow.together import all_or_nothing
from core.model import prompts
from core.model.tokens import PROMPT_RESERVE, estimate_tokens
from core.store import shared_limits
from core.store.audio_ref_store import SqlAudioRefStore
from core.store.digest_store import ChatDigest, DigestStore, VoiceNote
from core.store.jobs import KEEP_FINISHED, Job, JobStore, NewJob
from core.values import Audio, ChatKey, Reply, Request, Sender, Task, Usage
from core.words import amounts, messages
from core.words.i18n import LANGUAGES, Plural, best_language, translator
from core.words.text import split_text

if TYPE_CHECKING:
    from core.config import Settings
    from core.flow.access import AccessPolicy
    from core.model.catalog import ModelInfo
    from core.model.dashscope import ModelAnswer
    from core.store.answer_cache import AnswerCache
    from core.store.history import HistoryStore


class Pipeline(Protocol):
    """What digests need of core.flow.service.Assistant (named here, so this module doesn't import it)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def limits(self) -> ModelInfo: ...

    async def transcribe_quietly(self, request: Request) -> Reply: ...

    async def complete(self, instruction: str, *, max_tokens: int | None = None) -> ModelAnswer: ...

log = logging.getLogger(__name__)

DAY = 86400.0
TICK_SECONDS = 60.0               # the scheduler looks at least this often (a clock change is noticed)
PURGE_EVERY = 3600.0              # expired transcripts are deleted this often
PART_TOKENS = 600                 # a batch's notes: short, so many of them fit one combining request
SETTLE_SECONDS = 300.0            # a digest waits this long at most for voice notes still being transcribed
SETTLE_POLL = 0.1                 # how often a digest looks whether those notes are stored yet
MAX_PERIOD = 366 * DAY

_PERIOD = re.compile(r"^(\d{1,4})\s*(m|min|mins|minutes?|h|hours?|d|days?|w|weeks?)$")
_UNIT = {"m": 60, "h": 3600, "d": DAY, "w": 7 * DAY}
_DAILY = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")

Action = Literal["summary", "on", "off", "daily", "daily_off", "forget", "invalid"]
Post = Callable[[ChatKey, str], Awaitable[None]]     # the adapter posts a scheduled digest in a chat
NOBODY = Sender()
AdminCheck = Callable[[], Awaitable[bool | None]]     # the platform's word: True, False, or None (couldn't ask)


@dataclass(frozen=True, slots=True)
class DigestCommand:
    """What `digest …` (or `forget`) asks for, parsed once for both adapters."""

    action: Action
    period: float | None = None        # seconds back from now; None: since the last digest
    daily: str = ""                    # "HH:MM"
    tz: str = "UTC"
    problem: str | None = None         # for "invalid": the message template to answer with

    @property
    def needs_admin(self) -> bool:
        return self.action in ("on", "off", "daily", "daily_off", "forget")


FORGET = DigestCommand("forget")


def parse_digest(args: str | None) -> DigestCommand:
    """`""`, `on`, `off`, `daily HH:MM [zone]`, `daily off`, or a period like `2h`, `24h`, `7d`."""
    words = (args or "").strip().split()
    lowered = [w.lower() for w in words]
    if not words:
        return DigestCommand("summary")
    if lowered == ["on"] or lowered == ["off"]:
        return DigestCommand(lowered[0])  # type: ignore[arg-type]
    if lowered[0] == "daily":
        if lowered[1:] == ["off"]:
            return DigestCommand("daily_off")
        if len(words) in (2, 3) and (m := _DAILY.match(words[1])):
            zone = words[2] if len(words) == 3 else "UTC"
            if zone_of(zone) is None:
                return DigestCommand("invalid", tz=zone, problem=messages.DIGEST_BAD_ZONE)
            return DigestCommand("daily", daily=f"{int(m[1]):02d}:{m[2]}", tz=zone)
        return DigestCommand("invalid", problem=messages.DIGEST_USAGE)
    if len(words) <= 2 and (m := _PERIOD.match("".join(lowered))):
        seconds = int(m[1]) * _UNIT[m[2][0]]
        if seconds > 0:
            return DigestCommand("summary", period=min(seconds, MAX_PERIOD))
    return DigestCommand("invalid", problem=messages.DIGEST_USAGE)


_ZONE_NAME = re.compile(r"^[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*$")


def zone_of(name: str) -> ZoneInfo | None:
    """The IANA zone of that name, or None: a directory of the zone database ("Europe"), a name too long
    for the file system, or anything not shaped like a zone name is no zone."""
    if not name or len(name) > 64 or not _ZONE_NAME.match(name):
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _at(day: date, daily: str, zone: ZoneInfo) -> float:
    hour, minute = (int(x) for x in daily.split(":"))
    return datetime.combine(day, dtime(hour, minute), tzinfo=zone).timestamp()


def last_slot(daily: str, tz: str, now: float) -> float:
    """The latest daily HH:MM in the zone at or before `now` (wall-clock time, so DST is followed)."""
    zone = zone_of(tz) or ZoneInfo("UTC")
    today = datetime.fromtimestamp(now, zone).date()
    at = _at(today, daily, zone)
    return at if at <= now else _at(today - timedelta(days=1), daily, zone)


def next_slot(daily: str, tz: str, now: float) -> float:
    """The first daily HH:MM in the zone after `now`."""
    zone = zone_of(tz) or ZoneInfo("UTC")
    today = datetime.fromtimestamp(now, zone).date()
    at = _at(today, daily, zone)
    return at if at > now else _at(today + timedelta(days=1), daily, zone)


# "1 week", "2 days", "90 minutes" (core.words.amounts); (seconds, lang) in a language
describe_period = amounts.period


def _count(forms: Plural, n: float, lang: str | None = None) -> str:
    """"3 voice notes", "12 minutes" in the chat's language, for the digest's heading."""
    return messages.count(forms, n, lang)


def _days(settings_days: float, lang: str | None = None) -> str:
    return amounts.days(settings_days, lang)


def _first_day(when: datetime, lang: str | None) -> str:
    """The day the first daily digest comes, as the chat's language writes a short date ("Thu 26 Nov")."""
    code = best_language(lang)
    if code == "en":
        return when.strftime("%a %d %b")
    from babel.dates import format_skeleton  # only when a chat speaks another language
    return format_skeleton("MMMEd", when, locale=LANGUAGES[code].catalog)


@dataclass(frozen=True, slots=True)
class Digest:
    text: str
    notes: int = 0
    seconds: float = 0.0
    usage: Usage = Usage()
    until: float = 0.0
    last_note: int = 0               # the newest note covered


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
        self._schedulers: list[asyncio.Task[None]] = []
        self._wakes: list[asyncio.Event] = []
        self._last_purge = -math.inf

    async def aclose(self) -> None:
        """Stop the schedulers (transcriptions are jobs: the adapters' runners stop those)."""
        tasks = list(self._schedulers)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._schedulers.clear()

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
            return t.text(messages.DIGEST_DAILY, time=command.daily, zone=command.tz, first=_first_day(first, lang))
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
        batches = self._batches(notes, state.tz)
        asked = Request(whole, Task.SUMMARIZE, user_id=who.user_id, user_name=who.user_name, team_id=who.team_id,
                        chat_name=who.chat_name)
        # a scheduled digest was set up by an admin: only the budgets apply, and refusing it tells nobody
        async with self.access.admit(asked, quietly=sender is None, lists=sender is not None):
            await self.access.afford(self._estimate(batches), refusals=DIGEST_TOO_COSTLY, prefix=prefix)
            body, usage = await self._summarise(batches, lang)
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

    def _budget(self, template: str) -> int:
        """Tokens of notes one request may carry beside this instruction, within the model's input limit."""
        limits = self.assistant.limits
        return limits.max_input - estimate_tokens(prompts.SYSTEM) - estimate_tokens(template) - PROMPT_RESERVE

    def _batches(self, notes: list[VoiceNote], tz: str) -> list[list[str]]:
        """The notes as dated lines, packed into as few requests as fit the model's input limit."""
        zone = zone_of(tz) or ZoneInfo("UTC")
        stamps = [datetime.fromtimestamp(n.sent, zone) for n in notes]
        one_day = stamps[0].date() == stamps[-1].date()
        lines: list[str] = []
        budget = self._budget(max(prompts.DIGEST, prompts.DIGEST_PART, key=len))
        for note, at in zip(notes, stamps, strict=True):
            when = at.strftime("%H:%M" if one_day else "%a %d %b %H:%M")
            head = prompts.digest_line(when, note.user_name or note.user_id or "someone", note.seconds, "")
            lines.extend(head + piece for piece in _fit(note.text or "[nothing heard]", budget - _tokens(head)))
        return _pack(lines, budget)

    def _estimate(self, batches: list[list[str]]) -> int:
        """Tokens the digest will cost at most, cautiously: every batch's request and answer, and the
        requests combining the answers."""
        call = _tokens(prompts.SYSTEM) + _tokens(max(prompts.DIGEST, prompts.DIGEST_PART, key=len)) + PROMPT_RESERVE
        cost = sum(call + _tokens("\n\n".join(batch)) for batch in batches)
        if len(batches) > 1:     # each part's answer is read once more to combine them, and answered
            cost += 2 * len(batches) * PART_TOKENS + call
        return cost

    async def _summarise(self, batches: list[list[str]], lang: str | None = None) -> tuple[str, Usage]:
        """The digest's body; written in `lang` when the chat chose one, else in the notes' own language."""
        usage = Usage()
        if len(batches) == 1:
            answer = await self.assistant.complete(prompts.digest_instruction(
                prompts.in_language(prompts.DIGEST, None, lang), batches[0]))
            return answer.text.strip(), answer.usage
        parts, usage = await self._each(prompts.in_language(prompts.DIGEST_PART, None, lang), batches)
        return await self._combine(parts, usage, lang)

    async def _combine(self, parts: list[str], usage: Usage, lang: str | None = None) -> tuple[str, Usage]:
        """Join batch notes into one digest, merging in rounds while they don't fit one request."""
        budget = self._budget(max(prompts.DIGEST_COMBINE, prompts.DIGEST_MERGE, key=len))
        while True:
            # at most half a request each, so every round at least halves their number
            parts = [cut for p in parts for cut in _fit(p, budget // 2)[:1]]
            batches = _pack(parts, budget)
            if len(batches) == 1:
                answer = await self.assistant.complete(prompts.digest_instruction(
                    prompts.in_language(prompts.DIGEST_COMBINE, None, lang), batches[0]))
                return answer.text.strip(), usage + answer.usage
            parts, spent = await self._each(prompts.in_language(prompts.DIGEST_MERGE, None, lang), batches)
            usage += spent

    async def _each(self, template: str, batches: list[list[str]]) -> tuple[list[str], Usage]:
        """One request per batch, a few at a time, answers in batch order."""
        gate = asyncio.Semaphore(self.settings.chunk_concurrency)

        async def ask(batch: list[str]) -> tuple[str, Usage]:
            async with gate:
                answer = await self.assistant.complete(prompts.digest_instruction(template, batch),
                                                       max_tokens=PART_TOKENS)
            return answer.text.strip(), answer.usage

        done = await all_or_nothing(ask(b) for b in batches)   # one failed batch fails the digest
        return [text for text, _ in done], sum((u for _, u in done), Usage())

    # --- the daily schedule and retention -----------------------------------------------------
    def start_schedule(self, platform: str, post: Post) -> None:
        """Post each chat's daily digest through `post(chat, text)`, and purge expired transcripts,
        until aclose(). State lives in SQLite, so a restart picks up where it left off (a slot missed
        while down is posted once on start)."""
        wake = asyncio.Event()
        self._wakes.append(wake)
        self._schedulers.append(asyncio.create_task(self._run_schedule(platform, post, wake),
                                                    name=f"earshot-digests-{platform}"))

    def wake(self) -> None:
        """Look at the schedule now (a schedule changed, or a test moved the clock)."""
        for event in self._wakes:
            event.set()

    async def _run_schedule(self, platform: str, post: Post, wake: asyncio.Event) -> None:
        while True:
            wake.clear()
            due: float | None = None
            try:
                due = await self.tick(platform, post)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the digest schedule failed; trying again in a minute")
            wait = TICK_SECONDS if due is None else min(TICK_SECONDS, max(0.0, due - self.clock()))
            try:
                await asyncio.wait_for(wake.wait(), wait)
            except TimeoutError:
                pass

    async def tick(self, platform: str, post: Post) -> float | None:
        """One pass: purge if it's time, post the digests that are due. Returns when the next one is due.
        Processes sharing a PostgreSQL database take turns: one passes, the others skip (and look again)."""
        async with self.store.exclusive(f"digests:{platform}") as mine:
            if not mine:
                return None
            return await self._tick(platform, post)

    async def _tick(self, platform: str, post: Post) -> float | None:
        now = self.clock()
        if now - self._last_purge >= PURGE_EVERY:
            await self.purge()
            self._last_purge = now
        due: float | None = None
        for chat in await self.store.scheduled(platform):
            if zone_of(chat.tz) is None:
                continue
            slot = last_slot(chat.daily, chat.tz, now)
            if slot > max(chat.last_scheduled, chat.scheduled_since):
                await self._post(chat, slot, post)
            upcoming = next_slot(chat.daily, chat.tz, now)
            due = upcoming if due is None else min(due, upcoming)
        return due

    async def _post(self, chat: ChatDigest, slot: float, post: Post) -> None:
        key = ChatKey(chat.platform, chat.chat_id)
        try:
            # nobody asked, so no one's app language: the chat's /lang, else the notes' own language
            digest = await self.summary(key, None, mark=False, lang=await self.history.settings.lang(key))
            if digest.notes:     # a quiet day posts nothing rather than "nothing to sum up" every day
                await post(chat.key, digest.text)
                await self.store.update(chat.platform, chat.chat_id, self.clock(), last_digest=digest.until,
                                        last_note=digest.last_note)
        except asyncio.CancelledError:
            raise
        except EarshotError as err:
            log.error("scheduled digest for %s %s failed: %s", chat.platform, chat.chat_id, err.operator_message)
        except Exception:
            log.exception("scheduled digest for %s %s failed", chat.platform, chat.chat_id)
        finally:
            # marked even when it failed: the notes stay for the next digest instead of a retry every minute
            await self.store.update(chat.platform, chat.chat_id, self.clock(), last_scheduled=slot)

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


_tokens = estimate_tokens


def _fit(text: str, budget: int) -> list[str]:
    """`text` in pieces of at most `budget` tokens (by the cautious estimate), cut at spaces when possible."""
    return split_text(text, max(3, (budget - 5) * 3), size=lambda piece: len(piece.encode("utf-8"))) or [""]


def _pack(lines: list[str], budget: int) -> list[list[str]]:
    """Consecutive lines grouped so each group's estimate stays within `budget`; order is kept."""
    batches: list[list[str]] = [[]]
    used = 0
    for line in lines:
        cost = _tokens(line) + 1          # +1: the blank line between them
        if batches[-1] and used + cost > budget:
            batches.append([])
            used = 0
        batches[-1].append(line)
        used += cost
    return batches
