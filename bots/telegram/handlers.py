"""What the bot does with each kind of update: thin glue from Telegram messages to `Assistant` calls."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from telegram import BotCommand, Message, Update
from telegram.error import BadRequest, TelegramError
from telegram.ext import Application, CommandHandler, ContextTypes, MessageHandler, filters

from core import messages
from core.config import DEFAULT_TELEGRAM_BASE, Settings
from core.errors import AudioError, EarshotError
from core.models import Audio, ChatKey, Request, Task
from core.service import Assistant

from .convert import MediaRef, chat_key, command_of, is_addressed, media_of, strip_mention, topic_id
from .progress import EditThrottle, StatusMessage, Typing
from .render import send_text, with_flood_control

log = logging.getLogger(__name__)

TELEGRAM_DOWNLOAD_LIMIT = 20 * 1024 * 1024
DOWNLOAD_TIMEOUT = 120.0

HELP = """I listen to voice notes and audio files and answer about them, using Qwen-Audio.

• Send a voice note and I reply to it, as in a conversation.
• Add a caption to ask about it: "what time did she say?"
• Then write to follow up on what was said.
• Commands act on the audio you reply to, or on the latest one here:
/transcribe – word for word
/summarize – the gist
/sentiment – the speaker's mood and tone
/events – sounds, music and speech, with times
/ask what did he promise? – a question about it
/translate English – what's said, in another language
/reset – forget this conversation
/usage – tokens used here today

In groups I answer when you use a command, mention me, or reply to me."""

COMMANDS = [
    ("transcribe", "Word-for-word transcript of the audio"),
    ("summarize", "Summary of the audio"),
    ("sentiment", "The speaker's mood and tone"),
    ("events", "Sounds, music and speech, with times"),
    ("ask", "Ask a question about the audio: /ask <question>"),
    ("translate", "Translate what's said: /translate <language>"),
    ("reset", "Forget this conversation"),
    ("usage", "Tokens used in this chat today"),
    ("help", "What I do and how to use me"),
]
AUDIO_COMMANDS = {"transcribe": Task.TRANSCRIBE, "summarize": Task.SUMMARIZE, "sentiment": Task.SENTIMENT,
                  "events": Task.EVENTS, "ask": Task.ASK, "translate": Task.TRANSLATE}
RESET_DONE = "Done: I've forgotten this conversation."
USAGE = "Used here today: {total:,} tokens ({audio:,} audio, {input:,} input, {output:,} output)."

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

    def register(self, app: Application) -> None:
        app.add_handler(CommandHandler(["start", "help"], self._ordered(self.on_help)))
        app.add_handler(CommandHandler("reset", self._ordered(self.on_reset)))
        app.add_handler(CommandHandler("usage", self._ordered(self.on_usage)))
        app.add_handler(CommandHandler(list(AUDIO_COMMANDS), self._ordered(self.on_audio_command)))
        media = (filters.VOICE | filters.AUDIO | filters.VIDEO_NOTE | filters.VIDEO | filters.Document.ALL)
        app.add_handler(MessageHandler(media & filters.UpdateType.MESSAGE, self._ordered(self.on_media)))
        app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND & filters.UpdateType.MESSAGE,
                                       self._ordered(self.on_text)))
        app.add_error_handler(self.on_error)

    async def post_init(self, app: Application) -> None:
        await with_flood_control(lambda: app.bot.set_my_commands([BotCommand(n, d) for n, d in COMMANDS]))

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
        await self._say(message, HELP)

    async def on_reset(self, message: Message, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self.assistant.reset(chat_key(message))
        await self._say(message, RESET_DONE)

    async def on_usage(self, message: Message, context: ContextTypes.DEFAULT_TYPE) -> None:
        u = await self.assistant.usage(chat_key(message))
        await self._say(message, USAGE.format(total=u.total, audio=u.audio_tokens, input=u.input_tokens,
                                              output=u.output_tokens))

    async def on_audio_command(self, message: Message, context: ContextTypes.DEFAULT_TYPE) -> None:
        parsed = command_of(message, context.bot.username)
        if parsed is None:
            return
        name, arg = parsed
        media = media_of(message.reply_to_message)
        if media is None:
            ref = await self.assistant.latest_audio(chat_key(message))
            media = MediaRef.loads(ref) if ref else None
        await self._task(message, AUDIO_COMMANDS[name], media, arg)

    # --- audio and text -------------------------------------------------------------------------
    async def on_media(self, message: Message, context: ContextTypes.DEFAULT_TYPE) -> None:
        bot = context.bot
        media = media_of(message)
        addressed = is_addressed(message, bot.id, bot.username)
        if media is None:  # a document that isn't audio
            if addressed:
                await self._say(message, messages.NOT_AUDIO)
            return
        # remembered even when not addressed, so a later command in a group can act on it
        await self.assistant.remember_audio(chat_key(message), media.dumps())
        if not addressed:
            return
        parsed = command_of(message, bot.username)
        if parsed and parsed[0] in AUDIO_COMMANDS:  # "/transcribe" as the caption
            await self._task(message, AUDIO_COMMANDS[parsed[0]], media, parsed[1])
            return
        if parsed and parsed[0] in ("start", "help"):
            await self._say(message, HELP)
            return
        question = strip_mention(message.caption, bot.username)
        await self._task(message, Task.ASK if question else Task.CHAT, media, question or None)

    async def on_text(self, message: Message, context: ContextTypes.DEFAULT_TYPE) -> None:
        bot = context.bot
        if not is_addressed(message, bot.id, bot.username):
            return
        text = strip_mention(message.text, bot.username)
        media = media_of(message.reply_to_message)
        if media is not None:  # words in reply to an audio message are a question about it
            await self._task(message, Task.ASK if text else Task.CHAT, media, text or None)
        elif text:
            await self._task(message, Task.FOLLOW_UP, None, text)
        else:
            await self._say(message, HELP)

    # --- the one path to the core ---------------------------------------------------------------
    async def _task(self, message: Message, task: Task, media: MediaRef | None, text: str | None) -> None:
        if task is Task.ASK and not text:
            await self._say(message, messages.NEED_QUESTION)
            return
        if task is Task.TRANSLATE and not text:
            await self._say(message, messages.NEED_LANGUAGE)
            return
        if media is None and task is not Task.FOLLOW_UP:
            await self._say(message, messages.NO_AUDIO_YET)
            return
        bot = message.get_bot()
        thread = topic_id(message)
        started = time.monotonic()
        status = StatusMessage(bot, message.chat_id, self.throttle, thread_id=thread,
                               reply_to=message.message_id)
        try:
            async with Typing(bot, message.chat_id, thread):
                audio = await self._download(message, media) if media else None
                request = Request(chat_key(message), task, audio=audio, text=text,
                                  user_id=str(message.from_user.id) if message.from_user else None)
                reply = await self.assistant.handle(request, progress=status.update, stream=True)
        except EarshotError as err:
            if err.operator:
                log.error("%s", err.operator_message)
            else:
                log.info("user error in chat %s: %s", message.chat_id, err.user_message)
            await status.close()
            await self._say(message, err.user_message)
            return
        finally:
            await status.close()
        await self._say(message, reply.text)
        log.info("chat %s: %s answered in %.1f s (%d tokens)", message.chat_id, task.value,
                 time.monotonic() - started, reply.usage.total)

    async def _download(self, message: Message, media: MediaRef) -> Audio:
        size = media.file_size or 0
        if self.capped and size > TELEGRAM_DOWNLOAD_LIMIT:
            raise AudioError(messages.TOO_BIG_TELEGRAM)
        if size > self.settings.max_file_bytes:
            raise AudioError(messages.TOO_BIG.format(size_mb=size / 2**20, limit_mb=self.settings.max_file_mb))
        bot = message.get_bot()
        try:
            file = await with_flood_control(lambda: bot.get_file(media.file_id))
        except BadRequest as err:
            if "too big" in err.message.lower():
                raise AudioError(messages.TOO_BIG_TELEGRAM) from err
            raise
        data = await file.download_as_bytearray(read_timeout=DOWNLOAD_TIMEOUT)
        return Audio(bytes(data), filename=media.file_name, mime_type=media.mime_type)

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
