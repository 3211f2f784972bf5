"""What the bot does with each kind of update: thin glue from Telegram messages to `Assistant` calls."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from telegram import BotCommand, InputFile, Message, ReplyParameters, Update
from telegram.error import BadRequest, Forbidden, TelegramError
from telegram.ext import Application, CommandHandler, ContextTypes, MessageHandler, filters

from core import messages, subtitles
from core.config import DEFAULT_TELEGRAM_BASE, Settings
from core.access import usage_text
from core.errors import AccessRefused, AudioError, VoiceUnavailable
from core.jobs import Job, NewJob, Notice, Outcome, Undeliverable
from core.links import fetcher_for, find_link
from core.models import Audio, ChatKey, Progress, ProgressCallback, Reply, Task
from core.runner import JobRunner
from core.service import Assistant

from .convert import (PLATFORM, MediaRef, chat_key, command_of, is_addressed, link_media, media_of, original_name,
                      sender_of, strip_mention, topic_id)
from .digests import COMMANDS as DIGEST_COMMANDS, TelegramDigests, help_text
from .progress import EditThrottle, StatusMessage, Typing
from .render import MESSAGE_LIMIT, send_text, send_voice, with_flood_control

log = logging.getLogger(__name__)

TELEGRAM_DOWNLOAD_LIMIT = 20 * 1024 * 1024
DOWNLOAD_TIMEOUT = 120.0

HELP = """I listen to voice notes and audio files and answer about them, using Qwen's audio models.

• Send a voice note and I reply to it, as in a conversation.
• Add a caption to ask about it: "what time did she say?"
• Or send a link to an audio or video file.
• Then write to follow up on what was said.
• Commands act on the audio you reply to, or on the latest one here:
/transcribe – word for word
/summarize – the gist
/sentiment – the speaker's mood and tone
/events – sounds, music and speech, with times
/ask what did he promise? – a question about it
/translate English – what's said, in another language
/voice on – answers come back spoken (models that speak); /voice off – text again
/reset – forget this conversation
/usage – tokens used today, and what's left

In groups I answer when you use a command, mention me, or reply to me."""

COMMANDS = [
    ("transcribe", "Word-for-word transcript of the audio"),
    ("summarize", "Summary of the audio"),
    ("sentiment", "The speaker's mood and tone"),
    ("events", "Sounds, music and speech, with times"),
    ("ask", "Ask a question about the audio: /ask <question>"),
    ("translate", "Translate what's said: /translate <language>"),
    ("voice", "Spoken answers: /voice on [VOICE] or /voice off"),
    ("reset", "Forget this conversation"),
    ("usage", "Tokens used today, and what's left"),
    *DIGEST_COMMANDS,
    ("help", "What I do and how to use me"),
]
AUDIO_COMMANDS = {"transcribe": Task.TRANSCRIBE, "summarize": Task.SUMMARIZE, "sentiment": Task.SENTIMENT,
                  "events": Task.EVENTS, "ask": Task.ASK, "translate": Task.TRANSLATE}
RESET_DONE = "Done: I've forgotten this conversation."

Callback = Callable[[Update, ContextTypes.DEFAULT_TYPE], Awaitable[None]]


def download_capped(settings: Settings) -> bool:
    """Telegram's cloud lets bots download 20 MB; a self-hosted Bot API server has no such cap."""
    return settings.telegram_api_base_url.rstrip("/") == DEFAULT_TELEGRAM_BASE


class ChatLocks:
    """One lock per conversation, so turns in a chat are answered in the order they were sent.

    Updates are handled concurrently, and a short voice note's download could otherwise overtake a
    long one's; asyncio locks are FIFO and handlers take the lock before their first await.
    """

    def __init__(self) -> None:
        self._locks: dict[ChatKey, list[Any]] = {}   # key -> [lock, holders and waiters]

    @contextlib.asynccontextmanager
    async def hold(self, key: ChatKey) -> AsyncIterator[None]:
        entry = self._locks.setdefault(key, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._locks[key]   # idle chats hold no memory


class TelegramHandlers:
    """Turns messages into core Requests and sends the Replies back."""

    def __init__(self, assistant: Assistant, settings: Settings) -> None:
        self.assistant = assistant
        self.settings = settings
        self.locks = ChatLocks()
        self.throttle = EditThrottle()
        self.capped = download_capped(settings)
        # requests become durable jobs: stored before work starts, resumed after a crash (core.runner)
        self.jobs = JobRunner(assistant)
        self.jobs.register(PLATFORM, fetch=self._fetch, deliver=self._deliver, attend=self._attend, stream=True,
                           audio_id=self._audio_id)
        self.links = fetcher_for(settings)
        self._bot: Any = None
        self.digests = TelegramDigests(self)       # /digest, /forget, quiet listening in groups
        self.help = HELP + "\n\n" + help_text(settings.retention_days)

    def register(self, app: Application) -> None:
        self._bot = app.bot
        app.add_handler(CommandHandler(["start", "help"], self._ordered(self.on_help)))
        app.add_handler(CommandHandler("reset", self._ordered(self.on_reset)))
        app.add_handler(CommandHandler("usage", self._ordered(self.on_usage)))
        app.add_handler(CommandHandler("voice", self._ordered(self.on_voice)))
        self.digests.register(app, self._ordered)
        app.add_handler(CommandHandler(list(AUDIO_COMMANDS), self._ordered(self.on_audio_command)))
        media = (filters.VOICE | filters.AUDIO | filters.VIDEO_NOTE | filters.VIDEO | filters.Document.ALL)
        app.add_handler(MessageHandler(media & filters.UpdateType.MESSAGE, self._ordered(self.on_media)))
        app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND & filters.UpdateType.MESSAGE,
                                       self._ordered(self.on_text)))
        app.add_error_handler(self.on_error)

    async def post_init(self, app: Application) -> None:
        await with_flood_control(lambda: app.bot.set_my_commands([BotCommand(n, d) for n, d in COMMANDS]))
        await self.jobs.start()
        self.digests.start(app)

    async def post_stop(self, app: Application) -> None:
        await self.jobs.stop()

    def _ordered(self, callback: Callable[[Message, ContextTypes.DEFAULT_TYPE], Awaitable[None]]) -> Callback:
        async def run(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            message = update.effective_message
            if message is None:
                return
            async with self.locks.hold(chat_key(message)):
                await callback(message, context)
        return run

    # --- commands -------------------------------------------------------------------------------
    async def on_help(self, message: Message, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._say(message, self.help)

    async def on_reset(self, message: Message, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not await self._admitted(message, spending=False):
            return
        await self.assistant.reset(chat_key(message))
        await self._say(message, RESET_DONE)

    async def on_voice(self, message: Message, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/voice on [VOICE] | /voice off: voice-chat replies and /ask answers spoken, or text."""
        if not await self._admitted(message, spending=False):
            return
        args = [a.lower() for a in context.args or []]
        chat = chat_key(message)
        if args[:1] == ["off"]:
            await self.assistant.voice_off(chat)
            await self._say(message, messages.VOICE_OFF)
        elif args[:1] == ["on"]:
            try:
                voice = await self.assistant.voice_on(chat, (context.args or [])[1] if len(args) > 1 else None)
            except VoiceUnavailable as err:
                await self._say(message, err.user_message)
                return
            await self._say(message, messages.VOICE_ON.format(voice=voice))
        else:
            await self._say(message, messages.VOICE_USAGE)

    async def on_usage(self, message: Message, context: ContextTypes.DEFAULT_TYPE) -> None:
        try:
            report = await self.assistant.usage_report(chat_key(message), sender_of(message),
                                                       private=message.chat.type == "private")
        except AccessRefused as err:
            await self._refused(message, err)
            return
        await self._say(message, usage_text(report))

    async def on_audio_command(self, message: Message, context: ContextTypes.DEFAULT_TYPE) -> None:
        parsed = command_of(message, context.bot.username)
        if parsed is None:
            return
        name, arg = parsed
        media = media_of(message.reply_to_message)
        if media is None and (link := find_link(arg)):      # "/transcribe https://…/talk.mp3"
            media, arg = link_media(link), arg.split(None, 1)[1] if len(arg.split(None, 1)) > 1 else ""
            await self.assistant.remember_audio(chat_key(message), media.dumps())
        if media is None:
            ref = await self.assistant.latest_audio(chat_key(message))
            media = MediaRef.loads(ref) if ref else None
        await self._task(message, AUDIO_COMMANDS[name], media, arg)

    # --- audio and text -------------------------------------------------------------------------
    async def on_media(self, message: Message, context: ContextTypes.DEFAULT_TYPE) -> None:
        bot = context.bot
        if message.animation is not None:
            return                # a GIF: nothing to hear, and not the chat's latest audio
        media = media_of(message)
        addressed = is_addressed(message, bot.id, bot.username)
        if media is None:  # a document that isn't audio
            if addressed:
                await self._say(message, messages.NOT_AUDIO)
            return
        # remembered even when not addressed, so a later command in a group can act on it
        await self.assistant.remember_audio(chat_key(message), media.dumps())
        await self.digests.overhear(message, media)    # groups with digests on: transcribed quietly
        if not addressed:
            return
        parsed = command_of(message, bot.username)
        if parsed and parsed[0] in AUDIO_COMMANDS:  # "/transcribe" as the caption
            await self._task(message, AUDIO_COMMANDS[parsed[0]], media, parsed[1])
            return
        if parsed and parsed[0] in ("start", "help"):
            await self._say(message, self.help)
            return
        question = strip_mention(message.caption, bot.username)
        await self._task(message, Task.ASK if question else Task.CHAT, media, question or None)

    async def on_text(self, message: Message, context: ContextTypes.DEFAULT_TYPE) -> None:
        bot = context.bot
        if not is_addressed(message, bot.id, bot.username):
            return
        text = strip_mention(message.text, bot.username)
        media = media_of(message.reply_to_message)
        if media is None and (link := find_link(text)):   # a link to an audio file: handled like an upload
            media, text = link_media(link), " ".join(text.split()[1:])
            await self.assistant.remember_audio(chat_key(message), media.dumps())
        if media is not None:  # words in reply to an audio message are a question about it
            await self._task(message, Task.ASK if text else Task.CHAT, media, text or None)
        elif text:
            await self._task(message, Task.FOLLOW_UP, None, text)
        else:
            await self._say(message, self.help)

    # --- the one path to the core ---------------------------------------------------------------
    async def _task(self, message: Message, task: Task, media: MediaRef | None, text: str | None) -> None:
        # before downloading anything or showing "typing"; counted in the rate limit here, at the door
        if not await self._admitted(message, count=True):
            return
        if task is Task.ASK and not text:
            await self._say(message, messages.NEED_QUESTION)
            return
        if task is Task.TRANSLATE and not text:
            await self._say(message, messages.NEED_LANGUAGE)
            return
        if media is None and task is not Task.FOLLOW_UP:
            await self._say(message, messages.NO_AUDIO_YET)
            return
        # stored before this handler returns, so before the update is confirmed to Telegram (.durable);
        # the runner downloads, asks the model and answers (_fetch, _attend, _deliver below)
        await self.jobs.submit(NewJob(
            key=f"{message.chat_id}:{message.message_id}", chat=chat_key(message), task=task,
            message_ref=str(message.message_id), file_ref=media.dumps() if media else None, text=text,
            sender=sender_of(message)))

    # --- jobs: called by the runner, in this process or in the next one after a crash ------------
    @staticmethod
    def _where(job: Job) -> tuple[int, int | None, int]:
        """Chat id, forum topic and the message to answer, from what the job stored."""
        thread = job.chat.thread_id
        return int(job.chat.chat_id), int(thread) if thread else None, int(job.message_ref)

    async def _fetch(self, job: Job) -> Audio:
        assert job.file_ref is not None
        return await self._download_media(self._bot, MediaRef.loads(job.file_ref))

    @staticmethod
    def _audio_id(job: Job) -> str | None:
        """Telegram's file_unique_id: a forwarded voice note's cached answer needs no download."""
        return MediaRef.loads(job.file_ref).file_unique_id if job.file_ref else None

    @contextlib.asynccontextmanager
    async def _attend(self, job: Job) -> AsyncIterator[ProgressCallback]:
        """Typing and a status message while the job works; a status left by a crashed process goes first."""
        chat_id, thread, reply_to = self._where(job)
        if job.progress_ref:
            with contextlib.suppress(TelegramError):
                await self._bot.delete_message(chat_id, int(job.progress_ref))
            await self.jobs.set_progress_ref(job, None)
        status = StatusMessage(self._bot, chat_id, self.throttle, thread_id=thread, reply_to=reply_to)
        shown: list[int] = []

        async def progress(p: Progress) -> None:
            await status.update(p)
            if status.message is not None and status.message.message_id not in shown:
                shown.append(status.message.message_id)
                await self.jobs.set_progress_ref(job, str(status.message.message_id))
        try:
            async with Typing(self._bot, chat_id, thread):
                yield progress
        finally:
            await status.close()
            if shown:
                await self.jobs.set_progress_ref(job, None)

    async def _deliver(self, job: Job, outcome: Outcome) -> None:
        chat_id, thread, reply_to = self._where(job)
        try:
            if isinstance(outcome, Reply) and outcome.speech is not None:
                await send_voice(self._bot, chat_id, outcome.speech, outcome.text, thread_id=thread,
                                 reply_to=reply_to)
            else:
                await send_text(self._bot, chat_id, outcome.text, thread_id=thread, reply_to=reply_to)
        except (Forbidden, BadRequest) as err:   # blocked, kicked, chat gone: trying again can't help
            raise Undeliverable(f"Telegram refused: {err.message}") from err
        if isinstance(outcome, Reply) and subtitles.wants_files(outcome, MESSAGE_LIMIT):
            await self._send_transcript_files(job, outcome)
        if not isinstance(outcome, Notice):
            log.info("chat %s: answered message %s (job %d)", chat_id, reply_to, job.id)

    async def _send_transcript_files(self, job: Job, reply: Reply) -> None:
        """A long transcript also as .txt and .srt documents, named after the user's file if it had a name."""
        chat_id, thread, reply_to = self._where(job)
        original = original_name(MediaRef.loads(job.file_ref)) if job.file_ref else None
        where = ReplyParameters(reply_to, allow_sending_without_reply=True)
        for i, (name, data) in enumerate(subtitles.transcript_files(reply, original)):
            try:
                await with_flood_control(lambda: self._bot.send_document(
                    chat_id, InputFile(data, filename=name), message_thread_id=thread, reply_parameters=where,
                    caption=messages.TRANSCRIPT_FILES if i == 0 else None))
            except (Forbidden, BadRequest) as err:
                raise Undeliverable(f"Telegram refused the transcript file: {err.message}") from err

    async def _download_media(self, bot: Any, media: MediaRef) -> Audio:
        if media.kind == "link":
            return await self.links.fetch(media.file_id)
        size = media.file_size or 0
        if self.capped and size > TELEGRAM_DOWNLOAD_LIMIT:
            raise AudioError(messages.TOO_BIG_TELEGRAM)
        if size > self.settings.max_file_bytes:
            raise AudioError(messages.TOO_BIG.format(size_mb=size / 2**20, limit_mb=self.settings.max_file_mb))
        try:
            file = await with_flood_control(lambda: bot.get_file(media.file_id))
        except BadRequest as err:
            if "too big" in err.message.lower():
                raise AudioError(messages.TOO_BIG_TELEGRAM) from err
            raise
        data = await file.download_as_bytearray(read_timeout=DOWNLOAD_TIMEOUT)
        return Audio(bytes(data), filename=media.file_name, mime_type=media.mime_type)

    async def _admitted(self, message: Message, *, spending: bool = True, count: bool = False) -> bool:
        """False, having said so once, when the sender may not use the bot now (core.access)."""
        try:
            await self.assistant.check_access(chat_key(message), sender_of(message), spending=spending,
                                              count=count)
        except AccessRefused as err:
            await self._refused(message, err)
            return False
        return True

    async def _refused(self, message: Message, err: AccessRefused) -> None:
        log.debug("refused in chat %s%s", message.chat_id, " (quietly: told before)" if err.silent else "")
        if not err.silent:
            await self._say(message, err.user_message)

    async def _say(self, message: Message, text: str) -> None:
        await send_text(message.get_bot(), message.chat_id, text, thread_id=topic_id(message),
                        reply_to=message.message_id)

    # --- anything unexpected --------------------------------------------------------------------
    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Log it and apologise once; the bot keeps running whatever one update did."""
        log.error("failed to handle an update", exc_info=context.error)
        if not isinstance(update, Update) or update.effective_message is None:
            return
        message = update.effective_message
        if message.chat.type != "private" and not is_addressed(message, context.bot.id, context.bot.username):
            return  # silent in groups unless spoken to, even when failing
        try:
            await self._say(message, messages.INTERNAL)
        except TelegramError as err:
            log.warning("could not apologise in chat %s: %s", message.chat_id, err)
