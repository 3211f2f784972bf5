"""The one entry point adapters call: a Request in, a Reply out."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from core import metrics
from core.audio import ffmpeg, pipeline, speech
from core.audio.timestamps import mmss, shift
from core.config import Settings
from core.errors import (
    AnswerNotSaved,
    AudioError,
    ModelAuthError,
    ModelError,
    NeedsAudio,
    StorageError,
    VoiceUnavailable,
)
from core.flow.access import AccessPolicy, MeteredClient
from core.flow.commands import check_request
from core.flow.together import all_or_nothing
from core.model import catalog, prompts
from core.model.catalog import Backend, Job, ModelInfo
from core.model.dashscope import ModelAnswer, audio_item, text_item
from core.model.model_client import ModelClient, has_key, make_client
from core.model.tokens import PROMPT_RESERVE, estimate_tokens
from core.store.answer_cache import STANDALONE, AnswerCache, answer_key, audio_digest
from core.store.history import HistoryStore, Turn
from core.values import TIMED, Audio, ChatKey, Part, Progress, ProgressCallback, Reply, Request, Speech, Task, Usage
from core.words import messages
from core.words.i18n import Phrase

logger = logging.getLogger(__name__)

# tasks whose answer reads better with the conversation so far; the others stand alone
CONVERSATIONAL = {Task.CHAT, Task.ASK, Task.FOLLOW_UP}
# tasks where the model was asked for mm:ss times that must move with the chunk

Fetch = Callable[[], Awaitable[Audio]]

# the model the request being served uses (its chat's /model); None: EARSHOT_MODEL. A context variable, so the
# concurrent requests of different chats, and the chunk calls each spawns, each see their own.
_CHAT_MODEL: ContextVar[str | None] = ContextVar("earshot_chat_model", default=None)


@dataclass(frozen=True)
class _Model:
    """One model a chat may use (EARSHOT_MODELS): the settings that name it, its catalog facts, its client."""

    settings: Settings
    info: ModelInfo
    client: MeteredClient
    has_key: bool


# tasks whose answer may come back spoken (the chat's /voice setting, or the CLI's --speak)
SPOKEN = {Task.CHAT, Task.ASK}


def can_speak(settings: Settings) -> bool:
    """Whether answers can come back spoken with these settings (EARSHOT_MODEL speaks, or the voice model
    EARSHOT_TTS_MODEL reads them): the one question the CLI's --speak and the chats' /voice ask before anything
    is read or sent."""
    if settings.model_info.speaks:
        return True
    return settings.speaker is not None and settings.info_of(settings.speaker).job is Job.TTS


def speaking_models() -> tuple[str, ...]:
    """The DashScope models that speak, for telling an operator which EARSHOT_MODEL would."""
    return tuple(name for name, info in catalog.MODELS.items()
                 if info.speaks and info.backend is not catalog.Backend.OPENAI and "latest" not in name)


def choose_voice(settings: Settings, voice: str | None = None) -> str:
    """The model's own spelling of `voice` (default EARSHOT_VOICE); VoiceUnavailable when the model can't
    speak or has no such voice. A model that can't speak answers aloud through the voice model
    (EARSHOT_TTS_MODEL), whose voices are then the ones to choose from."""
    info = settings.model_info
    if not info.speaks and settings.speaker:
        spoken_by = settings.info_of(settings.speaker)
        if spoken_by.job is Job.TTS:
            info = spoken_by
    if not info.speaks:
        raise VoiceUnavailable(messages.CANNOT_SPEAK,
                               fmt=dict(model=settings.model, models=Phrase(messages.SPEAKING_MODELS)))
    wanted = (voice or settings.voice).strip()
    match = next((v for v in info.voices if v.lower() == wanted.lower()), None)
    if match is None:
        raise VoiceUnavailable(messages.UNKNOWN_VOICE,
                               fmt=dict(model=settings.model, voice=wanted, voices=", ".join(info.voices)))
    return match


class _Lazy:
    """A client built on first use: the recognizer and the voice cost a one-shot command that never needs
    them nothing (no imports, no connection pool)."""

    def __init__(self, make: Callable[[], object]) -> None:
        self._make = make
        self._client: object | None = None

    def _built(self) -> object:
        if self._client is None:
            self._client = self._make()
        return self._client

    def __getattr__(self, name: str) -> object:
        return getattr(self._built(), name)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()  # type: ignore[attr-defined]


@dataclass
class _Call:
    """One model call's outcome, kept for the reply's usage and request ids."""

    answer: ModelAnswer
    part: Part | None = None


class Assistant:
    """Turns Requests into Replies: decode and split audio, ask the model, keep per-chat history.

    Use as `async with Assistant(settings) as assistant:` (the bots get theirs from core.app). Entry points:
    `handle` (a turn), `complete` (one text-only call), `transcribe_quietly` (listening for digests); voices
    (`voice_on`/`voice_off`) because what a model can speak is the pipeline's knowledge.

    Safe to call concurrently. It keeps no order of its own: a chat's turns are put in order by the job
    runner (core.flow.runner), which answers them one at a time; the CLI asks one thing at a time.
    """

    def __init__(self, settings: Settings, *, client: ModelClient | None = None,
                 history: HistoryStore | None = None, access: AccessPolicy | None = None,
                 cache: AnswerCache | None = None) -> None:
        ffmpeg.choose(settings.ffmpeg)
        # one client per allowed model, built up front (cheap: the pools open on first use); a chat's /model
        # picks one per request, and with it the model's window, token rates and limits (core.model.catalog), which
        # drive chunking, budgets and history. Metered: every answer's tokens are charged to its request.
        self._default = settings.model
        self._models: dict[str, _Model] = {}
        for name in settings.models:
            own = settings.for_model(name)
            given = client if name == settings.model else None
            self._models[name] = _Model(own, own.model_info, MeteredClient(given or make_client(own)),
                                        has_key(own) or given is not None)
        # the recognizer that writes transcripts (EARSHOT_ASR_MODEL), whichever model a chat answers with
        self._recognizer: _Model | None = None
        if settings.recognizer:
            info = settings.info_of(settings.recognizer)
            if info.job is Job.ASR:
                self._recognizer = _Model(settings, info, MeteredClient(_Lazy(
                    functools.partial(make_client, settings, settings.recognizer, info))), has_key(settings, info))
            else:
                logger.warning("EARSHOT_ASR_MODEL=%s is not a recognizer (it %s); the chat model transcribes. "
                               "Declare it in EARSHOT_MODEL_SPECS with \"job\": \"asr\"", settings.recognizer,
                               info.describe())
        # the voice that reads out answers of models that can't speak (EARSHOT_TTS_MODEL)
        self._speaker: _Model | None = None
        if settings.speaker:
            info = settings.info_of(settings.speaker)
            if info.job is Job.TTS:
                self._speaker = _Model(settings, info, MeteredClient(_Lazy(
                    functools.partial(make_client, settings, settings.speaker, info))), has_key(settings, info))
            else:
                logger.warning("EARSHOT_TTS_MODEL=%s is not a voice (it %s); only models that speak answer "
                               "aloud", settings.speaker, info.describe())
        self.history = history or HistoryStore(settings.db_path)
        self.access = access or AccessPolicy(settings, self.history)
        self.cache = cache or AnswerCache(self.history, settings.cache_days)

    # --- the chat's model ----------------------------------------------------------------------
    @property
    def _chosen(self) -> _Model:
        return self._models[_CHAT_MODEL.get() or self._default]

    @property
    def settings(self) -> Settings:
        """The settings, naming the model of the request being served (EARSHOT_MODEL outside one)."""
        return self._chosen.settings

    @property
    def model(self) -> ModelInfo:
        """The catalog's facts of the model in use: window, token rates, limits, voices."""
        return self._chosen.info

    limits = model          # the same facts, under the name the token budgeting reads

    @property
    def _client(self) -> MeteredClient:
        return self._chosen.client

    @property
    def _has_key(self) -> bool:
        return self._chosen.has_key

    @property
    def models(self) -> tuple[str, ...]:
        """The models chats may choose (EARSHOT_MODELS), the default first."""
        return tuple(self._models)

    async def chat_model(self, chat: ChatKey) -> str:
        """The model that answers in `chat`: its /model while the operator still allows it, else EARSHOT_MODEL."""
        chosen = await self.history.settings.model(chat)
        return chosen if chosen in self._models else self._default

    async def use_model(self, chat: ChatKey, name: str | None) -> None:
        """/model NAME: `name` (one of `models`) answers in this chat from now on; None: the default."""
        assert name is None or name in self._models
        await self.history.settings.set_model(chat, None if name == self._default else name)

    @contextlib.contextmanager
    def _using(self, name: str) -> Iterator[None]:
        token = _CHAT_MODEL.set(name)
        try:
            yield
        finally:
            _CHAT_MODEL.reset(token)

    async def __aenter__(self) -> Assistant:
        await self.history.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP pool and the database."""
        for model in (*self._models.values(), *filter(None, [self._recognizer, self._speaker])):
            await model.client.aclose()
        await self.history.close()

    @metrics.handled
    async def handle(self, request: Request, *, progress: ProgressCallback | None = None,
                     stream: bool = False, fetch: Fetch | None = None) -> Reply:
        """Answer one turn. Raises core.errors.EarshotError subclasses with a user_message.

        progress: awaited as chunks of long audio finish (Progress(done, total)), and, when
        stream=True, with Progress(..., partial=text so far) while the final answer is written.
        fetch: how to get the audio when request.audio is None; called only after access is granted,
        and not at all when the answer is cached under request.audio_id.
        """
        # who may ask, how fast, how much: refused before anything is downloaded, decoded or sent to the model
        # the chat's settings (model, voice, spoken language) are read once, as one row, for the whole request
        with self.history.settings.read_once():
            async with self.access.admit(request):
                with self._using(await self.chat_model(request.chat)):
                    self._check(request, fetch is not None)
                    return await self._handle(request, progress, stream, fetch)

    def _check(self, request: Request, can_fetch: bool = False) -> None:
        """Refuse what can't work before spending anything."""
        check_request(request.task, request.text, request.audio is not None or can_fetch)
        if not self._has_key:
            raise ModelAuthError(messages.NO_KEY_CLI)

    async def _handle(self, request: Request, progress: ProgressCallback | None, stream: bool,
                      fetch: Fetch | None = None) -> Reply:
        if request.task is Task.FOLLOW_UP:
            return await self._follow_up(request, progress if stream else None)
        key, reply = None, None
        if self._cacheable(request):
            request, key = await self._cache_key(request, fetch)
            reply = await self.cache.get(key, request.task)
            if reply is not None:     # heard before: no download, no model call, no tokens
                logger.info("%s in %s/%s answered from the cache", request.task.value, request.chat.platform,
                            request.chat.chat_id)
        heard = reply is None
        if reply is None:
            if request.audio is None:
                assert fetch is not None
                request = dataclasses.replace(request, audio=await fetch())
            reply = await self._hear(request, progress, stream)
        try:
            if heard and key is not None:
                await self.cache.put(key, request.chat, reply)
            await self.history.add_exchange(
                request.chat, request.user_id,
                prompts.describe_audio_turn(request.task, reply.duration or 0.0, request.text), reply.text,
                reply.usage, audio_seconds=reply.duration)
        except StorageError as err:     # the answer is in hand (and paid for): it goes with the error
            raise AnswerNotSaved(err.operator_message, reply) from None
        return reply

    def _cacheable(self, request: Request) -> bool:
        """Only answers that stand alone: never voice chat, nor a question that may read the history."""
        return self.cache.enabled and request.voice is None and (request.task in STANDALONE or (
            request.task is Task.ASK and self.settings.history_turns == 0))

    async def _cache_key(self, request: Request, fetch: Fetch | None) -> tuple[Request, str]:
        """The answer's cache key; the audio is fetched only when its platform id isn't known yet."""
        digest = None
        if request.audio_id:
            digest = await self.cache.digest_of(request.chat.platform, request.audio_id)
        if digest is None:
            if request.audio is None:
                assert fetch is not None
                request = dataclasses.replace(request, audio=await fetch())
            assert request.audio is not None
            digest = await asyncio.to_thread(audio_digest, request.audio.data)
            if request.audio_id:
                await self.cache.remember_source(request.chat, request.audio_id, digest)
        model = self.settings.model
        if self._recognizes(request):        # the recognizer's transcript, in the language pinned (or detected)
            assert self._recognizer is not None
            model = f"{self._recognizer.settings.recognizer}:{await self._spoken(request) or 'auto'}"
        return request, answer_key(digest, request.task, prompts.language_key(request.task, request.text, request.lang),
                                   model)

    async def _hear(self, request: Request, progress: ProgressCallback | None, stream: bool) -> Reply:
        """The audio pipeline: decode, split, ask per chunk, combine. Touches no history."""
        assert request.audio is not None
        if self._recognizes(request):
            return await self._recognize(request, progress)
        s = self.settings
        voice = await self._voice_for(request)
        prepared = await asyncio.to_thread(pipeline.prepare, request.audio, max_bytes=s.max_file_bytes,
                                           max_seconds=s.max_audio_seconds, timeout=s.ffmpeg_timeout,
                                           chunk_seconds=self.model.window)
        chunks = prepared.chunks
        # long recordings are costly: refuse one that today's budgets can't cover before asking anything
        await self.access.afford(sum(self.audio_tokens(c.end - c.start) + PROMPT_RESERVE for c in chunks))
        own = voice if self.model.speaks else None     # the model speaks for itself; else the voice model reads
        if len(chunks) == 1:
            calls = [await self._one_clip(request, chunks[0], progress if stream else None, own)]
            text = calls[0].answer.text.strip()
        else:
            calls = await self._map(request, chunks, progress)
            text, extra = await self._reduce(request, calls, progress if stream else None, own)
            calls += extra
        spoken = None
        if own:
            spoken = await self._speech(calls[-1].answer, own)
        elif voice:
            spoken, read = await self._read_aloud(text, voice)
            if read is not None:
                calls.append(_Call(read))
        usage = sum((c.answer.usage for c in calls), Usage())
        parts = tuple(c.part for c in calls if c.part is not None)
        return Reply(text=text, task=request.task, parts=parts, usage=usage, duration=prepared.duration,
                     request_ids=tuple(c.answer.request_id for c in calls if c.answer.request_id),
                     speech=spoken)

    # --- transcripts by the recognizer ----------------------------------------------------------
    def _recognizes(self, request: Request) -> bool:
        return request.task is Task.TRANSCRIBE and self._recognizer is not None

    async def _spoken(self, request: Request) -> str | None:
        """The language spoken in the audio: the request's (CLI --spoken), else the chat's /spoken."""
        return request.spoken or await self.history.settings.spoken(request.chat)

    async def spoken(self, chat: ChatKey) -> str | None:
        """The language this chat pinned with /spoken, or None (the recognizer detects it)."""
        return await self.history.settings.spoken(chat)

    async def set_spoken(self, chat: ChatKey, code: str | None) -> None:
        """/spoken CODE (one of core.model.catalog.SPOKEN_LANGUAGES) or /spoken auto (None)."""
        await self.history.settings.set_spoken(chat, code)

    @property
    def recognizer(self) -> str | None:
        """The model that writes transcripts (EARSHOT_ASR_MODEL), or None: the chat's model does."""
        return self._recognizer.settings.recognizer if self._recognizer else None

    async def _recognize(self, request: Request, progress: ProgressCallback | None) -> Reply:
        """A transcript by the recognizer. Audio it takes as it is and that fits one request goes byte for
        byte (a Telegram voice note: no decode, no encode); anything else is decoded and cut at pauses into
        parts within the recognizer's window, as compact MP3."""
        assert request.audio is not None and self._recognizer is not None
        s, rec = self.settings, self._recognizer
        if not rec.has_key:
            raise ModelAuthError(messages.NO_KEY_CLI)
        spoken = await self._spoken(request)
        pipeline.check_size(request.audio.data, s.max_file_bytes)
        whole = pipeline.as_is(request.audio.data, rec.info.formats, max_encoded=rec.info.max_bytes,
                            max_seconds=min(rec.info.window, s.max_audio_seconds))
        if whole is not None:
            await self.access.afford(rec.info.audio_tokens(whole.seconds) + PROMPT_RESERVE)
            answer = await rec.client.recognize(request.audio.data, mime=whole.mime, fmt=whole.format,
                                                language=spoken)
            text = answer.text.strip()
            if not text:             # sent as it was, so never checked for silence: the recognizer heard none
                raise AudioError(messages.SILENT)
            return Reply(text=text, task=request.task, parts=(Part(0.0, whole.seconds, text),), usage=answer.usage,
                         duration=whole.seconds, request_ids=(answer.request_id,) if answer.request_id else (),
                         language=answer.language, emotion=answer.emotion)
        prepared = await asyncio.to_thread(pipeline.prepare, request.audio, max_bytes=s.max_file_bytes,
                                           max_seconds=s.max_audio_seconds, timeout=s.ffmpeg_timeout,
                                           chunk_seconds=rec.info.window)
        chunks = prepared.chunks
        await self.access.afford(sum(rec.info.audio_tokens(c.end - c.start) + PROMPT_RESERVE for c in chunks))
        gate = asyncio.Semaphore(s.chunk_concurrency)
        done = 0
        if progress and len(chunks) > 1:
            await progress(Progress(0, len(chunks)))

        async def hear(chunk: pipeline.Chunk) -> tuple[Part, ModelAnswer]:
            nonlocal done
            async with gate:
                answer = await rec.client.recognize(chunk.data, mime="audio/mpeg", fmt="mp3", language=spoken)
            done += 1
            if progress and len(chunks) > 1:
                await progress(Progress(done, len(chunks)))
            return Part(chunk.start, chunk.end, answer.text.strip()), answer

        heard = [h for h in await all_or_nothing(hear(c) for c in chunks) if h[0].text]
        if not heard:
            raise AudioError(messages.SILENT)
        parts = tuple(p for p, _ in heard)
        answers = [a for _, a in heard]
        text = parts[0].text if len(parts) == 1 else "\n\n".join(f"[{mmss(p.start)}] {p.text}" for p in parts)
        # the language most of the audio is in; the emotion of its first part
        langs = [a.language for a in answers if a.language]
        return Reply(text=text, task=request.task, parts=parts, usage=sum((a.usage for a in answers), Usage()),
                     duration=prepared.duration, request_ids=tuple(a.request_id for a in answers if a.request_id),
                     language=max(set(langs), key=langs.count) if langs else None,
                     emotion=next((a.emotion for a in answers if a.emotion), None))

    def audio_tokens(self, seconds: float) -> int:
        """What the model charges to hear `seconds` of audio in one item."""
        return self.model.audio_tokens(seconds)

    # --- spoken answers ---------------------------------------------------------------------
    def check_voice(self, voice: str | None = None) -> str:
        """The voice to speak in (see choose_voice)."""
        return choose_voice(self.settings, voice)

    async def voice_on(self, chat: ChatKey, voice: str | None = None) -> str:
        """/voice on [VOICE]: answers in this chat come back spoken; the voice chosen. Raises
        VoiceUnavailable, storing nothing, when the model can't speak or lacks the voice."""
        with self._using(await self.chat_model(chat)):
            chosen = self.check_voice(voice)
        await self.history.set_voice(chat, chosen)
        return chosen

    async def voice_off(self, chat: ChatKey) -> None:
        """/voice off: answers in this chat are text again."""
        await self.history.set_voice(chat, None)

    async def voice(self, chat: ChatKey) -> str | None:
        """The voice this chat's answers are spoken in, or None."""
        return await self.history.voice(chat)

    async def _voice_for(self, request: Request) -> str | None:
        if request.task not in SPOKEN:
            return None
        if request.voice is not None:
            return self.check_voice(request.voice)
        stored = await self.history.voice(request.chat)
        if stored is None or not (self.model.speaks or self._speaker is not None):
            return None      # the chat chose a voice on a model since switched away from: answer in text
        try:
            return self.check_voice(stored)
        except VoiceUnavailable:
            return self.check_voice(None)

    async def _read_aloud(self, text: str, voice: str) -> tuple[Speech | None, ModelAnswer | None]:
        """The answer's text spoken by the voice model (EARSHOT_TTS_MODEL) in one voice note; when it fails,
        the answer still goes out, in text (the failure is logged for the operator)."""
        if self._speaker is None or not text.strip():
            return None, None
        try:
            answer = await self._speaker.client.speak(text, voice)
        except ModelError as exc:
            logger.warning("%s could not speak the answer; answering in text: %s", self._speaker.settings.speaker,
                           exc.operator_message)
            return None, None
        return await self._speech(answer, voice), answer

    async def _speech(self, answer: ModelAnswer, voice: str) -> Speech | None:
        if not answer.speech:
            logger.warning("asked %s for speech and got none; answering in text", self.settings.model)
            return None
        ogg = await asyncio.to_thread(speech.to_ogg_opus, answer.speech, timeout=self.settings.ffmpeg_timeout)
        return Speech(ogg, speech.seconds(answer.speech), voice)

    # --- one clip ---------------------------------------------------------------------------
    async def _one_clip(self, request: Request, chunk: pipeline.Chunk,
                        progress: ProgressCallback | None, voice: str | None = None) -> _Call:
        instruction = prompts.clip_instruction(request.task, request.text, voice_chat=self.limits.voice_chat,
                                               lang=request.lang)
        content = [audio_item(chunk.data, self.model.max_bytes)] + ([text_item(instruction)] if instruction else [])
        spent = self.audio_tokens(chunk.end - chunk.start) + estimate_tokens(instruction or "")
        history = await self._history_for(request, spent)
        answer = await self._client.generate(
            self._messages(history, content), max_tokens=self.limits.max_output,
            on_delta=_streamer(progress, 1, 1), **({"voice": voice} if voice else {}))
        return _Call(self._estimated(answer, chunk), Part(chunk.start, chunk.end, answer.text.strip()))

    def _estimated(self, answer: ModelAnswer, chunk: pipeline.Chunk) -> ModelAnswer:
        """vLLM counts audio inside its prompt tokens and reports no audio figure: estimate it from the
        chunk's length at the model's rate, marked as an estimate (DashScope always reports its own)."""
        if self.model.backend is not Backend.OPENAI or answer.usage.audio_tokens:
            return answer
        return dataclasses.replace(answer, usage=answer.usage.with_audio_estimate(
            self.audio_tokens(chunk.end - chunk.start)))

    # --- long audio: map over chunks, then stitch or combine -------------------------------
    async def _map(self, request: Request, chunks: list[pipeline.Chunk],
                   progress: ProgressCallback | None) -> list[_Call]:
        instruction = prompts.part_instruction(request.task, request.text, request.lang)
        gate = asyncio.Semaphore(self.settings.chunk_concurrency)
        done = 0
        if progress:
            await progress(Progress(0, len(chunks)))

        async def ask(chunk: pipeline.Chunk) -> _Call:
            nonlocal done
            async with gate:
                content = [audio_item(chunk.data, self.model.max_bytes), text_item(instruction)]
                answer = self._estimated(await self._client.generate(self._messages([], content),
                                                                     max_tokens=self.limits.max_output), chunk)
            done += 1
            if progress:
                await progress(Progress(done, len(chunks)))
            text = answer.text.strip()
            if request.task in TIMED:
                text = shift(text, chunk.start)
            return _Call(answer, Part(chunk.start, chunk.end, text))

        return await all_or_nothing(ask(c) for c in chunks)   # one failed part fails the request

    async def _reduce(self, request: Request, calls: list[_Call], progress: ProgressCallback | None,
                      voice: str | None = None) -> tuple[str, list[_Call]]:
        parts = [c.part for c in calls if c.part is not None]
        labelled = [(mmss(p.start), p.text) for p in parts]
        if not prompts.needs_combining(request.task):
            return "\n\n".join(f"[{mark}] {text}" for mark, text in labelled), []
        labelled, rounds = await self._combine_in_rounds(request, labelled)
        instruction = prompts.combine_instruction(request.task, request.text, labelled, request.lang)
        history = await self._history_for(request, estimate_tokens(instruction))
        answer = await self._client.generate(
            self._messages(history, [text_item(instruction)]), max_tokens=self.limits.max_output,
            on_delta=_streamer(progress, len(parts), len(parts)), **({"voice": voice} if voice else {}))
        return answer.text.strip(), [*rounds, _Call(answer)]

    async def _combine_in_rounds(self, request: Request,
                                 labelled: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[_Call]]:
        """Part answers too many for one request within the model's input limit (a very long recording) are
        combined a group at a time, in rounds, until the rest fit one: as digests do (core.flow.digest). Each part
        gets at most half a request and each answer a quarter, so every round at least halves their number."""
        head = estimate_tokens(prompts.combine_instruction(request.task, request.text, [], request.lang))
        budget = self.limits.max_input - estimate_tokens(prompts.SYSTEM) - head - PROMPT_RESERVE
        rounds: list[_Call] = []

        def size(part: tuple[str, str]) -> int:
            return estimate_tokens(f"[{part[0]}] {part[1]}") + 1

        while len(labelled) > 1 and sum(map(size, labelled)) > budget:
            labelled = [(mark, _cut(text, budget // 2 - 8)) for mark, text in labelled]
            groups: list[list[tuple[str, str]]] = [[]]
            for part in labelled:
                if groups[-1] and sum(map(size, groups[-1])) + size(part) > budget:
                    groups.append([])
                groups[-1].append(part)
            if len(groups) == len(labelled):     # never a round that combines nothing
                groups = [labelled[i:i + 2] for i in range(0, len(labelled), 2)]
            answers = await all_or_nothing(self._client.generate(
                self._messages([], [text_item(prompts.combine_instruction(request.task, request.text, group,
                                                                          request.lang))]),
                max_tokens=max(1, min(self.limits.max_output, budget // 4))) for group in groups)
            rounds += [_Call(a) for a in answers]
            labelled = [(group[0][0], a.text.strip()) for group, a in zip(groups, answers, strict=True)]
        return labelled, rounds

    # --- text follow-ups ----------------------------------------------------------------------
    async def _follow_up(self, request: Request, progress: ProgressCallback | None) -> Reply:
        text = (request.text or "").strip()
        history = await self._history_for(request, estimate_tokens(text))
        if not history:
            raise NeedsAudio(messages.NOTHING_TO_FOLLOW)
        asked = prompts.in_language(text, request.task, request.lang)
        answer = await self._client.generate(self._messages(history, [text_item(asked)]),
                                             max_tokens=self.limits.max_output,
                                             on_delta=_streamer(progress, 1, 1))
        reply = Reply(text=answer.text.strip(), task=request.task, usage=answer.usage,
                      request_ids=(answer.request_id,) if answer.request_id else ())
        try:
            await self.history.add_exchange(request.chat, request.user_id, text, reply.text, answer.usage)
        except StorageError as err:
            raise AnswerNotSaved(err.operator_message, reply) from None
        return reply

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

    # --- for group digests (core.flow.digest) -------------------------------------------------------
    async def transcribe_quietly(self, request: Request) -> Reply:
        """A transcript through the usual pipeline that leaves the chat's history alone (background listening)."""
        request = dataclasses.replace(request, task=Task.TRANSCRIBE)
        # the same lists and budgets as any request; quietly: no rate limit, and refusing it tells nobody
        async with self.access.admit(request, quietly=True):
            with self._using(await self.chat_model(request.chat)):
                self._check(request)
                return await self._hear(request, None, False)

    async def complete(self, instruction: str, *, max_tokens: int | None = None) -> ModelAnswer:
        """One text-only model call with the system prompt and no history. The caller keeps it within
        `self.limits.max_input` (see estimate_tokens) and charges it: inside `self.access.admit`, after
        `afford` (core.flow.digest does both for a digest's calls)."""
        if not self._has_key:
            raise ModelAuthError(messages.NO_KEY_CLI)
        return await self._client.generate(self._messages([], [text_item(instruction)]),
                                           max_tokens=min(max_tokens or self.limits.max_output,
                                                          self.limits.max_output))


def _cut(text: str, tokens: int) -> str:
    """`text` shortened to about `tokens` (as estimate_tokens counts them), at a character boundary."""
    room = max(0, (tokens - 4) * 3)
    data = text.encode("utf-8")
    return text if len(data) <= room else data[:room].decode("utf-8", errors="ignore") + "…"


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
