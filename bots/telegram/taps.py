"""Taps on the buttons under answers (bots.telegram.buttons): a callback_query becomes a job for the same audio,
through core.taps — the same door, budgets and durable jobs as a typed command. The query is answered at once
(answerCallbackQuery), so the button's spinner always stops."""
from __future__ import annotations

import contextlib
import logging

from telegram import CallbackQuery, InlineKeyboardMarkup, Message, Update
from telegram.error import BadRequest, TelegramError
from telegram.ext import Application, CallbackQueryHandler, ContextTypes

from core import messages
from core.app import Earshot
from core.errors import AudioExpired
from core.models import Sender, Task
from core.taps import Tap, submit_tap

from .buttons import TASK_BUTTONS, ButtonPress, parse_callback, task_keyboard
from .convert import PLATFORM, chat_key, topic_id
from .render import send_text, with_flood_control

log = logging.getLogger(__name__)


def _answered_task(markup: InlineKeyboardMarkup | None) -> Task | None:
    """The task the answer under these buttons was (the one missing from its row), to rebuild the row."""
    rows = markup.inline_keyboard if markup else ()
    shown = {p.task for b in (rows[0] if rows else ()) if (p := parse_callback(str(b.callback_data)))}
    missing = [task for task, _, _ in TASK_BUTTONS if task not in shown]
    return missing[0] if len(missing) == 1 else None


class TelegramTaps:
    def __init__(self, app: Earshot) -> None:
        self.earshot = app

    def register(self, application: Application) -> None:
        application.add_handler(CallbackQueryHandler(self.on_tap))

    async def on_tap(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        message = query.message if isinstance(query.message, Message) else None
        press = parse_callback(query.data)
        if message is None or press is None:     # a message too old to see, or buttons of another format
            await self._answer(query, messages.AUDIO_EXPIRED)
            return
        chat = chat_key(message)
        with self.earshot.jobs.reserve(chat) as slot:     # the chat's place in line, before the first await
            user = query.from_user
            lang = await self.earshot.chat_state.language_for(chat, user.language_code if user else None)
            try:
                ref = await self.earshot.audio_refs.resolve(press.token, chat)
            except AudioExpired as err:
                await self._answer(query, err.user_text(lang))
                with contextlib.suppress(BadRequest):       # buttons already gone
                    await with_flood_control(lambda: message.edit_reply_markup(reply_markup=None))
                return
            await self._answer(query, None)
            if press.choose_language:
                await self._languages(message, press, lang)
                return
            await slot.earlier_settled()
            tap = Tap(key=f"cb:{query.id}", chat=chat, sender=Sender(str(user.id), user.username,
                                                                 chat_name=message.chat.username),
                      task=press.task, message_ref=str(message.message_id), text=press.language, lang=lang)
            await submit_tap(self.earshot.access, self.earshot.jobs, tap, ref.ref, slot,
                             say=lambda said: self._say(message, said))

    async def _languages(self, message: Message, press: ButtonPress, lang: str | None) -> None:
        """Translate tapped: a second row asks which language."""
        markup = task_keyboard(press.token, _answered_task(message.reply_markup), languages_open=True, lang=lang)
        try:
            await with_flood_control(lambda: message.edit_reply_markup(reply_markup=markup))
        except BadRequest as err:
            if "not modified" not in err.message.lower():      # tapped twice: the row is already open
                raise

    @staticmethod
    async def _answer(query: CallbackQuery, text: str | None) -> None:
        try:
            await with_flood_control(lambda: query.answer(text=text))
        except TelegramError as err:       # too old to answer: the tap still counts
            log.info("could not answer a button tap: %s", err)

    @staticmethod
    async def _say(message: Message, text: str) -> None:
        await send_text(message.get_bot(), message.chat_id, text, thread_id=topic_id(message),
                        reply_to=message.message_id)


__all__ = ["PLATFORM", "TelegramTaps"]
