"""The one entry point adapters call: a Request in, a Reply out."""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import audio, ffmpeg, messages, prompts
from .access import AccessPolicy, MeteredClient, UsageReport
from .config import AUDIO_TOKENS_PER_SECOND, SECONDS_HEARD, Settings, limits_for
from .dashscope import DashScopeClient, ModelAnswer, audio_item, text_item
from .errors import ModelAuthError, NeedsAudio, NeedsText
from .history import HistoryStore, Turn
from .models import ChatKey, Part, Progress, ProgressCallback, Reply, Request, Sender, Task, Usage
from .timestamps import mmss, shift

if TYPE_CHECKING:
    from .digest import DigestService

logger = logging.getLogger(__name__)

# tasks whose answer reads better with the conversation so far; the others stand alone
CONVERSATIONAL = {Task.CHAT, Task.ASK, Task.FOLLOW_UP}
# tasks where the model was asked for mm:ss times that must move with the chunk
TIMED = {Task.EVENTS, Task.ASK, Task.SENTIMENT}
# what a request may spend on words besides the history: prompts, the answer's own text, slack
PROMPT_RESERVE = 400


def estimate_tokens(text: str) -> int:
    """A cautious count: UTF-8 bytes / 3 is about one token per CJK character and above English's rate."""
    return len(text.encode("utf-8")) // 3 + 4


def audio_tokens(seconds: float) -> int:
    return max(1, math.ceil(min(seconds, SECONDS_HEARD))) * AUDIO_TOKENS_PER_SECOND


@dataclass
class _Call:
    """One model call's outcome, kept for the reply's usage and request ids."""

    answer: ModelAnswer
    part: Part | None = None


class Assistant:
    """Turns Requests into Replies: decode and split audio, ask the model, keep per-chat history.

    Use as `async with Assistant(settings) as assistant:`. Safe to call concurrently: different
    chats run in parallel, turns within one chat run in order.
    """

    def __init__(self, settings: Settings, *, client: DashScopeClient | None = None,
                 history: HistoryStore | None = None) -> None:
        self.settings = settings
        ffmpeg.choose(settings.ffmpeg)
        self.limits = limits_for(settings.model)
        key = settings.dashscope_api_key.get_secret_value() if settings.dashscope_api_key else ""
        # metered: every answer's token usage is charged to the request being served (core.access)
        self._client = MeteredClient(client or DashScopeClient(
            key, settings.dashscope_base_url, settings.model, timeout=settings.request_timeout,
            retry_budget=settings.retry_budget, max_concurrency=settings.global_concurrency))
        self._has_key = bool(key) or client is not None
        self.history = history or HistoryStore(settings.db_path)
        self.access = AccessPolicy(settings, self.history)
        self._locks: dict[ChatKey, asyncio.Lock] = {}

    async def __aenter__(self) -> Assistant:
        await self.history.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP pool and the database."""
        if "digests" in self.__dict__:       # stop its scheduler and listeners before the pool goes
            await self.digests.aclose()
        await self._client.aclose()
        await self.history.close()

    async def handle(self, request: Request, *, progress: ProgressCallback | None = None,
                     stream: bool = False) -> Reply:
        """Answer one turn. Raises core.errors.EarshotError subclasses with a user_message.

        progress: awaited as chunks of long audio finish (Progress(done, total)), and, when
        stream=True, with Progress(..., partial=text so far) while the final answer is written.
        """
        # who may ask, how fast, how much: refused before anything is decoded or sent to the model
        async with self.access.admit(request):
            self._check(request)
            lock = self._locks.setdefault(request.chat, asyncio.Lock())
            try:
                async with lock:
                    return await self._handle(request, progress, stream)
            finally:
                if not lock.locked() and self._locks.get(request.chat) is lock:
                    del self._locks[request.chat]  # idle chats hold no memory

    def _check(self, request: Request) -> None:
        """Refuse what can't work before spending anything."""
        if request.task is Task.FOLLOW_UP:
            if not (request.text or "").strip():
                raise NeedsText(messages.NOTHING_TO_FOLLOW)
        elif request.audio is None:
            raise NeedsAudio(messages.NO_AUDIO_YET)
        if request.task is Task.ASK and not (request.text or "").strip():
            raise NeedsText(messages.NEED_QUESTION)
        if request.task is Task.TRANSLATE and not (request.text or "").strip():
            raise NeedsText(messages.NEED_LANGUAGE)
        if not self._has_key:
            raise ModelAuthError(messages.NO_KEY_CLI)

    async def _handle(self, request: Request, progress: ProgressCallback | None, stream: bool) -> Reply:
        if request.task is Task.FOLLOW_UP:
            return await self._follow_up(request, progress if stream else None)
        reply = await self._hear(request, progress, stream)
        await self.history.add_exchange(
            request.chat, request.user_id,
            prompts.describe_audio_turn(request.task, reply.duration or 0.0, request.text), reply.text,
            reply.usage, audio_seconds=reply.duration)
        return reply

    async def _hear(self, request: Request, progress: ProgressCallback | None, stream: bool) -> Reply:
        """The audio pipeline: decode, split, ask per chunk, combine. Touches no history."""
        assert request.audio is not None
        s = self.settings
        prepared = await asyncio.to_thread(audio.prepare, request.audio, max_bytes=s.max_file_bytes,
                                           max_seconds=s.max_audio_seconds, timeout=s.ffmpeg_timeout)
        chunks = prepared.chunks
        # long recordings are costly: refuse one that today's budgets can't cover before asking anything
        await self.access.afford(sum(audio_tokens(c.end - c.start) + PROMPT_RESERVE for c in chunks))
        if len(chunks) == 1:
            calls = [await self._one_clip(request, chunks[0], progress if stream else None)]
            text = calls[0].answer.text.strip()
        else:
            calls = await self._map(request, chunks, progress)
            text, extra = await self._reduce(request, calls, progress if stream else None)
            if extra:
                calls.append(extra)
        usage = sum((c.answer.usage for c in calls), Usage())
        parts = tuple(c.part for c in calls if c.part is not None)
        return Reply(text=text, task=request.task, parts=parts, usage=usage, duration=prepared.duration,
                     request_ids=tuple(c.answer.request_id for c in calls if c.answer.request_id))

    # --- one clip ---------------------------------------------------------------------------
    async def _one_clip(self, request: Request, chunk: audio.Chunk,
                        progress: ProgressCallback | None) -> _Call:
        instruction = prompts.clip_instruction(request.task, request.text, voice_chat=self.limits.voice_chat)
        content = [audio_item(chunk.data)] + ([text_item(instruction)] if instruction else [])
        spent = audio_tokens(chunk.end - chunk.start) + estimate_tokens(instruction or "")
        history = await self._history_for(request, spent)
        answer = await self._client.generate(
            self._messages(history, content), max_tokens=self.limits.max_output,
            on_delta=_streamer(progress, 1, 1))
        return _Call(answer, Part(chunk.start, chunk.end, answer.text.strip()))

    # --- long audio: map over chunks, then stitch or combine -------------------------------
    async def _map(self, request: Request, chunks: list[audio.Chunk],
                   progress: ProgressCallback | None) -> list[_Call]:
        instruction = prompts.part_instruction(request.task, request.text)
        gate = asyncio.Semaphore(self.settings.chunk_concurrency)
        done = 0
        if progress:
            await progress(Progress(0, len(chunks)))

        async def ask(chunk: audio.Chunk) -> _Call:
            nonlocal done
            async with gate:
                content = [audio_item(chunk.data), text_item(instruction)]
                answer = await self._client.generate(self._messages([], content),
                                                     max_tokens=self.limits.max_output)
            done += 1
            if progress:
                await progress(Progress(done, len(chunks)))
            text = answer.text.strip()
            if request.task in TIMED:
                text = shift(text, chunk.start)
            return _Call(answer, Part(chunk.start, chunk.end, text))

        tasks = [asyncio.ensure_future(ask(c)) for c in chunks]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for t in tasks:  # one failed part fails the request: stop spending on the rest
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _reduce(self, request: Request, calls: list[_Call],
                      progress: ProgressCallback | None) -> tuple[str, _Call | None]:
        parts = [c.part for c in calls if c.part is not None]
        labelled = [(mmss(p.start), p.text) for p in parts]
        if not prompts.needs_combining(request.task):
            return "\n\n".join(f"[{mark}] {text}" for mark, text in labelled), None
        instruction = prompts.combine_instruction(request.task, request.text, labelled)
        history = await self._history_for(request, estimate_tokens(instruction))
        answer = await self._client.generate(
            self._messages(history, [text_item(instruction)]), max_tokens=self.limits.max_output,
            on_delta=_streamer(progress, len(parts), len(parts)))
        return answer.text.strip(), _Call(answer)

    # --- text follow-ups ----------------------------------------------------------------------
    async def _follow_up(self, request: Request, progress: ProgressCallback | None) -> Reply:
        text = (request.text or "").strip()
        history = await self._history_for(request, estimate_tokens(text))
        if not history:
            raise NeedsAudio(messages.NOTHING_TO_FOLLOW)
        answer = await self._client.generate(self._messages(history, [text_item(text)]),
                                             max_tokens=self.limits.max_output,
                                             on_delta=_streamer(progress, 1, 1))
        reply_text = answer.text.strip()
        await self.history.add_exchange(request.chat, request.user_id, text, reply_text, answer.usage)
        return Reply(text=reply_text, task=request.task, usage=answer.usage,
                     request_ids=(answer.request_id,) if answer.request_id else ())

    async def _history_for(self, request: Request, spent: int) -> list[Turn]:
        """The chat's latest turns that fit beside this request in the model's input limit."""
        if request.task not in CONVERSATIONAL or self.settings.history_turns == 0:
            return []
        turns = await self.history.recent_turns(request.chat, self.settings.history_turns)
        budget = self.limits.max_input - spent - estimate_tokens(prompts.SYSTEM) - PROMPT_RESERVE
        kept: list[Turn] = []
        for turn in reversed(turns):  # newest first, so the oldest are the ones dropped
            budget -= estimate_tokens(turn.text)
            if budget < 0:
                break
            kept.append(turn)
        kept.reverse()
        while kept and kept[0].role != "user":  # a conversation starts with the user
            kept.pop(0)
        return kept

    @staticmethod
    def _messages(history: list[Turn], content: list[dict]) -> list[dict]:
        system = prompts.SYSTEM + (" " + prompts.FOLLOW_UP_NOTE if history else "")
        return [
            {"role": "system", "content": [text_item(system)]},
            *({"role": t.role, "content": [text_item(t.text)]} for t in history),
            {"role": "user", "content": content},
        ]

    # --- group digests (core.digest) ---------------------------------------------------------
    @functools.cached_property
    def digests(self) -> DigestService:
        """Opt-in listening, digests, their schedule, retention and forgetting, for the adapters."""
        from .digest import DigestService   # core.digest builds on this module
        return DigestService(self)

    async def transcribe_quietly(self, request: Request) -> Reply:
        """A transcript through the usual pipeline that leaves the chat's history alone (background listening)."""
        request = dataclasses.replace(request, task=Task.TRANSCRIBE)
        # the same lists and budgets as any request; quietly: no rate limit, and refusing it tells nobody
        async with self.access.admit(request, quietly=True):
            self._check(request)
            return await self._hear(request, None, False)

    async def complete(self, instruction: str, *, max_tokens: int | None = None) -> ModelAnswer:
        """One text-only model call with the system prompt and no history. The caller keeps it within
        `self.limits.max_input` (see estimate_tokens) and charges it: inside `self.access.admit`, after
        `afford` (core.digest does both for a digest's calls)."""
        if not self._has_key:
            raise ModelAuthError(messages.NO_KEY_CLI)
        return await self._client.generate(self._messages([], [text_item(instruction)]),
                                           max_tokens=min(max_tokens or self.limits.max_output,
                                                          self.limits.max_output))

    # --- chat state the adapters need -------------------------------------------------------
    async def reset(self, chat: ChatKey) -> None:
        """Forget the chat's history (the reset command)."""
        await self.history.reset(chat)

    async def usage(self, chat: ChatKey) -> Usage:
        """Tokens this chat has used today (UTC)."""
        return await self.history.usage_today(chat)

    async def check_access(self, chat: ChatKey, sender: Sender, *, spending: bool = True,
                           count: bool = False) -> None:
        """Raise AccessRefused (maybe silent) if this sender may not ask now; adapters call it before
        downloading anything. handle() checks again, so skipping it costs bandwidth, never tokens.
        spending=False: only whether they may use earshot at all (commands that cost nothing);
        count=True: this is the request itself, accepted as a job: it spends one of the sender's requests
        a minute now, before anything is downloaded (the job's Request then says `admitted`)."""
        await self.access.check(chat, sender, spending=spending, count=count and spending)

    async def usage_report(self, chat: ChatKey, sender: Sender, *, private: bool = False) -> UsageReport:
        """/usage: today's tokens and what is left for the sender, the chat and everyone (admins, in a
        private chat: top users and chats). Raises AccessRefused for people not allowed to use earshot."""
        return await self.access.report(chat, sender, private=private)

    async def remember_audio(self, chat: ChatKey, ref: str) -> None:
        """Remember an opaque platform reference (a file id) as the chat's latest audio."""
        await self.history.remember_audio(chat, ref)

    async def latest_audio(self, chat: ChatKey) -> str | None:
        """The chat's most recent audio reference, or None."""
        return await self.history.latest_audio(chat)

    async def claim_event(self, platform: str, event_id: str) -> bool:
        """True the first time an event id is seen (kept in SQLite across restarts), False after."""
        return await self.history.claim_event(platform, event_id)


def _streamer(progress: ProgressCallback | None, done: int,
              total: int) -> Callable[[str], Awaitable[None]] | None:
    """An on_delta callback that reports the text so far, or None when nobody is listening."""
    if progress is None:
        return None
    so_far: list[str] = []

    async def on_delta(delta: str) -> None:
        so_far.append(delta)
        await progress(Progress(done, total, partial="".join(so_far)))

    return on_delta
