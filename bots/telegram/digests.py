"""Group digests in Telegram: /digest and /forget, quiet listening in opted-in groups, scheduled posts.

Module functions over core.flow.digest: who is an admin (getChatMember), who sent a voice note, where to post.
The flow itself (groups only, access, admins, errors) is DigestService.run's.
"""
from __future__ import annotations

import logging

from telegram import Bot, ChatMember
from telegram.error import TelegramError

from core.flow.digest import DigestCommand, DigestService
from core.store.jobs import NewJob
from core.values import CarriedAudio, ChatKey, Incoming
from core.words import messages

from .progress import Typing
from .render import send_text, with_flood_control

log = logging.getLogger(__name__)

PREFIX = "/"
ADMINS = (ChatMember.OWNER, ChatMember.ADMINISTRATOR)
# what a group's members post as voice: voice notes, audio files, round videos, audio documents
HEARD_KINDS = {"voice", "audio", "video_note", "document"}


async def run_command(digests: DigestService, message: Incoming, bot: Bot, command: DigestCommand,
                      lang: str | None = None) -> str | None:
    """What to answer to /digest or /forget in this chat, in `lang` (None: nothing)."""
    chat, sender = message.chat, message.sender
    refused = await digests.refusal(chat, command, sender, group=message.group, prefix=PREFIX,
                                    is_admin=lambda: is_admin(message, bot), lang=lang)
    if refused is not None:
        return refused or None
    async with Typing(bot, int(chat.chat_id), int(message.thread_id) if message.thread_id else None):
        text = await digests.answer(chat, command, sender, prefix=PREFIX, lang=lang)
    if text is not None and command.action in ("on", "daily") and not await can_hear(int(chat.chat_id), bot):
        text += "\n\n" + messages.text(messages.DIGEST_CANT_HEAR, lang)
    return text


async def is_admin(message: Incoming, bot: Bot) -> bool | None:
    """The group's creator or an administrator; None if Telegram wouldn't say."""
    user_id = message.sender.user_id
    if user_id == message.chat.chat_id and not message.private:
        return True                  # an anonymous admin, posting as the group (.convert.sender_of)
    if user_id is None or user_id.startswith("-"):
        return False                 # nobody, or another chat (a channel) speaking: no member to be an admin
    return await member_is_admin(bot, int(message.chat.chat_id), int(user_id))


async def member_is_admin(bot: Bot, chat_id: int, user_id: int) -> bool | None:
    try:
        member = await with_flood_control(lambda: bot.get_chat_member(chat_id, user_id))
    except TelegramError as err:
        log.warning("getChatMember failed in chat %s: %s", chat_id, err)
        return None
    return member.status in ADMINS


async def can_hear(chat_id: int, bot: Bot) -> bool:
    """With privacy mode on, Telegram shows a bot a group's voice notes only if it is an admin there."""
    if bot.can_read_all_group_messages:
        return True
    return bool(await member_is_admin(bot, chat_id, bot.id))


async def listen_job(digests: DigestService, message: Incoming, media: CarriedAudio) -> NewJob | None:
    """A voice note in a group with digests on, as a job to transcribe quietly in the background; None when it
    isn't to be heard (not a group, not voice, digests off, or a sender refused: skipped before any download)."""
    if not message.group or media.kind not in HEARD_KINDS:
        return None
    chat, sender = message.chat, message.sender
    if not await digests.may_hear(chat, sender):
        return None
    return digests.listen_job(chat, key=f"{chat.chat_id}:{message.message_id}", file_ref=media.ref,
                              sent=message.sent or 0.0, sender=sender, name=message.sender_name or "someone",
                              source_id=message.message_id)


async def post(bot: Bot, chat: ChatKey, text: str) -> None:
    """A scheduled digest, in the group (and topic) it was set up in."""
    await send_text(bot, int(chat.chat_id), text, thread_id=int(chat.thread_id) if chat.thread_id else None)
