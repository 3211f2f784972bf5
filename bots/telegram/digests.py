"""Group digests in Telegram: /digest and /forget, quiet listening in opted-in groups, scheduled posts.

Thin glue over core.digest: who is an admin (getChatMember), who sent a voice note, where to post.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from telegram import Bot, ChatMember, Message
from telegram.error import TelegramError
from telegram.ext import Application, CommandHandler, ContextTypes

from core import messages
from core.digest import FORGET, DigestCommand, parse_command
from core.digest import help_text as digest_help
from core.errors import AccessRefused, EarshotError
from core.models import ChatKey

from .convert import PLATFORM, MediaRef, chat_key, command_of, sender_of, topic_id
from .progress import Typing
from .render import send_text, with_flood_control

if TYPE_CHECKING:
    from .handlers import Callback, TelegramHandlers

log = logging.getLogger(__name__)

PREFIX = "/"
GROUPS = ("group", "supergroup")
ADMINS = (ChatMember.OWNER, ChatMember.ADMINISTRATOR)
# what a group's members post as voice: voice notes, audio files, round videos, audio documents
HEARD_KINDS = {"voice", "audio", "video_note", "document"}
COMMANDS = [
    ("digest", "Sum up this group's voice notes: /digest [2h|24h|7d|on|off|daily 09:00]"),
    ("forget", "Delete everything stored for this chat (admins)"),
]


def help_text(retention_days: float) -> str:
    return digest_help(PREFIX, retention_days)


class TelegramDigests:
    def __init__(self, handlers: TelegramHandlers) -> None:
        self.h = handlers
        self.digests = handlers.assistant.digests

    def register(self, app: Application, ordered: Callable[..., Callback]) -> None:
        app.add_handler(CommandHandler("digest", ordered(self.on_digest)))
        app.add_handler(CommandHandler("forget", ordered(self.on_forget)))

    def start(self, app: Application) -> None:
        """Post scheduled digests through this bot (core.digest runs the schedule)."""
        self.digests.start_schedule(PLATFORM, functools.partial(self._post, app.bot))

    # --- commands ---------------------------------------------------------------------------------
    async def on_digest(self, message: Message, context: ContextTypes.DEFAULT_TYPE) -> None:
        parsed = command_of(message, context.bot.username)
        if parsed is not None:
            await self._run(message, context.bot, parse_command(parsed[1]))

    async def on_forget(self, message: Message, context: ContextTypes.DEFAULT_TYPE) -> None:
        if command_of(message, context.bot.username) is not None:
            await self._run(message, context.bot, FORGET)

    async def _run(self, message: Message, bot: Bot, command: DigestCommand) -> None:
        if message.chat.type not in GROUPS:
            await self.h._say(message, messages.DIGEST_GROUPS_ONLY.format(prefix=PREFIX))
            return
        if not await self.h._admitted(message, spending=command.action == "summary"):
            return
        if command.needs_admin and not (admin := await self._is_admin(message, bot)):
            await self.h._say(message, messages.DIGEST_ADMIN_UNKNOWN if admin is None
                              else messages.DIGEST_ADMINS_ONLY)
            return
        try:
            async with Typing(bot, message.chat_id, topic_id(message)):
                text = await self.digests.respond(chat_key(message), command, prefix=PREFIX,
                                                  sender=sender_of(message))
        except EarshotError as err:
            if err.operator:
                log.error("digest in chat %s: %s", message.chat_id, err.operator_message)
            if err.silent:
                return
            text = err.user_message
        if command.action in ("on", "daily") and not await self._can_hear(message, bot):
            text += "\n\n" + messages.DIGEST_CANT_HEAR
        await self.h._say(message, text)

    async def _is_admin(self, message: Message, bot: Bot) -> bool | None:
        """The group's creator or an administrator (or earshot's own admins); None if Telegram wouldn't say."""
        if message.sender_chat is not None and message.sender_chat.id == message.chat_id:
            return True                  # an anonymous admin, posting as the group
        user = message.from_user
        if user is None:
            return False
        if self.h.assistant.access.is_admin(chat_key(message), sender_of(message)):
            return True
        return await self._member_is_admin(bot, message.chat_id, user.id)

    @staticmethod
    async def _member_is_admin(bot: Bot, chat_id: int, user_id: int) -> bool | None:
        try:
            member = await with_flood_control(lambda: bot.get_chat_member(chat_id, user_id))
        except TelegramError as err:
            log.warning("getChatMember failed in chat %s: %s", chat_id, err)
            return None
        return member.status in ADMINS

    async def _can_hear(self, message: Message, bot: Bot) -> bool:
        """With privacy mode on, Telegram shows a bot a group's voice notes only if it is an admin there."""
        if bot.can_read_all_group_messages:
            return True
        return bool(await self._member_is_admin(bot, message.chat_id, bot.id))

    # --- listening --------------------------------------------------------------------------------
    async def overhear(self, message: Message, media: MediaRef) -> None:
        """A voice note in a group with digests on: transcribed in the background (a durable job), nothing
        said. Strangers and senders over a budget are skipped quietly, before anything is downloaded."""
        if message.chat.type not in GROUPS or media.kind not in HEARD_KINDS:
            return
        chat = chat_key(message)
        if not await self.digests.listening(chat):
            return
        sender = sender_of(message)
        try:
            await self.h.assistant.access.check(chat, sender, quietly=True)
        except AccessRefused:
            log.debug("not listening to a voice note in chat %s: refused", message.chat_id)
            return
        who = message.sender_chat or message.from_user
        name = getattr(who, "title", None) or getattr(who, "full_name", None) or "someone"
        await self.h.jobs.submit(self.digests.listen_job(
            chat, key=f"{message.chat_id}:{message.message_id}", file_ref=media.dumps(),
            sent=message.date.timestamp(), sender=sender, name=name, source_id=str(message.message_id)))

    # --- scheduled digests ------------------------------------------------------------------------
    @staticmethod
    async def _post(bot: Bot, chat: ChatKey, text: str) -> None:
        await send_text(bot, int(chat.chat_id), text, thread_id=int(chat.thread_id) if chat.thread_id else None)
