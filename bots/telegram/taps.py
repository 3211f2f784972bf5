"""Taps on the buttons under answers (bots.telegram.buttons): a callback_query becomes a job for the same audio,
through core.flow.taps — the same door, budgets and durable jobs as a typed command. The query is answered at once
(answerCallbackQuery), so the button's spinner always stops."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from telegram import Bot, CallbackQuery, Chat, InlineKeyboardMarkup, MaybeInaccessibleMessage, Message, Update
from telegram.error import BadRequest, TelegramError
from telegram.ext import Application, CallbackQueryHandler, ContextTypes

from core.app import Earshot
from core.errors import AudioExpired
from core.flow.taps import Tap, submit_tap
from core.values import Task
from core.words import messages

from .buttons import TASK_BUTTONS, parse_callback, task_keyboard
from .convert import PLATFORM, incoming_tap, topic_id
from .render import send_text, with_flood_control

log = logging.getLogger(__name__)


def _answered_task(markup: InlineKeyboardMarkup | None) -> Task | None:
    """The task the answer under these buttons was (the one missing from its row), to rebuild the row."""
    rows = markup.inline_keyboard if markup else ()
    shown = {p.task for b in (rows[0] if rows else ()) if (p := parse_callback(str(b.callback_data)))}
    missing = [task for task, _, _ in TASK_BUTTONS if task not in shown]
    return missing[0] if len(missing) == 1 else None


def offered(markup: InlineKeyboardMarkup | None, data: str | None) -> bool:
    """Whether `data` is one of the buttons under the message: anything else was forged (a modified client may
    send any callback_data), and must not change the message everyone sees."""
    rows = markup.inline_keyboard if markup else ()
    return data is not None and any(b.callback_data == data for row in rows for b in row)


@dataclass(frozen=True, slots=True)
class Tapped:
    """The message under the tapped button. Telegram includes it whole, or, when it is too old (Bot API 7.0),
    as an InaccessibleMessage (only its chat and id, date 0): python-telegram-bot parses that as one, or for
    now as a Message dated 0. Then neither its buttons nor its forum topic are known."""

    chat: Chat
    message_id: int
    thread_id: int | None
    markup: InlineKeyboardMarkup | None
    whole: bool                       # the message as it is, buttons and all

    @classmethod
    def of(cls, message: MaybeInaccessibleMessage) -> Tapped:
        if isinstance(message, Message) and message.is_accessible:
            return cls(message.chat, message.message_id, topic_id(message), message.reply_markup, True)
        return cls(message.chat, message.message_id, None, None, False)


class TelegramTaps:
    def __init__(self, app: Earshot) -> None:
        self.earshot = app

    def register(self, application: Application) -> None:
        application.add_handler(CallbackQueryHandler(self.on_tap))

    async def on_tap(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        came = incoming_tap(query)                      # the door: once
        press = parse_callback(query.data)
        if came is None or query.message is None or press is None:   # an inline message's, or another format
            await self._answer(query, messages.text(messages.AUDIO_EXPIRED, query.from_user.language_code))
            return
        tapped = Tapped.of(query.message)               # the buttons under it, to change them
        chat = came.chat
        bot = query.get_bot()
        with self.earshot.jobs.reserve(chat) as slot:     # the chat's place in line, before the first await
            lang = await self.earshot.chat_state.language_for(chat, came.user_lang)
            try:
                ref = await self.earshot.audio_refs.resolve(press.token, chat)
            except AudioExpired as err:
                await self._answer(query, err.user_text(lang))
                if tapped.whole and offered(tapped.markup, query.data):   # its buttons can't work any more
                    await self._edit_buttons(bot, tapped, None)
                return
            await self._answer(query, None)
            if press.choose_language:
                markup = task_keyboard(press.token, _answered_task(tapped.markup), languages_open=True, lang=lang)
                await self._edit_buttons(bot, tapped, markup)
                return
            await slot.earlier_settled()
            tap = Tap(key=f"cb:{query.id}", chat=chat, sender=came.sender, task=press.task,
                      message_ref=came.message_id, text=press.language, lang=lang)

            async def say(said: str) -> None:
                await send_text(bot, tapped.chat.id, said, thread_id=tapped.thread_id, reply_to=tapped.message_id)
            await submit_tap(self.earshot.access, self.earshot.jobs, tap, ref.ref, slot, say=say)

    @staticmethod
    async def _edit_buttons(bot: Bot, tapped: Tapped, markup: InlineKeyboardMarkup | None) -> None:
        """Translate's language row, or no buttons once the audio is gone."""
        try:
            await with_flood_control(lambda: bot.edit_message_reply_markup(
                chat_id=tapped.chat.id, message_id=tapped.message_id, reply_markup=markup))
        except BadRequest as err:
            # tapped twice (the row is already open, the buttons already gone), or too old to edit
            log.info("could not change the buttons under message %s: %s", tapped.message_id, err.message)

    @staticmethod
    async def _answer(query: CallbackQuery, text: str | None) -> None:
        try:
            await with_flood_control(lambda: query.answer(text=text))
        except TelegramError as err:       # too old to answer: the tap still counts
            log.info("could not answer a button tap: %s", err)


__all__ = ["PLATFORM", "TelegramTaps"]
