"""What the bot does with each kind of update: thin glue from Telegram messages to `Assistant` calls.

Each update's message is converted once, as it arrives (.convert.incoming); the handlers take that Incoming and
use the bot only to answer."""
from __future__ import annotations

import difflib
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from telegram import Bot, BotCommand, Update
from telegram.error import TelegramError
from telegram.ext import Application, CommandHandler, ContextTypes, MessageHandler, filters

from core.app import Earshot
from core.audio.links import split_link
from core.flow import chat_state, intake
from core.flow.commands import TASK_WORDS, with_question
from core.flow.digest import FORGET, parse_digest
from core.flow.runner import Reservation
from core.store.jobs import NewJob
from core.values import CarriedAudio, Incoming, Task
from core.words import help_texts, messages

from . import digests
from .convert import PLATFORM, carried, incoming, link_media
from .jobs import TelegramJobs
from .render import send_text, with_flood_control
from .taps import TelegramTaps

log = logging.getLogger(__name__)

Callback = Callable[[Update, ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]
Handler = Callable[[Incoming, ContextTypes.DEFAULT_TYPE, Reservation], Awaitable[None]]


class TelegramHandlers:
    """Turns messages into core Requests and sends the Replies back."""

    def __init__(self, app: Earshot) -> None:
        self.earshot = app
        self.access, self.history, self.digests, self.chat_state = app.access, app.history, app.digests, app.chat_state
        # requests become durable jobs: stored before work starts, resumed after a crash (core.flow.runner);
        # the runner's callbacks for them are in .jobs
        self.jobs = app.jobs
        self.job_callbacks = TelegramJobs(app.jobs, app.settings, app.audio_refs)

    def register(self, app: Application) -> None:
        self.job_callbacks.bot = app.bot
        app.add_handler(CommandHandler("start", self._ordered(self.on_start)))
        app.add_handler(CommandHandler("help", self._ordered(self.on_help)))
        app.add_handler(CommandHandler(list(chat_state.WORDS), self._ordered(self.on_chat_state)))
        app.add_handler(CommandHandler("model", self._ordered(self.on_model)))
        app.add_handler(CommandHandler(["digest", "forget"], self._ordered(self.on_digest)))
        app.add_handler(CommandHandler(list(TASK_WORDS), self._ordered(self.on_audio_command)))
        media = (filters.VOICE | filters.AUDIO | filters.VIDEO_NOTE | filters.VIDEO | filters.Document.ALL)
        app.add_handler(MessageHandler(media & filters.UpdateType.MESSAGE, self._ordered(self.on_media)))
        app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND & filters.UpdateType.MESSAGE,
                                       self._ordered(self.on_text)))
        app.add_handler(MessageHandler(filters.COMMAND & filters.UpdateType.MESSAGE, self._ordered(self.on_unknown)))
        TelegramTaps(self.earshot).register(app)      # the buttons under answers (.taps)
        app.add_error_handler(self.on_error)

    async def post_init(self, app: Application) -> None:
        # the command menu in each language Telegram shows menus in, and English for everyone else
        for code, lang in [(None, None), *help_texts.TELEGRAM_MENU_LANGUAGES.items()]:
            menu = [BotCommand(n, d) for n, d in help_texts.telegram_commands(lang, with_lang=True)]
            await with_flood_control(lambda m=menu, c=code: app.bot.set_my_commands(m, language_code=c))  # type: ignore[misc]
        await self.earshot.start(PLATFORM, functools.partial(digests.post, app.bot))   # scheduled digests: this bot

    async def post_stop(self, app: Application) -> None:
        await self.jobs.stop()

    def _ordered(self, callback: Handler) -> Callback:
        """Updates are handled concurrently (CONCURRENT_UPDATES) and a handler awaits the database before it
        submits: the chat's place in the runner's queue is taken first, before any await, and the handler
        goes on once the chat's earlier updates are submitted (core.flow.runner.Reservation)."""
        async def run(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            if (message := update.effective_message) is not None:
                came = incoming(message, context.bot.id, context.bot.username)     # the door: once
                with self.jobs.reserve(came.chat) as slot:
                    await slot.earlier_settled()     # in arrival order up to submit, like the jobs after
                    await callback(came, context, slot)
        return run

    async def lang_of(self, message: Incoming) -> str:
        """The language to answer this message in: the chat's /lang, else the sender's Telegram language."""
        return await self.chat_state.language_for(message.chat, message.user_lang)

    def help_text(self, lang: str | None, message: Incoming | None = None) -> str:
        group = message is None or not message.private
        return help_texts.telegram_help(lang, self.earshot.settings.retention_days, with_lang=True, group=group)

    # --- commands -------------------------------------------------------------------------------
    async def on_digest(self, message: Incoming, context: ContextTypes.DEFAULT_TYPE, slot: Reservation) -> None:
        """/digest [2h|on|off|daily 09:00 Zone], /forget: the flow is core.flow.digest's."""
        parsed = message.command
        if parsed is not None:
            command = FORGET if parsed[0] == "forget" else parse_digest(parsed[1])
            lang = await self.lang_of(message)
            if (text := await digests.run_command(self.digests, message, context.bot, command, lang)) is not None:
                await self._say(context.bot, message, text)

    async def on_help(self, message: Incoming, context: ContextTypes.DEFAULT_TYPE, slot: Reservation) -> None:
        await self._say(context.bot, message, self.help_text(await self.lang_of(message), message))

    async def on_start(self, message: Incoming, context: ContextTypes.DEFAULT_TYPE, slot: Reservation) -> None:
        await self._say(context.bot, message, help_texts.telegram_start(await self.lang_of(message)))

    async def on_unknown(self, message: Incoming, context: ContextTypes.DEFAULT_TYPE, slot: Reservation) -> None:
        """A command earshot doesn't know (/summary): the nearest one it does, and /help. In a group only when
        it names earshot (/summary@earshot_bot): other bots' commands are none of its business."""
        if message.command is None or (not message.private and not message.names_bot):
            return
        word = message.command[0]
        known = ["start", "help", *chat_state.WORDS, "model", "digest", "forget", *TASK_WORDS]
        near = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
        lang = await self.lang_of(message)
        await self._say(context.bot, message,
                        messages.text(messages.UNKNOWN_COMMAND_NEAR, lang, command=word, near=near[0])
                        if near else messages.text(messages.UNKNOWN_COMMAND_HELP, lang, command=word))

    async def on_chat_state(self, message: Incoming, context: ContextTypes.DEFAULT_TYPE, slot: Reservation) -> None:
        """/reset, /usage, /voice on [VOICE] | /voice off, /lang [CODE|auto] (core.flow.chat_state)."""
        if (parsed := message.command) is not None:
            said = await self.chat_state.run(parsed[0], message.chat, message.sender, parsed[1],
                                             private=message.private,
                                             lang=await self.lang_of(message), user_lang=message.user_lang)
            if said is not None:
                await self._say(context.bot, message, said)

    async def on_model(self, message: Incoming, context: ContextTypes.DEFAULT_TYPE, slot: Reservation) -> None:
        """/model: this chat's model and the allowed ones; /model NAME: switch (group admins; anyone in private)."""
        if (parsed := message.command) is not None:
            said = await self.chat_state.model(message.chat, message.sender, parsed[1],
                                               private=message.private,
                                               is_admin=lambda: digests.is_admin(message, context.bot),
                                               lang=await self.lang_of(message))
            if said is not None:
                await self._say(context.bot, message, said)

    async def on_audio_command(self, message: Incoming, context: ContextTypes.DEFAULT_TYPE, slot: Reservation) -> None:
        parsed = message.command
        if parsed is None:
            return
        name, arg = parsed
        media = message.replied_audio
        if media is None and (link := split_link(arg)):      # "/transcribe https://…/talk.mp3"
            media, arg = carried(link_media(link)), link.rest
            await self.history.remember_audio(message.chat, media.ref)
        if media is None:
            ref = await self.history.latest_audio(message.chat)
            media = CarriedAudio(ref) if ref else None
        await self._task(context.bot, message, slot, TASK_WORDS[name], arg, media)

    # --- audio and text -------------------------------------------------------------------------
    async def on_media(self, message: Incoming, context: ContextTypes.DEFAULT_TYPE, slot: Reservation) -> None:
        bot = context.bot
        media = message.last_audio
        if media is None:  # a document that isn't audio (a GIF is neither: nothing to hear, nothing to say)
            if message.other_file and message.addressed:
                await self._say(bot, message, messages.text(messages.NOT_AUDIO, await self.lang_of(message)))
            return
        # remembered even when not addressed, so a later command in a group can act on it
        await self.history.remember_audio(message.chat, media.ref)
        if (heard := await digests.listen_job(self.digests, message, media)) is not None:
            await self.jobs.submit(heard)      # a group with digests on: transcribed quietly, nothing said
        if not message.addressed:
            return
        parsed = message.command
        if parsed and parsed[0] in TASK_WORDS:  # "/transcribe" as the caption
            await self._task(bot, message, slot, TASK_WORDS[parsed[0]], parsed[1], media)
            return
        if parsed and parsed[0] in ("start", "help"):
            await self._say(bot, message, self.help_text(await self.lang_of(message), message))
            return
        await self._task(bot, message, slot, *with_question(Task.ASK, message.words), media)

    async def on_text(self, message: Incoming, context: ContextTypes.DEFAULT_TYPE, slot: Reservation) -> None:
        bot = context.bot
        if not message.addressed:
            return
        text = message.words
        media = message.replied_audio
        if media is None and (link := split_link(text)):   # a link to an audio file: handled like an upload
            media, text = carried(link_media(link)), link.rest
            await self.history.remember_audio(message.chat, media.ref)
        if media is not None:  # words in reply to an audio message are a question about it
            await self._task(bot, message, slot, *with_question(Task.ASK, text), media)
        elif text:
            await self._task(bot, message, slot, Task.FOLLOW_UP, text, None)
        else:
            await self._say(bot, message, self.help_text(await self.lang_of(message), message))

    # --- the one path to the core ---------------------------------------------------------------
    async def _task(self, bot: Bot, message: Incoming, slot: Reservation, task: Task, text: str | None,
                    media: CarriedAudio | None) -> None:
        # before downloading anything or showing "typing"; counted in the rate limit here, at the door
        lang = await self.lang_of(message)
        if not await intake.admitted(self.access, message.chat, message.sender, task, text, lang=lang,
                                     has_audio=media is not None, say=lambda said: self._say(bot, message, said)):
            return
        # stored before this handler returns, so before the update is confirmed to Telegram (.durable);
        # the runner downloads, asks the model and answers (.jobs)
        await self.jobs.submit(NewJob(
            key=f"{message.chat.chat_id}:{message.message_id}", chat=message.chat, task=task,
            message_ref=message.message_id, file_ref=media.ref if media else None, text=text,
            sender=message.sender, lang=lang), slot)

    async def _say(self, bot: Bot, message: Incoming, text: str) -> None:
        await send_text(bot, int(message.chat.chat_id), text,
                        thread_id=int(message.thread_id) if message.thread_id else None,
                        reply_to=int(message.message_id))

    # --- anything unexpected --------------------------------------------------------------------
    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Log it and apologise once; the bot keeps running whatever one update did."""
        log.error("failed to handle an update", exc_info=context.error)
        if not isinstance(update, Update) or update.effective_message is None:
            return
        message = incoming(update.effective_message, context.bot.id, context.bot.username)
        if not message.private and not message.addressed:
            return  # silent in groups unless spoken to, even when failing
        try:
            await self._say(context.bot, message, messages.text(messages.INTERNAL, message.user_lang))
        except TelegramError as err:
            log.warning("could not apologise in chat %s: %s", message.chat.chat_id, err)
